/*
 * master.c - the master's whole state machine, in one place as in nginx's
 * ngx_process_cycle.c: start, signals (each a uv_signal_t callback that acts
 * here), reaping and respawn with backoff, liveness, scaling, shutdown.
 */
#define _GNU_SOURCE
#include "master.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "cluster.h"
#include "counters.h"
#include "generation.h"
#include "log.h"
#include "output.h"
#include "proctitle.h"
#include "sockets.h"
#include "util.h"

#define TICK_MS 100
/* Backoff between respawns of a slot that keeps crashing (backoff_ms). */
#define BACKOFF_MAX_MS 10000
/* The last slot left trying after a crash loop, with no worker serving:
 * from 1 s, doubling, up to this. */
#define LONELY_BACKOFF_MIN_MS 1000
#define LONELY_BACKOFF_MAX_MS 30000
/* What an immediate stop (QUIT) waits before SIGKILL. */
#define QUIT_GRACE_MS 2000

static const char *const slot_state_names[] = {
#define SLOT_NAME(e, s) s,
    SLOT_STATES(SLOT_NAME)
#undef SLOT_NAME
};

static const char *const restart_reason_names[] = {
#define REASON_NAME(e, s) s,
    RESTART_REASONS(REASON_NAME)
#undef REASON_NAME
};

static const char *const master_phase_names[] = {
#define MASTER_NAME(e, s) s,
    MASTER_PHASES(MASTER_NAME)
#undef MASTER_NAME
};

/* ---- slots -------------------------------------------------------------- */

struct slot *master_slot_get(struct master *m, size_t index) {
  if (index >= m->slots_cap) {
    size_t cap = m->slots_cap ? m->slots_cap : 4;
    while (cap <= index)
      cap *= 2;
    struct slot *s = realloc(m->slots, cap * sizeof(*s));
    if (s == NULL)
      return NULL;
    memset(s + m->slots_cap, 0, (cap - m->slots_cap) * sizeof(*s));
    for (size_t i = m->slots_cap; i < cap; i++)
      s[i].index = (int)i;
    m->slots = s;
    m->slots_cap = cap;
  }
  return &m->slots[index];
}

/* A slot that no worker will serve gives its sockets back: the kernel would
 * go on hashing connections onto their accept queues, where they would
 * wait until the clients gave up. Closed, the other slots get them. */
static void slot_fail(struct master *m, struct slot *s) {
  s->state = SLOT_FAILED;
  generation_close_slot(m->gen, (size_t)s->index);
}

/* The delay before the nth respawn in a row: the first is immediate (a
 * single crash should cost nothing), then it doubles from 100 ms up to
 * BACKOFF_MAX_MS. */
static uint64_t backoff_ms(unsigned n) {
  if (n <= 1)
    return 0;
  uint64_t delay = 100;
  for (unsigned i = 2; i < n && delay < BACKOFF_MAX_MS; i++)
    delay *= 2;
  return delay > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : delay;
}

/* A start that failed before the worker existed (no descriptor, no
 * process, no memory, a socket that cannot be bound) says nothing about
 * the worker: the cause is the machine's and passes. Retried with the
 * crash backoff for as long as it takes, never given up on. */
static void slot_start_failed(struct master *m, struct slot *s, int err) {
  s->start_failures++;
  s->failed_starts++;
  uint64_t delay = backoff_ms(s->failed_starts + 1);
  snprintf(s->why, sizeof(s->why), "cannot start: %s", strerror(-err));
  s->state = SLOT_BACKOFF;
  s->respawn_at_ms = uv_now(m->loop) + delay;
  log_error("worker %d: cannot start: %s (%u time%s in a row); retrying in "
            "%llu ms",
            s->index, strerror(-err), s->failed_starts,
            s->failed_starts == 1 ? "" : "s", (unsigned long long)delay);
}

static int slot_start(struct master *m, struct slot *s) {
  int err = generation_bind_slot(m->gen, (size_t)s->index, NULL, &m->act);
  if (err == 0)
    err = spawn_worker(m, m->gen, s, &s->cur);
  if (err) {
    s->replaced[RESTART_START_FAILURE]++;
    slot_start_failed(m, s, err);
    return err;
  }
  s->state = SLOT_RUNNING;
  s->failed_starts = 0;
  return 0;
}

/* The first generation cannot become ready: `aio run` stops what it
 * started and exits 70 (a process manager sees a failed start, never a
 * master holding ports that nobody serves). */
