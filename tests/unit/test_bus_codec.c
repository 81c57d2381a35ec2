#define _GNU_SOURCE /* memmem */
/*
 * test_bus_codec.c - common/bus_codec.c's encoders against its decoder
 * (both ways: checked, and trusted as a worker reads the master), and
 * both against jansson (bus_codec_disagrees, shared with the bus fuzz
 * target); and common/bus_index.c, the listener index both ends read.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus_agree.h"
#include "bus_codec.h"
#include "bus_index.h"
#include "check_main.h"

static struct bus_out out;

/* Every hot frame taken apart, checked or trusted. */
#define HOW(trusted) (BUS_IN_HOT | ((trusted) ? BUS_IN_TRUSTED : 0))

/* The frame just encoded, without its newline. */
static const char *frame(size_t *len) {
  ck_assert_uint_gt(out.len, 0);
  ck_assert_int_eq(out.buf[out.len - 1], '\n');
  *len = out.len - 1;
  return out.buf;
}

static void agree(const char *s) {
  const char *why = bus_codec_disagrees(s, strlen(s));
  ck_assert_msg(why == NULL, "%s: %s", s, why ? why : "");
}

START_TEST(test_emit_round_trips) {
  json_t *data =
      json_pack("{s:s,s:[i,f,b,n]}", "k", "v\"\n\xc3\xa9", "a", 1, 2.5, 1);
  /* keep: the worker kept the data for its own broadcast listeners. */
  for (int keep = 0; keep < 2; keep++) {
    out.len = out.off = 0;
    ck_assert_int_eq(bus_emit_encode(&out, "order-paid", data, 42, keep), 0);
    size_t len;
    const char *f = frame(&len);
    for (int trusted = 0; trusted < 2; trusted++) {
      struct bus_in in;
      ck_assert_int_eq(bus_in_decode(f, len, HOW(trusted), &in), 0);
      ck_assert_int_eq(in.type, BUS_EMIT);
      ck_assert_str_eq(in.signal, "order-paid");
      ck_assert_int_eq(in.seq, 42);
      ck_assert_int_eq(in.keep, keep);
      ck_assert_uint_eq(in.signal_text.n, strlen("order-paid"));
      ck_assert_int_eq(memcmp(in.signal_text.p, "order-paid", in.signal_text.n),
                       0);
      ck_assert_ptr_null(in.msg); /* from its text, no tree */
      ck_assert_ptr_nonnull(in.raw.p);
      json_t *got = json_loadb(in.raw.p, in.raw.n, JSON_DECODE_ANY, NULL);
      ck_assert(json_equal(got, data));
      json_decref(got);
      bus_in_free(&in);
    }
    ck_assert_ptr_null(bus_codec_disagrees(f, len));
  }
  json_decref(data);
}
END_TEST

START_TEST(test_emit_refuses_what_the_master_would) {
  out.len = out.off = 0;
  ck_assert_int_eq(bus_emit_encode(&out, "bad\xff", NULL, 1, 0), -EINVAL);
  ck_assert_uint_eq(out.len, 0);
  char *big = malloc(BUS_MAX_EMIT);
  memset(big, 'x', BUS_MAX_EMIT - 1);
  big[BUS_MAX_EMIT - 1] = '\0';
  json_t *d = json_string(big);
  ck_assert_int_eq(bus_emit_encode(&out, "s", d, 1, 0), -EMSGSIZE);
  ck_assert_uint_eq(out.len, 0); /* nothing added */
  json_decref(d);
  free(big);
}
END_TEST

