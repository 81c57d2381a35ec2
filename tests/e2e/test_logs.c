/*
 * test_logs.c - what aio tells an operator about itself: with [aio]
 * log_format = json, every line of master and workers is one JSON object
 * (time in RFC 3339 with milliseconds, level, role, slot for a worker, pid,
 * msg), escaped by jansson whatever the message quotes; and ps shows each
 * process for what it is, with its generation.
 */
#include <check.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"
#include "harness.h"

START_TEST(test_json_log_is_one_object_per_line) {
  struct aio_proc p;
  char conf[2048];
  int port = h_free_port();
  h_conf(conf, sizeof(conf), "testmod", "workers = 2\nlog_format = json\n");
  /* A name with a quote and a backslash, which the log line quotes. */
  h_conf_add(conf, sizeof(conf),
             "[server:we\"ird\\name]\nprotocol = aio.echo\n"
             "address = 127.0.0.1\nport = %d\n",
             port);
  h_start_ready(&p, conf, NULL);
  h_stop_ok(&p);
  char *log = h_slurp(p.log);
  int lines = 0, workers = 0, named = 0;
  for (char *line = log, *next; *line; line = next) {
    next = strchr(line, '\n');
    ck_assert_msg(next != NULL, "a line with no newline: %s", line);
    *next++ = '\0';
    json_error_t e;
    json_t *o = json_loads(line, 0, &e);
    ck_assert_msg(json_is_object(o), "not a JSON object (%s): %s", e.text,
                  line);
    const char *t = json_string_value(json_object_get(o, "time"));
    /* 2026-12-01T21:59:33.123Z */
    ck_assert_msg(t && strlen(t) == 24 && t[10] == 'T' && t[19] == '.' &&
                      t[23] == 'Z',
                  "time '%s' is not RFC 3339 with milliseconds", t);
    ck_assert_ptr_nonnull(json_string_value(json_object_get(o, "level")));
    ck_assert_ptr_nonnull(json_string_value(json_object_get(o, "msg")));
    ck_assert(json_integer_value(json_object_get(o, "pid")) > 0);
    const char *role = json_string_value(json_object_get(o, "role"));
    ck_assert_ptr_nonnull(role);
    if (strcmp(role, "worker") == 0) {
      workers++;
      ck_assert(json_is_integer(json_object_get(o, "slot")));
    }
    if (strstr(json_string_value(json_object_get(o, "msg")),
               "[server:we\"ird\\name] listening"))
      named++;
    json_decref(o);
    lines++;
  }
  ck_assert_int_ge(lines, 6);
  ck_assert_int_ge(workers, 2); /* each worker's "draining" line */
  ck_assert_int_eq(named, 1);
  free(log);
}
END_TEST

/* The first JSON line of p's log whose field key is the string want (NULL:
 * any string) and whose msg contains text. Returns new, or NULL. */
static json_t *json_line_with(const struct aio_proc *p, const char *key,
                              const char *want, const char *text) {
  char *log = h_slurp(p->log);
  json_t *found = NULL;
  for (char *line = log, *next; *line && !found; line = next) {
    next = strchr(line, '\n');
    if (next == NULL)
      break;
    *next++ = '\0';
    json_t *o = json_loads(line, 0, NULL);
    const char *v = json_string_value(json_object_get(o, key));
    const char *msg = json_string_value(json_object_get(o, "msg"));
    if (v && msg && strstr(msg, text) && (want == NULL || strcmp(v, want) == 0))
      found = json_incref(o);
    json_decref(o);
  }
  free(log);
  return found;
}

/* The fields a message carries are members of their own, escaped by
 * jansson like the rest: the server of an accept warning, the schedule and
 * run of a failed run. */
