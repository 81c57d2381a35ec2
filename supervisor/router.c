/*
 * router.c - the master's side of the signal bus: frames from workers, and
 * delivery of emitted signals to listeners.
 *
 * Routing: a signal emitted by a worker is delivered, for its once-per-emit
 * listeners, to the emitting worker itself (per-emitter affinity): frames on
 * one socketpair are handled in order, so a listener never sees emit k+1
 * before emit k. Broadcast listeners get one delivery per live worker. Each
 * delivery is kept until the worker acknowledges it; if the worker dies,
 * those it finished (its shared bus_mark says which) are forgotten, the one
 * it was handling is dropped (it may be what killed it), and the rest go
 * to another live worker, or for broadcast to the slot's successor.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "master.h"
#include "util.h"

#define SIGNAL_NAME_MAX 256

static int proc_live(const struct wproc *p) {
  return p->state == WPROC_READY || p->state == WPROC_STARTING;
}

/* Send a deliver frame and remember it until acknowledged. */
static void send_delivery(struct wproc *p, json_t *msg, int broadcast) {
  struct delivery *d = calloc(1, sizeof(*d));
  if (d == NULL)
    return;
  d->id = json_integer_value(json_object_get(msg, "id"));
  d->msg = json_incref(msg);
  d->broadcast = broadcast;
  int err = master_send(p, msg);
  if (err == -EMSGSIZE) {
    /* The data fitted in the emit frame but not with the deliver fields:
     * it can never be delivered, so it is not kept. */
    log_warnx("signal '%s': deliver frame over %d bytes; dropped",
              json_string_value(json_object_get(msg, "signal")),
              BUS_MAX_FRAME);
    json_decref(d->msg);
    free(d);
    return;
  }
  /* Any other failure (the channel is closing) keeps it, unsent: the
   * worker's death hands it to another worker. Appending at the tail is
   * O(1), as thousands may be in flight. */
  if (err == 0)
    d->n = ++p->sent;
  if (p->pending_last)
    p->pending_last->next = d;
  else
    p->pending = d;
  p->pending_last = d;
}

static json_t *make_deliver(struct master *m, const char *signal,
                            json_t *data, json_t *listeners) {
  json_t *msg = bus_msg(BUS_DELIVER);
  json_object_set_new(msg, "id", json_integer(m->next_id++));
  json_object_set_new(msg, "signal", json_string(signal));
  json_object_set(msg, "data", data ? data : json_null());
  json_object_set(msg, "listeners", listeners);
  return msg;
}

/* A ready worker of the current generation, lowest slot first; NULL when
 * none. */
static struct wproc *any_ready(struct master *m, const struct wproc *not) {
  struct wproc *best = NULL;
  for (struct wproc *p = m->procs; p; p = p->next)
    if (p != not && p->state == WPROC_READY && p->g == m->gen &&
        (best == NULL || p->slot < best->slot))
      best = p;
  return best;
}

static void backlog_add(json_t **backlog, json_t *msg) {
  if (*backlog == NULL)
    *backlog = json_array();
  json_array_append(*backlog, msg);
}

/* Route one signal from `from` (NULL: the master) in generation g. */
static void route(struct master *m, struct wproc *from, const char *signal,
                  json_t *data) {
  const struct settings *s = &(from ? from->g : m->gen)->app.s;
  json_t *once = json_array(), *bcast = json_array();
  for (size_t i = 0; i < s->nlisteners; i++)
    if (strcmp(s->listeners[i].signal, signal) == 0)
      json_array_append_new(s->listeners[i].broadcast ? bcast : once,
                            json_integer((json_int_t)i));
  if (json_array_size(once) == 0 && json_array_size(bcast) == 0)
    log_debug("signal '%s' has no listener", signal);
  if (json_array_size(once) > 0) {
    json_t *msg = make_deliver(m, signal, data, once);
    struct wproc *to = (from && proc_live(from)) ? from : any_ready(m, NULL);
    if (to)
      send_delivery(to, msg, 0);
    else
      backlog_add(&m->backlog, msg);
    json_decref(msg);
  }
  if (json_array_size(bcast) > 0) {
    for (size_t i = 0; i < m->nslots; i++) {
      struct slot *sl = &m->slots[i];
      json_t *msg = make_deliver(m, signal, data, bcast);
      if (sl->cur && sl->cur->state == WPROC_READY)
        send_delivery(sl->cur, msg, 1);
      else if (sl->state != SLOT_FAILED)
        /* Starting, respawning, or not forked yet (aio-starting is
         * emitted before the first fork): its next worker gets it. */
        backlog_add(&sl->backlog, msg);
      json_decref(msg);
    }
  }
  json_decref(once);
  json_decref(bcast);
}

void router_emit(struct master *m, const char *signal, json_t *data) {
  route(m, NULL, signal, data);
}

static void flush_backlog(json_t **backlog, struct wproc *to, int broadcast) {
  if (*backlog == NULL)
    return;
  size_t i;
  json_t *msg;
  json_array_foreach(*backlog, i, msg) send_delivery(to, msg, broadcast);
  json_decref(*backlog);
  *backlog = NULL;
}