START_TEST(test_deliver_round_trips) {
  size_t ks[12];
  for (size_t i = 0; i < 12; i++)
    ks[i] = i * 7;
  json_t *data = json_pack("{s:I}", "t", (json_int_t)123456789012345);
  static const char text[] = "{\"x\":[1,2,{\"y\":null}]}";
  struct bus_span raw = {text, sizeof(text) - 1};
  for (int with_raw = 0; with_raw < 2; with_raw++)
    for (size_t n = 0; n <= 12; n += 3) { /* 12: past ks_local */
      out.len = out.off = 0;
      ck_assert_int_eq(bus_deliver_encode(&out, 99, "a b\\c", data,
                                          with_raw ? &raw : NULL, ks, n),
                       0);
      size_t len;
      const char *f = frame(&len);
      for (int trusted = 0; trusted < 2; trusted++) {
        struct bus_in in;
        ck_assert_msg(bus_in_decode(f, len, HOW(trusted), &in) == 0, "%.*s",
                      (int)len, f);
        ck_assert_int_eq(in.type, BUS_DELIVER);
        ck_assert_str_eq(in.signal, "a b\\c");
        ck_assert_int_eq(in.id, 99);
        ck_assert_uint_eq(in.nk, n);
        for (size_t i = 0; i < n; i++)
          ck_assert_int_eq(in.ks[i], (json_int_t)ks[i]);
        json_t *want =
            with_raw ? json_loadb(raw.p, raw.n, 0, NULL) : json_incref(data);
        ck_assert(json_equal(in.data, want));
        json_decref(want);
        bus_in_free(&in);
      }
      ck_assert_ptr_null(bus_codec_disagrees(f, len));
    }
  json_decref(data);
}
END_TEST

/* The deliver of a kept emit back to its emitter names the emit's seq
 * instead of carrying the data, alone or as a run of the count kept emits
 * from seq on, and is read the same checked, trusted, or in another
 * shape. */
START_TEST(test_kept_emit_and_its_deliver_round_trip) {
  size_t len;
  const char *f;
  size_t ks[] = {0, 4};
  struct bus_span text = {"sig", 3};
  static const size_t counts[] = {1, 2, 977, BUS_RUN_MAX};
  for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++)
    for (int with_text = 0; with_text < 2; with_text++) {
      out.len = out.off = 0;
      ck_assert_int_eq(bus_deliver_ref_encode(&out, 12, "sig",
                                              with_text ? &text : NULL, 9,
                                              counts[c], ks, 2),
                       0);
      f = frame(&len);
      /* One emit alone is written as it was before runs. */
      ck_assert_int_eq(memmem(f, len, "\"count\"", 7) != NULL, counts[c] > 1);
      for (int trusted = 0; trusted < 2; trusted++) {
        struct bus_in in;
        ck_assert_int_eq(bus_in_decode(f, len, HOW(trusted), &in), 0);
        ck_assert_int_eq(in.type, BUS_DELIVER);
        ck_assert_int_eq(in.id, 12);
        ck_assert_int_eq(in.has_seq, 1);
        ck_assert_int_eq(in.seq, 9);
        ck_assert_int_eq(in.count, (json_int_t)counts[c]);
        ck_assert_str_eq(in.signal, "sig");
        ck_assert_uint_eq(in.nk, 2);
        ck_assert_int_eq(in.ks[1], 4);
        ck_assert(json_is_null(in.data));
        bus_in_free(&in);
      }
      ck_assert_ptr_null(bus_codec_disagrees(f, len));
    }
  /* A run's count is 1 to BUS_RUN_MAX: the encoder refuses others. */
  out.len = out.off = 0;
  ck_assert_int_eq(bus_deliver_ref_encode(&out, 1, "s", NULL, 1, 0, ks, 2),
                   -EINVAL);
  ck_assert_int_eq(
      bus_deliver_ref_encode(&out, 1, "s", NULL, 1, BUS_RUN_MAX + 1, ks, 2),
      -EINVAL);
  ck_assert_uint_eq(out.len, 0);
  agree("{\"t\":\"deliver\",\"id\":5,\"signal\":\"s\",\"seq\":3,"
        "\"listeners\":[1],\"count\":4}");
  agree("{\"listeners\":[1],\"seq\":3,\"signal\":\"s\",\"id\":5,"
        "\"t\":\"deliver\"}");
  agree("{\"t\":\"emit\",\"signal\":\"s\",\"seq\":3,\"keep\":1}");
  /* A seq and data, or a seq that is not an integer: not a deliver. */
  static const char *const bad[] = {
      "{\"t\":\"deliver\",\"id\":5,\"signal\":\"s\",\"seq\":3,\"data\":1,"
      "\"listeners\":[1]}",
      "{\"t\":\"deliver\",\"id\":5,\"signal\":\"s\",\"seq\":\"3\","
      "\"listeners\":[1]}",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    struct bus_in in;
    for (int trusted = 0; trusted < 2; trusted++)
      ck_assert_int_eq(bus_in_decode(bad[i], strlen(bad[i]), HOW(trusted), &in),
                       -EBADMSG);
    agree(bad[i]);
  }
}
END_TEST

