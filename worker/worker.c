/*
 * worker.c - the worker process: fresh loop, modules, servers, and the bus
 * dispatch (offer a frame to our handler; a frame we do not understand ends
 * the channel, as in OpenBSD's privsep daemons). Listeners run in slices
 * of a loop turn, aio_emit() refuses at the bus's bounds, and the shared
 * mark says whether the loop turns and which callback holds it.
 */
#define _GNU_SOURCE
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "bus_codec.h"
#include "conn.h"
#include "counters.h"
#include "emit_wait.h"
#include "loader.h"
#include "log.h"
#include "proctitle.h"
#include "server.h"
#include "testing.h"
#include "util.h"

_Thread_local struct worker *worker_self;

/* The signal handler's target: the process's worker, whichever thread the
 * kernel picks to run the handler (a module may start threads of its own). */
static struct worker *signal_worker;

/* During a drain a connection that has been quiet this long is closed:
 * long enough that a request already on the wire has arrived, short enough
 * that an idle keep-alive client does not hold the old worker. */
#define DRAIN_IDLE_MS 1000

/* Frames are batched in w->out and written before the loop sleeps (or
 * sooner, once this much is waiting): one write(2) for many frames. */
#define BUS_EAGER_FLUSH (16 * 1024)
/* How long a worker waits for room on its bus before it runs a listener or
 * a job; past it the frames stay queued and the user code runs anyway. */
#define BUS_SYNC_FLUSH_MS 2000
/* A loop turn runs listeners for at most this long per source (deliver
 * frames from the master, the worker's own signals), then lets the loop
 * go on: timers (the heartbeat), accepts and reads are never starved by
 * a flood of signals. The rest waits for the next turn. */
#define BUS_SLICE_NS (2 * 1000 * 1000)
/* How long aio_emit() waits for the master to read when the bus buffer
 * (bus_buffer) is full, before it refuses. */
#define BUS_EMIT_WAIT_MS 100

static void on_bus_room(uv_poll_t *h, int status, int events);

/* Write what is queued; when the socket is full, wait up to timeout_ms,
 * then let the loop tell us when there is room. */
static void bus_flush(struct worker *w, int timeout_ms) {
  int err = w->bus_open ? bus_out_flush(&w->out, w->bus_fd, timeout_ms) : 0;
  if (err == 0)
    w->out_urgent = 0;
  if (err == -EAGAIN) {
    if (!uv_is_active((uv_handle_t *)&w->bus_room))
      uv_poll_start(&w->bus_room, UV_WRITABLE, on_bus_room);
    return;
  }
  if (uv_is_active((uv_handle_t *)&w->bus_room))
    uv_poll_stop(&w->bus_room);
  if (err) {
    /* The master is gone; the read side sees EOF and ends the worker. */
    w->bus_open = 0;
    bus_out_close(&w->out);
  }
}

static void on_bus_room(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  bus_flush(h->data, 0);
}

/* Every turn of the loop, before it sleeps: the master, when a heartbeat
 * is late, reads here whether the loop turns. */
static void on_bus_prepare(uv_prepare_t *h) {
  struct worker *w = h->data;
  w->mark->turn_ms = bus_mono_ms();
  bus_flush(w, 0);
}

/* Which user callback runs, for the master's kill log if it never
 * returns (docs/bus.md, Liveness). */
static void cb_enter(struct worker *w, uint32_t kind, size_t index) {
  w->mark->cb_kind = kind;
  w->mark->cb_index = (uint32_t)index;
  w->mark->cb_since = bus_mono_ms();
  w->clock_fresh = 0;
}

static void cb_leave(struct worker *w) {
  w->mark->cb_since = 0;
  w->clock_fresh = 0; /* user code ran since the clock was read */
}

/* A listener's start: the clock the slice check just read, when nothing
 * happened since (one clock read per signal, not two), else a new one. */
static void cb_enter_listener(struct worker *w, size_t k) {
  w->mark->cb_kind = BUS_CB_LISTENER;
  w->mark->cb_index = (uint32_t)k;
  w->mark->cb_since = w->clock_fresh ? w->clock_ns / 1000000 : bus_mono_ms();
  w->clock_fresh = 0;
}

/* This turn's slice of user code begins now. (uv_hrtime() and
 * bus_mono_ms() read the same clock, CLOCK_MONOTONIC.) */
static void slice_begin(struct worker *w) {
  w->slice_start = w->clock_ns = uv_hrtime();
  w->clock_fresh = 1;
}

/* Has this turn's slice of user code been spent? */
static int slice_spent(struct worker *w) {
  w->clock_ns = uv_hrtime();
  w->clock_fresh = 1;
  return w->clock_ns - w->slice_start >= BUS_SLICE_NS;
}

void worker_bus_sync(struct worker *w) {
  /* Acknowledgements may wait: the mark tells the master which deliveries
   * were finished. */
  if (w && w->out_urgent) {
    bus_flush(w, BUS_SYNC_FLUSH_MS);
    w->clock_fresh = 0; /* it may have waited */
  }
}

void worker_proto_enter(struct worker *w, const struct wserver *srv,
                        enum bus_proto_cb which) {
  worker_bus_sync(w);
  if (w && w->mark && srv >= w->servers && srv < w->servers + w->nservers)
    cb_enter(w, BUS_CB_PROTOCOL,
             (size_t)(srv - w->servers) * BUS_PROTO_COUNT + which);
}

void worker_proto_leave(struct worker *w) {
  if (w && w->mark)
    cb_leave(w);
}

/* A frame was added to w->out. */
static void bus_queued(struct worker *w, int urgent) {
  w->out_urgent |= urgent;
  if (bus_out_pending(&w->out) >= BUS_EAGER_FLUSH)
    bus_flush(w, 0);
}

static int bus_queue(struct worker *w, const json_t *msg, int urgent) {
  if (!w->bus_open)
    return -EPIPE;
  int err = bus_out_add(&w->out, msg);
  if (err == 0)
    bus_queued(w, urgent);
  return err;
}

