/*
 * test_bus_scan.c - bus_scan() against jansson: whatever it decides on
 * its own (0, -EBADMSG, -EPROTO) must be what bus_decode() decides, and
 * the members it finds must hold what jansson parses there. Handwritten
 * edge cases, then seeded random mutations of real frames.
 */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "bus_agree.h"
#include "check_main.h"

static void check_agree(const char *s) {
  const char *why = bus_scan_disagrees(s, strlen(s));
  ck_assert_msg(why == NULL, "%s: %s", s, why);
}

START_TEST(test_bus_scan_agrees_on_edge_cases) {
  static const char *const cases[] = {
      "{\"t\":\"emit\",\"signal\":\"a\",\"data\":{\"x\":[1,2.5,-0,1e3]},"
      "\"seq\":1}",
      " \t{\"t\":\"delivered\",\"id\":42}\r\n ",
      "{\"t\":\"deliver\",\"id\":1,\"signal\":\"s\",\"data\":null,"
      "\"listeners\":[0,3]}",
      "{\"t\":\"emit\"}",
      "{\"t\":\"bogus\"}",
      "{\"t\":\"emit\",\"t\":\"emit\"}",
      "{\"t\":\"emit\",\"data\":{\"a\":1,\"a\":2}}",
      "{\"t\":\"emit\",\"data\":{\"a\":1,\"b\":{\"a\":2}}}",
      "{\"t\":\"emit\",\"data\":{\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,"
      "\"k6\":6,\"k7\":7,\"k8\":8,\"k9\":9,\"k1\":10}}",
      "{\"t\":\"emit\",\"data\":{\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,"
      "\"k6\":6,\"k7\":7,\"k8\":8,\"k9\":9,\"k10\":10}}",
      "{\"t\":\"emit\",\"data\":\"\\u0000\"}",
      "{\"t\":\"emit\",\"data\":\"\\ud800\"}",
      "{\"t\":\"emit\",\"data\":\"\\udc00\"}",
      "{\"t\":\"emit\",\"data\":\"\\ud83d\\ude00\"}",
      "{\"t\":\"emit\",\"data\":\"\\ud83d\\u0041\"}",
      "{\"t\":\"emit\",\"data\":\"\\x\"}",
      "{\"t\":\"emit\",\"data\":\"\\u12G4\"}",
      "{\"t\":\"emit\",\"data\":\"caf\xc3\xa9\"}",
      "{\"t\":\"emit\",\"data\":\"\xc0\xaf\"}",
      "{\"t\":\"emit\",\"data\":\"\xed\xa0\x80\"}",
      "{\"t\":\"emit\",\"data\":\"\xf4\x90\x80\x80\"}",
      "{\"t\":\"emit\",\"data\":\"\xe2\x82\"}",
      "{\"t\":\"emit\",\"data\":\"\xe0\x80\xaf\"}",
      "{\"t\":\"emit\",\"data\":\"\xf0\x80\x80\xaf\"}",
      "{\"t\":\"emit\",\"data\":\"\xf0\x9f\x98\x80\"}",
      "{\"t\":\"emit\",\"data\":\"\xf5\x80\x80\x80\"}",
      "{\"t\":\"emit\",\"data\":\"\x80\"}",
      "{\"t\":\"emit\",\"data\":\"\xef\xbf\xbf\"}",
      "{\"t\":\"emit\",\"data\":\"tab\tin\"}",
      "{\"t\":\"emit\",\"data\":9223372036854775807}",
      "{\"t\":\"emit\",\"data\":9223372036854775808}",
      "{\"t\":\"emit\",\"data\":-9223372036854775808}",
      "{\"t\":\"emit\",\"data\":-9223372036854775809}",
      "{\"t\":\"emit\",\"data\":1e308}",
      "{\"t\":\"emit\",\"data\":1e309}",
      "{\"t\":\"emit\",\"data\":-1e999}",
      "{\"t\":\"emit\",\"data\":1e-999}",
      "{\"t\":\"emit\",\"data\":01}",
      "{\"t\":\"emit\",\"data\":1.}",
      "{\"t\":\"emit\",\"data\":.5}",
      "{\"t\":\"emit\",\"data\":-}",
      "{\"t\":\"emit\",\"data\":1e}",
      "{\"t\":\"emit\",\"data\":1e+}",
      "{\"t\":\"emit\",\"data\":+1}",
      "{\"t\":\"emit\",\"data\":truex}",
      "{\"t\":\"emit\",\"data\":nul}",
      "{\"t\":\"emit\",\"data\":[1,]}",
      "{\"t\":\"emit\",\"data\":{,}}",
      "{\"t\":\"emit\",}",
      "{\"t\":\"emit\"} x",
      "{\"t\":\"emit\"}{}",
      "[\"t\",\"emit\"]",
      "\"emit\"",
      "",
      "   ",
      "{\"t\":1}",
      "{\"t\":\"em\\u0069t\"}",
      "{\"\\u0074\":\"emit\"}",
      "{\"t\":\"emit\",\"signal\":\"a\\nb\"}",
      "{\"t\":\"emit\",\"signal\":5}",
      "{\"t\":\"emit\",\"signal\":\"\"}",
      "{\"t\":\"heartbeatheartbeat\"}",
      "{\"t\":\"emit\"",
      "{\"t\":\"emit\",\"data\":\"unterminated}",
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    check_agree(cases[i]);
  /* A NUL byte inside a frame. */
  const char nul[] = "{\"t\":\"emit\",\"data\":\"a\0b\"}";
  ck_assert_ptr_null(bus_scan_disagrees(nul, sizeof(nul) - 1));
}
END_TEST

/* Nesting at and around jansson's limit of 2048. */
START_TEST(test_bus_scan_agrees_on_depth) {
  static const int depths[] = {2045, 2046, 2047, 2048, 2049, 3000};
  for (size_t d = 0; d < sizeof(depths) / sizeof(depths[0]); d++)
    for (int scalar = 0; scalar < 2; scalar++) {
      int n = depths[d];
      size_t cap = (size_t)n * 2 + 64;
      char *buf = malloc(cap);
      size_t len = (size_t)snprintf(buf, cap, "{\"t\":\"emit\",\"data\":");
      for (int i = 0; i < n; i++)
        buf[len++] = '[';
      if (scalar)
        buf[len++] = '1';
      for (int i = 0; i < n; i++)
        buf[len++] = ']';
      buf[len++] = '}';
      const char *why = bus_scan_disagrees(buf, len);
      ck_assert_msg(why == NULL, "depth %d%s: %s", n, scalar ? "+1" : "", why);
      free(buf);
    }
}
END_TEST

static unsigned long long rng = 0x9e3779b97f4a7c15ULL;
static unsigned rnd(unsigned n) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (unsigned)(rng % n);
}

