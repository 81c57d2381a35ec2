/*
 * emit_wait.c - the waits of aio_emit_wait(): one record per call, in a
 * list of the worker's (bounded by [aio] bus_journal, as its own signals
 * are), told by listeners.c or testing.c how each once-per-emit listener
 * ended. A finished wait's done_cb runs from an idle handle of the loop,
 * so never inside the aio_emit_wait() call, in slices like the bus's,
 * exactly once: at the latest when the worker stops (emit_wait_close).
 * The API function itself is in emit.c, beside aio_emit().
 */
#define _GNU_SOURCE
#include "emit_wait.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bus.h"
#include "log.h"
#include "worker.h"

/* done_cbs run per turn before the loop goes on: as the bus's slices. */
#define WAIT_SLICE_NS (2 * 1000 * 1000)

struct emit_wait {
  struct emit_wait *prev, *next; /* the worker's pending list */
  struct emit_wait *done_next;   /* the done queue, once finished */
  aio_emit_done_fn *cb;
  void *arg;
  int finished; /* on the done list: done_cb on a later turn */
  int status;
  size_t n, ran, cap;
  aio_listener_status_t *st;
  char signal[BUS_MAX_SIGNAL + 1];
};

struct emit_waits {
  pthread_mutex_t mu; /* the list and count: waits are made on any thread */
  struct emit_wait *head;
  size_t count;
  /* Finished, done_cb not run yet, in the order they finished (loop
   * thread only). */
  struct emit_wait *done_head, *done_tail;
  uv_idle_t idle; /* runs the finished ones' done_cbs */
  int closed;
};

static void wait_free(struct emit_wait *ew) {
  free(ew->st);
  free(ew);
}

static void unlink_locked(struct emit_waits *ws, struct emit_wait *ew) {
  if (ew->prev)
    ew->prev->next = ew->next;
  else
    ws->head = ew->next;
  if (ew->next)
    ew->next->prev = ew->prev;
  ws->count--;
}

/* The first failing listener's status, when the wait itself did not fail. */
static int wait_status(const struct emit_wait *ew) {
  if (ew->status)
    return ew->status;
  for (size_t i = 0; i < ew->n; i++)
    if (ew->st[i].status)
      return ew->st[i].status;
  return 0;
}

/* Out of the list, then its done_cb, then gone. */
static void wait_call(struct worker *w, struct emit_wait *ew) {
  struct emit_waits *ws = w->waits;
  pthread_mutex_lock(&ws->mu);
  unlink_locked(ws, ew);
  pthread_mutex_unlock(&ws->mu);
  aio_emit_result_t r = {.signal = ew->signal,
                         .status = wait_status(ew),
                         .n = ew->n,
                         .listeners = ew->st};
  ew->cb(&r, ew->arg);
  wait_free(ew);
}

static void on_wait_idle(uv_idle_t *h) {
  struct worker *w = h->data;
  struct emit_waits *ws = w->waits;
  uint64_t start = uv_hrtime();
  do {
    struct emit_wait *ew = ws->done_head;
    if (ew == NULL)
      break;
    ws->done_head = ew->done_next;
    if (ws->done_head == NULL)
      ws->done_tail = NULL;
    wait_call(w, ew);
  } while (uv_hrtime() - start < WAIT_SLICE_NS);
  if (ws->done_head == NULL)
    uv_idle_stop(h);
  worker_waits_changed(w);
}

int emit_wait_open(struct worker *w) {
  struct emit_waits *ws = calloc(1, sizeof(*ws));
  if (ws == NULL)
    return -ENOMEM;
  pthread_mutex_init(&ws->mu, NULL);
  int err = uv_idle_init(&w->loop, &ws->idle);
  if (err) {
    free(ws);
    return err;
  }
  ws->idle.data = w;
  w->waits = ws;
  return 0;
}

