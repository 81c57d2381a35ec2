/*
 * test_config.c - the INI reader: both section spellings, continuation
 * lines, interpolation, layering, and every error with its file:line.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "settings.h"

static struct config *parse(const char *text, struct diag *d) {
  struct config *c = config_new();
  diag_init(d);
  config_parse_string(c, text, "t.conf", d);
  return c;
}

START_TEST(test_slash_spelling_is_colon) {
  struct diag d;
  struct config *c = parse("[schedule/x]\nevery = 2\n[aio/commands]\n"
                           "hi = m.f\n",
                           &d);
  ck_assert_int_eq(d.n, 0);
  ck_assert_str_eq(config_get(c, "schedule:x", "every"), "2");
  ck_assert_str_eq(config_get(c, "aio:commands", "hi"), "m.f");
  ck_assert_str_eq(config_get(c, "aio/commands", "hi"), "m.f");
  config_free(c);
  diag_close(&d);
}
END_TEST

START_TEST(test_continuation_lines_join) {
  struct diag d;
  struct config *c = parse("[aio]\nmodules = a\n    b\n  c\n", &d);
  ck_assert_int_eq(d.n, 0);
  ck_assert_str_eq(config_get(c, "aio", "modules"), "a\nb\nc");
  config_free(c);
  c = parse("[aio]\nmodules =\n    a\n    b\n", &d);
  ck_assert_str_eq(config_get(c, "aio", "modules"), "a\nb");
  config_free(c);
  diag_close(&d);
}
END_TEST

START_TEST(test_interpolation_resolves) {
  struct diag d;
  struct config *c =
      parse("[a]\nhost = 127.0.0.1\nurl = http://${host}:${server:web:port}/\n"
            "cost = $$5\n[server:web]\nport = 80\n",
            &d);
  ck_assert_int_eq(config_interpolate(c, &d), 0);
  ck_assert_str_eq(config_get(c, "a", "url"), "http://127.0.0.1:80/");
  ck_assert_str_eq(config_get(c, "a", "cost"), "$5");
  config_free(c);
  diag_close(&d);
}
END_TEST

START_TEST(test_interpolation_errors_name_line) {
  struct diag d;
  struct config *c = parse("[a]\nx = ${nope}\n", &d);
  ck_assert_int_eq(config_interpolate(c, &d), -1);
  ck_assert_int_eq(d.n, 1);
  ck_assert_ptr_nonnull(strstr(d.msgs[0], "t.conf:2:"));
  config_free(c);
  diag_close(&d);
  c = parse("[a]\nx = ${y}\ny = ${x}\n", &d);
  ck_assert_int_eq(config_interpolate(c, &d), -1);
  ck_assert_ptr_nonnull(strstr(d.msgs[0], "cycle"));
  config_free(c);
  diag_close(&d);
}
END_TEST

START_TEST(test_layers_override) {
  struct diag d;
  struct config *c = config_new();
  diag_init(&d);
  config_parse_string(c, "[aio]\nworkers = 1\nlog_level = info\n", "base",
                      &d);
  config_parse_string(c, "[aio]\nworkers = 3\n", "user", &d);
  ck_assert_int_eq(d.n, 0);
  ck_assert_str_eq(config_get(c, "aio", "workers"), "3");
  ck_assert_str_eq(config_get(c, "aio", "log_level"), "info");
  ck_assert_str_eq(config_entry(c, "aio", "workers")->file, "user");
  config_free(c);
  diag_close(&d);
}
END_TEST

START_TEST(test_syntax_errors_name_line) {
  struct diag d;
  struct config *c = parse("[aio]\nworkers = 1\nthis is not ini\n[broken\n"
                           "x = 1\nx = 2\n",
                           &d);
  ck_assert_int_eq(d.n, 3);
  ck_assert_ptr_nonnull(strstr(d.msgs[0], "t.conf:3:"));
  ck_assert_ptr_nonnull(strstr(d.msgs[1], "t.conf:4:"));
  ck_assert_ptr_nonnull(strstr(d.msgs[2], "t.conf:6: duplicate key"));
  config_free(c);
  diag_close(&d);
}
END_TEST

START_TEST(test_write_value_keeps_layout) {
  char path[] = "/tmp/aio-cfg-XXXXXX";
  int fd = mkstemp(path);
  const char *text = "# top comment\n[aio]\nworkers = 2 ; two\n"
                     "modules = a\n    b\n\n[other]\nk = v\n";
  ck_assert_int_eq(write(fd, text, strlen(text)), (int)strlen(text));
  close(fd);
  struct diag d;
  diag_init(&d);
  ck_assert_int_eq(config_write_value(path, "aio", "modules", "c", &d), 0);
  ck_assert_int_eq(config_write_value(path, "aio", "new", "1", &d), 0);
  ck_assert_int_eq(config_write_value(path, "server/x", "port", "9", &d), 0);
  FILE *f = fopen(path, "r");
  char buf[1024];
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  buf[n] = '\0';
  fclose(f);
  ck_assert_str_eq(buf, "# top comment\n[aio]\nworkers = 2 ; two\n"
                        "modules = c\nnew = 1\n\n[other]\nk = v\n"
                        "\n[server/x]\nport = 9\n");
  unlink(path);
  diag_close(&d);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("config");
  TCase *tc = tcase_create("reader");
  tcase_add_test(tc, test_slash_spelling_is_colon);
  tcase_add_test(tc, test_continuation_lines_join);
  tcase_add_test(tc, test_interpolation_resolves);
  tcase_add_test(tc, test_interpolation_errors_name_line);
  tcase_add_test(tc, test_layers_override);
  tcase_add_test(tc, test_syntax_errors_name_line);
  tcase_add_test(tc, test_write_value_keeps_layout);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
