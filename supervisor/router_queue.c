/*
 * router_queue.c - a worker's delivery queue in the master: its bound and
 * the busy word that refuses broadcasts at it, what goes in (one delivery
 * per signal, sent as its own deliver frame or, for a worker's own kept
 * emits coming back to it, in a run of them, several to a frame), and the
 * acknowledgements that take them out. Moved out of router.c; only
 * router*.c call it (router_int.h).
 */
#define _GNU_SOURCE /* malloc_trim */
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "bus_codec.h"
#include "cluster_signals.h"
#include "jalloc.h"
#include "log.h"
#include "master.h"
#include "router_int.h"

/* ---- bounds ------------------------------------------------------------- */

void router_set_busy(struct master *m, int busy) {
  for (struct wproc *q = m->procs; q; q = q->next) {
    if (q->mark)
      q->mark->busy = (uint64_t)busy;
    q->route.over_bytes = 0;
  }
}

/* p's delivery queue grew or shrank: past its bound (entries or bytes)
 * every worker's aio_emit() refuses broadcast signals, through the flag
 * in each one's shared mark, until it is back under half of it. */
static void queue_check(struct wproc *p) {
  struct master *m = p->m;
  const struct settings *s = &p->g->app.s;
  if (!p->route.full && (p->route.npending >= s->bus_queue ||
                         p->route.pending_bytes >= s->bus_queue_bytes)) {
    p->route.full = 1;
    if (m->route.nfull++ == 0)
      router_set_busy(m, 1);
    log_warnx("worker %d pid %d has %zu signal deliveries waiting (%zu "
              "bytes; bus_queue = %zu, bus_queue_bytes = %zu): its listeners "
              "fall behind; signals for broadcast listeners are refused",
              p->slot, (int)p->pid, p->route.npending, p->route.pending_bytes,
              s->bus_queue, s->bus_queue_bytes);
  } else if (p->route.full && p->route.npending < s->bus_queue / 2 + 1 &&
             p->route.pending_bytes < s->bus_queue_bytes / 2) {
    p->route.full = 0;
    if (--m->route.nfull == 0)
      router_set_busy(m, 0);
    log_info("worker %d pid %d caught up: %zu signal deliveries waiting",
             p->slot, (int)p->pid, p->route.npending);
  }
  if (p->route.pending_bytes >= TRIM_AFTER)
    m->route.trim_wanted = 1;
}

/* After a burst, once nothing large is queued any more: freed memory that
 * glibc keeps in its arenas goes back to the kernel. */
void router_maybe_trim(struct master *m) {
  if (!m->route.trim_wanted)
    return;
  for (struct wproc *q = m->procs; q; q = q->next)
    if (q->route.pending_bytes >= TRIM_AFTER / 4 ||
        q->route.journal.len - q->route.journal.head >= TRIM_AFTER / 4)
      return;
  m->route.trim_wanted = 0;
  jalloc_trim();
  malloc_trim(0);
}

/* ---- deliveries -------------------------------------------------------- */

void router_delivery_free(struct delivery *d) {
  if (d->frame != d->inl)
    free(d->frame);
  jalloc_free(d);
}

/* A delivery for p of frame (borrowed: copied into it, one allocation
 * for both), made for p's generation; ref: frame is the emit frame that a
 * ref deliver names. NULL when out of memory (cref given back). */
static struct delivery *delivery_new(struct wproc *p, const char *frame,
                                     size_t len, json_int_t id,
                                     enum bus_kind kind,
                                     struct csig_entry *cref, int ref) {
  struct delivery *d = jalloc_malloc(sizeof(*d) + len);
  if (d == NULL) {
    csig_abandon(p->m, cref);
    return NULL;
  }
  memset(d, 0, sizeof(*d));
  memcpy(d->inl, frame, len);
  d->id = id;
  d->gen = p->g->id;
  d->frame = d->inl;
  d->len = len;
  d->broadcast = bus_kind_broadcast(kind);
  d->kind = kind;
  d->cref = cref;
  d->ref = ref;
  return d;
}

/* Keep d until acknowledged, sent (its place among p's deliveries) or
 * not: a failure (the channel is closing) keeps it unsent, and the
 * worker's death hands it to another worker. */
static void delivery_queue(struct wproc *p, struct delivery *d, int sent) {
  if (sent)
    d->n = ++p->route.sent;
  /* At the tail in O(1): thousands may be in flight. */
  if (p->route.pending_last)
    p->route.pending_last->next = d;
  else
    p->route.pending = d;
  p->route.pending_last = d;
  p->route.npending++;
  p->route.pending_bytes += d->len;
  queue_check(p);
}

