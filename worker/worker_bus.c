/*
 * worker_bus.c - the worker's end of the bus: frames for the master batched
 * in w->out and written before the loop sleeps, deliver frames read and
 * run in slices of a loop turn (offer a frame to our handler; a frame we
 * do not understand ends the channel, as in OpenBSD's privsep daemons),
 * their acknowledgements, and the shared mark that says whether the loop
 * turns and which callback holds it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus_codec.h"
#include "jalloc.h"
#include "log.h"
#include "server.h"
#include "worker_int.h"

/* Frames are batched in w->out and written before the loop sleeps (or
 * sooner, once this much is waiting): one write(2) for many frames. */
#define BUS_EAGER_FLUSH (16 * 1024)
/* A loop turn runs listeners for at most this long per source (deliver
 * frames from the master, the worker's own signals), then lets the loop
 * go on: timers (the heartbeat), accepts and reads are never starved by
 * a flood of signals. The rest waits for the next turn. */
#define BUS_SLICE_NS (2 * 1000 * 1000)

static void on_bus_room(uv_poll_t *h, int status, int events);

/* Write what is queued; when the socket is full, wait up to timeout_ms,
 * then let the loop tell us when there is room. */
void worker_bus_flush(struct worker *w, int timeout_ms) {
  int err = w->bus_open ? bus_out_flush(&w->out, w->bus_fd, timeout_ms) : 0;
  if (err == 0)
    w->out_urgent = 0;
  if (err == -EAGAIN) {
    if (!uv_is_active((uv_handle_t *)&w->bus_room))
      uv_poll_start(&w->bus_room, UV_WRITABLE, on_bus_room);
    return;
  }
  if (uv_is_active((uv_handle_t *)&w->bus_room))
    uv_poll_stop(&w->bus_room);
  if (err) {
    /* The master is gone; the read side sees EOF and ends the worker. */
    w->bus_open = 0;
    bus_out_close(&w->out);
  }
}

static void on_bus_room(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  worker_bus_flush(h->data, 0);
}

/* Every turn of the loop, before it sleeps: the master, when a heartbeat
 * is late, reads here whether the loop turns. */
static void on_bus_prepare(uv_prepare_t *h) {
  struct worker *w = h->data;
  w->mark->turn_ms = bus_mono_ms();
  worker_bus_flush(w, 0);
  if (uv_backend_timeout(&w->loop) != 0) { /* it will wait: a burst is over */
    worker_queues_trim(w);
    jalloc_trim();
  }
}

/* Which user callback runs, for the master's kill log if it never
 * returns (docs/bus.md, Liveness). */
void worker_cb_enter(struct worker *w, uint32_t kind, size_t index) {
  w->mark->cb_kind = kind;
  w->mark->cb_index = (uint32_t)index;
  w->mark->cb_since = bus_mono_ms();
  w->clock_fresh = 0;
}

void worker_cb_leave(struct worker *w) {
  w->mark->cb_since = 0;
  w->clock_fresh = 0; /* user code ran since the clock was read */
}

/* A listener's start: the clock the slice check just read, when nothing
 * happened since (one clock read per signal, not two), else a new one. */
void worker_cb_enter_listener(struct worker *w, size_t k) {
  w->mark->cb_kind = BUS_CB_LISTENER;
  w->mark->cb_index = (uint32_t)k;
  w->mark->cb_since = w->clock_fresh ? w->clock_ns / 1000000 : bus_mono_ms();
  w->clock_fresh = 0;
}

/* This turn's slice of user code begins now. (uv_hrtime() and
 * bus_mono_ms() read the same clock, CLOCK_MONOTONIC.) */
void worker_slice_begin(struct worker *w) {
  w->slice_start = w->clock_ns = uv_hrtime();
  w->clock_fresh = 1;
}

/* Has this turn's slice of user code been spent? */
int worker_slice_spent(struct worker *w) {
  w->clock_ns = uv_hrtime();
  w->clock_fresh = 1;
  return w->clock_ns - w->slice_start >= BUS_SLICE_NS;
}

void worker_bus_sync(struct worker *w) {
  /* Acknowledgements may wait: the mark tells the master which deliveries
   * were finished. */
  if (w && w->out_urgent) {
    worker_bus_flush(w, BUS_SYNC_FLUSH_MS);
    w->clock_fresh = 0; /* it may have waited */
  }
}

