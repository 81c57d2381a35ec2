/*
 * emit.c - aio_emit() and its friends in a worker: checked and encoded
 * straight into the bus buffer, refused at the bus's bounds, run here for
 * once-per-emit listeners, kept for our own broadcast listeners until the
 * master's deliver names them, held until ready during a module's init,
 * and handed to the loop from other threads.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bus_codec.h"
#include "emit_wait.h"
#include "log.h"
#include "testing.h"
#include "worker_int.h"

/* How long aio_emit() waits for the master to read when the bus buffer
 * (bus_buffer) is full, before it refuses. */
#define BUS_EMIT_WAIT_MS 100

#define ONCE BUS_KIND_BIT(BUS_KIND_ONCE)
#define BROADCAST BUS_KIND_BIT(BUS_KIND_BROADCAST)

/* ---- own emits kept for our broadcast listeners ------------------------ */

/* May the next emit be kept? Within bus_queue entries and bus_queue_bytes
 * (the bound of what the master keeps for us), and not while draining:
 * broadcasts then go to our successor, and none would come back. */
static int kept_room(const struct worker *w) {
  const struct settings *s = &w->app->s;
  return !w->draining && w->kq_len - w->kq_head < s->bus_queue &&
         w->kq_bytes < s->bus_queue_bytes;
}

/* Keep data (stolen) for own emit seq. 0 or -ENOMEM (data released). */
static int kept_push(struct worker *w, uint64_t seq, json_t *data,
                     size_t bytes) {
  void *q = w->kq;
  int err = worker_queue_room(&q, &w->kq_head, &w->kq_len, &w->kq_cap,
                              sizeof(*w->kq));
  w->kq = q;
  if (err) {
    json_decref(data);
    return err;
  }
  w->kq[w->kq_len++] = (struct kept_emit){seq, data, bytes};
  w->kq_bytes += bytes;
  return 0;
}

void worker_kept_pop(struct worker *w) {
  struct kept_emit *k = &w->kq[w->kq_head++];
  w->kq_bytes -= k->bytes;
  json_decref(k->data);
  if (w->kq_head == w->kq_len) /* given back when the loop sleeps */
    w->kq_head = w->kq_len = 0;
}

/* The data kept for own emit seq (borrowed until worker_kept_pop), or NULL. The
 * master's delivers come in emit order: those kept before seq that it
 * did not send back (it routed them elsewhere) never will. */
json_t *worker_kept_find(struct worker *w, uint64_t seq) {
  while (w->kq_head < w->kq_len && w->kq[w->kq_head].seq < seq)
    worker_kept_pop(w);
  return w->kq_head < w->kq_len && w->kq[w->kq_head].seq == seq
             ? w->kq[w->kq_head].data
             : NULL;
}

void worker_kept_free(struct worker *w) {
  while (w->kq_head < w->kq_len)
    worker_kept_pop(w);
  free(w->kq);
  w->kq = NULL;
  w->kq_cap = 0;
}

/* Back-pressure (docs/bus.md, Bounds), before anything is kept: a
 * worker's delivery queue in the master is full and a broadcast would
 * grow it on every worker, or this worker's own signals not yet run (what
 * its ring and the master's journal keep) are at their bound. */
static int emit_full(const struct worker *w, unsigned kinds, size_t bytes) {
  const struct settings *s = &w->app->s;
  return ((kinds & BROADCAST) && w->mark->busy) ||
         ((kinds & ONCE) && (w->lq_len - w->lq_head >= s->bus_journal ||
                             w->lq_bytes + bytes > s->bus_journal_bytes));
}

/* The emit frame at o[start, o->len) goes to the master: is there room in
 * the bus buffer? When not, it is taken out, what is buffered is written
 * as the master reads it (waiting up to BUS_EMIT_WAIT_MS: the emitter is
 * slowed to the master's pace, and refused only if the master does not
 * read meanwhile), and the frame is made again if it fits now. 0 (the
 * frame is at *start), or -EAGAIN with the frame taken out. */
