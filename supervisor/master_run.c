/*
 * master_run.c - the master's loop: set up (the control socket, the
 * cluster link, the metrics endpoint, the sockets of the first
 * generation), run, tear down; and the signals, each a uv_signal_t
 * callback that calls master.c's verbs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cluster.h"
#include "generation.h"
#include "log.h"
#include "master.h"
#include "proctitle.h"
#include "sockets.h"
#include "upgrade.h"
#include "util.h"

#define TICK_MS 100

/* Workers under [aio] user reopen the log by path as that user: the file
 * the master just created as root must be theirs to open, as nginx does
 * with its logs. (They hold it open already, so this gives them nothing
 * they could not write before.) */
static void log_give_to_workers(const struct settings *s) {
  if (s->drop_privileges && s->log_file && geteuid() == 0 &&
      fchown(log_fd(), s->uid, (gid_t)-1) < 0)
    log_warn("cannot give the log file %s to uid %d", s->log_file, (int)s->uid);
}

static void on_watchdog(uv_timer_t *t) {
  (void)t;
  notify_send("WATCHDOG=1");
}

/* While a reload's probe child loads modules the loop does not turn: keep
 * the watchdog fed from the wait itself, or a module that is slow to load
 * would get the whole service killed by systemd. */
static void watchdog_during_wait(void) { notify_send("WATCHDOG=1"); }

static void on_signal(uv_signal_t *h, int signum) {
  struct master *m = h->data;
  switch (signum) {
  case SIGCHLD:
    master_reap(m);
    if (master_stopping(m) && m->procs == NULL && !upgrade_elders(m))
      uv_stop(m->loop);
    break;
  case SIGTERM:
  case SIGINT:
    master_begin_stop(m, MASTER_STOPPING);
    break;
  case SIGQUIT:
    master_begin_stop(m, MASTER_QUITTING);
    break;
  case SIGHUP: {
    char *why = NULL;
    if (reload_start(m, &why) < 0 && why)
      log_warnx("SIGHUP: not reloaded: %s", why);
    free(why);
    break;
  }
  case SIGUSR1:
    log_info("SIGUSR1: reopening log files");
    if (log_reopen() < 0)
      log_warn("cannot reopen the log file");
    else
      log_give_to_workers(&m->gen->app.s);
    for (struct wproc *p = m->procs; p; p = p->next) {
      json_t *msg = bus_msg(BUS_REOPEN);
      channel_send(&p->ch, msg);
      json_decref(msg);
    }
    break;
  case SIGUSR2: {
    char *why = NULL;
    if (upgrade_start(m, NULL, -1, &why) && why)
      log_warnx("SIGUSR2: not upgraded: %s", why);
    free(why);
    break;
  }
  case SIGTTIN:
    if (m->phase == MASTER_RELOADING)
      log_warnx("SIGTTIN ignored during a reload");
    else if (!master_stopping(m))
      master_scale(m, m->nslots + 1);
    break;
  case SIGTTOU:
    if (m->phase == MASTER_RELOADING)
      log_warnx("SIGTTOU ignored during a reload");
    else if (!master_stopping(m)) /* at the fewest, master_scale says so */
      master_scale(m, m->nslots - 1);
    break;
  default:
    break;
  }
}

static const int master_signals[] = {SIGCHLD, SIGTERM, SIGINT,  SIGQUIT, SIGHUP,
                                     SIGUSR1, SIGTTIN, SIGTTOU, SIGUSR2};
/* One uv_signal_t in struct master for each: a signal added here and not
 * there would be started past the end of the array. */
_Static_assert(UTIL_ARRAY_LEN(master_signals) ==
                   UTIL_ARRAY_LEN(((struct master *)0)->sig),
               "struct master needs one sig[] handle per master_signals[]");

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

