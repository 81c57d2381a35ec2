/* bus.c - framing and message names for the master/worker channel. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include "bus.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static const char *const bus_names[BUS_TYPE_COUNT] = {[BUS_NONE] = "none",
#define BUS_NAME(e, s) [BUS_##e] = s,
                                                      BUS_MESSAGES(BUS_NAME)
#undef BUS_NAME
};

const char *bus_type_name(enum bus_type t) {
  return (t > BUS_NONE && t < BUS_TYPE_COUNT) ? bus_names[t] : "none";
}

static const size_t bus_name_lens[BUS_TYPE_COUNT] = {
#define BUS_LEN(e, s) [BUS_##e] = sizeof(s) - 1,
    BUS_MESSAGES(BUS_LEN)
#undef BUS_LEN
};

enum bus_type bus_type_parsen(const char *name, size_t n) {
  for (int t = BUS_NONE + 1; t < BUS_TYPE_COUNT; t++)
    if (bus_name_lens[t] == n && memcmp(bus_names[t], name, n) == 0)
      return (enum bus_type)t;
  return BUS_NONE;
}

enum bus_type bus_type_parse(const char *name) {
  return bus_type_parsen(name, strlen(name));
}

json_t *bus_decode(const char *data, size_t len, enum bus_type *t, int *err) {
  json_error_t jerr;
  /* JSON_REJECT_DUPLICATES: a frame that says two things is not trusted.
   * A NUL byte is refused first: jansson lets one pass after a number or
   * a literal ("true\0}"), which bus_scan() does not. */
  json_t *msg = memchr(data, '\0', len)
                    ? NULL
                    : json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
  if (msg == NULL || !json_is_object(msg)) {
    json_decref(msg);
    *err = -EBADMSG;
    return NULL;
  }
  const char *name = json_string_value(json_object_get(msg, "t"));
  if (name == NULL) {
    json_decref(msg);
    *err = -EBADMSG;
    return NULL;
  }
  *t = bus_type_parse(name);
  if (*t == BUS_NONE) {
    json_decref(msg);
    *err = -EPROTO;
    return NULL;
  }
  *err = 0;
  return msg;
}

/* Split data into frames for cb; *used: how many bytes of data were
 * taken (all of them unless cb returned non-zero). */
static int reader_split(struct bus_reader *r, const char *data, size_t len,
                        bus_line_cb cb, void *arg, size_t *used) {
  const char *start = data;
  int rc = 0;
  while (len > 0) {
    const char *nl = memchr(data, '\n', len);
    size_t take = nl ? (size_t)(nl - data) : len;
    if (r->len + take + 1 > BUS_MAX_FRAME) {
      rc = -EMSGSIZE;
      break;
    }
    const char *frame = data;
    size_t flen = take;
    if (r->len > 0 || nl == NULL) {
      /* Only a frame split across reads is copied. */
      if (r->len + take > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + take)
          cap *= 2;
        char *p = realloc(r->buf, cap);
        if (p == NULL) {
          rc = -ENOMEM;
          break;
        }
        r->buf = p;
        r->cap = cap;
      }
      memcpy(r->buf + r->len, data, take);
      r->len += take;
      frame = r->buf;
      flen = r->len;
    }
    if (nl == NULL) {
      data += take;
      break;
    }
    data += take + 1;
    len -= take + 1;
    r->len = 0;
    if (flen == 0)
      continue; /* blank line: tolerated keep-alive */
    rc = cb(arg, frame, flen);
    if (frame == r->buf && r->cap > BUS_OUT_KEEP) {
      /* A large frame came in pieces: its buffer is not kept. */
      free(r->buf);
      r->buf = NULL;
      r->cap = 0;
    }
    if (rc)
      break;
  }
  *used = (size_t)(data - start);
  return rc;
}

int bus_reader_split(struct bus_reader *r, const char *data, size_t len,
                     bus_line_cb cb, void *arg) {
  size_t used;
  int rc = reader_split(r, data, len, cb, arg, &used);
  if (rc != BUS_PAUSE || used == len)
    return rc;
  /* Held back for bus_reader_resume(): the caller reads no more
   * meanwhile, so at most one read's worth is held. */
  size_t rest = len - used;
  if (r->hlen - r->hoff + rest > r->hcap || r->hoff > 0) {
    size_t keep = r->hlen - r->hoff;
    char *p = malloc(keep + rest);
    if (p == NULL)
      return -ENOMEM;
    if (keep > 0)
      memcpy(p, r->held + r->hoff, keep);
    free(r->held);
    r->held = p;
    r->hcap = keep + rest;
    r->hoff = 0;
    r->hlen = keep;
  }
  memcpy(r->held + r->hlen, data + used, rest);
  r->hlen += rest;
  return rc;
}

