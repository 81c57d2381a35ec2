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
  uint64_t last_active;
  int lost_status; /* for connection_lost */
  unsigned closing : 1, paused : 1, udp : 1, made : 1;
  uv_shutdown_t sreq;
};

/* A new connection of srv, its handle initialised (not yet accepted).
 * NULL on out of memory. */
struct aio_conn_s *conn_new_stream(struct wserver *srv);
/* Start it after uv_accept: connection_made, then reading. */
void conn_start(struct aio_conn_s *c);
/* Close at once (no flush), e.g. when accept failed. */
void conn_abort(struct aio_conn_s *c, int status);
/* The UDP endpoint of srv on fd. 0 or a negative errno. */
int conn_open_udp(struct wserver *srv, int fd);
/* Close connections idle for idle_ms (drain). */
void conn_sweep_idle(uint64_t now, uint64_t idle_ms);

#endif
