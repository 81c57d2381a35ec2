/*
 * bus.h - the master/worker channel: one JSON object per line over a
 * socketpair (docs/bus.md is the catalogue). Every frame is size-limited and
 * must be an object whose "t" names a known message type; anything else is
 * an error that costs the sender its channel.
 */
#ifndef AIO_COMMON_BUS_H
#define AIO_COMMON_BUS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The largest frame either side accepts, newline included. */
#define BUS_MAX_FRAME (256 * 1024)
/* The longest signal name, in bytes. */
#define BUS_MAX_SIGNAL 256
/* The largest emit frame a worker sends: the deliver frame made of it
 * carries a few more fields and must still fit in BUS_MAX_FRAME. */
#define BUS_MAX_EMIT (BUS_MAX_FRAME - 4096)

/* X(enum, wire name) */
#define BUS_MESSAGES(X)                                                        \
  X(READY, "ready")         /* worker: serving; {slot, gen} */                 \
  X(HEARTBEAT, "heartbeat") /* worker: alive; {conns} */                       \
  X(EMIT, "emit")           /* worker: aio_emit(); {signal, data, seq} */      \
  X(DELIVER,                                                                   \
    "deliver") /* master: run listeners; {signal, data, id, listeners} */      \
  X(DELIVERED, "delivered") /* worker: deliveries finished; {id, seq} */       \
  X(RUN, "run")             /* master: run a job; {job, id, fn, run, ...} */   \
  X(DONE, "done")           /* worker: job finished; {id, ok} */               \
  X(STOP, "stop")           /* master: drain and exit; {graceful} */           \
  X(REOPEN, "reopen")       /* master: reopen log files */                     \
  X(STATUS, "status")       /* master asks, worker answers; {conns, rss} */

enum bus_type {
  BUS_NONE = 0,
#define BUS_ENUM(e, s) BUS_##e,
  BUS_MESSAGES(BUS_ENUM)
#undef BUS_ENUM
      BUS_TYPE_COUNT
};

const char *bus_type_name(enum bus_type t);
enum bus_type bus_type_parse(const char *name); /* BUS_NONE when unknown */
/* The same for name[0, n), which need not be NUL-terminated. */
enum bus_type bus_type_parsen(const char *name, size_t n);

/* Incremental line splitter. A callback may ask it to stop after a
 * frame (BUS_PAUSE): the bytes after that frame are held in the reader
 * and handed over by bus_reader_resume(), so that a loop turn does a
 * bounded slice of work and the rest waits for the next turn. */
struct bus_reader {
  char *buf; /* a frame split across reads */
  size_t len, cap;
  char *held; /* bytes not yet split after a pause: held[hoff, hlen) */
  size_t hoff, hlen, hcap;
};

/* A callback's return: this frame is done, split no more for now. */
#define BUS_PAUSE 1

/* Called for each frame; msg is borrowed for the call. A non-zero return
 * stops the feed and is returned by bus_reader_feed. */
typedef int (*bus_frame_cb)(void *arg, enum bus_type t, json_t *msg);

/* Feed received bytes. Returns 0, the callback's non-zero value, or
 * -EMSGSIZE (a frame over BUS_MAX_FRAME), -EBADMSG (not a JSON object with
 * a string "t"), -EPROTO (unknown type). */
int bus_reader_feed(struct bus_reader *r, const char *data, size_t len,
                    bus_frame_cb cb, void *arg);
/* The same, handing over each frame's text (without its newline,
 * borrowed for the call) undecoded. */
typedef int (*bus_line_cb)(void *arg, const char *frame, size_t len);
int bus_reader_split(struct bus_reader *r, const char *data, size_t len,
                     bus_line_cb cb, void *arg);
/* Split what a pause held back: 0 when nothing is held any more,
 * BUS_PAUSE when the callback paused again, or an error as above. */
int bus_reader_resume(struct bus_reader *r, bus_line_cb cb, void *arg);
static inline int bus_reader_held(const struct bus_reader *r) {
  return r->hoff < r->hlen;
}
void bus_reader_close(struct bus_reader *r);

/* Decode one frame (without its newline). Returns new msg or NULL with
 * *err set as bus_reader_feed's. */
json_t *bus_decode(const char *data, size_t len, enum bus_type *t, int *err);

/* A frame's top-level members, as spans of its text (p NULL: absent). */
struct bus_span {
  const char *p;
  size_t n;
};
struct bus_frame {
  enum bus_type type;
  struct bus_span t, signal; /* the strings' bytes, without quotes */
  /* JSON text of values */
  struct bus_span data, id, seq, listeners, keep, n, count;
};

/* How deep values nest at most: jansson's JSON_PARSER_MAX_DEPTH. */
#define BUS_JSON_MAX_DEPTH 2048

/* Check one frame (without its newline) as bus_decode() would, without
 * building a tree, and find its members. Returns 0, -EBADMSG, -EPROTO, as
 * bus_decode(); -EAGAIN when only bus_decode() can tell (a key with an
 * escape, an escaped "t" or "signal"); or -ENOMEM. Spans point into data.
 * (common/bus_scan.c) */