int worker_send(struct worker *w, const json_t *msg) {
  return bus_queue(w, msg, 1);
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

static void worker_finish(struct worker *w, int code) {
  if (w->stopping)
    return;
  w->stopping = 1;
  w->exit_code = code;
  uv_stop(&w->loop);
}

/* A drain ends when the last connection has closed, the worker's own
 * emits have run and no factory holds the worker (aio_server_hold). */
static void drain_check(struct worker *w) {
  if (w->draining && w->nconns == 0 && w->lq_head == w->lq_len &&
      w->nruns == 0 && !w->pend.active && w->holds == 0 &&
      emit_wait_pending(w) == 0)
    worker_finish(w, 0);
}

void worker_conn_gone(struct worker *w) { drain_check(w); }

void worker_waits_changed(struct worker *w) { drain_check(w); }

static void on_drain_tick(uv_timer_t *t) {
  struct worker *w = t->data;
  conn_sweep_idle(uv_now(&w->loop), DRAIN_IDLE_MS);
}

static void start_drain(struct worker *w) {
  if (w->draining)
    return;
  w->draining = 1;
  log_info("draining: %zu open connection%s%s", w->nconns,
           w->nconns == 1 ? "" : "s", w->holds ? ", held by a factory" : "");
  for (size_t i = 0; i < w->nservers; i++)
    server_stop_accepting(&w->servers[i]);
  /* UDP endpoints have no "in flight" to wait for; a factory's own
   * handles are waited for while it holds the worker. */
  for (size_t i = 0; i < w->nservers; i++)
    if (w->servers[i].udp)
      aio_close(w->servers[i].udp);
  drain_check(w);
  if (w->stopping)
    return;
  uv_timer_start(&w->drain_timer, on_drain_tick, 100, 100);
}

/* Signals reach the worker through a plain handler and uv_async_send
 * (async-signal-safe), not uv_signal_t: the master's fork hygiene closes
 * descriptors libuv's signal machinery recreates in the child. */
static volatile sig_atomic_t got_term, got_quit;

static void on_os_signal(int signum) {
  if (signum == SIGTERM)
    got_term = 1;
  else
    got_quit = 1;
  if (signal_worker)
    uv_async_send(&signal_worker->sig_async);
}

static void on_sig_async(uv_async_t *h) {
  struct worker *w = h->data;
  if (got_quit)
    worker_finish(w, 0);
  else if (got_term)
    start_drain(w);
}

static void on_heartbeat(uv_timer_t *t) {
  struct worker *w = t->data;
  w->mark->turn_ms = bus_mono_ms();
  json_t *m = bus_msg(BUS_HEARTBEAT);
  json_object_set_new(m, "conns", json_integer((json_int_t)w->nconns));
  worker_send(w, m);
  json_decref(m);
}

/* ---- aio_call_soon ------------------------------------------------------ */

/* Calls waiting past this are refused (-EAGAIN), counted in the mark: a
 * thread that produces faster than the loop runs is told, not buffered
 * without end. */
#define SOON_MAX 65536
/* The queue's array is given back after a burst above this. */
#define SOON_KEEP 256

struct soon_item {
  void (*fn)(void *arg);
  void *arg;
};

/* The process's one queue of aio_call_soon() calls: any thread puts, the
 * loop thread takes, under mu. A ring q[head .. head+len) mod cap. w is
 * the worker that runs them, NULL before it can (and closed once it
 * exits). */
static struct {
  pthread_mutex_t mu;
  struct soon_item *q;
  size_t head, len, cap;
  struct worker *w;
  int closed;
} soon = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* With soon.mu held: room for one more, growing by doubling. */
static int soon_grow_locked(void) {
  if (soon.len < soon.cap)
    return 0;
  size_t cap = soon.cap ? soon.cap * 2 : 64;
  struct soon_item *q = malloc(cap * sizeof(*q));
  if (q == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < soon.len; i++)
    q[i] = soon.q[(soon.head + i) % soon.cap];
  free(soon.q);
  soon.q = q;
  soon.head = 0;
  soon.cap = cap;
  return 0;
}

int aio_call_soon(void (*fn)(void *arg), void *arg) {
  if (fn == NULL)
    return -EINVAL;
  if (worker_self == NULL && testing_app())
    testing_loop(); /* the test's thread: its loop takes the calls */
  int err = 0;
  pthread_mutex_lock(&soon.mu);
  struct worker *w = soon.w;
  if (w == NULL) {
    err = soon.closed ? -EPIPE : -ENOTSUP;
  } else if (soon.len >= SOON_MAX) {
    w->mark->soon_refused++; /* under mu: threads count without races */
    err = -EAGAIN;
  } else if ((err = soon_grow_locked()) == 0) {
    soon.q[(soon.head + soon.len++) % soon.cap] = (struct soon_item){fn, arg};
    /* Coalesced by libuv: one wakeup for a burst of calls. */
    uv_async_send(&w->soon_async);
  }
  pthread_mutex_unlock(&soon.mu);
  return err;
}

/* On the loop: the calls queued so far, for one slice of the turn at
 * most; the rest in the next turn, so a thread that floods the queue
 * does not starve I/O and timers. */
static void on_soon(uv_async_t *h) {
  struct worker *w = h->data;
  slice_begin(w);
  for (size_t i = 0;; i++) {
    pthread_mutex_lock(&soon.mu);
    if (soon.len == 0 || (i > 0 && slice_spent(w))) {
      int more = soon.len > 0;
      if (!more && soon.cap > SOON_KEEP) {
        free(soon.q);
        soon.q = NULL;
        soon.head = soon.cap = 0;
      }
      pthread_mutex_unlock(&soon.mu);
      if (more)
        uv_async_send(h);
      break;
    }
    struct soon_item it = soon.q[soon.head];
    soon.head = (soon.head + 1) % soon.cap;
    soon.len--;
    pthread_mutex_unlock(&soon.mu);
    worker_bus_sync(w);
    cb_enter(w, BUS_CB_SOON, 0);
    it.fn(it.arg);
    cb_leave(w);
  }
  drain_check(w);
}

/* Is this process a worker whose loop takes calls? (Not the master, not
 * `aio test`, whose emits run their listeners where they are made.) */
static int soon_here(void) {
  pthread_mutex_lock(&soon.mu);
  int here = soon.w != NULL || soon.closed;
  pthread_mutex_unlock(&soon.mu);
  return here;
}

/* From now on aio_call_soon() reaches w's loop. */
int worker_soon_open(struct worker *w) {
  int err = uv_async_init(&w->loop, &w->soon_async, on_soon);
  if (err)
    return err;
  w->soon_async.data = w;
  pthread_mutex_lock(&soon.mu);
  soon.w = w;
  soon.closed = 0;
  pthread_mutex_unlock(&soon.mu);
  return 0;
}

/* No more calls: before the loop's handles close. What is still queued
 * is not run (its owners are threads of a module about to be unloaded). */
void worker_soon_close(void) {
  pthread_mutex_lock(&soon.mu);
  if (soon.w)
    soon.closed = 1;
  soon.w = NULL;
  free(soon.q);
  soon.q = NULL;
  soon.head = soon.len = soon.cap = 0;
  pthread_mutex_unlock(&soon.mu);
}

/* ---- jobs and signals ------------------------------------------------ */

/* Timed-out runs kept for a late aio_event_done(), so that it finds its
 * event still there; past this many the oldest is let go. */
#define RUN_LATE_KEEP 1024

/* One run of a job in hand: its event stays where the scheduler saw it
 * until aio_event_done() (or, timed out, until the late call or until
 * RUN_LATE_KEEP newer ones timed out). */
struct job_run {
  aio_event_t ev; /* what the scheduler holds */
  struct worker *w;
  struct job_run *next; /* w->runs */
  json_int_t id;        /* the master's run frame id */
  size_t index;         /* job * 3 + which */
  json_t *result;       /* owned: ev.result, for a cb */
  char *error;          /* owned: ev.error, for an err */
  char *node;           /* owned: ev.node */
  uv_timer_t timer;     /* the schedule's timeout */
  int in_call;          /* the scheduler has not returned yet */
  int finished;         /* its done frame is queued */
  int timed_out;
};

static void run_freed(uv_handle_t *h) {
  struct job_run *r = h->data;
  json_decref(r->result);
  free(r->error);
  free(r->node);
  free(r);
}

static void run_unlink(struct job_run *r) {
  for (struct job_run **pp = &r->w->runs; *pp; pp = &(*pp)->next)
    if (*pp == r) {
      *pp = r->next;
      break;
    }
  if (r->timed_out)
    r->w->nruns_late--;
}

/* Forget r: its memory goes when its timer has closed. */
static void run_release(struct job_run *r) {
  run_unlink(r);
  uv_close((uv_handle_t *)&r->timer, run_freed);
}

/* The message of a failure: the string result of aio_event_done(), or
 * what the status says. */
static void run_error_text(char *buf, size_t n, int status,
                           const json_t *result) {
  if (json_is_string(result))
    snprintf(buf, n, "%s", json_string_value(result));
  else if (status < 0 && status > -4096)
    snprintf(buf, n, "status %d (%s)", status, strerror(-status));
  else
    snprintf(buf, n, "status %d", status);
}

/* Tell the master how r ended (once): 0 with its result for `cb`, or a
 * status and a message for `err`. */
static void run_finish(struct job_run *r, int status, const json_t *result,
                       const char *error) {
  struct worker *w = r->w;
  char text[512];
  if (r->finished)
    return;
  r->finished = 1;
  uv_timer_stop(&r->timer);
  if (status && error == NULL) {
    run_error_text(text, sizeof(text), status, result);
    error = text;
  }
  json_t *done = bus_msg(BUS_DONE);
  json_object_set_new(done, "id", json_integer(r->id));
  json_object_set_new(done, "ok", json_boolean(status == 0));
  if (status) {
    json_object_set_new(done, "status", json_integer(status));
    json_object_set_new(done, "error", json_string(error));
  } else if (result && r->index % 3 == 0) {
    json_object_set(done, "result", (json_t *)result);
  }
  int err = worker_send(w, done);
  if (err && err != -EPIPE && json_object_get(done, "result")) {
    /* A result the bus cannot carry fails the run, it does not vanish. */
    json_object_del(done, "result");
    json_object_set_new(done, "ok", json_false());
    json_object_set_new(done, "status", json_integer(err));
    json_object_set_new(done, "error",
                        json_string(err == -EMSGSIZE
                                        ? "its result is over the bus's frame "
                                          "size (256 KiB)"
                                        : "out of memory for its result"));
    worker_send(w, done);
  }
  json_decref(done);
  w->nruns--;
  drain_check(w);
}

static void on_run_timeout(uv_timer_t *t) {
  struct job_run *r = t->data;
  struct worker *w = r->w;
  char text[128];
  double secs = w->app->s.schedules[r->index / 3].timeout;
  snprintf(text, sizeof(text), "timed out after %g s", secs);
  log_fields(
      AIO_LOG_WARN,
      LOG_FIELDS(LOG_STR("schedule", r->ev.name), LOG_INT("run", r->ev.run)),
      "[schedule:%s] run %lld: %s %s", r->ev.name, r->ev.run,
      r->index % 3 == 0   ? "func"
      : r->index % 3 == 1 ? "cb"
                          : "err",
      text);
  run_finish(r, -ETIMEDOUT, NULL, text);
  r->timed_out = 1;
  /* Kept for its late aio_event_done(), within a bound: the oldest goes
   * (the list is newest first). */
  if (++w->nruns_late > RUN_LATE_KEEP) {
    struct job_run *oldest = NULL;
    for (struct job_run *q = w->runs; q; q = q->next)
      if (q->timed_out)
        oldest = q;
    if (oldest)
      run_release(oldest);
  }
}

/* A done frame for a run that never started (an unknown job, no memory). */
static void run_refused(struct worker *w, json_int_t id, int status,
                        const char *error) {
  json_t *done = bus_msg(BUS_DONE);
  json_object_set_new(done, "id", json_integer(id));
  json_object_set_new(done, "ok", json_false());
  json_object_set_new(done, "status", json_integer(status));
  json_object_set_new(done, "error", json_string(error));
  worker_send(w, done);
  json_decref(done);
}

static void run_job(struct worker *w, json_t *msg) {
  json_int_t id = json_integer_value(json_object_get(msg, "id"));
  json_int_t job = json_integer_value(json_object_get(msg, "job"));
  json_int_t which = json_integer_value(json_object_get(msg, "which"));
  json_int_t run = json_integer_value(json_object_get(msg, "run"));
  if (job < 0 || (size_t)job >= w->app->s.nschedules || which < 0 ||
      which > 2 || w->jobs[job * 3 + which] == NULL) {
    log_warnx("bus: run for unknown job %lld/%lld", (long long)job,
              (long long)which);
    run_refused(w, id, -ENOENT, "no such job in this worker");
    return;
  }
  struct job_run *r = calloc(1, sizeof(*r));
  const char *error = json_string_value(json_object_get(msg, "error"));
  if (r == NULL ||
      (which == 2 && (r->error = strdup(error ? error : "failed")) == NULL)) {
    free(r);
    run_refused(w, id, -ENOMEM, "out of memory");
    return;
  }
  r->w = w;
  r->id = id;
  r->index = (size_t)(job * 3 + which);
  r->ev.name = w->app->s.schedules[job].name;
  r->ev.run = run;
  r->ev.due = json_number_value(json_object_get(msg, "due"));
  const char *node = json_string_value(json_object_get(msg, "node"));
  if (node && (r->node = strdup(node)) == NULL) {
    free(r->error);
    free(r);
    run_refused(w, id, -ENOMEM, "out of memory");
    return;
  }
  r->ev.node = r->node;
  if (which == 1)
    r->ev.result = r->result = json_incref(json_object_get(msg, "result"));
  if (which == 2) {
    /* A failure has a non-zero status, whatever the frame says. */
    r->ev.status = (int)json_integer_value(json_object_get(msg, "status"));
    if (r->ev.status == 0)
      r->ev.status = -1;
    r->ev.error = r->error;
  }
  uv_timer_init(&w->loop, &r->timer);
  r->timer.data = r;
  r->next = w->runs;
  w->runs = r;
  w->nruns++;
  worker_bus_sync(w);
  r->in_call = 1;
  cb_enter(w, BUS_CB_JOB, r->index);
  int rc = w->jobs[r->index]->u.scheduler(&r->ev);
  cb_leave(w);
  r->in_call = 0;
  if (rc != AIO_PENDING) {
    char text[64];
    if (rc)
      snprintf(text, sizeof(text), "returned %d", rc);
    run_finish(r, rc, NULL, rc ? text : NULL); /* unless done already */
    run_release(r);
  } else if (r->finished) {
    run_release(r);
  } else {
    double t = w->app->s.schedules[job].timeout;
    if (t > 0)
      uv_timer_start(&r->timer, on_run_timeout, (uint64_t)llround(t * 1000), 0);
  }
}

/* aio_event_done() on the loop thread. */
static int event_done_here(struct worker *w, aio_event_t *ev, int status,
                           const json_t *result) {
  struct job_run *r = w->runs;
  while (r && &r->ev != ev)
    r = r->next;
  if (r == NULL) {
    log_debug("aio_event_done(): not a run in hand (finished, or timed out "
              "long ago); ignored");
    return -EALREADY;
  }
  if (r->timed_out) {
    log_debug("[schedule:%s] run %lld: aio_event_done() after its timeout; "
              "ignored",
              r->ev.name, r->ev.run);
    run_release(r);
    return -ETIMEDOUT;
  }
  if (r->finished) {
    log_debug("[schedule:%s] run %lld: aio_event_done() twice; ignored",
              r->ev.name, r->ev.run);
    return -EALREADY;
  }
  run_finish(r, status, result, NULL);
  if (!r->in_call)
    run_release(r);
  return 0;
}

/* An aio_event_done() of another thread, on its way to the loop. */
struct soon_done {
  aio_event_t *ev; /* compared, not read, until found in hand */
  int status;
  json_t *result; /* owned */
};

static void on_soon_done(void *arg) {
  struct soon_done *d = arg;
  if (worker_self)
    event_done_here(worker_self, d->ev, d->status, d->result);
  json_decref(d->result);
  free(d);
}

int aio_event_done(aio_event_t *event, int status, const json_t *result) {
  struct worker *w = worker_self;
  if (event == NULL)
    return -EINVAL;
  if (testing_app())
    return testing_event_done(event, status, result);
  if (w && !w->in_test)
    return event_done_here(w, event, status, result);
  if (!soon_here())
    return -ENOTSUP;
  struct soon_done *d = malloc(sizeof(*d));
  json_t *copy = result ? bus_json_copy(result) : NULL;
  int err = d == NULL || (result && copy == NULL) ? -ENOMEM : 0;
  if (err == 0) {
    *d = (struct soon_done){event, status, copy};
    err = aio_call_soon(on_soon_done, d);
  }
  if (err) {
    json_decref(copy);
    free(d);
  }
  return err;
}

/* After the loop closed: the runs still in hand (their timers are closed). */
static void runs_free(struct worker *w) {
  for (struct job_run *r = w->runs, *next; r; r = next) {
    next = r->next;
    json_decref(r->result);
    free(r->error);
    free(r);
  }
  w->runs = NULL;
}

/* ---- listeners, and async ones (AIO_LISTENER_ASYNC) ---------------------- */

/* A listener returned non-zero: the line carries the listener and the
 * signal as fields. */
static void log_listener_failed(const char *listener, const char *signal,
                                int rc) {
  log_fields(AIO_LOG_WARN,
             LOG_FIELDS(LOG_STR("listener", listener),
                        LOG_STR("signal", signal), LOG_INT("status", rc)),
             "listener %s for signal '%s' failed: %d", listener, signal, rc);
}

/* Call listener k with sig (w->pend.sig): its status (0, or an async
 * listener's failure, logged), or AIO_PENDING from an async listener that
 * goes on. */
static int call_listener(struct worker *w, size_t k, aio_signal_t *sig) {
  const aio_decl_t *decl = w->listeners[k];
  if (decl->kind != AIO_KIND_LISTENER_ASYNC) {
    decl->u.listener(sig);
    return 0;
  }
  struct pending_signal *pd = &w->pend;
  /* Its name and data must outlive the frame they came from. */
  if (sig->name != pd->name) {
    snprintf(pd->name, sizeof(pd->name), "%s", sig->name);
    sig->name = pd->name;
  }
  int rc = decl->u.listener_async(sig);
  if (rc == AIO_PENDING) {
    pd->data = json_incref(sig->data);
    pd->k = k;
    pd->active = 1;
    /* No frame from the master runs until its done (w->pend holds one
     * signal): the read resumes in signal_done_here(). */
    if (w->bus_open)
      uv_read_stop((uv_stream_t *)&w->bus);
    return AIO_PENDING;
  }
  if (rc)
    log_listener_failed(w->app->s.listeners[k].fn.text, sig->name, rc);
  return rc;
}

/* Run the listeners ks[0..nk) of deliver frame id (the n-th), from
 * index `from` on. An async one that goes on leaves the rest in w->pend,
 * and the delivery in hand. */
static void deliver_run(struct worker *w, json_int_t id, uint64_t n,
                        aio_signal_t *sig, const json_int_t *ks, size_t nk,
                        size_t from) {
  w->mark->in_hand = n;
  for (size_t i = from; i < nk; i++) {
    json_int_t k = ks[i];
    if (k < 0 || (size_t)k >= w->app->s.nlisteners || !w->listeners[k]) {
      log_warnx("bus: deliver to unknown listener %lld", (long long)k);
      continue;
    }
    worker_bus_sync(w);
    cb_enter_listener(w, (size_t)k);
    if (call_listener(w, (size_t)k, sig) == AIO_PENDING) {
      struct pending_signal *pd = &w->pend;
      cb_leave(w);
      pd->id = id;
      pd->n = n;
      pd->local = 0;
      pd->nk = nk - i - 1;
      pd->ks = pd->nk ? malloc(pd->nk * sizeof(*pd->ks)) : NULL;
      if (pd->ks) {
        memcpy(pd->ks, ks + i + 1, pd->nk * sizeof(*pd->ks));
      } else if (pd->nk) {
        log_error("out of memory: the listeners after %s for '%s' do not run",
                  w->app->s.listeners[k].fn.text, sig->name);
        pd->nk = 0;
      }
      return;
    }
  }
  cb_leave(w);
  w->mark->done = n;
  w->mark->in_hand = 0;
  /* Acknowledged with the rest of this read: one frame for all of them. */
  w->ack_id = id;
}

/* Run the listeners ks[0..nk) of one deliver frame. */
static void run_listeners(struct worker *w, json_int_t id, const char *name,
                          json_t *data, const json_int_t *ks, size_t nk) {
  w->pend.sig = (aio_signal_t){.name = name, .data = data};
  deliver_run(w, id, ++w->delivers, &w->pend.sig, ks, nk, 0);
}

/* "delivered" is cumulative: it covers every delivery before it too, and
 * every own emit up to seq. */
static void send_ack(struct worker *w) {
  if (w->ack_id == 0 && w->local_ack == 0)
    return;
  if (w->bus_open &&
      bus_delivered_encode(&w->out, w->ack_id != 0, w->ack_id,
                           w->local_ack != 0, (json_int_t)w->local_ack) == 0)
    bus_queued(w, 0);
  w->ack_id = 0;
  w->local_ack = 0;
}

/* ---- own emits, run here ----------------------------------------------- */

#define ONCE BUS_KIND_BIT(BUS_KIND_ONCE)
#define BROADCAST BUS_KIND_BIT(BUS_KIND_BROADCAST)

/* Run the listeners of own emit it from listener `from` on (BUS_INDEX_END:
 * none left). An async one that goes on keeps it in w->pend, in hand. */
static void local_run(struct worker *w, const struct local_item *it,
                      size_t from) {
  aio_signal_t *sig = &w->pend.sig;
  w->mark->local_in_hand = it->seq;
  for (size_t k = from; k != BUS_INDEX_END; k = bus_index_next(&w->sigs, k)) {
    /* The emits behind this one are where the master finds them before a
     * listener that could kill us runs (the ring, or written to the
     * socket here): they are redelivered, not lost. */
    worker_bus_sync(w);
    cb_enter_listener(w, k);
    int rc = call_listener(w, k, sig);
    if (rc == AIO_PENDING) {
      cb_leave(w);
      w->pend.local = 1;
      w->pend.it = *it;
      w->pend.it.data = json_incref(it->data);
      return;
    }
    if (it->wait)
      emit_wait_next(it->wait, rc);
  }
  cb_leave(w);
  if (it->wait)
    emit_wait_finish(w, it->wait, 0);
  w->mark->local_done = it->seq;
  w->mark->local_in_hand = 0;
  if (it->ring_end)
    bus_ring_release(w->mark, it->ring_end);
  else
    w->local_ack = it->seq; /* the master keeps it until told */
}

static void run_local(struct worker *w, const struct local_item *it) {
  w->pend.sig = (aio_signal_t){.name = w->app->s.listeners[it->first].signal,
                               .data = it->data};
  local_run(w, it, it->first);
}

static void on_local_idle(uv_idle_t *h);
static void on_bus_idle(uv_idle_t *h);
static void kept_free(struct worker *w);

/* aio_signal_done() on the loop thread: the listeners after the pending
 * one, then the sources that waited behind it. */
static int signal_done_here(struct worker *w, const aio_signal_t *signal,
                            int status) {
  struct pending_signal *pd = &w->pend;
  if (!pd->active || signal != &pd->sig) {
    log_debug("aio_signal_done(): not a signal in hand; ignored");
    return -EALREADY;
  }
  if (status)
    log_listener_failed(w->app->s.listeners[pd->k].fn.text, pd->name, status);
  pd->active = 0;
  json_t *data = pd->data; /* held until the rest ran */
  pd->data = NULL;
  if (pd->local) {
    struct local_item it = pd->it;
    if (it.wait)
      emit_wait_next(it.wait, status);
    local_run(w, &it, bus_index_next(&w->sigs, pd->k));
    json_decref(it.data);
  } else {
    json_int_t *ks = pd->ks; /* deliver_run may pend again, with a copy */
    pd->ks = NULL;
    deliver_run(w, pd->id, pd->n, &pd->sig, ks, pd->nk, 0);
    free(ks);
  }
  json_decref(data);
  if (!pd->active) {
    send_ack(w);
    /* What waited behind it, on the next turns. */
    if (w->lq_head < w->lq_len && !uv_is_active((uv_handle_t *)&w->lq_idle))
      uv_idle_start(&w->lq_idle, on_local_idle);
    /* The read stopped (BUS_PAUSE) for it: resume what it held back. */
    if (w->bus_open && !uv_is_active((uv_handle_t *)&w->bus) &&
        !uv_is_active((uv_handle_t *)&w->bus_idle))
      uv_idle_start(&w->bus_idle, on_bus_idle);
    drain_check(w);
  }
  return 0;
}

struct soon_signal {
  const aio_signal_t *signal; /* compared, not read, until found in hand */
  int status;
};

static void on_soon_signal(void *arg) {
  struct soon_signal *d = arg;
  if (worker_self)
    signal_done_here(worker_self, d->signal, d->status);
  free(d);
}

int aio_signal_done(const aio_signal_t *signal, int status) {
  struct worker *w = worker_self;
  if (signal == NULL)
    return -EINVAL;
  if (testing_app())
    return testing_signal_done(signal, status);
  if (w && !w->in_test)
    return signal_done_here(w, signal, status);
  if (!soon_here())
    return -ENOTSUP;
  struct soon_signal *d = malloc(sizeof(*d));
  if (d == NULL)
    return -ENOMEM;
  *d = (struct soon_signal){signal, status};
  int err = aio_call_soon(on_soon_signal, d);
  if (err)
    free(d);
  return err;
}

/* Run the own emits queued so far, for one slice of the turn at most;
 * those their listeners emit, and those the slice did not reach, wait for
 * a later turn of the loop, so I/O and timers are not starved. */
static void on_local_idle(uv_idle_t *h) {
  struct worker *w = h->data;
  size_t n = w->lq_len - w->lq_head;
  if (w->pend.active) { /* behind an async listener: restarted at its done */
    uv_idle_stop(h);
    return;
  }
  slice_begin(w);
  for (size_t i = 0; i < n && (i == 0 || !slice_spent(w)) && !w->pend.active;
       i++) {
    struct local_item it = w->lq[w->lq_head++]; /* lq may move meanwhile */
    w->lq_bytes -= it.bytes;
    run_local(w, &it);
    json_decref(it.data);
  }
  if (w->pend.active)
    uv_idle_stop(h);
  if (w->lq_head == w->lq_len) {
    w->lq_head = w->lq_len = 0;
    w->lq_bytes = 0;
    uv_idle_stop(h);
    if (w->lq_cap > 256) { /* a burst's queue is given back */
      free(w->lq);
      w->lq = NULL;
      w->lq_cap = 0;
    }
  }
  send_ack(w);
  drain_check(w);
}

/* Room for one more entry (of size bytes) at the tail of a queue that
 * lives in (*buf)[*head, *len): the live entries slid down to the start,
 * or the array doubled (from 256). 0 or -ENOMEM. */
static int queue_room(void **buf, size_t *head, size_t *len, size_t *cap,
                      size_t size) {
  if (*len < *cap)
    return 0;
  if (*head > 0) {
    memmove(*buf, (char *)*buf + *head * size, (*len - *head) * size);
    *len -= *head;
    *head = 0;
    return 0;
  }
  size_t ncap = *cap ? *cap * 2 : 256;
  void *nb = realloc(*buf, ncap * size);
  if (nb == NULL)
    return -ENOMEM;
  *buf = nb;
  *cap = ncap;
  return 0;
}

static int local_push(struct worker *w, uint64_t seq, size_t first,
                      json_t *data, uint64_t ring_end, size_t bytes,
                      struct emit_wait *wait) {
  void *q = w->lq;
  int err = queue_room(&q, &w->lq_head, &w->lq_len, &w->lq_cap, sizeof(*w->lq));
  w->lq = q;
  if (err)
    return err;
  w->lq[w->lq_len++] =
      (struct local_item){seq, first, data, ring_end, bytes, wait};
  w->lq_bytes += bytes;
  if (!uv_is_active((uv_handle_t *)&w->lq_idle))
    uv_idle_start(&w->lq_idle, on_local_idle);
  return 0;
}

static void local_free(struct worker *w) {
  for (size_t i = w->lq_head; i < w->lq_len; i++)
    json_decref(w->lq[i].data);
  free(w->lq);
  w->lq = NULL;
  w->lq_head = w->lq_len = w->lq_cap = 0;
  kept_free(w);
  bus_index_close(&w->sigs);
  w->last_sig.n = 0; /* its entry is gone */
}

/* ---- own emits kept for our broadcast listeners ------------------------ */

/* May the next emit be kept? Within bus_queue entries and bus_queue_bytes
 * (the bound of what the master keeps for us), and not while draining:
 * broadcasts then go to our successor, and none would come back. */
static int kept_room(const struct worker *w) {
  const struct settings *s = &w->app->s;
  return !w->draining && w->kq_len - w->kq_head < s->bus_queue &&
         w->kq_bytes < s->bus_queue_bytes;
}

/* Keep data (stolen) for own emit seq. 0 or -ENOMEM (data released). */
static int kept_push(struct worker *w, uint64_t seq, json_t *data,
                     size_t bytes) {
  void *q = w->kq;
  int err = queue_room(&q, &w->kq_head, &w->kq_len, &w->kq_cap, sizeof(*w->kq));
  w->kq = q;
  if (err) {
    json_decref(data);
    return err;
  }
  w->kq[w->kq_len++] = (struct kept_emit){seq, data, bytes};
  w->kq_bytes += bytes;
  return 0;
}

static void kept_pop(struct worker *w) {
  struct kept_emit *k = &w->kq[w->kq_head++];
  w->kq_bytes -= k->bytes;
  json_decref(k->data);
  if (w->kq_head == w->kq_len) {
    w->kq_head = w->kq_len = 0;
    if (w->kq_cap > 256) { /* a burst's queue is given back */
      free(w->kq);
      w->kq = NULL;
      w->kq_cap = 0;
    }
  }
}

/* The data kept for own emit seq (borrowed until kept_pop), or NULL. The
 * master's delivers come in emit order: those kept before seq that it
 * did not send back (it routed them elsewhere) never will. */
static json_t *kept_find(struct worker *w, uint64_t seq) {
  while (w->kq_head < w->kq_len && w->kq[w->kq_head].seq < seq)
    kept_pop(w);
  return w->kq_head < w->kq_len && w->kq[w->kq_head].seq == seq
             ? w->kq[w->kq_head].data
             : NULL;
}

static void kept_free(struct worker *w) {
  while (w->kq_head < w->kq_len)
    kept_pop(w);
  free(w->kq);
  w->kq = NULL;
  w->kq_cap = 0;
}

static int on_frame(void *arg, enum bus_type t, json_t *msg) {
  struct worker *w = arg;
  switch (t) {
  case BUS_STOP:
    if (json_is_false(json_object_get(msg, "graceful")))
      worker_finish(w, 0);
    else
      start_drain(w);
    return 0;
  case BUS_RUN:
    run_job(w, msg);
    return 0;
  case BUS_REOPEN:
    if (log_reopen() < 0)
      log_warn("cannot reopen the log file");
    return 0;
  case BUS_STATUS: {
    json_t *m = bus_msg(BUS_STATUS);
    json_object_set_new(m, "conns", json_integer((json_int_t)w->nconns));
    worker_send(w, m);
    json_decref(m);
    return 0;
  }
  default:
    log_warnx("bus: unexpected '%s' from the master", bus_type_name(t));
    return -EPROTO;
  }
}

/* One frame from the master (bus_in_line decoded it): deliver, nearly
 * all the traffic, from its text; the rest as a tree. Frames past this
 * turn's slice wait in the reader (BUS_PAUSE). */
static int on_in(void *arg, struct bus_in *in) {
  struct worker *w = arg;
  int rc = 0;
  if (in->type == BUS_DELIVER && in->has_seq) {
    /* One of our own emits, back: its data is what we kept. */
    json_t *data = kept_find(w, (uint64_t)in->seq);
    if (data == NULL) {
      log_warnx("bus: deliver %lld names emit %lld, not kept here",
                (long long)in->id, (long long)in->seq);
      return -EBADMSG;
    }
    run_listeners(w, in->id, in->signal, data, in->ks, in->nk);
    kept_pop(w);
  } else if (in->type == BUS_DELIVER)
    run_listeners(w, in->id, in->signal, in->data, in->ks, in->nk);
  else
    rc = on_frame(w, in->type, in->msg);
  /* Behind an async listener in hand, the rest waits for its done. */
  return rc ? rc : slice_spent(w) || w->pend.active ? BUS_PAUSE : 0;
}

static int on_line(void *arg, const char *frame, size_t len) {
  struct worker *w = arg;
  struct bus_in_sink sink = {on_in, w, BUS_IN_WORKER};
  return bus_in_line(&sink, frame, len);
}

static void on_bus_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  static char busbuf[65536];
  buf->base = busbuf;
  buf->len = sizeof(busbuf);
}

