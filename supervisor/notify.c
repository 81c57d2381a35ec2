/*
 * notify.c - systemd's readiness protocol (sd_notify(3)) without libsystemd:
 * one datagram per state change to $NOTIFY_SOCKET. The variables are taken
 * out of the environment so workers never talk to systemd themselves.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "master.h"
#include "util.h"

static struct sockaddr_un notify_addr;
static socklen_t notify_len;
static uint64_t watchdog_usec;
static char notify_path[sizeof(notify_addr.sun_path) + 1];

void notify_init(void) {
  const char *path = getenv("NOTIFY_SOCKET");
  if (path && *path && (path[0] == '/' || path[0] == '@') &&
      strlen(path) < sizeof(notify_addr.sun_path)) {
    memset(&notify_addr, 0, sizeof(notify_addr));
    notify_addr.sun_family = AF_UNIX;
    memcpy(notify_addr.sun_path, path, strlen(path));
    if (path[0] == '@')
      notify_addr.sun_path[0] = '\0'; /* abstract namespace */
    notify_len =
        (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
    snprintf(notify_path, sizeof(notify_path), "%s", path);
  }
  const char *wd = getenv("WATCHDOG_USEC"), *wp = getenv("WATCHDOG_PID");
  long usec, pid;
  if (wd && util_parse_long(wd, 1, 1L << 62, &usec) == 0 &&
      (wp == NULL ||
       (util_parse_long(wp, 1, 1L << 30, &pid) == 0 && pid == (long)getpid())))
    watchdog_usec = (uint64_t)usec;
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  unsetenv("WATCHDOG_PID");
}

void notify_export(void) {
  if (notify_len == 0)
    return;
  setenv("NOTIFY_SOCKET", notify_path, 1);
  if (watchdog_usec) {
    char v[32];
    snprintf(v, sizeof(v), "%llu", (unsigned long long)watchdog_usec);
    setenv("WATCHDOG_USEC", v, 1);
    snprintf(v, sizeof(v), "%d", (int)getpid());
    setenv("WATCHDOG_PID", v, 1);
  }
}

uint64_t notify_watchdog_usec(void) { return notify_len ? watchdog_usec : 0; }

int notify_send(const char *fmt, ...) {
  if (notify_len == 0)
    return 0;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof(buf))
    return -EMSGSIZE;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  /* Never block the master on a notify socket nobody reads: a datagram
   * that does not fit is dropped (systemd reads at once). */
  ssize_t r = sendto(fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT,
                     (struct sockaddr *)&notify_addr, notify_len);
  int err = r < 0 ? -errno : 0;
  close(fd);
  if (err)
    log_debug("sd_notify: %s", strerror(-err));
  return err;
}
