/*
 * worker.h - one worker process: a fresh libuv loop that serves its slot's
 * sockets, runs the jobs and signal deliveries the master sends, and
 * heartbeats over its socketpair.
 */
#ifndef AIO_WORKER_WORKER_H
#define AIO_WORKER_WORKER_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "aio.h"
#include "app.h"
#include "bus.h"
#include "bus_index.h"

struct wserver;
struct loader;
struct job_run;
struct emit_wait;
struct emit_waits;

/* An own emit whose listeners run here. */
struct local_item {
  uint64_t seq;
  size_t first;      /* its first listener: w->listeners[first] */
  json_t *data;      /* owned */
  uint64_t ring_end; /* in the ring up to here; 0: kept by the master */
  size_t bytes; /* of its frame: what it counts against bus_journal_bytes */
  struct emit_wait *wait; /* aio_emit_wait()'s, or NULL (emit_wait.c) */
};

/* An own emit sent to the master with "keep" (it has broadcast listeners
 * here too): its data, until the master's deliver back names its seq. */
struct kept_emit {
  uint64_t seq;
  json_t *data; /* owned */
  size_t bytes; /* of its frame */
};

/* An aio_emit() of a module's init, sent once the worker is ready. */
struct early_emit {
  char *signal; /* owned */
  json_t *data; /* owned */
  size_t bytes; /* of its frame, counted against bus_journal_bytes */
};

/* The signal whose async listener (AIO_LISTENER_ASYNC) has not called
 * aio_signal_done() yet: the deliveries and own emits behind it wait. */
struct pending_signal {
  aio_signal_t sig; /* what every listener of a signal gets; lasts */
  char name[BUS_MAX_SIGNAL + 1];
  json_t *data; /* owned while active */
  int active;
  int local; /* an own emit (it), else a delivery (n, ks) */
  size_t k;  /* the listener in hand */
  struct local_item it;
  uint64_t n;
  json_int_t *ks; /* owned: the frame's listeners after k */
  size_t nk;
};

struct worker {
  uv_loop_t loop;
  uint64_t emit_waited_turn; /* uv_now + 1 of the turn in which aio_emit()
                                waited for the master in vain; 0: none */
  int slot;
  unsigned gen;
  struct app *app;
  struct loader *loader;
  uv_pipe_t bus;
  struct bus_reader rd;
  int bus_open;
  int bus_fd;            /* the pipe's descriptor: frames go out by write(2) */
  struct bus_out out;    /* frames for the master, not yet written */
  uv_prepare_t bus_prep; /* writes them before the loop sleeps */
  uv_poll_t bus_room;    /* on a dup of bus_fd: the socket has room again */
  int bus_room_fd;
  int out_urgent;        /* out holds more than acknowledgements */
  struct bus_mark *mark; /* shared with the master */
  uint64_t delivers;     /* deliveries received (a run's one by one) */
  uint64_t ack_n;        /* the last delivery finished, not yet acknowledged */
  /* The rest of a run of ref delivers (its kept emits from seq on, left
   * of them) that the end of a slice or an async listener cut short: run
   * before the reader goes on. left 0: none. */
  struct {
    uint64_t seq;
    size_t left;
    json_int_t *ks; /* owned: its listeners, nk of them */
    size_t nk;
    char signal[BUS_MAX_SIGNAL + 1];
  } rest;
  /* Own emits with once-per-emit listeners here are run here, in emit
   * order, from lq[lq_head, lq_len). Their frames wait in the ring of
   * w->mark, released as they finish, or, when they went to the master,
   * in its journal until local_ack says they finished. */
  struct bus_index sigs; /* signal -> its listeners here, by kind */
  /* The signal of the last aio_emit() (a burst emits one name over and
   * over): its entry in sigs (or NULL), and whether its name goes into a
   * frame as it is, without hashing or checking it again. */
  struct {
    char name[BUS_MAX_SIGNAL + 1];
    size_t n; /* 0: none yet */
    const struct bus_index_sig *ix;
    int plain;
  } last_sig;
  struct local_item *lq;
  size_t lq_head, lq_len, lq_cap;
  size_t lq_bytes; /* the frames' bytes of lq[lq_head, lq_len) */
  uv_idle_t lq_idle;
  uv_idle_t bus_idle;   /* splits frames a paused read held back */
  uint64_t slice_start; /* uv_hrtime() when this turn's slice began */
  uint64_t clock_ns;    /* uv_hrtime() as the slice last read it */
  int clock_fresh;      /* and nothing ran since that a listener's start
                           would have to be read after */
  uint64_t local_ack;   /* the last journaled own emit finished, not yet
                           acknowledged */
  /* Own emits kept for our broadcast listeners, oldest first, in
   * kq[kq_head, kq_len): within bus_queue entries and bus_queue_bytes
   * (past them an emit goes without keep, its data in the deliver). */
  struct kept_emit *kq;
  size_t kq_head, kq_len, kq_cap, kq_bytes;
  uv_timer_t heartbeat;
  uv_timer_t drain_timer;
  uv_async_t sig_async;  /* woken by the TERM/QUIT handler */
  uv_async_t soon_async; /* woken by aio_call_soon() (call_soon.c) */
  struct pending_signal pend;
  struct emit_waits *waits; /* aio_emit_wait()'s (emit_wait.c) */
  struct wserver *servers;
  size_t nservers;
  struct aio_conn_s *conns; /* every open connection, for drain and status */
  size_t nconns;
  unsigned holds; /* aio_server_hold()s not released: a drain waits */
  int draining;
  int stopping;
  int exit_code;
  int in_test; /* aio_test_serve()'s worker: no bus, signals stay local */
  int ready;   /* the ready frame is queued: emits go out as they come */
  /* Emits before ready (a module's init), in order, bounded as the
   * worker's own signals are (bus_journal, bus_journal_bytes). */
  struct early_emit *early;
  size_t nearly, early_cap, early_bytes;
  uint64_t emit_seq;
  const aio_decl_t **listeners; /* resolved s.listeners, same order */
  const aio_decl_t **jobs;      /* 3 per schedule: func, cb, err */
  struct job_run *runs;         /* runs in hand, newest first (jobs.c) */
  size_t nruns;                 /* of them not finished */
  size_t nruns_late;            /* of them timed out, kept for a late done */
  char readbuf[64 * 1024];      /* shared: data_received runs to completion */
};

