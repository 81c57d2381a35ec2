/* conn.h - accepted connections and UDP endpoints: aio_conn_t. */
#ifndef AIO_WORKER_CONN_H
#define AIO_WORKER_CONN_H

#include <stdint.h>
#include <uv.h>

#include "aio.h"

struct wserver;

/* Reading pauses while more than this is queued for a slow reader, and
 * resumes when everything has been flushed. */
#define CONN_PAUSE_BYTES (256 * 1024)

/* While output waits, what the peer took is looked at this many times per
 * timeout (libuv reports a write only when all of it is done), so a peer
 * that reads slowly but steadily is told from one that stopped reading. */
#define CONN_TIMEOUT_LOOKS 4

struct aio_conn_s {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
    uv_udp_t udp;
  } h;
  struct wserver *srv;
  const aio_protocol_t *proto;
  void *data;
  struct aio_conn_s *prev, *next;
  size_t queued; /* bytes handed to libuv and not yet written */
  /* Timeouts (streams only), in loop milliseconds; 0 is off / none. One
   * timer is armed for the earliest of them and, when it fires, looks at
   * what happened meanwhile: activity only moves them later, so reads and
   * writes never touch the timer. */
  uv_timer_t timer;
  uint64_t idle_ms;    /* no byte either way this long: closed */
  uint64_t send_ms;    /* queued output that makes no progress: closed */
  uint64_t last_io;    /* a byte was read, or taken by the kernel */
  uint64_t send_at;    /* the peer last took output (or the queue began) */
  uint64_t deadline;   /* aio_conn_set_deadline(), absolute */
  uint64_t armed;      /* when the timer fires, 0: not armed */
  uint64_t out_total;  /* bytes aio_write() took, ever */
  uint64_t taken_seen; /* of them, what the peer had at the last look */
  aio_timeout_fn *on_deadline;
  int lost_status; /* for connection_lost */
  /* paused: by the runner (CONN_PAUSE_BYTES); user_paused: by the
   * protocol; reading: uv_read_start is in effect. */
  unsigned closing : 1, paused : 1, udp : 1, made : 1, user_paused : 1,
      reading : 1, handles : 2; /* libuv handles still to close before free */
  uv_shutdown_t sreq;
};

/* A new connection of srv on the accepted socket fd (stolen: closed on
 * failure too). NULL when it cannot be made: out of memory, or libuv
 * refused the socket (logged). */
struct aio_conn_s *conn_new_stream(struct wserver *srv, int fd);
/* Start it: connection_made, then reading and the timeouts. */
void conn_start(struct aio_conn_s *c);
/* Close at once (no flush), e.g. when accept failed or a timeout reset
 * it: connection_lost gets status. */
void conn_abort(struct aio_conn_s *c, int status);
/* The UDP endpoint of srv on fd. 0 or a negative errno. */
int conn_open_udp(struct wserver *srv, int fd);
/* timeout.c: c's timer and its server's timeouts (c->srv is set). */
void conn_timer_init(struct aio_conn_s *c);
/* timeout.c: arm c's timer for its next due time (after a timeout or the
 * deadline changed, or at the start). */
void conn_timer_arm(struct aio_conn_s *c);
/* Output began to wait in c's queue: the send timeout runs from now. */
void conn_timer_queue_began(struct aio_conn_s *c);

/* Close connections idle for idle_ms (drain). */
void conn_sweep_idle(uint64_t now, uint64_t idle_ms);

#endif
