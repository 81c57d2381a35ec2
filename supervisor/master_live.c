/*
 * master_live.c - the master's verbs for a worker's liveness (master.h):
 * ready (and the master ready with it: READY=1, --ready-fd, aio-started),
 * alive, and the tick that judges them (a heartbeat silent past timeout,
 * a drain past its deadline, a slot's backoff over, the start's
 * deadline). With master.c (slots, spawned, exited, scaling), the only
 * code that changes slot and process state and the master's phase.
 */
#include <errno.h>
#include <unistd.h>

#include "cluster.h"
#include "log.h"
#include "master.h"
#include "master_int.h"
#include "upgrade.h"

void master_announce_ready(struct master *m) {
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
  upgrade_served(m);
}

int master_proc_ready(struct master *m, struct wproc *p) {
  /* Told to stop while it started (a shutdown, a cancelled reload): a
   * late ready is no lie, but it changes nothing. */
  if (p->state == WPROC_DRAINING)
    return 0;
  if (p->state != WPROC_STARTING)
    return -EPROTO;
  p->last_hb_ms = uv_now(m->loop);
  /* The backlog first: it holds aio-starting, and becoming ready may emit
   * aio-started, which must not overtake it. */
  router_worker_ready(m, p);
  p->state = WPROC_READY;
  p->ready_ms = uv_now(m->loop);
  log_info("worker %d (pid %d) ready in %llu ms", p->slot, (int)p->pid,
           (unsigned long long)(p->ready_ms - p->started_ms));
  if (p->g == m->next_gen) {
    reload_worker_ready(m, p);
    return 0;
  }
  if (recycle_worker_ready(m, p))
    return 0;
  if (m->unserved && p->g == m->gen)
    master_served_again(m, p);
  master_announce_ready(m);
  return 0;
}

void master_proc_alive(struct master *m, struct wproc *p, long conns) {
  p->last_hb_ms = uv_now(m->loop);
  p->conns = conns;
}

int master_job_done(struct master *m, struct wproc *p, json_t *msg) {
  return sched_done(m, p, msg);
}

void master_waited(struct master *m) {
  uv_update_time(m->loop);
  for (struct wproc *p = m->procs; p; p = p->next)
    if (p->last_hb_ms < UINT64_MAX / 2)
      p->last_hb_ms = uv_now(m->loop);
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

/* ---- the tick: liveness, backoff, deadlines ---------------------------- */

void master_on_tick(uv_timer_t *t) {
  struct master *m = t->data;
  uint64_t now = uv_now(m->loop);
  uint64_t timeout = (uint64_t)(m->gen->app.s.timeout * 1000);
  for (struct wproc *p = m->procs; p; p = p->next) {
    if (p->state == WPROC_DRAINING) {
      if (now >= p->stop_deadline_ms) {
        log_warnx("worker %d (pid %d) still running after the graceful "
                  "timeout; killing it",
                  p->slot, (int)p->pid);
        master_proc_kill(m, p, PROC_KILL_LATE);
      }
    } else if (timeout && p->state != WPROC_DEAD && now > p->last_hb_ms &&
               now - p->last_hb_ms > timeout) {
      /* A loop that turns is alive, however slowly its heartbeats come
       * through; one that does not is hung (docs/bus.md, Liveness). */
      char why[512];
      if (!liveness_hung(p, timeout, why, sizeof(why)))
        continue;
      log_error("worker %d (pid %d) silent for %llu ms (timeout %.1f s), %s: "
                "killing it",
                p->slot, (int)p->pid, (unsigned long long)(now - p->last_hb_ms),
                m->gen->app.s.timeout, why);
      master_proc_kill(m, p, PROC_KILL_SILENT);
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
  upgrade_tick(m, now);
  router_tick(m);
  if (master_stopping(m) && m->procs == NULL && !upgrade_elders(m))
    uv_stop(m->loop);
}
