/*
 * test_aio_test.c - `aio test` runs the suites modules declare with
 * AIO_MODULE(.tests = ...): the example module's tests (which serve its
 * protocol with aio_test_serve) pass, the built-in module's run on request,
 * an unknown module is a usage error, a suite that fails and crashes is
 * reported as failures, and --tap / --xml write their reports.
 */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "harness.h"

#define OUT_MAX 65536

static char dir[128];
static char out[OUT_MAX];
/* Sections the next aio_test() adds to its aio.conf. */
static const char *extra_conf = "";

/* In a fresh directory with aio.conf loading `modules` from
 * `module_path`, run `aio -c aio.conf test ARGS...` (NULL-terminated); it
 * must exit with want. Its output is in out. */
__attribute__((sentinel)) static void
aio_test(const char *modules, const char *module_path, int want, ...) {
  char conf[2048];
  h_tmpdir(dir, sizeof(dir));
  snprintf(conf, sizeof(conf),
           "[aio]\n"
           "modules = %s\n"
           "module_path = %s\n"
           "\n"
           "[server:addition]\n"
           "protocol = aio.echo\n"
           "address = 127.0.0.1\n"
           "port = 0\n"
           "%s",
           modules, module_path, extra_conf);
  ck_assert_int_eq(h_write(dir, "aio.conf", conf), 0);
  const char *argv[16] = {"-c", "aio.conf", "test"};
  int argc = 3;
  va_list ap;
  va_start(ap, want);
  const char *a;
  while ((a = va_arg(ap, const char *)) != NULL && argc < 15)
    argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  int rc = h_aio(dir, out, sizeof(out), argv);
  if (rc < 0)
    ck_abort_msg("aio did not exit within the deadline");
  ck_assert_msg(rc == want, "exit %d, want %d:\n%s", rc, want, out);
}

/* Returns a new copy of dir/name, or NULL. */
static char *slurp(const char *name) {
  char path[512];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return NULL;
  char *buf = calloc(1, OUT_MAX);
  if (buf)
    fread(buf, 1, OUT_MAX - 1, f);
  fclose(f);
  return buf;
}

static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
    n++;
  return n;
}

START_TEST(test_aio_test_runs_the_example_suite) {
  aio_test("addition", AIO_EXAMPLE_MODULES, 0, NULL);
  ck_assert_msg(strstr(out, "aio test: 1 module, 4 tests, 0 failed\n"),
                "no summary line in:\n%s", out);
  /* The built-in module's tests run only when asked for. */
  ck_assert_msg(strstr(out, "aio: no tests") == NULL, "%s", out);
}
END_TEST

START_TEST(test_aio_test_runs_builtin_suite_when_named) {
  aio_test("addition", AIO_EXAMPLE_MODULES, 0, "aio", NULL);
  ck_assert_msg(strstr(out, "aio test: 1 module, 8 tests, 0 failed\n"),
                "no summary line in:\n%s", out);
}
END_TEST

START_TEST(test_aio_test_unknown_module_is_a_usage_error) {
  aio_test("addition", AIO_EXAMPLE_MODULES, 64, "nosuchmodule", NULL);
  ck_assert_msg(strstr(out, "unknown module 'nosuchmodule'"), "%s", out);
  /* It lists what the configuration has. */
  ck_assert_msg(strstr(out, " aio addition\n"), "%s", out);
}
END_TEST

START_TEST(test_aio_test_bad_configuration_exits_78) {
  aio_test("nosuchmodule", AIO_EXAMPLE_MODULES, 78, NULL);
  ck_assert_msg(strstr(out, "module 'nosuchmodule' not found"), "%s", out);
}
END_TEST

START_TEST(test_aio_test_reports_crashing_tests_as_failures) {
  aio_test("crashsuite", AIO_TEST_MODULES, 1, "-v", NULL);
  ck_assert_msg(strstr(out, "aio test: 1 module, 4 tests, 3 failed\n"),
                "no summary line in:\n%s", out);
  ck_assert_msg(strstr(out, "test_passes:0: Passed"), "%s", out);
  ck_assert_msg(strstr(out, "fails on purpose"), "%s", out);
  ck_assert_msg(strstr(out, "test_segfaults"), "%s", out);
  ck_assert_msg(strstr(out, "test_served_protocol_segfaults"), "%s", out);
}
END_TEST

/* The test's loop (busmod's suite): an async scheduler from a uv_timer
 * and from a thread, aio_call_soon and aio_emit_wait with an async
 * listener all complete on it, run by aio_test_run(). */
START_TEST(test_aio_test_runs_async_code_on_the_test_loop) {
  extra_conf = "\n[busmod]\nlater_ms = 100\n"
               "\n[schedule:bus-later-thread]\nevery = 3600\n"
               "func = busmod.later_thread\n"
               "\n[listen:bus]\nbus-wait = busmod.status_async\n"
               "    busmod.record\n";
  aio_test("busmod", AIO_TEST_MODULES, 0, "-v", NULL);
  extra_conf = "";
  ck_assert_msg(strstr(out, "aio test: 1 module, 4 tests, 0 failed\n"),
                "no summary line in:\n%s", out);
  ck_assert_msg(strstr(out, "test_emit_wait_on_the_test_loop:0: Passed"), "%s",
                out);
}
END_TEST

START_TEST(test_aio_test_writes_tap_and_xml) {
  aio_test("crashsuite", AIO_TEST_MODULES, 1, "--tap", "t.tap", "--xml",
           "t.xml", NULL);

  char *tap = slurp("t.tap");
  ck_assert_msg(tap != NULL, "no TAP file");
  /* TAP: a plan for four tests, one "ok", three "not ok". */
  ck_assert_msg(strstr(tap, "1..4\n"), "%s", tap);
  ck_assert_int_eq(count(tap, "not ok "), 3);
  ck_assert_int_eq(count(tap, "\nok ") + (strncmp(tap, "ok ", 3) == 0), 1);
  free(tap);

  char *xml = slurp("t.xml");
  ck_assert_msg(xml != NULL, "no XML file");
  ck_assert_msg(strncmp(xml, "<?xml", 5) == 0, "%s", xml);
  ck_assert_msg(strstr(xml, "<testsuites") && strstr(xml, "</testsuites>"),
                "%s", xml);
  ck_assert_int_eq(count(xml, "<test result=\"success\""), 1);
  ck_assert_int_eq(count(xml, "<test result=\"failure\"") +
                       count(xml, "<test result=\"error\""),
                   3);
  free(xml);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("aio test");
  TCase *tc = tcase_create("cli");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_aio_test_runs_the_example_suite);
  tcase_add_test(tc, test_aio_test_runs_builtin_suite_when_named);
  tcase_add_test(tc, test_aio_test_unknown_module_is_a_usage_error);
  tcase_add_test(tc, test_aio_test_bad_configuration_exits_78);
  tcase_add_test(tc, test_aio_test_reports_crashing_tests_as_failures);
  tcase_add_test(tc, test_aio_test_writes_tap_and_xml);
  tcase_add_test(tc, test_aio_test_runs_async_code_on_the_test_loop);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