static void master_start_failed(struct master *m, const char *why) {
  log_error("start failed: %s; nothing is served: stopping (exit %d)", why,
            EXIT_SOFTWARE);
  m->exit_code = EXIT_SOFTWARE;
  master_begin_stop(m, MASTER_QUITTING);
  notify_send("STATUS=start failed: %s", why);
}

static void announce_ready(struct master *m);

/* Workers of slots other than s that serve (ready), and slots that will
 * (starting, or waiting to be retried). */
static size_t slots_alive(const struct master *m, const struct slot *s,
                          size_t *serving) {
  size_t alive = 0;
  *serving = 0;
  for (size_t i = 0; i < m->nslots; i++) {
    const struct slot *t = &m->slots[i];
    if (t == s)
      continue;
    alive += t->state == SLOT_RUNNING || t->state == SLOT_BACKOFF;
    *serving += t->cur && t->cur->state == WPROC_READY;
  }
  return alive;
}

/* s crashed more than max_restarts times within restart_window. */
static void slot_crash_loop(struct master *m, struct slot *s, unsigned recent) {
  const struct settings *set = &m->gen->app.s;
  size_t serving;
  if (slots_alive(m, s, &serving) > 0) {
    slot_fail(m, s);
    log_error("worker %d crashed %u times in %.0f s (max_restarts = %d), "
              "last %s: not respawning it; %s. Fix the cause, then "
              "`aio reload`",
              s->index, recent, set->restart_window, set->max_restarts, s->why,
              serving ? "the other workers keep serving"
                      : "the other workers are not serving yet");
    announce_ready(m); /* the others may be all the start waited for */
    return;
  }
  char why[320];
  snprintf(why, sizeof(why),
           "worker %d %s (%u times in %.0f s, max_restarts = %d)", s->index,
           s->why, recent, set->restart_window, set->max_restarts);
  if (m->phase == MASTER_STARTING) {
    master_start_failed(m, why);
    return;
  }
  /* The last slot trying: keep its sockets, so connections wait for the
   * cause to go away, and retry slowly rather than give up on the whole
   * service or spin. */
  unsigned shift = s->lonely < 5 ? s->lonely : 5;
  uint64_t delay = LONELY_BACKOFF_MIN_MS << shift;
  if (delay > LONELY_BACKOFF_MAX_MS)
    delay = LONELY_BACKOFF_MAX_MS;
  s->lonely++;
  s->restarts++;
  s->state = SLOT_BACKOFF;
  s->respawn_at_ms = uv_now(m->loop) + delay;
  if (!m->unserved)
    m->unserved_since_ms = uv_now(m->loop);
  m->unserved = 1;
  log_error("no worker serves: %s; the sockets stay open, retrying in %.0f s",
            why, (double)delay / 1000);
  notify_send("STATUS=no worker serves: %s; retrying in %.0f s", why,
              (double)delay / 1000);
}

/* Record a crash and decide: respawn now, later, or never. */
static void slot_crashed(struct master *m, struct slot *s) {
  const struct settings *set = &m->gen->app.s;
  uint64_t now = uv_now(m->loop);
  uint64_t window = (uint64_t)(set->restart_window * 1000);
  s->crash_ms[s->ncrash % UTIL_ARRAY_LEN(s->crash_ms)] = now;
  s->ncrash++;
  unsigned recent = 0;
  size_t have = s->ncrash < UTIL_ARRAY_LEN(s->crash_ms)
                    ? s->ncrash
                    : UTIL_ARRAY_LEN(s->crash_ms);
  for (size_t i = 0; i < have; i++)
    if (now - s->crash_ms[i] <= window)
      recent++;
  if (recent > (unsigned)set->max_restarts) {
    slot_crash_loop(m, s, recent);
    return;
  }
  s->lonely = 0;
  uint64_t delay = backoff_ms(recent);
  s->restarts++;
  if (delay == 0) {
    log_info("worker %d: respawning", s->index);
    slot_start(m, s);
    return;
  }
  s->state = SLOT_BACKOFF;
  s->respawn_at_ms = now + delay;
  log_warnx("worker %d crashed %u times in %.0f s: respawning in %llu ms",
            s->index, recent, set->restart_window, (unsigned long long)delay);
}

/* A worker serves again after none did: the cause went away, so the
 * slots given up on meanwhile get a fresh start too. */