int bus_scan(const char *data, size_t len, struct bus_frame *f);
/* Check one JSON value of any type (a signal's data) as json_loadb with
 * JSON_DECODE_ANY | JSON_REJECT_DUPLICATES would, without building a
 * tree. 0, -EBADMSG, -EAGAIN when only jansson can tell, or -ENOMEM. */
int bus_scan_value(const char *data, size_t len);
/* Check the value at data[0, len), a member of a frame's top-level
 * object (nesting counted as bus_scan() counts it there), as bus_scan()
 * checks it, and no further: *used says where it ends. 0, -EBADMSG (also
 * for white space before it), -EAGAIN or -ENOMEM as bus_scan(). */
int bus_scan_member(const char *data, size_t len, size_t *used);
/* The integer a member's text holds (what json_is_integer would say).
 * 0, or -1 when it is absent or not an integer. */
int bus_span_int(const struct bus_span *sp, json_int_t *v);
/* The value a member's text holds, which bus_scan() accepted. Returns new
 * (json null when absent), or NULL when out of memory.
 * (common/bus_build.c) */
json_t *bus_span_json(const struct bus_span *sp);

/* A new message {"t": name}. */
json_t *bus_msg(enum bus_type t);
/* Encode as one line with '\n'. Returns new (free) or NULL when the frame
 * would exceed BUS_MAX_FRAME. */
char *bus_encode(const json_t *msg, size_t *len);

/* One mapping shared by the master and one worker (MAP_SHARED, made before
 * the fork), written only by the worker and read by the master only once
 * the worker is dead: what it was doing when it died, whatever killed it,
 * without a system call per signal.
 *
 * The mark: which delivery it was in. Two streams, each handled in order:
 * deliver frames, counted from 1 in the order the master sent them; and
 * the worker's own emits that it runs itself (its once-per-emit
 * listeners), by their emit seq.
 *
 * The ring: the emit frames of own signals the worker has not finished
 * and did not send to the master (BUS_RING_SIZE bytes after the mark's
 * page, records in seq order). The master needs them only if the worker
 * dies, to redeliver what it had not run; it checks every record then as
 * it checks a frame from the socket. */
struct bus_mark {
  volatile uint64_t done;          /* deliver frames finished */
  volatile uint64_t in_hand;       /* the one whose listeners run, 0 between */
  volatile uint64_t local_done;    /* own emits: every seq up to it finished */
  volatile uint64_t local_in_hand; /* the own emit whose listeners run, or 0 */
  volatile uint64_t ring_head;     /* byte counters: records live in */
  volatile uint64_t ring_tail;     /* [head, tail), mod BUS_RING_SIZE */
  /* Liveness, written by the worker and read by the master while it
   * lives, when its heartbeat is late: does its loop turn, and if not,
   * which user callback holds it and since when (bus_mono_ms()). */
  volatile uint64_t turn_ms;  /* the loop's last turn */
  volatile uint64_t cb_since; /* the callback running began; 0: none */
  volatile uint32_t cb_kind;  /* BUS_CB_*, what cb_index counts */
  volatile uint32_t cb_index; /* listener index, or BUS_JOB_INDEX() */
  /* aio_emit() calls refused for back-pressure (docs/bus.md), counted by
   * the worker for `aio status`. */
  volatile uint64_t refused;
  /* Written by the master: nonzero while some worker's delivery queue is
   * full, when emits for broadcast listeners are refused. */
  volatile uint64_t busy;
  /* aio_call_soon() calls (and off-loop aio_emit()s) refused at the
   * queue's bound, counted by the worker for `aio status`. */
  volatile uint64_t soon_refused;
  /* aio_emit_wait() calls refused because bus_journal waits were pending
   * already, counted by the worker for `aio status`. */
  volatile uint64_t wait_refused;
};

/* A schedule's three functions: a run frame's "which", and a job's index
 * (the mark's cb_index, the worker's jobs[]) is BUS_JOB_INDEX(schedule,
 * part). */
enum bus_job_part { BUS_JOB_FUNC, BUS_JOB_CB, BUS_JOB_ERR, BUS_JOB_PARTS };
#define BUS_JOB_INDEX(schedule, part) ((schedule)*BUS_JOB_PARTS + (part))
/* "func", "cb" or "err": the part of job index `index`. */
static inline const char *bus_job_part_name(size_t index) {
  switch (index % BUS_JOB_PARTS) {
  case BUS_JOB_FUNC:
    return "func";
  case BUS_JOB_CB:
    return "cb";
  default:
    return "err";
  }
}

#define BUS_CB_NONE 0
#define BUS_CB_LISTENER 1 /* own signal or deliver frame */
#define BUS_CB_JOB 2
#define BUS_CB_PROTOCOL 3 /* server * BUS_PROTO_COUNT + BUS_PROTO_* */
#define BUS_CB_SOON 4     /* a function given to aio_call_soon() */

