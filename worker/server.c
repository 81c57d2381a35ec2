/*
 * server.c - a worker's side of one [server:NAME]: adopt the socket the
 * master bound for this slot and serve it with the configured protocol, or
 * hand it to the configured factory, which may give it back to be served
 * the same way with a protocol of its own (aio_server_serve) or hold the
 * worker's drain for handles of its own (aio_server_hold); and count what
 * the server refused or timed out, in lines a flood cannot multiply.
 *
 * Accepting is ours, not libuv's: at EMFILE libuv's uv_accept path (the
 * "emfile trick" in src/unix/stream.c) accepts every waiting connection
 * with a reserve descriptor and closes it, unseen. Here accept(2) running
 * out of descriptors pauses accepting for a moment instead: open
 * connections go on being served, and the new ones wait in the listen
 * queue for a descriptor to free up (nginx does the same).
 */
#define _GNU_SOURCE /* accept4 */
#include "server.h"

#include <errno.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "worker.h"

/* ---- counting ------------------------------------------------------------ */

static const int event_warns[] = {
#define SERVER_WARN(e, warn, ctr) warn,
    SERVER_EVENTS(SERVER_WARN)
#undef SERVER_WARN
};

static const enum ctr_index event_ctrs[] = {
#define SERVER_CTR(e, warn, ctr) ctr,
    SERVER_EVENTS(SERVER_CTR)
#undef SERVER_CTR
};

static unsigned long long count_of(const struct wserver *s,
                                   enum server_event e) {
  return (unsigned long long)ctr_get(s->ctr, event_ctrs[e]);
}

static unsigned long long fd_limit(void) {
  struct rlimit rl;
  return getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (unsigned long long)rl.rlim_cur
                                            : 0;
}

/* The first of a warning since SERVER_TALLY_MS: said at once. */
static void say_first(struct wserver *s, enum server_event e) {
  const char *name = s->conf->name;
  if (e == SERVER_OVER_MAX_CONNECTIONS)
    log_fields(AIO_LOG_WARN, LOG_FIELDS(LOG_STR("server", name)),
               "[server:%s] over max_connections (%zu): closing new "
               "connections (one line per %d s says how many)",
               name, s->w->app->s.max_connections, SERVER_TALLY_MS / 1000);
  else
    log_fields(AIO_LOG_WARN,
               LOG_FIELDS(LOG_STR("server", name),
                          LOG_STR("error", strerror(s->accept_err))),
               "[server:%s] accept: %s: not accepting for %d ms, new "
               "connections wait in the listen queue (%zu open, "
               "RLIMIT_NOFILE %llu; one line per %d s says how often)",
               name, strerror(s->accept_err), SERVER_ACCEPT_PAUSE_MS,
               s->w->nconns, fd_limit(), SERVER_TALLY_MS / 1000);
}

/* What happened since the last line, one line per kind of warning and one
 * for the timeouts. */
static void say_unsaid(struct wserver *s, uint64_t now) {
  const char *name = s->conf->name;
  int secs = SERVER_TALLY_MS / 1000;
  if (s->unsaid[SERVER_OVER_MAX_CONNECTIONS])
    log_fields(AIO_LOG_WARN, LOG_FIELDS(LOG_STR("server", name)),
               "[server:%s] over max_connections (%zu): closed %llu new "
               "connections in the last %d s (%llu since start)",
               name, s->w->app->s.max_connections,
               (unsigned long long)s->unsaid[SERVER_OVER_MAX_CONNECTIONS], secs,
               count_of(s, SERVER_OVER_MAX_CONNECTIONS));
  if (s->unsaid[SERVER_ACCEPT_PAUSED])
    log_fields(AIO_LOG_WARN, LOG_FIELDS(LOG_STR("server", name)),
               "[server:%s] accept paused %llu times in the last %d s (%llu "
               "since start; last: %s; %zu open, RLIMIT_NOFILE %llu)",
               name, (unsigned long long)s->unsaid[SERVER_ACCEPT_PAUSED], secs,
               count_of(s, SERVER_ACCEPT_PAUSED), strerror(s->accept_err),
               s->w->nconns, fd_limit());
  if (s->unsaid[SERVER_IDLE_TIMEOUT] || s->unsaid[SERVER_SEND_TIMEOUT] ||
      s->unsaid[SERVER_DEADLINE])
    log_info("[server:%s] connections timed out in the last %d s: %llu idle, "
             "%llu send, %llu deadline (since start: %llu, %llu, %llu)",
             name, secs, (unsigned long long)s->unsaid[SERVER_IDLE_TIMEOUT],
             (unsigned long long)s->unsaid[SERVER_SEND_TIMEOUT],
             (unsigned long long)s->unsaid[SERVER_DEADLINE],
             count_of(s, SERVER_IDLE_TIMEOUT), count_of(s, SERVER_SEND_TIMEOUT),
             count_of(s, SERVER_DEADLINE));
  for (int e = 0; e < SERVER_NEVENTS; e++)
    if (s->unsaid[e]) {
      s->unsaid[e] = 0;
      s->said_at[e] = now;
    }
}

