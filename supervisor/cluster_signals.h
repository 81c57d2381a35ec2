/*
 * cluster_signals.h - cluster listeners (docs/cluster.md, Cluster
 * signals): the master hands an emit of a signal with `cluster` listeners
 * to Redis, reads back what this node is to run on a second connection,
 * and delivers it to its workers through the router's crash-safe
 * deliveries, acknowledging it in Redis once a worker ran it.
 *
 * Once per emit: a stream per signal, <prefix>:sig:<signal>, read by every
 * node in one consumer group, so each entry goes to one node; entries left
 * unacknowledged past cluster_claim_timeout are claimed by another node,
 * and after cluster_max_deliveries moved to <prefix>:dead. Broadcast: a
 * stream per node, <prefix>:inbox:<node>, that the emitter adds to for
 * every live node it sees. While Redis is down, emits wait in a bounded
 * queue (cluster_queue, cluster_queue_bytes; the oldest are dropped and
 * counted). Nothing here blocks.
 */
#ifndef AIO_SUPERVISOR_CLUSTER_SIGNALS_H
#define AIO_SUPERVISOR_CLUSTER_SIGNALS_H

#include <jansson.h>

#include "bus.h"

struct master;
struct csig_entry;
struct bus_span;

/* An emit of signal, which has cluster listeners of the kinds said: once
 * (`cluster`) and/or broadcast (`broadcast cluster`). Its data is the
 * JSON text raw when given, else data. Queued; never blocks. */
void csig_emit(struct master *m, const char *signal, int once, int broadcast,
               const json_t *data, const struct bus_span *raw);

/* cluster.c: the link is up (handshake answered) / lost; its tick; before
 * the master goes, after the link's outstanding callbacks ran. */
void csig_link_up(struct master *m);
void csig_link_down(struct master *m);
void csig_tick(struct master *m);
void csig_close(struct master *m);

/* router.c: a worker ran the listeners of the entry e (acknowledged in
 * Redis); or it will not run them here (in hand when its worker died, or
 * no worker to run them): left pending in Redis, claimed again after
 * cluster_claim_timeout. e may be NULL (nothing to do); freed by both. */
void csig_done(struct master *m, struct csig_entry *e);
void csig_abandon(struct master *m, struct csig_entry *e);

/* For `aio status --json` (cluster.signals) and metrics. Returns new. */
json_t *csig_status(const struct master *m);

/* router.c, for this file: deliver an entry of signal to one ready worker's
 * `cluster` listeners (0), or -EAGAIN with none ready (nothing kept);
 * deliver to every slot's `broadcast cluster` listeners; which cluster
 * kinds the current generation has for signal (bit 0 once, bit 1
 * broadcast); whether a worker is ready to take entries. The data is
 * raw (its checked JSON text, copied into the deliver frame as it is)
 * when raw is not NULL, else data. */
int router_cluster_deliver(struct master *m, const char *signal,
                           const json_t *data, const struct bus_span *raw,
                           struct csig_entry *cref);
void router_cluster_broadcast(struct master *m, const char *signal,
                              const json_t *data, const struct bus_span *raw);
int router_cluster_kinds(struct master *m, const char *signal);
int router_cluster_ready(struct master *m);

#endif
