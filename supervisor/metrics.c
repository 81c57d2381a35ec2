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
#include "settings.h"
#include "util.h"

#define METRICS_HEAD_MAX 8192
#define METRICS_TIMEOUT_MS 5000
#define METRICS_MAX_CLIENTS 32
#define METRICS_SWEEP_MS 250

/* The counts of (slot, server) over every worker that exited. */
struct total {
  char *server; /* owned */
  int slot;
  uint64_t v[CTR_NCOUNTERS];
};

/* Per slot: the bus frames of its workers that exited. */
struct bus_total {
  uint64_t emits, delivers;
};

enum client_state { CL_READING, CL_WRITING, CL_DRAINING };

/* A TCP or a unix stream: the endpoint may be either. */
union mstream {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
};

struct mclient {
  union mstream h;
  struct metrics *mt;
  enum client_state state;
  uint64_t deadline_ms;
  uv_write_t wreq;
  uv_shutdown_t sreq;
  char *out; /* the answer being written (owned) */
  struct mclient *prev, *next;
  size_t len;
  char head[METRICS_HEAD_MAX];
};

/* One listening socket; a reload to another address swaps it. */
struct listener {
  union mstream h;
  struct metrics *mt;
  char *addr;      /* as configured (owned) */
  char *unix_path; /* to unlink at close, or NULL (owned) */
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
    b->emits += p->emits;
    b->delivers += p->sent;
  }
}

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

