/*
 * cluster.c - the master's one connection to the cluster's Redis, through
 * hiredis's asynchronous API and its libuv adapter on the master's own loop
 * (docs/cluster.md). It never blocks: a host name is resolved with
 * uv_getaddrinfo, connect(2) is non-blocking, and every command has a
 * deadline (cluster_timeout), checked by one timer, so a Redis that accepts
 * the connection and then says nothing costs a reconnect, not a stuck
 * master. A lost connection is retried with capped exponential backoff and
 * jitter; every state change is one log line.
 *
 * The state machine: OFF (no [aio] cluster) | CONNECTING (the first
 * attempt) -> CONNECTED (AUTH, SELECT and PING answered) -> DOWN (lost;
 * retried until CONNECTED again). Commands go out only while CONNECTED,
 * at most CLUSTER_MAX_OUTSTANDING of them (and CLUSTER_MAX_BYTES) waiting
 * for their replies; past that they are refused and counted.
 *
 * This file is the link itself: its commands, its tick and the master's
 * hooks; making the connection (resolving, connecting, the handshake, the
 * backoff) is cluster_conn.c's; what goes over it for the nodes (the
 * announcement and peers, the schedule claims) and the status are
 * cluster_nodes.c's (cluster_int.h).
 */
#define _GNU_SOURCE
#include "cluster.h"
#include "cluster_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cluster_signals.h"
#include "log.h"
#include "master.h"
#include "util.h"

#define CLUSTER_TICK_MS 50

const char *const cluster_state_names[] = {
#define CS_NAME(e, s) s,
    CLUSTER_STATES(CS_NAME)
#undef CS_NAME
};

double cluster_wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- commands ------------------------------------------------------------ */

static void cmd_unlink(struct cluster *c, struct ccmd *q) {
  if (q->prev)
    q->prev->next = q->next;
  else
    c->cmds = q->next;
  if (q->next)
    q->next->prev = q->prev;
  else
    c->cmds_last = q->prev;
  c->ncmds--;
  c->bytes -= q->bytes;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv) {
  (void)ac;
  struct ccmd *q = priv;
  struct cluster *c = q->c;
  cmd_unlink(c, q);
  redisReply *r = reply;
  if (r && r->type == REDIS_REPLY_ERROR)
    c->errors++;
  q->fn(c, r, q->arg);
  free(q);
}

/* Send argv on the connection. handshake: also before it is ready. 0, or
 * -ENOTCONN / -ENOBUFS (counted as refused; fn is not called). */
int cluster_send_argv(struct cluster *c, int handshake, reply_fn *fn, void *arg,
                      int argc, const char **argv, const size_t *len) {
  if (c->ac == NULL || c->closing || (!c->ready && !handshake)) {
    c->refused++;
    return -ENOTCONN;
  }
  size_t bytes = 0;
  for (int i = 0; i < argc; i++)
    bytes += len[i] + 16;
  if (c->ncmds >= CLUSTER_MAX_OUTSTANDING ||
      c->bytes + bytes > CLUSTER_MAX_BYTES) {
    c->refused++;
    return -ENOBUFS;
  }
  struct ccmd *q = calloc(1, sizeof(*q));
  if (q == NULL) {
    c->refused++;
    return -ENOMEM;
  }
  *q = (struct ccmd){.c = c,
                     .sent_ms = cluster_mono_ms(c),
                     .bytes = bytes,
                     .fn = fn,
                     .arg = arg,
                     .prev = c->cmds_last};
  if (redisAsyncCommandArgv(c->ac, on_reply, q, argc, argv, len) != REDIS_OK) {
    free(q);
    c->refused++;
    return -ENOTCONN;
  }
  if (c->cmds_last)
    c->cmds_last->next = q;
  else
    c->cmds = q;
  c->cmds_last = q;
  c->ncmds++;
  c->bytes += bytes;
  return 0;
}

/* The same for NUL-terminated arguments. */
int cluster_send_cmd(struct cluster *c, int handshake, reply_fn *fn, void *arg,
                     int argc, const char **argv) {
  size_t len[8];
  for (int i = 0; i < argc && i < 8; i++)
    len[i] = strlen(argv[i]);
  return cluster_send_argv(c, handshake, fn, arg, argc, argv, len);
}

