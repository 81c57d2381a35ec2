/*
 * test_bus.c - NDJSON framing of the master/worker channel: frames split
 * across reads, blank lines, the size limit, and every kind of frame that
 * must cost the sender its channel.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bus.h"
#include "check_main.h"

#define MAX_SEEN 16

/* What the callback saw: the type and "n" of each frame. */
struct seen {
  int n;
  enum bus_type types[MAX_SEEN];
  long long vals[MAX_SEEN];
  int stop_after; /* return 1 after this many frames (0: never) */
};

static int on_frame(void *arg, enum bus_type t, json_t *msg) {
  struct seen *s = arg;
  ck_assert_int_lt(s->n, MAX_SEEN);
  ck_assert(json_is_object(msg));
  s->types[s->n] = t;
  s->vals[s->n] = json_integer_value(json_object_get(msg, "n"));
  s->n++;
  return s->stop_after && s->n >= s->stop_after ? 1 : 0;
}

/* Feed the whole string in one call. */
static int feed(struct bus_reader *r, const char *data, struct seen *s) {
  return bus_reader_feed(r, data, strlen(data), on_frame, s);
}

/* Feed len bytes to a fresh reader, then close it; returns the feed's
 * result. */
static int feed_once(const char *data, size_t len, struct seen *s) {
  struct bus_reader r = {0};
  int rc = bus_reader_feed(&r, data, len, on_frame, s);
  bus_reader_close(&r);
  return rc;
}

START_TEST(test_type_names_round_trip) {
  for (int t = BUS_NONE + 1; t < BUS_TYPE_COUNT; t++)
    ck_assert_int_eq(bus_type_parse(bus_type_name((enum bus_type)t)), t);
  ck_assert_str_eq(bus_type_name(BUS_HEARTBEAT), "heartbeat");
  ck_assert_int_eq(bus_type_parse("nonsense"), BUS_NONE);
  ck_assert_int_eq(bus_type_parse(""), BUS_NONE);
  ck_assert_int_eq(bus_type_parse("none"), BUS_NONE);
  ck_assert_str_eq(bus_type_name(BUS_TYPE_COUNT), "none");
}
END_TEST

START_TEST(test_frames_in_one_read) {
  struct bus_reader r = {0};
  struct seen s = {0};
  ck_assert_int_eq(feed(&r,
                        "{\"t\":\"ready\",\"n\":1}\n"
                        "{\"t\":\"heartbeat\",\"n\":2}\n"
                        "{\"n\":3,\"t\":\"done\"}\n",
                        &s),
                   0);
  ck_assert_int_eq(s.n, 3);
  ck_assert_int_eq(s.types[0], BUS_READY);
  ck_assert_int_eq(s.types[1], BUS_HEARTBEAT);
  ck_assert_int_eq(s.types[2], BUS_DONE);
  ck_assert_int_eq(s.vals[2], 3);
  ck_assert_uint_eq(r.len, 0);
  bus_reader_close(&r);
}
END_TEST

START_TEST(test_frame_split_across_reads) {
  const char *wire = "{\"t\":\"emit\",\"n\":41}\n{\"t\":\"emit\",\"n\":42}\n";
  size_t len = strlen(wire);
  /* Every way of cutting the stream in two, and one byte at a time. */
  for (size_t cut = 0; cut <= len; cut++) {
    struct bus_reader r = {0};
    struct seen s = {0};
    ck_assert_int_eq(bus_reader_feed(&r, wire, cut, on_frame, &s), 0);
    ck_assert_int_eq(bus_reader_feed(&r, wire + cut, len - cut, on_frame, &s),
                     0);
    ck_assert_int_eq(s.n, 2);
    ck_assert_int_eq(s.vals[0], 41);
    ck_assert_int_eq(s.vals[1], 42);
    bus_reader_close(&r);
  }
  struct bus_reader r = {0};
  struct seen s = {0};
  size_t first_nl = (size_t)(strchr(wire, '\n') - wire);
  for (size_t i = 0; i < len; i++) {
    ck_assert_int_eq(bus_reader_feed(&r, wire + i, 1, on_frame, &s), 0);
    ck_assert_int_eq(s.n, i < first_nl ? 0 : i < len - 1 ? 1 : 2);
  }
  ck_assert_int_eq(s.n, 2);
  bus_reader_close(&r);
}
END_TEST