int bus_reader_resume(struct bus_reader *r, bus_line_cb cb, void *arg) {
  while (r->hoff < r->hlen) {
    size_t used;
    int rc =
        reader_split(r, r->held + r->hoff, r->hlen - r->hoff, cb, arg, &used);
    r->hoff += used;
    if (rc)
      return rc;
  }
  free(r->held);
  r->held = NULL;
  r->hoff = r->hlen = r->hcap = 0;
  return 0;
}

struct decode_ctx {
  bus_frame_cb cb;
  void *arg;
};

static int decode_line(void *arg, const char *frame, size_t len) {
  struct decode_ctx *c = arg;
  enum bus_type t;
  int err;
  json_t *msg = bus_decode(frame, len, &t, &err);
  if (msg == NULL)
    return err;
  int rc = c->cb(c->arg, t, msg);
  json_decref(msg);
  return rc;
}

int bus_reader_feed(struct bus_reader *r, const char *data, size_t len,
                    bus_frame_cb cb, void *arg) {
  struct decode_ctx c = {cb, arg};
  return bus_reader_split(r, data, len, decode_line, &c);
}

void bus_reader_close(struct bus_reader *r) {
  free(r->buf);
  free(r->held);
  memset(r, 0, sizeof(*r));
}

json_t *bus_msg(enum bus_type t) {
  return json_pack("{s:s}", "t", bus_type_name(t));
}

char *bus_encode(const json_t *msg, size_t *len) {
  char *s = json_dumps(msg, JSON_COMPACT);
  if (s == NULL)
    return NULL;
  size_t n = strlen(s);
  if (n + 1 > BUS_MAX_FRAME) {
    free(s);
    return NULL;
  }
  /* json_dumps escapes control characters, so the only newline is ours. */
  char *line = realloc(s, n + 2);
  if (line == NULL) {
    free(s);
    return NULL;
  }
  line[n] = '\n';
  line[n + 1] = '\0';
  *len = n + 1;
  return line;
}

/* Room for `more` bytes: the buffer only grows here, so a frame being
 * built keeps its offset (callers remember where it started). The written
 * front is reused by bus_out_flush(), between frames. */
int bus_out_reserve(struct bus_out *o, size_t more) {
  if (o->len + more <= o->cap)
    return 0;
  size_t cap = o->cap ? o->cap : 16384;
  while (cap < o->len + more)
    cap *= 2;
  char *p = realloc(o->buf, cap);
  if (p == NULL)
    return -ENOMEM;
  o->buf = p;
  o->cap = cap;
  return 0;
}

int bus_out_append(const char *data, size_t n, void *arg) {
  struct bus_out *o = arg;
  if (o->len + n > o->cap && bus_out_reserve(o, n))
    return -1;
  memcpy(o->buf + o->len, data, n);
  o->len += n;
  return 0;
}

int bus_out_add(struct bus_out *o, const json_t *msg) {
  size_t start = o->len;
  /* Encoded in place: no intermediate string per frame. */
  if (json_dump_callback(msg, bus_out_append, o, JSON_COMPACT) != 0 ||
      bus_out_append("\n", 1, o) != 0) {
    o->len = start;
    return -ENOMEM;
  }
  if (o->len - start > BUS_MAX_FRAME) {
    o->len = start;
    return -EMSGSIZE;
  }
  return 0;
}

static int out_char(struct bus_out *o, char c) {
  if (o->len == o->cap && bus_out_reserve(o, 1))
    return -ENOMEM;
  o->buf[o->len++] = c;
  return 0;
}

int bus_out_raw_grow(struct bus_out *o, const char *s, size_t n) {
  return bus_out_append(s, n, o) ? -ENOMEM : 0;
}

int bus_out_end(struct bus_out *o, size_t start, int err) {
  if (err == 0)
    err = out_char(o, '\n');
  if (err == 0 && o->len - start > BUS_MAX_FRAME)
    err = -EMSGSIZE;
  if (err)
    o->len = start;
  return err;
}

uint64_t bus_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static long long now_ms(void) { return (long long)bus_mono_ms(); }

/* What is left unwritten moves to the front when the written part is at
 * least as large: each byte moves O(1) times. */
static void out_compact(struct bus_out *o) {
  if (o->off > 0 && o->off >= o->len - o->off) {
    memmove(o->buf, o->buf + o->off, o->len - o->off);
    o->len -= o->off;
    o->off = 0;
  }
}