static int emit_to_master(struct worker *w, size_t *start, const char *signal,
                          const json_t *data, uint64_t seq, int keep) {
  struct bus_out *o = &w->out;
  size_t bytes = o->len - *start, cap = w->app->s.bus_buffer;
  if (bus_out_pending(o) <= cap)
    return 0;
  o->len = *start; /* a flush moves what is buffered */
  worker_bus_flush(w, 0);
  /* Waiting blocks the loop: at most once a turn, so a callback that
   * emits in a loop while the master is stuck is held 100 ms, not 100 ms
   * an emit; after a wait in vain, the rest of the turn is refused. */
  uint64_t turn = uv_now(&w->loop);
  if (bus_out_pending(o) + bytes > cap && w->emit_waited_turn != turn + 1) {
    worker_bus_flush(w, BUS_EMIT_WAIT_MS);
    if (bus_out_pending(o) + bytes > cap)
      w->emit_waited_turn = turn + 1; /* +1: turn 0 is a turn too */
  }
  if (bus_out_pending(o) + bytes > cap)
    return -EAGAIN;
  *start = o->len;
  return bus_emit_encode(o, signal, data, seq, keep) ? -EAGAIN : 0;
}

/* A mapped command's way to the master (worker_set_command_emit); set
 * once, before the command runs, in a process that runs no worker. */
static worker_command_emit_fn *command_emit;

void worker_set_command_emit(worker_command_emit_fn *fn) { command_emit = fn; }

/* aio_emit() before the worker is ready (a module's init, a factory):
 * checked and encoded as any emit is, then kept, in order, within the
 * bounds of the worker's own signals, to be emitted right after the ready
 * frame (worker_early_send). data is ours when steal says so. */
static int early_push(struct worker *w, const char *signal, json_t *data,
                      int steal) {
  const struct settings *s = &w->app->s;
  struct bus_out *o = &w->out;
  size_t start = o->len;
  int err = bus_emit_encode(o, signal, data, w->emit_seq + 1, 0);
  size_t bytes = o->len - start;
  o->len = start; /* only measured: it is encoded again when it goes */
  if (err)
    goto out;
  if (bus_index_kinds(&w->sigs, signal) == 0)
    goto out; /* nobody listens: 0, as later */
  if (w->nearly >= s->bus_journal ||
      w->early_bytes + bytes > s->bus_journal_bytes) {
    w->mark->refused++;
    err = -EAGAIN;
    goto out;
  }
  if (w->nearly == w->early_cap) {
    size_t cap = w->early_cap ? w->early_cap * 2 : 16;
    struct early_emit *ne = realloc(w->early, cap * sizeof(*ne));
    if (ne == NULL) {
      err = -ENOMEM;
      goto out;
    }
    w->early = ne;
    w->early_cap = cap;
  }
  struct early_emit *e = &w->early[w->nearly];
  e->signal = strdup(signal);
  e->data = data == NULL ? json_null() : steal ? data : bus_json_copy(data);
  steal = 0;
  if (e->signal == NULL || e->data == NULL) {
    free(e->signal);
    json_decref(e->data);
    err = -ENOMEM;
    goto out;
  }
  e->bytes = bytes;
  w->nearly++;
  w->early_bytes += bytes;
out:
  if (steal)
    json_decref(data);
  return err;
}

static int emit(const char *signal, json_t *data, int steal,
                struct emit_wait *wait);

/* The emits of init, right after the ready frame, in order. One refused
 * now (the bus at its bound) is logged and counted; the module's init
 * returned long ago. */
void worker_early_send(struct worker *w) {
  for (size_t i = 0; i < w->nearly; i++) {
    struct early_emit *e = &w->early[i];
    int err = emit(e->signal, e->data, 1, NULL);
    if (err)
      log_warnx("aio_emit('%s') during init, sent once ready: %s", e->signal,
                strerror(-err));
    free(e->signal);
  }
  free(w->early);
  w->early = NULL;
  w->nearly = w->early_cap = w->early_bytes = 0;
}

/* What worker_early_send did not get to (a start that failed). */
void worker_early_free(struct worker *w) {
  for (size_t i = 0; i < w->nearly; i++) {
    free(w->early[i].signal);
    json_decref(w->early[i].data);
  }
  free(w->early);
  w->early = NULL;
  w->nearly = w->early_cap = w->early_bytes = 0;
}

