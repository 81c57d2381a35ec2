/*
 * test_logs.c - what aio writes to its log: with [aio] log_format = json,
 * every line of master and workers is one JSON object (time in RFC 3339
 * with milliseconds, level, role, slot for a worker, pid, msg), escaped by
 * jansson whatever the message quotes.
 */
#include <check.h>
#include <jansson.h>
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

static Suite *suite(void) {
  Suite *s = suite_create("e2e_logs");
  TCase *tc = tcase_create("logs");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_json_log_is_one_object_per_line);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
