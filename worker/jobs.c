/*
 * jobs.c - the scheduler's runs in a worker: a run frame calls its job,
 * aio_event_done() (from any thread) ends it, a timeout fails it, and a
 * done frame tells the master how it ended.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "testing.h"
#include "worker_int.h"

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
  size_t index;         /* BUS_JOB_INDEX(job, which) */
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
  } else if (result && r->index % BUS_JOB_PARTS == BUS_JOB_FUNC) {
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
  worker_drain_check(w);
}

static void on_run_timeout(uv_timer_t *t) {
  struct job_run *r = t->data;
  struct worker *w = r->w;
  char text[128];
  double secs = w->app->s.schedules[r->index / BUS_JOB_PARTS].timeout;
  snprintf(text, sizeof(text), "timed out after %g s", secs);
  log_fields(
      AIO_LOG_WARN,
      LOG_FIELDS(LOG_STR("schedule", r->ev.name), LOG_INT("run", r->ev.run)),
      "[schedule:%s] run %lld: %s %s", r->ev.name, r->ev.run,
      bus_job_part_name(r->index), text);
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

void worker_job_run(struct worker *w, json_t *msg) {
  json_int_t id = json_integer_value(json_object_get(msg, "id"));
  json_int_t job = json_integer_value(json_object_get(msg, "job"));
  json_int_t which = json_integer_value(json_object_get(msg, "which"));
  json_int_t run = json_integer_value(json_object_get(msg, "run"));
  if (job < 0 || (size_t)job >= w->app->s.nschedules || which < 0 ||
      which >= BUS_JOB_PARTS || w->jobs[BUS_JOB_INDEX(job, which)] == NULL) {
    log_warnx("bus: run for unknown job %lld/%lld", (long long)job,
              (long long)which);
    run_refused(w, id, -ENOENT, "no such job in this worker");
    return;
  }
  struct job_run *r = calloc(1, sizeof(*r));
  const char *error = json_string_value(json_object_get(msg, "error"));
  if (r == NULL || (which == BUS_JOB_ERR &&
                    (r->error = strdup(error ? error : "failed")) == NULL)) {
    free(r);
    run_refused(w, id, -ENOMEM, "out of memory");
    return;
  }
  r->w = w;
  r->id = id;
  r->index = (size_t)BUS_JOB_INDEX(job, which);
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
  if (which == BUS_JOB_CB)
    r->ev.result = r->result = json_incref(json_object_get(msg, "result"));
  if (which == BUS_JOB_ERR) {
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
  worker_cb_enter(w, BUS_CB_JOB, r->index);
  int rc = w->jobs[r->index]->u.scheduler(&r->ev);
  worker_cb_leave(w);
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
  if (!worker_soon_here())
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
void worker_jobs_free(struct worker *w) {
  for (struct job_run *r = w->runs, *next; r; r = next) {
    next = r->next;
    json_decref(r->result);
    free(r->error);
    free(r);
  }
  w->runs = NULL;
}