static void bus_split_done(struct worker *w, int err);

static void on_bus_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct worker *w = s->data;
  if (nread == 0)
    return;
  if (nread < 0) {
    /* The master is gone: nobody will drain us or collect our status. */
    if (!w->stopping)
      log_warnx("master went away; exiting");
    w->bus_open = 0;
    uv_read_stop(s);
    worker_finish(w, nread == UV_EOF ? 0 : 1);
    return;
  }
  slice_begin(w);
  bus_split_done(
      w, bus_reader_split(&w->rd, buf->base, (size_t)nread, on_line, w));
}

/* The next slice of what a paused read held back. */
static void on_bus_idle(uv_idle_t *h) {
  struct worker *w = h->data;
  if (w->pend.active) { /* restarted at its aio_signal_done() */
    uv_idle_stop(h);
    return;
  }
  slice_begin(w);
  bus_split_done(w, bus_reader_resume(&w->rd, on_line, w));
}

/* After a slice of frames: acknowledge them; when the slice ran out,
 * read no more until what is held back has run (the master keeps the
 * rest, within its bound), so frames stay in order. */
static void bus_split_done(struct worker *w, int err) {
  send_ack(w);
  if (err == BUS_PAUSE) {
    if (!uv_is_active((uv_handle_t *)&w->bus_idle)) {
      uv_read_stop((uv_stream_t *)&w->bus);
      uv_idle_start(&w->bus_idle, on_bus_idle);
    }
    return;
  }
  if (uv_is_active((uv_handle_t *)&w->bus_idle)) {
    uv_idle_stop(&w->bus_idle);
    if (err == 0 && w->bus_open)
      uv_read_start((uv_stream_t *)&w->bus, on_bus_alloc, on_bus_read);
  }
  if (err) {
    log_error("bus: bad frame from the master (%s); exiting", strerror(-err));
    w->bus_open = 0;
    uv_read_stop((uv_stream_t *)&w->bus);
    worker_finish(w, 1);
  }
}