void emit_wait_close(struct worker *w) {
  struct emit_waits *ws = w->waits;
  if (ws == NULL)
    return;
  pthread_mutex_lock(&ws->mu);
  ws->closed = 1;
  pthread_mutex_unlock(&ws->mu);
  /* The finished ones in their order, then the rest oldest first (the
   * list is newest first). */
  while (ws->done_head) {
    struct emit_wait *ew = ws->done_head;
    ws->done_head = ew->done_next;
    wait_call(w, ew);
  }
  ws->done_tail = NULL;
  for (;;) {
    pthread_mutex_lock(&ws->mu);
    struct emit_wait *last = ws->head;
    while (last && last->next)
      last = last->next;
    pthread_mutex_unlock(&ws->mu);
    if (last == NULL)
      break;
    last->status = -ECANCELED;
    wait_call(w, last);
  }
  /* The idle handle closes with the loop's others; its memory goes when
   * the worker's does (worker_close_loop runs the closes). */
}

void emit_wait_free_all(struct worker *w) {
  struct emit_waits *ws = w->waits;
  if (ws == NULL)
    return;
  pthread_mutex_destroy(&ws->mu);
  free(ws);
  w->waits = NULL;
}

size_t emit_wait_pending(const struct worker *w) {
  struct emit_waits *ws = w->waits;
  if (ws == NULL)
    return 0;
  pthread_mutex_lock(&ws->mu);
  size_t n = ws->count;
  pthread_mutex_unlock(&ws->mu);
  return n;
}

struct emit_wait *emit_wait_new(struct worker *w, const char *signal,
                                aio_emit_done_fn *cb, void *arg, int *err) {
  struct emit_waits *ws = w->waits;
  if (ws == NULL) {
    *err = -ENOTSUP;
    return NULL;
  }
  struct emit_wait *ew = calloc(1, sizeof(*ew));
  if (ew == NULL) {
    *err = -ENOMEM;
    return NULL;
  }
  ew->cb = cb;
  ew->arg = arg;
  snprintf(ew->signal, sizeof(ew->signal), "%s", signal);
  pthread_mutex_lock(&ws->mu);
  *err = ws->closed ? -EPIPE : ws->count >= w->app->s.bus_journal ? -EAGAIN : 0;
  if (*err == -EAGAIN)
    w->mark->wait_refused++; /* under mu: threads count without races */
  if (*err == 0) {
    ew->next = ws->head;
    if (ws->head)
      ws->head->prev = ew;
    ws->head = ew;
    ws->count++;
  }
  pthread_mutex_unlock(&ws->mu);
  if (*err) {
    free(ew);
    return NULL;
  }
  return ew;
}

void emit_wait_drop(struct worker *w, struct emit_wait *ew) {
  struct emit_waits *ws = w->waits;
  pthread_mutex_lock(&ws->mu);
  unlink_locked(ws, ew);
  pthread_mutex_unlock(&ws->mu);
  wait_free(ew);
}

int emit_wait_add(struct emit_wait *ew, const char *listener) {
  if (ew->n == ew->cap) {
    size_t cap = ew->cap ? ew->cap * 2 : 4;
    aio_listener_status_t *st = realloc(ew->st, cap * sizeof(*st));
    if (st == NULL)
      return -ENOMEM;
    ew->st = st;
    ew->cap = cap;
  }
  ew->st[ew->n++] = (aio_listener_status_t){listener, -ECANCELED};
  return 0;
}

int emit_wait_add_chain(struct worker *w, struct emit_wait *ew, size_t first) {
  for (size_t k = first; k != BUS_INDEX_END; k = bus_index_next(&w->sigs, k))
    if (emit_wait_add(ew, w->app->s.listeners[k].fn.text))
      return -ENOMEM;
  return 0;
}

void emit_wait_next(struct emit_wait *ew, int status) {
  if (ew->ran < ew->n)
    ew->st[ew->ran++].status = status;
}

void emit_wait_finish(struct worker *w, struct emit_wait *ew, int status) {
  struct emit_waits *ws = w->waits;
  if (ew->finished)
    return;
  if (ew->status == 0)
    ew->status = status;
  ew->finished = 1;
  if (ws->done_tail)
    ws->done_tail->done_next = ew;
  else
    ws->done_head = ew;
  ws->done_tail = ew;
  if (!uv_is_active((uv_handle_t *)&ws->idle))
    uv_idle_start(&ws->idle, on_wait_idle);
}
