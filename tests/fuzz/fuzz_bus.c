/*
 * fuzz_bus.c - the master/worker frame reader and decoder on hostile bytes
 * (what a compromised or buggy worker could send the master).
 *
 * The input, after its first byte, is fed to a bus_reader twice: at once,
 * and in chunks whose sizes come from the first byte. Both must yield the
 * same frames and the same final status, and every frame must survive an
 * encode/decode round trip unchanged. bus_scan(), the master's check of a
 * frame without a tree, must agree with jansson on the input and on every
 * line of it, and so must the codec's decoder (common/bus_codec.c, checked
 * and trusted), whose encoders write what it read back unchanged. And the
 * input, laid in a dead worker's ring with counters
 * taken from it, must be read back by bus_ring_next() without a read
 * outside the ring.
 */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "bus_agree.h"

#define MAX_FRAMES 256

struct seen {
  char *frames[MAX_FRAMES]; /* each frame re-encoded, in order */
  size_t n;
  int stop_at; /* the callback fails on this frame (-1: never) */
};

static int on_frame(void *arg, enum bus_type t, json_t *msg) {
  struct seen *s = arg;
  if (t <= BUS_NONE || t >= BUS_TYPE_COUNT || !json_is_object(msg))
    abort();
  size_t len;
  char *line = bus_encode(msg, &len);
  /* A frame that fit on the way in fits on the way out: encoding is
   * compact and the reader only passed frames under BUS_MAX_FRAME. */
  if (line == NULL || len == 0 || line[len - 1] != '\n' ||
      memchr(line, '\n', len - 1) != NULL)
    abort();
  enum bus_type t2;
  int err;
  json_t *again = bus_decode(line, len - 1, &t2, &err);
  if (again == NULL || t2 != t || !json_equal(again, msg)) {
    fprintf(stderr, "bus round trip changed the frame: %s", line);
    abort();
  }
  json_decref(again);
  if (s->n < MAX_FRAMES)
    s->frames[s->n] = line;
  else
    free(line);
  s->n++;
  if ((int)s->n - 1 == s->stop_at)
    return -ECANCELED;
  return 0;
}

/* Feed like worker_bus.c does: stop at the first error. */
static int feed(const uint8_t *data, size_t size, uint8_t shape,
                struct seen *s) {
  struct bus_reader rd;
  memset(&rd, 0, sizeof(rd));
  int rc = 0;
  size_t off = 0, chunk = shape ? (size_t)(shape & 0x3f) + 1 : size;
  while (off < size && rc == 0) {
    size_t n = size - off < chunk ? size - off : chunk;
    rc = bus_reader_feed(&rd, (const char *)data + off, n, on_frame, s);
    off += n;
    if (shape & 0x40)
      chunk = chunk * 3 % 61 + 1; /* vary the split points */
  }
  bus_reader_close(&rd);
  return rc;
}

static void seen_free(struct seen *s) {
  for (size_t i = 0; i < s->n && i < MAX_FRAMES; i++)
    free(s->frames[i]);
}

static void check_scan(const char *buf, size_t len) {
  const char *why = bus_scan_disagrees(buf, len);
  if (why) {
    fprintf(stderr, "bus_scan and jansson disagree (%s): %.*s\n", why, (int)len,
            buf);
    abort();
  }
  /* The codec's decoder, checked and trusted, and its encoders. */
  if ((why = bus_codec_disagrees(buf, len)) != NULL) {
    fprintf(stderr, "bus codec: %s: %.*s\n", why, (int)len, buf);
    abort();
  }
}

/* The input as a dead worker's ring: head from its first bytes, the rest
 * written from there on (wrapping), tail no further than what was written.
 * Whatever the bytes say, the reader stays inside the ring. */
static void check_ring(const uint8_t *data, size_t size) {
  static struct bus_mark *m;
  if (m == NULL && (m = bus_mark_new()) == NULL)
    abort();
  if (size < 12)
    return;
  uint64_t head = 0;
  memcpy(&head, data, 8);
  head &= ~(uint64_t)7;
  uint32_t span;
  memcpy(&span, data + 8, 4);
  data += 12;
  size -= 12;
  char *ring = (char *)m + 4096;
  for (size_t i = 0; i < size + 64; i++) /* 64: no stale header past it */
    ring[(head + i) % BUS_RING_SIZE] = i < size ? (char)data[i] : 0;
  m->ring_head = head;
  m->ring_tail = head + (span % (size + 1));
  if (span & 0x80000000u)
    m->ring_tail = head + span; /* lies: must be refused, not followed */
  uint64_t pos = head, seq;
  const char *frame;
  size_t len;
  for (int i = 0; i < 100000 && bus_ring_next(m, &pos, &seq, &frame, &len) == 1;
       i++) {
    if (frame < ring || frame + len > ring + BUS_RING_SIZE ||
        len > BUS_MAX_FRAME)
      abort();
    check_scan(frame, len); /* what the master does with it */
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  uint8_t shape = data[0] | 1; /* non-zero: chunked */
  data++;
  size--;

  enum bus_type t;
  int err;
  json_t *one = bus_decode((const char *)data, size, &t, &err);
  if ((one == NULL) == (err == 0))
    abort();
  json_decref(one);
  check_scan((const char *)data, size);
  for (const uint8_t *p = data, *end = data + size, *nl; p < end; p = nl + 1) {
    nl = memchr(p, '\n', (size_t)(end - p));
    if (nl == NULL)
      nl = end;
    check_scan((const char *)p, (size_t)(nl - p));
  }
  check_ring(data, size);

  struct seen whole = {.stop_at = size && data[size - 1] % 4 == 0 ? 1 : -1};
  struct seen parts = {.stop_at = whole.stop_at};
  int rc_whole = feed(data, size, 0, &whole);
  int rc_parts = feed(data, size, shape, &parts);
  if (rc_whole != rc_parts || whole.n != parts.n) {
    fprintf(stderr, "whole: %d after %zu frames; chunked: %d after %zu\n",
            rc_whole, whole.n, rc_parts, parts.n);
    abort();
  }
  for (size_t i = 0; i < whole.n && i < MAX_FRAMES; i++)
    if (strcmp(whole.frames[i], parts.frames[i]) != 0)
      abort();
  seen_free(&whole);
  seen_free(&parts);
  return 0;
}