/* An emit made on another thread, on its way to the loop. */
struct soon_emit {
  json_t *data;           /* owned */
  struct emit_wait *wait; /* aio_emit_wait()'s, or NULL */
  char signal[];
};

/* Emits of other threads waiting for the loop: bounded by bus_journal as
 * the loop's own are, so what they hold in memory is bounded too. */
static atomic_size_t soon_emits;

static void on_soon_emit(void *arg) {
  struct soon_emit *e = arg;
  atomic_fetch_sub(&soon_emits, 1);
  int err = emit(e->signal, e->data, 1, e->wait);
  if (err && e->wait && worker_self)
    /* The caller was told 0: the bus's answer is its result. */
    emit_wait_finish(worker_self, e->wait, err);
  else if (err)
    log_warnx("aio_emit('%s') from another thread: %s", e->signal,
              strerror(-err));
  free(e);
}

/* Hand an emit of a thread that is not the loop's to the loop, with a
 * value of its own (data copied, or stolen). 0 or -errno; data is
 * released on error when stolen. */
static int emit_from_thread(const char *signal, json_t *data, int steal,
                            struct emit_wait *wait) {
  size_t n = strlen(signal) + 1;
  struct worker *w = worker_soon_target(); /* NULL once closed: aio_call_soon
                                              says so */
  if (w && atomic_fetch_add(&soon_emits, 1) >= w->app->s.bus_journal) {
    atomic_fetch_sub(&soon_emits, 1);
    w->mark->soon_refused++;
    if (steal)
      json_decref(data);
    return -EAGAIN;
  }
  struct soon_emit *e = malloc(sizeof(*e) + n);
  json_t *mine = data == NULL ? json_null()
                 : steal      ? data
                              : bus_json_copy(data);
  int err = e == NULL || mine == NULL ? -ENOMEM : 0;
  if (err == 0) {
    memcpy(e->signal, signal, n);
    e->data = mine;
    e->wait = wait;
    err = aio_call_soon(on_soon_emit, e);
  }
  if (err) {
    atomic_fetch_sub(&soon_emits, 1);
    json_decref(mine);
    free(e);
  }
  return err;
}

/* aio_emit() and aio_emit_new(): steal says data is ours to keep.
 * aio_emit_wait(): wait (begun here when the emit is taken, else the
 * caller's to drop), on the loop thread of a ready worker only. */
