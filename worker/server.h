/* server.h - one [server:NAME] inside a worker: its socket and protocol. */
#ifndef AIO_WORKER_SERVER_H
#define AIO_WORKER_SERVER_H

#include <uv.h>

#include "aio.h"
#include "settings.h"

struct worker;

struct wserver {
  struct worker *w;
  const struct server_conf *conf;
  const aio_decl_t *decl;
  int fd;
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  struct aio_conn_s *udp; /* the endpoint of a UDP server */
  aio_server_t pub;
  int listening;
};

/* Take over fd and start serving. 0 or a negative errno (logged). */
int server_start(struct wserver *s);
/* Stop taking new connections (the master keeps the socket open). */
void server_stop_accepting(struct wserver *s);

#endif
