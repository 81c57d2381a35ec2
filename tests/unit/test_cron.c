/*
 * test_cron.c - five-field cron expressions: what is refused and why,
 * ranges, steps, lists and names, and the next matching minute across
 * hour, day, month, year and leap-day boundaries (in UTC, set here).
 */
#define _GNU_SOURCE
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check_main.h"
#include "cron.h"

static void utc_setup(void) {
  setenv("TZ", "UTC", 1);
  tzset();
}

/* The next match after `after`, as "YYYY-MM-DD HH:MM" (static buffer). */
static const char *next(const char *expr, time_t after) {
  static char out[32];
  struct cron c;
  char err[128];
  ck_assert_msg(cron_parse(&c, expr, err, sizeof(err)) == 0, "%s: %s", expr,
                err);
  time_t t = cron_next(&c, after);
  if (t == (time_t)-1)
    return "never";
  struct tm tm;
  gmtime_r(&t, &tm);
  ck_assert_int_eq(tm.tm_sec, 0);
  strftime(out, sizeof(out), "%Y-%m-%d %H:%M", &tm);
  return out;
}

static struct cron parse_ok(const char *expr) {
  struct cron c;
  char err[128];
  ck_assert_msg(cron_parse(&c, expr, err, sizeof(err)) == 0, "%s: %s", expr,
                err);
  return c;
}

/* Refused, with a message containing `needle`. */
static void expect_error(const char *expr, const char *needle) {
  struct cron c;
  char err[128] = "";
  ck_assert_msg(cron_parse(&c, expr, err, sizeof(err)) == -1, "accepted: '%s'",
                expr);
  ck_assert_msg(strstr(err, needle) != NULL, "'%s': got '%s', want '%s'", expr,
                err, needle);
}

static uint64_t bits(const int *v, size_t n) {
  uint64_t b = 0;
  for (size_t i = 0; i < n; i++)
    b |= 1ull << v[i];
  return b;
}
#define BITS(...)                                                              \
  bits((const int[]){__VA_ARGS__},                                             \
       sizeof((const int[]){__VA_ARGS__}) / sizeof(int))

START_TEST(test_field_count) {
  expect_error("", "expected five fields");
  expect_error("* * * *", "got fewer");
  expect_error("* * * * * *", "got more");
  expect_error("   \t ", "got fewer");
}
END_TEST

START_TEST(test_out_of_range) {
  expect_error("60 * * * *", "bad minute (0-59) field '60'");
  expect_error("* 24 * * *", "bad hour (0-23) field '24'");
  expect_error("* * 0 * *", "bad day of month (1-31) field '0'");
  expect_error("* * 32 * *", "bad day of month (1-31) field '32'");
  expect_error("* * * 0 *", "bad month (1-12) field '0'");
  expect_error("* * * 13 *", "bad month (1-12) field '13'");
  expect_error("* * * * 8", "bad day of week (0-7) field '8'");
  expect_error("* * * * 0-8", "day of week");
  expect_error("00001 * * * *", "minute");
}
END_TEST

START_TEST(test_malformed_fields) {
  expect_error("5-3 * * * *", "minute");   /* reversed range */
  expect_error("*/0 * * * *", "minute");   /* zero step */
  expect_error("*/60 * * * *", "minute");  /* step beyond the field */
  expect_error("1,,2 * * * *", "minute");  /* empty list element */
  expect_error("1, * * * *", "minute");    /* trailing comma */
  expect_error("1a * * * *", "minute");    /* junk after a number */
  expect_error("-5 * * * *", "minute");    /* range with no start */
  expect_error("5- * * * *", "minute");    /* range with no end */
  expect_error("*5 * * * *", "minute");    /* junk after a star */
  expect_error("*/x * * * *", "minute");   /* step not a number */
  expect_error("*/mon * * * 1", "minute"); /* names are not steps */
  expect_error("mon * * * *", "minute");   /* names only for month/dow */
  expect_error("* * * foo *", "month");
  expect_error("* * * janx *", "month");
  expect_error("* * * january *", "month");
  expect_error("* * * * sunday", "day of week");
  expect_error("* * * * fri-mon", "day of week"); /* reversed */
}
END_TEST

