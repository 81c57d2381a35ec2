/*
 * metrics_expose.c - the text of GET /metrics (Prometheus exposition
 * format 0.0.4): every family, from the totals, the live workers' shared
 * counters, the bus, /proc and the endpoint's own counters.
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
/* ---- the exposition ------------------------------------------------------ */

void metrics_family(struct util_buf *b, const char *name, const char *type,
                    const char *help) {
  util_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value, escaped as the format says (\\, \", \n). */
static void label_value(struct util_buf *b, const char *v) {
  for (; *v; v++) {
    if (*v == '\\' || *v == '"')
      util_buf_printf(b, "\\%c", *v);
    else if (*v == '\n')
      util_buf_add(b, "\\n", 2);
    else
      util_buf_add(b, v, 1);
  }
}

static void sample_sv(struct util_buf *b, const char *name, const char *server,
                      int slot, const char *extra, uint64_t v) {
  util_buf_printf(b, "%s{server=\"", name);
  label_value(b, server);
  util_buf_printf(b, "\",slot=\"%d\"%s} %llu\n", slot, extra ? extra : "",
                  (unsigned long long)v);
}

struct proc_usage {
  double cpu_s;
  long long rss;
};

/* utime + stime and the resident set of pid, from /proc; -1 when gone. */
static int proc_usage(pid_t pid, struct proc_usage *u) {
  char path[64], buf[1024];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "re");
  if (f == NULL)
    return -1;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* The command name may hold spaces and parentheses: fields start after
   * the last ')'. utime and stime are fields 14 and 15, rss 24. */
  char *p = strrchr(buf, ')');
  unsigned long long ut, st;
  long long rss;
  if (p == NULL ||
      sscanf(p + 2,
             "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d "
             "%*d %*d %*d %*d %*u %*u %lld",
             &ut, &st, &rss) != 3)
    return -1;
  long hz = sysconf(_SC_CLK_TCK);
  u->cpu_s = (double)(ut + st) / (double)(hz > 0 ? hz : 100);
  u->rss = rss * sysconf(_SC_PAGESIZE);
  return 0;
}

static int slot_serves(const struct master *m, int slot) {
  for (const struct wproc *p = m->procs; p; p = p->next)
    if (p->slot == slot && p->state == WPROC_READY)
      return 1;
  return 0;
}

int any_serves(const struct master *m) {
  for (const struct wproc *p = m->procs; p; p = p->next)
    if (p->state == WPROC_READY)
      return 1;
  return 0;
}

static const char *const reason_names[] = {
#define REASON_NAME(e, s) s,
    RESTART_REASONS(REASON_NAME)
#undef REASON_NAME
};

/* The slots to report: every one that is wanted or ever had a worker. */
static size_t slots_seen(const struct master *m, const struct rows *rs) {
  size_t n = m->nslots;
  for (size_t i = 0; i < rs->n; i++)
    if ((size_t)rs->r[i].slot + 1 > n)
      n = (size_t)rs->r[i].slot + 1;
  for (const struct wproc *p = m->procs; p; p = p->next)
    if ((size_t)p->slot + 1 > n)
      n = (size_t)p->slot + 1;
  if (m->metrics && m->metrics->nbus > n)
    n = m->metrics->nbus;
  return n < m->slots_cap ? n : m->slots_cap;
}

/* Connection counters, one family each, from the rows. */
static const struct {
  const char *name, *type, *help;
  int ctr; /* -1: open (accepted - closed) */
} conn_families[] = {
    {"aio_connections_accepted_total", "counter",
     "Connections accepted and served.", CTR_ACCEPTED},
    {"aio_connections_closed_total", "counter",
     "Served connections that ended (those of a worker that died count as "
     "ended).",
     CTR_CLOSED},
    {"aio_connections_open", "gauge", "Connections open now.", -1},
    {"aio_connections_refused_total", "counter",
     "Connections closed at once: over max_connections (or no memory).",
     CTR_REFUSED},
    {"aio_accept_paused_total", "counter",
     "Times accepting paused because accept(2) ran out of descriptors or "
     "memory.",
     CTR_ACCEPT_PAUSED},
    {"aio_requests_total", "counter",
     "Requests answered, as counted by protocols that call "
     "aio_conn_request_done() (aio.hello does).",
     CTR_REQUESTS},
    {"aio_bytes_read_total", "counter", "Bytes read from clients.",
     CTR_BYTES_READ},
    {"aio_bytes_written_total", "counter",
     "Bytes written to clients (taken by the kernel).", CTR_BYTES_WRITTEN},
};

static const struct {
  const char *kind;
  int ctr;
} timeout_kinds[] = {{"idle", CTR_IDLE_TIMEOUT},
                     {"send", CTR_SEND_TIMEOUT},
                     {"deadline", CTR_DEADLINE}};

static void expose_connections(struct util_buf *b, const struct rows *rs) {
  for (size_t f = 0; f < UTIL_ARRAY_LEN(conn_families); f++) {
    metrics_family(b, conn_families[f].name, conn_families[f].type,
                   conn_families[f].help);
    for (size_t i = 0; i < rs->n; i++) {
      const struct row *r = &rs->r[i];
      int c = conn_families[f].ctr;
      sample_sv(b, conn_families[f].name, r->server, r->slot, NULL,
                c < 0 ? open_of(r->v) : r->v[c]);
    }
  }
  metrics_family(
      b, "aio_connections_timed_out_total", "counter",
      "Connections closed by a timeout: idle (idle_timeout), send "
      "(send_timeout), deadline (header_timeout or a module's deadline).");
  for (size_t i = 0; i < rs->n; i++)
    for (size_t k = 0; k < UTIL_ARRAY_LEN(timeout_kinds); k++) {
      char extra[32];
      snprintf(extra, sizeof(extra), ",kind=\"%s\"", timeout_kinds[k].kind);
      sample_sv(b, "aio_connections_timed_out_total", rs->r[i].server,
                rs->r[i].slot, extra, rs->r[i].v[timeout_kinds[k].ctr]);
    }
}

static void expose_workers(struct util_buf *b, const struct master *m,
                           size_t nslots) {
  metrics_family(b, "aio_workers", "gauge",
                 "Workers wanted ([aio] workers, scale).");
  util_buf_printf(b, "aio_workers %zu\n", m->nslots);
  metrics_family(b, "aio_worker_up", "gauge",
                 "1 while a worker of the slot serves, else 0.");
  for (size_t i = 0; i < nslots; i++)
    util_buf_printf(b, "aio_worker_up{slot=\"%zu\"} %d\n", i,
                    slot_serves(m, (int)i));
  metrics_family(
      b, "aio_worker_restarts_total", "counter",
      "Workers of the slot replaced, by reason: crash, heartbeat (killed "
      "for silence), start_failure, reload, recycle (max_requests, "
      "max_lifetime, max_memory).");
  for (size_t i = 0; i < nslots; i++)
    for (int r = 0; r < RESTART_NREASONS; r++)
      util_buf_printf(b,
                      "aio_worker_restarts_total{slot=\"%zu\",reason=\"%s\"} "
                      "%llu\n",
                      i, reason_names[r],
                      (unsigned long long)m->slots[i].replaced[r]);
  metrics_family(
      b, "aio_worker_recycles_total", "counter",
      "Workers recycled, by trigger: requests (max_requests), lifetime "
      "(max_lifetime), memory (max_memory).");
  for (int t = 0; t < RECYCLE_NTRIGGERS; t++)
    util_buf_printf(b, "aio_worker_recycles_total{trigger=\"%s\"} %llu\n",
                    recycle_trigger_name(t),
                    (unsigned long long)m->recycles[t]);
  metrics_family(b, "aio_reloads_total", "counter", "Reloads, by result.");
  util_buf_printf(b,
                  "aio_reloads_total{result=\"ok\"} %u\n"
                  "aio_reloads_total{result=\"failed\"} %u\n",
                  m->reloads, m->reload_failures);
  metrics_family(b, "aio_generation", "gauge",
                 "The serving configuration's number.");
  util_buf_printf(b, "aio_generation %u\n", m->gen->id);
}

static void expose_schedules(struct util_buf *b, const struct master *m) {
  static const char *const results[] = {"ok", "failed", "skipped"};
  struct sched_counts c;
  const char *name;
  metrics_family(b, "aio_schedule_runs_total", "counter",
                 "Runs of a schedule, by result (skipped: busy or no worker).");
  for (size_t i = 0; (name = sched_counts(m, i, &c)) != NULL; i++) {
    uint64_t v[] = {c.ok, c.failed, c.skipped};
    for (size_t r = 0; r < UTIL_ARRAY_LEN(results); r++) {
      util_buf_printf(b, "aio_schedule_runs_total{schedule=\"");
      label_value(b, name);
      util_buf_printf(b, "\",result=\"%s\"} %llu\n", results[r],
                      (unsigned long long)v[r]);
    }
  }
  metrics_family(b, "aio_schedule_run_duration_seconds", "summary",
                 "How long the runs of a schedule took, done to finished.");
  for (size_t i = 0; (name = sched_counts(m, i, &c)) != NULL; i++) {
    util_buf_printf(b, "aio_schedule_run_duration_seconds_sum{schedule=\"");
    label_value(b, name);
    util_buf_printf(b, "\"} %.6f\n", c.seconds);
    util_buf_printf(b, "aio_schedule_run_duration_seconds_count{schedule=\"");
    label_value(b, name);
    util_buf_printf(b, "\"} %llu\n", (unsigned long long)c.done);
  }
}

/* Cluster signals (docs/cluster.md), from the counters aio status shows. */
static void expose_cluster_signals(struct util_buf *b, const struct master *m) {
  static const char *const events[] = {
      "emitted", "added", "dropped", "received", "broadcasts",
      "ran",     "acked", "claimed", "dead",     "abandoned"};
  json_t *st = csig_status(m);
  metrics_family(b, "aio_cluster_signals_total", "counter",
                 "Cluster signals by event (docs/cluster.md).");
  for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++)
    util_buf_printf(
        b, "aio_cluster_signals_total{event=\"%s\"} %lld\n", events[i],
        (long long)json_integer_value(json_object_get(st, events[i])));
  metrics_family(b, "aio_cluster_signals_queued", "gauge",
                 "Cluster signals waiting for Redis in the master.");
  util_buf_printf(b, "aio_cluster_signals_queued %lld\n",
                  (long long)json_integer_value(json_object_get(st, "queued")));
  json_decref(st);
}