static int on_drained_frame(void *arg, enum bus_type t, json_t *msg) {
  /* A dead worker's last words: acknowledgements, job results, emits.
   * Anything about its own state (ready, heartbeat) no longer matters. */
  if (t == BUS_READY || t == BUS_HEARTBEAT || t == BUS_STATUS)
    return 0;
  return router_frame(arg, t, msg);
}

/* Read what the dead worker wrote before it died. SIGCHLD can be handled
 * before the last bytes on its socket, and the process is freed after
 * this: emits still unread there would be lost, and deliveries it
 * acknowledged would be redelivered. */
static void drain_dead(struct wproc *p) {
  uv_os_fd_t fd;
  if (!p->bus_open || uv_fileno((uv_handle_t *)&p->bus, &fd) != 0)
    return; /* closed, or cut off after a bad frame: nothing more is read */
  char buf[16384];
  for (int i = 0; i < 4096; i++) { /* bounded: a socket buffer's worth */
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0 ||
        bus_reader_feed(&p->rd, buf, (size_t)n, on_drained_frame, p) != 0)
      return;
  }
}

/* Was d the delivery in hand when p died? The shared mark says exactly;
 * without one, the oldest unacknowledged delivery is the best guess. */
static int in_hand(const struct wproc *p, const struct delivery *d,
                   int first) {
  if (p->state != WPROC_DEAD || p->m->stopping)
    return 0;
  return p->mark ? d->n != 0 && d->n == p->mark->in_hand : first;
}

void router_worker_gone(struct master *m, struct wproc *p) {
  drain_dead(p);
  struct delivery *d = p->pending, *next;
  p->pending = NULL;
  p->pending_last = NULL;
  struct slot *sl = (size_t)p->slot < m->slots_cap ? &m->slots[p->slot] : NULL;
  uint64_t done = p->mark ? p->mark->done : 0;
  int first = 1;
  for (; d; d = next) {
    next = d->next;
    if (d->n != 0 && d->n <= done) {
      /* Finished; only its acknowledgement died with the worker. */
    } else if (in_hand(p, d, first)) {
      /* Redelivering it could kill the next worker the same way. */
      log_warnx("signal '%s' (delivery %lld) was being handled by worker %d "
                "when it died; not redelivered",
                json_string_value(json_object_get(d->msg, "signal")),
                (long long)d->id, p->slot);
    } else if (d->broadcast) {
      if (sl && (size_t)sl->index < m->nslots)
        backlog_add(&sl->backlog, d->msg);
    } else {
      struct wproc *to = any_ready(m, p);
      if (to)
        send_delivery(to, d->msg, 0);
      else
        backlog_add(&m->backlog, d->msg);
    }
    first = 0;
    json_decref(d->msg);
    free(d);
  }
  bus_mark_free(p->mark);
  p->mark = NULL;
}

static void worker_became_ready(struct master *m, struct wproc *p) {
  /* The backlog first: it holds aio-starting, and becoming ready may emit
   * aio-started, which must not overtake it. */
  if (p->g == m->gen) {
    flush_backlog(&m->slots[p->slot].backlog, p, 1);
    flush_backlog(&m->backlog, p, 0);
  }
  master_worker_ready(m, p);
}

static int on_emit(struct wproc *p, json_t *msg) {
  const char *signal = json_string_value(json_object_get(msg, "signal"));
  if (signal == NULL || *signal == '\0' || strlen(signal) > SIGNAL_NAME_MAX)
    return -EBADMSG;
  route(p->m, p, signal, json_object_get(msg, "data"));
  return 0;
}

static int on_delivered(struct wproc *p, json_t *msg) {
  json_int_t id = json_integer_value(json_object_get(msg, "id"));
  /* Acknowledgements come in order, so this finds the head at once. */
  for (struct delivery **dd = &p->pending, *prev = NULL; *dd;
       prev = *dd, dd = &(*dd)->next)
    if ((*dd)->id == id) {
      struct delivery *d = *dd;
      *dd = d->next;
      if (p->pending_last == d)
        p->pending_last = prev;
      json_decref(d->msg);
      free(d);
      return 0;
    }
  return -EBADMSG; /* acknowledging what was never sent */
}

int router_frame(struct wproc *p, enum bus_type t, json_t *msg) {
  struct master *m = p->m;
  switch (t) {
  case BUS_READY:
    /* Told to stop while it started (a shutdown, a cancelled reload): a
     * late ready is no lie, but it changes nothing. */
    if (p->state == WPROC_DRAINING)
      return 0;
    if (p->state != WPROC_STARTING)
      return -EPROTO;
    p->last_hb_ms = uv_now(m->loop);
    worker_became_ready(m, p);
    return 0;
  case BUS_HEARTBEAT:
  case BUS_STATUS:
    p->last_hb_ms = uv_now(m->loop);
    p->conns = (long)json_integer_value(json_object_get(msg, "conns"));
    return 0;
  case BUS_EMIT:
    return on_emit(p, msg);
  case BUS_DELIVERED:
    return on_delivered(p, msg);
  case BUS_DONE:
    return sched_done(m, p, msg);
  default:
    return -EPROTO;
  }
}