START_TEST(test_overlong_expression) {
  /* Cut at the buffer, a long expression could lose its sixth field and
   * parse as something else. */
  char expr[400];
  memset(expr, ' ', sizeof(expr));
  memcpy(expr, "* * * * *", 9);
  memcpy(expr + sizeof(expr) - 6, "extra", 5);
  expr[sizeof(expr) - 1] = '\0';
  expect_error(expr, "longer than");
}
END_TEST

START_TEST(test_lists_and_ranges) {
  struct cron c = parse_ok("1,2,59 0-3 1-5,31 2-4 1-5");
  ck_assert_uint_eq(c.minute, BITS(1, 2, 59));
  ck_assert_uint_eq(c.hour, BITS(0, 1, 2, 3));
  ck_assert_uint_eq(c.dom, BITS(1, 2, 3, 4, 5, 31));
  ck_assert_uint_eq(c.month, BITS(2, 3, 4));
  ck_assert_uint_eq(c.dow, BITS(1, 2, 3, 4, 5));
  ck_assert_int_eq(c.dom_star, 0);
  ck_assert_int_eq(c.dow_star, 0);
  c = parse_ok("* * * * *");
  ck_assert_uint_eq(c.minute, ~0ull >> 4); /* 0..59 */
  ck_assert_uint_eq(c.hour, (1u << 24) - 1);
  ck_assert_uint_eq(c.dom, ((1u << 31) - 1) << 1);
  ck_assert_uint_eq(c.month, ((1u << 12) - 1) << 1);
  ck_assert_uint_eq(c.dow, 0x7f);
  ck_assert_int_eq(c.dom_star, 1);
  ck_assert_int_eq(c.dow_star, 1);
}
END_TEST

START_TEST(test_names) {
  struct cron c = parse_ok("0 0 * jan-MAR,Dec mon-fri");
  ck_assert_uint_eq(c.month, BITS(1, 2, 3, 12));
  ck_assert_uint_eq(c.dow, BITS(1, 2, 3, 4, 5));
  c = parse_ok("0 0 * * SUN,sat");
  ck_assert_uint_eq(c.dow, BITS(0, 6));
}
END_TEST

START_TEST(test_sunday_is_0_and_7) {
  ck_assert_uint_eq(parse_ok("0 0 * * 7").dow, BITS(0));
  ck_assert_uint_eq(parse_ok("0 0 * * 5-7").dow, BITS(0, 5, 6));
  ck_assert_uint_eq(parse_ok("0 0 * * 0-7").dow, 0x7f);
}
END_TEST

START_TEST(test_steps) {
  ck_assert_uint_eq(parse_ok("*/15 * * * *").minute, BITS(0, 15, 30, 45));
  ck_assert_uint_eq(parse_ok("10-30/10 * * * *").minute, BITS(10, 20, 30));
  /* "a/step" runs from a to the end of the field. */
  ck_assert_uint_eq(parse_ok("5/20 * * * *").minute, BITS(5, 25, 45));
  ck_assert_uint_eq(parse_ok("0 */6 * * *").hour, BITS(0, 6, 12, 18));
  ck_assert_uint_eq(parse_ok("0 0 */10 * *").dom, BITS(1, 11, 21, 31));
  ck_assert_uint_eq(parse_ok("0 0 * jan/5 *").month, BITS(1, 6, 11));
  struct cron c = parse_ok("*/2 * */2 * *");
  ck_assert_int_eq(c.dom_star, 0); /* a stepped star is a restriction */
}
END_TEST

START_TEST(test_step_is_per_list_element) {
  /* Each element of a list has its own step: "5/20" after "*" still runs
   * to 59, and a single-value range is not extended. */
  ck_assert_uint_eq(parse_ok("*/30,5/20 * * * *").minute,
                    BITS(0, 30, 5, 25, 45));
  ck_assert_uint_eq(parse_ok("5-5/2 * * * *").minute, BITS(5));
  ck_assert_uint_eq(parse_ok("1,50/5 * * * *").minute, BITS(1, 50, 55));
  ck_assert_uint_eq(parse_ok("0 0 * * 1/2,0").dow, BITS(0, 1, 3, 5));
}
END_TEST

/* expr, the time to search after (UTC), the next match wanted. */
struct next_case {
  const char *expr, *after, *want;
};

