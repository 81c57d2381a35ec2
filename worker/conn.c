/*
 * conn.c - aio_conn_t: reading into the worker's shared buffer, writes that
 * never block (try first, queue a copy of the rest), back-pressure, and the
 * close sequence that ends in connection_lost.
 *
 * Back-pressure: while more than CONN_PAUSE_BYTES are queued, the runner
 * stops reading from that peer, so a protocol that writes in answer to what
 * it reads cannot be made to buffer without bound. A protocol that writes
 * on its own is stopped by [aio] write_limit: a write that would take the
 * queue past it returns -ENOBUFS and sends nothing. A protocol may also
 * pause reading itself (aio_conn_pause_reading): reading runs while
 * neither pause holds.
 *
 * The timeouts are timeout.c's: reads and writes here only record when
 * they happened.
 */
#include "conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "server.h"
#include "worker.h"

struct wreq {
  uv_write_t req;
  aio_conn_t *conn;
  size_t len;
  char data[];
};

struct udpreq {
  uv_udp_send_t req;
  struct ctr_server *ctr; /* its server's, counted once sent */
  size_t len;
  char data[];
};

static void conn_link(aio_conn_t *c) {
  struct worker *w = c->srv->w;
  c->next = w->conns;
  if (w->conns)
    w->conns->prev = c;
  w->conns = c;
  w->nconns++;
}

static void conn_unlink(aio_conn_t *c) {
  struct worker *w = c->srv->w;
  if (c->prev)
    c->prev->next = c->next;
  else
    w->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  w->nconns--;
}

aio_conn_t *conn_new_stream(struct wserver *srv, int fd) {
  aio_conn_t *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    log_warnx("[server:%s] out of memory for a new connection",
              srv->conf->name);
    close(fd);
    ctr_add(srv->ctr, CTR_REFUSED, 1);
    return NULL;
  }
  c->srv = srv;
  c->proto = srv->proto;
  uv_loop_t *loop = &srv->w->loop;
  int err = srv->conf->type == SERVER_UNIX ? uv_pipe_init(loop, &c->h.pipe, 0)
                                           : uv_tcp_init(loop, &c->h.tcp);
  if (err) {
    close(fd);
    free(c);
    ctr_add(srv->ctr, CTR_REFUSED, 1);
    return NULL;
  }
  c->h.handle.data = c;
  conn_timer_init(c);
  c->handles = 2;
  conn_link(c);
  /* From here on_closed counts it closed, whatever becomes of it. */
  ctr_add(srv->ctr, CTR_ACCEPTED, 1);
  err = srv->conf->type == SERVER_UNIX ? uv_pipe_open(&c->h.pipe, fd)
                                       : uv_tcp_open(&c->h.tcp, fd);
  if (err) {
    log_warnx("[server:%s] cannot take a new connection: %s", srv->conf->name,
              uv_strerror(err));
    close(fd); /* not the handle's yet */
    conn_abort(c, err);
    return NULL;
  }
  return c;
}

/* One of c's handles has closed; the last one ends the connection. */
static void on_closed(uv_handle_t *h) {
  aio_conn_t *c = h->data;
  if (--c->handles > 0)
    return;
  int status = c->lost_status;
  if (c->made && c->proto->connection_lost) {
    worker_proto_enter(worker_self, c->srv, BUS_PROTO_LOST);
    c->proto->connection_lost(c, status);
    worker_proto_leave(worker_self);
  }
  if (!c->udp)
    ctr_add(c->srv->ctr, CTR_CLOSED, 1);
  conn_unlink(c);
  free(c);
  worker_conn_gone(worker_self);
}

static void conn_close_now(aio_conn_t *c, int status) {
  if (uv_is_closing(&c->h.handle))
    return;
  c->closing = 1;
  c->lost_status = status;
  uv_close(&c->h.handle, on_closed);
  if (!c->udp)
    uv_close((uv_handle_t *)&c->timer, on_closed);
}

void conn_abort(aio_conn_t *c, int status) { conn_close_now(c, status); }

