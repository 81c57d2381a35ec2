/*
 * metrics_int.h - what metrics.c (the totals, and the counters for aio
 * status), metrics_expose.c (the exposition) and metrics_http.c (the
 * endpoint) share.
 */
#ifndef AIO_SUPERVISOR_METRICS_INT_H
#define AIO_SUPERVISOR_METRICS_INT_H

#include <stdint.h>
#include <time.h>

#include "counters.h"
#include "master.h"
#include "util.h"

struct listener;
struct mclient;

/* The counts of (slot, server) over every worker that exited. */
struct total {
  char *server; /* owned */
  int slot;
  uint64_t v[CTR_NCOUNTERS];
};

/* Per slot: the bus frames of its workers that exited. */
struct bus_total {
  uint64_t emits, delivers;
  /* aio_emit(), aio_call_soon(), aio_emit_wait() calls refused; deliveries
   * dropped; bytes for them never written (metrics_queues.c) */
  uint64_t refused[3], dropped, lost;
  struct queue_high high; /* the most any of them held */
  size_t channel_high;
};

struct metrics {
  struct master *m;
  struct listener *lst; /* NULL: the endpoint is off */
  uv_timer_t sweep;
  int sweeping;
  struct mclient *clients;
  size_t nclients;
  int handles; /* open: listeners, the sweep timer, clients */
  int closed;  /* metrics_close() ran: freed with the last handle */
  struct total *totals;
  size_t ntotals, totals_cap;
  struct bus_total *bus;
  size_t nbus;
  /* The endpoint's own bounds. */
  uint64_t requests, too_large, timed_out, evicted, refused, bad;
  time_t started; /* the master's start, wall clock */
};

/* What (slot, server) counted so far: totals plus the live workers. */
struct row {
  const char *server; /* borrowed */
  int slot;
  uint64_t v[CTR_NCOUNTERS];
};

struct rows {
  struct row *r;
  size_t n, cap;
  int failed;
};

/* metrics.c */
void collect(const struct master *m, struct rows *rs);
uint64_t open_of(const uint64_t *v);
/* metrics_expose.c: the whole exposition of m into b. */
void expose(struct util_buf *b, const struct master *m);
/* # HELP and # TYPE of a family. */
void metrics_family(struct util_buf *b, const char *name, const char *type,
                    const char *help);
/* metrics_queues.c: the bus's queues per slot, and the control socket's. */
void expose_queues(struct util_buf *b, const struct master *m, size_t nslots);
/* p's queue counts join b's (p exited). */
void queues_worker_gone(struct bus_total *b, const struct wproc *p);
/* Does any worker serve (for GET /healthz)? */
int any_serves(const struct master *m);

#endif
