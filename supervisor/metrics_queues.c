/*
 * metrics_queues.c - the bounded queues between processes in /metrics
 * (docs/bus.md, Bounds; docs/operations.md, Metrics): per slot, what its
 * workers' delivery queues, journals and unwritten bytes hold now and at
 * most, their bounds, the emits refused at them and what was dropped or
 * lost; and the control socket's reply queue. Counters add the workers
 * that exited (bus_total), so a restart never takes them back; high-water
 * marks are the most any worker of the slot saw.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "channel.h"
#include "master.h"
#include "metrics_int.h"
#include "settings.h"
#include "util.h"

void queues_worker_gone(struct bus_total *b, const struct wproc *p) {
  uint64_t r[3];
  queues_refused(p, r);
  for (int i = 0; i < 3; i++)
    b->refused[i] += r[i];
  b->dropped += p->route.dropped;
  b->lost += channel_stats(&p->ch)->lost;
  queues_high_join(&b->high, &p->high);
  if (channel_stats(&p->ch)->high > b->channel_high)
    b->channel_high = channel_stats(&p->ch)->high;
}

/* The per-slot families: each a counter or gauge, with up to three
 * series told apart by one label. */
enum {
  F_REFUSED,
  F_DROPPED,
  F_LOST,
  F_ENTRIES,
  F_BYTES,
  F_HIGH,
  F_HIGH_BYTES,
  F_N
};
static const struct {
  const char *name, *type, *help, *label, *values[3];
} slot_fams[F_N] = {
    {"aio_bus_refused_total",
     "counter",
     "Calls of the slot's workers refused at a bus bound (-EAGAIN), by "
     "call: aio_emit, aio_call_soon, aio_emit_wait.",
     "call",
     {"emit", "call_soon", "emit_wait"}},
    {"aio_bus_dropped_total",
     "counter",
     "Signals the slot's workers sent that the master could not keep (past "
     "their bound while told to stop), dropped and logged.",
     NULL,
     {NULL}},
    {"aio_bus_lost_bytes_total",
     "counter",
     "Bytes the master queued for the slot's workers and never wrote (the "
     "worker was gone).",
     NULL,
     {NULL}},
    {"aio_bus_queue_entries",
     "gauge",
     "Entries in the slot's workers' queues in the master: deliveries not "
     "acknowledged, own signals not run.",
     "queue",
     {"deliveries", "journal"}},
    {"aio_bus_queue_bytes",
     "gauge",
     "Bytes in the slot's workers' queues in the master; channel: written to "
     "no worker yet.",
     "queue",
     {"deliveries", "journal", "channel"}},
    {"aio_bus_queue_high_entries",
     "gauge",
     "The most entries one worker of the slot had in the queue, since the "
     "master started.",
     "queue",
     {"deliveries", "journal"}},
    {"aio_bus_queue_high_bytes",
     "gauge",
     "The most bytes one worker of the slot had in the queue, since the "
     "master started.",
     "queue",
     {"deliveries", "journal", "channel"}},
};

/* One slot's series: its exited workers' counts, then its live ones'. */
static void slot_read(const struct master *m, size_t slot,
                      unsigned long long v[F_N][3]) {
  struct bus_total t = {0};
  if (slot < m->metrics->nbus)
    t = m->metrics->bus[slot];
  size_t now[5] = {0};
  for (const struct wproc *p = m->procs; p; p = p->next) {
    if ((size_t)p->slot != slot)
      continue;
    queues_worker_gone(&t, p);
    now[0] += p->route.npending;
    now[1] += p->route.journal.n;
    now[2] += p->route.pending_bytes;
    now[3] += p->route.journal.len - p->route.journal.head;
    now[4] += channel_queued(&p->ch);
  }
  for (int k = 0; k < 3; k++)
    v[F_REFUSED][k] = t.refused[k];
  v[F_DROPPED][0] = t.dropped;
  v[F_LOST][0] = t.lost;
  v[F_ENTRIES][0] = now[0];
  v[F_ENTRIES][1] = now[1];
  v[F_BYTES][0] = now[2];
  v[F_BYTES][1] = now[3];
  v[F_BYTES][2] = now[4];
  v[F_HIGH][0] = t.high.deliveries;
  v[F_HIGH][1] = t.high.journal;
  v[F_HIGH_BYTES][0] = t.high.deliveries_bytes;
  v[F_HIGH_BYTES][1] = t.high.journal_bytes;
  v[F_HIGH_BYTES][2] = t.channel_high;
}

