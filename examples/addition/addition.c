/*
 * addition.c - the seed README's addition server, in C: each line of
 * numbers joined by '+' ("2 + 2 + 3") is answered with their sum ("7").
 * Also shows a listener and a scheduler, as in the seed's examples.
 *
 *   [aio]
 *   modules = addition
 *   module_path = build/modules
 *
 *   [server:addition]
 *   protocol = addition.protocol
 *   address = 127.0.0.1
 *   port = 8888
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <aio.h>

#define LINE_MAX_LEN 1024

struct line {
  size_t len;
  char buf[LINE_MAX_LEN];
};

static void add_made(aio_conn_t *conn) {
  struct line *l = calloc(1, sizeof(*l));
  if (l == NULL) {
    aio_close(conn);
    return;
  }
  aio_conn_set_data(conn, l);
}

/* "2 + 2 + 3" -> 7; returns -1 on anything that is not such a sum. */
static int add_line(const char *s, long long *sum) {
  char *end;
  *sum = 0;
  for (;;) {
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno)
      return -1;
    *sum += v;
    s = end;
    while (*s == ' ' || *s == '\t' || *s == '\r')
      s++;
    if (*s == '\0')
      return 0;
    if (*s != '+')
      return -1;
    s++;
  }
}

static void add_data(aio_conn_t *conn, const char *data, size_t len) {
  struct line *l = aio_conn_get_data(conn);
  for (size_t i = 0; i < len; i++) {
    if (data[i] != '\n') {
      if (l->len == LINE_MAX_LEN - 1) {
        aio_write(conn, "error: line too long\n", 21);
        aio_close(conn);
        return;
      }
      l->buf[l->len++] = data[i];
      continue;
    }
    l->buf[l->len] = '\0';
    l->len = 0;
    long long sum;
    char out[64];
    int n = add_line(l->buf, &sum) == 0
                ? snprintf(out, sizeof(out), "%lld\n", sum)
                : snprintf(out, sizeof(out), "error: expected N + N ...\n");
    aio_write(conn, out, (size_t)n);
    json_t *data_ =
        json_pack("{s:s,s:I}", "line", l->buf, "sum", (json_int_t)sum);
    aio_emit("addition-done", data_);
    json_decref(data_);
  }
}

static void add_lost(aio_conn_t *conn, int status) {
  (void)status;
  free(aio_conn_get_data(conn));
}

AIO_PROTOCOL(protocol, .connection_made = add_made, .data_received = add_data,
             .connection_lost = add_lost);

/* A listener: [listen:addition] addition-done = addition.on_done */
static void on_done(const aio_signal_t *signal) {
  json_int_t sum = json_integer_value(json_object_get(signal->data, "sum"));
  aio_log(AIO_LOG_DEBUG, "%s: sum %lld", signal->name, (long long)sum);
}
AIO_LISTENER(on_done);

/* A scheduler: [schedule:tick] every = 2, func = addition.tick */
static int tick(aio_event_t *event) {
  aio_log(AIO_LOG_DEBUG, "schedule %s run %lld", event->name, event->run);
  return 0;
}
AIO_SCHEDULER(tick);

/* A command: [aio:commands] add = addition.add, then `aio add 2 2 3`. */
static int add(int argc, char **argv) {
  long long sum = 0;
  for (int i = 1; i < argc; i++) {
    char *end;
    errno = 0;
    long long v = strtoll(argv[i], &end, 10);
    if (end == argv[i] || *end != '\0' || errno) {
      fprintf(stderr, "aio %s: '%s' is not a whole number\n", argv[0], argv[i]);
      return 64;
    }
    sum += v;
  }
  printf("%lld\n", sum);
  return 0;
}
AIO_COMMAND(add);

/* Tests, run by `aio test` (built when Check is installed). */
#ifdef AIO_HAVE_CHECK
#include <check.h>

#define T_MS 5000

START_TEST(test_sum_of_a_line) {
  int port = aio_test_serve("addition.protocol");
  ck_assert_int_gt(port, 0);
  char *r = aio_test_exchange(port, "2 + 2 + 3\n", 2, T_MS);
  ck_assert_ptr_nonnull(r);
  ck_assert_str_eq(r, "7\n");
  free(r);
  aio_test_stop();
}
END_TEST

START_TEST(test_error_reply_and_next_line_still_served) {
  static const char want[] = "error: expected N + N ...\n-3\n";
  int port = aio_test_serve("addition.protocol");
  ck_assert_int_gt(port, 0);
  char *r =
      aio_test_exchange(port, "two + two\n-1 + -2\n", sizeof(want) - 1, T_MS);
  ck_assert_ptr_nonnull(r);
  ck_assert_str_eq(r, want);
  free(r);
  aio_test_stop();
}
END_TEST

START_TEST(test_overlong_line_is_refused_and_closed) {
  char line[LINE_MAX_LEN + 2];
  memset(line, '1', LINE_MAX_LEN);
  line[LINE_MAX_LEN] = '\n';
  line[LINE_MAX_LEN + 1] = '\0';
  int port = aio_test_serve("addition.protocol");
  ck_assert_int_gt(port, 0);
  /* 0: read until the server closes the connection. */
  char *r = aio_test_exchange(port, line, 0, T_MS);
  ck_assert_ptr_nonnull(r);
  ck_assert_str_eq(r, "error: line too long\n");
  free(r);
  aio_test_stop();
}
END_TEST

START_TEST(test_module_defaults_are_configured) {
  /* Under the user's file unless it sets the key itself. */
  ck_assert_ptr_nonnull(aio_config_get("addition", "max_line"));
}
END_TEST

static struct Suite *addition_tests(void) {
  Suite *s = suite_create("addition");
  TCase *tc = tcase_create("protocol");
  tcase_add_test(tc, test_sum_of_a_line);
  tcase_add_test(tc, test_error_reply_and_next_line_still_served);
  tcase_add_test(tc, test_overlong_line_is_refused_and_closed);
  tcase_add_test(tc, test_module_defaults_are_configured);
  suite_add_tcase(s, tc);
  return s;
}
#define ADDITION_TESTS addition_tests
#else
#define ADDITION_TESTS NULL
#endif

AIO_MODULE(.name = "addition", .description = "adds up lines like '2 + 2 + 3'",
           .defaults = "[addition]\n"
                       "max_line = 1024\n",
           .tests = ADDITION_TESTS);