static void on_tally(uv_timer_t *t) {
  struct wserver *s = t->data;
  say_unsaid(s, uv_now(t->loop));
}

void server_count(struct wserver *s, enum server_event e) {
  uint64_t now = uv_now(&s->w->loop);
  ctr_add(s->ctr, event_ctrs[e], 1);
  if (event_warns[e] &&
      (s->said_at[e] == 0 || now - s->said_at[e] >= SERVER_TALLY_MS)) {
    say_first(s, e);
    s->said_at[e] = now;
    return;
  }
  s->unsaid[e]++;
  if (s->timers && !uv_is_active((uv_handle_t *)&s->tally))
    uv_timer_start(&s->tally, on_tally, SERVER_TALLY_MS, 0);
}

/* ---- accepting ----------------------------------------------------------- */

static void on_acceptable(uv_poll_t *h, int status, int events);

static void on_resume(uv_timer_t *t) {
  struct wserver *s = t->data;
  if (s->listening)
    uv_poll_start(&s->accept_poll, UV_READABLE, on_acceptable);
}

static void pause_accepting(struct wserver *s, int err) {
  s->accept_err = err;
  uv_poll_stop(&s->accept_poll);
  uv_timer_start(&s->resume, on_resume, SERVER_ACCEPT_PAUSE_MS, 0);
  server_count(s, SERVER_ACCEPT_PAUSED);
}

/* Serve the accepted socket fd (ours to close). */
static void take(struct wserver *s, int fd) {
  if (s->w->nconns >= s->w->app->s.max_connections) {
    close(fd);
    server_count(s, SERVER_OVER_MAX_CONNECTIONS);
    return;
  }
  aio_conn_t *c = conn_new_stream(s, fd);
  if (c == NULL)
    return;
  if (s->conf->type == SERVER_TCP)
    uv_tcp_nodelay(&c->h.tcp, 1);
  conn_start(c);
}

static void on_acceptable(uv_poll_t *h, int status, int events) {
  struct wserver *s = h->data;
  (void)events;
  if (status < 0) {
    log_fields(AIO_LOG_WARN,
               LOG_FIELDS(LOG_STR("server", s->conf->name),
                          LOG_STR("error", uv_strerror(status))),
               "[server:%s] listening socket: %s", s->conf->name,
               uv_strerror(status));
    pause_accepting(s, -status);
    return;
  }
  for (int i = 0; i < SERVER_ACCEPT_SLICE && s->listening; i++) {
    int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      take(s, fd);
      continue;
    }
    switch (errno) {
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
      return;
    case EINTR:
    case ECONNABORTED:
    /* Errors of the connection, not of the socket: accept(2) says to
     * retry. */
    case EPROTO:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
    case ENETDOWN:
    case EPERM: /* a firewall's verdict */
      continue;
    default:
      /* EMFILE, ENFILE, ENOBUFS, ENOMEM, or worse: wait a moment. */
      pause_accepting(s, errno);
      return;
    }
  }
}

/* Serve s->fd with s->proto: the UDP endpoint, or accepting. The same
 * for a configured protocol and one a factory hands to aio_server_serve(). */