int bus_out_flush(struct bus_out *o, int fd, int timeout_ms) {
  long long deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
  while (o->off < o->len) {
    ssize_t n = write(fd, o->buf + o->off, o->len - o->off);
    if (n > 0) {
      o->off += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno != EAGAIN) {
      out_compact(o);
      return -errno;
    }
    long long left = deadline - now_ms();
    if (left <= 0) {
      out_compact(o);
      return -EAGAIN;
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (poll(&p, 1, (int)left) < 0 && errno != EINTR) {
      out_compact(o);
      return -errno;
    }
  }
  o->off = o->len = 0;
  bus_out_shrink(o);
  return 0;
}

void bus_out_shrink(struct bus_out *o) {
  if (o->off == o->len && o->cap > BUS_OUT_KEEP) {
    free(o->buf);
    memset(o, 0, sizeof(*o));
  }
}

void bus_out_close(struct bus_out *o) {
  free(o->buf);
  memset(o, 0, sizeof(*o));
}

/* The mark's page, then the ring. */
#define MARK_PAGE 4096
#define MAPPING_SIZE (MARK_PAGE + BUS_RING_SIZE)

_Static_assert(sizeof(struct bus_mark) <= MARK_PAGE, "the mark fits its page");

struct bus_mark *bus_mark_new(void) {
  void *p = mmap(NULL, MAPPING_SIZE, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

void bus_mark_free(struct bus_mark *m) {
  if (m)
    munmap(m, MAPPING_SIZE);
}

static char *ring_base(const struct bus_mark *m) {
  return (char *)m + MARK_PAGE;
}

struct ring_rec {
  uint64_t seq; /* 0: the rest of the ring up to its end is unused */
  uint32_t len; /* of the frame that follows */
  uint32_t pad;
};

#define RING_REC(n) ((sizeof(struct ring_rec) + (n) + 7) & ~(size_t)7)

int bus_ring_put(struct bus_mark *m, uint64_t seq, const char *frame,
                 size_t len, uint64_t *end) {
  uint64_t head = m->ring_head, tail = m->ring_tail;
  size_t need = RING_REC(len), at = (size_t)(tail % BUS_RING_SIZE);
  size_t skip = BUS_RING_SIZE - at < need ? BUS_RING_SIZE - at : 0;
  if (seq == 0 || len > BUS_MAX_FRAME ||
      BUS_RING_SIZE - (tail - head) < skip + need)
    return -ENOSPC;
  char *base = ring_base(m);
  if (skip) { /* a record never wraps: mark the rest unused, start over */
    struct ring_rec pad = {0, 0, 0};
    if (skip >= sizeof(pad)) /* less than a header left says so itself */
      memcpy(base + at, &pad, sizeof(pad));
    at = 0;
  }
  struct ring_rec r = {seq, (uint32_t)len, 0};
  memcpy(base + at, &r, sizeof(r));
  memcpy(base + at + sizeof(r), frame, len);
  *end = tail + skip + need;
  m->ring_tail = *end; /* published last: the record is whole */
  return 0;
}

int bus_ring_next(const struct bus_mark *m, uint64_t *pos, uint64_t *seq,
                  const char **frame, size_t *len) {
  uint64_t head = m->ring_head, tail = m->ring_tail;
  /* Counters from a dead, untrusted worker: inside [head, tail], aligned,
   * and no more than the ring apart. */
  if (tail - head > BUS_RING_SIZE || *pos - head > tail - head ||
      (*pos & 7) != 0)
    return -1;
  const char *base = ring_base(m);
  while (*pos != tail) {
    size_t at = (size_t)(*pos % BUS_RING_SIZE), room = BUS_RING_SIZE - at;
    struct ring_rec r = {0, 0, 0};
    if (room >= sizeof(r))
      memcpy(&r, base + at, sizeof(r));
    if (r.seq == 0) { /* unused up to the end */
      if (room > tail - *pos)
        return -1;
      *pos += room;
      continue;
    }
    if (r.len > BUS_MAX_FRAME || RING_REC(r.len) > room ||
        RING_REC(r.len) > tail - *pos)
      return -1;
    *seq = r.seq;
    *frame = base + at + sizeof(r);
    *len = r.len;
    *pos += RING_REC(r.len);
    return 1;
  }
  return 0;
}

void bus_mark_dontfork(struct bus_mark *m) {
  madvise(m, MAPPING_SIZE, MADV_DONTFORK);
}
