/*
 * status.c - the reply to `aio status`: the master's own figures, the
 * servers' and the metrics endpoint's counters, one row per worker
 * process (its memory from /proc, its bus and its queues, its output),
 * the cluster and the upgrade; master_status() adds the phase and the
 * slots. control.c sends it.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cluster.h"
#include "master.h"
#include "output.h"
#include "upgrade.h"

/* RSS and private (unshared) memory of pid, in bytes; -1 when unknown. */
static void proc_memory(pid_t pid, long long *rss, long long *priv) {
  char path[64], line[256];
  *rss = *priv = -1;
  snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
  FILE *f = fopen(path, "re");
  if (f == NULL)
    return;
  long long kb, pc = 0, pd = 0;
  while (fgets(line, sizeof(line), f)) {
    if (sscanf(line, "Rss: %lld kB", &kb) == 1)
      *rss = kb * 1024;
    else if (sscanf(line, "Private_Clean: %lld kB", &kb) == 1)
      pc = kb;
    else if (sscanf(line, "Private_Dirty: %lld kB", &kb) == 1)
      pd = kb;
  }
  fclose(f);
  *priv = (pc + pd) * 1024;
}

static const char *const wproc_state_names[] = {
#define WPROC_NAME(e, s) s,
    WPROC_STATES(WPROC_NAME)
#undef WPROC_NAME
};

/* Slot order, then generation: how an operator reads the table (the
 * process list itself is newest first). */
static int by_slot(const void *a, const void *b) {
  const struct wproc *x = *(struct wproc *const *)a;
  const struct wproc *y = *(struct wproc *const *)b;
  if (x->slot != y->slot)
    return x->slot < y->slot ? -1 : 1;
  return x->g->id < y->g->id ? -1 : x->g->id > y->g->id;
}

json_t *status_reply(struct master *m) {
  uint64_t now = uv_now(m->loop);
  json_t *workers = json_array();
  size_t n = 0;
  for (struct wproc *p = m->procs; p; p = p->next)
    n++;
  struct wproc **sorted = calloc(n ? n : 1, sizeof(*sorted));
  n = 0;
  for (struct wproc *p = m->procs; sorted && p; p = p->next)
    sorted[n++] = p;
  if (sorted)
    qsort(sorted, n, sizeof(*sorted), by_slot);
  for (size_t i = 0; i < n; i++) {
    const struct wproc *p = sorted[i];
    long long rss, priv;
    proc_memory(p->pid, &rss, &priv);
    json_array_append_new(
        workers,
        json_pack("{s:i,s:i,s:s,s:i,s:f,s:i,s:I,s:I,s:I,s:o,s:o}", "slot",
                  p->slot, "pid", (int)p->pid, "state",
                  wproc_state_names[p->state], "generation", (int)p->g->id,
                  "uptime", (double)(now - p->started_ms) / 1000.0, "restarts",
                  (int)p->restarts, "connections", (json_int_t)p->conns, "rss",
                  (json_int_t)rss, "private", (json_int_t)priv, "bus",
                  router_proc_status(p), "servers", metrics_proc_status(p)));
    /* Into the row just added (a NULL row takes nothing, and frees it). */
    json_t *w = json_array_get(workers, json_array_size(workers) - 1);
    json_object_set_new(w, "output", output_status(p->output));
    json_object_set_new(w, "queues", queues_proc_status(p));
    json_object_set_new(w, "cpu",
                        p->cpu >= 0 ? json_integer(p->cpu) : json_null());
  }
  free(sorted);
  long long rss, priv;
  proc_memory(getpid(), &rss, &priv);
  json_t *r = json_pack(
      "{s:b,s:i,s:s,s:f,s:s,s:i,s:i,s:i,s:i,s:b,s:I,s:I,s:o,s:o,"
      "s:o,s:o,s:o,s:o,s:o}",
      "ok", 1, "pid", (int)getpid(), "version", AIO_VERSION, "uptime",
      (double)(now - m->start_ms) / 1000.0, "config", m->config_path,
      "generation", (int)m->gen->id, "workers", (int)m->nslots, "reloads",
      (int)m->reloads, "reload_failures", (int)m->reload_failures, "reloading",
      m->phase == MASTER_RELOADING, "rss", (json_int_t)rss, "backlog",
      (json_int_t)router_backlog(m), "control", control_status(m), "servers",
      metrics_servers_status(m), "metrics", metrics_endpoint_status(m), "procs",
      workers, "cluster", cluster_status(m), "upgrade", upgrade_status(m),
      "schedules", sched_status(m));
  master_status(m, r); /* the slots, and what the service lacks */
  return r;
}
