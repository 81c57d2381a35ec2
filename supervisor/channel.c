/*
 * channel.c - one worker's end of the bus, the socketpair, in the master:
 * reading it, and writing the frames queued for it before the loop sleeps.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "master.h"

void on_proc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  static char buf_[65536];
  buf->base = buf_;
  buf->len = sizeof(buf_);
}

void on_proc_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct wproc *p = s->data;
  if (nread == 0)
    return;
  if (nread < 0) {
    /* EOF: the worker is exiting; SIGCHLD tells us how. */
    uv_read_stop(s);
    return;
  }
  int err = router_feed(p, buf->base, (size_t)nread);
  if (err) {
    log_error("worker %d pid %d sent a bad bus frame (%s); killing it", p->slot,
              (int)p->pid, strerror(-err < 0 ? 0 : -err));
    uv_read_stop(s);
    /* Nothing more is read from or written to a channel that said
     * nonsense; what it had pending goes to other workers when it is
     * reaped. */
    p->bus_open = 0;
    kill(p->pid, SIGKILL);
  }
}

static void on_written(uv_write_t *req, int status) {
  (void)status;
  free(req->data);
  free(req);
}

/* Write p's queued frames: straight to the socket while libuv has nothing
 * queued for it, the rest through libuv's queue, in order. One write(2)
 * carries a whole loop iteration's frames for a worker. */
static void proc_flush(struct wproc *p) {
  size_t n = bus_out_pending(&p->out);
  if (n == 0)
    return;
  uv_stream_t *s = (uv_stream_t *)&p->bus;
  if (!p->bus_open)
    goto drop;
  if (uv_stream_get_write_queue_size(s) == 0) {
    uv_buf_t b = uv_buf_init(p->out.buf + p->out.off, (unsigned)n);
    int w = uv_try_write(s, &b, 1);
    if (w < 0 && w != UV_EAGAIN)
      goto drop; /* the worker is gone; SIGCHLD says how */
    if (w > 0) {
      p->out.off += (size_t)w;
      n -= (size_t)w;
    }
  }
  if (n > 0) {
    uv_write_t *req = malloc(sizeof(*req));
    char *copy = malloc(n);
    if (req == NULL || copy == NULL) {
      free(req);
      free(copy);
      goto drop;
    }
    memcpy(copy, p->out.buf + p->out.off, n);
    req->data = copy;
    uv_buf_t b = uv_buf_init(copy, (unsigned)n);
    if (uv_write(req, s, &b, 1, on_written)) {
      free(copy);
      free(req);
    }
  }
drop:
  p->out.off = p->out.len = 0;
  bus_out_shrink(&p->out);
}

void on_bus_flush(uv_prepare_t *h) {
  struct master *m = h->data;
  for (struct wproc *p = m->procs; p; p = p->next)
    proc_flush(p);
}

/* A long burst need not wait for the end of the iteration. */
static void eager_flush(struct wproc *p) {
  if (bus_out_pending(&p->out) >= 64 * 1024)
    proc_flush(p);
}

int master_send(struct wproc *p, const json_t *msg) {
  if (!p->bus_open)
    return -EPIPE;
  int err = bus_out_add(&p->out, msg);
  if (err == 0)
    eager_flush(p);
  return err;
}

int master_send_raw(struct wproc *p, const char *frame, size_t len) {
  if (!p->bus_open)
    return -EPIPE;
  int err = bus_out_raw(&p->out, frame, len);
  if (err == 0)
    eager_flush(p);
  return err;
}