/* ---- start and stop ---------------------------------------------------- */

/* The emits made before the worker was ready (below, with emit). */
static void early_send(struct worker *w);
static void early_free(struct worker *w);

static int resolve_all(struct worker *w, struct diag *d) {
  const struct settings *s = &w->app->s;
  w->listeners = calloc(s->nlisteners + 1, sizeof(*w->listeners));
  w->jobs = calloc(s->nschedules * 3 + 1, sizeof(*w->jobs));
  w->servers = calloc(s->nservers + 1, sizeof(*w->servers));
  if (!w->listeners || !w->jobs || !w->servers)
    return -1;
  for (size_t i = 0; i < s->nlisteners; i++)
    w->listeners[i] =
        loader_resolve(w->loader, &s->listeners[i].fn, AIO_KIND_LISTENER, d);
  for (size_t i = 0; i < s->nschedules; i++) {
    const struct schedule_conf *sc = &s->schedules[i];
    w->jobs[i * 3] =
        loader_resolve(w->loader, &sc->func, AIO_KIND_SCHEDULER, d);
    if (sc->has_cb)
      w->jobs[i * 3 + 1] =
          loader_resolve(w->loader, &sc->cb, AIO_KIND_SCHEDULER, d);
    if (sc->has_err)
      w->jobs[i * 3 + 2] =
          loader_resolve(w->loader, &sc->err, AIO_KIND_SCHEDULER, d);
  }
  for (size_t i = 0; i < s->nservers; i++) {
    struct wserver *sv = &w->servers[i];
    sv->w = w;
    sv->conf = &s->servers[i];
    sv->fd = -1;
    sv->ctr = ctr_self ? &ctr_self[i] : NULL; /* the master reads them */
    sv->decl = loader_resolve(
        w->loader, &sv->conf->handler,
        sv->conf->is_factory ? AIO_KIND_FACTORY : AIO_KIND_PROTOCOL, d);
  }
  w->nservers = s->nservers;
  if (bus_index_build(&w->sigs, &w->app->s)) {
    diag_add(d, NULL, 0, "out of memory");
    return -1;
  }
  return diag_failed(d) ? -1 : 0;
}

