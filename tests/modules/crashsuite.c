/*
 * crashsuite.c - a module whose `aio test` suite misbehaves: a test that
 * passes, one that fails, one that dies of SIGSEGV, and one whose served
 * protocol dies of SIGSEGV in the harness's thread. `aio test` must report
 * three failures, not crash.
 */
#include <signal.h>
#include <stdlib.h>

#include <aio.h>
#include <check.h>

static void crash_data(aio_conn_t *c, const char *data, size_t len) {
  (void)c;
  (void)data;
  (void)len;
  raise(SIGSEGV);
}
AIO_PROTOCOL(crasher, .data_received = crash_data);

START_TEST(test_passes) { ck_assert_int_eq(1 + 1, 2); }
END_TEST

START_TEST(test_fails) { ck_assert_msg(0, "fails on purpose"); }
END_TEST

START_TEST(test_segfaults) { raise(SIGSEGV); }
END_TEST

START_TEST(test_served_protocol_segfaults) {
  int port = aio_test_serve("crashsuite.crasher");
  ck_assert_int_gt(port, 0);
  free(aio_test_exchange(port, "x", 1, 5000));
  aio_test_stop();
}
END_TEST

static struct Suite *crash_tests(void) {
  Suite *s = suite_create("crashsuite");
  TCase *tc = tcase_create("misbehave");
  tcase_add_test(tc, test_passes);
  tcase_add_test(tc, test_fails);
  tcase_add_test(tc, test_segfaults);
  tcase_add_test(tc, test_served_protocol_segfaults);
  suite_add_tcase(s, tc);
  return s;
}

AIO_MODULE(.name = "crashsuite", .description = "aio test fixture",
           .tests = crash_tests);