static void check_next(const struct next_case *c, size_t n) {
  utc_setup();
  for (size_t i = 0; i < n; i++) {
    struct tm tm = {0};
    const char *end = strptime(c[i].after, "%Y-%m-%d %H:%M:%S", &tm);
    ck_assert_msg(end && *end == '\0', "bad time '%s'", c[i].after);
    ck_assert_msg(strcmp(next(c[i].expr, timegm(&tm)), c[i].want) == 0,
                  "'%s' after %s: got %s, want %s", c[i].expr, c[i].after,
                  next(c[i].expr, timegm(&tm)), c[i].want);
  }
}
#define CHECK_NEXT(cases) check_next(cases, sizeof(cases) / sizeof(cases[0]))

START_TEST(test_next_minute_and_hour) {
  static const struct next_case cases[] = {
      {"* * * * *", "2024-01-01 12:00:30", "2024-01-01 12:01"},
      /* Strictly after: an exact match moves on to the next one. */
      {"* * * * *", "2024-01-01 12:00:00", "2024-01-01 12:01"},
      {"*/15 * * * *", "2024-01-01 12:50:00", "2024-01-01 13:00"},
      {"30 9-17 * * *", "2024-01-01 17:30:00", "2024-01-02 09:30"},
      {"0 */6 * * *", "2024-01-01 23:59:00", "2024-01-02 00:00"},
  };
  CHECK_NEXT(cases);
}
END_TEST

START_TEST(test_next_across_months_and_years) {
  static const struct next_case cases[] = {
      {"0 0 1 * *", "2024-01-31 12:00:00", "2024-02-01 00:00"},
      /* April has no 31st. */
      {"0 0 31 * *", "2024-04-01 00:00:00", "2024-05-31 00:00"},
      {"30 23 31 12 *", "2023-06-01 00:00:00", "2023-12-31 23:30"},
      {"30 23 31 12 *", "2023-12-31 23:30:00", "2024-12-31 23:30"},
      {"0 0 1 jan *", "2024-01-01 00:00:00", "2025-01-01 00:00"},
      {"59 23 * * *", "2024-12-31 23:59:00", "2025-01-01 23:59"},
  };
  CHECK_NEXT(cases);
}
END_TEST

START_TEST(test_next_leap_day) {
  static const struct next_case cases[] = {
      {"0 12 29 2 *", "2023-03-01 00:00:00", "2024-02-29 12:00"},
      {"0 12 29 2 *", "2024-02-29 12:00:00", "2028-02-29 12:00"},
      /* 30 February never comes. */
      {"0 0 30 2 *", "2024-01-01 00:00:00", "never"},
  };
  CHECK_NEXT(cases);
}
END_TEST

START_TEST(test_next_day_of_month_or_week) {
  static const struct next_case cases[] = {
      /* 2024-01-01 is a Monday. Both fields restricted: either matches. */
      {"0 0 13 * fri", "2024-01-01 00:00:00", "2024-01-05 00:00"},
      {"0 0 13 * fri", "2024-01-12 00:00:00", "2024-01-13 00:00"},
      /* One field a star: only the other counts. */
      {"0 0 * * fri", "2024-01-01 00:00:00", "2024-01-05 00:00"},
      {"0 0 13 * *", "2024-01-01 00:00:00", "2024-01-13 00:00"},
      {"0 0 * * 7", "2024-01-01 00:00:00", "2024-01-07 00:00"},
      {"0 9 * * mon-fri", "2024-01-05 10:00:00", "2024-01-08 09:00"},
  };
  CHECK_NEXT(cases);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("cron");
  TCase *tc = tcase_create("parse");
  tcase_add_test(tc, test_field_count);
  tcase_add_test(tc, test_out_of_range);
  tcase_add_test(tc, test_malformed_fields);
  tcase_add_test(tc, test_overlong_expression);
  tcase_add_test(tc, test_lists_and_ranges);
  tcase_add_test(tc, test_names);
  tcase_add_test(tc, test_sunday_is_0_and_7);
  tcase_add_test(tc, test_steps);
  tcase_add_test(tc, test_step_is_per_list_element);
  suite_add_tcase(s, tc);
  tc = tcase_create("next");
  tcase_add_test(tc, test_next_minute_and_hour);
  tcase_add_test(tc, test_next_across_months_and_years);
  tcase_add_test(tc, test_next_leap_day);
  tcase_add_test(tc, test_next_day_of_month_or_week);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
