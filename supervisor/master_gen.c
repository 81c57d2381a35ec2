/*
 * master_gen.c - the master's verbs for generations and successors
 * (master.h), which reload.c calls as it decides: spawn a slot's worker
 * of the new generation, promote it or discard it, and begin, commit or
 * abort the generation. With master.c, the only code that changes slot
 * and process state and the master's phase.
 */
#include <errno.h>

#include "generation.h"
#include "log.h"
#include "master.h"
#include "proctitle.h"

int master_slot_spawn_next(struct master *m, struct generation *g, size_t k) {
  struct slot *s = master_slot_get(m, k);
  if (s == NULL)
    return -ENOMEM;
  return master_spawn(m, g, s, &s->next);
}

/* Slot s's successor (or none) becomes its worker; the one it replaces
 * drains, counted as replaced for why. wanted: the slot is still one of
 * the wanted ones (else it is retired). */
static void slot_promote(struct master *m, struct slot *s,
                         enum restart_reason why, int wanted) {
  struct wproc *was = s->cur;
  s->cur = s->next;
  s->next = NULL;
  s->ncrash = 0;
  s->state = wanted ? SLOT_RUNNING : SLOT_IDLE;
  if (was) {
    s->replaced[why]++;
    master_proc_stop(m, was, 1);
  }
}

void master_slot_promote(struct master *m, size_t k, enum restart_reason why) {
  if (k < m->slots_cap)
    slot_promote(m, &m->slots[k], why, k < m->nslots);
}

void master_slot_discard_next(struct master *m, size_t k) {
  struct wproc *p = k < m->slots_cap ? m->slots[k].next : NULL;
  if (p == NULL)
    return;
  m->slots[k].next = NULL;
  if (p->state != WPROC_DEAD)
    master_proc_kill(m, p, PROC_KILL_DISCARD);
}

void master_gen_begin(struct master *m, struct generation *g,
                      uint64_t deadline_ms) {
  m->next_gen = g;
  m->phase = MASTER_RELOADING;
  m->reload_deadline_ms = deadline_ms;
}

void master_gen_commit(struct master *m) {
  struct generation *old = m->gen, *g = m->next_gen;
  size_t n = (size_t)g->app.s.workers;
  size_t top = m->nslots > n ? m->nslots : n;
  m->gen = g;
  m->next_gen = NULL;
  m->phase = MASTER_SERVING;
  m->nslots = n;
  m->unserved = 0; /* every slot has a ready worker of g */
  for (size_t i = 0; i < top; i++)
    slot_promote(m, &m->slots[i], RESTART_RELOAD, i < n);
  /* Old sockets close with the old generation's last worker. */
  if (--old->refs == 0)
    generation_free(old, m->gen);
  sched_restart(m);
  metrics_reloaded(m);
  m->reloads++;
  proctitle_set("aio: master (generation %u) %s", g->id, m->config_path);
  log_info("reloaded: generation %u, %zu worker%s, in %llu ms", g->id, n,
           n == 1 ? "" : "s",
           (unsigned long long)(uv_now(m->loop) - m->reload_started_ms));
  notify_send("READY=1\nSTATUS=serving generation %u with %zu workers", g->id,
              n);
  control_reload_done(m, 0, NULL);
  json_t *data = json_pack("{s:b,s:i}", "ok", 1, "generation", (int)g->id);
  router_emit(m, "aio-reloaded", data);
  json_decref(data);
}

void master_gen_abort(struct master *m, int code, const char *why,
                      json_t *errors) {
  struct generation *g = m->next_gen;
  if (g) {
    m->next_gen = NULL;
    if (m->phase == MASTER_RELOADING) /* not when a stop abandons it */
      m->phase = MASTER_SERVING;
    for (size_t i = 0; i < m->slots_cap; i++)
      master_slot_discard_next(m, i);
    /* The generation goes when its last worker is reaped. */
    if (--g->refs == 0)
      generation_free(g, m->gen);
  }
  m->reload_failures++;
  log_error("reload failed: %s; still serving generation %u", why, m->gen->id);
  if (!master_stopping(m)) /* systemd heard STOPPING=1 last */
    notify_send("READY=1\nSTATUS=reload failed: %s", why);
  if (errors == NULL) {
    errors = json_array();
    json_array_append_new(errors, json_string(why));
  } else {
    json_incref(errors);
  }
  control_reload_done(m, code, errors);
  json_decref(errors);
  json_t *data = json_pack("{s:b,s:s}", "ok", 0, "error", why);
  router_emit(m, "aio-reloaded", data);
  json_decref(data);
}
