/*
 * cluster_conn.c - the cluster link's connection to Redis (cluster.c has
 * the link's commands, its tick and the master's hooks): resolving the
 * host with uv_getaddrinfo, a non-blocking connect, the handshake (AUTH,
 * SELECT, PING), hiredis's libuv adapter on the master's loop, and, when
 * an attempt or a connection is lost, the retry with capped exponential
 * backoff and jitter, one log line per state change (cluster_int.h).
 */
#define _GNU_SOURCE
#include "cluster_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cluster_signals.h"
#include "log.h"
#include "util.h"

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

/* ---- the connection --------------------------------------------------- */

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
void cluster_drop(struct cluster *c, const char *why) {
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
    cluster_drop(c, why);
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
redisAsyncContext *cluster_open_ctx(struct cluster *c, const char *ip,
                                    char *why, size_t n) {
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
  redisAsyncContext *ac = cluster_open_ctx(c, ip, why, sizeof(why));
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
    cluster_drop(c, "cannot queue the handshake");
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

void cluster_attempt(struct cluster *c) {
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
