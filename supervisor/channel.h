/*
 * channel.h - one worker's bus end in the master (the socketpair): the
 * only code that reads or writes it. Frames in are split into lines and
 * handed to ops->frame; frames out are queued back to back and written
 * before the loop sleeps (channel_flush), or as soon as 64 KiB wait.
 *
 * A channel that is not opened on an fd has a sink instead (tests): what
 * would be written goes to the sink, and channel_feed() plays the bytes
 * that would have been read.
 */
#ifndef AIO_SUPERVISOR_CHANNEL_H
#define AIO_SUPERVISOR_CHANNEL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "bus.h"

struct channel_ops {
  /* One frame from the peer, without its newline, borrowed for the call.
   * Non-zero: the peer said nonsense; the channel is shut (nothing more
   * is read or written) and error is called with that value. */
  int (*frame)(void *arg, const char *frame, size_t len);
  void (*error)(void *arg, int err);
  /* channel_close() is complete: arg may be freed. */
  void (*closed)(void *arg);
};

/* What went through a channel, for tests and `aio status`. */
struct channel_stats {
  uint64_t frames_in, bytes_in;   /* read from the peer */
  uint64_t frames_out, bytes_out; /* queued for it */
  uint64_t writes;                /* flushes that wrote something */
  uint64_t lost;                  /* queued bytes never written (peer gone) */
  size_t high;                    /* most bytes waiting to be written at once */
};

typedef int (*channel_sink)(void *arg, const char *data, size_t len);

struct channel {
  uv_pipe_t pipe;
  struct bus_reader rd;
  struct bus_out out; /* frames queued, not written yet */
  const struct channel_ops *ops;
  void *arg;
  int open;  /* read and written: 0 once shut, closed or never opened */
  int piped; /* pipe is a libuv handle (0: a sink's channel) */
  channel_sink sink;
  struct channel_stats st;
  size_t last_start; /* where the last frame queued begins in out */
};

/* Open c on fd (a socket the channel owns from here on) and start reading.
 * 0 or a negative libuv error. */
int channel_open(struct channel *c, uv_loop_t *loop, int fd,
                 const struct channel_ops *ops, void *arg);
/* Open c with no fd: flushes hand the bytes to sink. */
void channel_open_sink(struct channel *c, channel_sink sink,
                       const struct channel_ops *ops, void *arg);
/* Bytes from the peer: every whole frame in them to ops->frame. 0, or the
 * error that shut the channel. */
int channel_feed(struct channel *c, const char *data, size_t len);
/* Queue msg's frame (borrowed) / an encoded frame, newline included.
 * 0, -EPIPE once the channel is shut, -EMSGSIZE or -ENOMEM. */
int channel_send(struct channel *c, const json_t *msg);
int channel_send_raw(struct channel *c, const char *frame, size_t len);
/* The last frame queued, as channel_last() found it right after its
 * send: where it starts and ends in the channel's buffer, and how many
 * flushes there had been. */
struct channel_last {
  size_t start, end;
  uint64_t writes;
};
/* Where the frame just queued is (call it right after the send). */
struct channel_last channel_last(const struct channel *c);
/* Put frame[0, len) (newline included) in place of the frame l names, if
 * nothing of it was written yet and nothing was queued after it (a run of
 * deliveries made into one frame as it grows); l then names the new one.
 * 0, -ESTALE (it was written, or is no longer the last: send a frame of
 * its own), -EPIPE once the channel is shut, -EMSGSIZE or -ENOMEM. */
int channel_replace_last(struct channel *c, struct channel_last *l,
                         const char *frame, size_t len);
/* Write what is queued (a peer gone: dropped, and counted). */
void channel_flush(struct channel *c);
/* Read and write no more (the peer said nonsense). */
void channel_shut(struct channel *c);
/* The peer is dead: read, in bounded amount, what it wrote before it died
 * and is still in the socket, each frame to cb. Nothing when shut. */
void channel_drain(struct channel *c, bus_line_cb cb, void *arg);
/* Close it; ops->closed follows (at once for a sink's channel). */
void channel_close(struct channel *c);
static inline int channel_is_open(const struct channel *c) { return c->open; }
/* Its socket while open (an upgrade hands it to the next image), else -1. */
static inline int channel_fd(const struct channel *c) {
  uv_os_fd_t fd;
  return c->open && c->piped &&
                 uv_fileno((const uv_handle_t *)&c->pipe, &fd) == 0
             ? fd
             : -1;
}
/* Bytes queued for the peer and not written yet: in the channel's own
 * buffer and in libuv's write queue. */
size_t channel_queued(const struct channel *c);
static inline const struct channel_stats *
channel_stats(const struct channel *c) {
  return &c->st;
}

#endif