/* The bus, per slot: frames counted over its workers, and what waits. */
static void expose_bus(struct util_buf *b, const struct master *m,
                       size_t nslots) {
  const struct metrics *mt = m->metrics;
  static const struct {
    const char *name, *type, *help;
  } fams[] = {
      {"aio_bus_emits_total", "counter",
       "Signals the slot's workers emitted through the master."},
      {"aio_bus_deliveries_total", "counter",
       "Deliver frames the master sent to the slot's workers."},
      {"aio_bus_pending", "gauge",
       "Deliver frames sent to the slot's workers and not yet acknowledged."},
      {"aio_bus_journal", "gauge",
       "The slot's workers' own signals the master keeps until they ran."},
      {"aio_bus_ring_bytes", "gauge",
       "Bytes of the slot's workers' own signals waiting in their rings."},
  };
  for (size_t f = 0; f < UTIL_ARRAY_LEN(fams); f++) {
    metrics_family(b, fams[f].name, fams[f].type, fams[f].help);
    for (size_t i = 0; i < nslots; i++) {
      long long v = 0;
      if (f < 2 && i < mt->nbus)
        v = (long long)(f == 0 ? mt->bus[i].emits : mt->bus[i].delivers);
      for (const struct wproc *p = m->procs; p; p = p->next) {
        if ((size_t)p->slot != i)
          continue;
        if (f == 0)
          v += (long long)p->route.emits;
        else if (f == 1)
          v += (long long)p->route.sent;
        else {
          json_t *st = router_proc_status(p);
          const char *key = f == 2   ? "pending"
                            : f == 3 ? "journal"
                                     : "ring_bytes";
          json_int_t x = json_integer_value(json_object_get(st, key));
          v += x > 0 ? x : 0;
          json_decref(st);
        }
      }
      util_buf_printf(b, "%s{slot=\"%zu\"} %lld\n", fams[f].name, i, v);
    }
  }
  metrics_family(b, "aio_bus_backlog", "gauge",
                 "Signals the master keeps for workers not ready yet.");
  util_buf_printf(b, "aio_bus_backlog %zu\n", router_backlog(m));
  if (cluster_enabled(m))
    expose_cluster_signals(b, m);
}