int master_run(struct app *app, const char *config_path, int ready_fd,
               int *daemon_fd) {
  static uv_loop_t loop;
  struct master mm, *m = &mm;
  memset(m, 0, sizeof(*m));
  m->loop = &loop;
  m->config_path = config_path;
  m->ready_fd = ready_fd;
  m->daemon_fd = daemon_fd;
  m->next_id = 1;
  if (uv_loop_init(&loop)) {
    log_error("cannot create the event loop");
    return EXIT_OSERR;
  }
  m->start_ms = uv_now(m->loop);
  m->gen = generation_new(app, upgrade_generation() + 1);
  if (m->gen == NULL) {
    log_error("out of memory");
    return EXIT_OSERR;
  }
  m->gen->refs = 1;
  log_info("aio %s starting: %s, %d worker%s", AIO_VERSION, config_path,
           m->gen->app.s.workers, m->gen->app.s.workers == 1 ? "" : "s");
  proctitle_set("aio: master (generation %u) %s", m->gen->id, config_path);
  signal(SIGPIPE, SIG_IGN);
  for (size_t i = 0; i < UTIL_ARRAY_LEN(master_signals); i++) {
    uv_signal_init(m->loop, &m->sig[i]);
    m->sig[i].data = m;
    uv_signal_start(&m->sig[i], on_signal, master_signals[i]);
  }
  notify_init();
  activation_init(&m->act);
  /* After the handlers: the signals held across an upgrade's exec are
   * let through here. */
  upgrade_adopt(m);
  /* First, as a second master of this configuration must not bind or
   * fork anything. */
  int rc = control_open(m);
  if (rc) {
    m->exit_code = rc == -EADDRINUSE ? EXIT_UNAVAILABLE
                   : rc == -EPERM    ? EXIT_NOPERM
                                     : EXIT_OSERR;
    goto out;
  }
  if (cluster_start(m)) {
    log_error("cannot start the cluster link: out of memory");
    m->exit_code = EXIT_OSERR;
    goto out;
  }
  rc = metrics_open(m);
  if (rc) {
    m->exit_code = rc == -EADDRINUSE || rc == -EADDRNOTAVAIL ? EXIT_UNAVAILABLE
                                                             : EXIT_OSERR;
    goto out;
  }
  /* Bind everything before the first fork: a bad address fails the start
   * with no worker ever existing. */
  m->nslots = (size_t)m->gen->app.s.workers;
  for (size_t i = 0; i < m->nslots && rc == 0; i++) {
    if (master_slot_get(m, i) == NULL)
      rc = -ENOMEM;
    else
      rc = generation_bind_slot(m->gen, i, NULL, &m->act);
  }
  if (rc) {
    m->exit_code = rc == -EADDRINUSE ? EXIT_UNAVAILABLE : EXIT_OSERR;
    goto out;
  }
  for (size_t i = 0; i < m->gen->app.s.nservers; i++) {
    char where[160];
    sockets_describe(&m->gen->app.s.servers[i], m->gen->ports[i], where,
                     sizeof(where));
    log_info("[server:%s] listening on %s (%s)", m->gen->app.s.servers[i].name,
             where, m->gen->app.s.servers[i].handler.text);
  }
  router_emit(m, "aio-starting", NULL);
  master_start_slots(m);
  if (sched_start(m))
    log_error("cannot start the schedules: out of memory");
  uint64_t wd = notify_watchdog_usec();
  uv_timer_init(m->loop, &m->watchdog);
  if (wd) {
    uv_timer_start(&m->watchdog, on_watchdog, wd / 2000, wd / 2000);
    app_wait_hook = watchdog_during_wait;
  }
  uv_prepare_init(m->loop, &m->bus_flush);
  m->bus_flush.data = m;
  uv_prepare_start(&m->bus_flush, master_on_bus_flush);
  uv_unref((uv_handle_t *)&m->bus_flush);
  uv_timer_init(m->loop, &m->tick);
  m->tick.data = m;
  uv_timer_start(&m->tick, master_on_tick, TICK_MS, TICK_MS);
  uv_run(m->loop, UV_RUN_DEFAULT);
  log_info("stopped");
out:
  master_kill_all(m);
  control_close(m);
  cluster_close(m);
  metrics_close(m);
  upgrade_close(m);
  uv_walk(m->loop, close_walk, NULL);
  uv_run(m->loop, UV_RUN_DEFAULT);
  uv_loop_close(m->loop);
  if (m->ready_fd >= 0)
    close(m->ready_fd);
  m->gen->refs--;
  generation_free(m->gen, NULL);
  activation_close(&m->act);
  router_close(m);
  free(m->slots);
  free(m->scheds);
  return m->exit_code;
}
