/*
 * builtin_tests.c - the tests of the built-in module `aio` (`aio test aio`):
 * aio.echo and aio.hello served by aio_test_serve() and spoken to over
 * loopback, as a module's own suite would.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aio.h"
#include "loader.h"

#ifdef AIO_HAVE_CHECK
#include <check.h>

#define T_MS 5000

#define HELLO_HEAD                                                             \
  "HTTP/1.1 200 OK\r\nServer: aio\r\nContent-Type: text/plain\r\n"
#define HELLO_KEEP HELLO_HEAD "Content-Length: 14\r\n\r\nHello, World!\n"
#define HELLO_CLOSE                                                            \
  HELLO_HEAD "Content-Length: 14\r\nConnection: close\r\n\r\nHello, World!\n"

/* Serve protocol, send req and read until bytes have come (0: until the
 * server closes), stop serving. Returns the answer (new). */
static char *ask(const char *protocol, const char *req, size_t until) {
  int port = aio_test_serve(protocol);
  ck_assert_int_gt(port, 0);
  char *r = aio_test_exchange(port, req, until, T_MS);
  aio_test_stop();
  ck_assert_ptr_nonnull(r);
  return r;
}

START_TEST(test_echo_answers_what_it_got) {
  char *r = ask("aio.echo", "hello, echo\n", 12);
  ck_assert_str_eq(r, "hello, echo\n");
  free(r);
}
END_TEST

START_TEST(test_hello_answers_pipelined_requests_then_closes) {
  /* Read until the server closes: the second request asks for it. */
  char *r = ask("aio.hello",
                "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
                0);
  ck_assert_str_eq(r, HELLO_KEEP HELLO_CLOSE);
  free(r);
}
END_TEST

START_TEST(test_hello_refuses_a_malformed_request) {
  char *r = ask("aio.hello", "NOT HTTP\r\n\r\n", 0);
  ck_assert_msg(strncmp(r, "HTTP/1.1 400 Bad Request\r\n", 26) == 0, "got '%s'",
                r);
  free(r);
}
END_TEST

/* aio.echo over UDP: each datagram comes back as it went. */
START_TEST(test_echo_answers_datagrams) {
  int port = aio_test_serve_udp("aio.echo");
  ck_assert_int_gt(port, 0);
  for (int i = 0; i < 3; i++) {
    char req[32];
    snprintf(req, sizeof(req), "datagram %d", i);
    char *r = aio_test_datagram(port, req, T_MS);
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(r, req);
    free(r);
  }
  aio_test_stop();
  /* Nothing listens any more: refused, not an empty answer. */
  ck_assert_ptr_null(aio_test_datagram(port, "late", T_MS));
}
END_TEST

START_TEST(test_serve_refuses_what_is_not_a_protocol) {
  ck_assert_int_lt(aio_test_serve("aio.nosuch"), 0);
  ck_assert_int_lt(aio_test_serve("no dot"), 0);
  ck_assert_int_lt(aio_test_serve_udp("aio.nosuch"), 0);
}
END_TEST

/* ---- the harness itself ------------------------------------------------ */

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

START_TEST(test_exchange_returns_what_arrived_by_the_deadline) {
  int port = aio_test_serve("aio.echo");
  ck_assert_int_gt(port, 0);
  long long t0 = now_ms();
  char *r = aio_test_exchange(port, "ab", 10, 300);
  long long took = now_ms() - t0;
  ck_assert_ptr_nonnull(r);
  ck_assert_str_eq(r, "ab");
  ck_assert_int_ge(took, 290);
  ck_assert_int_lt(took, 5000);
  free(r);
  aio_test_stop();
}
END_TEST

START_TEST(test_exchange_with_a_stopped_server_is_null) {
  int port = aio_test_serve("aio.echo");
  ck_assert_int_gt(port, 0);
  aio_test_stop();
  ck_assert_ptr_null(aio_test_exchange(port, "x", 1, T_MS));
}
END_TEST

START_TEST(test_emit_and_config_answer_in_a_test) {
  json_t *data = json_pack("{s:i}", "n", 1);
  ck_assert_int_eq(aio_emit("builtin-test", data), 0);
  ck_assert_int_eq(json_integer_value(json_object_get(data, "n")), 1);
  json_decref(data);
  ck_assert_int_eq(aio_emit("", NULL), -EINVAL);
  ck_assert_ptr_nonnull(aio_config_get("aio", "workers"));
  ck_assert_ptr_null(aio_config_get("aio", "nosuchkey"));
}
END_TEST

struct Suite *builtin_tests(void) {
  Suite *s = suite_create("aio");
  TCase *tc = tcase_create("builtin");
  tcase_add_test(tc, test_echo_answers_what_it_got);
  tcase_add_test(tc, test_echo_answers_datagrams);
  tcase_add_test(tc, test_hello_answers_pipelined_requests_then_closes);
  tcase_add_test(tc, test_hello_refuses_a_malformed_request);
  tcase_add_test(tc, test_serve_refuses_what_is_not_a_protocol);
  suite_add_tcase(s, tc);
  tc = tcase_create("harness");
  tcase_add_test(tc, test_exchange_returns_what_arrived_by_the_deadline);
  tcase_add_test(tc, test_exchange_with_a_stopped_server_is_null);
  tcase_add_test(tc, test_emit_and_config_answer_in_a_test);
  suite_add_tcase(s, tc);
  return s;
}
#else
struct Suite *builtin_tests(void) {
  return NULL;
}
#endif