void router_send_delivery(struct wproc *p, const char *frame, size_t len,
                          json_int_t id, enum bus_kind kind,
                          struct csig_entry *cref) {
  struct delivery *d = delivery_new(p, frame, len, id, kind, cref, 0);
  if (d == NULL)
    return;
  int sent = channel_send_raw(&p->ch, frame, len) == 0;
  p->route.frames += sent;
  delivery_queue(p, d, sent);
}

/* ---- runs of ref delivers ------------------------------------------------ */

/* Does the kept emit in (of index entry e, kind) join the run of ref
 * delivers last in to's channel? It does when it is the next of the same
 * emitter's kept emits, of the same signal and listeners, and the run's
 * frame is still unwritten at the end of the buffer: the frame is made
 * again with one more (channel_replace_last). */
static int run_join(struct wproc *to, const struct bus_in *in,
                    const struct bus_index_sig *e, enum bus_kind kind,
                    const size_t *idx, size_t n) {
  struct ref_run *r = &to->route.run;
  if (r->count == 0 || r->count >= BUS_RUN_MAX || r->e != e ||
      r->kind != (int)kind || in->seq != r->seq + (json_int_t)r->count)
    return 0;
  router_scratch.off = router_scratch.len = 0;
  if (bus_deliver_ref_encode(&router_scratch, r->id, in->signal,
                             in->signal_text.p ? &in->signal_text : NULL,
                             r->seq, r->count + 1, idx, n) != 0 ||
      channel_replace_last(&to->ch, &r->at, router_scratch.buf,
                           router_scratch.len) != 0)
    return 0;
  r->count++;
  return 1;
}

/* to's deliver of a kept emit, back to its emitter: the frame sent names
 * the seq, alone or in a run of the emits after it; the emit frame is
 * what is kept (made into a deliver frame only if to dies first: unref),
 * one delivery per emit either way. */
size_t router_deliver_ref(struct master *m, struct wproc *to,
                          const struct bus_in *in,
                          const struct bus_index_sig *e, const size_t *idx,
                          size_t n, enum bus_kind kind) {
  json_int_t id = m->next_id++;
  struct delivery *d = delivery_new(to, in->frame, in->len, id, kind, NULL, 1);
  if (d == NULL)
    return 0;
  if (run_join(to, in, e, kind, idx, n)) {
    delivery_queue(to, d, 1);
    return in->len;
  }
  struct ref_run *r = &to->route.run;
  r->count = 0;
  router_scratch.off = router_scratch.len = 0;
  int err = bus_deliver_ref_encode(&router_scratch, id, in->signal,
                                   in->signal_text.p ? &in->signal_text : NULL,
                                   in->seq, 1, idx, n);
  if (err) {
    log_warnx("signal '%s': cannot make its deliver frame (%s); dropped",
              in->signal, strerror(-err));
    router_delivery_free(d);
    return 0;
  }
  int sent =
      channel_send_raw(&to->ch, router_scratch.buf, router_scratch.len) == 0;
  if (sent) {
    to->route.frames++;
    *r = (struct ref_run){channel_last(&to->ch), id, in->seq, 1, e, kind};
  }
  delivery_queue(to, d, sent);
  return in->len;
}

/* ---- acknowledgements ------------------------------------------------- */

/* "delivered" is cumulative: the worker handles deliveries in the order
 * they were sent, so the first n sent to it are finished (d->n counts
 * them, as the worker does, a run's one by one). Naming none still
 * pending, or more than were sent, is a lie. */
int router_ack_upto(struct wproc *p, json_int_t n) {
  struct delivery *d = p->route.pending, *rest, *next;
  if (n < 1 || (uint64_t)n > p->route.sent || d == NULL || d->n == 0 ||
      d->n > (uint64_t)n)
    return -EBADMSG;
  for (rest = d; rest && rest->n != 0 && rest->n <= (uint64_t)n;)
    rest = rest->next;
  for (d = p->route.pending; d != rest; d = next) {
    next = d->next;
    csig_done(p->m, d->cref);
    p->route.pending_bytes -= d->len;
    router_delivery_free(d);
    p->route.npending--;
  }
  p->route.pending = rest;
  if (rest == NULL)
    p->route.pending_last = NULL;
  queue_check(p);
  if (rest == NULL)
    router_maybe_trim(p->m);
  return 0;
}