int worker_run(struct app *app, int slot, unsigned gen, int bus_fd,
               const int *fds, struct bus_mark *mark) {
  static struct worker self;
  struct worker *w = &self;
  struct diag d;
  int rc = 1;
  memset(w, 0, sizeof(*w));
  worker_self = w;
  signal_worker = w;
  app_set_process(app);
  w->slot = slot;
  w->gen = gen;
  w->app = app;
  w->mark = mark;
  log_set_role("worker", slot);
  proctitle_set("aio: worker %d (generation %u)", slot, gen);
  /* Workers never outlive the master, even one killed with SIGKILL. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1 && getenv("AIO_ALLOW_ORPHAN") == NULL)
    _exit(1);
  signal(SIGPIPE, SIG_IGN);
  /* INT/HUP are the master's business: a terminal's ^C reaches the whole
   * process group, and the master decides what happens. TERM (which
   * systemd's default KillMode sends to every process) drains this worker,
   * QUIT ends it now. */
  signal(SIGINT, SIG_IGN);
  signal(SIGHUP, SIG_IGN);

  diag_init(&d);
  if (uv_loop_init(&w->loop)) {
    log_error("cannot create an event loop");
    return 1;
  }
  /* Before the modules' init, which may start threads that call. */
  if (worker_soon_open(w) || emit_wait_open(w)) {
    log_error("cannot create the aio_call_soon() queue");
    goto out;
  }
  w->loader = loader_new();
  loader_set_process(w->loader);
  if (w->loader == NULL || loader_load_all(w->loader, &app->s, &d) ||
      resolve_all(w, &d) || loader_init(w->loader, &d)) {
    for (size_t i = 0; i < d.n; i++)
      log_error("%s", d.msgs[i]);
    goto out;
  }
  for (size_t i = 0; i < w->nservers; i++) {
    w->servers[i].fd = fds[i];
    if (server_start(&w->servers[i]))
      goto out;
  }
  uv_pipe_init(&w->loop, &w->bus, 0);
  w->bus.data = w;
  if (uv_pipe_open(&w->bus, bus_fd)) {
    log_error("cannot open the bus");
    goto out;
  }
  w->bus_open = 1;
  w->bus_fd = bus_fd;
  w->bus_room_fd = fcntl(bus_fd, F_DUPFD_CLOEXEC, 3);
  if (w->bus_room_fd < 0 ||
      uv_poll_init(&w->loop, &w->bus_room, w->bus_room_fd)) {
    log_error("cannot watch the bus");
    goto out;
  }
  w->bus_room.data = w;
  uv_idle_init(&w->loop, &w->lq_idle);
  w->lq_idle.data = w;
  uv_idle_init(&w->loop, &w->bus_idle);
  w->bus_idle.data = w;
  uv_prepare_init(&w->loop, &w->bus_prep);
  w->bus_prep.data = w;
  uv_prepare_start(&w->bus_prep, on_bus_prepare);
  uv_unref((uv_handle_t *)&w->bus_prep);
  uv_read_start((uv_stream_t *)&w->bus, on_bus_alloc, on_bus_read);
  uv_async_init(&w->loop, &w->sig_async, on_sig_async);
  w->sig_async.data = w;
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_os_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGQUIT, &sa, NULL);
  uv_timer_init(&w->loop, &w->heartbeat);
  w->heartbeat.data = w;
  uv_timer_init(&w->loop, &w->drain_timer);
  w->drain_timer.data = w;
  uint64_t period = (uint64_t)(app->s.timeout * 1000 / 4);
  if (period < 50 || app->s.timeout == 0)
    period = app->s.timeout == 0 ? 1000 : 50;
  if (period > 1000)
    period = 1000;
  uv_timer_start(&w->heartbeat, on_heartbeat, period, period);

  json_t *ready = bus_msg(BUS_READY);
  json_object_set_new(ready, "slot", json_integer(slot));
  json_object_set_new(ready, "gen", json_integer(gen));
  worker_send(w, ready);
  json_decref(ready);
  log_debug("ready");
  w->ready = 1;
  early_send(w);

  uv_run(&w->loop, UV_RUN_DEFAULT);
  rc = w->exit_code;
  /* Frames of the last iteration (a job's done, acks) before we go. */
  if (w->bus_open)
    bus_out_flush(&w->out, w->bus_fd, BUS_SYNC_FLUSH_MS);