/* The trusted fast path takes exactly the encoder's shape; any other
 * shape of the same deliver is read the same, the long way. */
START_TEST(test_deliver_in_other_shapes) {
  static const char *const shapes[] = {
      "{\"t\":\"deliver\",\"id\":5,\"signal\":\"s\",\"data\":{\"a\":1},"
      "\"listeners\":[0,2]}",
      "{\"listeners\":[0,2],\"data\":{\"a\":1},\"signal\":\"s\",\"id\":5,"
      "\"t\":\"deliver\"}",
      "{ \"t\" : \"deliver\" , \"id\" : 5 , \"signal\" : \"s\" , \"data\" : "
      "{ \"a\" : 1 } , \"listeners\" : [ 0 , 2 ] }",
      "{\"t\":\"deliver\",\"id\":5,\"signal\":\"\\u0073\",\"data\":{\"a\":1},"
      "\"listeners\":[0,2]}",
      "{\"t\":\"deliver\",\"id\":5,\"signal\":\"s\",\"data\":{\"\\u0061\":1},"
      "\"listeners\":[0,2]}",
  };
  for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
    agree(shapes[i]);
    for (int trusted = 0; trusted < 2; trusted++) {
      struct bus_in in;
      ck_assert_int_eq(
          bus_in_decode(shapes[i], strlen(shapes[i]), HOW(trusted), &in), 0);
      ck_assert_str_eq(in.signal, "s");
      ck_assert_int_eq(in.id, 5);
      ck_assert_uint_eq(in.nk, 2);
      ck_assert_int_eq(in.ks[1], 2);
      ck_assert_int_eq(json_integer_value(json_object_get(in.data, "a")), 1);
      bus_in_free(&in);
    }
  }
}
END_TEST

START_TEST(test_bad_hot_frames_are_ebadmsg) {
  static const char *const bad[] = {
      "{\"t\":\"emit\",\"data\":1,\"seq\":1}",                 /* no signal */
      "{\"t\":\"emit\",\"signal\":\"\",\"data\":1,\"seq\":1}", /* empty */
      "{\"t\":\"emit\",\"signal\":3,\"seq\":1}",
      "{\"t\":\"emit\",\"signal\":\"s\",\"data\":1}", /* no seq */
      "{\"t\":\"emit\",\"signal\":\"s\",\"seq\":1.5}",
      "{\"t\":\"emit\",\"signal\":\"\\u0073\",\"seq\":\"1\"}", /* via jansson */
      "{\"t\":\"deliver\",\"signal\":\"s\",\"listeners\":[]}", /* no id */
      "{\"t\":\"deliver\",\"id\":1,\"signal\":\"s\"}",         /* no list */
      "{\"t\":\"deliver\",\"id\":1,\"signal\":\"s\",\"listeners\":5}",
      "{\"t\":\"deliver\",\"id\":1,\"signal\":\"s\",\"listeners\":[\"0\"]}",
      "{\"t\":\"deliver\",\"id\":1,\"signal\":\"s\",\"listeners\":[0.5]}",
      "{\"t\":\"delivered\",\"n\":\"1\"}", "{\"t\":\"delivered\",\"seq\":null}",
      /* A run's count: only with a seq, 1 to BUS_RUN_MAX, an integer, its
       * last seq within 64 bits. */
      "{\"t\":\"deliver\",\"id\":1,\"signal\":\"s\",\"count\":2,"
      "\"data\":1,\"listeners\":[0]}",
      "{\"t\":\"deliver\",\"id\":1,\"signal\":\"s\",\"seq\":1,\"count\":0,"
      "\"listeners\":[0]}",
      "{\"t\":\"deliver\",\"id\":1,\"signal\":\"s\",\"seq\":1,\"count\":-3,"
      "\"listeners\":[0]}",
      "{\"t\":\"deliver\",\"id\":1,\"signal\":\"s\",\"seq\":1,"
      "\"count\":65537,\"listeners\":[0]}",
      "{\"t\":\"deliver\",\"id\":1,\"signal\":\"s\",\"seq\":1,\"count\":2.0,"
      "\"listeners\":[0]}",
      "{\"t\":\"deliver\",\"id\":1,\"signal\":\"s\",\"seq\":"
      "9223372036854775807,\"count\":2,\"listeners\":[0]}",
      "{\"t\":\"deliver\",\"id\":1,\"signal\":\"\\u0073\",\"seq\":1,"
      "\"count\":0,\"listeners\":[0]}", /* via jansson */
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    agree(bad[i]);
    for (int trusted = 0; trusted < 2; trusted++) {
      struct bus_in in;
      ck_assert_msg(bus_in_decode(bad[i], strlen(bad[i]), HOW(trusted), &in) ==
                        -EBADMSG,
                    "%s", bad[i]);
    }
  }
  /* Not JSON, an unknown type: as bus_decode says. */
  struct bus_in in;
  ck_assert_int_eq(bus_in_decode("{\"t\":\"x\"}", 9, BUS_IN_HOT, &in), -EPROTO);
  ck_assert_int_eq(bus_in_decode("{\"t\":\"deliver\",\"id\":1", 20,
                                 BUS_IN_HOT | BUS_IN_TRUSTED, &in),
                   -EBADMSG);
  char sig[BUS_MAX_SIGNAL + 64];
  int n = snprintf(sig, sizeof(sig),
                   "{\"t\":\"emit\",\"signal\":\"%0*d\","
                   "\"seq\":1}",
                   BUS_MAX_SIGNAL + 1, 0);
  ck_assert_int_eq(bus_in_decode(sig, (size_t)n, BUS_IN_HOT, &in), -EBADMSG);
}
END_TEST

