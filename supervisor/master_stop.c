/*
 * master_stop.c - the master's verbs that end worker processes (master.h):
 * drain one (stop, graceful or not), kill one and say why, and begin the
 * master's shutdown. With master.c, the only code that changes process
 * state and the master's phase.
 */
#include <signal.h>

#include "cluster.h"
#include "log.h"
#include "master.h"
#include "upgrade.h"

/* What an immediate stop (QUIT) waits before SIGKILL. */
#define QUIT_GRACE_MS 2000

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
    channel_send(&p->ch, msg);
  /* The bus says it; the signal covers a worker whose bus is stuck. */
  if (!graceful)
    kill(p->pid, SIGQUIT);
  else if (channel_send(&p->ch, msg) != 0)
    kill(p->pid, SIGTERM);
  json_decref(msg);
}

void master_proc_kill(struct master *m, struct wproc *p, enum proc_kill why) {
  (void)m;
  switch (why) {
  case PROC_KILL_DISCARD:
    p->state = WPROC_DRAINING; /* its exit is expected: no crash accounting */
    break;
  case PROC_KILL_SILENT:
    p->silenced = 1;
    p->last_hb_ms = UINT64_MAX; /* in the future: killed once */
    break;
  case PROC_KILL_LATE:
    p->stop_deadline_ms = UINT64_MAX;
    break;
  case PROC_KILL_BAD:
    break;
  }
  kill(p->pid, SIGKILL);
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
  upgrade_stop(m, graceful);
}