/* Seeded, bounded: the same inputs every run. */
START_TEST(test_bus_scan_agrees_on_mutations) {
  static const char *const seeds[] = {
      "{\"t\":\"emit\",\"signal\":\"order-paid\",\"data\":{\"id\":12,"
      "\"who\":\"ann\",\"tags\":[\"a\",\"b\"],\"ok\":true,\"x\":null,"
      "\"r\":-1.5e-3},\"seq\":7}",
      "{\"t\":\"deliver\",\"id\":99,\"signal\":\"s\",\"data\":[{},[],\"\","
      "0],\"listeners\":[1,2]}",
      "{\"t\":\"delivered\",\"id\":5}",
      "{\"t\":\"done\",\"id\":3,\"ok\":false}",
  };
  static const char alphabet[] = "{}[]:,\"\\ tfnrue0123456789.-+eEaxu\t\n\x80"
                                 "\xc3\xa9\xed\xf0";
  char buf[512];
  for (int iter = 0; iter < 200000; iter++) {
    const char *seed = seeds[rnd(4)];
    size_t len = strlen(seed);
    memcpy(buf, seed, len);
    for (unsigned k = 0, edits = 1 + rnd(4); k < edits; k++) {
      size_t at = rnd((unsigned)len + 1);
      switch (rnd(3)) {
      case 0: /* replace */
        if (at < len)
          buf[at] = alphabet[rnd(sizeof(alphabet) - 1)];
        break;
      case 1: /* insert */
        if (len + 1 < sizeof(buf)) {
          memmove(buf + at + 1, buf + at, len - at);
          buf[at] = alphabet[rnd(sizeof(alphabet) - 1)];
          len++;
        }
        break;
      default: /* delete */
        if (at < len) {
          memmove(buf + at, buf + at + 1, len - at - 1);
          len--;
        }
      }
    }
    const char *why = bus_scan_disagrees(buf, len);
    ck_assert_msg(why == NULL, "%.*s: %s", (int)len, buf, why);
  }
}
END_TEST