void cluster_ignore_reply(struct cluster *c, redisReply *r, void *arg) {
  (void)c, (void)r, (void)arg;
}

/* ---- the tick: deadlines, retries, announcements ----------------------- */

static void on_tick(uv_timer_t *t) {
  struct cluster *c = t->data;
  uint64_t now = cluster_mono_ms(c);
  if (c->ac && !c->ready && now - c->attempt_ms > c->timeout_ms) {
    char why[96];
    snprintf(why, sizeof(why), "no answer within %llu ms of connecting",
             (unsigned long long)c->timeout_ms);
    c->timeouts++;
    cluster_drop(c, why);
  } else if (c->ac && c->cmds && now - c->cmds->sent_ms > c->timeout_ms) {
    char why[96];
    snprintf(why, sizeof(why), "no reply within %llu ms (%zu outstanding)",
             (unsigned long long)c->timeout_ms, c->ncmds);
    c->timeouts++;
    cluster_drop(c, why);
  }
  if (c->ac == NULL && !c->resolving && c->retry_at_ms &&
      now >= c->retry_at_ms && !c->leaving)
    cluster_attempt(c);
  if (c->ready && now >= c->next_announce_ms)
    cluster_announce(c);
  csig_tick(c->m);
}

/* ---- the master's hooks ----------------------------------------------- */

int cluster_start(struct master *m) {
  const struct settings *s = &m->gen->app.s;
  if (s->cluster == NULL)
    return 0;
  struct cluster *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return -ENOMEM;
  c->m = m;
  c->url = s->redis;
  c->url.host = s->redis.host ? strdup(s->redis.host) : NULL;
  c->url.path = s->redis.path ? strdup(s->redis.path) : NULL;
  c->url.user = s->redis.user ? strdup(s->redis.user) : NULL;
  c->url.password = s->redis.password ? strdup(s->redis.password) : NULL;
  c->node = strdup(s->node ? s->node : "aio");
  c->prefix = strdup(s->cluster_prefix ? s->cluster_prefix : "aio");
  c->peers = json_array();
  if (!c->node || !c->prefix || !c->peers || (s->redis.host && !c->url.host) ||
      (s->redis.path && !c->url.path)) {
    redis_url_close(&c->url);
    free(c->node);
    free(c->prefix);
    json_decref(c->peers);
    free(c);
    return -ENOMEM;
  }
  redis_url_describe(&c->url, c->where, sizeof(c->where));
  c->timeout_ms = (uint64_t)(s->cluster_timeout * 1000);
  c->backoff_ms = BACKOFF_MIN_MS;
  c->rng = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ULL;
  c->started = cluster_wall_now();
  c->since = c->started;
  c->announced_gen = m->gen->id;
  c->state = CS_CONNECTING;
  uv_timer_init(m->loop, &c->tick);
  c->tick.data = c;
  c->handles++;
  uv_timer_start(&c->tick, on_tick, CLUSTER_TICK_MS, CLUSTER_TICK_MS);
  m->cluster = c;
  log_info("cluster: connecting to %s as node %s (prefix %s)", c->where,
           c->node, c->prefix);
  cluster_attempt(c);
  return 0;
}

void cluster_leave(struct master *m) {
  struct cluster *c = m->cluster;
  if (c == NULL || c->leaving)
    return;
  if (c->ready) {
    char *key = util_asprintf("%s:node:%s", c->prefix, c->node);
    char *set = util_asprintf("%s:nodes", c->prefix);
    if (key && set) {
      cluster_send_cmd(c, 0, cluster_ignore_reply, NULL, 2,
                       (const char *[]){"DEL", key});
      cluster_send_cmd(c, 0, cluster_ignore_reply, NULL, 3,
                       (const char *[]){"ZREM", set, c->node});
    }
    free(key);
    free(set);
  }
  c->leaving = 1;
}