/* X(enum, name): the protocol callbacks a worker marks. */
#define BUS_PROTO_CBS(X)                                                       \
  X(MADE, "connection_made")                                                   \
  X(DATA, "data_received")                                                     \
  X(EOF, "eof_received")                                                       \
  X(LOST, "connection_lost")                                                   \
  X(DATAGRAM, "datagram_received")

enum bus_proto_cb {
#define BUS_PROTO_ENUM(e, s) BUS_PROTO_##e,
  BUS_PROTO_CBS(BUS_PROTO_ENUM)
#undef BUS_PROTO_ENUM
      BUS_PROTO_COUNT
};

/* CLOCK_MONOTONIC in ms: the clock both sides of a mark read. */
uint64_t bus_mono_ms(void);

#define BUS_RING_SIZE (1024 * 1024)

/* A new shared mark and ring, zeroed, or NULL when mmap fails. */
struct bus_mark *bus_mark_new(void);
void bus_mark_free(struct bus_mark *m);
/* Not inherited by processes forked later (madvise MADV_DONTFORK). */
void bus_mark_dontfork(struct bus_mark *m);

/* Worker: keep frame (without its newline), emit seq, in the ring. 0 and
 * *end, the counter to release up to once its listeners ran; or -ENOSPC. */
int bus_ring_put(struct bus_mark *m, uint64_t seq, const char *frame,
                 size_t len, uint64_t *end);
/* Worker: the records up to end are finished. */
static inline void bus_ring_release(struct bus_mark *m, uint64_t end) {
  m->ring_head = end;
}
/* Master, after the worker died: the record at *pos (start at
 * m->ring_head), moving *pos past it. 1 with *seq, *frame and *len set; 0
 * at the end; -1 when the ring says nonsense (read no further). */
int bus_ring_next(const struct bus_mark *m, uint64_t *pos, uint64_t *seq,
                  const char **frame, size_t *len);

/* Frames waiting to be written, back to back in one buffer, so that many
 * frames leave in one write(2): a socketpair charges every write a
 * kernel buffer of its own, and one per frame fills the socket after a
 * few hundred small frames. */
struct bus_out {
  char *buf;
  size_t off, len, cap; /* buf[off, len) is not written yet */
};

/* Append msg's frame. 0, -EMSGSIZE (over BUS_MAX_FRAME; nothing added) or
 * -ENOMEM. */
int bus_out_add(struct bus_out *o, const json_t *msg);

/* Build a frame in place, for the hot frames (emit, deliver), without a
 * json_t tree per frame: start = o->len; the pieces; bus_out_end(o,
 * start). Offsets stay valid while a frame is built: only
 * bus_out_flush() moves what is buffered. Pieces return 0 or -ENOMEM;
 * bus_out_end checks the size and, on any error, takes the partial frame back
 * out. */
int bus_out_raw_grow(struct bus_out *o, const char *s, size_t n);
/* Room for more bytes past o->len: 0 or -ENOMEM. */
int bus_out_reserve(struct bus_out *o, size_t more);
/* json_dump_callback()'s callback: appends to the bus_out arg. */
int bus_out_append(const char *data, size_t n, void *arg);
/* Inline, so that pieces of a known size are copied without a call. */
static inline int bus_out_raw(struct bus_out *o, const char *s, size_t n) {
  if (o->cap - o->len < n)
    return bus_out_raw_grow(o, s, n);
  memcpy(o->buf + o->len, s, n);
  o->len += n;
  return 0;
}
/* s as a JSON string; -EINVAL when s is not valid UTF-8. */
int bus_out_str(struct bus_out *o, const char *s);
int bus_out_int(struct bus_out *o, long long v);
/* Any JSON value, compact; NULL is null. */
int bus_out_json(struct bus_out *o, const json_t *v);
/* A copy of v, which bus_out_json() accepted (so it has no cycle and is
 * nested within the limit): new, or NULL when out of memory. jansson's
 * json_deep_copy() also guards against cycles, with a hash table entry
 * per object, which costs more than the copy; here that is settled. */
json_t *bus_json_copy(const json_t *v);
/* Ends the frame with its newline. err: the first piece's error, if any.
 * Returns 0, or err, -EMSGSIZE or -ENOMEM with the frame removed. */
int bus_out_end(struct bus_out *o, size_t start, int err);
/* Write what is pending on fd (non-blocking). When the socket is full,
 * wait up to timeout_ms for room (0: do not wait). Returns 0 when all is
 * written, -EAGAIN when some remains, or a negative errno from write(2). */
int bus_out_flush(struct bus_out *o, int fd, int timeout_ms);
/* An emptied buffer larger than this is given back after a burst. */
#define BUS_OUT_KEEP (64 * 1024)
/* Give back the buffer of an empty o that grew past BUS_OUT_KEEP. */
void bus_out_shrink(struct bus_out *o);
static inline size_t bus_out_pending(const struct bus_out *o) {
  return o->len - o->off;
}
void bus_out_close(struct bus_out *o);

#endif
