/*
 * call_soon.c - aio_call_soon(): the process's one bounded queue of calls
 * from any thread, run on the worker's loop in slices of a turn.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "testing.h"
#include "worker_int.h"

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
  worker_slice_begin(w);
  for (size_t i = 0;; i++) {
    pthread_mutex_lock(&soon.mu);
    if (soon.len == 0 || (i > 0 && worker_slice_spent(w))) {
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
    worker_cb_enter(w, BUS_CB_SOON, 0);
    it.fn(it.arg);
    worker_cb_leave(w);
  }
  worker_drain_check(w);
}

/* Is this process a worker whose loop takes calls? (Not the master, not
 * `aio test`, whose emits run their listeners where they are made.) */
int worker_soon_here(void) {
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

struct worker *worker_soon_target(void) {
  pthread_mutex_lock(&soon.mu);
  struct worker *w = soon.w;
  pthread_mutex_unlock(&soon.mu);
  return w;
}
