/*
 * testing_loop.c - the test's own loop under `aio test`: the thread that
 * runs a test gets a struct worker with a libuv loop (made on first use,
 * in the process Check forked for the test), so aio_loop(),
 * aio_call_soon(), aio_event_done() and aio_signal_done() work there as in
 * a worker, and aio_test_run() turns it until a condition or a deadline.
 * Also the test's signal deliveries: aio_emit() runs the listeners at once
 * (an async one that goes on holds the rest until its done), and
 * aio_emit_wait() runs them on the loop and reports to its done_cb
 * (emit_wait.c), as a worker does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>
#include <uv.h>

#include "app.h"
#include "bus.h"
#include "emit_wait.h"
#include "log.h"
#include "testing.h"
#include "util.h"
#include "worker.h"

/* Listeners that emit run nested; a chain deeper than this is a loop. */
#define TESTING_MAX_EMIT_DEPTH 8
/* aio_test_run_schedule() runs kept after a timeout, for a late done. */
#define TESTING_RUNS_KEEP 1024

/* One signal whose listeners the test runs: the configuration's listeners
 * from `next` on, one at a time; an async one that goes on keeps it in
 * the pending list until its aio_signal_done(). */
struct tdeliv {
  aio_signal_t sig; /* what each listener gets; lasts until the last one */
  char name[BUS_MAX_SIGNAL + 1];
  json_t *msg; /* owned: the decoded bus frame, whose "data" sig has */
  size_t next; /* the next listener to look at */
  size_t k;    /* the one pending */
  struct emit_wait *wait;
  struct tdeliv *link; /* the pending list */
};

/* One aio_test_run_schedule() run. */
struct trun {
  aio_event_t ev;
  char name[256];
  int done, timed_out, status;
  json_t *result; /* owned */
  struct trun *link;
};

static struct {
  pthread_mutex_t lock; /* pending, runs */
  pthread_t main;       /* the test's thread */
  int attached;
  struct worker w; /* the test's worker: w.loop is the test's loop */
  struct bus_mark mark;
  pid_t pid; /* whose loop w.loop is: made again in a forked child */
  int open, running;
  struct tdeliv *pending;
  struct trun *runs;
  size_t nruns;
  long long run_seq;
} L = {.lock = PTHREAD_MUTEX_INITIALIZER};

static _Thread_local int emit_depth;

static int on_test_thread(void) {
  return L.attached && pthread_equal(pthread_self(), L.main);
}

void testing_loop_attach(void) {
  L.main = pthread_self();
  L.attached = 1;
}

static struct worker *test_worker(void) {
  if (!on_test_thread() || testing_app() == NULL)
    return NULL;
  if (L.open && L.pid == getpid())
    return &L.w;
  /* First use here, or a loop of the process this one was forked from
   * (whose descriptors it shares): a new one, the old one left alone. */
  memset(&L.w, 0, sizeof(L.w));
  memset(&L.mark, 0, sizeof(L.mark));
  struct worker *w = &L.w;
  if (uv_loop_init(&w->loop))
    return NULL;
  w->slot = -1;
  w->app = (struct app *)testing_app();
  w->mark = &L.mark;
  w->in_test = 1;
  w->ready = 1;
  if (worker_soon_open(w) || emit_wait_open(w)) {
    log_error("aio test: cannot make the test's loop");
    return NULL;
  }
  L.open = 1;
  L.pid = getpid();
  worker_self = w;
  return w;
}

struct uv_loop_s *testing_loop(void) {
  struct worker *w = test_worker();
  /* Between runs the loop's clock stands still: a timer the test (or its
   * scheduler) starts now counts from now. */
  if (w && !L.running)
    uv_update_time(&w->loop);
  return w ? &w->loop : NULL;
}

void testing_loop_detach(void) {
  if (L.open && L.pid == getpid() && on_test_thread()) {
    worker_soon_close();
    emit_wait_close(&L.w);
    worker_close_loop(&L.w);
    emit_wait_free_all(&L.w);
    worker_self = NULL;
  }
  L.open = 0;
  L.attached = 0;
  for (struct trun *r = L.runs, *next; r; r = next) {
    next = r->link;
    json_decref(r->result);
    free(r);
  }
  L.runs = NULL;
  L.nruns = 0;
}

/* ---- running the loop --------------------------------------------------- */

static void on_deadline(uv_timer_t *t) { (void)t; /* wakes uv_run */ }

int aio_test_run(aio_test_until_fn *until, void *arg, int timeout_ms) {
  struct worker *w = test_worker();
  if (w == NULL)
    return -ENOTSUP;
  if (L.running)
    return -EBUSY;
  uv_timer_t t;
  uv_timer_init(&w->loop, &t);
  uint64_t deadline = util_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
  int rc = -ETIMEDOUT;
  L.running = 1;
  for (;;) {
    if (until && until(arg)) {
      rc = 0;
      break;
    }
    uint64_t now = util_now_ms();
    if (now >= deadline)
      break;
    /* The loop's clock is as old as its last turn (which may be long
     * ago): updated first, and the timer set for what is left each time,
     * so a turn never sleeps past the deadline. */
    uv_update_time(&w->loop);
    uv_timer_start(&t, on_deadline, deadline - now, 0);
    uv_run(&w->loop, UV_RUN_ONCE);
  }
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&w->loop, UV_RUN_NOWAIT); /* t's close, before it goes */
  L.running = 0;
  return rc;
}