void worker_proto_enter(struct worker *w, const struct wserver *srv,
                        enum bus_proto_cb which) {
  worker_bus_sync(w);
  if (w && w->mark && srv >= w->servers && srv < w->servers + w->nservers)
    worker_cb_enter(w, BUS_CB_PROTOCOL,
                    (size_t)(srv - w->servers) * BUS_PROTO_COUNT + which);
}

void worker_proto_leave(struct worker *w) {
  if (w && w->mark)
    worker_cb_leave(w);
}

/* A frame was added to w->out. */
void worker_bus_queued(struct worker *w, int urgent) {
  w->out_urgent |= urgent;
  if (bus_out_pending(&w->out) >= BUS_EAGER_FLUSH)
    worker_bus_flush(w, 0);
}

static int bus_queue(struct worker *w, const json_t *msg, int urgent) {
  if (!w->bus_open)
    return -EPIPE;
  int err = bus_out_add(&w->out, msg);
  if (err == 0)
    worker_bus_queued(w, urgent);
  return err;
}

int worker_send(struct worker *w, const json_t *msg) {
  return bus_queue(w, msg, 1);
}

/* "delivered" is cumulative: it covers every delivery before it too, and
 * every own emit up to seq. */
void worker_send_ack(struct worker *w) {
  if (w->ack_n == 0 && w->local_ack == 0)
    return;
  if (w->bus_open &&
      bus_delivered_encode(&w->out, w->ack_n != 0, (json_int_t)w->ack_n,
                           w->local_ack != 0, (json_int_t)w->local_ack) == 0)
    worker_bus_queued(w, 0);
  w->ack_n = 0;
  w->local_ack = 0;
}

/* Has this turn's slice been spent, or does an async listener in hand
 * hold what comes after (until its done)? */
static int bus_hold(struct worker *w) {
  return worker_slice_spent(w) || w->pend.active ? BUS_PAUSE : 0;
}

/* Our own emits back, as ref delivers: `left` kept ones from seq on, one
 * delivery each, their data what we kept. Run until the slice is spent or
 * an async listener goes on: 0, or BUS_PAUSE, with *ran how many ran (the
 * last perhaps in hand); -EBADMSG when one was not kept. */
static int run_refs(struct worker *w, const char *signal, uint64_t seq,
                    size_t left, const json_int_t *ks, size_t nk, size_t *ran) {
  for (*ran = 0; *ran < left;) {
    json_t *data = worker_kept_find(w, seq + *ran);
    if (data == NULL) {
      log_warnx("bus: a deliver names emit %llu, not kept here",
                (unsigned long long)(seq + *ran));
      return -EBADMSG;
    }
    worker_deliver(w, signal, data, ks, nk);
    worker_kept_pop(w);
    ++*ran;
    int rc = bus_hold(w);
    if (rc)
      return rc;
  }
  return 0;
}

void worker_rest_clear(struct worker *w) {
  free(w->rest.ks);
  w->rest.ks = NULL;
  w->rest.nk = w->rest.left = 0;
}

/* Keep the rest of a run cut short for the next slice. 0 or -ENOMEM. */
static int rest_keep(struct worker *w, const struct bus_in *in, size_t ran) {
  json_int_t *ks = malloc((in->nk ? in->nk : 1) * sizeof(*ks));
  if (ks == NULL)
    return -ENOMEM;
  memcpy(ks, in->ks, in->nk * sizeof(*ks));
  worker_rest_clear(w);
  w->rest.ks = ks;
  w->rest.nk = in->nk;
  w->rest.seq = (uint64_t)in->seq + ran;
  w->rest.left = (size_t)in->count - ran;
  snprintf(w->rest.signal, sizeof(w->rest.signal), "%s", in->signal);
  return 0;
}

/* The rest of a run cut short, before the reader goes on: 0 once it all
 * ran, BUS_PAUSE, or an error as run_refs(). */
static int rest_run(struct worker *w) {
  if (w->rest.left == 0)
    return 0;
  size_t ran;
  int rc = run_refs(w, w->rest.signal, w->rest.seq, w->rest.left, w->rest.ks,
                    w->rest.nk, &ran);
  w->rest.seq += ran;
  w->rest.left -= ran;
  if (w->rest.left == 0)
    worker_rest_clear(w);
  return rc;
}

/* One frame from the master (bus_in_line decoded it): deliver, nearly
 * all the traffic, from its text; the rest as a tree. Frames past this
 * turn's slice wait in the reader (BUS_PAUSE), and so does the rest of a
 * run of ref delivers. */
