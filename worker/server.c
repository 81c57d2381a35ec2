/*
 * server.c - a worker's side of one [server:NAME]: adopt the socket the
 * master bound for this slot and serve it with the configured protocol, or
 * hand it to the configured factory.
 */
#include "server.h"

#include <errno.h>
#include <string.h>

#include "conn.h"
#include "log.h"
#include "worker.h"

static void on_connection(uv_stream_t *ls, int status) {
  struct wserver *s = ls->data;
  if (status < 0) {
    log_warnx("[server:%s] accept: %s", s->conf->name, uv_strerror(status));
    return;
  }
  aio_conn_t *c = conn_new_stream(s);
  if (c == NULL) {
    log_warnx("[server:%s] out of memory for a connection", s->conf->name);
    return;
  }
  int err = uv_accept(ls, &c->h.stream);
  if (err) {
    conn_abort(c, err);
    return;
  }
  if (s->w->nconns > s->w->app->s.max_connections) {
    log_warnx("[server:%s] over max_connections (%zu): closing a new "
              "connection",
              s->conf->name, s->w->app->s.max_connections);
    conn_abort(c, -EMFILE);
    return;
  }
  if (s->conf->type == SERVER_TCP)
    uv_tcp_nodelay(&c->h.tcp, 1);
  conn_start(c);
}

int server_start(struct wserver *s) {
  uv_loop_t *loop = &s->w->loop;
  const struct server_conf *sc = s->conf;
  int err;
  s->pub.name = sc->name;
  s->pub.address = sc->address ? sc->address : "";
  s->pub.port = sc->port;
  s->pub.path = sc->path;
  s->pub.fd = s->fd;
  s->pub.udp = sc->type == SERVER_UDP;
  s->pub.loop = loop;
  if (sc->is_factory) {
    err = s->decl->u.factory(&s->pub);
    if (err) {
      log_error("[server:%s] factory %s failed (%d)", sc->name,
                sc->handler.text, err);
      return -EINVAL;
    }
    return 0;
  }
  if (sc->type == SERVER_UDP) {
    err = conn_open_udp(s, s->fd);
    if (err)
      log_error("[server:%s] udp: %s", sc->name, uv_strerror(err));
    return err;
  }
  if (sc->type == SERVER_UNIX) {
    err = uv_pipe_init(loop, &s->h.pipe, 0);
    if (err == 0)
      err = uv_pipe_open(&s->h.pipe, s->fd);
  } else {
    err = uv_tcp_init(loop, &s->h.tcp);
    if (err == 0)
      err = uv_tcp_open(&s->h.tcp, s->fd);
  }
  if (err) {
    log_error("[server:%s] cannot adopt socket: %s", sc->name,
              uv_strerror(err));
    return err;
  }
  s->h.handle.data = s;
  s->listening = 1;
  err = uv_listen(&s->h.stream, sc->backlog, on_connection);
  if (err)
    log_error("[server:%s] listen: %s", sc->name, uv_strerror(err));
  return err;
}

void server_stop_accepting(struct wserver *s) {
  if (!s->listening)
    return;
  s->listening = 0;
  /* Closing our descriptor only: the master holds the socket, so what
   * waits in its accept queue is served by this slot's next worker. */
  uv_close(&s->h.handle, NULL);
}
