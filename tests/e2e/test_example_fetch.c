/*
 * test_example_fetch.c - examples/fetch as a user runs it: its shipped
 * configuration passes `aio check` and its `aio test` suite passes, and
 * under `aio run` its scheduler fetches from a real loopback HTTP server
 * that this test runs, its listener appending each answer to the file,
 * and a server that never answers fails the run at the request's timeout.
 */
#define _DEFAULT_SOURCE /* usleep */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check_main.h"
#include "harness.h"
#include "records.h"

static struct aio_proc P;
static char dir[128], log_path[256];

/* A loopback HTTP/1.0 server: each connection gets "HTTP/1.0 200 OK" and
 * "pong" once its request head arrived, unless silent (then it is held
 * until the client closes). Runs until its socket is shut down. */
struct http {
  int fd, port, silent, served;
  pthread_t tid;
};

static void *http_main(void *arg) {
  struct http *h = arg;
  for (;;) {
    int c = accept(h->fd, NULL, NULL);
    if (c < 0)
      return NULL;
    char req[2048];
    size_t n = 0;
    req[0] = '\0';
    while (n < sizeof(req) - 1 && strstr(req, "\r\n\r\n") == NULL) {
      ssize_t k = read(c, req + n, sizeof(req) - 1 - n);
      if (k <= 0)
        break;
      n += (size_t)k;
      req[n] = '\0';
    }
    static const char ok[] = "HTTP/1.0 200 OK\r\n\r\npong";
    if (h->silent)
      while (read(c, req, sizeof(req)) > 0)
        ;
    else if (strncmp(req, "GET /ping HTTP/1.0\r\n", 20) == 0 &&
             write(c, ok, sizeof(ok) - 1) == (ssize_t)sizeof(ok) - 1)
      h->served++;
    close(c);
  }
}

static void http_start(struct http *h, int silent) {
  h->silent = silent;
  h->fd = h_listen_tcp(&h->port, 0);
  ck_assert_int_ge(h->fd, 0);
  ck_assert_int_eq(pthread_create(&h->tid, NULL, http_main, h), 0);
}

static void http_stop(struct http *h) {
  shutdown(h->fd, SHUT_RDWR);
  pthread_join(h->tid, NULL);
  close(h->fd);
}

/* The shipped examples/fetch/fetch.conf, with the test's module path,
 * port, timeout, period and file. Returns new. */
static char *shipped_conf(int port, const char *timeout) {
  char *text = h_slurp(AIO_SOURCE_DIR "/examples/fetch/fetch.conf");
  ck_assert_ptr_nonnull(text);
  h_tmpdir(dir, sizeof(dir));
  snprintf(log_path, sizeof(log_path), "%s/fetch.ndjson", dir);
  struct {
    const char *key, *value;
  } set[] = {{"module_path = ", AIO_EXAMPLE_MODULES},
             {"port = ", NULL},
             {"path = ", "/ping"},
             {"timeout = 2s", timeout},
             {"file = ", log_path},
             {"every = ", "0.2"}};
  char *out = calloc(1, strlen(text) + 4096);
  ck_assert_ptr_nonnull(out);
  char portbuf[16];
  snprintf(portbuf, sizeof(portbuf), "%d", port);
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    const char *value = NULL;
    size_t keylen = 0;
    for (size_t i = 0; i < sizeof(set) / sizeof(set[0]); i++)
      if (strncmp(line, set[i].key, strlen(set[i].key)) == 0) {
        value = set[i].value ? set[i].value : portbuf;
        keylen = (size_t)(strchr(set[i].key, '=') - set[i].key) + 2;
      }
    if (value)
      sprintf(out + strlen(out), "%.*s%s\n", (int)keylen, line, value);
    else
      sprintf(out + strlen(out), "%s\n", line);
  }
  free(text);
  return out;
}

START_TEST(test_fetch_shipped_config_checks_and_its_suite_passes) {
  char *conf = shipped_conf(8080, "2s");
  ck_assert_int_eq(h_write(dir, "fetch.conf", conf), 0);
  free(conf);
  char out[16384];
  const char *check[] = {"-c", "fetch.conf", "check", NULL};
  ck_assert_int_eq(h_aio(dir, out, sizeof(out), check), 0);
  const char *test[] = {"-c", "fetch.conf", "test", "fetch", NULL};
  int rc = h_aio(dir, out, sizeof(out), test);
  ck_assert_msg(rc == 0 && strstr(out, "aio test: 1 module, 4 tests, 0 failed"),
                "exit %d:\n%s", rc, out);
}
END_TEST

/* Records of the log file whose key is an object (answers) or a string
 * (errors), waiting for n of them. */
static json_t *log_wait(const char *key, size_t n, int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  for (;;) {
    json_t *all = rec_load(log_path), *some = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(all, i, r) if (json_object_get(r, key))
        json_array_append(some, r);
    json_decref(all);
    if (json_array_size(some) >= n)
      return some;
    json_decref(some);
    if (h_now_ms() >= deadline)
      return NULL;
    usleep(20000);
  }
}

/* `aio run` the shipped configuration against h (silent or not) with the
 * request's timeout; then wait for n log records with key. Returns them
 * (new). */
static json_t *run_against(struct http *h, int silent, const char *timeout,
                           const char *key, size_t n) {
  http_start(h, silent);
  char *conf = shipped_conf(h->port, timeout);
  h_start_ready(&P, conf, NULL);
  free(conf);
  json_t *got = log_wait(key, n, 10000);
  if (got == NULL)
    h_dump_log(&P);
  ck_assert_ptr_nonnull(got);
  return got;
}

START_TEST(test_fetch_runs_fetch_from_a_loopback_server_and_append) {
  struct http h = {0};
  json_t *answers = run_against(&h, 0, "2s", "answer", 3);
  const json_t *a = json_object_get(json_array_get(answers, 0), "answer");
  ck_assert_int_eq(json_integer_value(json_object_get(a, "status")), 200);
  ck_assert_str_eq(json_string_value(json_object_get(a, "body")), "pong");
  ck_assert_str_eq(json_string_value(
                       json_object_get(json_array_get(answers, 0), "schedule")),
                   "poll");
  json_decref(answers);
  h_stop_ok(&P);
  http_stop(&h);
  ck_assert_int_ge(h.served, 3);
}
END_TEST

START_TEST(test_fetch_a_server_that_never_answers_fails_at_the_timeout) {
  struct http h = {0};
  json_t *errors = run_against(&h, 1, "0.3s", "error", 1);
  const json_t *e = json_array_get(errors, 0);
  ck_assert_msg(strstr(json_string_value(json_object_get(e, "error")),
                       "no answer in time"),
                "%s", json_string_value(json_object_get(e, "error")));
  ck_assert_int_eq(json_integer_value(json_object_get(e, "status")), -110);
  json_decref(errors);
  ck_assert(h_log_has(&P, "no answer in time"));
  h_stop_ok(&P);
  http_stop(&h);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_example_fetch");
  TCase *tc = tcase_create("fetch");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_fetch_shipped_config_checks_and_its_suite_passes);
  tcase_add_test(tc, test_fetch_runs_fetch_from_a_loopback_server_and_append);
  tcase_add_test(tc,
                 test_fetch_a_server_that_never_answers_fails_at_the_timeout);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