/* ---- schedulers --------------------------------------------------------- */

static int run_done(void *arg) { return ((struct trun *)arg)->done; }

int aio_test_run_schedule(const char *schedule, int timeout_ms,
                          aio_test_outcome_t *out) {
  const struct app *app = testing_app();
  if (schedule == NULL || out == NULL)
    return -EINVAL;
  *out = (aio_test_outcome_t){0, NULL};
  if (test_worker() == NULL)
    return -ENOTSUP;
  if (L.running)
    return -EBUSY;
  const struct schedule_conf *sc = NULL;
  for (size_t i = 0; i < app->s.nschedules && !sc; i++)
    if (strcmp(app->s.schedules[i].name, schedule) == 0)
      sc = &app->s.schedules[i];
  struct ref ref = {0};
  const aio_decl_t *decl =
      testing_resolve(sc ? sc->func.text : schedule, &ref, AIO_KIND_SCHEDULER,
                      "aio_test_run_schedule");
  settings_ref_close(&ref);
  if (decl == NULL)
    return -ENOENT;
  struct trun *r = calloc(1, sizeof(*r));
  if (r == NULL)
    return -ENOMEM;
  struct timeval tv;
  gettimeofday(&tv, NULL);
  snprintf(r->name, sizeof(r->name), "%s", schedule);
  r->ev.name = r->name;
  r->ev.run = ++L.run_seq;
  r->ev.due = (double)tv.tv_sec + tv.tv_usec / 1e6;
  r->ev.node = "test";
  pthread_mutex_lock(&L.lock);
  r->link = L.runs;
  L.runs = r;
  L.nruns++;
  pthread_mutex_unlock(&L.lock);
  uv_update_time(&L.w.loop); /* its timers count from now */
  int rc = decl->u.scheduler(&r->ev);
  if (rc != AIO_PENDING && !r->done) {
    r->done = 1;
    r->status = rc;
  }
  int err = r->done ? 0 : aio_test_run(run_done, r, timeout_ms);
  if (err) {
    r->timed_out = 1; /* kept: its event stays valid for a late done */
    return err;
  }
  out->status = r->status;
  out->result = r->result;
  r->result = NULL;
  /* Finished runs go; timed-out ones past the bound too, oldest first. */
  pthread_mutex_lock(&L.lock);
  for (struct trun **pp = &L.runs; *pp;) {
    struct trun *q = *pp;
    if (q == r || (q->timed_out && L.nruns > TESTING_RUNS_KEEP)) {
      *pp = q->link;
      L.nruns--;
      json_decref(q->result);
      free(q);
    } else {
      pp = &q->link;
    }
  }
  pthread_mutex_unlock(&L.lock);
  return 0;
}

/* A completion from another thread, on its way to the test's loop. */
struct handed {
  const void *what; /* an aio_event_t or aio_signal_t, compared only */
  int status;
  json_t *result; /* owned */
};

static void on_event_handed(void *arg) {
  struct handed *h = arg;
  testing_event_done((aio_event_t *)h->what, h->status, h->result);
  json_decref(h->result);
  free(h);
}

static void on_signal_handed(void *arg) {
  struct handed *h = arg;
  testing_signal_done(h->what, h->status);
  free(h);
}

/* Hand a completion to the test's loop (aio_call_soon). 0 or -errno. */
static int hand_over(void (*fn)(void *), const void *what, int status,
                     const json_t *result) {
  struct handed *h = malloc(sizeof(*h));
  json_t *copy = result ? bus_json_copy(result) : NULL;
  int err = h == NULL || (result && copy == NULL) ? -ENOMEM : 0;
  if (err == 0) {
    *h = (struct handed){what, status, copy};
    err = aio_call_soon(fn, h);
  }
  if (err) {
    json_decref(copy);
    free(h);
  }
  return err;
}

int testing_event_done(aio_event_t *event, int status, const json_t *result) {
  if (!on_test_thread())
    return hand_over(on_event_handed, event, status, result);
  struct trun *r = L.runs;
  while (r && &r->ev != event)
    r = r->link;
  if (r == NULL || r->done)
    return -EALREADY;
  if (r->timed_out) {
    log_debug("aio_event_done(): after its timeout in the test; ignored");
    return -ETIMEDOUT;
  }
  r->done = 1;
  r->status = status;
  r->result = result ? bus_json_copy(result) : NULL;
  return 0;
}

/* ---- signals ------------------------------------------------------------ */

static void tdeliv_free(struct tdeliv *d) {
  json_decref(d->msg);
  free(d);
}

/* Run d's listeners from d->next on; an async one that goes on puts d in
 * the pending list. At the end its wait (if any) is finished. */
