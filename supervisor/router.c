/*
 * router.c - the master's side of the signal bus: frames from workers, and
 * delivery of emitted signals to listeners. A worker's delivery queue
 * (its bound, what goes in, runs of ref delivers, acknowledgements) is
 * router_queue.c; what a worker's exit and a worker's start hand over,
 * router_handover.c; what `aio status` shows of it, router_status.c.
 *
 * Routing: a signal emitted by a worker is handled, for its once-per-emit
 * listeners, by the emitting worker itself (per-emitter affinity), which
 * runs them in emit order without waiting for us: we keep its emit frame
 * in the worker's journal until it says the listeners finished. Signals of
 * the master go to a ready worker as deliver frames, and broadcast
 * listeners get one deliver frame per live worker, kept until acknowledged.
 * If a worker dies, what it finished (its shared bus_mark says which) is
 * forgotten, the one it was handling is dropped (it may be what killed it),
 * and the rest go to another live worker, or for broadcast to the slot's
 * successor.
 *
 * Bounds: each worker's delivery queue, each slot's backlog and each
 * journal have a bound in entries and bytes ([aio] bus_*); at a delivery
 * queue's bound the busy word in every worker's mark makes aio_emit()
 * refuse broadcasts, so the master never has to stop reading a socket
 * (docs/bus.md, Bounds).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus_codec.h"
#include "cluster_signals.h"
#include "journal.h"
#include "log.h"
#include "master.h"
#include "router_int.h"
#include "util.h"

/* ---- bounds ------------------------------------------------------------- */

/* What a worker may still send once told its broadcasts are refused: its
 * bus buffer (bus_buffer) and the socketpair's buffers (a few hundred
 * KiB), with room to spare. Past it, it ignores the refusal. */
#define INFLIGHT_SLACK (2 * 1024 * 1024)

/* Where deliver frames are built: a frame is encoded once, straight from
 * the emit's parsed data, and its text is what is sent, kept and, if need
 * be, redelivered. No json_t tree per delivery. */
struct bus_out router_scratch;

/* A new deliver frame (newline included, in router_scratch: borrowed until the
 * next one is made) in *len bytes, with a new id in *id; NULL when it
 * cannot be made (logged). */
static const char *encode_deliver(struct master *m, const char *signal,
                                  const json_t *data,
                                  const struct bus_span *raw,
                                  const size_t *listeners, size_t n,
                                  json_int_t *id, size_t *len) {
  *id = m->next_id++;
  router_scratch.off = router_scratch.len = 0;
  int err =
      bus_deliver_encode(&router_scratch, *id, signal, data, raw, listeners, n);
  if (err) {
    /* Too large happens when the data fitted in the emit frame but not
     * with the deliver fields: it could never be delivered. */
    log_warnx("signal '%s': cannot make its deliver frame (%s); dropped",
              signal, strerror(-err));
    return NULL;
  }
  *len = router_scratch.len;
  return router_scratch.buf;
}

/* A ready worker of the current generation, lowest slot first; NULL when
 * none. */
struct wproc *router_any_ready(struct master *m, const struct wproc *except) {
  struct wproc *best = NULL;
  for (struct wproc *p = m->procs; p; p = p->next)
    if (p != except && p->state == WPROC_READY && p->g == m->gen &&
        (best == NULL || p->slot < best->slot))
      best = p;
  return best;
}

/* Keep a frame (borrowed: copied) for a worker that does not exist yet. */
void router_backlog_add(json_t **backlog, const char *frame, size_t len,
                        json_int_t id, unsigned gen, enum bus_kind kind) {
  if (*backlog == NULL)
    *backlog = json_array();
  json_array_append_new(
      *backlog, json_pack("[I,s%,i,i]", id, frame, len, (int)gen, (int)kind));
}

static const struct bus_index_sig *look(struct sig_look *l,
                                        const struct generation *g) {
  if (l->g != g) {
    l->g = g;
    l->e = bus_index_get(&g->sigs, l->signal);
  }
  return l->e;
}

/* The listeners of generation g for the signal of one kind: their indices
 * in idx (room for all of g's). Returns how many. */
size_t router_match(const struct generation *g, struct sig_look *l,
                    enum bus_kind kind, size_t *idx) {
  const struct bus_index_sig *e = look(l, g);
  size_t n = 0;
  for (size_t k = e ? e->first[kind] : BUS_INDEX_END; k != BUS_INDEX_END;
       k = bus_index_next(&g->sigs, k))
    idx[n++] = k;
  return n;
}