START_TEST(test_partial_frame_waits) {
  struct bus_reader r = {0};
  struct seen s = {0};
  ck_assert_int_eq(feed(&r, "{\"t\":\"ready\"", &s), 0);
  ck_assert_int_eq(s.n, 0);
  ck_assert_uint_eq(r.len, 12);
  ck_assert_int_eq(feed(&r, ",\"n\":7}\n{\"t\":", &s), 0);
  ck_assert_int_eq(s.n, 1);
  ck_assert_int_eq(s.vals[0], 7);
  ck_assert_uint_eq(r.len, 5);
  bus_reader_close(&r);
  ck_assert_ptr_null(r.buf);
  bus_reader_close(&r); /* twice is harmless */
}
END_TEST

START_TEST(test_blank_lines_are_keepalives) {
  struct bus_reader r = {0};
  struct seen s = {0};
  ck_assert_int_eq(feed(&r, "\n\n{\"t\":\"reopen\"}\n\n", &s), 0);
  ck_assert_int_eq(s.n, 1);
  ck_assert_int_eq(s.types[0], BUS_REOPEN);
  ck_assert_int_eq(feed(&r, "\n", &s), 0);
  ck_assert_int_eq(s.n, 1);
  bus_reader_close(&r);
}
END_TEST

START_TEST(test_callback_stop_is_returned) {
  static const char two[] = "{\"t\":\"stop\"}\n{\"t\":\"stop\"}\n";
  struct seen s = {.stop_after = 1};
  ck_assert_int_eq(feed_once(two, sizeof(two) - 1, &s), 1);
  ck_assert_int_eq(s.n, 1);
}
END_TEST

static int on_line(void *arg, const char *frame, size_t len) {
  enum bus_type t;
  int err;
  json_t *msg = bus_decode(frame, len, &t, &err);
  ck_assert_ptr_nonnull(msg);
  int rc = on_frame(arg, t, msg);
  json_decref(msg);
  return rc;
}

/* A callback that pauses (BUS_PAUSE, a worker's spent slice) leaves the
 * frames after it held in the reader, in order, for bus_reader_resume();
 * a frame split across reads still waits for its end. */
START_TEST(test_pause_holds_the_rest_for_resume) {
  static const char data[] =
      "{\"t\":\"stop\",\"n\":1}\n{\"t\":\"stop\",\"n\":2}\n"
      "{\"t\":\"stop\",\"n\":3}\n{\"t\":\"stop\",\"n\":4}\n"
      "{\"t\":\"stop\",";
  struct bus_reader r = {0};
  struct seen s = {.stop_after = 1};
  ck_assert_int_eq(bus_reader_split(&r, data, sizeof(data) - 1, on_line, &s),
                   BUS_PAUSE);
  ck_assert_int_eq(s.n, 1);
  ck_assert(bus_reader_held(&r));
  s.stop_after = 3;
  ck_assert_int_eq(bus_reader_resume(&r, on_line, &s), BUS_PAUSE);
  ck_assert_int_eq(s.n, 3);
  s.stop_after = 0;
  ck_assert_int_eq(bus_reader_resume(&r, on_line, &s), 0);
  ck_assert(!bus_reader_held(&r));
  ck_assert_int_eq(s.n, 4);
  ck_assert_int_eq(bus_reader_split(&r, "\"n\":5}\n", 7, on_line, &s), 0);
  ck_assert_int_eq(s.n, 5);
  for (int i = 0; i < 5; i++)
    ck_assert_int_eq(s.vals[i], i + 1);
  ck_assert_int_eq(bus_reader_resume(&r, on_line, &s), 0);
  bus_reader_close(&r);
}
END_TEST

static char *frame_of_size(size_t total) {
  /* {"t":"emit","pad":"xxxx..."}\n, total bytes with the newline */
  const char *pre = "{\"t\":\"emit\",\"pad\":\"", *post = "\"}\n";
  size_t fixed = strlen(pre) + strlen(post);
  char *f = malloc(total + 1);
  ck_assert_ptr_nonnull(f);
  strcpy(f, pre);
  memset(f + strlen(pre), 'x', total - fixed);
  strcpy(f + total - strlen(post), post);
  ck_assert_uint_eq(strlen(f), total);
  return f;
}

START_TEST(test_largest_frame_accepted) {
  char *f = frame_of_size(BUS_MAX_FRAME);
  struct bus_reader r = {0};
  struct seen s = {0};
  /* In one piece and in two. */
  ck_assert_int_eq(feed(&r, f, &s), 0);
  ck_assert_int_eq(bus_reader_feed(&r, f, 1000, on_frame, &s), 0);
  ck_assert_int_eq(
      bus_reader_feed(&r, f + 1000, BUS_MAX_FRAME - 1000, on_frame, &s), 0);
  ck_assert_int_eq(s.n, 2);
  bus_reader_close(&r);
  free(f);
}
END_TEST