static void master_served_again(struct master *m, struct wproc *p) {
  m->unserved = 0;
  log_info("a worker serves again after %.1f s without one (worker %d)",
           (double)(uv_now(m->loop) - m->unserved_since_ms) / 1000, p->slot);
  for (size_t i = 0; i < m->nslots; i++) {
    struct slot *s = &m->slots[i];
    if (s->state != SLOT_FAILED)
      continue;
    log_info("worker %d: respawning the slot given up on", s->index);
    s->ncrash = 0;
    s->state = SLOT_RUNNING;
    slot_start(m, s);
  }
  notify_send("STATUS=serving generation %u with %zu workers", m->gen->id,
              m->nslots);
}

/* ---- process bookkeeping ---------------------------------------------- */

static void on_bus_closed(uv_handle_t *h) {
  struct wproc *p = h->data;
  bus_reader_close(&p->rd);
  bus_out_close(&p->out);
  free(p->journal.buf);
  struct generation *g = p->g;
  ctr_region_free(p->ctrs, g->app.s.nservers);
  if (--g->refs == 0 && g != p->m->gen)
    generation_free(g, p->m->gen);
  free(p);
}

static void proc_unlink_free(struct master *m, struct wproc *p) {
  output_close(p->output);
  p->output = NULL;
  for (struct wproc **pp = &m->procs; *pp; pp = &(*pp)->next)
    if (*pp == p) {
      *pp = p->next;
      break;
    }
  p->bus_open = 0;
  uv_close((uv_handle_t *)&p->bus, on_bus_closed);
}

static void describe_status(int status, char *out, size_t n) {
  if (WIFEXITED(status))
    snprintf(out, n, "exited with status %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(out, n, "killed by signal %d (%s)%s", WTERMSIG(status),
             strsignal(WTERMSIG(status)),
             WCOREDUMP(status) ? ", core dumped" : "");
  else
    snprintf(out, n, "stopped (status %d)", status);
}

static void worker_exited(struct master *m, struct wproc *p, int status) {
  char how[128];
  /* Its last lines before the line that says it exited. */
  output_close(p->output);
  p->output = NULL;
  describe_status(status, how, sizeof(how));
  int expected = p->state == WPROC_DRAINING || master_stopping(m);
  int clean = (WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
              (m->phase == MASTER_QUITTING && WIFSIGNALED(status));
  if (expected && clean)
    log_info("worker %d (pid %d) %s", p->slot, (int)p->pid, how);
  else
    log_error("worker %d (pid %d) %s", p->slot, (int)p->pid, how);
  enum wproc_state was = p->state;
  p->state = WPROC_DEAD;
  reload_worker_exited(m, p, how);
  recycle_worker_exited(m, p, how);
  router_worker_gone(m, p);
  sched_worker_gone(m, p);
  json_t *data = json_pack("{s:i,s:i,s:s}", "slot", p->slot, "pid", (int)p->pid,
                           "status", how);
  if (WIFEXITED(status))
    json_object_set_new(data, "exit_code", json_integer(WEXITSTATUS(status)));
  if (WIFSIGNALED(status))
    json_object_set_new(data, "signal", json_integer(WTERMSIG(status)));
  router_emit(m, "worker-exited", data);
  json_decref(data);

  struct slot *s = (size_t)p->slot < m->slots_cap ? &m->slots[p->slot] : NULL;
  if (s && s->cur == p) {
    s->cur = NULL;
    snprintf(s->why, sizeof(s->why), "%s%s", how,
             was == WPROC_STARTING ? " before it was ready" : "");
    if (!master_stopping(m) && was != WPROC_DRAINING &&
        s->state == SLOT_RUNNING && (size_t)s->index < m->nslots) {
      s->replaced[p->silenced ? RESTART_HEARTBEAT : RESTART_CRASH]++;
      slot_crashed(m, s);
    } else if ((size_t)s->index >= m->nslots)
      s->state = SLOT_IDLE;
  }
  metrics_worker_gone(m, p);
  proc_unlink_free(m, p);
}

static void reap(struct master *m) {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0)
      return;
    struct wproc *p = m->procs;
    while (p && p->pid != pid)
      p = p->next;
    if (p)
      worker_exited(m, p, status);
    /* else: a probe child or an orphan we adopted as PID 1: reaped. */
  }
}

static void on_written(uv_write_t *req, int status) {
  (void)status;
  free(req->data);
  free(req);
}

/* Write p's queued frames: straight to the socket while libuv has nothing
 * queued for it, the rest through libuv's queue, in order. One write(2)
 * carries a whole loop iteration's frames for a worker. */