out:
  worker_soon_close();
  emit_wait_close(w); /* done_cbs are module code: before it unloads */
  worker_close_loop(w);
  emit_wait_free_all(w);
  runs_free(w);
  json_decref(w->pend.data);
  free(w->pend.ks);
  if (w->pend.active && w->pend.local)
    json_decref(w->pend.it.data);
  if (w->bus_room_fd > 0)
    close(w->bus_room_fd);
  bus_out_close(&w->out);
  bus_reader_close(&w->rd);
  loader_free(w->loader);
  local_free(w);
  early_free(w);
  free(w->listeners);
  free(w->jobs);
  free(w->servers);
  diag_close(&d);
  signal_worker = NULL;
  worker_self = NULL;
  return rc;
}

void worker_close_loop(struct worker *w) {
  /* Connections first, so each gets its connection_lost and is freed. */
  for (aio_conn_t *c = w->conns, *next; c; c = next) {
    next = c->next;
    conn_abort(c, UV_ECANCELED);
  }
  uv_walk(&w->loop, close_walk, NULL);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  uv_loop_close(&w->loop);
}

/* ---- the runtime API that is not about connections --------------------- */

uv_loop_t *aio_loop(void) {
  if (worker_self)
    return &worker_self->loop;
  return testing_app() ? testing_loop() : NULL;
}