START_TEST(test_json_log_carries_the_message_fields) {
  struct aio_proc p;
  char conf[2048];
  int port = h_free_port();
  h_conf(conf, sizeof(conf), "busmod",
         "workers = 1\nlog_format = json\nmax_connections = 1\n");
  h_conf_add(conf, sizeof(conf),
             "[server:we\"ird\\name]\nprotocol = aio.echo\n"
             "address = 127.0.0.1\nport = %d\n"
             "\n[schedule:flaky]\nevery = 0.1\nfunc = busmod.flaky\n",
             port);
  h_start_ready(&p, conf, NULL);
  /* Over max_connections = 1: the second one is closed and said. */
  int a = h_connect(port, 5000), b = h_connect(port, 5000);
  ck_assert_int_ge(a, 0);
  ck_assert_int_ge(b, 0);
  ck_assert_int_eq(h_wait_log(&p, "over max_connections", 10000), 0);
  /* busmod.flaky fails its even runs: run 2, or the next even one when a
   * master held up past run 2's due time skipped it. */
  ck_assert_int_eq(h_wait_log(&p, "failed: returned 1", 10000), 0);
  close(a);
  close(b);
  h_stop_ok(&p);

  json_t *o =
      json_line_with(&p, "server", "we\"ird\\name", "over max_connections");
  ck_assert_msg(o, "no line with a \"server\" field");
  json_decref(o);
  o = json_line_with(&p, "schedule", "flaky", "failed: returned 1");
  ck_assert_msg(o, "no line with a \"schedule\" field");
  json_int_t run = json_integer_value(json_object_get(o, "run"));
  char said[64];
  snprintf(said, sizeof(said), "[schedule:flaky] run %lld failed: returned 1",
           (long long)run);
  ck_assert_int_eq(run % 2, 0);
  ck_assert_str_eq(json_string_value(json_object_get(o, "msg")), said);
  /* The fields never take the place of the line's own members. */
  ck_assert_ptr_nonnull(json_string_value(json_object_get(o, "time")));
  ck_assert_str_eq(json_string_value(json_object_get(o, "role")), "master");
  json_decref(o);
}
END_TEST

/* /proc/PID/cmdline as ps shows it (NULs as spaces), into buf. */
static const char *cmdline(pid_t pid, char *buf, size_t n) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
  buf[0] = '\0';
  int fd = open(path, O_RDONLY);
  if (fd < 0)
    return buf;
  ssize_t r = read(fd, buf, n - 1);
  close(fd);
  if (r < 0)
    r = 0;
  buf[r] = '\0';
  for (ssize_t i = 0; i < r; i++)
    if (buf[i] == '\0')
      buf[i] = ' ';
  while (r > 0 && buf[r - 1] == ' ')
    buf[--r] = '\0';
  return buf;
}

/* Every child of the master shows "aio: worker N (generation G)". */
static void assert_workers_titled(pid_t master, unsigned gen) {
  pid_t kids[8];
  int n = h_children(master, kids, 8), titled = 0;
  char buf[512], want[64];
  for (int i = 0; i < n; i++) {
    cmdline(kids[i], buf, sizeof(buf));
    snprintf(want, sizeof(want), "(generation %u)", gen);
    if (strncmp(buf, "aio: worker ", 12) == 0 && strstr(buf, want))
      titled++;
  }
  ck_assert_msg(titled == 2, "%d of %d children titled for generation %u",
                titled, n, gen);
}

START_TEST(test_ps_shows_master_and_workers_with_generation) {
  struct aio_proc p;
  char conf[2048], buf[512], want[512];
  int port = h_free_port();
  h_conf(conf, sizeof(conf), "testmod", "workers = 2\n");
  h_conf_server(conf, sizeof(conf), "who", "testmod.whoami", port);
  h_start_ready(&p, conf, NULL);
  snprintf(want, sizeof(want), "aio: master (generation 1) %s", p.conf);
  ck_assert_str_eq(cmdline(p.pid, buf, sizeof(buf)), want);
  ck_assert_int_eq(h_wait_children(p.pid, 2, 5000), 0);
  assert_workers_titled(p.pid, 1);
  pid_t old[8];
  int nold = h_children(p.pid, old, 8);
  kill(p.pid, SIGHUP);
  ck_assert_int_eq(h_wait_log(&p, "reloaded: generation 2", 15000), 0);
  snprintf(want, sizeof(want), "aio: master (generation 2) %s", p.conf);
  ck_assert_str_eq(cmdline(p.pid, buf, sizeof(buf)), want);
  /* Once the old generation has drained away, only the new one is left. */
  ck_assert_int_eq(h_wait_gone(old, nold, 15000), 0);
  assert_workers_titled(p.pid, 2);
  h_stop_ok(&p);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_logs");
  TCase *tc = tcase_create("logs");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_json_log_is_one_object_per_line);
  tcase_add_test(tc, test_json_log_carries_the_message_fields);
  tcase_add_test(tc, test_ps_shows_master_and_workers_with_generation);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