static void proc_flush(struct wproc *p) {
  size_t n = bus_out_pending(&p->out);
  if (n == 0)
    return;
  uv_stream_t *s = (uv_stream_t *)&p->bus;
  if (!p->bus_open)
    goto drop;
  if (uv_stream_get_write_queue_size(s) == 0) {
    uv_buf_t b = uv_buf_init(p->out.buf + p->out.off, (unsigned)n);
    int w = uv_try_write(s, &b, 1);
    if (w < 0 && w != UV_EAGAIN)
      goto drop; /* the worker is gone; SIGCHLD says how */
    if (w > 0) {
      p->out.off += (size_t)w;
      n -= (size_t)w;
    }
  }
  if (n > 0) {
    uv_write_t *req = malloc(sizeof(*req));
    char *copy = malloc(n);
    if (req == NULL || copy == NULL) {
      free(req);
      free(copy);
      goto drop;
    }
    memcpy(copy, p->out.buf + p->out.off, n);
    req->data = copy;
    uv_buf_t b = uv_buf_init(copy, (unsigned)n);
    if (uv_write(req, s, &b, 1, on_written)) {
      free(copy);
      free(req);
    }
  }
drop:
  p->out.off = p->out.len = 0;
  bus_out_shrink(&p->out);
}

static void on_bus_flush(uv_prepare_t *h) {
  struct master *m = h->data;
  for (struct wproc *p = m->procs; p; p = p->next)
    proc_flush(p);
}

/* A long burst need not wait for the end of the iteration. */
static void eager_flush(struct wproc *p) {
  if (bus_out_pending(&p->out) >= 64 * 1024)
    proc_flush(p);
}

int master_send(struct wproc *p, const json_t *msg) {
  if (!p->bus_open)
    return -EPIPE;
  int err = bus_out_add(&p->out, msg);
  if (err == 0)
    eager_flush(p);
  return err;
}

int master_send_raw(struct wproc *p, const char *frame, size_t len) {
  if (!p->bus_open)
    return -EPIPE;
  int err = bus_out_raw(&p->out, frame, len);
  if (err == 0)
    eager_flush(p);
  return err;
}

/* ---- stopping, draining, scaling ----------------------------------------- */

void master_proc_stop(struct master *m, struct wproc *p, int graceful) {
  if (p->state == WPROC_DEAD)
    return;
  uint64_t now = uv_now(m->loop);
  if (p->state != WPROC_DRAINING) {
    p->state = WPROC_DRAINING;
    p->stop_deadline_ms =
        now + (graceful ? (uint64_t)(p->g->app.s.graceful_timeout * 1000)
                        : QUIT_GRACE_MS);
  } else if (!graceful && p->stop_deadline_ms > now + QUIT_GRACE_MS) {
    /* QUIT during a drain: a worker that ignores it has the short grace
     * left, not what remains of graceful_timeout. */
    p->stop_deadline_ms = now + QUIT_GRACE_MS;
  }
  json_t *msg = bus_msg(BUS_STOP);
  json_object_set_new(msg, "graceful", json_boolean(graceful));
  if (!graceful)
    master_send(p, msg);
  /* The bus says it; the signal covers a worker whose bus is stuck. */
  if (!graceful)
    kill(p->pid, SIGQUIT);
  else if (master_send(p, msg) != 0)
    kill(p->pid, SIGTERM);
  json_decref(msg);
}

void master_slot_switch(struct master *m, struct slot *s,
                        enum restart_reason why) {
  struct wproc *was = s->cur;
  s->cur = s->next;
  s->next = NULL;
  if (was) {
    s->replaced[why]++;
    master_proc_stop(m, was, 1);
  }
}

void master_slot_drop_next(struct master *m, struct slot *s) {
  (void)m;
  struct wproc *p = s->next;
  s->next = NULL;
  if (p && p->state != WPROC_DEAD) {
    p->state = WPROC_DRAINING; /* an expected exit: no crash accounting */
    kill(p->pid, SIGKILL);
  }
}

void master_begin_stop(struct master *m, enum master_phase to) {
  int graceful = to == MASTER_STOPPING;
  if (m->phase >= to)
    return;
  m->phase = to;
  log_info("%s shutdown", graceful ? "graceful" : "immediate");
  /* A generation that is not serving yet has nothing to drain. */
  reload_cancel(m, "the master is shutting down");
  recycle_cancel(m, "the master is shutting down");
  sched_stop(m);
  cluster_leave(m);
  notify_send("STOPPING=1\nSTATUS=%s shutdown",
              graceful ? "graceful" : "immediate");
  control_close(m);
  router_emit(m, "aio-stopping", NULL);
  for (struct wproc *p = m->procs; p; p = p->next)
    master_proc_stop(m, p, graceful);
}

