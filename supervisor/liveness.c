/*
 * liveness.c - a worker whose heartbeat is late: hung, or only slow? Its
 * loop's last turn and the callback it is in, from its shared mark
 * (docs/bus.md, Liveness), say which, and what for the kill log.
 */
#include <stdio.h>

#include "master.h"

static const char *const proto_cb_names[BUS_PROTO_COUNT] = {
#define PROTO_CB_NAME(e, s) s,
    BUS_PROTO_CBS(PROTO_CB_NAME)
#undef PROTO_CB_NAME
};

int liveness_hung(const struct wproc *p, uint64_t timeout_ms, char *why,
                  size_t n) {
  const struct bus_mark *mk = p->mark;
  uint64_t now = bus_mono_ms(), turn = mk ? mk->turn_ms : 0;
  if (turn == 0) { /* not serving yet: the heartbeat alone says */
    snprintf(why, n, "its loop never turned");
    return 1;
  }
  if (turn <= now && now - turn <= timeout_ms)
    return 0;
  uint64_t since = mk->cb_since;
  uint32_t kind = mk->cb_kind, idx = mk->cb_index;
  const struct settings *s = &p->g->app.s;
  unsigned long long held =
      since && since <= now ? (unsigned long long)(now - since) : 0;
  /* Numbers from the worker, checked before they index anything. */
  if (held && kind == BUS_CB_LISTENER && idx < s->nlisteners)
    snprintf(why, n, "stuck in listener %s for signal '%s' for %llu ms",
             s->listeners[idx].fn.text, s->listeners[idx].signal, held);
  else if (held && kind == BUS_CB_JOB && idx / BUS_JOB_PARTS < s->nschedules) {
    const struct schedule_conf *sc = &s->schedules[idx / BUS_JOB_PARTS];
    unsigned part = idx % BUS_JOB_PARTS;
    snprintf(why, n, "stuck in job %s (%s) for %llu ms", sc->name,
             part == BUS_JOB_FUNC ? sc->func.text
             : part == BUS_JOB_CB ? sc->cb.text
                                  : sc->err.text,
             held);
  } else if (held && kind == BUS_CB_PROTOCOL &&
             idx / BUS_PROTO_COUNT < s->nservers)
    snprintf(why, n, "stuck in %s of server %s (%s) for %llu ms",
             proto_cb_names[idx % BUS_PROTO_COUNT],
             s->servers[idx / BUS_PROTO_COUNT].name,
             s->servers[idx / BUS_PROTO_COUNT].handler.text, held);
  else if (held && kind == BUS_CB_SOON)
    snprintf(why, n, "stuck in a function given to aio_call_soon() for %llu ms",
             held);
  else
    snprintf(why, n,
             "its loop has not turned for %llu ms (a module's own libuv "
             "callback holds it)",
             (unsigned long long)(now - turn));
  return 1;
}