static void on_tick_closed(uv_handle_t *h) {
  struct cluster *c = h->data;
  if (--c->handles == 0)
    free(c);
}

void cluster_close(struct master *m) {
  struct cluster *c = m->cluster;
  if (c == NULL)
    return;
  m->cluster = NULL;
  c->closing = 1;
  redisAsyncContext *ac = c->ac;
  c->ac = NULL;
  if (ac)
    redisAsyncFree(ac); /* outstanding callbacks run now, with no reply */
  csig_close(m);
  if (c->resolving)
    uv_cancel((uv_req_t *)&c->gai);
  redis_url_close(&c->url);
  free(c->node);
  free(c->prefix);
  json_decref(c->peers);
  c->node = c->prefix = NULL;
  c->peers = NULL;
  uv_close((uv_handle_t *)&c->tick, on_tick_closed);
}

int cluster_enabled(const struct master *m) { return m->cluster != NULL; }

int cluster_connected(const struct master *m) {
  return m->cluster && m->cluster->ready;
}

const char *cluster_node(const struct master *m) {
  return m->cluster ? m->cluster->node : m->gen->app.s.node;
}

const char *cluster_state_name(const struct master *m) {
  return m->cluster ? cluster_state_names[m->cluster->state]
                    : cluster_state_names[CS_OFF];
}

/* ---- for cluster signals (cluster_signals.c) ----------------------------- */

struct ext_cmd {
  cluster_reply_fn *fn;
  void *arg;
};

static void on_ext_reply(struct cluster *c, redisReply *r, void *arg) {
  struct ext_cmd x = *(struct ext_cmd *)arg;
  free(arg);
  if (x.fn)
    x.fn(c->m, r, x.arg);
}

int cluster_command(struct master *m, cluster_reply_fn *fn, void *arg, int argc,
                    const char **argv, const size_t *len) {
  struct cluster *c = m->cluster;
  if (c == NULL)
    return -ENOTCONN;
  struct ext_cmd *x = malloc(sizeof(*x));
  if (x == NULL)
    return -ENOMEM;
  *x = (struct ext_cmd){.fn = fn, .arg = arg};
  int err = cluster_send_argv(c, 0, on_ext_reply, x, argc, argv, len);
  if (err)
    free(x);
  return err;
}

size_t cluster_room(const struct master *m) {
  const struct cluster *c = m->cluster;
  if (c == NULL || !c->ready || c->ncmds >= CLUSTER_MAX_OUTSTANDING / 2 ||
      c->bytes >= CLUSTER_MAX_BYTES / 2)
    return 0;
  return CLUSTER_MAX_BYTES / 2 - c->bytes;
}

struct redisAsyncContext *cluster_open_extra(struct master *m,
                                             redisCallbackFn *hs, void *priv,
                                             char *why, size_t n) {
  struct cluster *c = m->cluster;
  if (c == NULL || !c->ready) {
    snprintf(why, n, "the link is down");
    return NULL;
  }
  redisAsyncContext *ac =
      cluster_open_ctx(c, c->url.path ? NULL : c->ip, why, n);
  if (ac == NULL)
    return NULL;
  int err = REDIS_OK;
  if (c->url.password && c->url.user)
    err = redisAsyncCommand(ac, hs, priv, "AUTH %s %s", c->url.user,
                            c->url.password);
  else if (c->url.password)
    err = redisAsyncCommand(ac, hs, priv, "AUTH %s", c->url.password);
  if (err == REDIS_OK && c->url.db)
    err = redisAsyncCommand(ac, hs, priv, "SELECT %d", c->url.db);
  if (err != REDIS_OK) {
    redisAsyncFree(ac);
    snprintf(why, n, "cannot queue the handshake");
    return NULL;
  }
  return ac;
}

uint64_t cluster_timeout_ms(const struct master *m) {
  return m->cluster ? m->cluster->timeout_ms : 2000;
}

const char *cluster_prefix(const struct master *m) {
  return m->cluster ? m->cluster->prefix : "aio";
}

const json_t *cluster_peers(const struct master *m) {
  return m->cluster ? m->cluster->peers : NULL;
}