/* Back-pressure (docs/bus.md, Bounds), before anything is kept: a
 * worker's delivery queue in the master is full and a broadcast would
 * grow it on every worker, or this worker's own signals not yet run (what
 * its ring and the master's journal keep) are at their bound. */
static int emit_full(const struct worker *w, unsigned kinds, size_t bytes) {
  const struct settings *s = &w->app->s;
  return ((kinds & BROADCAST) && w->mark->busy) ||
         ((kinds & ONCE) && (w->lq_len - w->lq_head >= s->bus_journal ||
                             w->lq_bytes + bytes > s->bus_journal_bytes));
}

/* The emit frame at o[start, o->len) goes to the master: is there room in
 * the bus buffer? When not, it is taken out, what is buffered is written
 * as the master reads it (waiting up to BUS_EMIT_WAIT_MS: the emitter is
 * slowed to the master's pace, and refused only if the master does not
 * read meanwhile), and the frame is made again if it fits now. 0 (the
 * frame is at *start), or -EAGAIN with the frame taken out. */
static int emit_to_master(struct worker *w, size_t *start, const char *signal,
                          const json_t *data, uint64_t seq, int keep) {
  struct bus_out *o = &w->out;
  size_t bytes = o->len - *start, cap = w->app->s.bus_buffer;
  if (bus_out_pending(o) <= cap)
    return 0;
  o->len = *start; /* a flush moves what is buffered */
  bus_flush(w, 0);
  /* Waiting blocks the loop: at most once a turn, so a callback that
   * emits in a loop while the master is stuck is held 100 ms, not 100 ms
   * an emit; after a wait in vain, the rest of the turn is refused. */
  uint64_t turn = uv_now(&w->loop);
  if (bus_out_pending(o) + bytes > cap && w->emit_waited_turn != turn + 1) {
    bus_flush(w, BUS_EMIT_WAIT_MS);
    if (bus_out_pending(o) + bytes > cap)
      w->emit_waited_turn = turn + 1; /* +1: turn 0 is a turn too */
  }
  if (bus_out_pending(o) + bytes > cap)
    return -EAGAIN;
  *start = o->len;
  return bus_emit_encode(o, signal, data, seq, keep) ? -EAGAIN : 0;
}

/* A mapped command's way to the master (worker_set_command_emit); set
 * once, before the command runs, in a process that runs no worker. */
static worker_command_emit_fn *command_emit;

void worker_set_command_emit(worker_command_emit_fn *fn) { command_emit = fn; }

/* aio_emit() before the worker is ready (a module's init, a factory):
 * checked and encoded as any emit is, then kept, in order, within the
 * bounds of the worker's own signals, to be emitted right after the ready
 * frame (early_send). data is ours when steal says so. */
static int early_push(struct worker *w, const char *signal, json_t *data,
                      int steal) {
  const struct settings *s = &w->app->s;
  struct bus_out *o = &w->out;
  size_t start = o->len;
  int err = bus_emit_encode(o, signal, data, w->emit_seq + 1, 0);
  size_t bytes = o->len - start;
  o->len = start; /* only measured: it is encoded again when it goes */
  if (err)
    goto out;
  if (bus_index_kinds(&w->sigs, signal) == 0)
    goto out; /* nobody listens: 0, as later */
  if (w->nearly >= s->bus_journal ||
      w->early_bytes + bytes > s->bus_journal_bytes) {
    w->mark->refused++;
    err = -EAGAIN;
    goto out;
  }
  if (w->nearly == w->early_cap) {
    size_t cap = w->early_cap ? w->early_cap * 2 : 16;
    struct early_emit *ne = realloc(w->early, cap * sizeof(*ne));
    if (ne == NULL) {
      err = -ENOMEM;
      goto out;
    }
    w->early = ne;
    w->early_cap = cap;
  }
  struct early_emit *e = &w->early[w->nearly];
  e->signal = strdup(signal);
  e->data = data == NULL ? json_null() : steal ? data : bus_json_copy(data);
  steal = 0;
  if (e->signal == NULL || e->data == NULL) {
    free(e->signal);
    json_decref(e->data);
    err = -ENOMEM;
    goto out;
  }
  e->bytes = bytes;
  w->nearly++;
  w->early_bytes += bytes;
out:
  if (steal)
    json_decref(data);
  return err;
}

static int emit(const char *signal, json_t *data, int steal,
                struct emit_wait *wait);

/* The emits of init, right after the ready frame, in order. One refused
 * now (the bus at its bound) is logged and counted; the module's init
 * returned long ago. */
static void early_send(struct worker *w) {
  for (size_t i = 0; i < w->nearly; i++) {
    struct early_emit *e = &w->early[i];
    int err = emit(e->signal, e->data, 1, NULL);
    if (err)
      log_warnx("aio_emit('%s') during init, sent once ready: %s", e->signal,
                strerror(-err));
    free(e->signal);
  }
  free(w->early);
  w->early = NULL;
  w->nearly = w->early_cap = w->early_bytes = 0;
}

/* What early_send did not get to (a start that failed). */
static void early_free(struct worker *w) {
  for (size_t i = 0; i < w->nearly; i++) {
    free(w->early[i].signal);
    json_decref(w->early[i].data);
  }
  free(w->early);
  w->early = NULL;
  w->nearly = w->early_cap = w->early_bytes = 0;
}

static int emit(const char *signal, json_t *data, int steal,
                struct emit_wait *wait);

/* An emit made on another thread, on its way to the loop. */
struct soon_emit {
  json_t *data;           /* owned */
  struct emit_wait *wait; /* aio_emit_wait()'s, or NULL */
  char signal[];
};

/* Emits of other threads waiting for the loop: bounded by bus_journal as
 * the loop's own are, so what they hold in memory is bounded too. */
static atomic_size_t soon_emits;