static void expose_processes(struct util_buf *b, const struct master *m) {
  struct proc_usage me = {0, 0};
  int have_me = proc_usage(getpid(), &me) == 0;
  struct proc_usage *u = NULL;
  size_t n = 0;
  for (const struct wproc *p = m->procs; p; p = p->next)
    n++;
  u = n ? calloc(n, sizeof(*u)) : NULL;
  int *ok = n ? calloc(n, sizeof(*ok)) : NULL;
  size_t i = 0;
  /* Two processes of one slot and generation (a scale down and up while
   * the old one drains) would make one series twice: the first wins. */
  for (const struct wproc *p = m->procs; p && u && ok; p = p->next, i++) {
    ok[i] = proc_usage(p->pid, &u[i]) == 0;
    size_t j = 0;
    for (const struct wproc *q = m->procs; q != p; q = q->next, j++)
      if (ok[j] && q->slot == p->slot && q->g->id == p->g->id)
        ok[i] = 0;
  }
  for (int f = 0; f < 2; f++) {
    const char *name = f ? "aio_process_resident_memory_bytes"
                         : "aio_process_cpu_seconds_total";
    metrics_family(
        b, name, f ? "gauge" : "counter",
        f ? "Resident memory of the master and each worker, bytes."
          : "User and system CPU time of the master and each worker.");
    if (have_me) {
      if (f)
        util_buf_printf(b, "%s{role=\"master\"} %lld\n", name, me.rss);
      else
        util_buf_printf(b, "%s{role=\"master\"} %.2f\n", name, me.cpu_s);
    }
    i = 0;
    for (const struct wproc *p = m->procs; p && u && ok; p = p->next, i++) {
      if (!ok[i])
        continue;
      util_buf_printf(b, "%s{role=\"worker\",slot=\"%d\",generation=\"%u\"} ",
                      name, p->slot, p->g->id);
      if (f)
        util_buf_printf(b, "%lld\n", u[i].rss);
      else
        util_buf_printf(b, "%.2f\n", u[i].cpu_s);
    }
  }
  free(u);
  free(ok);
}