/* The worker this thread serves: the worker process's own in its (only)
 * loop thread, an aio_test_serve() worker in that harness thread, NULL
 * elsewhere (the master, a test's main thread). Thread-local so that a
 * test can serve a protocol beside the code that talks to it; in an
 * executable it is a plain %fs-relative load. */
extern _Thread_local struct worker *worker_self;

/* What aio_emit() calls where no worker runs, in a mapped command (`aio
 * NAME`, its own process): supervisor/main.c installs one that sends the
 * request `aio emit` sends to the running master (worker/ cannot call
 * supervisor/). data borrowed; 0 or a negative errno. NULL: none. */
typedef int worker_command_emit_fn(const char *signal, const json_t *data);
void worker_set_command_emit(worker_command_emit_fn *fn);

/* Serve until told to stop. fds[i] is this slot's socket for server i.
 * Returns the process exit status. */
int worker_run(struct app *app, int slot, unsigned gen, int bus_fd,
               const int *fds, struct bus_mark *mark);

/* Queue a bus message for the master (borrowed). 0 or a negative errno.
 * Queued frames are written together before the loop sleeps, or sooner. */
int worker_send(struct worker *w, const json_t *msg);
/* Call before user code that may kill the worker (a protocol callback, a
 * listener, a job): what was emitted and acknowledged so far goes into the
 * kernel first, not in memory that dies with the worker; otherwise the
 * master would lose those emits and mistake a finished delivery for the
 * one in hand. Waits (bounded) only when the bus is full. */
void worker_bus_sync(struct worker *w);

/* Around a protocol callback of srv (which: BUS_PROTO_*): worker_bus_sync
 * first, and a mark of what runs, which the master names in its log if
 * the callback never returns (docs/bus.md, Liveness). */
void worker_proto_enter(struct worker *w, const struct wserver *srv,
                        enum bus_proto_cb which);
void worker_proto_leave(struct worker *w);

/* From now on aio_call_soon() reaches w's loop (its soon_async); after
 * worker_soon_close() nothing does, and what was queued is not run. */
int worker_soon_open(struct worker *w);
void worker_soon_close(void);

/* Called when a connection closed, to finish a drain. */
void worker_conn_gone(struct worker *w);
/* Called when aio_emit_wait()s finished (emit_wait.c), likewise. */
void worker_waits_changed(struct worker *w);

/* After the loop stopped: abort every connection (each gets its
 * connection_lost), close every handle, run the closes and close the loop.
 * Call in the thread that ran the loop (worker_self == w). */
void worker_close_loop(struct worker *w);

#endif