static void collect(const struct master *m, struct rows *rs) {
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

static uint64_t open_of(const uint64_t *v) {
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

json_t *metrics_endpoint_status(const struct master *m) {
  const struct metrics *mt = m->metrics;
  if (mt == NULL || mt->lst == NULL)
    return json_null();
  return json_pack(
      "{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "address", mt->lst->addr, "clients",
      (json_int_t)mt->nclients, "requests", (json_int_t)mt->requests,
      "too_large", (json_int_t)mt->too_large, "timed_out",
      (json_int_t)mt->timed_out, "evicted", (json_int_t)mt->evicted, "refused",
      (json_int_t)mt->refused, "bad", (json_int_t)mt->bad);
}

/* ---- the exposition ------------------------------------------------------ */

static void family(struct util_buf *b, const char *name, const char *type,
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

static int any_serves(const struct master *m) {
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
    family(b, conn_families[f].name, conn_families[f].type,
           conn_families[f].help);
    for (size_t i = 0; i < rs->n; i++) {
      const struct row *r = &rs->r[i];
      int c = conn_families[f].ctr;
      sample_sv(b, conn_families[f].name, r->server, r->slot, NULL,
                c < 0 ? open_of(r->v) : r->v[c]);
    }
  }
  family(b, "aio_connections_timed_out_total", "counter",
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
  family(b, "aio_workers", "gauge", "Workers wanted ([aio] workers, scale).");
  util_buf_printf(b, "aio_workers %zu\n", m->nslots);
  family(b, "aio_worker_up", "gauge",
         "1 while a worker of the slot serves, else 0.");
  for (size_t i = 0; i < nslots; i++)
    util_buf_printf(b, "aio_worker_up{slot=\"%zu\"} %d\n", i,
                    slot_serves(m, (int)i));
  family(b, "aio_worker_restarts_total", "counter",
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
  family(b, "aio_worker_recycles_total", "counter",
         "Workers recycled, by trigger: requests (max_requests), lifetime "
         "(max_lifetime), memory (max_memory).");
  for (int t = 0; t < RECYCLE_NTRIGGERS; t++)
    util_buf_printf(b, "aio_worker_recycles_total{trigger=\"%s\"} %llu\n",
                    recycle_trigger_name(t),
                    (unsigned long long)m->recycles[t]);
  family(b, "aio_reloads_total", "counter", "Reloads, by result.");
  util_buf_printf(b,
                  "aio_reloads_total{result=\"ok\"} %u\n"
                  "aio_reloads_total{result=\"failed\"} %u\n",
                  m->reloads, m->reload_failures);
  family(b, "aio_generation", "gauge", "The serving configuration's number.");
  util_buf_printf(b, "aio_generation %u\n", m->gen->id);
}

static void expose_schedules(struct util_buf *b, const struct master *m) {
  static const char *const results[] = {"ok", "failed", "skipped"};
  struct sched_counts c;
  const char *name;
  family(b, "aio_schedule_runs_total", "counter",
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
  family(b, "aio_schedule_run_duration_seconds", "summary",
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

/* The bus, per slot: frames counted over its workers, and what waits. */
/* Cluster signals (docs/cluster.md), from the counters aio status shows. */
static void expose_cluster_signals(struct util_buf *b, const struct master *m) {
  static const char *const events[] = {
      "emitted", "added", "dropped", "received", "broadcasts",
      "ran",     "acked", "claimed", "dead",     "abandoned"};
  json_t *st = csig_status(m);
  family(b, "aio_cluster_signals_total", "counter",
         "Cluster signals by event (docs/cluster.md).");
  for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++)
    util_buf_printf(
        b, "aio_cluster_signals_total{event=\"%s\"} %lld\n", events[i],
        (long long)json_integer_value(json_object_get(st, events[i])));
  family(b, "aio_cluster_signals_queued", "gauge",
         "Cluster signals waiting for Redis in the master.");
  util_buf_printf(b, "aio_cluster_signals_queued %lld\n",
                  (long long)json_integer_value(json_object_get(st, "queued")));
  json_decref(st);
}

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
    family(b, fams[f].name, fams[f].type, fams[f].help);
    for (size_t i = 0; i < nslots; i++) {
      long long v = 0;
      if (f < 2 && i < mt->nbus)
        v = (long long)(f == 0 ? mt->bus[i].emits : mt->bus[i].delivers);
      for (const struct wproc *p = m->procs; p; p = p->next) {
        if ((size_t)p->slot != i)
          continue;
        if (f == 0)
          v += (long long)p->emits;
        else if (f == 1)
          v += (long long)p->sent;
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
  family(b, "aio_bus_backlog", "gauge",
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
    family(b, name, f ? "gauge" : "counter",
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
  family(b, "aio_metrics_requests_total", "counter",
         "Requests this endpoint answered.");
  util_buf_printf(b, "aio_metrics_requests_total %llu\n",
                  (unsigned long long)mt->requests);
  family(b, "aio_metrics_clients_rejected_total", "counter",
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
static void expose(struct util_buf *b, const struct master *m) {
  struct rows rs;
  collect(m, &rs);
  size_t nslots = slots_seen(m, &rs);
  family(b, "aio_build_info", "gauge", "aio's version and module API version.");
  util_buf_printf(b, "aio_build_info{version=\"%s\",api=\"%d.%d\"} 1\n",
                  AIO_VERSION, AIO_API_MAJOR, AIO_API_MINOR);
  family(b, "aio_master_start_time_seconds", "gauge",
         "When the master started, seconds since the epoch.");
  util_buf_printf(b, "aio_master_start_time_seconds %lld\n",
                  (long long)m->metrics->started);
  expose_workers(b, m, nslots);
  expose_connections(b, &rs);
  expose_schedules(b, m);
  expose_bus(b, m, nslots);
  expose_processes(b, m);
  expose_endpoint(b, m->metrics);
  if (rs.failed)
    b->failed = 1;
  free(rs.r);
}

/* ---- the endpoint -------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h);

static void metrics_release(struct metrics *mt) {
  if (--mt->handles > 0 || !mt->closed)
    return;
  for (size_t i = 0; i < mt->ntotals; i++)
    free(mt->totals[i].server);
  free(mt->totals);
  free(mt->bus);
  free(mt);
}

static void on_client_closed(uv_handle_t *h) {
  struct mclient *c = h->data;
  struct metrics *mt = c->mt;
  if (c->prev)
    c->prev->next = c->next;
  else
    mt->clients = c->next;
  if (c->next)
    c->next->prev = c->prev;
  mt->nclients--;
  free(c->out);
  free(c);
  metrics_release(mt);
}

static void client_close(struct mclient *c) {
  if (!uv_is_closing(&c->h.handle))
    uv_close(&c->h.handle, on_client_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct mclient *c = h->data;
  (void)suggested;
  static char discard[4096];
  if (c->state == CL_READING && c->len < sizeof(c->head)) {
    buf->base = c->head + c->len;
    buf->len = sizeof(c->head) - c->len;
  } else {
    buf->base = discard; /* after the answer: read to the peer's close */
    buf->len = sizeof(discard);
  }
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  struct mclient *c = req->data;
  if (status < 0)
    client_close(c);
  /* else: the peer closes, or the deadline comes */
}

static void on_written(uv_write_t *req, int status) {
  struct mclient *c = req->data;
  free(c->out);
  c->out = NULL;
  if (status < 0 || uv_is_closing(&c->h.handle)) {
    client_close(c);
    return;
  }
  /* Closing with unread input would reset the connection and could cost
   * the peer the answer: send FIN, read what it still sends until it
   * closes (or the deadline). */
  c->state = CL_DRAINING;
  c->sreq.data = c;
  if (uv_shutdown(&c->sreq, &c->h.stream, on_shutdown))
    client_close(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Answer with status, the body (may be NULL) and its type, once. */
static void respond(struct mclient *c, int code, const char *reason,
                    const char *type, const struct util_buf *body, int head,
                    const char *extra) {
  struct util_buf out = {0};
  size_t blen = body ? body->len : 0;
  util_buf_printf(&out,
                  "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                  "Content-Length: %zu\r\nCache-Control: no-store\r\n"
                  "%sConnection: close\r\n\r\n",
                  code, reason, type, blen, extra ? extra : "");
  if (body && !head)
    util_buf_add(&out, body->data, blen);
  uv_read_stop(&c->h.stream);
  if (out.failed) {
    free(out.data);
    client_close(c);
    return;
  }
  c->state = CL_WRITING;
  c->out = out.data;
  c->wreq.data = c;
  uv_buf_t b = uv_buf_init(out.data, (unsigned)out.len);
  if (uv_write(&c->wreq, &c->h.stream, &b, 1, on_written)) {
    free(c->out);
    c->out = NULL;
    client_close(c);
    return;
  }
  /* Reading resumes only to drain once the answer is out. */
  uv_read_start(&c->h.stream, on_alloc, on_read);
}

static void respond_text(struct mclient *c, int code, const char *reason,
                         const char *text, int head, const char *extra) {
  struct util_buf b = {0};
  util_buf_add(&b, text, strlen(text));
  respond(c, code, reason, "text/plain; charset=utf-8", &b, head, extra);
  free(b.data);
}

static void handle_request(struct mclient *c) {
  struct master *m = c->mt->m;
  /* "METHOD SP TARGET SP HTTP/x.y" */
  char *sp1 = memchr(c->head, ' ', c->len);
  char *eol = memchr(c->head, '\n', c->len);
  char *sp2 = sp1 && eol ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
  if (sp1 == NULL || sp2 == NULL || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
    c->mt->bad++;
    respond_text(c, 400, "Bad Request", "bad request\n", 0, NULL);
    return;
  }
  size_t mlen = (size_t)(sp1 - c->head), tlen = (size_t)(sp2 - sp1 - 1);
  const char *target = sp1 + 1;
  size_t plen = tlen;
  const char *q = memchr(target, '?', tlen);
  if (q)
    plen = (size_t)(q - target);
  int get = mlen == 3 && memcmp(c->head, "GET", 3) == 0;
  int head = mlen == 4 && memcmp(c->head, "HEAD", 4) == 0;
  c->mt->requests++;
  if (!get && !head) {
    respond_text(c, 405, "Method Not Allowed", "GET or HEAD\n", 0,
                 "Allow: GET, HEAD\r\n");
    return;
  }
  if (plen == 8 && memcmp(target, "/metrics", 8) == 0) {
    struct util_buf b = {0};
    expose(&b, m);
    if (b.failed)
      respond_text(c, 500, "Internal Server Error", "out of memory\n", head,
                   NULL);
    else
      respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", &b,
              head, NULL);
    free(b.data);
  } else if (plen == 8 && memcmp(target, "/healthz", 8) == 0) {
    if (any_serves(m))
      respond_text(c, 200, "OK", "ok\n", head, NULL);
    else
      respond_text(c, 503, "Service Unavailable", "no worker is serving\n",
                   head, NULL);
  } else {
    respond_text(c, 404, "Not Found", "/metrics or /healthz\n", head, NULL);
  }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct mclient *c = s->data;
  (void)buf;
  if (nread == 0)
    return;
  if (nread < 0) {
    client_close(c);
    return;
  }
  if (c->state != CL_READING)
    return; /* draining after the answer */
  size_t from = c->len > 3 ? c->len - 3 : 0;
  c->len += (size_t)nread;
  /* The end of the head: an empty line (bare LF tolerated). */
  for (size_t i = from; i < c->len; i++)
    if (c->head[i] == '\n' &&
        ((i >= 1 && c->head[i - 1] == '\n') ||
         (i >= 2 && c->head[i - 1] == '\r' && c->head[i - 2] == '\n'))) {
      handle_request(c);
      return;
    }
  if (c->len >= sizeof(c->head)) {
    c->mt->too_large++;
    respond_text(c, 431, "Request Header Fields Too Large",
                 "request head over 8 KiB\n", 0, NULL);
  }
}

/* At the bound: close the oldest client still sending its request. */
static int evict_one(struct metrics *mt) {
  struct mclient *oldest = NULL;
  for (struct mclient *c = mt->clients; c; c = c->next)
    if (c->state == CL_READING && !uv_is_closing(&c->h.handle) &&
        (oldest == NULL || c->deadline_ms <= oldest->deadline_ms))
      oldest = c;
  if (oldest == NULL)
    return 0;
  mt->evicted++;
  client_close(oldest);
  return 1;
}

static void on_connection(uv_stream_t *server, int status) {
  struct listener *l = server->data;
  struct metrics *mt = l->mt;
  if (status < 0)
    return;
  struct mclient *c = malloc(sizeof(*c));
  if (c == NULL)
    return;
  memset(c, 0, offsetof(struct mclient, head));
  c->mt = mt;
  int err = server->type == UV_TCP ? uv_tcp_init(mt->m->loop, &c->h.tcp)
                                   : uv_pipe_init(mt->m->loop, &c->h.pipe, 0);
  if (err) {
    free(c);
    return;
  }
  c->h.handle.data = c;
  c->next = mt->clients;
  if (mt->clients)
    mt->clients->prev = c;
  mt->clients = c;
  mt->nclients++;
  mt->handles++;
  c->deadline_ms = uv_now(mt->m->loop) + METRICS_TIMEOUT_MS;
  if (uv_accept(server, &c->h.stream)) {
    client_close(c);
    return;
  }
  size_t live = 0;
  for (struct mclient *o = mt->clients; o; o = o->next)
    live += !uv_is_closing(&o->h.handle);
  if (live > METRICS_MAX_CLIENTS && !evict_one(mt)) {
    mt->refused++;
    client_close(c);
    return;
  }
  if (uv_read_start(&c->h.stream, on_alloc, on_read))
    client_close(c);
}

static void on_sweep(uv_timer_t *t) {
  struct metrics *mt = t->data;
  uint64_t now = uv_now(mt->m->loop);
  for (struct mclient *c = mt->clients; c; c = c->next)
    if (!uv_is_closing(&c->h.handle) && now >= c->deadline_ms) {
      if (c->state != CL_DRAINING)
        mt->timed_out++; /* one that has its whole answer is no fault */
      client_close(c);
    }
}

static void on_handle_closed(uv_handle_t *h) {
  struct metrics *mt = h->data;
  metrics_release(mt);
}

static void on_listener_closed(uv_handle_t *h) {
  struct listener *l = h->data;
  struct metrics *mt = l->mt;
  if (l->unix_path)
    unlink(l->unix_path);
  free(l->unix_path);
  free(l->addr);
  free(l);
  metrics_release(mt);
}

static void listener_close(struct listener *l) {
  if (l && !uv_is_closing(&l->h.handle))
    uv_close(&l->h.handle, on_listener_closed);
}

/* Listen on addr. 0 with *out, or a negative errno (logged). */
static int listener_open(struct metrics *mt, const char *addr,
                         struct listener **out) {
  struct settings_endpoint ep;
  if (settings_parse_endpoint(addr, &ep)) {
    log_error("[aio] metrics: '%s' is not an address", addr);
    return -EINVAL;
  }
  struct listener *l = calloc(1, sizeof(*l));
  if (l == NULL || (l->addr = strdup(addr)) == NULL) {
    free(l);
    return -ENOMEM;
  }
  l->mt = mt;
  uv_loop_t *loop = mt->m->loop;
  int err;
  if (ep.unix_path) {
    uv_pipe_init(loop, &l->h.pipe, 0);
    /* A socket left by a master that died is taken over; one that
     * answers belongs to a running master, and is not. */
    struct stat st;
    if (lstat(ep.path, &st) == 0 && S_ISSOCK(st.st_mode)) {
      int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      struct sockaddr_un sun = {.sun_family = AF_UNIX};
      memcpy(sun.sun_path, ep.path, strlen(ep.path) + 1);
      int alive =
          fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
      if (fd >= 0)
        close(fd);
      if (!alive)
        unlink(ep.path);
    }
    err = uv_pipe_bind(&l->h.pipe, ep.path);
    if (err == 0)
      l->unix_path = strdup(ep.path);
  } else {
    struct sockaddr_storage ss;
    uv_tcp_init(loop, &l->h.tcp);
    err = ep.ipv6 ? uv_ip6_addr(ep.host, ep.port, (struct sockaddr_in6 *)&ss)
                  : uv_ip4_addr(ep.host, ep.port, (struct sockaddr_in *)&ss);
    if (err == 0)
      err = uv_tcp_bind(&l->h.tcp, (struct sockaddr *)&ss,
                        ep.ipv6 ? UV_TCP_IPV6ONLY : 0);
  }
  l->h.handle.data = l;
  if (err == 0)
    err = uv_listen(&l->h.stream, 64, on_connection);
  mt->handles++;
  if (err) {
    log_error("[aio] metrics: cannot listen on %s: %s", addr, uv_strerror(err));
    listener_close(l);
    return err;
  }
  log_info("metrics on %s (GET /metrics, /healthz)", addr);
  *out = l;
  return 0;
}

int metrics_open(struct master *m) {
  struct metrics *mt = calloc(1, sizeof(*mt));
  if (mt == NULL)
    return -ENOMEM;
  mt->m = m;
  mt->started = time(NULL);
  m->metrics = mt;
  uv_timer_init(m->loop, &mt->sweep);
  mt->sweep.data = mt;
  mt->handles = 1;
  const char *addr = m->gen->app.s.metrics;
  if (addr == NULL)
    return 0;
  int err = listener_open(mt, addr, &mt->lst);
  if (err)
    return err;
  uv_timer_start(&mt->sweep, on_sweep, METRICS_SWEEP_MS, METRICS_SWEEP_MS);
  return 0;
}

void metrics_reloaded(struct master *m) {
  struct metrics *mt = m->metrics;
  if (mt == NULL)
    return;
  const char *want = m->gen->app.s.metrics;
  const char *have = mt->lst ? mt->lst->addr : NULL;
  if ((want == NULL && have == NULL) ||
      (want && have && strcmp(want, have) == 0))
    return;
  struct listener *l = NULL;
  if (want && listener_open(mt, want, &l)) {
    log_error("[aio] metrics: still serving on %s", have ? have : "nothing");
    return;
  }
  listener_close(mt->lst);
  mt->lst = l;
  if (l == NULL)
    log_info("metrics: off");
  if (l)
    uv_timer_start(&mt->sweep, on_sweep, METRICS_SWEEP_MS, METRICS_SWEEP_MS);
  else
    uv_timer_stop(&mt->sweep);
}

void metrics_close(struct master *m) {
  struct metrics *mt = m->metrics;
  if (mt == NULL)
    return;
  m->metrics = NULL;
  mt->closed = 1;
  listener_close(mt->lst);
  mt->lst = NULL;
  for (struct mclient *c = mt->clients; c; c = c->next)
    client_close(c);
  uv_close((uv_handle_t *)&mt->sweep, on_handle_closed);
}
