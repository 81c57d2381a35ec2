/*
 * channel.c - one worker's end of the bus, the socketpair, in the master:
 * reading it and splitting it into frames, the frames queued for it and
 * their flush before the loop sleeps, and what it still held when the
 * worker died (channel.h).
 */
#define _GNU_SOURCE
#include "channel.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Past this much queued, a burst is written at once rather than at the
 * end of the loop iteration. */
#define EAGER_FLUSH (64 * 1024)

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  static char buf_[65536];
  buf->base = buf_;
  buf->len = sizeof(buf_);
}

static int on_line(void *arg, const char *frame, size_t len) {
  struct channel *c = arg;
  c->st.frames_in++;
  return c->ops->frame(c->arg, frame, len);
}

void channel_shut(struct channel *c) {
  if (c->piped)
    uv_read_stop((uv_stream_t *)&c->pipe);
  c->open = 0;
}

int channel_feed(struct channel *c, const char *data, size_t len) {
  if (!c->open)
    return 0;
  c->st.bytes_in += len;
  int err = bus_reader_split(&c->rd, data, len, on_line, c);
  if (err) {
    /* Nothing more is read from or written to a channel that said
     * nonsense. */
    channel_shut(c);
    if (c->ops->error)
      c->ops->error(c->arg, err);
  }
  return err;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct channel *c = s->data;
  if (nread == 0)
    return;
  if (nread < 0) {
    /* EOF: the worker is exiting; SIGCHLD tells us how. */
    uv_read_stop(s);
    return;
  }
  channel_feed(c, buf->base, (size_t)nread);
}

static void channel_init(struct channel *c, const struct channel_ops *ops,
                         void *arg) {
  memset(c, 0, sizeof(*c));
  c->ops = ops;
  c->arg = arg;
}

int channel_open(struct channel *c, uv_loop_t *loop, int fd,
                 const struct channel_ops *ops, void *arg) {
  channel_init(c, ops, arg);
  int err = uv_pipe_init(loop, &c->pipe, 0);
  if (err)
    return err;
  c->pipe.data = c;
  c->piped = 1;
  err = uv_pipe_open(&c->pipe, fd);
  if (err == 0)
    err = uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
  c->open = err == 0;
  return err;
}

void channel_open_sink(struct channel *c, channel_sink sink,
                       const struct channel_ops *ops, void *arg) {
  channel_init(c, ops, arg);
  c->sink = sink;
  c->open = 1;
}

static void on_written(uv_write_t *req, int status) {
  (void)status;
  free(req->data);
  free(req);
}

/* Write the queued frames: straight to the socket while libuv has nothing
 * queued for it, the rest through libuv's queue, in order. One write(2)
 * carries a whole loop iteration's frames for a worker. */
void channel_flush(struct channel *c) {
  size_t n = bus_out_pending(&c->out);
  if (n == 0)
    return;
  uv_stream_t *s = (uv_stream_t *)&c->pipe;
  if (!c->open)
    goto drop;
  c->st.writes++;
  if (!c->piped) {
    if (c->sink(c->arg, c->out.buf + c->out.off, n) == 0)
      n = 0;
    goto drop;
  }
  if (uv_stream_get_write_queue_size(s) == 0) {
    uv_buf_t b = uv_buf_init(c->out.buf + c->out.off, (unsigned)n);
    int w = uv_try_write(s, &b, 1);
    if (w < 0 && w != UV_EAGAIN)
      goto drop; /* the worker is gone; SIGCHLD says how */
    if (w > 0) {
      c->out.off += (size_t)w;
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
    memcpy(copy, c->out.buf + c->out.off, n);
    req->data = copy;
    uv_buf_t b = uv_buf_init(copy, (unsigned)n);
    if (uv_write(req, s, &b, 1, on_written)) {
      free(copy);
      free(req);
    } else {
      n = 0;
    }
  }
drop:
  c->st.lost += n;
  c->out.off = c->out.len = 0;
  bus_out_shrink(&c->out);
}

/* A long burst need not wait for the end of the iteration. */
static void eager_flush(struct channel *c) {
  if (bus_out_pending(&c->out) >= EAGER_FLUSH)
    channel_flush(c);
}

size_t channel_queued(const struct channel *c) {
  size_t n = bus_out_pending(&c->out);
  if (c->piped)
    n += uv_stream_get_write_queue_size((const uv_stream_t *)&c->pipe);
  return n;
}

static int sent(struct channel *c, int err, size_t before) {
  if (err)
    return err;
  c->st.frames_out++;
  c->st.bytes_out += c->out.len - before;
  c->last_start = before;
  /* Only a send adds to what waits (a flush moves it into libuv's queue
   * or writes it): the high-water mark is exact. */
  size_t q = channel_queued(c);
  if (q > c->st.high)
    c->st.high = q;
  eager_flush(c);
  return 0;
}

int channel_send(struct channel *c, const json_t *msg) {
  if (!c->open)
    return -EPIPE;
  size_t before = c->out.len;
  return sent(c, bus_out_add(&c->out, msg), before);
}

int channel_send_raw(struct channel *c, const char *frame, size_t len) {
  if (!c->open)
    return -EPIPE;
  size_t before = c->out.len;
  return sent(c, bus_out_raw(&c->out, frame, len), before);
}

struct channel_last channel_last(const struct channel *c) {
  return (struct channel_last){c->last_start, c->out.len, c->st.writes};
}

int channel_replace_last(struct channel *c, struct channel_last *l,
                         const char *frame, size_t len) {
  if (!c->open)
    return -EPIPE;
  /* A flush empties the buffer (what it did not write goes to libuv's
   * queue): the same count of flushes, and the frame still at the end,
   * is a frame nobody has seen. */
  if (l->writes != c->st.writes || l->end != c->out.len ||
      l->start < c->out.off || l->start != c->last_start)
    return -ESTALE;
  size_t old = l->end - l->start;
  c->out.len = l->start;
  int err = bus_out_raw(&c->out, frame, len);
  if (err) {
    c->out.len = l->start + old; /* its bytes are still there */
    return err;
  }
  c->st.bytes_out += len;
  c->st.bytes_out -= old;
  size_t q = channel_queued(c);
  if (q > c->st.high)
    c->st.high = q;
  l->end = c->out.len;
  eager_flush(c);
  return 0;
}

/* SIGCHLD can be handled before the last bytes on the socket, and the
 * process is freed after this: emits still unread there would be lost,
 * and deliveries it acknowledged would be redelivered. */
void channel_drain(struct channel *c, bus_line_cb cb, void *arg) {
  uv_os_fd_t fd;
  if (!c->open || !c->piped || uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0)
    return; /* closed, or cut off after a bad frame: nothing more is read */
  char buf[16384];
  for (int i = 0; i < 4096; i++) { /* bounded: a socket buffer's worth */
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0 || bus_reader_split(&c->rd, buf, (size_t)n, cb, arg) != 0)
      return;
  }
}

static void closed(struct channel *c) {
  bus_reader_close(&c->rd);
  bus_out_close(&c->out);
  if (c->ops->closed)
    c->ops->closed(c->arg);
}

static void on_closed(uv_handle_t *h) { closed(h->data); }

void channel_close(struct channel *c) {
  c->open = 0;
  if (c->piped) {
    uv_close((uv_handle_t *)&c->pipe, on_closed);
    return;
  }
  closed(c);
}
