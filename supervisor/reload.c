/*
 * reload.c - SIGHUP and `aio reload`, in the order README.md ("Operating
 * it") promises an operator:
 *
 *   1. build and check the new configuration (a probe child loads the
 *      modules, so a broken module cannot hurt the master); on any error
 *      keep the old generation and report every problem;
 *   2. give the new generation its sockets: shared (dup) where the address
 *      is unchanged, newly bound where it is new;
 *   3. start one new worker per slot and wait until each is ready;
 *   4. make them current and tell the old workers to drain;
 *   5. the old generation's sockets close when its last worker is gone.
 *
 * A new worker that dies or is not ready in time aborts the reload: the new
 * workers are killed and the old ones go on serving as if nothing happened.
 * A reload asked for while one is in flight is queued: one more reload
 * runs after it, however many requests came meanwhile.
 *
 * This file decides; master.c acts: it begins, commits and aborts the
 * generation and starts and kills the workers (master.h, verbs), and the
 * exit status of `aio reload` is given to master_gen_abort (cli.h codes),
 * so a script can tell a broken configuration from a taken address or a
 * module that fails.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "generation.h"
#include "log.h"
#include "master.h"
#include "util.h"

/* The longest a new generation may take to report ready before the reload
 * is abandoned, when [aio] timeout is 0 (no liveness limit). */
#define RELOAD_READY_MAX_MS 60000

void reload_cancel(struct master *m, const char *why) {
  m->reload_queued = 0; /* its waiters hear of the shutdown */
  if (m->next_gen)
    master_gen_abort(m, EXIT_TEMPFAIL, why, NULL);
}

int reload_start(struct master *m, char **why) {
  *why = NULL;
  if (master_stopping(m)) {
    *why = strdup("the master is shutting down");
    return -1;
  }
  if (m->phase == MASTER_STARTING) {
    /* Replacing a generation that never served would leave nothing to
     * announce as ready: once it serves. */
    if (m->reload_queued++ == 0)
      log_info("reload requested during the start: queued");
    return 1;
  }
  if (m->phase == MASTER_RELOADING) {
    /* The configuration may have changed since this reload read it: one
     * more reload after it, however many requests came meanwhile, as a
     * process manager that sent them expects. Said once: a HUP storm
     * must not write a line per signal; the reload that runs them says
     * how many came. */
    if (m->reload_queued++ == 0)
      log_info("reload requested during a reload: queued");
    return 1;
  }
  /* This reload reads the file as it is now, so requests queued before
   * it (one that came between the end of a reload and the tick that runs
   * the queued one) are served by it, not by one more after it; their
   * `aio reload` waits for this serial and is answered by it. */
  m->reload_queued = 0;
  m->reload_serial++;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  notify_send("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
              (unsigned long long)ts.tv_sec * 1000000ull +
                  (unsigned long long)ts.tv_nsec / 1000u);
  log_info("reloading %s", m->config_path);
  router_emit(m, "aio-reloading", NULL);
  m->reload_started_ms = uv_now(m->loop);

  struct diag d;
  struct app app;
  diag_init(&d);
  int failed = app_load(&app, m->config_path, &d);
  /* The probe child may have taken a while: do not blame the workers'
   * heartbeats for the time the master spent waiting on it. */
  master_waited(m);
  if (failed) {
    json_t *errors = json_array();
    for (size_t i = 0; i < d.n; i++) {
      log_error("%s", d.msgs[i]);
      json_array_append_new(errors, json_string(d.msgs[i]));
    }
    char msg[128];
    snprintf(msg, sizeof(msg), "configuration has %zu error%s", d.n,
             d.n == 1 ? "" : "s");
    master_gen_abort(m, EXIT_CONFIG, msg, errors);
    json_decref(errors);
    diag_close(&d);
    app_close(&app);
    *why = strdup(msg);
    return -1;
  }
  diag_close(&d);
  struct generation *g = generation_new(&app, m->gen->id + 1);
  app_close(&app);
  if (g == NULL) {
    master_gen_abort(m, EXIT_OSERR, "out of memory", NULL);
    *why = strdup("out of memory");
    return -1;
  }
  g->refs = 1; /* the master's */
  size_t n = (size_t)g->app.s.workers;
  for (size_t i = 0; i < n; i++) {
    int err = master_slot_get(m, i)
                  ? generation_bind_slot(g, i, m->gen, &m->act)
                  : -ENOMEM;
    if (err) {
      char msg[256];
      snprintf(msg, sizeof(msg), "cannot bind the new sockets: %s",
               strerror(-err));
      generation_free(g, m->gen);
      master_gen_abort(m, err == -EADDRINUSE ? EXIT_UNAVAILABLE : EXIT_OSERR,
                       msg, NULL);
      *why = strdup(msg);
      return -1;
    }
  }
  /* A worker being recycled is replaced by this reload's instead: its
   * replacement, still starting, would hold the slot's next. */
  recycle_cancel(m, "a reload replaces every worker");
  uint64_t limit = (uint64_t)(g->app.s.timeout * 1000);
  if (limit == 0 || limit > RELOAD_READY_MAX_MS)
    limit = RELOAD_READY_MAX_MS;
  master_gen_begin(m, g, uv_now(m->loop) + limit);
  for (size_t i = 0; i < n; i++) {
    int err = master_slot_spawn_next(m, g, i);
    if (err) {
      char msg[256];
      snprintf(msg, sizeof(msg), "cannot start worker %zu: %s", i,
               strerror(-err));
      master_gen_abort(m, EXIT_OSERR, msg, NULL);
      *why = strdup(msg);
      return -1;
    }
  }
  if (n == 0)
    reload_worker_ready(m, NULL);
  return 0;
}

void reload_worker_ready(struct master *m, struct wproc *p) {
  (void)p;
  if (m->next_gen == NULL)
    return;
  size_t n = (size_t)m->next_gen->app.s.workers;
  for (size_t i = 0; i < n; i++) {
    struct wproc *q = m->slots[i].next;
    if (q == NULL || q->state != WPROC_READY)
      return;
  }
  master_gen_commit(m);
}

void reload_worker_exited(struct master *m, struct wproc *p, const char *how) {
  if (m->next_gen == NULL || p->g != m->next_gen)
    return;
  char msg[256];
  snprintf(msg, sizeof(msg), "new worker %d (pid %d) %s before it was ready",
           p->slot, (int)p->pid, how);
  master_gen_abort(m, EXIT_SOFTWARE, msg, NULL);
}

void reload_tick(struct master *m, uint64_t now) {
  if (m->next_gen && now >= m->reload_deadline_ms)
    master_gen_abort(m, EXIT_SOFTWARE, "the new workers were not ready in time",
                     NULL);
  /* From the tick rather than where the last reload ended: that is deep
   * in reaping or in a worker's frame, and a reload blocks on its probe. */
  if (m->phase == MASTER_SERVING && m->reload_queued) {
    unsigned n = m->reload_queued;
    m->reload_queued = 0;
    log_info("running the reload queued during the last one (%u request%s)", n,
             n == 1 ? "" : "s");
    char *why = NULL;
    reload_start(m, &why); /* a failure is logged and answered there */
    free(why);
  }
}