START_TEST(test_delivered_round_trips) {
  for (int has_n = 0; has_n < 2; has_n++)
    for (int has_seq = 0; has_seq < 2; has_seq++) {
      out.len = out.off = 0;
      ck_assert_int_eq(bus_delivered_encode(&out, has_n, 1234567, has_seq, 89),
                       0);
      size_t len;
      const char *f = frame(&len);
      struct bus_in in;
      ck_assert_int_eq(bus_in_decode(f, len, BUS_IN_HOT, &in), 0);
      ck_assert_int_eq(in.type, BUS_DELIVERED);
      ck_assert_int_eq(in.has_n, has_n);
      ck_assert_int_eq(in.has_seq, has_seq);
      if (has_n)
        ck_assert_int_eq(in.n, 1234567);
      if (has_seq)
        ck_assert_int_eq(in.seq, 89);
      bus_in_free(&in);
      ck_assert_ptr_null(bus_codec_disagrees(f, len));
    }
}
END_TEST

/* A hot type the reader does not accept comes as a tree, members
 * unchecked, for it to refuse (EPROTO: a worker sending a deliver). */
START_TEST(test_types_not_taken_apart_come_as_trees) {
  static const char f[] = "{\"t\":\"deliver\",\"x\":1}";
  struct bus_in in;
  ck_assert_int_eq(bus_in_decode(f, sizeof(f) - 1, BUS_IN_MASTER, &in), 0);
  ck_assert_int_eq(in.type, BUS_DELIVER);
  ck_assert_ptr_nonnull(in.msg);
  bus_in_free(&in);
  ck_assert_int_eq(bus_in_decode(f, sizeof(f) - 1, BUS_IN_WORKER, &in),
                   -EBADMSG);
  static const char e[] = "{\"t\":\"emit\"}";
  ck_assert_int_eq(bus_in_decode(e, sizeof(e) - 1, BUS_IN_WORKER, &in), 0);
  ck_assert_int_eq(in.type, BUS_EMIT);
  ck_assert_ptr_nonnull(in.msg);
  bus_in_free(&in);
}
END_TEST

/* Other types come as a tree; bus_in_line is the reading loop. */
struct got {
  int n;
  enum bus_type types[4];
};

static int on_in(void *arg, struct bus_in *in) {
  struct got *g = arg;
  ck_assert_int_lt(g->n, 4);
  if (in->type != BUS_DELIVER)
    ck_assert_ptr_nonnull(in->msg);
  g->types[g->n++] = in->type;
  return in->type == BUS_STATUS ? BUS_PAUSE : 0;
}

