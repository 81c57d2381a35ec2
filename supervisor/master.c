/*
 * master.c - the master's state machine: with master_live.c (ready,
 * alive, the tick), master_gen.c (a slot's successor, a generation
 * begun, committed or aborted) and master_stop.c (drain, kill, shutdown),
 * the only code that changes the state of a slot or a worker process, or
 * the master's phase, as nginx's ngx_process_cycle.c keeps every
 * transition in one place. This file's verbs (master.h) are spawned and
 * exited (reaping, and respawn with backoff or a crash loop), and
 * scaling.
 *
 * The supervisor is a star around this file. The other files decide and
 * call these verbs, and master.c calls them back when their events come:
 * reload.c (what a reload does next), router.c (a worker's frames and the
 * signals' deliveries), sched.c (which worker runs a job), control.c (the
 * operator's requests), master_run.c (the loop and the signals). Besides
 * calls into master.c, the calls between those form no loop: control.c and
 * metrics*.c read router.c's and sched.c's status, reload.c and control.c
 * emit signals through router_emit, and all of them use the leaves:
 * channel.c (a worker's pipe), generation.c, notify.c, cluster.c. Some
 * pairs outside them do call each other: router.c and cluster_signals*.c
 * (a cluster signal goes out on the link, and what comes in is routed),
 * cluster.c and cluster_signals.c (the link's tick drives the signals,
 * which send on the link), control.c and status.c (the reply to `aio
 * status` includes the control socket's own counters), and control.c and
 * upgrade_exec.c (`aio upgrade` comes in on the control socket, which the
 * new image is handed).
 */
#define _GNU_SOURCE
#include "master.h"
#include "master_int.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "counters.h"
#include "generation.h"
#include "log.h"
#include "output.h"
#include "proctitle.h"
#include "sockets.h"
#include "upgrade.h"
#include "util.h"

/* Backoff between respawns of a slot that keeps crashing (backoff_ms). */
#define BACKOFF_MAX_MS 10000
/* The last slot left trying after a crash loop, with no worker serving:
 * from 1 s, doubling, up to this. */
#define LONELY_BACKOFF_MIN_MS 1000
#define LONELY_BACKOFF_MAX_MS 30000

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

int slot_start(struct master *m, struct slot *s) {
  int err = generation_bind_slot(m->gen, (size_t)s->index, NULL, &m->act);
  if (err == 0)
    err = master_spawn(m, m->gen, s, &s->cur);
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
void master_start_failed(struct master *m, const char *why) {
  if (upgrade_start_failed(m, why))
    return;
  log_error("start failed: %s; nothing is served: stopping (exit %d)", why,
            EXIT_SOFTWARE);
  m->exit_code = EXIT_SOFTWARE;
  master_begin_stop(m, MASTER_QUITTING);
  notify_send("STATUS=start failed: %s", why);
}

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
    master_announce_ready(m); /* the others may be all the start waited for */
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
void master_served_again(struct master *m, struct wproc *p) {
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

static void on_bus_closed(void *arg) {
  struct wproc *p = arg;
  router_proc_close(p);
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
  channel_close(&p->ch);
}

static int on_bus_frame(void *arg, const char *frame, size_t len) {
  return router_line(arg, frame, len);
}

static void on_bus_error(void *arg, int err) {
  struct wproc *p = arg;
  /* What it had pending goes to other workers when it is reaped. */
  log_error("worker %d pid %d sent a bad bus frame (%s); killing it", p->slot,
            (int)p->pid, strerror(-err < 0 ? 0 : -err));
  master_proc_kill(p->m, p, PROC_KILL_BAD);
}

static const struct channel_ops bus_ops = {
    .frame = on_bus_frame, .error = on_bus_error, .closed = on_bus_closed};

/* Spawned: p (from spawn_worker, its bus end fd) is a process of g for
 * slot s, starting. */
static void proc_spawned(struct master *m, struct generation *g, struct slot *s,
                         struct wproc *p, int fd) {
  p->m = m;
  p->g = g;
  g->refs++;
  p->slot = s->index;
  p->state = WPROC_STARTING;
  p->started_ms = p->last_hb_ms = uv_now(m->loop);
  p->restarts = s->restarts;
  channel_open(&p->ch, m->loop, fd, &bus_ops, p);
  p->next = m->procs;
  m->procs = p;
  if (p->cpu >= 0)
    log_info("worker %d started (pid %d, generation %u, CPU %d)", s->index,
             (int)p->pid, g->id, p->cpu);
  else
    log_info("worker %d started (pid %d, generation %u)", s->index, (int)p->pid,
             g->id);
}

int master_spawn(struct master *m, struct generation *g, struct slot *s,
                 struct wproc **out) {
  int fd;
  int err = spawn_worker(m, g, s, out, &fd);
  if (err == 0)
    proc_spawned(m, g, s, *out, fd);
  return err;
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
  struct slot *s = (size_t)p->slot < m->slots_cap ? &m->slots[p->slot] : NULL;
  if (s && s->next == p)
    s->next = NULL;
  reload_worker_exited(m, p, how);
  recycle_worker_exited(m, p, how);
  queues_worker_exited(p);
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

/* Before the loop sleeps: every worker's frames of this iteration. */
void master_on_bus_flush(uv_prepare_t *h) {
  struct master *m = h->data;
  for (struct wproc *p = m->procs; p; p = p->next) {
    queues_sample(p);
    channel_flush(&p->ch);
  }
}

void master_reap(struct master *m) {
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
    else
      upgrade_reaped(m, pid, status);
    /* else: a probe child or an orphan we adopted as PID 1: reaped. */
  }
}

void master_start_slots(struct master *m) {
  for (size_t i = 0; i < m->nslots; i++) {
    m->slots[i].state = SLOT_RUNNING;
    slot_start(m, &m->slots[i]);
  }
  if (m->nslots == 0)
    master_announce_ready(m);
}

void master_kill_all(struct master *m) {
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
}

/* ---- scaling ------------------------------------------------------------ */

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
