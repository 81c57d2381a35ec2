/*
 * metrics.c - what the master tells about the fleet: the counters workers
 * keep in shared memory (counters.h), folded into totals of the master's
 * own when a worker exits so they never go backwards, and the
 * [aio] metrics endpoint that serves them to Prometheus (GET /metrics, text
 * exposition format 0.0.4) and answers GET /healthz.
 *
 * The endpoint runs on the master's loop and asks no worker anything: a
 * scrape reads shared memory and /proc. A client costs a fixed block
 * (its request head is read into METRICS_HEAD_MAX bytes of its own, 431
 * past it), lives at most METRICS_TIMEOUT_MS, and at most
 * METRICS_MAX_CLIENTS are connected: the next one makes room by closing
 * the oldest that has not finished its request. Every answer is built in
 * one buffer and written once, with Connection: close. Each client turned
 * away is counted (aio status, and /metrics itself).
 *
 * This file keeps the totals and answers aio status; metrics_expose.c
 * writes the exposition and metrics_http.c serves it (metrics_int.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"
#include "cluster_signals.h"
#include "counters.h"
#include "log.h"
#include "master.h"
#include "metrics_int.h"
#include "settings.h"
#include "util.h"
/* ---- totals -------------------------------------------------------------- */

static struct total *total_get(struct metrics *mt, const char *server,
                               int slot) {
  for (size_t i = 0; i < mt->ntotals; i++)
    if (mt->totals[i].slot == slot && strcmp(mt->totals[i].server, server) == 0)
      return &mt->totals[i];
  if (util_grow((void **)&mt->totals, &mt->totals_cap, mt->ntotals + 1,
                sizeof(*mt->totals)))
    return NULL;
  struct total *t = &mt->totals[mt->ntotals];
  memset(t, 0, sizeof(*t));
  t->server = strdup(server);
  if (t->server == NULL)
    return NULL;
  t->slot = slot;
  mt->ntotals++;
  return t;
}

/* A worker's block, closed before accepted: accepted read later is at
 * least what closed counted, so open is never negative. */
static void read_block(const struct ctr_server *b, uint64_t *v) {
  v[CTR_CLOSED] = ctr_get(b, CTR_CLOSED);
  for (int i = 0; i < CTR_NCOUNTERS; i++)
    if (i != CTR_CLOSED)
      v[i] = ctr_get(b, (enum ctr_index)i);
}

static struct bus_total *bus_get(struct metrics *mt, int slot) {
  if ((size_t)slot >= mt->nbus) {
    size_t n = (size_t)slot + 1;
    struct bus_total *b = realloc(mt->bus, n * sizeof(*b));
    if (b == NULL)
      return NULL;
    memset(b + mt->nbus, 0, (n - mt->nbus) * sizeof(*b));
    mt->bus = b;
    mt->nbus = n;
  }
  return &mt->bus[slot];
}

void metrics_worker_gone(struct master *m, struct wproc *p) {
  struct metrics *mt = m->metrics;
  if (mt == NULL)
    return;
  const struct settings *s = &p->g->app.s;
  for (size_t i = 0; p->ctrs && i < s->nservers; i++) {
    struct total *t = total_get(mt, s->servers[i].name, p->slot);
    if (t == NULL) {
      log_warnx("metrics: out of memory; worker %d's counts are lost", p->slot);
      break;
    }
    uint64_t v[CTR_NCOUNTERS];
    read_block(&p->ctrs[i], v);
    /* Its connections ended with it, whatever it managed to count. */
    v[CTR_CLOSED] = v[CTR_ACCEPTED];
    for (int k = 0; k < CTR_NCOUNTERS; k++)
      t->v[k] += v[k];
  }
  struct bus_total *b = bus_get(mt, p->slot);
  if (b) {
    b->emits += p->route.emits;
    b->delivers += p->route.sent;
    queues_worker_gone(b, p);
  }
}

static struct row *row_get(struct rows *rs, const char *server, int slot) {
  for (size_t i = 0; i < rs->n; i++)
    if (rs->r[i].slot == slot && strcmp(rs->r[i].server, server) == 0)
      return &rs->r[i];
  if (util_grow((void **)&rs->r, &rs->cap, rs->n + 1, sizeof(*rs->r))) {
    rs->failed = 1;
    return NULL;
  }
  struct row *r = &rs->r[rs->n++];
  memset(r, 0, sizeof(*r));
  r->server = server;
  r->slot = slot;
  return r;
}

static int row_cmp(const void *a, const void *b) {
  const struct row *x = a, *y = b;
  int c = strcmp(x->server, y->server);
  return c ? c : x->slot - y->slot;
}

void collect(const struct master *m, struct rows *rs) {
  const struct metrics *mt = m->metrics;
  memset(rs, 0, sizeof(*rs));
  for (size_t i = 0; mt && i < mt->ntotals; i++) {
    struct row *r = row_get(rs, mt->totals[i].server, mt->totals[i].slot);
    if (r)
      memcpy(r->v, mt->totals[i].v, sizeof(r->v));
  }
  /* The current configuration's servers appear before any connection. */
  for (size_t i = 0; i < m->gen->app.s.nservers; i++)
    for (size_t k = 0; k < m->nslots; k++)
      row_get(rs, m->gen->app.s.servers[i].name, (int)k);
  for (const struct wproc *p = m->procs; p; p = p->next) {
    const struct settings *s = &p->g->app.s;
    for (size_t i = 0; p->ctrs && i < s->nservers; i++) {
      struct row *r = row_get(rs, s->servers[i].name, p->slot);
      if (r == NULL)
        continue;
      uint64_t v[CTR_NCOUNTERS];
      read_block(&p->ctrs[i], v);
      for (int k = 0; k < CTR_NCOUNTERS; k++)
        r->v[k] += v[k];
    }
  }
  if (rs->n > 1)
    qsort(rs->r, rs->n, sizeof(*rs->r), row_cmp);
}

uint64_t open_of(const uint64_t *v) {
  return v[CTR_ACCEPTED] > v[CTR_CLOSED] ? v[CTR_ACCEPTED] - v[CTR_CLOSED] : 0;
}

static json_t *counters_json(const uint64_t *v) {
  json_t *o = json_object();
  for (int k = 0; k < CTR_NCOUNTERS; k++)
    json_object_set_new(o, ctr_names[k], json_integer((json_int_t)v[k]));
  json_object_set_new(o, "open", json_integer((json_int_t)open_of(v)));
  return o;
}

json_t *metrics_servers_status(struct master *m) {
  struct rows rs;
  collect(m, &rs);
  json_t *out = json_object();
  for (size_t i = 0; i < rs.n; i++) {
    /* Rows are sorted by server: sum each run of them. */
    uint64_t v[CTR_NCOUNTERS] = {0};
    size_t j = i;
    for (; j < rs.n && strcmp(rs.r[j].server, rs.r[i].server) == 0; j++)
      for (int k = 0; k < CTR_NCOUNTERS; k++)
        v[k] += rs.r[j].v[k];
    json_object_set_new(out, rs.r[i].server, counters_json(v));
    i = j - 1;
  }
  free(rs.r);
  return out;
}

json_t *metrics_proc_status(const struct wproc *p) {
  json_t *out = json_object();
  const struct settings *s = &p->g->app.s;
  for (size_t i = 0; p->ctrs && i < s->nservers; i++) {
    uint64_t v[CTR_NCOUNTERS];
    read_block(&p->ctrs[i], v);
    json_object_set_new(out, s->servers[i].name, counters_json(v));
  }
  return out;
}
