/* ops_util.c - see ops_util.h. */
#define _GNU_SOURCE
#include "ops_util.h"

#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* argv for `aio -c p->conf ARGS...`: the ARGS from ap, NULL-terminated. */
static void conf_argv(const char **argv, int max, const struct aio_proc *p,
                      va_list ap) {
  int argc = 0;
  argv[argc++] = "-c";
  argv[argc++] = p->conf;
  const char *a;
  while ((a = va_arg(ap, const char *)) != NULL && argc < max - 1)
    argv[argc++] = a;
  argv[argc] = NULL;
}

int ops_aio(const struct aio_proc *p, char *out, size_t n, ...) {
  const char *argv[24];
  va_list ap;
  va_start(ap, n);
  conf_argv(argv, 24, p, ap);
  va_end(ap);
  return h_aio(p->dir, out, n, argv);
}

void ops_expect(const struct aio_proc *p, int want, char *out, size_t n, ...) {
  const char *argv[24];
  va_list ap;
  va_start(ap, n);
  conf_argv(argv, 24, p, ap);
  va_end(ap);
  int rc = h_aio(p->dir, out, n, argv);
  char cmd[256] = "aio";
  for (int i = 2; argv[i]; i++) /* after -c FILE */
    snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), " %s", argv[i]);
  ck_assert_msg(rc == want, "%s exited %d, want %d: %s", cmd, rc, want, out);
}

pid_t ops_aio_async(const struct aio_proc *p, const char *cmd_out, ...) {
  const char *argv[24];
  va_list ap;
  va_start(ap, cmd_out);
  conf_argv(argv, 24, p, ap);
  va_end(ap);
  return h_aio_async(p->dir, cmd_out, argv);
}

json_int_t ops_int(const json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  ck_assert_msg(json_is_integer(v), "\"%s\" is not an integer", key);
  return json_integer_value(v);
}

json_t *ops_status(const struct aio_proc *p) {
  char out[65536];
  int rc = ops_aio(p, out, sizeof(out), "status", "--json", NULL);
  ck_assert_msg(rc == 0, "aio status --json exited %d: %s", rc, out);
  json_error_t e;
  json_t *st = json_loads(out, 0, &e);
  ck_assert_msg(json_is_object(st), "status is not a JSON object (%s): %s",
                e.text, out);
  return st;
}

static long long total_connections(const struct aio_proc *p) {
  json_t *st = ops_status(p);
  long long sum = 0;
  size_t i;
  json_t *w;
  json_array_foreach(json_object_get(st, "procs"), i, w) sum +=
      json_integer_value(json_object_get(w, "connections"));
  json_decref(st);
  return sum;
}

int ops_wait_connections(const struct aio_proc *p, long long n,
                         int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  while (total_connections(p) != n) {
    if (h_now_ms() > deadline)
      return -1;
    usleep(50000);
  }
  return 0;
}

void ops_rewrite(const struct aio_proc *p, const char *text) {
  /* Write beside and rename, so a reload never reads half a file. */
  char tmp[256];
  snprintf(tmp, sizeof(tmp), "%s.new", p->conf);
  FILE *f = fopen(tmp, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  ck_assert_int_eq(fclose(f), 0);
  ck_assert_int_eq(rename(tmp, p->conf), 0);
}

int ops_raw_request(const char *path, const char *req, size_t len, char *buf,
                    size_t n, int timeout_ms) {
  int fd = h_connect_unix(path, timeout_ms);
  buf[0] = '\0';
  if (fd < 0)
    return -1;
  /* The master may cut us off mid-request: that is an answer too. */
  (void)h_send(fd, req, len);
  int r = h_recv_until(fd, buf, n, "\n", timeout_ms);
  close(fd);
  return r;
}

int ops_proc_field(pid_t pid, const char *field, char *out, size_t n) {
  char path[64], line[256];
  snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
  out[0] = '\0';
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return -1;
  int found = -1;
  size_t fl = strlen(field);
  while (found < 0 && fgets(line, sizeof(line), f))
    if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
      const char *v = line + fl + 1 + strspn(line + fl + 1, " \t");
      snprintf(out, n, "%.*s", (int)strcspn(v, "\n"), v);
      found = 0;
    }
  fclose(f);
  return found;
}

long ops_proc_id(pid_t pid, const char *field) {
  char v[128];
  if (ops_proc_field(pid, field, v, sizeof(v)) < 0)
    return -1;
  return strtol(v, NULL, 10);
}

int ops_listeners(int port) {
  static const char *const tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
  int count = 0;
  for (size_t t = 0; t < 2; t++) {
    FILE *f = fopen(tables[t], "r");
    if (f == NULL)
      continue;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
      char local[128];
      unsigned st;
      if (sscanf(line, " %*d: %127s %*s %x", local, &st) != 2)
        continue;
      char *colon = strrchr(local, ':');
      if (colon && st == 0x0A && strtol(colon + 1, NULL, 16) == port)
        count++;
    }
    fclose(f);
  }
  return count;
}
