/*
 * queues.c - the bounded queues between the master and its workers as
 * `aio status` and /metrics show them (docs/bus.md, Bounds): what each
 * holds now, the most it held, its bound, and what was lost at it. The
 * queues belong to others (the deliveries and the journal to router.c,
 * the ring to the worker, the bytes not written yet to channel.c); this
 * file only reads them, and keeps the high-water marks of those it does
 * not own, taken at the end of each loop turn, once the turn's frames
 * are all in.
 */
#include <jansson.h>
#include <string.h>

#include "channel.h"
#include "master.h"
#include "settings.h"

static void raise_to(size_t *high, size_t now) {
  if (now > *high)
    *high = now;
}

void queues_high_join(struct queue_high *to, const struct queue_high *from) {
  raise_to(&to->deliveries, from->deliveries);
  raise_to(&to->deliveries_bytes, from->deliveries_bytes);
  raise_to(&to->journal, from->journal);
  raise_to(&to->journal_bytes, from->journal_bytes);
}

void queues_sample(struct wproc *p) {
  const struct queue_high now = {
      .deliveries = p->route.npending,
      .deliveries_bytes = p->route.pending_bytes,
      .journal = p->route.journal.n,
      .journal_bytes = p->route.journal.len - p->route.journal.head,
  };
  queues_high_join(&p->high, &now);
}

void queues_refused(const struct wproc *p, uint64_t *v) {
  if (p->mark == NULL) {
    memcpy(v, p->refused, sizeof(p->refused));
    return;
  }
  v[0] = p->mark->refused;
  v[1] = p->mark->soon_refused;
  v[2] = p->mark->wait_refused;
}

void queues_worker_exited(struct wproc *p) { queues_refused(p, p->refused); }

/* One queue: entries and bytes now, at most, and at most allowed. */
static json_t *queue(size_t n, size_t bytes, size_t high_n, size_t high_bytes,
                     size_t limit_n, size_t limit_bytes) {
  return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "entries", (json_int_t)n,
                   "bytes", (json_int_t)bytes, "high_entries",
                   (json_int_t)high_n, "high_bytes", (json_int_t)high_bytes,
                   "limit_entries", (json_int_t)limit_n, "limit_bytes",
                   (json_int_t)limit_bytes);
}

json_t *queues_proc_status(const struct wproc *p) {
  const struct settings *s = &p->g->app.s;
  const struct channel_stats *st = channel_stats(&p->ch);
  json_t *d =
      queue(p->route.npending, p->route.pending_bytes, p->high.deliveries,
            p->high.deliveries_bytes, s->bus_queue, s->bus_queue_bytes);
  json_object_set_new(d, "dropped", json_integer((json_int_t)p->route.dropped));
  json_t *j =
      queue(p->route.journal.n, p->route.journal.len - p->route.journal.head,
            p->high.journal, p->high.journal_bytes, s->bus_journal,
            s->bus_journal_bytes);
  /* Bounded by what is queued above (deliveries) and by one frame per job
   * or command: no bound of its own. */
  json_t *c = json_pack(
      "{s:I,s:I,s:I}", "bytes", (json_int_t)channel_queued(&p->ch),
      "high_bytes", (json_int_t)st->high, "lost_bytes", (json_int_t)st->lost);
  return json_pack("{s:o,s:o,s:o}", "deliveries", d, "journal", j, "channel",
                   c);
}