/* The emit being routed, when a worker's: a deliver back to its emitter,
 * which kept its data (keep), names its seq instead of carrying it. */
struct own_emit {
  const struct wproc *from;
  const struct bus_in *in;
};

/* Deliver signal to `to`'s listeners of one kind (to NULL: keep it in
 * backlog for the next worker). Listener indices are those of the
 * generation that will run them, which a reload can make differ from the
 * emitter's. cref: the cluster entry it is (to is not NULL then), given
 * back to cluster_signals.c if nothing is sent. own: the worker's emit
 * being routed, or NULL. */
size_t router_deliver_kind(struct master *m, struct wproc *to, json_t **backlog,
                           struct sig_look *l, const json_t *data,
                           const struct bus_span *raw, enum bus_kind kind,
                           struct csig_entry *cref,
                           const struct own_emit *own) {
  const char *signal = l->signal;
  struct generation *g = to ? to->g : m->gen;
  size_t local[32], *idx = local, n, len;
  if (g->app.s.nlisteners > 32 &&
      (idx = malloc(g->app.s.nlisteners * sizeof(*idx))) == NULL) {
    csig_abandon(m, cref);
    return 0;
  }
  json_int_t id;
  const char *frame;
  size_t queued = 0;
  if (own && to == own->from && own->in->keep && cref == NULL) {
    if ((n = router_match(g, l, kind, idx)) > 0)
      queued = router_deliver_ref(m, to, own->in, l->e, idx, n, kind);
  } else if ((n = router_match(g, l, kind, idx)) > 0 &&
             (frame =
                  encode_deliver(m, signal, data, raw, idx, n, &id, &len))) {
    if (to)
      router_send_delivery(to, frame, len, id, kind, cref);
    else
      router_backlog_add(backlog, frame, len, id, g->id, kind);
    queued = len;
  } else {
    csig_abandon(m, cref);
  }
  if (idx != local)
    free(idx);
  return queued;
}

/* A slot's backlog (broadcasts for its next worker, while it starts or
 * backs off after a crash) is bounded as a worker's delivery queue is,
 * with the same busy word; a slot that is given up or retired gets no
 * more and holds nobody back. */
void router_slot_check(struct master *m, struct slot *sl) {
  const struct settings *s = &m->gen->app.s;
  size_t n = json_array_size(sl->route.backlog), b = sl->route.backlog_bytes;
  int live = (size_t)sl->index < m->nslots && sl->state != SLOT_FAILED;
  int full = live && (sl->route.full
                          ? n > s->bus_queue / 2 || b >= s->bus_queue_bytes / 2
                          : n >= s->bus_queue || b >= s->bus_queue_bytes);
  if (full == sl->route.full)
    return;
  sl->route.full = full;
  if (full) {
    if (m->route.nfull++ == 0)
      router_set_busy(m, 1);
    log_warnx("worker %d has %zu signal deliveries waiting (%zu bytes) "
              "for its next process: signals for broadcast listeners are "
              "refused",
              sl->index, n, b);
  } else if (--m->route.nfull == 0) {
    router_set_busy(m, 0);
  }
}

#define ONCE BUS_KIND_BIT(BUS_KIND_ONCE)
#define BROADCAST BUS_KIND_BIT(BUS_KIND_BROADCAST)
#define CLUSTER BUS_KIND_BIT(BUS_KIND_CLUSTER)
#define CLUSTER_BROADCAST BUS_KIND_BIT(BUS_KIND_CLUSTER_BROADCAST)

static void route_slots(struct master *m, struct sig_look *l,
                        const json_t *data, const struct bus_span *raw,
                        enum bus_kind kind, const struct own_emit *own);

/* Route one signal from the master, or the broadcast part of a worker's
 * emit (from: the emitter, which runs the once-per-emit part itself; in:
 * its emit). Its data is the JSON text raw when given, else data. */
static void route(struct master *m, struct wproc *from, const struct bus_in *in,
                  struct sig_look *l, const json_t *data,
                  const struct bus_span *raw) {
  struct own_emit own = {from, in};
  if (from == NULL)
    router_deliver_kind(m, router_any_ready(m, NULL), &m->route.backlog, l,
                        data, raw, BUS_KIND_ONCE, NULL, NULL);
  /* Broadcast: each slot's worker, if the emitter's list (for the
   * master's own signals: any list, during a reload) has a broadcast
   * listener; each receiver runs those of its own list. */
  const struct bus_index_sig *e = look(l, from ? from->g : m->gen);
  unsigned kinds = e ? e->kinds : 0;
  if ((kinds & BROADCAST) || (!from && m->next_gen != NULL))
    route_slots(m, l, data, raw, BUS_KIND_BROADCAST, from ? &own : NULL);
  /* Cluster listeners: Redis's (cluster_signals.c), in the emitter's
   * list, as the master's own signals in the current one. */
  if (kinds & (CLUSTER | CLUSTER_BROADCAST))
    csig_emit(m, l->signal, (kinds & CLUSTER) != 0,
              (kinds & CLUSTER_BROADCAST) != 0, data, raw);
}