static int emit(const char *signal, json_t *data, int steal,
                struct emit_wait *wait) {
  struct worker *w = worker_self;
  int err;
  size_t sn = signal ? strlen(signal) : 0;
  if (sn == 0 || sn > BUS_MAX_SIGNAL) {
    err = -EINVAL;
    goto out;
  }
  if (w == NULL && command_emit) {
    err = command_emit(signal, data);
    goto out;
  }
  if (w == NULL && worker_soon_here()) {
    /* A thread of this worker's modules: the loop emits it. */
    err = emit_from_thread(signal, data, steal, NULL);
    steal = 0;
    goto out;
  }
  if (w == NULL || w->in_test) {
    err = testing_emit(signal, data);
    goto out;
  }
  if (!w->ready && wait) {
    err = -EBUSY; /* emitted from a thread while the worker starts */
    goto out;
  }
  if (!w->ready) {
    err = early_push(w, signal, data, steal);
    steal = 0;
    goto out;
  }
  if (!w->bus_open) {
    err = -EPIPE;
    goto out;
  }
  /* Encoded straight into the queue: no json_t for the frame itself. */
  struct bus_out *o = &w->out;
  size_t start = o->len;
  uint64_t seq = w->emit_seq + 1;
  if (sn != w->last_sig.n || memcmp(signal, w->last_sig.name, sn) != 0) {
    memcpy(w->last_sig.name, signal, sn + 1);
    w->last_sig.n = sn;
    w->last_sig.ix = bus_index_get(&w->sigs, signal);
    w->last_sig.plain = bus_name_plain(signal, sn);
  }
  const struct bus_index_sig *ix = w->last_sig.ix;
  unsigned kinds = ix ? ix->kinds : 0;
  /* Our own broadcast listeners will get it back from the master: with
   * keep, by its seq, and they run on the data kept here. */
  int keep = (kinds & BROADCAST) && kept_room(w);
  struct bus_span text = {w->last_sig.name, sn};
  if ((err = bus_emit_encode_text(o, signal, w->last_sig.plain ? &text : NULL,
                                  data, seq, keep)))
    goto out;
  size_t bytes = o->len - start;
  if (kinds == 0) {
    /* Checked and encoded like any other, so that whether a listener is
     * configured does not change what aio_emit() accepts. */
    o->len = start;
    log_debug("aio_emit('%s'): no listener", signal);
    if (wait)
      emit_wait_finish(w, wait, 0);
    goto out;
  }
  if (emit_full(w, kinds, bytes)) {
    o->len = start;
    err = -EAGAIN;
    goto refused;
  }
  uint64_t ring_end = 0, ring_tail = w->mark->ring_tail;
  if (kinds == ONCE && bus_ring_put(w->mark, seq, o->buf + start,
                                    o->len - start - 1, &ring_end) == 0)
    /* Only our own listeners: the master hears of it only if we die
     * before they ran, from the ring. */
    o->len = start;
  else if ((err = emit_to_master(w, &start, signal, data, seq, keep)))
    goto refused;
  if (kinds & ONCE || keep) {
    /* They run here, on what was emitted: a value of our own, which later
     * changes to the caller's cannot reach. */
    json_t *mine = data == NULL ? json_null()
                   : steal      ? data
                                : bus_json_copy(data);
    steal = 0;
    size_t kept = w->kq_len;
    if (mine == NULL || (keep && kept_push(w, seq, json_incref(mine), bytes)) ||
        ((kinds & ONCE) &&
         ((wait && emit_wait_add_chain(w, wait, ix->first[BUS_KIND_ONCE])) ||
          worker_local_push(w, seq, ix->first[BUS_KIND_ONCE], mine, ring_end,
                            bytes, wait)))) {
      if (keep && w->kq_len > kept) { /* take it back */
        w->kq_bytes -= w->kq[--w->kq_len].bytes;
        json_decref(w->kq[w->kq_len].data);
      }
      json_decref(mine);
      w->mark->ring_tail = ring_tail; /* take the record back */
      o->len = start;
      err = -ENOMEM;
      goto out;
    }
    if (!(kinds & ONCE))
      json_decref(mine); /* only kept */
  }
  w->emit_seq = seq;
  if (!ring_end)
    worker_bus_queued(w, 1);
  if (wait && !(kinds & ONCE))
    emit_wait_finish(w, wait, 0); /* broadcast listeners are not waited for */
  goto out;
refused:
  /* Counted for `aio status`: nothing is refused in silence. */
  w->mark->refused++;
out:
  if (steal)
    json_decref(data);
  return err;
}

int aio_emit(const char *signal, json_t *data) {
  return emit(signal, data, 0, NULL);
}

int aio_emit_new(const char *signal, json_t *data) {
  return emit(signal, data, 1, NULL);
}

int aio_emit_wait(const char *signal, json_t *data, aio_emit_done_fn *done_cb,
                  void *arg) {
  struct worker *w = worker_self;
  int err;
  if (done_cb == NULL || signal == NULL || *signal == '\0' ||
      strlen(signal) > BUS_MAX_SIGNAL)
    return -EINVAL;
  if ((w == NULL || w->in_test) && testing_app())
    return testing_emit_wait(signal, data, done_cb, arg);
  if (w == NULL && worker_soon_here()) {
    w = worker_soon_target();
    if (w == NULL)
      return -EPIPE;
    struct emit_wait *ew = emit_wait_new(w, signal, done_cb, arg, &err);
    if (ew && (err = emit_from_thread(signal, data, 0, ew)))
      emit_wait_drop(w, ew);
    return err;
  }
  if (w == NULL)
    return -ENOTSUP; /* a mapped command: nothing waits there */
  if (!w->ready)
    return -EBUSY;
  struct emit_wait *ew = emit_wait_new(w, signal, done_cb, arg, &err);
  if (ew && (err = emit(signal, data, 0, ew)))
    emit_wait_drop(w, ew);
  return err;
}