START_TEST(test_oversize_frame_is_emsgsize) {
  char *f = frame_of_size(BUS_MAX_FRAME + 1);
  struct seen s = {0};
  ck_assert_int_eq(feed_once(f, strlen(f), &s), -EMSGSIZE);
  ck_assert_int_eq(s.n, 0);
  /* Without a newline in sight, the limit holds across reads too: the
   * reader does not buffer an endless line. */
  struct bus_reader r = {0};
  size_t chunk = 64 * 1024, fed = 0;
  int rc = 0;
  while (rc == 0 && fed < 2 * BUS_MAX_FRAME) {
    rc = bus_reader_feed(&r, f, chunk, on_frame, &s);
    fed += chunk;
  }
  ck_assert_int_eq(rc, -EMSGSIZE);
  ck_assert_uint_le(fed, BUS_MAX_FRAME + chunk);
  ck_assert_int_eq(s.n, 0);
  bus_reader_close(&r);
  free(f);
}
END_TEST

START_TEST(test_not_an_object_is_ebadmsg) {
  static const char *const bad[] = {"[1,2]\n",
                                    "\"ready\"\n",
                                    "42\n",
                                    "null\n",
                                    "{\"t\":\"ready\"\n",
                                    "not json\n",
                                    "{\"t\":1}\n",
                                    "{\"n\":1}\n",
                                    "{\"t\":null}\n",
                                    "{\"t\":[\"ready\"]}\n",
                                    "{} {}\n",
                                    "{\"t\":\"ready\"}x\n",
                                    " \n",
                                    "\r\n"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    struct seen s = {0};
    ck_assert_msg(feed_once(bad[i], strlen(bad[i]), &s) == -EBADMSG,
                  "frame %zu: %s", i, bad[i]);
    ck_assert_int_eq(s.n, 0);
  }
}
END_TEST

START_TEST(test_nul_in_frame_is_ebadmsg) {
  static const char frame[] = "{\"t\":\"ready\"}\0{\"t\":\"ready\"}\n";
  struct seen s = {0};
  ck_assert_int_eq(feed_once(frame, sizeof(frame) - 1, &s), -EBADMSG);
  ck_assert_int_eq(s.n, 0);
}
END_TEST

START_TEST(test_unknown_type_is_eproto) {
  struct bus_reader r = {0};
  struct seen s = {0};
  /* The good frame before it is delivered; nothing after it is. */
  ck_assert_int_eq(feed(&r,
                        "{\"t\":\"ready\"}\n{\"t\":\"reboot\"}\n"
                        "{\"t\":\"ready\"}\n",
                        &s),
                   -EPROTO);
  ck_assert_int_eq(s.n, 1);
  bus_reader_close(&r);
  s.n = 0;
  ck_assert_int_eq(feed(&r, "{\"t\":\"none\"}\n", &s), -EPROTO);
  ck_assert_int_eq(feed(&r, "{\"t\":\"READY\"}\n", &s), -EPROTO);
  ck_assert_int_eq(s.n, 0);
  bus_reader_close(&r);
}
END_TEST

START_TEST(test_duplicate_keys_rejected) {
  struct bus_reader r = {0};
  struct seen s = {0};
  ck_assert_int_eq(feed(&r, "{\"t\":\"ready\",\"t\":\"stop\"}\n", &s),
                   -EBADMSG);
  ck_assert_int_eq(feed(&r, "{\"t\":\"emit\",\"n\":1,\"n\":2}\n", &s),
                   -EBADMSG);
  /* Nested objects are checked too. */
  ck_assert_int_eq(
      feed(&r, "{\"t\":\"emit\",\"data\":{\"a\":1,\"a\":2}}\n", &s), -EBADMSG);
  ck_assert_int_eq(s.n, 0);
  bus_reader_close(&r);
}
END_TEST

START_TEST(test_decode_reports_type_and_error) {
  enum bus_type t = BUS_NONE;
  int err = 1;
  json_t *m = bus_decode("{\"t\":\"status\"}", 14, &t, &err);
  ck_assert_ptr_nonnull(m);
  ck_assert_int_eq(t, BUS_STATUS);
  ck_assert_int_eq(err, 0);
  json_decref(m);
  ck_assert_ptr_null(bus_decode("{\"t\":\"status\"}", 13, &t, &err));
  ck_assert_int_eq(err, -EBADMSG);
  ck_assert_ptr_null(bus_decode("{\"t\":\"x\"}", 9, &t, &err));
  ck_assert_int_eq(err, -EPROTO);
}
END_TEST