/* Retire the highest slot: stop new connections reaching it, drain it,
 * then close its sockets. Closing a SO_REUSEPORT listener resets what
 * waits in its queue unless net.ipv4.tcp_migrate_req=1 (Linux 5.14+), which
 * moves those connections to the other listeners of the group. */
void master_scale(struct master *m, size_t n) {
  size_t old = m->nslots;
  if (!settings_workers_ok((long long)n)) {
    log_warnx("workers: staying at %zu: %d to %d is the range", old,
              SETTINGS_WORKERS_MIN, SETTINGS_WORKERS_MAX);
    return;
  }
  if (n == old)
    return;
  log_info("workers: %zu -> %zu", old, n);
  if (n < old)
    recycle_cancel(m, "the workers are scaled down");
  m->nslots = n;
  for (size_t i = old; i < n; i++) {
    struct slot *s = master_slot_get(m, i);
    if (s == NULL)
      break;
    s->state = SLOT_RUNNING;
    s->ncrash = 0;
    if (s->cur == NULL)
      slot_start(m, s);
  }
  int tcp = 0;
  for (size_t i = 0; i < m->gen->app.s.nservers; i++)
    tcp |= m->gen->app.s.servers[i].type == SERVER_TCP;
  if (n < old && tcp && sockets_migrate_req() != 1)
    log_warnx("net.ipv4.tcp_migrate_req is not 1: connections waiting in "
              "the retired worker's accept queue will be reset; set it to 1 "
              "(Linux 5.14+) to hand them to the other workers");
  for (size_t i = n; i < old; i++) {
    struct slot *s = &m->slots[i];
    s->state = SLOT_IDLE;
    if (s->cur)
      master_proc_stop(m, s->cur, 1);
    s->cur = NULL;
    generation_close_slot(m->gen, i);
  }
}

static void announce_ready(struct master *m) {
  if (m->phase != MASTER_STARTING)
    return;
  size_t ready = 0;
  for (size_t i = 0; i < m->nslots; i++) {
    struct slot *s = &m->slots[i];
    if (s->state == SLOT_FAILED || s->state == SLOT_IDLE)
      continue; /* given up on: said in the log */
    if (!s->cur || s->cur->state != WPROC_READY)
      return;
    ready++;
  }
  m->phase = MASTER_SERVING;
  log_info("ready: %zu worker%s serving (generation %u) in %llu ms", ready,
           ready == 1 ? "" : "s", m->gen->id,
           (unsigned long long)(uv_now(m->loop) - m->start_ms));
  if (m->ready_fd >= 0) {
    ssize_t r;
    do
      r = write(m->ready_fd, "\n", 1);
    while (r < 0 && errno == EINTR);
    close(m->ready_fd);
    m->ready_fd = -1;
  }
  if (m->daemon_fd && *m->daemon_fd >= 0) {
    ssize_t r;
    do
      r = write(*m->daemon_fd, "R", 1);
    while (r < 0 && errno == EINTR);
    close(*m->daemon_fd);
    *m->daemon_fd = -1;
  }
  if (cluster_enabled(m))
    notify_send("READY=1\nMAINPID=%d\nSTATUS=serving with %zu workers; "
                "cluster %s",
                (int)getpid(), ready, cluster_state_name(m));
  else
    notify_send("READY=1\nMAINPID=%d\nSTATUS=serving with %zu workers",
                (int)getpid(), ready);
  router_emit(m, "aio-started", NULL);
}

void master_worker_ready(struct master *m, struct wproc *p) {
  p->state = WPROC_READY;
  p->ready_ms = uv_now(m->loop);
  log_info("worker %d (pid %d) ready in %llu ms", p->slot, (int)p->pid,
           (unsigned long long)(p->ready_ms - p->started_ms));
  if (p->g == m->next_gen) {
    reload_worker_ready(m, p);
    return;
  }
  if (recycle_worker_ready(m, p))
    return;
  if (m->unserved && p->g == m->gen)
    master_served_again(m, p);
  announce_ready(m);
}