static int on_in(void *arg, struct bus_in *in) {
  struct worker *w = arg;
  int rc = 0;
  if (in->type == BUS_DELIVER && in->has_seq) {
    size_t ran;
    rc = run_refs(w, in->signal, (uint64_t)in->seq, (size_t)in->count, in->ks,
                  in->nk, &ran);
    if (rc == BUS_PAUSE && ran < (size_t)in->count && rest_keep(w, in, ran))
      rc = -ENOMEM;
    return rc;
  }
  if (in->type == BUS_DELIVER)
    worker_deliver(w, in->signal, in->data, in->ks, in->nk);
  else
    rc = worker_on_frame(w, in->type, in->msg);
  /* Behind an async listener in hand, the rest waits for its done. */
  return rc ? rc : bus_hold(w);
}

static int on_line(void *arg, const char *frame, size_t len) {
  struct worker *w = arg;
  struct bus_in_sink sink = {on_in, w, BUS_IN_WORKER};
  return bus_in_line(&sink, frame, len);
}

static void on_bus_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  static char busbuf[65536];
  buf->base = busbuf;
  buf->len = sizeof(busbuf);
}

static void bus_split_done(struct worker *w, int err);

static void on_bus_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct worker *w = s->data;
  if (nread == 0)
    return;
  if (nread < 0) {
    /* The master is gone: nobody will drain us or collect our status. */
    if (!w->stopping)
      log_warnx("master went away; exiting");
    w->bus_open = 0;
    uv_read_stop(s);
    worker_finish(w, nread == UV_EOF ? 0 : 1);
    return;
  }
  worker_slice_begin(w);
  bus_split_done(
      w, bus_reader_split(&w->rd, buf->base, (size_t)nread, on_line, w));
}

/* The next slice of what a paused read held back. */
static void on_bus_idle(uv_idle_t *h) {
  struct worker *w = h->data;
  if (w->pend.active) { /* restarted at its aio_signal_done() */
    uv_idle_stop(h);
    return;
  }
  worker_slice_begin(w);
  int err = rest_run(w);
  bus_split_done(w, err ? err : bus_reader_resume(&w->rd, on_line, w));
}

/* After a slice of frames: acknowledge them; when the slice ran out,
 * read no more until what is held back has run (the master keeps the
 * rest, within its bound), so frames stay in order. */
static void bus_split_done(struct worker *w, int err) {
  worker_send_ack(w);
  if (err == BUS_PAUSE) {
    if (!uv_is_active((uv_handle_t *)&w->bus_idle)) {
      uv_read_stop((uv_stream_t *)&w->bus);
      uv_idle_start(&w->bus_idle, on_bus_idle);
    }
    return;
  }
  if (uv_is_active((uv_handle_t *)&w->bus_idle)) {
    uv_idle_stop(&w->bus_idle);
    if (err == 0 && w->bus_open)
      uv_read_start((uv_stream_t *)&w->bus, on_bus_alloc, on_bus_read);
  }
  if (err) {
    log_error("bus: bad frame from the master (%s); exiting", strerror(-err));
    w->bus_open = 0;
    uv_read_stop((uv_stream_t *)&w->bus);
    worker_finish(w, 1);
  }
}

int worker_bus_start(struct worker *w, int bus_fd) {
  uv_pipe_init(&w->loop, &w->bus, 0);
  w->bus.data = w;
  if (uv_pipe_open(&w->bus, bus_fd)) {
    log_error("cannot open the bus");
    return -1;
  }
  w->bus_open = 1;
  w->bus_fd = bus_fd;
  w->bus_room_fd = fcntl(bus_fd, F_DUPFD_CLOEXEC, 3);
  if (w->bus_room_fd < 0 ||
      uv_poll_init(&w->loop, &w->bus_room, w->bus_room_fd)) {
    log_error("cannot watch the bus");
    return -1;
  }
  w->bus_room.data = w;
  uv_idle_init(&w->loop, &w->bus_idle);
  w->bus_idle.data = w;
  uv_prepare_init(&w->loop, &w->bus_prep);
  w->bus_prep.data = w;
  uv_prepare_start(&w->bus_prep, on_bus_prepare);
  uv_unref((uv_handle_t *)&w->bus_prep);
  uv_read_start((uv_stream_t *)&w->bus, on_bus_alloc, on_bus_read);
  return 0;
}

void worker_bus_resume(struct worker *w) {
  if (w->bus_open && !uv_is_active((uv_handle_t *)&w->bus) &&
      !uv_is_active((uv_handle_t *)&w->bus_idle))
    uv_idle_start(&w->bus_idle, on_bus_idle);
}
