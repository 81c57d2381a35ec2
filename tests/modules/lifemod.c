/*
 * lifemod.c - fixtures for the master's lifecycle tests
 * (tests/e2e/test_lifecycle.c): a module whose init crashes, always or
 * while a file exists (the way a module crashes on a corrupt data file
 * until someone fixes it), and a factory that fails.
 */
#define _DEFAULT_SOURCE
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <aio.h>

/* [lifemod] init = crash: every worker dies of SIGSEGV in init.
 * [lifemod] crash_if = PATH: the same while PATH exists. */
static int lifemod_init(void) {
  const char *how = aio_config_get("lifemod", "init");
  const char *path = aio_config_get("lifemod", "crash_if");
  if ((how && strcmp(how, "crash") == 0) ||
      (path && *path && access(path, F_OK) == 0))
    raise(SIGSEGV);
  return 0;
}

/* A server whose factory cannot set itself up: the worker's start fails. */
static int failing(aio_server_t *server) {
  (void)server;
  return -1;
}
AIO_FACTORY(failing);

AIO_MODULE(.name = "lifemod", .init = lifemod_init,
           .description = "lifecycle test fixtures");