/* bus_out_json writes what jansson reads back as the same value, and
 * refuses what the master would refuse (a cycle, a NUL, bad UTF-8) with
 * -EINVAL instead of costing the worker its channel. */
/* A signal's data alone (cluster entries): any type at the top, the
 * same verdict as jansson's wherever bus_scan_value() gives one. */
START_TEST(test_bus_scan_value_agrees_with_jansson) {
  static const char *const cases[] = {
      "{\"x\":[1,2.5,-0,1e3]}",
      " 7 ",
      "\"s\"",
      "null",
      "true",
      "false",
      "[]",
      "{}",
      "",
      " ",
      "{\"a\":1,\"a\":2}",
      "{\"a\":1} x",
      "[1,]",
      "\"\\u0000\"",
      "\"\\ud800\"",
      "\"\xc0\xaf\"",
      "9223372036854775808",
      "1e999",
      "{\"a\\u0062\":1}",
      "01",
      "[1,{\"b\":[null]}]\r\n\t",
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *v = cases[i];
    int rc = bus_scan_value(v, strlen(v));
    json_t *j = json_loadb(v, strlen(v),
                           JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    ck_assert_msg(rc == 0 || rc == -EBADMSG || rc == -EAGAIN, "%s: %d", v, rc);
    if (rc != -EAGAIN)
      ck_assert_msg((rc == 0) == (j != NULL), "%s: scan %d, jansson %s", v, rc,
                    j ? "accepts" : "refuses");
    json_decref(j);
  }
}
END_TEST

START_TEST(test_bus_out_json_round_trips_and_refuses) {
  static const char *const values[] = {
      "{\"a\":[1,-2,3.25,1e-300,true,false,null,{},[]],\"b\":\"caf\u00e9 "
      "\\\"q\\\" \\\\ \\n\\t\\u0001 \\ud83d\\ude00\"}",
      "[9223372036854775807,-9223372036854775808,0.1,-0.0]",
      "\"\"",
      "{\"\":{\"\":{}}}",
  };
  for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
    json_t *v = json_loads(values[i], JSON_DECODE_ANY, NULL);
    ck_assert_ptr_nonnull(v);
    struct bus_out o = {0};
    ck_assert_int_eq(bus_out_json(&o, v), 0);
    json_t *back = json_loadb(o.buf, o.len, JSON_DECODE_ANY, NULL);
    ck_assert_msg(json_equal(v, back), "%s -> %.*s", values[i], (int)o.len,
                  o.buf);
    json_decref(back);
    json_decref(v);
    bus_out_close(&o);
  }
  struct bus_out o = {0};
  json_t *a = json_array(), *b = json_array();
  json_array_append(a, b);
  json_array_append(b, a);
  ck_assert_int_eq(bus_out_json(&o, a), -EINVAL);
  json_array_clear(b);
  json_decref(a);
  json_decref(b);
  json_t *nul = json_stringn("a\0b", 3);
  o.len = 0;
  ck_assert_int_eq(bus_out_json(&o, nul), -EINVAL);
  json_decref(nul);
  json_t *bad = json_string_nocheck("\xc0\xaf");
  o.len = 0;
  ck_assert_int_eq(bus_out_json(&o, bad), -EINVAL);
  json_decref(bad);
  bus_out_close(&o);
}
END_TEST