static void expose_endpoint(struct util_buf *b, const struct metrics *mt) {
  metrics_family(b, "aio_metrics_requests_total", "counter",
                 "Requests this endpoint answered.");
  util_buf_printf(b, "aio_metrics_requests_total %llu\n",
                  (unsigned long long)mt->requests);
  metrics_family(
      b, "aio_metrics_clients_rejected_total", "counter",
      "Clients of this endpoint cut off, by reason: too_large (request "
      "head over 8 KiB), timeout (not done in 5 s), evicted (made room at "
      "32 clients), refused (no room), bad (not HTTP).");
  util_buf_printf(b,
                  "aio_metrics_clients_rejected_total{reason=\"too_large\"} "
                  "%llu\n"
                  "aio_metrics_clients_rejected_total{reason=\"timeout\"} "
                  "%llu\n"
                  "aio_metrics_clients_rejected_total{reason=\"evicted\"} "
                  "%llu\n"
                  "aio_metrics_clients_rejected_total{reason=\"refused\"} "
                  "%llu\n"
                  "aio_metrics_clients_rejected_total{reason=\"bad\"} %llu\n",
                  (unsigned long long)mt->too_large,
                  (unsigned long long)mt->timed_out,
                  (unsigned long long)mt->evicted,
                  (unsigned long long)mt->refused, (unsigned long long)mt->bad);
}

/* The whole /metrics body into b. */
void expose(struct util_buf *b, const struct master *m) {
  struct rows rs;
  collect(m, &rs);
  size_t nslots = slots_seen(m, &rs);
  metrics_family(b, "aio_build_info", "gauge",
                 "aio's version and module API version.");
  util_buf_printf(b, "aio_build_info{version=\"%s\",api=\"%d.%d\"} 1\n",
                  AIO_VERSION, AIO_API_MAJOR, AIO_API_MINOR);
  metrics_family(b, "aio_master_start_time_seconds", "gauge",
                 "When the master started, seconds since the epoch.");
  util_buf_printf(b, "aio_master_start_time_seconds %lld\n",
                  (long long)m->metrics->started);
  expose_workers(b, m, nslots);
  expose_connections(b, &rs);
  expose_schedules(b, m);
  expose_bus(b, m, nslots);
  expose_queues(b, m, nslots);
  expose_processes(b, m);
  expose_endpoint(b, m->metrics);
  if (rs.failed)
    b->failed = 1;
  free(rs.r);
}
