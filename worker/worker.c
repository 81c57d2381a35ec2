/*
 * worker.c - the worker process's lifecycle: fresh loop, modules, servers,
 * the master's control frames (stop, run, reopen, status), drain, signals
 * and heartbeat. The bus is worker_bus.c, listeners listeners.c, aio_emit()
 * emit.c, job runs jobs.c, aio_call_soon() call_soon.c.
 */
#define _GNU_SOURCE
#include "worker_int.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "conn.h"
#include "counters.h"
#include "emit_wait.h"
#include "loader.h"
#include "log.h"
#include "proctitle.h"
#include "server.h"
#include "testing.h"

_Thread_local struct worker *worker_self;

/* The signal handler's target: the process's worker, whichever thread the
 * kernel picks to run the handler (a module may start threads of its own). */
static struct worker *signal_worker;

/* During a drain a connection that has been quiet this long is closed:
 * long enough that a request already on the wire has arrived, short enough
 * that an idle keep-alive client does not hold the old worker. */
#define DRAIN_IDLE_MS 1000

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

void worker_finish(struct worker *w, int code) {
  if (w->stopping)
    return;
  w->stopping = 1;
  w->exit_code = code;
  uv_stop(&w->loop);
}

/* A drain ends when the last connection has closed, the worker's own
 * emits have run and no factory holds the worker (aio_server_hold). */
void worker_drain_check(struct worker *w) {
  if (w->draining && w->nconns == 0 && w->lq_head == w->lq_len &&
      w->nruns == 0 && !w->pend.active && w->holds == 0 &&
      emit_wait_pending(w) == 0)
    worker_finish(w, 0);
}

void worker_conn_gone(struct worker *w) { worker_drain_check(w); }

void worker_waits_changed(struct worker *w) { worker_drain_check(w); }

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
  worker_drain_check(w);
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

int worker_on_frame(void *arg, enum bus_type t, json_t *msg) {
  struct worker *w = arg;
  switch (t) {
  case BUS_STOP:
    if (json_is_false(json_object_get(msg, "graceful")))
      worker_finish(w, 0);
    else
      start_drain(w);
    return 0;
  case BUS_RUN:
    worker_job_run(w, msg);
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

/* ---- start and stop ---------------------------------------------------- */

/* The emits made before the worker was ready (below, with emit). */

static int resolve_all(struct worker *w, struct diag *d) {
  const struct settings *s = &w->app->s;
  w->listeners = calloc(s->nlisteners + 1, sizeof(*w->listeners));
  w->jobs = calloc(s->nschedules * BUS_JOB_PARTS + 1, sizeof(*w->jobs));
  w->servers = calloc(s->nservers + 1, sizeof(*w->servers));
  if (!w->listeners || !w->jobs || !w->servers)
    return -1;
  for (size_t i = 0; i < s->nlisteners; i++)
    w->listeners[i] =
        loader_resolve(w->loader, &s->listeners[i].fn, AIO_KIND_LISTENER, d);
  for (size_t i = 0; i < s->nschedules; i++) {
    const struct schedule_conf *sc = &s->schedules[i];
    w->jobs[BUS_JOB_INDEX(i, BUS_JOB_FUNC)] =
        loader_resolve(w->loader, &sc->func, AIO_KIND_SCHEDULER, d);
    if (sc->has_cb)
      w->jobs[BUS_JOB_INDEX(i, BUS_JOB_CB)] =
          loader_resolve(w->loader, &sc->cb, AIO_KIND_SCHEDULER, d);
    if (sc->has_err)
      w->jobs[BUS_JOB_INDEX(i, BUS_JOB_ERR)] =
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
  if (worker_bus_start(w, bus_fd))
    goto out;
  uv_idle_init(&w->loop, &w->lq_idle);
  w->lq_idle.data = w;
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
  worker_early_send(w);

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
  worker_jobs_free(w);
  json_decref(w->pend.data);
  free(w->pend.ks);
  if (w->pend.active && w->pend.local)
    json_decref(w->pend.it.data);
  if (w->bus_room_fd > 0)
    close(w->bus_room_fd);
  bus_out_close(&w->out);
  bus_reader_close(&w->rd);
  loader_free(w->loader);
  worker_local_free(w);
  worker_early_free(w);
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
