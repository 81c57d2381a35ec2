/*
 * listeners.c - listeners run in the worker: those of the master's deliver
 * frames and of the worker's own emits (queued here, run in slices of a
 * loop turn), and async ones (AIO_LISTENER_ASYNC) with aio_signal_done().
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "emit_wait.h"
#include "log.h"
#include "testing.h"
#include "worker_int.h"

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

/* Run the listeners ks[0..nk) of the n-th delivery, from index `from`
 * on. An async one that goes on leaves the rest in w->pend, and the
 * delivery in hand. */
static void deliver_run(struct worker *w, uint64_t n, aio_signal_t *sig,
                        const json_int_t *ks, size_t nk, size_t from) {
  w->mark->in_hand = n;
  for (size_t i = from; i < nk; i++) {
    json_int_t k = ks[i];
    if (k < 0 || (size_t)k >= w->app->s.nlisteners || !w->listeners[k]) {
      log_warnx("bus: deliver to unknown listener %lld", (long long)k);
      continue;
    }
    worker_bus_sync(w);
    worker_cb_enter_listener(w, (size_t)k);
    if (call_listener(w, (size_t)k, sig) == AIO_PENDING) {
      struct pending_signal *pd = &w->pend;
      worker_cb_leave(w);
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
  worker_cb_leave(w);
  w->mark->done = n;
  w->mark->in_hand = 0;
  /* Acknowledged with the rest of this read: one frame for all of them. */
  w->ack_n = n;
}

/* Run the listeners ks[0..nk) of one delivery. */
void worker_deliver(struct worker *w, const char *name, json_t *data,
                    const json_int_t *ks, size_t nk) {
  w->pend.sig = (aio_signal_t){.name = name, .data = data};
  deliver_run(w, ++w->delivers, &w->pend.sig, ks, nk, 0);
}
/* ---- own emits, run here ----------------------------------------------- */

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
    worker_cb_enter_listener(w, k);
    int rc = call_listener(w, k, sig);
    if (rc == AIO_PENDING) {
      worker_cb_leave(w);
      w->pend.local = 1;
      w->pend.it = *it;
      w->pend.it.data = json_incref(it->data);
      return;
    }
    if (it->wait)
      emit_wait_next(it->wait, rc);
  }
  worker_cb_leave(w);
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
    deliver_run(w, pd->n, &pd->sig, ks, pd->nk, 0);
    free(ks);
  }
  json_decref(data);
  if (!pd->active) {
    worker_send_ack(w);
    /* What waited behind it, on the next turns. */
    if (w->lq_head < w->lq_len && !uv_is_active((uv_handle_t *)&w->lq_idle))
      uv_idle_start(&w->lq_idle, on_local_idle);
    /* The read stopped (BUS_PAUSE) for it: resume what it held back. */
    worker_bus_resume(w);
    worker_drain_check(w);
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
  if (!worker_soon_here())
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
  worker_slice_begin(w);
  for (size_t i = 0;
       i < n && (i == 0 || !worker_slice_spent(w)) && !w->pend.active; i++) {
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
  }
  worker_send_ack(w);
  worker_drain_check(w);
}

/* Room for one more entry (of size bytes) at the tail of a queue that
 * lives in (*buf)[*head, *len): the live entries slid down to the start
 * when they fill at most half of it (so each entry moves O(1) times: a
 * queue that stays nearly full, a window of emits, would otherwise move
 * all of them every few pushes), or the array doubled (from 256). 0 or
 * -ENOMEM. */
int worker_queue_room(void **buf, size_t *head, size_t *len, size_t *cap,
                      size_t size) {
  if (*len < *cap)
    return 0;
  if (*head > 0 && *len - *head <= *cap / 2) {
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

int worker_local_push(struct worker *w, uint64_t seq, size_t first,
                      json_t *data, uint64_t ring_end, size_t bytes,
                      struct emit_wait *wait) {
  void *q = w->lq;
  int err = worker_queue_room(&q, &w->lq_head, &w->lq_len, &w->lq_cap,
                              sizeof(*w->lq));
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

/* Before the loop sleeps: a burst's queues, empty now and grown past 256
 * entries, are given back. Not as they empty: a window of emits empties
 * and refills them at every read, and each new array's first malloc made
 * glibc sort all its small free chunks (malloc_consolidate). */
void worker_queues_trim(struct worker *w) {
  if (w->lq_head == w->lq_len && w->lq_cap > 256) {
    free(w->lq);
    w->lq = NULL;
    w->lq_head = w->lq_len = w->lq_cap = 0;
  }
  if (w->kq_head == w->kq_len && w->kq_cap > 256) {
    free(w->kq);
    w->kq = NULL;
    w->kq_head = w->kq_len = w->kq_cap = 0;
  }
}

void worker_local_free(struct worker *w) {
  for (size_t i = w->lq_head; i < w->lq_len; i++)
    json_decref(w->lq[i].data);
  free(w->lq);
  w->lq = NULL;
  w->lq_head = w->lq_len = w->lq_cap = 0;
  worker_kept_free(w);
  worker_rest_clear(w);
  bus_index_close(&w->sigs);
  w->last_sig.n = 0; /* its entry is gone */
}