/* The first generation must be ready by [aio] start_timeout. */
static void start_tick(struct master *m, uint64_t now) {
  double limit = m->gen->app.s.start_timeout;
  if (m->phase != MASTER_STARTING || limit <= 0 ||
      now - m->start_ms < (uint64_t)(limit * 1000))
    return;
  char why[320] = "";
  for (size_t i = 0; i < m->nslots && !why[0]; i++) {
    const struct slot *s = &m->slots[i];
    if (s->cur && s->cur->state == WPROC_STARTING)
      snprintf(why, sizeof(why), "worker %zu (pid %d) still starting", i,
               (int)s->cur->pid);
    else if (s->state == SLOT_BACKOFF)
      snprintf(why, sizeof(why), "worker %zu %s", i, s->why);
  }
  char msg[400];
  snprintf(msg, sizeof(msg), "not ready within start_timeout = %g s: %s", limit,
           why[0] ? why : "workers not ready");
  master_start_failed(m, msg);
}

void master_status(struct master *m, json_t *reply) {
  if (reply == NULL)
    return;
  uint64_t now = uv_now(m->loop);
  json_t *slots = json_array();
  size_t serving = 0;
  json_int_t failures = 0;
  const struct slot *retrying = NULL;
  for (size_t i = 0; i < m->slots_cap; i++)
    failures += m->slots[i].start_failures;
  for (size_t i = 0; i < m->nslots; i++) {
    const struct slot *s = &m->slots[i];
    int ready = s->cur && s->cur->state == WPROC_READY;
    serving += (size_t)ready;
    json_t *o = json_pack("{s:i,s:s,s:b,s:i,s:i,s:s}", "slot", (int)i, "state",
                          slot_state_names[s->state], "serving", ready,
                          "restarts", (int)s->restarts, "start_failures",
                          (int)s->start_failures, "why", s->why);
    json_t *replaced = json_object();
    for (int r = 0; r < RESTART_NREASONS; r++)
      json_object_set_new(replaced, restart_reason_names[r],
                          json_integer((json_int_t)s->replaced[r]));
    json_object_set_new(o, "replaced", replaced);
    const char *recycling = recycle_trigger_name(s->recycling - 1);
    json_object_set_new(o, "recycling",
                        recycling ? json_string(recycling) : json_null());
    if (s->state == SLOT_BACKOFF) {
      if (retrying == NULL)
        retrying = s;
      uint64_t left = s->respawn_at_ms > now ? s->respawn_at_ms - now : 0;
      json_object_set_new(o, "retry_in", json_real((double)left / 1000));
    }
    json_array_append_new(slots, o);
  }
  json_t *problem = json_null();
  if ((m->phase == MASTER_SERVING || m->phase == MASTER_RELOADING) &&
      m->nslots > 0 && serving == 0) {
    char buf[400];
    if (retrying)
      snprintf(buf, sizeof(buf),
               "no worker serves: worker %d %s; retrying in %.0f s",
               retrying->index, retrying->why,
               (double)(retrying->respawn_at_ms > now
                            ? retrying->respawn_at_ms - now
                            : 0) /
                   1000);
    else
      snprintf(buf, sizeof(buf), "no worker serves: workers starting");
    problem = json_string(buf);
  }
  json_object_set_new(reply, "phase",
                      json_string(master_phase_names[m->phase]));
  json_object_set_new(reply, "serving", json_integer((json_int_t)serving));
  json_object_set_new(reply, "start_failures", json_integer(failures));
  json_object_set_new(reply, "problem", problem);
  json_object_set_new(reply, "reload_queued", json_boolean(m->reload_queued));
  json_object_set_new(reply, "slots", slots);
  json_object_set_new(reply, "recycles", recycle_status(m));
}

/* ---- the tick: liveness, backoff, deadlines ---------------------------- */

static void on_tick(uv_timer_t *t) {
  struct master *m = t->data;
  uint64_t now = uv_now(m->loop);
  uint64_t timeout = (uint64_t)(m->gen->app.s.timeout * 1000);
  for (struct wproc *p = m->procs; p; p = p->next) {
    if (p->state == WPROC_DRAINING) {
      if (now >= p->stop_deadline_ms) {
        log_warnx("worker %d (pid %d) still running after the graceful "
                  "timeout; killing it",
                  p->slot, (int)p->pid);
        kill(p->pid, SIGKILL);
        p->stop_deadline_ms = UINT64_MAX;
      }
    } else if (timeout && p->state != WPROC_DEAD && now > p->last_hb_ms &&
               now - p->last_hb_ms > timeout) {
      /* A loop that turns is alive, however slowly its heartbeats come
       * through; one that does not is hung (docs/bus.md, Liveness). */
      char why[512];
      if (!router_hung(p, timeout, why, sizeof(why)))
        continue;
      log_error("worker %d (pid %d) silent for %llu ms (timeout %.1f s), %s: "
                "killing it",
                p->slot, (int)p->pid, (unsigned long long)(now - p->last_hb_ms),
                m->gen->app.s.timeout, why);
      kill(p->pid, SIGKILL);
      p->silenced = 1;
      p->last_hb_ms = UINT64_MAX; /* in the future: killed once */
    }
  }
  if (!master_stopping(m))
    for (size_t i = 0; i < m->nslots; i++) {
      struct slot *s = &m->slots[i];
      if (s->state == SLOT_BACKOFF && now >= s->respawn_at_ms) {
        s->state = SLOT_RUNNING;
        log_info("worker %d: respawning after backoff", s->index);
        slot_start(m, s);
      }
    }
  start_tick(m, now);
  reload_tick(m, now);
  recycle_tick(m, now);
  router_tick(m);
  if (master_stopping(m) && m->procs == NULL)
    uv_stop(m->loop);
}

