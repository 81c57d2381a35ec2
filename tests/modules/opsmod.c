#define _DEFAULT_SOURCE
/*
 * opsmod.c - fixtures for the operations tests (tests/e2e/test_ops_*.c).
 * Built twice from this one source: OPSMOD_VERSION 1 and 2 answer "v1" and
 * "v2", so a test can swap the .so under a running aio and reload. The
 * `record` listener appends one JSON line per signal to the file named by
 * `[opsmod] out`; `ident` answers with the worker's pid and uid; init can
 * be made slow or failing.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <aio.h>

#ifndef OPSMOD_VERSION
#define OPSMOD_VERSION 1
#endif
#define OPSMOD_STR2(x) #x
#define OPSMOD_STR(x) OPSMOD_STR2(x)

/* Answers every read with "vN\n": which build of the module served it. */
static void version_data(aio_conn_t *c, const char *data, size_t len) {
  (void)data;
  (void)len;
  static const char answer[] = "v" OPSMOD_STR(OPSMOD_VERSION) "\n";
  aio_write(c, answer, sizeof(answer) - 1);
}
AIO_PROTOCOL(version, .data_received = version_data);

/* Answers every read with "pid P uid U\n". */
static void ident_data(aio_conn_t *c, const char *data, size_t len) {
  char out[64];
  (void)data;
  (void)len;
  int n = snprintf(out, sizeof(out), "pid %d uid %d\n", (int)getpid(),
                   (int)getuid());
  aio_write(c, out, (size_t)n);
}
AIO_PROTOCOL(ident, .data_received = ident_data);

/* One line per signal: {"sig": NAME, "data": DATA, "pid": PID}, written
 * with one write() on an O_APPEND descriptor. */
static void record(const aio_signal_t *sig) {
  const char *path = aio_config_get("opsmod", "out");
  if (path == NULL)
    return;
  json_t *rec =
      json_pack("{s:s,s:O,s:i}", "sig", sig->name, "data",
                sig->data ? sig->data : json_null(), "pid", (int)getpid());
  char *s = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
  json_decref(rec);
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (s && fd >= 0) {
    size_t n = strlen(s);
    s[n] = '\n'; /* json_dumps's NUL becomes the newline */
    ssize_t w = write(fd, s, n + 1);
    (void)w;
  }
  if (fd >= 0)
    close(fd);
  free(s);
}
AIO_LISTENER(record);

/* [opsmod] init_ms delays the worker's readiness (a reload in flight for
 * that long); init_fail = yes makes every new worker fail to start. */
static int opsmod_init(void) {
  const char *ms = aio_config_get("opsmod", "init_ms");
  if (ms)
    usleep((useconds_t)atoi(ms) * 1000);
  const char *fail = aio_config_get("opsmod", "init_fail");
  return fail && strcmp(fail, "yes") == 0 ? -1 : 0;
}

AIO_MODULE(.name = "opsmod", .init = opsmod_init,
           .description =
               "operations test fixtures, v" OPSMOD_STR(OPSMOD_VERSION));
