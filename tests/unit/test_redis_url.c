/*
 * test_redis_url.c - the [aio] cluster address: the forms users write for
 * Redis clients, percent-encoded credentials, IPv6, unix sockets, and every
 * malformed one refused with a reason; the password never shown.
 */
#define _GNU_SOURCE
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "check_main.h"
#include "redis_url.h"

static struct redis_url ok(const char *text) {
  struct redis_url u;
  char err[256];
  ck_assert_msg(redis_url_parse(&u, text, err, sizeof(err)) == 0, "%s: %s",
                text, err);
  return u;
}

/* u as logs show it is want; closes u. */
static void shown_as(struct redis_url *u, const char *want) {
  char d[256];
  redis_url_describe(u, d, sizeof(d));
  ck_assert_str_eq(d, want);
  redis_url_close(u);
}

static void bad(const char *text, const char *why) {
  struct redis_url u;
  char err[256] = "";
  ck_assert_msg(redis_url_parse(&u, text, err, sizeof(err)) == -1,
                "%s was accepted", text);
  ck_assert_msg(strstr(err, why) != NULL, "%s: '%s' does not say '%s'", text,
                err, why);
  ck_assert_ptr_null(u.host);
  ck_assert_ptr_null(u.password);
}

START_TEST(test_tcp_forms) {
  struct redis_url u = ok("redis://127.0.0.1");
  ck_assert_str_eq(u.host, "127.0.0.1");
  ck_assert_int_eq(u.port, 6379);
  ck_assert_int_eq(u.db, 0);
  ck_assert_ptr_null(u.password);
  redis_url_close(&u);
  u = ok("redis://cache.internal:6380/3");
  ck_assert_str_eq(u.host, "cache.internal");
  ck_assert_int_eq(u.port, 6380);
  ck_assert_int_eq(u.db, 3);
  redis_url_close(&u);
  u = ok("redis://[::1]:7000/1");
  ck_assert_str_eq(u.host, "::1");
  ck_assert_int_eq(u.port, 7000);
  shown_as(&u, "redis://[::1]:7000/1");
  u = ok("redis://host/");
  ck_assert_int_eq(u.db, 0);
  redis_url_close(&u);
}
END_TEST

START_TEST(test_credentials) {
  struct redis_url u = ok("redis://:p%40ss%3Aword@h:1/2");
  ck_assert_ptr_null(u.user);
  ck_assert_str_eq(u.password, "p@ss:word");
  shown_as(&u, "redis://:***@h:1/2");
  u = ok("redis://app:secret@h");
  ck_assert_str_eq(u.user, "app");
  ck_assert_str_eq(u.password, "secret");
  shown_as(&u, "redis://app:***@h:6379/0");
}
END_TEST

START_TEST(test_unix_forms) {
  struct redis_url u = ok("unix:///run/redis/redis.sock");
  ck_assert_str_eq(u.path, "/run/redis/redis.sock");
  ck_assert_ptr_null(u.host);
  redis_url_close(&u);
  u = ok("unix://:pw@/tmp/r.sock?db=4");
  ck_assert_str_eq(u.path, "/tmp/r.sock");
  ck_assert_str_eq(u.password, "pw");
  ck_assert_int_eq(u.db, 4);
  shown_as(&u, "unix://:***@/tmp/r.sock?db=4");
}
END_TEST

START_TEST(test_refused) {
  bad("http://h", "not a Redis URL");
  bad("", "not a Redis URL");
  bad("rediss://h", "TLS");
  bad("redis://", "no host");
  bad("redis://:6379", "no host");
  bad("redis://h:0", "1 to 65535");
  bad("redis://h:65536", "1 to 65535");
  bad("redis://h:", "port is missing");
  bad("redis://h:12x", "1 to 65535");
  bad("redis://h/x", "database");
  bad("redis://h/-1", "database");
  bad("redis://h?db=1", "query");
  bad("redis://[::1", "']'");
  bad("redis://[::1]x", "':PORT'");
  bad("redis://ho st", "host name");
  bad("redis://user@h", "no password");
  bad("redis://:@h", "empty");
  bad("redis://:%zz@h", "percent");
  bad("redis://:%00@h", "percent");
  bad("redis://:%4@h", "percent");
  bad("unix://relative.sock", "absolute");
  bad("unix:///", "empty");
  bad("unix:///tmp/r.sock?x=1", "?db=N");
  char longpath[200] = "unix:///";
  memset(longpath + 8, 'a', 150);
  bad(longpath, "107 bytes");
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("redis_url");
  TCase *tc = tcase_create("parse");
  tcase_add_test(tc, test_tcp_forms);
  tcase_add_test(tc, test_credentials);
  tcase_add_test(tc, test_unix_forms);
  tcase_add_test(tc, test_refused);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