/* Workers under [aio] user reopen the log by path as that user: the file
 * the master just created as root must be theirs to open, as nginx does
 * with its logs. (They hold it open already, so this gives them nothing
 * they could not write before.) */
static void log_give_to_workers(const struct settings *s) {
  if (s->drop_privileges && s->log_file && geteuid() == 0 &&
      fchown(log_fd(), s->uid, (gid_t)-1) < 0)
    log_warn("cannot give the log file %s to uid %d", s->log_file, (int)s->uid);
}

static void on_watchdog(uv_timer_t *t) {
  (void)t;
  notify_send("WATCHDOG=1");
}

/* While a reload's probe child loads modules the loop does not turn: keep
 * the watchdog fed from the wait itself, or a module that is slow to load
 * would get the whole service killed by systemd. */
static void watchdog_during_wait(void) { notify_send("WATCHDOG=1"); }

/* ---- signals ---------------------------------------------------------------
 */

static void on_signal(uv_signal_t *h, int signum) {
  struct master *m = h->data;
  switch (signum) {
  case SIGCHLD:
    reap(m);
    if (master_stopping(m) && m->procs == NULL)
      uv_stop(m->loop);
    break;
  case SIGTERM:
  case SIGINT:
    master_begin_stop(m, MASTER_STOPPING);
    break;
  case SIGQUIT:
    master_begin_stop(m, MASTER_QUITTING);
    break;
  case SIGHUP: {
    char *why = NULL;
    if (reload_start(m, &why) < 0 && why)
      log_warnx("SIGHUP: not reloaded: %s", why);
    free(why);
    break;
  }
  case SIGUSR1:
    log_info("SIGUSR1: reopening log files");
    if (log_reopen() < 0)
      log_warn("cannot reopen the log file");
    else
      log_give_to_workers(&m->gen->app.s);
    for (struct wproc *p = m->procs; p; p = p->next) {
      json_t *msg = bus_msg(BUS_REOPEN);
      master_send(p, msg);
      json_decref(msg);
    }
    break;
  case SIGTTIN:
    if (m->next_gen)
      log_warnx("SIGTTIN ignored during a reload");
    else if (!master_stopping(m))
      master_scale(m, m->nslots + 1);
    break;
  case SIGTTOU:
    if (m->next_gen)
      log_warnx("SIGTTOU ignored during a reload");
    else if (!master_stopping(m)) /* at the fewest, master_scale says so */
      master_scale(m, m->nslots - 1);
    break;
  default:
    break;
  }
}

static const int master_signals[] = {SIGCHLD, SIGTERM, SIGINT,  SIGQUIT, SIGHUP,
                                     SIGUSR1, SIGTTIN, SIGTTOU, SIGUSR2};
/* One uv_signal_t in struct master for each: a signal added here and not
 * there would be started past the end of the array. */
_Static_assert(UTIL_ARRAY_LEN(master_signals) ==
                   UTIL_ARRAY_LEN(((struct master *)0)->sig),
               "struct master needs one sig[] handle per master_signals[]");

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

