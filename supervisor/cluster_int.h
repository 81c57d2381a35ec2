/*
 * cluster_int.h - what the parts of the cluster link share: cluster.c
 * (commands and their deadlines, the tick, the master's hooks),
 * cluster_conn.c (the connection to Redis: resolving, connecting, the
 * handshake, backoff) and cluster_nodes.c
 * (what goes over it for the nodes: the announcement and the peers, the
 * schedule claims, and the status).
 */
#ifndef AIO_SUPERVISOR_CLUSTER_INT_H
#define AIO_SUPERVISOR_CLUSTER_INT_H

#include <arpa/inet.h>
#include <stdint.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cluster.h"
#include "master.h"

#define CLUSTER_MAX_OUTSTANDING 1024
#define CLUSTER_MAX_BYTES (1024 * 1024)
/* The node key lives this long unless refreshed; it is refreshed every
 * ANNOUNCE_MS, so a node is listed for at most NODE_TTL_MS after it died. */
#define NODE_TTL_MS 15000
#define ANNOUNCE_MS 3000
#define MAX_PEERS 256
/* A lost link is retried after this, doubled at each failure up to max. */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 10000

/* X(enum, name) */
#define CLUSTER_STATES(X)                                                      \
  X(OFF, "off")                                                                \
  X(CONNECTING, "connecting")                                                  \
  X(CONNECTED, "connected")                                                    \
  X(DOWN, "down")

enum cstate {
#define CS_ENUM(e, s) CS_##e,
  CLUSTER_STATES(CS_ENUM)
#undef CS_ENUM
};

extern const char *const cluster_state_names[];

struct cluster;
/* A reply (NULL: none came: the connection went away) for arg. */
typedef void reply_fn(struct cluster *c, redisReply *r, void *arg);

/* One command sent and not answered yet, oldest first in c->cmds. */
struct ccmd {
  struct cluster *c;
  uint64_t sent_ms;
  size_t bytes;
  reply_fn *fn;
  void *arg;
  struct ccmd *prev, *next;
};

struct cluster {
  struct master *m;
  /* What it was started with: a reload does not move a live link. */
  struct redis_url url;      /* owned copy */
  char *node, *prefix;       /* owned */
  char where[512];           /* the URL without the password, for logs */
  char ip[INET6_ADDRSTRLEN]; /* the address of the current attempt */
  uint64_t timeout_ms;

  enum cstate state;
  redisAsyncContext *ac; /* the current connection, or NULL */
  int ready;             /* handshake answered on ac */
  uint64_t attempt_ms;   /* when the current attempt began */
  uint64_t retry_at_ms;  /* next attempt (state DOWN, ac NULL), or 0 */
  unsigned backoff_ms;
  uint64_t rng;
  uv_getaddrinfo_t gai;
  int resolving;
  uv_timer_t tick;
  uint64_t next_announce_ms;
  int leaving, closing;
  int handles; /* open handles and requests: freed at 0 after closing */

  struct ccmd *cmds, *cmds_last;
  size_t ncmds, bytes;

  double since;      /* wall clock of the last state change */
  double down_since; /* wall clock the link was lost, 0 when up */
  double started;    /* wall clock of the master's start */
  char last_error[256];
  json_t *peers; /* [{node, ...announcement, seen}] from the last read */
  unsigned announced_gen; /* the generation whose settings were compared */

  /* Counters, since the start. */
  uint64_t connects, losses, attempts, refused, timeouts, errors;
  uint64_t won, lost, failed, fallback_skip, fallback_local;
};

/* Wall clock, seconds since the epoch. */
double cluster_wall_now(void);
static inline uint64_t cluster_mono_ms(const struct cluster *c) {
  return uv_now(c->m->loop);
}
/* cluster.c: send argv (len: each one's length) / a command of argc C
 * strings, fn called with the reply (NULL when the link went); handshake:
 * it is one of the handshake's commands. 0, or -ENOTCONN / -ENOBUFS
 * (counted as refused; fn is not called). */
int cluster_send_argv(struct cluster *c, int handshake, reply_fn *fn, void *arg,
                      int argc, const char **argv, const size_t *len);
int cluster_send_cmd(struct cluster *c, int handshake, reply_fn *fn, void *arg,
                     int argc, const char **argv);
void cluster_ignore_reply(struct cluster *c, redisReply *r, void *arg);
/* cluster_conn.c: start an attempt to connect (resolving first when the
 * host is a name); drop the current connection ourselves (a timeout, a
 * refused handshake), its outstanding commands called back with no reply
 * now, and retry after the backoff; a new context to ip (NULL: the unix
 * socket) with the adapter on the master's loop, or NULL with why set. */
void cluster_attempt(struct cluster *c);
void cluster_drop(struct cluster *c, const char *why);
redisAsyncContext *cluster_open_ctx(struct cluster *c, const char *ip,
                                    char *why, size_t n);
/* cluster_nodes.c: say this node is alive and read who else is. */
void cluster_announce(struct cluster *c);

#endif
