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
 * This file is the link itself; what goes over it for the nodes (the
 * announcement and peers, the schedule claims) and the status are
 * cluster_nodes.c's (cluster_int.h).
 */
#define _GNU_SOURCE
#include "cluster.h"
#include "cluster_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cluster_signals.h"
#include "log.h"
#include "master.h"
#include "util.h"

#define CLUSTER_TICK_MS 50
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 10000

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

/* xorshift64: jitter needs no quality, only nodes that do not agree. */
static uint64_t rnd(struct cluster *c) {
  c->rng ^= c->rng << 13;
  c->rng ^= c->rng >> 7;
  c->rng ^= c->rng << 17;
  return c->rng;
}

static void set_state(struct cluster *c, enum cstate s) {
  if (c->state == s)
    return;
  c->state = s;
  c->since = cluster_wall_now();
  struct master *m = c->m;
  if (m->phase == MASTER_SERVING || m->phase == MASTER_RELOADING)
    notify_send("STATUS=serving with %zu workers; cluster %s (node %s)",
                m->nslots, cluster_state_names[s], c->node);
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

/* ---- the connection --------------------------------------------------- */

static void attempt(struct cluster *c);

/* The attempt or the connection is over: say why (once per state change;
 * a retry that fails again is only a debug line), and schedule the next. */
static void lost(struct cluster *c, const char *why) {
  /* Cut to fit: a Release build (-O2) sees callers' 300-byte reasons. */
  snprintf(c->last_error, sizeof(c->last_error), "%.*s",
           (int)sizeof(c->last_error) - 1, why);
  c->ready = 0;
  if (c->closing)
    return;
  csig_link_down(c->m);
  unsigned base = c->backoff_ms;
  unsigned delay = base / 2 + (unsigned)(rnd(c) % (base / 2 + 1));
  c->backoff_ms = base * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : base * 2;
  c->retry_at_ms = cluster_mono_ms(c) + delay;
  if (c->state == CS_CONNECTED) {
    c->losses++;
    c->down_since = cluster_wall_now();
    log_warnx("cluster: lost %s: %s; reconnecting in %u ms", c->where, why,
              delay);
  } else if (c->state == CS_CONNECTING) {
    c->down_since = cluster_wall_now();
    log_warnx("cluster: cannot reach %s: %s; retrying in %u ms", c->where, why,
              delay);
  } else {
    log_debug("cluster: %s still unreachable: %s; next attempt in %u ms",
              c->where, why, delay);
  }
  set_state(c, CS_DOWN);
}

/* Drop the current connection ourselves (a timeout, a refused handshake).
 * Its outstanding commands get their callbacks with no reply, now. */
static void drop(struct cluster *c, const char *why) {
  redisAsyncContext *ac = c->ac;
  c->ac = NULL; /* on_disconnect: not ours any more */
  c->ready = 0;
  if (ac)
    redisAsyncFree(ac);
  lost(c, why);
}

static void on_handshake(struct cluster *c, redisReply *r, void *arg) {
  const char *what = arg;
  if (r == NULL || c->ac == NULL)
    return; /* the connection went away; lost() says so */
  if (r->type == REDIS_REPLY_ERROR) {
    char why[300];
    snprintf(why, sizeof(why), "%s refused: %.200s", what, r->str);
    drop(c, why);
    return;
  }
  if (strcmp(what, "PING") != 0)
    return;
  c->ready = 1;
  c->connects++;
  c->backoff_ms = BACKOFF_MIN_MS;
  c->down_since = 0;
  c->last_error[0] = '\0';
  log_info("cluster: connected to %s as node %s", c->where, c->node);
  set_state(c, CS_CONNECTED);
  c->next_announce_ms = 0;
  cluster_announce(c);
  csig_link_up(c->m);
}

static void on_connect(const redisAsyncContext *ac, int status) {
  struct cluster *c = ac->data;
  if (ac != c->ac)
    return;
  if (status != REDIS_OK) {
    /* hiredis frees ac after this returns. */
    c->ac = NULL;
    lost(c, ac->errstr[0] ? ac->errstr : "connect failed");
  }
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  struct cluster *c = ac->data;
  (void)status;
  if (ac != c->ac)
    return; /* dropped by us: said already */
  c->ac = NULL;
  lost(c, ac->err && ac->errstr[0] ? ac->errstr : "closed by the server");
}

/* hiredis 0.14's libuv adapter returns from its poll callback when libuv
 * reports an error (status < 0, as for a refused connect: POLLERR), and
 * libuv has stopped the handle by then, so the failure would only be seen
 * when the deadline expires. As hiredis 1.0's adapter does, an error
 * runs the handlers of the events that were watched: they find the error
 * on the socket and tear the context down. */
static void on_poll(uv_poll_t *h, int status, int events) {
  redisLibuvEvents *p = h->data;
  int ev = status ? p->events : events;
  if (p->context && (ev & UV_READABLE))
    redisAsyncHandleRead(p->context);
  if (p->context && (ev & UV_WRITABLE))
    redisAsyncHandleWrite(p->context);
}

static void poll_set(redisLibuvEvents *p, int events) {
  p->events = events;
  if (events)
    uv_poll_start(&p->handle, events, on_poll);
  else
    uv_poll_stop(&p->handle);
}

static void poll_add_read(void *arg) {
  redisLibuvEvents *p = arg;
  poll_set(p, p->events | UV_READABLE);
}

static void poll_del_read(void *arg) {
  redisLibuvEvents *p = arg;
  poll_set(p, p->events & ~UV_READABLE);
}

static void poll_add_write(void *arg) {
  redisLibuvEvents *p = arg;
  poll_set(p, p->events | UV_WRITABLE);
}

static void poll_del_write(void *arg) {
  redisLibuvEvents *p = arg;
  poll_set(p, p->events & ~UV_WRITABLE);
}

/* A new context to an address (numeric, or NULL for the unix path),
 * attached to the loop; NULL with why said. */
static redisAsyncContext *open_ctx(struct cluster *c, const char *ip, char *why,
                                   size_t n) {
  redisAsyncContext *ac = ip ? redisAsyncConnect(ip, c->url.port)
                             : redisAsyncConnectUnix(c->url.path);
  if (ac == NULL) {
    snprintf(why, n, "out of memory");
    return NULL;
  }
  if (ac->err) {
    snprintf(why, n, "%s", ac->errstr);
    redisAsyncFree(ac);
    return NULL;
  }
  if (redisLibuvAttach(ac, c->m->loop) != REDIS_OK) {
    redisAsyncFree(ac);
    snprintf(why, n, "cannot watch the socket");
    return NULL;
  }
  /* The adapter's handle and cleanup, with the poll callback above. */
  ac->ev.addRead = poll_add_read;
  ac->ev.delRead = poll_del_read;
  ac->ev.addWrite = poll_add_write;
  ac->ev.delWrite = poll_del_write;
  return ac;
}

/* Connect to an address (numeric, or NULL for the unix path). */
static void connect_to(struct cluster *c, const char *ip) {
  char why[256];
  snprintf(c->ip, sizeof(c->ip), "%s", ip ? ip : "");
  redisAsyncContext *ac = open_ctx(c, ip, why, sizeof(why));
  if (ac == NULL) {
    lost(c, why);
    return;
  }
  ac->data = c;
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  c->ac = ac;
  /* Queued now, written once connected; their deadlines cover a server
   * that accepts and never answers. */
  int err = 0;
  if (c->url.password && c->url.user)
    err = cluster_send_cmd(
        c, 1, on_handshake, "AUTH", 3,
        (const char *[]){"AUTH", c->url.user, c->url.password});
  else if (c->url.password)
    err = cluster_send_cmd(c, 1, on_handshake, "AUTH", 2,
                           (const char *[]){"AUTH", c->url.password});
  if (err == 0 && c->url.db) {
    char db[16];
    snprintf(db, sizeof(db), "%d", c->url.db);
    err = cluster_send_cmd(c, 1, on_handshake, "SELECT", 2,
                           (const char *[]){"SELECT", db});
  }
  if (err == 0)
    err = cluster_send_cmd(c, 1, on_handshake, "PING", 1,
                           (const char *[]){"PING"});
  if (err)
    drop(c, "cannot queue the handshake");
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  struct cluster *c = req->data;
  c->resolving = 0;
  c->handles--;
  char ip[INET6_ADDRSTRLEN] = "";
  if (status == 0 && res) {
    const void *a =
        res->ai_family == AF_INET6
            ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
            : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
    inet_ntop(res->ai_family, a, ip, sizeof(ip));
  }
  uv_freeaddrinfo(res);
  if (c->closing) {
    if (c->handles == 0)
      free(c);
    return;
  }
  if (status != 0 || ip[0] == '\0') {
    char why[300];
    snprintf(why, sizeof(why), "cannot resolve %s: %s", c->url.host,
             status ? uv_strerror(status) : "no address");
    lost(c, why);
    return;
  }
  connect_to(c, ip);
}

static void attempt(struct cluster *c) {
  c->retry_at_ms = 0;
  c->attempts++;
  c->attempt_ms = cluster_mono_ms(c);
  if (c->url.path) {
    connect_to(c, NULL);
    return;
  }
  unsigned char buf[16];
  if (inet_pton(AF_INET, c->url.host, buf) == 1 ||
      inet_pton(AF_INET6, c->url.host, buf) == 1) {
    connect_to(c, c->url.host);
    return;
  }
  /* A name: resolved off the loop, as getaddrinfo may take seconds. */
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  c->gai.data = c;
  if (uv_getaddrinfo(c->m->loop, &c->gai, on_resolved, c->url.host, NULL,
                     &hints) == 0) {
    c->resolving = 1;
    c->handles++;
  } else {
    lost(c, "cannot start resolving the host name");
  }
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
    drop(c, why);
  } else if (c->ac && c->cmds && now - c->cmds->sent_ms > c->timeout_ms) {
    char why[96];
    snprintf(why, sizeof(why), "no reply within %llu ms (%zu outstanding)",
             (unsigned long long)c->timeout_ms, c->ncmds);
    c->timeouts++;
    drop(c, why);
  }
  if (c->ac == NULL && !c->resolving && c->retry_at_ms &&
      now >= c->retry_at_ms && !c->leaving)
    attempt(c);
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
  attempt(c);
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
  redisAsyncContext *ac = open_ctx(c, c->url.path ? NULL : c->ip, why, n);
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
