/*
 * router_handover.c - what the bus hands over when a worker goes and when
 * one becomes ready. If a worker dies, what it finished (its shared
 * bus_mark says which) is forgotten, the one it was handling is dropped
 * (it may be what killed it), and the rest go to another live worker, or
 * for broadcast to the slot's successor; its own emits not finished (its
 * journal and its ring) are redelivered. A worker that becomes ready gets
 * what was kept for it (its slot's backlog, and the master's).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus_codec.h"
#include "cluster_signals.h"
#include "journal.h"
#include "log.h"
#include "master.h"
#include "router_int.h"

/* Our own deliver frames, read back (a reload, a dead worker's). */
#define OWN_DELIVER (BUS_IN_BIT(BUS_DELIVER) | BUS_IN_TRUSTED)

/* Pass on a kept frame (borrowed) made for generation gen. A worker of
 * another generation gets it made again for its own listener list (a new
 * id), or not at all when that list has no listener of its kind. */
static void hand_over(struct master *m, struct wproc *to, const char *frame,
                      size_t len, json_int_t id, enum bus_kind kind,
                      unsigned gen, struct csig_entry *cref) {
  if (gen == to->g->id) {
    router_send_delivery(to, frame, len, id, kind, cref);
    return;
  }
  struct bus_in in; /* our own frame, without its newline */
  if (bus_in_decode(frame, len - 1, OWN_DELIVER, &in) == 0 &&
      in.type == BUS_DELIVER)
    router_deliver_kind(m, to, NULL, &(struct sig_look){.signal = in.signal},
                        in.data, NULL, kind, cref, NULL);
  else
    csig_abandon(m, cref);
  bus_in_free(&in);
}

static void flush_backlog(struct master *m, json_t **backlog,
                          struct wproc *to) {
  if (*backlog == NULL)
    return;
  size_t i;
  json_t *e;
  json_array_foreach(*backlog, i, e) {
    json_t *f = json_array_get(e, 1);
    hand_over(m, to, json_string_value(f), json_string_length(f),
              json_integer_value(json_array_get(e, 0)),
              (enum bus_kind)json_integer_value(json_array_get(e, 3)),
              (unsigned)json_integer_value(json_array_get(e, 2)), NULL);
  }
  json_decref(*backlog);
  *backlog = NULL;
}

/* d was sent to p naming the emit it kept; p died before it ran: make it
 * the deliver frame it stands for (same id), for p's successor. 0, or -1
 * when it cannot be made (logged; dropped). */
static int unref(struct wproc *p, struct delivery *d) {
  struct bus_in in;
  struct generation *g = p->g;
  size_t local[32], *idx = local, n = 0;
  int err = bus_in_decode(d->frame, d->len, BUS_IN_BIT(BUS_EMIT), &in);
  if (err == 0 && in.type != BUS_EMIT)
    err = -EBADMSG;
  if (err == 0 && g->app.s.nlisteners > 32 &&
      (idx = malloc(g->app.s.nlisteners * sizeof(*idx))) == NULL)
    err = -ENOMEM;
  if (err == 0)
    n = router_match(g, &(struct sig_look){.signal = in.signal},
                     (enum bus_kind)d->kind, idx);
  router_scratch.off = router_scratch.len = 0;
  if (err == 0)
    err = bus_deliver_encode(&router_scratch, d->id, in.signal, in.data,
                             in.raw.p ? &in.raw : NULL, idx, n);
  char *frame = err ? NULL : malloc(router_scratch.len);
  if (frame) {
    memcpy(frame, router_scratch.buf, router_scratch.len);
    if (d->frame != d->inl)
      free(d->frame);
    d->frame = frame;
    d->len = router_scratch.len;
    d->ref = 0;
  } else {
    log_warnx("signal '%s' (delivery %lld) for worker %d: cannot make its "
              "deliver frame again (%s); dropped",
              in.signal[0] ? in.signal : "?", (long long)d->id, p->slot,
              strerror(err ? -err : ENOMEM));
  }
  if (idx != local)
    free(idx);
  bus_in_free(&in);
  return frame ? 0 : -1;
}

/* Did p die with its listeners running, the delivery numbered n of a
 * stream whose number in hand the mark gives? A clean exit or our own
 * shutdown has none. */
static int died_in_hand(const struct wproc *p, uint64_t n, uint64_t in_hand) {
  return p->state == WPROC_DEAD && !master_stopping(p->m) && n != 0 &&
         n == in_hand;
}

/* One own emit of p that it had not finished when it died (frame: the
 * emit frame, from the journal or from p's ring): redelivered, unless it
 * is the one in hand. A frame from the ring was never checked: it is
 * checked here like any frame from a worker, and dropped if bad. */