START_TEST(test_encode_round_trips_one_line) {
  json_t *m = bus_msg(BUS_EMIT);
  json_object_set_new(m, "signal", json_string("a\nb"));
  json_object_set_new(m, "n", json_integer(5));
  size_t len = 0;
  char *line = bus_encode(m, &len);
  ck_assert_ptr_nonnull(line);
  ck_assert_uint_eq(len, strlen(line));
  ck_assert_int_eq(line[len - 1], '\n');
  ck_assert_ptr_eq(strchr(line, '\n'), line + len - 1); /* one line */
  struct seen s = {0};
  ck_assert_int_eq(feed_once(line, len, &s), 0);
  ck_assert_int_eq(s.n, 1);
  ck_assert_int_eq(s.types[0], BUS_EMIT);
  ck_assert_int_eq(s.vals[0], 5);
  free(line);
  json_decref(m);
}
END_TEST

START_TEST(test_encode_refuses_oversize) {
  json_t *m = bus_msg(BUS_EMIT);
  char *big = malloc(BUS_MAX_FRAME);
  memset(big, 'x', BUS_MAX_FRAME - 1);
  big[BUS_MAX_FRAME - 1] = '\0';
  json_object_set_new(m, "data", json_string(big));
  size_t len = 0;
  ck_assert_ptr_null(bus_encode(m, &len));
  free(big);
  json_decref(m);
}
END_TEST

/* A frame is built at offsets that stay put: a buffer partly written to
 * the socket only grows while a frame is added, and what is left moves to
 * the front only in bus_out_flush(), between frames. */
START_TEST(test_out_offsets_stay_while_a_frame_is_built) {
  struct bus_out o = {0};
  char piece[4096];
  memset(piece, 'p', sizeof(piece));
  for (int i = 0; i < 4; i++)
    ck_assert_int_eq(bus_out_raw(&o, piece, sizeof(piece)), 0);
  o.off = o.len - 100; /* as if most of it had been written */
  size_t start = o.len, cap = o.cap;
  size_t flen = 4 << 20; /* more than a socketpair's buffer takes */
  char *frame = malloc(flen);
  ck_assert_ptr_nonnull(frame);
  memset(frame, 'f', flen);
  ck_assert_int_eq(bus_out_raw(&o, frame, flen), 0);
  ck_assert_uint_gt(o.cap, cap); /* it grew */
  ck_assert_uint_eq(o.off, 4 * sizeof(piece) - 100);
  ck_assert_uint_eq(o.len - start, flen);
  ck_assert(memcmp(o.buf + start, frame, flen) == 0);
  free(frame);
  /* Flushes that cannot finish keep the rest whole, moving it to the
   * front once the written part is at least as large; the peer gets every
   * byte, in order. */
  int sv[2];
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  size_t total = bus_out_pending(&o), got = 0, fs = 0;
  int moved = 0, rc;
  static char in[65536];
  while ((rc = bus_out_flush(&o, sv[0], 0)) == -EAGAIN) {
    ck_assert(o.off < o.len - o.off); /* else it would have moved */
    moved |= o.off == 0;
    ssize_t n;
    while ((n = read(sv[1], in, sizeof(in))) > 0) {
      for (ssize_t i = 0; i < n; i++, got++)
        fs += in[i] == 'f';
    }
  }
  ck_assert_int_eq(rc, 0);
  ck_assert(moved);
  ssize_t n;
  while ((n = read(sv[1], in, sizeof(in))) > 0) {
    for (ssize_t i = 0; i < n; i++, got++)
      fs += in[i] == 'f';
  }
  ck_assert_uint_eq(got, total);
  ck_assert_uint_eq(fs, flen);
  close(sv[0]);
  close(sv[1]);
  bus_out_close(&o);
}
END_TEST

/* The ring keeps records in order across many laps, refuses what does not
 * fit, and gives back exactly what is between head and tail. */