/* One signal of a broadcast kind to every slot's worker. */
static void route_slots(struct master *m, struct sig_look *l,
                        const json_t *data, const struct bus_span *raw,
                        enum bus_kind kind, const struct own_emit *own) {
  for (size_t i = 0; i < m->nslots; i++) {
    struct slot *sl = &m->slots[i];
    /* A slot starting, respawning or not forked yet (aio-starting is
     * emitted before the first fork) keeps it for its next worker. */
    if (sl->state == SLOT_FAILED)
      continue;
    if (sl->cur && sl->cur->state == WPROC_READY) {
      router_deliver_kind(m, sl->cur, NULL, l, data, raw, kind, NULL, own);
    } else {
      sl->route.backlog_bytes += router_deliver_kind(
          m, NULL, &sl->route.backlog, l, data, raw, kind, NULL, NULL);
      router_slot_check(m, sl);
    }
  }
}

int router_cluster_deliver(struct master *m, const char *signal,
                           const json_t *data, const struct bus_span *raw,
                           struct csig_entry *cref) {
  struct wproc *to = router_any_ready(m, NULL);
  if (to == NULL)
    return -EAGAIN;
  router_deliver_kind(m, to, NULL, &(struct sig_look){.signal = signal}, data,
                      raw, BUS_KIND_CLUSTER, cref, NULL);
  return 0;
}

void router_cluster_broadcast(struct master *m, const char *signal,
                              const json_t *data, const struct bus_span *raw) {
  route_slots(m, &(struct sig_look){.signal = signal}, data, raw,
              BUS_KIND_CLUSTER_BROADCAST, NULL);
}

int router_cluster_ready(struct master *m) {
  return router_any_ready(m, NULL) != NULL;
}

int router_cluster_kinds(struct master *m, const char *signal) {
  unsigned k = bus_index_kinds(&m->gen->sigs, signal);
  return ((k & CLUSTER) ? 1 : 0) | ((k & CLUSTER_BROADCAST) ? 2 : 0);
}

void router_emit(struct master *m, const char *signal, json_t *data) {
  route(m, NULL, NULL, &(struct sig_look){.signal = signal}, data, NULL);
}

/* Keep p's own emit, whose once-per-emit listeners it runs itself, in
 * its journal, within its bound. What p says it finished (its mark) is
 * forgotten first: the journal then holds what its own queue holds, which
 * p bounds by the same settings, so only a worker that ignores them sees
 * one not kept (it still runs; it would not be redelivered: counted as
 * dropped, and logged). */
static void keep_own(struct wproc *p, const char *signal, const char *frame,
                     size_t len) {
  const struct settings *s = &p->g->app.s;
  uint64_t done = p->mark->local_done;
  journal_ack(&p->route.journal, done < p->route.emits ? done : p->route.emits);
  const char *why = NULL;
  if (p->route.journal.n >= s->bus_journal ||
      p->route.journal.len - p->route.journal.head + len > s->bus_journal_bytes)
    why = "its journal is full";
  else if (journal_add(&p->route.journal, p->route.emits, frame, len) != 0)
    why = "out of memory";
  if (why == NULL) {
    if (p->route.journal.cap >= TRIM_AFTER)
      p->m->route.trim_wanted = 1;
    return;
  }
  if (p->route.dropped++ % 1000 == 0)
    log_warnx("signal '%s' from worker %d: %s; not kept for redelivery "
              "(worker %d has dropped %llu)",
              signal, p->slot, why, p->slot,
              (unsigned long long)p->route.dropped);
}

/* An emit from p, its frame text whole: its seq must be greater than the
 * last. When p's own list has once-per-emit listeners for it, p runs them
 * itself, and the frame is kept until p says they finished; broadcast
 * listeners get it from us. */
