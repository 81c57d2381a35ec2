/*
 * slowload.c - a module whose loading is slow on demand: its constructor
 * sleeps 2.5 s once, if the file named by $AIO_TEST_SLOW_LOAD exists. A
 * reload's probe child loads every module, so this holds the master in
 * that wait (test_e2e_ops_systemd: the watchdog must still be fed).
 */
#define _DEFAULT_SOURCE /* usleep */
#include <stdlib.h>
#include <unistd.h>

#include <aio.h>

__attribute__((constructor)) static void slow_constructor(void) {
  const char *flag = getenv("AIO_TEST_SLOW_LOAD");
  /* Once: the first process to load it (a reload's probe child) waits,
   * the workers started after it do not. */
  if (flag && unlink(flag) == 0)
    usleep(2500 * 1000);
}

AIO_MODULE(.name = "slowload", .description = "slow to load on demand");