static void own_emit_gone(struct master *m, struct wproc *p, uint64_t seq,
                          const char *frame, size_t len) {
  struct bus_in in;
  if (bus_in_decode(frame, len, BUS_IN_BIT(BUS_EMIT), &in) != 0 ||
      in.type != BUS_EMIT)
    log_warnx("worker %d left an unreadable signal (emit %llu); dropped",
              p->slot, (unsigned long long)seq);
  else if (died_in_hand(p, seq, p->mark->local_in_hand))
    log_warnx("signal '%s' (emit %llu) was being handled by worker %d "
              "when it died; not redelivered",
              in.signal, (unsigned long long)seq, p->slot);
  else
    router_deliver_kind(m, router_any_ready(m, p), &m->route.backlog,
                        &(struct sig_look){.signal = in.signal}, in.data,
                        in.raw.p ? &in.raw : NULL, BUS_KIND_ONCE, NULL, NULL);
  bus_in_free(&in);
}

/* p's own emits it had not finished, from its journal (sent to us) and
 * its ring (not sent), merged back into emit order: all but the one in
 * hand go to another worker. */
static void own_emits_redeliver(struct master *m, struct wproc *p) {
  uint64_t done = p->mark->local_done, pos = p->mark->ring_head, rseq = 0;
  const char *jframe, *rframe = NULL;
  size_t rlen = 0;
  const struct jrec *r = journal_first(&p->route.journal, &jframe);
  int ring = bus_ring_next(p->mark, &pos, &rseq, &rframe, &rlen);
  while (r || ring == 1) {
    if (r && (ring != 1 || r->seq < rseq)) {
      if (r->seq > done)
        own_emit_gone(m, p, r->seq, jframe, r->len);
      journal_pop(&p->route.journal);
      r = journal_first(&p->route.journal, &jframe);
    } else {
      if (rseq > done)
        own_emit_gone(m, p, rseq, rframe, rlen);
      ring = bus_ring_next(p->mark, &pos, &rseq, &rframe, &rlen);
    }
  }
  if (ring < 0)
    log_warnx("worker %d left a damaged signal ring; what remains in it "
              "is dropped",
              p->slot);
  journal_free(&p->route.journal);
}

void router_worker_gone(struct master *m, struct wproc *p) {
  /* What it wrote before it died, still unread (channel.c). */
  channel_drain(&p->ch, router_dead_line, p);
  struct delivery *d = p->route.pending, *next;
  p->route.pending = NULL;
  p->route.pending_last = NULL;
  p->route.npending = 0;
  p->route.pending_bytes = 0;
  if (p->route.full && --m->route.nfull == 0)
    router_set_busy(m, 0);
  p->route.full = 0;
  struct slot *sl = (size_t)p->slot < m->slots_cap ? &m->slots[p->slot] : NULL;
  uint64_t done = p->mark->done, hand = p->mark->in_hand;
  for (; d; d = next) {
    next = d->next;
    if (d->ref && !(d->n != 0 && d->n <= done) && unref(p, d) != 0) {
      router_delivery_free(d);
      continue;
    }
    if (d->n != 0 && d->n <= done) {
      /* Finished; only its acknowledgement died with the worker. */
      csig_done(m, d->cref);
    } else if (died_in_hand(p, d->n, hand)) {
      /* Redelivering it could kill the next worker the same way. */
      struct bus_in in;
      int err = bus_in_decode(d->frame, d->len - 1, OWN_DELIVER, &in);
      log_warnx("signal '%s' (delivery %lld) was being handled by worker %d "
                "when it died; not redelivered",
                err ? "?" : in.signal, (long long)d->id, p->slot);
      bus_in_free(&in);
      /* A cluster entry stays pending in Redis: claimed again after
       * cluster_claim_timeout, until cluster_max_deliveries. */
      csig_abandon(m, d->cref);
    } else if (d->broadcast) {
      if (sl && (size_t)sl->index < m->nslots) {
        router_backlog_add(&sl->route.backlog, d->frame, d->len, d->id, d->gen,
                           d->kind);
        sl->route.backlog_bytes += d->len;
      }
    } else {
      /* A cluster entry goes to another worker here, with its entry (not
       * added to Redis again); with none ready it stays pending there. */
      struct wproc *to = router_any_ready(m, p);
      if (to)
        hand_over(m, to, d->frame, d->len, d->id, d->kind, d->gen, d->cref);
      else if (d->cref)
        csig_abandon(m, d->cref);
      else
        router_backlog_add(&m->route.backlog, d->frame, d->len, d->id, d->gen,
                           d->kind);
    }
    router_delivery_free(d);
  }
  own_emits_redeliver(m, p);
  bus_mark_free(p->mark);
  p->mark = NULL;
  router_maybe_trim(m);
}

void router_worker_ready(struct master *m, struct wproc *p) {
  if (p->g == m->gen) {
    struct slot *sl = &m->slots[p->slot];
    flush_backlog(m, &sl->route.backlog, p);
    sl->route.backlog_bytes = 0;
    router_slot_check(m, sl);
    flush_backlog(m, &m->route.backlog, p);
  }
}
