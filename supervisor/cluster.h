/*
 * cluster.h - the master's link to the cluster's Redis (docs/cluster.md):
 * one asynchronous hiredis connection on the master's own loop, with
 * reconnects, timeouts and a bounded queue of outstanding commands; the
 * node's announcement and the peers it sees; claims of once-per-cluster
 * schedule occurrences. Workers never talk to Redis; nothing here blocks.
 */
#ifndef AIO_SUPERVISOR_CLUSTER_H
#define AIO_SUPERVISOR_CLUSTER_H

#include <jansson.h>
#include <stdint.h>

struct master;

/* How a claim ended. */
enum cluster_claim {
  CLUSTER_WON,    /* this node runs the occurrence */
  CLUSTER_LOST,   /* another node has it */
  CLUSTER_FAILED, /* no answer (Redis unreachable, timeout, error) */
  CLUSTER_CLOSED  /* the master is going away: do nothing */
};

typedef void cluster_claim_fn(struct master *m, void *arg,
                              enum cluster_claim result);

/* Connect when [aio] cluster is set (else nothing). 0 or -ENOMEM. */
int cluster_start(struct master *m);
/* The master begins to stop: the node says it is leaving. */
void cluster_leave(struct master *m);
/* Before the loop's handles are closed: drop the connection, close the
 * handles (freed by the loop's last run). */
void cluster_close(struct master *m);

/* Is a cluster configured, and is the link up now? */
int cluster_enabled(const struct master *m);
int cluster_connected(const struct master *m);
/* The node name this master claims and announces as (the one it started
 * with: a reload does not rename a node), or [aio] node without a
 * cluster. Borrowed. */
const char *cluster_node(const struct master *m);
/* The state's name: "off", "connecting", "connected" or "down". */
const char *cluster_state_name(const struct master *m);

/* Claim occurrence of schedule name for this node (SET key node NX PX
 * ttl_ms). fn runs exactly once, later, unless this returns an error
 * (-ENOTCONN, -ENOBUFS: the queue is full; counted as refused). */
int cluster_claim(struct master *m, const char *name, long long occurrence,
                  uint64_t ttl_ms, cluster_claim_fn *fn, void *arg);
/* sched.c took the fallback for an occurrence it could not claim. */
void cluster_fallback_taken(struct master *m, int ran_locally);

/* ---- for cluster signals (cluster_signals.c) ---- */
struct redisReply;
struct redisAsyncContext;
/* A reply (NULL: none: the link went away) to a cluster_command. */
typedef void cluster_reply_fn(struct master *m, struct redisReply *r,
                              void *arg);
/* Send a command on the link (within its bounded queue, with its deadline).
 * fn runs exactly once, later, unless this returns an error (-ENOTCONN,
 * -ENOBUFS, -ENOMEM; counted as refused). fn may be NULL. */
int cluster_command(struct master *m, cluster_reply_fn *fn, void *arg, int argc,
                    const char **argv, const size_t *len);
/* Bytes a bulk sender may still queue on the link now (it leaves half of
 * the queue to the rest); 0 while down. */
size_t cluster_room(const struct master *m);
/* A second connection to the same Redis (the address the link reached),
 * attached to the loop, with AUTH and SELECT queued with hs (hiredis's
 * callback type) and priv. NULL with why said while the link is down or on
 * failure. */
struct redisAsyncContext *
cluster_open_extra(struct master *m,
                   void (*hs)(struct redisAsyncContext *, void *, void *),
                   void *priv, char *why, size_t n);
uint64_t cluster_timeout_ms(const struct master *m);
/* The key prefix the link started with. Borrowed. */
const char *cluster_prefix(const struct master *m);
/* The live nodes at the last read: [{"node": ...}, ...], or NULL. */
const json_t *cluster_peers(const struct master *m);

/* For `aio status`: {"state": "off"} or the whole picture. Returns new. */
json_t *cluster_status(const struct master *m);

#endif
