/*
 * master_status.c - what `aio status` says of the master: its phase, the
 * slots, and what the service lacks. Reads the state master.c keeps.
 */
#include "master.h"

#include <stdio.h>

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