static int on_emit(struct wproc *p, const struct bus_in *in) {
  const char *frame = in->frame, *signal = in->signal;
  size_t len = in->len;
  json_int_t seq = in->seq;
  /* The emits a worker keeps in its ring do not come here: gaps. */
  if (seq <= (json_int_t)p->route.emits)
    return -EBADMSG;
  p->route.emits = (uint64_t)seq;
  struct sig_look l = {.signal = signal};
  size_t sn = strlen(signal);
  int hit =
      sn == p->route.last.n && memcmp(signal, p->route.last.name, sn) == 0;
  if (hit) { /* as look() found it for the last one */
    l.g = p->g;
    l.e = p->route.last.e;
  }
  const struct bus_index_sig *e = look(&l, p->g);
  if (!hit) {
    p->route.last.n = sn;
    memcpy(p->route.last.name, signal, sn + 1);
    p->route.last.e = e;
  }
  unsigned kinds = e ? e->kinds : 0;
  if (kinds & ONCE)
    keep_own(p, signal, frame, len);
  uint64_t slack = p->g->app.s.bus_buffer + INFLIGHT_SLACK;
  if ((kinds & BROADCAST) && p->m->route.nfull > 0 &&
      (p->route.over_bytes += len) > slack) {
    /* It sent on long after it was told its broadcasts are refused: a
     * worker that ignores back-pressure does not get to grow the others'
     * queues. Logged once each time it happens. */
    p->route.dropped++;
    if (p->route.over_bytes - len <= slack)
      log_warnx("signal '%s' from worker %d: broadcast while the bus is "
                "full; dropped (worker %d has dropped %llu)",
                signal, p->slot, p->slot, (unsigned long long)p->route.dropped);
    return 0;
  }
  route(p->m, p, in, &l, in->data, in->raw.p ? &in->raw : NULL);
  return 0;
}

/* "delivered": the first n deliveries and/or own emits up to seq are
 * finished; at least one, and only what was sent or emitted. */
static int on_ack(struct wproc *p, int has_n, json_int_t n, int has_seq,
                  json_int_t seq) {
  if (!has_n && !has_seq)
    return -EBADMSG;
  if (has_seq) {
    if (seq < 1 || (uint64_t)seq > p->route.emits)
      return -EBADMSG;
    journal_ack(&p->route.journal, (uint64_t)seq);
    if (p->route.journal.n == 0)
      router_maybe_trim(p->m);
  }
  return has_n ? router_ack_upto(p, n) : 0;
}

/* One frame from a worker (bus_in_line decoded it: emit and delivered,
 * nearly all the traffic, from their text, as strictly as jansson would).
 * dead: the worker has exited, and only its last words (emits,
 * acknowledgements, job results) still matter. */
static int on_in(struct wproc *p, struct bus_in *in, int dead) {
  switch (in->type) {
  case BUS_EMIT:
    return on_emit(p, in);
  case BUS_DELIVERED:
    return on_ack(p, in->has_n, in->n, in->has_seq, in->seq);
  case BUS_READY:
  case BUS_HEARTBEAT:
  case BUS_STATUS:
    if (dead)
      return 0;
    /* fall through */
  default:
    return router_frame(p, in->type, in->msg);
  }
}

static int on_live_in(void *arg, struct bus_in *in) {
  return on_in(arg, in, 0);
}

static int on_dead_in(void *arg, struct bus_in *in) {
  return on_in(arg, in, 1);
}

int router_dead_line(void *arg, const char *frame, size_t len) {
  struct bus_in_sink sink = {on_dead_in, arg, BUS_IN_MASTER};
  return bus_in_line(&sink, frame, len);
}

int router_line(struct wproc *p, const char *frame, size_t len) {
  struct bus_in_sink sink = {on_live_in, p, BUS_IN_MASTER};
  return bus_in_line(&sink, frame, len);
}

int router_frame(struct wproc *p, enum bus_type t, json_t *msg) {
  struct master *m = p->m;
  switch (t) {
  case BUS_READY:
    return master_proc_ready(m, p);
  case BUS_HEARTBEAT:
  case BUS_STATUS:
    master_proc_alive(m, p,
                      (long)json_integer_value(json_object_get(msg, "conns")));
    return 0;
  case BUS_DONE:
    return master_job_done(m, p, msg);
  default:
    return -EPROTO;
  }
}

void router_tick(struct master *m) {
  for (size_t i = 0; i < m->slots_cap; i++)
    router_slot_check(m, &m->slots[i]);
  router_maybe_trim(m);
}

void router_proc_init(const struct master *m, struct wproc *p) {
  p->mark->busy = m->route.nfull > 0;
}

void router_proc_close(struct wproc *p) { journal_free(&p->route.journal); }

void router_close(struct master *m) {
  for (size_t i = 0; i < m->slots_cap; i++)
    json_decref(m->slots[i].route.backlog);
  json_decref(m->route.backlog);
}