static void int_as_printf(struct bus_out *o, long long v) {
  char want[32];
  o->len = 0;
  ck_assert_int_eq(bus_out_int(o, v), 0);
  int n = snprintf(want, sizeof(want), "%lld", v);
  ck_assert_msg(o->len == (size_t)n && memcmp(o->buf, want, o->len) == 0,
                "%s written as %.*s", want, (int)o->len, o->buf);
}

/* bus_out_int writes what printf does, 8 digits at a time. */
START_TEST(test_bus_out_int_matches_printf) {
  static const long long edges[] = {0,
                                    1,
                                    9,
                                    10,
                                    11,
                                    99,
                                    100,
                                    101,
                                    999,
                                    -1,
                                    -9,
                                    -10,
                                    -99,
                                    -100,
                                    -101,
                                    LLONG_MAX,
                                    LLONG_MIN,
                                    1000000000000000000LL,
                                    999999999999999999LL,
                                    -999999999999999999LL};
  struct bus_out o = {0};
  for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]) + 400000; i++) {
    long long v = i < sizeof(edges) / sizeof(edges[0])
                      ? edges[i]
                      : (long long)i - 200000 -
                            (long long)(sizeof(edges) / sizeof(edges[0]));
    int_as_printf(&o, v);
  }
  /* Every magnitude, 8 digits at a time or not: random values of each
   * bit length, both signs (a fixed seed: the same values every run). */
  unsigned long long x = 0x9e3779b97f4a7c15ULL;
  for (int i = 0; i < 200000; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    long long v = (long long)(x >> (i % 64));
    v = i & 64 ? -v : v;
    int_as_printf(&o, v);
  }
  /* Powers of ten and their neighbours, where the digit count changes. */
  for (long long p = 1; p <= LLONG_MAX / 10; p *= 10)
    for (long long d = -1; d <= 1; d++) {
      int_as_printf(&o, p + d);
    }
  bus_out_close(&o);
}
END_TEST

/* bus_json_copy gives an equal value that shares nothing mutable. */
START_TEST(test_bus_json_copy_is_equal_and_separate) {
  json_t *v =
      json_loads("{\"a\":[1,-2,3.25,true,false,null,{\"x\":\"caf\u00e9\"}],"
                 "\"b\":{\"c\":[]},\"d\":\"\"}",
                 0, NULL);
  ck_assert_ptr_nonnull(v);
  json_t *c = bus_json_copy(v);
  ck_assert_ptr_nonnull(c);
  ck_assert(json_equal(v, c));
  ck_assert_ptr_ne(c, v);
  json_array_append_new(json_object_get(v, "a"), json_integer(7));
  json_object_set_new(json_object_get(json_object_get(v, "b"), "c"), "y",
                      json_true());
  ck_assert_int_eq(json_array_size(json_object_get(c, "a")), 7);
  ck_assert(json_is_array(json_object_get(json_object_get(c, "b"), "c")));
  json_decref(v);
  json_decref(c);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("bus_scan");
  TCase *tc = tcase_create("scan");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_bus_scan_agrees_on_edge_cases);
  tcase_add_test(tc, test_bus_scan_agrees_on_depth);
  tcase_add_test(tc, test_bus_scan_agrees_on_mutations);
  tcase_add_test(tc, test_bus_scan_value_agrees_with_jansson);
  tcase_add_test(tc, test_bus_out_json_round_trips_and_refuses);
  tcase_add_test(tc, test_bus_out_int_matches_printf);
  tcase_add_test(tc, test_bus_json_copy_is_equal_and_separate);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