int master_run(struct app *app, const char *config_path, int ready_fd,
               int *daemon_fd) {
  static uv_loop_t loop;
  struct master mm, *m = &mm;
  memset(m, 0, sizeof(*m));
  m->loop = &loop;
  m->config_path = config_path;
  m->ready_fd = ready_fd;
  m->daemon_fd = daemon_fd;
  m->next_id = 1;
  if (uv_loop_init(&loop)) {
    log_error("cannot create the event loop");
    return EXIT_OSERR;
  }
  m->start_ms = uv_now(m->loop);
  m->gen = generation_new(app, 1);
  if (m->gen == NULL) {
    log_error("out of memory");
    return EXIT_OSERR;
  }
  m->gen->refs = 1;
  log_info("aio %s starting: %s, %d worker%s", AIO_VERSION, config_path,
           m->gen->app.s.workers, m->gen->app.s.workers == 1 ? "" : "s");
  proctitle_set("aio: master (generation 1) %s", config_path);
  signal(SIGPIPE, SIG_IGN);
  for (size_t i = 0; i < UTIL_ARRAY_LEN(master_signals); i++) {
    uv_signal_init(m->loop, &m->sig[i]);
    m->sig[i].data = m;
    uv_signal_start(&m->sig[i], on_signal, master_signals[i]);
  }
  notify_init();
  activation_init(&m->act);
  /* First, as a second master of this configuration must not bind or
   * fork anything. */
  int rc = control_open(m);
  if (rc) {
    m->exit_code = rc == -EADDRINUSE ? EXIT_UNAVAILABLE
                   : rc == -EPERM    ? EXIT_NOPERM
                                     : EXIT_OSERR;
    goto out;
  }
  if (cluster_start(m)) {
    log_error("cannot start the cluster link: out of memory");
    m->exit_code = 71;
    goto out;
  }
  rc = metrics_open(m);
  if (rc) {
    m->exit_code = rc == -EADDRINUSE || rc == -EADDRNOTAVAIL ? 69 : 71;
    goto out;
  }
  /* Bind everything before the first fork: a bad address fails the start
   * with no worker ever existing. */
  m->nslots = (size_t)m->gen->app.s.workers;
  for (size_t i = 0; i < m->nslots && rc == 0; i++) {
    if (master_slot_get(m, i) == NULL)
      rc = -ENOMEM;
    else
      rc = generation_bind_slot(m->gen, i, NULL, &m->act);
  }
  if (rc) {
    m->exit_code = rc == -EADDRINUSE ? EXIT_UNAVAILABLE : EXIT_OSERR;
    goto out;
  }
  for (size_t i = 0; i < m->gen->app.s.nservers; i++) {
    char where[160];
    sockets_describe(&m->gen->app.s.servers[i], m->gen->ports[i], where,
                     sizeof(where));
    log_info("[server:%s] listening on %s (%s)", m->gen->app.s.servers[i].name,
             where, m->gen->app.s.servers[i].handler.text);
  }
  router_emit(m, "aio-starting", NULL);
  for (size_t i = 0; i < m->nslots; i++) {
    m->slots[i].state = SLOT_RUNNING;
    slot_start(m, &m->slots[i]);
  }
  if (m->nslots == 0)
    announce_ready(m);
  if (sched_start(m))
    log_error("cannot start the schedules: out of memory");
  uint64_t wd = notify_watchdog_usec();
  uv_timer_init(m->loop, &m->watchdog);
  if (wd) {
    uv_timer_start(&m->watchdog, on_watchdog, wd / 2000, wd / 2000);
    app_wait_hook = watchdog_during_wait;
  }
  uv_prepare_init(m->loop, &m->bus_flush);
  m->bus_flush.data = m;
  uv_prepare_start(&m->bus_flush, on_bus_flush);
  uv_unref((uv_handle_t *)&m->bus_flush);
  uv_timer_init(m->loop, &m->tick);
  m->tick.data = m;
  uv_timer_start(&m->tick, on_tick, TICK_MS, TICK_MS);
  uv_run(m->loop, UV_RUN_DEFAULT);
  log_info("stopped");
out:
  /* Kill and reap anything left (only on a failed start or a bug). */
  for (struct wproc *p = m->procs; p; p = p->next)
    kill(p->pid, SIGKILL);
  while (m->procs) {
    int status;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0 && errno != EINTR)
      break;
    struct wproc *p = m->procs;
    while (p && p->pid != pid)
      p = p->next;
    if (p)
      proc_unlink_free(m, p);
  }
  control_close(m);
  cluster_close(m);
  metrics_close(m);
  uv_walk(m->loop, close_walk, NULL);
  uv_run(m->loop, UV_RUN_DEFAULT);
  uv_loop_close(m->loop);
  if (m->ready_fd >= 0)
    close(m->ready_fd);
  m->gen->refs--;
  generation_free(m->gen, NULL);
  activation_close(&m->act);
  for (size_t i = 0; i < m->slots_cap; i++)
    json_decref(m->slots[i].backlog);
  json_decref(m->backlog);
  free(m->slots);
  free(m->scheds);
  return m->exit_code;
}