static int server_listen(struct wserver *s) {
  uv_loop_t *loop = &s->w->loop;
  const struct server_conf *sc = s->conf;
  int err;
  if (sc->type == SERVER_UDP) {
    err = conn_open_udp(s, s->fd);
    if (err)
      log_error("[server:%s] udp: %s", sc->name, uv_strerror(err));
    return err;
  }
  uv_timer_init(loop, &s->resume);
  uv_timer_init(loop, &s->tally);
  s->resume.data = s->tally.data = s;
  s->timers = 1;
  /* The master listens already; uv_poll_init makes fd non-blocking. */
  err = uv_poll_init(loop, &s->accept_poll, s->fd);
  if (err) {
    log_error("[server:%s] cannot watch the socket: %s", sc->name,
              uv_strerror(err));
    return err;
  }
  s->accept_poll.data = s;
  s->listening = 1;
  err = uv_poll_start(&s->accept_poll, UV_READABLE, on_acceptable);
  if (err)
    log_error("[server:%s] cannot watch the socket: %s", sc->name,
              uv_strerror(err));
  return err;
}

int server_start(struct wserver *s) {
  const struct server_conf *sc = s->conf;
  if (s->ctr == NULL)
    s->ctr = &s->own;
  s->pub.name = sc->name;
  s->pub.address = sc->address ? sc->address : "";
  s->pub.port = sc->port;
  s->pub.path = sc->path;
  s->pub.fd = s->fd;
  s->pub.udp = sc->type == SERVER_UDP;
  s->pub.loop = &s->w->loop;
  if (!sc->is_factory) {
    s->proto = s->decl->u.protocol;
    return server_listen(s);
  }
  int err = s->decl->u.factory(&s->pub);
  if (err) {
    log_error("[server:%s] factory %s failed (%d)", sc->name, sc->handler.text,
              err);
    return -EINVAL;
  }
  return 0;
}

/* The server of pub, when pub is one of this worker's factory servers. */
static struct wserver *server_of(const aio_server_t *pub) {
  struct worker *w = worker_self;
  if (pub == NULL || w == NULL)
    return NULL;
  for (size_t i = 0; i < w->nservers; i++)
    if (&w->servers[i].pub == pub)
      return w->servers[i].conf->is_factory ? &w->servers[i] : NULL;
  return NULL;
}

int aio_server_serve(aio_server_t *server, const aio_protocol_t *protocol,
                     void *data) {
  struct wserver *s = server_of(server);
  if (s == NULL || protocol == NULL ||
      (s->conf->type == SERVER_UDP && protocol->datagram_received == NULL))
    return -EINVAL;
  if (s->proto)
    return -EALREADY;
  if (s->w->draining)
    return -ESHUTDOWN;
  s->proto = protocol;
  s->serve_data = data;
  return server_listen(s);
}

int aio_server_hold(aio_server_t *server) {
  struct wserver *s = server_of(server);
  if (s == NULL)
    return -EINVAL;
  s->holds++;
  s->w->holds++;
  return 0;
}

int aio_server_release(aio_server_t *server) {
  struct wserver *s = server_of(server);
  if (s == NULL || s->holds == 0)
    return -EINVAL;
  s->holds--;
  s->w->holds--;
  worker_conn_gone(s->w); /* the last one may end a drain */
  return 0;
}

static void on_poll_closed(uv_handle_t *h) {
  struct wserver *s = h->data;
  close(s->fd);
  s->fd = -1;
}

void server_stop_accepting(struct wserver *s) {
  if (s->timers) {
    uv_timer_stop(&s->resume);
    /* What was counted and not said yet, before the worker goes. */
    say_unsaid(s, uv_now(&s->w->loop));
    uv_timer_stop(&s->tally);
  }
  if (!s->listening)
    return;
  s->listening = 0;
  /* Closing our descriptor only: the master holds the socket, so what
   * waits in its accept queue is served by this slot's next worker. */
  uv_close((uv_handle_t *)&s->accept_poll, on_poll_closed);
}