static void tdeliv_run(struct tdeliv *d) {
  const struct settings *s = &testing_app()->s;
  emit_depth++;
  for (size_t i = d->next; i < s->nlisteners; i++) {
    const aio_decl_t *decl = testing_listener(i);
    if (decl == NULL || strcmp(s->listeners[i].signal, d->name) != 0)
      continue;
    int rc = 0;
    if (decl->kind == AIO_KIND_LISTENER_ASYNC)
      rc = decl->u.listener_async(&d->sig);
    else
      decl->u.listener(&d->sig);
    if (rc == AIO_PENDING) {
      d->k = i;
      d->next = i + 1;
      pthread_mutex_lock(&L.lock);
      d->link = L.pending;
      L.pending = d;
      pthread_mutex_unlock(&L.lock);
      emit_depth--;
      return;
    }
    if (rc)
      log_warnx("listener %s for signal '%s' failed: %d",
                s->listeners[i].fn.text, d->name, rc);
    if (d->wait && !s->listeners[i].broadcast)
      emit_wait_next(d->wait, rc);
  }
  emit_depth--;
  if (d->wait)
    emit_wait_finish(&L.w, d->wait, 0);
  tdeliv_free(d);
}

/* A delivery of signal with data after the bus's round trip, or NULL with
 * *err (-EMSGSIZE, -ENOMEM, ...). */
static struct tdeliv *tdeliv_new(const char *signal, json_t *data, int *err) {
  json_t *m = bus_msg(BUS_EMIT);
  json_object_set(m, "data", data ? data : json_null());
  size_t len;
  char *line = bus_encode(m, &len);
  json_decref(m);
  if (line == NULL) {
    *err = -EMSGSIZE;
    return NULL;
  }
  enum bus_type t;
  m = bus_decode(line, len - 1, &t, err);
  free(line);
  if (m == NULL)
    return NULL;
  struct tdeliv *d = calloc(1, sizeof(*d));
  if (d == NULL) {
    json_decref(m);
    *err = -ENOMEM;
    return NULL;
  }
  snprintf(d->name, sizeof(d->name), "%s", signal);
  d->msg = m;
  d->sig = (aio_signal_t){.name = d->name, .data = json_object_get(m, "data")};
  return d;
}

int testing_emit(const char *signal, json_t *data) {
  if (testing_app() == NULL)
    return -EINVAL;
  if (emit_depth >= TESTING_MAX_EMIT_DEPTH) {
    log_warnx("aio_emit('%s'): listeners emit into each other more than %d "
              "deep",
              signal, TESTING_MAX_EMIT_DEPTH);
    return -ELOOP;
  }
  int err = 0;
  struct tdeliv *d = tdeliv_new(signal, data, &err);
  if (d == NULL)
    return err;
  tdeliv_run(d);
  return 0;
}

static void on_wait_start(void *arg) { tdeliv_run(arg); }

int testing_emit_wait(const char *signal, json_t *data, aio_emit_done_fn *cb,
                      void *arg) {
  const struct settings *s = &testing_app()->s;
  struct worker *w = test_worker();
  if (w == NULL && !on_test_thread() && L.open)
    w = &L.w; /* another thread of the test: handed to its loop */
  if (w == NULL)
    return -ENOTSUP;
  int err = 0;
  struct emit_wait *ew = emit_wait_new(w, signal, cb, arg, &err);
  if (ew == NULL)
    return err;
  struct tdeliv *d = tdeliv_new(signal, data, &err);
  for (size_t i = 0; d && err == 0 && i < s->nlisteners; i++)
    if (testing_listener(i) && !s->listeners[i].broadcast &&
        strcmp(s->listeners[i].signal, signal) == 0)
      err = emit_wait_add(ew, s->listeners[i].fn.text);
  if (d && err == 0) {
    d->wait = ew;
    err = aio_call_soon(on_wait_start, d); /* a later turn, never now */
  }
  if (err) {
    if (d)
      tdeliv_free(d);
    emit_wait_drop(w, ew);
  }
  return err;
}

int testing_signal_done(const aio_signal_t *signal, int status) {
  if (!on_test_thread())
    return hand_over(on_signal_handed, signal, status, NULL);
  pthread_mutex_lock(&L.lock);
  struct tdeliv **pp = &L.pending;
  while (*pp && &(*pp)->sig != signal)
    pp = &(*pp)->link;
  struct tdeliv *d = *pp;
  if (d)
    *pp = d->link;
  pthread_mutex_unlock(&L.lock);
  if (d == NULL) {
    log_debug("aio_signal_done(): not a signal in hand; ignored");
    return -EALREADY;
  }
  const struct settings *s = &testing_app()->s;
  if (status)
    log_warnx("listener %s for signal '%s' failed: %d",
              s->listeners[d->k].fn.text, d->name, status);
  if (d->wait && !s->listeners[d->k].broadcast)
    emit_wait_next(d->wait, status);
  tdeliv_run(d);
  return 0;
}
