/*
 * router_int.h - what router.c (routing emits to deliveries, their bounds
 * and acknowledgements) shares with router_handover.c (what a worker's
 * exit and a worker's start hand over), and nothing else calls. Both
 * write only the bus's bookkeeping (struct route_proc, route_slot,
 * route_master in master.h).
 */
#ifndef AIO_SUPERVISOR_ROUTER_INT_H
#define AIO_SUPERVISOR_ROUTER_INT_H

#include "bus_codec.h"
#include "master.h"

struct csig_entry;
struct own_emit;

/* What one generation's index says of the signal being routed: looked up
 * once per signal and generation, not once per receiver. */
struct sig_look {
  const char *signal;
  const struct generation *g; /* NULL: not looked up yet */
  const struct bus_index_sig *e;
};

/* Where deliver frames are built (router.c): borrowed until the next. */
extern struct bus_out router_scratch;

/* Past this a burst is worth giving back to the kernel when it ends. */
#define TRIM_AFTER (4 * 1024 * 1024)

/* ---- router_queue.c ---- */
/* to's delivery of own kept emit in (index entry e, listeners idx[0, n)),
 * back to it by its seq, alone or joining the run of them last in its
 * channel. The bytes kept, 0 when none (logged). */
size_t router_deliver_ref(struct master *m, struct wproc *to,
                          const struct bus_in *in,
                          const struct bus_index_sig *e, const size_t *idx,
                          size_t n, enum bus_kind kind);
/* "delivered": the first n deliveries sent to p are finished. 0, or
 * -EBADMSG for a lie. */
int router_ack_upto(struct wproc *p, json_int_t n);
/* The busy word in every worker's mark: broadcast emits refused or not. */
void router_set_busy(struct master *m, int busy);
/* After a burst, once nothing large is queued: memory back to the kernel. */
void router_maybe_trim(struct master *m);
void router_delivery_free(struct delivery *d);
/* Queue deliver frame (borrowed) for p, kept until acknowledged. */
void router_send_delivery(struct wproc *p, const char *frame, size_t len,
                          json_int_t id, enum bus_kind kind,
                          struct csig_entry *cref);
/* A ready worker of the current generation other than not, or NULL. */
struct wproc *router_any_ready(struct master *m, const struct wproc *except);
/* Keep a frame (borrowed: copied) for a worker that does not exist yet. */
void router_backlog_add(json_t **backlog, const char *frame, size_t len,
                        json_int_t id, unsigned gen, enum bus_kind kind);
/* g's listeners of one kind for the signal, in idx. How many. */
size_t router_match(const struct generation *g, struct sig_look *l,
                    enum bus_kind kind, size_t *idx);
/* Deliver to to's listeners of one kind (to NULL: keep it in backlog).
 * The bytes queued. */
size_t router_deliver_kind(struct master *m, struct wproc *to, json_t **backlog,
                           struct sig_look *l, const json_t *data,
                           const struct bus_span *raw, enum bus_kind kind,
                           struct csig_entry *cref, const struct own_emit *own);
/* A slot's backlog grew or shrank: its bound, with the same busy word. */
void router_slot_check(struct master *m, struct slot *sl);
/* One frame a dead worker left in its channel. */
int router_dead_line(void *arg, const char *frame, size_t len);

#endif