static void on_soon_emit(void *arg) {
  struct soon_emit *e = arg;
  atomic_fetch_sub(&soon_emits, 1);
  int err = emit(e->signal, e->data, 1, e->wait);
  if (err && e->wait && worker_self)
    /* The caller was told 0: the bus's answer is its result. */
    emit_wait_finish(worker_self, e->wait, err);
  else if (err)
    log_warnx("aio_emit('%s') from another thread: %s", e->signal,
              strerror(-err));
  free(e);
}

/* Hand an emit of a thread that is not the loop's to the loop, with a
 * value of its own (data copied, or stolen). 0 or -errno; data is
 * released on error when stolen. */
static int emit_from_thread(const char *signal, json_t *data, int steal,
                            struct emit_wait *wait) {
  size_t n = strlen(signal) + 1;
  pthread_mutex_lock(&soon.mu);
  struct worker *w = soon.w; /* NULL once closed: aio_call_soon says so */
  pthread_mutex_unlock(&soon.mu);
  if (w && atomic_fetch_add(&soon_emits, 1) >= w->app->s.bus_journal) {
    atomic_fetch_sub(&soon_emits, 1);
    w->mark->soon_refused++;
    if (steal)
      json_decref(data);
    return -EAGAIN;
  }
  struct soon_emit *e = malloc(sizeof(*e) + n);
  json_t *mine = data == NULL ? json_null()
                 : steal      ? data
                              : bus_json_copy(data);
  int err = e == NULL || mine == NULL ? -ENOMEM : 0;
  if (err == 0) {
    memcpy(e->signal, signal, n);
    e->data = mine;
    e->wait = wait;
    err = aio_call_soon(on_soon_emit, e);
  }
  if (err) {
    atomic_fetch_sub(&soon_emits, 1);
    json_decref(mine);
    free(e);
  }
  return err;
}

/* aio_emit() and aio_emit_new(): steal says data is ours to keep.
 * aio_emit_wait(): wait (begun here when the emit is taken, else the
 * caller's to drop), on the loop thread of a ready worker only. */
static int emit(const char *signal, json_t *data, int steal,
                struct emit_wait *wait) {
  struct worker *w = worker_self;
  int err;
  size_t sn = signal ? strlen(signal) : 0;
  if (sn == 0 || sn > BUS_MAX_SIGNAL) {
    err = -EINVAL;
    goto out;
  }
  if (w == NULL && command_emit) {
    err = command_emit(signal, data);
    goto out;
  }
  if (w == NULL && soon_here()) {
    /* A thread of this worker's modules: the loop emits it. */
    err = emit_from_thread(signal, data, steal, NULL);
    steal = 0;
    goto out;
  }
  if (w == NULL || w->in_test) {
    err = testing_emit(signal, data);
    goto out;
  }
  if (!w->ready && wait) {
    err = -EBUSY; /* emitted from a thread while the worker starts */
    goto out;
  }
  if (!w->ready) {
    err = early_push(w, signal, data, steal);
    steal = 0;
    goto out;
  }
  if (!w->bus_open) {
    err = -EPIPE;
    goto out;
  }
  /* Encoded straight into the queue: no json_t for the frame itself. */
  struct bus_out *o = &w->out;
  size_t start = o->len;
  uint64_t seq = w->emit_seq + 1;
  if (sn != w->last_sig.n || memcmp(signal, w->last_sig.name, sn) != 0) {
    memcpy(w->last_sig.name, signal, sn + 1);
    w->last_sig.n = sn;
    w->last_sig.ix = bus_index_get(&w->sigs, signal);
    w->last_sig.plain = bus_name_plain(signal, sn);
  }
  const struct bus_index_sig *ix = w->last_sig.ix;
  unsigned kinds = ix ? ix->kinds : 0;
  /* Our own broadcast listeners will get it back from the master: with
   * keep, by its seq, and they run on the data kept here. */
  int keep = (kinds & BROADCAST) && kept_room(w);
  struct bus_span text = {w->last_sig.name, sn};
  if ((err = bus_emit_encode_text(o, signal, w->last_sig.plain ? &text : NULL,
                                  data, seq, keep)))
    goto out;
  size_t bytes = o->len - start;
  if (kinds == 0) {
    /* Checked and encoded like any other, so that whether a listener is
     * configured does not change what aio_emit() accepts. */
    o->len = start;
    log_debug("aio_emit('%s'): no listener", signal);
    if (wait)
      emit_wait_finish(w, wait, 0);
    goto out;
  }
  if (emit_full(w, kinds, bytes)) {
    o->len = start;
    err = -EAGAIN;
    goto refused;
  }
  uint64_t ring_end = 0, ring_tail = w->mark->ring_tail;
  if (kinds == ONCE && bus_ring_put(w->mark, seq, o->buf + start,
                                    o->len - start - 1, &ring_end) == 0)
    /* Only our own listeners: the master hears of it only if we die
     * before they ran, from the ring. */
    o->len = start;
  else if ((err = emit_to_master(w, &start, signal, data, seq, keep)))
    goto refused;
  if (kinds & ONCE || keep) {
    /* They run here, on what was emitted: a value of our own, which later
     * changes to the caller's cannot reach. */
    json_t *mine = data == NULL ? json_null()
                   : steal      ? data
                                : bus_json_copy(data);
    steal = 0;
    size_t kept = w->kq_len;
    if (mine == NULL || (keep && kept_push(w, seq, json_incref(mine), bytes)) ||
        ((kinds & ONCE) &&
         ((wait && emit_wait_add_chain(w, wait, ix->first[BUS_KIND_ONCE])) ||
          local_push(w, seq, ix->first[BUS_KIND_ONCE], mine, ring_end, bytes,
                     wait)))) {
      if (keep && w->kq_len > kept) { /* take it back */
        w->kq_bytes -= w->kq[--w->kq_len].bytes;
        json_decref(w->kq[w->kq_len].data);
      }
      json_decref(mine);
      w->mark->ring_tail = ring_tail; /* take the record back */
      o->len = start;
      err = -ENOMEM;
      goto out;
    }
    if (!(kinds & ONCE))
      json_decref(mine); /* only kept */
  }
  w->emit_seq = seq;
  if (!ring_end)
    bus_queued(w, 1);
  if (wait && !(kinds & ONCE))
    emit_wait_finish(w, wait, 0); /* broadcast listeners are not waited for */
  goto out;
refused:
  /* Counted for `aio status`: nothing is refused in silence. */
  w->mark->refused++;
out:
  if (steal)
    json_decref(data);
  return err;
}

int aio_emit(const char *signal, json_t *data) {
  return emit(signal, data, 0, NULL);
}

int aio_emit_new(const char *signal, json_t *data) {
  return emit(signal, data, 1, NULL);
}

int aio_emit_wait(const char *signal, json_t *data, aio_emit_done_fn *done_cb,
                  void *arg) {
  struct worker *w = worker_self;
  int err;
  if (done_cb == NULL || signal == NULL || *signal == '\0' ||
      strlen(signal) > BUS_MAX_SIGNAL)
    return -EINVAL;
  if ((w == NULL || w->in_test) && testing_app())
    return testing_emit_wait(signal, data, done_cb, arg);
  if (w == NULL && soon_here()) {
    pthread_mutex_lock(&soon.mu);
    w = soon.w;
    pthread_mutex_unlock(&soon.mu);
    if (w == NULL)
      return -EPIPE;
    struct emit_wait *ew = emit_wait_new(w, signal, done_cb, arg, &err);
    if (ew && (err = emit_from_thread(signal, data, 0, ew)))
      emit_wait_drop(w, ew);
    return err;
  }
  if (w == NULL)
    return -ENOTSUP; /* a mapped command: nothing waits there */
  if (!w->ready)
    return -EBUSY;
  struct emit_wait *ew = emit_wait_new(w, signal, done_cb, arg, &err);
  if (ew && (err = emit(signal, data, 0, ew)))
    emit_wait_drop(w, ew);
  return err;
}