START_TEST(test_ring_wraps_and_keeps_order) {
  struct bus_mark *m = bus_mark_new();
  ck_assert_ptr_nonnull(m);
  char frame[3000];
  uint64_t next = 1, oldest = 1; /* seqs in the ring: [oldest, next) */
  uint64_t ends[4096] = {0};
  for (int step = 0; step < 20000; step++) {
    size_t len = 1 + (size_t)(step * 7919) % sizeof(frame);
    memset(frame, 'a' + (int)(next % 26), len);
    uint64_t end;
    int rc = bus_ring_put(m, next, frame, len, &end);
    if (rc == -ENOSPC || (step % 3 == 0 && oldest < next)) {
      /* Finish the oldest few, as a worker's listeners do. */
      for (int k = 0; k < 3 && oldest < next; k++)
        bus_ring_release(m, ends[oldest++ % 4096]);
      if (rc == -ENOSPC)
        continue;
    }
    ck_assert_int_eq(rc, 0);
    ends[next++ % 4096] = end;
    ck_assert_uint_le(m->ring_tail - m->ring_head, BUS_RING_SIZE);
    if (step % 997 == 0) {
      /* What the master would read now: oldest..next-1, whole, in order. */
      uint64_t pos = m->ring_head, seq, want = oldest;
      const char *f;
      size_t n;
      int r;
      while ((r = bus_ring_next(m, &pos, &seq, &f, &n)) == 1) {
        ck_assert_uint_eq(seq, want);
        ck_assert_int_eq(f[0], 'a' + (int)(seq % 26));
        ck_assert_int_eq(f[n - 1], 'a' + (int)(seq % 26));
        want++;
      }
      ck_assert_int_eq(r, 0);
      ck_assert_uint_eq(want, next);
    }
  }
  ck_assert_uint_gt(m->ring_tail, 4 * (uint64_t)BUS_RING_SIZE); /* laps */
  bus_mark_free(m);
}
END_TEST

/* A frame larger than the ring's free room is refused whole; damaged
 * counters (a dead worker's, untrusted) stop the reader. */
START_TEST(test_ring_refuses_and_detects_damage) {
  struct bus_mark *m = bus_mark_new();
  ck_assert_ptr_nonnull(m);
  static char big[BUS_MAX_FRAME];
  memset(big, 'x', sizeof(big));
  uint64_t end, pos, seq;
  const char *f;
  size_t n;
  int stored = 0;
  while (bus_ring_put(m, (uint64_t)stored + 1, big, sizeof(big), &end) == 0)
    stored++;
  ck_assert_int_eq(stored, BUS_RING_SIZE / (int)(sizeof(big) + 16));
  ck_assert_int_eq(bus_ring_put(m, 99, big, BUS_MAX_FRAME + 1, &end), -ENOSPC);
  m->ring_tail = m->ring_head + BUS_RING_SIZE + 8; /* more than the ring */
  pos = m->ring_head;
  ck_assert_int_eq(bus_ring_next(m, &pos, &seq, &f, &n), -1);
  m->ring_tail = 24; /* inside a record */
  pos = 0;
  ck_assert_int_eq(bus_ring_next(m, &pos, &seq, &f, &n), -1);
  m->ring_tail = 8;
  m->ring_head = 0;
  pos = 4; /* misaligned */
  ck_assert_int_eq(bus_ring_next(m, &pos, &seq, &f, &n), -1);
  bus_mark_free(m);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("bus");
  TCase *tc = tcase_create("framing");
  tcase_add_test(tc, test_type_names_round_trip);
  tcase_add_test(tc, test_frames_in_one_read);
  tcase_add_test(tc, test_frame_split_across_reads);
  tcase_add_test(tc, test_partial_frame_waits);
  tcase_add_test(tc, test_blank_lines_are_keepalives);
  tcase_add_test(tc, test_callback_stop_is_returned);
  tcase_add_test(tc, test_pause_holds_the_rest_for_resume);
  tcase_add_test(tc, test_largest_frame_accepted);
  tcase_add_test(tc, test_oversize_frame_is_emsgsize);
  tcase_add_test(tc, test_not_an_object_is_ebadmsg);
  tcase_add_test(tc, test_nul_in_frame_is_ebadmsg);
  tcase_add_test(tc, test_unknown_type_is_eproto);
  tcase_add_test(tc, test_duplicate_keys_rejected);
  tcase_add_test(tc, test_decode_reports_type_and_error);
  tcase_add_test(tc, test_encode_round_trips_one_line);
  tcase_add_test(tc, test_encode_refuses_oversize);
  tcase_add_test(tc, test_out_offsets_stay_while_a_frame_is_built);
  tcase_add_test(tc, test_ring_wraps_and_keeps_order);
  tcase_add_test(tc, test_ring_refuses_and_detects_damage);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