static void expose_bus_queues(struct util_buf *b, const struct master *m,
                              size_t nslots) {
  unsigned long long(*v)[F_N][3] = calloc(nslots ? nslots : 1, sizeof(*v));
  if (v == NULL) {
    b->failed = 1;
    return;
  }
  for (size_t i = 0; i < nslots; i++)
    slot_read(m, i, v[i]);
  for (int f = 0; f < F_N; f++) {
    metrics_family(b, slot_fams[f].name, slot_fams[f].type, slot_fams[f].help);
    for (size_t i = 0; i < nslots; i++)
      for (int k = 0; k < 3 && (k == 0 || slot_fams[f].values[k]); k++) {
        util_buf_printf(b, "%s{slot=\"%zu\"", slot_fams[f].name, i);
        if (slot_fams[f].label)
          util_buf_printf(b, ",%s=\"%s\"", slot_fams[f].label,
                          slot_fams[f].values[k]);
        util_buf_printf(b, "} %llu\n", v[i][f][k]);
      }
  }
  free(v);
  const struct settings *s = &m->gen->app.s;
  metrics_family(b, "aio_bus_queue_limit_entries", "gauge",
                 "A worker's queue's bound in entries ([aio] bus_queue, "
                 "bus_journal).");
  util_buf_printf(b,
                  "aio_bus_queue_limit_entries{queue=\"deliveries\"} %zu\n"
                  "aio_bus_queue_limit_entries{queue=\"journal\"} %zu\n",
                  s->bus_queue, s->bus_journal);
  metrics_family(b, "aio_bus_queue_limit_bytes", "gauge",
                 "A worker's queue's bound in bytes ([aio] bus_queue_bytes, "
                 "bus_journal_bytes, bus_buffer; the ring's size).");
  util_buf_printf(b,
                  "aio_bus_queue_limit_bytes{queue=\"deliveries\"} %zu\n"
                  "aio_bus_queue_limit_bytes{queue=\"journal\"} %zu\n"
                  "aio_bus_queue_limit_bytes{queue=\"buffer\"} %zu\n"
                  "aio_bus_queue_limit_bytes{queue=\"ring\"} %d\n",
                  s->bus_queue_bytes, s->bus_journal_bytes, s->bus_buffer,
                  BUS_RING_SIZE);
}

static long long ctl_int(const json_t *st, const char *key) {
  return (long long)json_integer_value(json_object_get(st, key));
}

/* The control socket: its clients, their unread replies, and those it
 * turned away. */
static void expose_control(struct util_buf *b, const struct master *m) {
  json_t *st = control_status(m);
  if (!json_is_object(st)) {
    json_decref(st);
    return;
  }
  static const struct {
    const char *name, *type, *key, *help;
  } fams[] = {
      {"aio_control_clients", "gauge", "clients",
       "Clients connected to the control socket."},
      {"aio_control_replies_bytes", "gauge", "bytes",
       "Reply bytes the control socket's clients have not read yet."},
      {"aio_control_replies_high_bytes", "gauge", "high_bytes",
       "The most reply bytes one control client had waiting."},
      {"aio_control_replies_limit_bytes", "gauge", "limit_bytes",
       "Reply bytes waiting past which a control client is not read."},
      {"aio_control_paused_total", "counter", "paused",
       "Times a control client was not read until its replies drained."},
  };
  for (size_t i = 0; i < UTIL_ARRAY_LEN(fams); i++) {
    metrics_family(b, fams[i].name, fams[i].type, fams[i].help);
    util_buf_printf(b, "%s %lld\n", fams[i].name, ctl_int(st, fams[i].key));
  }
  metrics_family(b, "aio_control_clients_rejected_total", "counter",
                 "Control clients turned away: refused (past 64 at once), "
                 "dropped (read no reply for control_timeout, or idle when "
                 "room was needed).");
  util_buf_printf(b,
                  "aio_control_clients_rejected_total{reason=\"refused\"} "
                  "%lld\n"
                  "aio_control_clients_rejected_total{reason=\"dropped\"} "
                  "%lld\n",
                  ctl_int(st, "refused"), ctl_int(st, "dropped"));
  json_decref(st);
}

void expose_queues(struct util_buf *b, const struct master *m, size_t nslots) {
  expose_bus_queues(b, m, nslots);
  expose_control(b, m);
}