static void on_shutdown(uv_shutdown_t *req, int status) {
  aio_conn_t *c = req->handle->data;
  (void)status;
  conn_close_now(c, c->lost_status);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  buf->base = worker_self->readbuf;
  buf->len = sizeof(worker_self->readbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Read while the connection wants to and neither the runner nor the
 * protocol has paused it. */
static void conn_read_update(aio_conn_t *c) {
  int want = c->made && !c->closing && !c->paused && !c->user_paused;
  if (want == c->reading)
    return;
  if (want) {
    int err = uv_read_start(&c->h.stream, on_alloc, on_read);
    if (err) {
      conn_close_now(c, err);
      return;
    }
  } else {
    uv_read_stop(&c->h.stream);
  }
  c->reading = (unsigned)want;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  aio_conn_t *c = s->data;
  if (nread > 0) {
    c->last_io = uv_now(s->loop);
    ctr_add(c->srv->ctr, CTR_BYTES_READ, (uint64_t)nread);
    if (!c->closing && c->proto->data_received) {
      worker_proto_enter(worker_self, c->srv, BUS_PROTO_DATA);
      c->proto->data_received(c, buf->base, (size_t)nread);
      worker_proto_leave(worker_self);
    }
    return;
  }
  if (nread == 0)
    return;
  if (nread == UV_EOF) {
    uv_read_stop(s);
    c->reading = 0;
    if (!c->closing && c->proto->eof_received) {
      worker_proto_enter(worker_self, c->srv, BUS_PROTO_EOF);
      c->proto->eof_received(c);
      worker_proto_leave(worker_self);
    }
    aio_close(c);
    return;
  }
  conn_close_now(c, (int)nread);
}

void conn_start(aio_conn_t *c) {
  c->made = 1;
  c->last_io = uv_now(c->h.handle.loop);
  if (c->proto->connection_made) {
    worker_proto_enter(worker_self, c->srv, BUS_PROTO_MADE);
    c->proto->connection_made(c);
    worker_proto_leave(worker_self);
  }
  conn_read_update(c);
  conn_timer_arm(c);
}

static void on_written(uv_write_t *req, int status) {
  struct wreq *wr = (struct wreq *)req;
  aio_conn_t *c = wr->conn;
  c->queued -= wr->len;
  size_t len = wr->len;
  free(wr);
  if (status < 0) {
    conn_close_now(c, status);
    return;
  }
  ctr_add(c->srv->ctr, CTR_BYTES_WRITTEN, len);
  c->last_io = uv_now(c->h.handle.loop);
  if (c->queued == 0 && !c->closing) {
    if (c->paused) {
      c->paused = 0;
      conn_read_update(c);
    }
    if (c->proto->write_drained)
      c->proto->write_drained(c);
  }
}

int aio_write(aio_conn_t *c, const void *data, size_t len) {
  if (c == NULL || (data == NULL && len > 0))
    return -EINVAL;
  if (c->udp)
    return -EDESTADDRREQ;
  if (c->closing)
    return -ENOTCONN;
  if (len == 0)
    return 0;
  /* All or nothing, decided before a byte goes out: refusing only the
   * rest after uv_try_write sent a prefix would have the caller resend (or
   * drop) bytes the peer already has. */
  if (c->queued + len > c->srv->w->app->s.write_limit)
    return -ENOBUFS;
  size_t done = 0;
  if (c->queued == 0) {
    /* The common case: the kernel takes it all, nothing is allocated. */
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int n = uv_try_write(&c->h.stream, &b, 1);
    if (n >= 0)
      done = (size_t)n;
    else if (n != UV_EAGAIN) {
      conn_close_now(c, n);
      return n;
    }
    if (done > 0) {
      c->last_io = uv_now(c->h.handle.loop);
      ctr_add(c->srv->ctr, CTR_BYTES_WRITTEN, done);
    }
    c->out_total += done;
    if (done == len)
      return 0;
  }
  size_t rest = len - done;
  struct wreq *wr = malloc(sizeof(*wr) + rest);
  if (wr == NULL)
    return -ENOMEM;
  memcpy(wr->data, (const char *)data + done, rest);
  wr->conn = c;
  wr->len = rest;
  uv_buf_t b = uv_buf_init(wr->data, (unsigned)rest);
  int err = uv_write(&wr->req, &c->h.stream, &b, 1, on_written);
  if (err) {
    free(wr);
    conn_close_now(c, err);
    return err;
  }
  c->out_total += rest;
  int started = c->queued == 0;
  c->queued += rest;
  if (c->queued > CONN_PAUSE_BYTES && !c->paused) {
    c->paused = 1;
    conn_read_update(c);
  }
  if (started)
    conn_timer_queue_began(c);
  return 0;
}

void aio_close(aio_conn_t *c) {
  if (c == NULL || c->closing)
    return;
  c->closing = 1;
  if (c->udp) {
    conn_close_now(c, 0);
    return;
  }
  conn_read_update(c);
  /* Shutdown waits for queued writes, then sends FIN. */
  if (uv_shutdown(&c->sreq, &c->h.stream, on_shutdown) != 0)
    conn_close_now(c, c->lost_status);
}

size_t aio_conn_queued(const aio_conn_t *c) { return c ? c->queued : 0; }

size_t aio_conn_write_room(const aio_conn_t *c) {
  if (c == NULL || c->udp || c->closing)
    return 0;
  size_t limit = c->srv->w->app->s.write_limit;
  return c->queued < limit ? limit - c->queued : 0;
}

void aio_conn_pause_reading(aio_conn_t *c) {
  if (c == NULL || c->udp)
    return;
  c->user_paused = 1;
  conn_read_update(c);
}

void aio_conn_resume_reading(aio_conn_t *c) {
  if (c == NULL || c->udp)
    return;
  c->user_paused = 0;
  conn_read_update(c);
}

void aio_conn_set_data(aio_conn_t *c, void *data) {
  if (c)
    c->data = data;
}

void *aio_conn_get_data(const aio_conn_t *c) { return c ? c->data : NULL; }

const char *aio_conn_server(const aio_conn_t *c) {
  return c ? c->srv->conf->name : NULL;
}

void *aio_conn_server_data(const aio_conn_t *c) {
  return c ? c->srv->serve_data : NULL;
}

int aio_conn_draining(const aio_conn_t *c) {
  (void)c;
  return worker_self ? worker_self->draining : 0;
}

/* Into the page the master reads ([aio] max_requests, recycle.c). */
void aio_conn_request_done(aio_conn_t *c) {
  if (c && c->srv->ctr)
    ctr_add(c->srv->ctr, CTR_REQUESTS, 1);
}

/* ---- UDP --------------------------------------------------------------- */

static void on_udp_read(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                        const struct sockaddr *addr, unsigned flags) {
  aio_conn_t *c = h->data;
  (void)flags;
  if (nread < 0) {
    log_warnx("[server:%s] udp receive: %s", c->srv->conf->name,
              uv_strerror((int)nread));
    return;
  }
  if (addr == NULL || c->closing)
    return;
  c->last_io = uv_now(h->loop);
  ctr_add(c->srv->ctr, CTR_BYTES_READ, (uint64_t)nread);
  if (c->proto->datagram_received) {
    worker_proto_enter(worker_self, c->srv, BUS_PROTO_DATAGRAM);
    c->proto->datagram_received(c, buf->base, (size_t)nread, addr);
    worker_proto_leave(worker_self);
  }
}

int conn_open_udp(struct wserver *srv, int fd) {
  aio_conn_t *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return -ENOMEM;
  c->srv = srv;
  c->proto = srv->proto;
  c->udp = 1;
  int err = uv_udp_init(&srv->w->loop, &c->h.udp);
  if (err) {
    free(c);
    return err;
  }
  c->h.handle.data = c;
  c->handles = 1;
  conn_link(c);
  err = uv_udp_open(&c->h.udp, fd);
  if (err == 0) {
    srv->udp = c;
    c->made = 1;
    if (c->proto->connection_made)
      c->proto->connection_made(c);
    err = uv_udp_recv_start(&c->h.udp, on_alloc, on_udp_read);
  }
  if (err)
    conn_close_now(c, err);
  return err;
}

static void on_udp_sent(uv_udp_send_t *req, int status) {
  struct udpreq *r = (struct udpreq *)req;
  if (status >= 0)
    ctr_add(r->ctr, CTR_BYTES_WRITTEN, r->len);
  free(r);
}

int aio_sendto(aio_conn_t *c, const void *data, size_t len,
               const struct sockaddr *addr) {
  if (c == NULL || !c->udp || addr == NULL)
    return -EINVAL;
  if (c->closing)
    return -ENOTCONN;
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  int n = uv_udp_try_send(&c->h.udp, &b, 1, addr);
  if (n >= 0) {
    ctr_add(c->srv->ctr, CTR_BYTES_WRITTEN, (uint64_t)n);
    return 0;
  }
  if (n != UV_EAGAIN)
    return n;
  if (c->h.udp.send_queue_size + len > c->srv->w->app->s.write_limit)
    return -ENOBUFS;
  struct udpreq *r = malloc(sizeof(*r) + len);
  if (r == NULL)
    return -ENOMEM;
  memcpy(r->data, data, len);
  r->ctr = c->srv->ctr;
  r->len = len;
  b = uv_buf_init(r->data, (unsigned)len);
  int err = uv_udp_send(&r->req, &c->h.udp, &b, 1, addr, on_udp_sent);
  if (err)
    free(r);
  return err;
}

void conn_sweep_idle(uint64_t now, uint64_t idle_ms) {
  aio_conn_t *c = worker_self->conns, *next;
  for (; c; c = next) {
    next = c->next;
    if (c->udp) {
      aio_close(c);
      continue;
    }
    if (!c->closing && c->queued == 0 && now - c->last_io >= idle_ms)
      aio_close(c);
  }
}
