/* server.h - one [server:NAME] inside a worker: its socket and protocol,
 * accepting, and what it counts (refusals, timeouts). */
#ifndef AIO_WORKER_SERVER_H
#define AIO_WORKER_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "aio.h"
#include "counters.h"
#include "settings.h"

struct worker;

/* What a server counts and says, X(enum, is a warning, its counter). A
 * warning is said at once, then at most once per SERVER_TALLY_MS with how
 * many there were; the timeouts (at info level) only once per
 * SERVER_TALLY_MS. The counts themselves are in the shared counters
 * (counters.h), which the master reports. */
#define SERVER_EVENTS(X)                                                       \
  X(SERVER_IDLE_TIMEOUT, 0, CTR_IDLE_TIMEOUT)                                  \
  X(SERVER_SEND_TIMEOUT, 0, CTR_SEND_TIMEOUT)                                  \
  X(SERVER_DEADLINE, 0, CTR_DEADLINE)                                          \
  X(SERVER_OVER_MAX_CONNECTIONS, 1, CTR_REFUSED)                               \
  X(SERVER_ACCEPT_PAUSED, 1, CTR_ACCEPT_PAUSED)

enum server_event {
#define SERVER_ENUM(e, warn, ctr) e,
  SERVER_EVENTS(SERVER_ENUM)
#undef SERVER_ENUM
      SERVER_NEVENTS
};

/* How long accepting pauses when accept(2) runs out of descriptors (or
 * memory): the connections wait in the listen queue meanwhile, instead of
 * being accepted and closed unseen. */
#define SERVER_ACCEPT_PAUSE_MS 250
/* Connections taken per wakeup: a flood of them does not hold up the
 * loop's other work. */
#define SERVER_ACCEPT_SLICE 64
/* At most one line per this long per kind of event and server. */
#define SERVER_TALLY_MS 5000

struct wserver {
  struct worker *w;
  const struct server_conf *conf;
  const aio_decl_t *decl;
  /* What serves the connections: the configured protocol, or the one a
   * factory handed to aio_server_serve() with its data (borrowed). */
  const aio_protocol_t *proto;
  void *serve_data;
  unsigned holds; /* aio_server_hold() minus aio_server_release() */
  int fd;
  uv_poll_t accept_poll;  /* stream servers with a protocol: fd readable */
  uv_timer_t resume;      /* accepting again after SERVER_ACCEPT_PAUSE_MS */
  uv_timer_t tally;       /* the next counting line is due */
  int accept_err;         /* what paused accepting last (errno) */
  struct aio_conn_s *udp; /* the endpoint of a UDP server */
  aio_server_t pub;
  int listening; /* accept_poll is ours (and fd with it) */
  int timers;    /* resume and tally were initialised */
  /* Its counters since the worker started: in the mapping the master
   * reads (counters.h), or in own when there is none (aio_test_serve). */
  struct ctr_server *ctr;
  struct ctr_server own;
  uint64_t unsaid[SERVER_NEVENTS]; /* since the last line */
  uint64_t said_at[SERVER_NEVENTS];
};

/* Take over fd and start serving. 0 or a negative errno (logged). */
int server_start(struct wserver *s);
/* Stop taking new connections (the master keeps the socket open). */
void server_stop_accepting(struct wserver *s);
/* Count one event of s (and say so, as SERVER_EVENTS says). */
void server_count(struct wserver *s, enum server_event e);

#endif