START_TEST(test_line_loop_decodes_and_pauses) {
  size_t ks[1] = {0};
  out.len = out.off = 0;
  ck_assert_int_eq(bus_deliver_encode(&out, 1, "s", NULL, NULL, ks, 1), 0);
  ck_assert_int_eq(bus_out_raw(&out,
                               "{\"t\":\"stop\",\"graceful\":true}\n"
                               "{\"t\":\"status\"}\n{\"t\":\"reopen\"}\n",
                               59),
                   0);
  struct bus_reader rd = {0};
  struct got g = {0};
  struct bus_in_sink sink = {on_in, &g, BUS_IN_WORKER};
  ck_assert_int_eq(bus_reader_split(&rd, out.buf, out.len, bus_in_line, &sink),
                   BUS_PAUSE);
  ck_assert_int_eq(g.n, 3);
  ck_assert_int_eq(g.types[0], BUS_DELIVER);
  ck_assert_int_eq(g.types[1], BUS_STOP);
  ck_assert_int_eq(g.types[2], BUS_STATUS);
  ck_assert_int_eq(bus_reader_resume(&rd, bus_in_line, &sink), 0);
  ck_assert_int_eq(g.n, 4);
  ck_assert_int_eq(g.types[3], BUS_REOPEN);
  bus_reader_close(&rd);
}
END_TEST

/* ---- the listener index ------------------------------------------------- */

START_TEST(test_index_by_signal_and_kind) {
  struct listener_conf ls[] = {
      {.signal = "a"},
      {.signal = "b", .broadcast = 1},
      {.signal = "a", .broadcast = 1},
      {.signal = "a"},
      {.signal = "c"},
      {.signal = "a"},
  };
  struct settings s = {.listeners = ls, .nlisteners = 6};
  struct bus_index ix;
  ck_assert_int_eq(bus_index_build(&ix, &s), 0);
  const struct bus_index_sig *a = bus_index_get(&ix, "a");
  ck_assert_ptr_nonnull(a);
  ck_assert_uint_eq(a->kinds, BUS_KIND_BIT(BUS_KIND_ONCE) |
                                  BUS_KIND_BIT(BUS_KIND_BROADCAST));
  /* Once-per-emit ones of "a", in configuration order. */
  size_t want[] = {0, 3, 5}, n = 0;
  for (size_t k = a->first[BUS_KIND_ONCE]; k != BUS_INDEX_END;
       k = bus_index_next(&ix, k))
    ck_assert_uint_eq(k, want[n++]);
  ck_assert_uint_eq(n, 3);
  ck_assert_uint_eq(a->first[BUS_KIND_BROADCAST], 2);
  ck_assert_uint_eq(bus_index_next(&ix, 2), BUS_INDEX_END);
  ck_assert_uint_eq(bus_index_kinds(&ix, "b"),
                    BUS_KIND_BIT(BUS_KIND_BROADCAST));
  ck_assert_uint_eq(bus_index_get(&ix, "b")->first[BUS_KIND_ONCE],
                    BUS_INDEX_END);
  ck_assert_uint_eq(bus_index_kinds(&ix, "c"), BUS_KIND_BIT(BUS_KIND_ONCE));
  ck_assert_uint_eq(bus_index_kinds(&ix, "d"), 0);
  ck_assert_ptr_null(bus_index_get(&ix, "d"));
  bus_index_close(&ix);
  /* Closed (or never built): knows no signal. */
  ck_assert_uint_eq(bus_index_kinds(&ix, "a"), 0);
}
END_TEST

START_TEST(test_index_of_no_listeners) {
  struct settings s = {0};
  struct bus_index ix;
  ck_assert_int_eq(bus_index_build(&ix, &s), 0);
  ck_assert_uint_eq(bus_index_kinds(&ix, "a"), 0);
  bus_index_close(&ix);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("bus_codec");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_emit_round_trips);
  tcase_add_test(tc, test_emit_refuses_what_the_master_would);
  tcase_add_test(tc, test_deliver_round_trips);
  tcase_add_test(tc, test_deliver_in_other_shapes);
  tcase_add_test(tc, test_kept_emit_and_its_deliver_round_trip);
  tcase_add_test(tc, test_bad_hot_frames_are_ebadmsg);
  tcase_add_test(tc, test_delivered_round_trips);
  tcase_add_test(tc, test_types_not_taken_apart_come_as_trees);
  tcase_add_test(tc, test_line_loop_decodes_and_pauses);
  tcase_add_test(tc, test_index_by_signal_and_kind);
  tcase_add_test(tc, test_index_of_no_listeners);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
