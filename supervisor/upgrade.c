/*
 * upgrade.c - `aio upgrade [BINARY]` and SIGUSR2: replace the master's
 * executable without closing a listening socket, in place (same pid, so
 * systemd's MAINPID, the pidfile and supervisord stay right).
 *
 *   1. validate: the new binary runs `aio -c CONFIG check --handoff=N` in
 *      a child (the configuration, its modules and their API version, and
 *      whether the binary reads this handoff); on failure nothing changed
 *      and `aio upgrade` says why;
 *   2. hand over, the way LISTEN_FDS does: the listening sockets, the
 *      control socket, the pidfile, the `aio upgrade` connection, the
 *      workers' bus ends and output pipes and an fd to the running image
 *      are left open across exec, and AIO_UPGRADE names them (JSON) with the
 * generation number and the counters; then execv in place;
 *   3. the new image adopts the sockets through the socket activation
 *      path (generation.c: one handed socket per server and slot), starts
 *      the next generation as any start does, and only once it serves
 *      (announce_ready) tells the old workers, still its children, to
 *      drain;
 *   4. a new image whose generation cannot start (start_timeout, a crash
 *      loop, a configuration that no longer loads) goes back: it execs the
 *      old image from the fd it was handed, with everything it was handed
 *      plus its own workers as old ones, and the old image starts again
 *      and answers `aio upgrade` with the reason.
 *
 * Steps 1 and 2, and the exec of step 4, are upgrade_exec.c's (the image
 * that is replaced); this file is the new image's side: taking over,
 * draining the old workers, going back (upgrade_int.h between them).
 *
 * The old workers' shared pages (bus marks, counters) do not survive
 * exec: to the new image they are processes to drain and reap, not
 * workers; signals in flight to or from them at the exec are lost.
 */
#define _GNU_SOURCE
#include "upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "generation.h"
#include "log.h"
#include "master.h"
#include "output.h"
#include "util.h"

#include "upgrade_int.h"

struct upgrade_env upgrade_env = {.pidfile_fd = -1};

static const int held_signals[] = {SIGCHLD, SIGTERM, SIGINT,  SIGQUIT, SIGHUP,
                                   SIGUSR1, SIGUSR2, SIGTTIN, SIGTTOU};

void upgrade_hold_signals(int how) {
  sigset_t set;
  sigemptyset(&set);
  for (size_t i = 0; i < UTIL_ARRAY_LEN(held_signals); i++)
    sigaddset(&set, held_signals[i]);
  sigprocmask(how, &set, NULL);
}

/* ---- the new image: taking over ---------------------------------------- */

int upgrade_init(void) {
  const char *s = getenv(UPGRADE_ENV);
  if (s == NULL)
    return 0;
  json_t *h = json_loads(s, 0, NULL);
  unsetenv(UPGRADE_ENV);
  if (!json_is_object(h) || upgrade_jint(h, "v", 0) != UPGRADE_HANDOFF ||
      upgrade_jint(h, "pid", 0) != (int)getpid()) {
    /* Not meant for this process (a child that kept the variable). */
    json_decref(h);
    return 0;
  }
  upgrade_env.handoff = h;
  upgrade_env.pidfile_fd = upgrade_jint(h, "pidfile_fd", -1);
  if (upgrade_env.pidfile_fd >= 0)
    util_set_cloexec(upgrade_env.pidfile_fd, 1);
  const char *pp = upgrade_jstr(h, "pidfile");
  upgrade_env.pidfile_path = pp ? strdup(pp) : NULL;
  return 1;
}

void upgrade_set_pidfile(int fd, const char *path) {
  upgrade_env.pidfile_fd = fd;
  free(upgrade_env.pidfile_path);
  upgrade_env.pidfile_path = path ? strdup(path) : NULL;
}

int upgrade_pidfile(const char **path) {
  *path = upgrade_env.pidfile_path;
  return upgrade_env.handoff ? upgrade_env.pidfile_fd : -1;
}

unsigned upgrade_generation(void) {
  return upgrade_env.handoff
             ? (unsigned)upgrade_jint(upgrade_env.handoff, "generation", 0)
             : 0;
}

static void elder_free(uv_handle_t *h) { free(h->data); }

static void elder_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  static char drop[16384];
  buf->base = drop;
  buf->len = sizeof(drop);
}

static void elder_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  struct elder *e = s->data;
  if (nread > 0)
    e->up->bus_bytes += (uint64_t)nread;
  else if (nread < 0)
    uv_read_stop(s); /* it is exiting; SIGCHLD says how */
}

static void elder_add(struct upgrade *up, const json_t *w) {
  int fd = upgrade_jint(w, "bus", -1);
  /* kill(0) or kill(-1) would reach far more than one old worker. */
  struct elder *e =
      upgrade_jint(w, "pid", 0) > 1 ? calloc(1, sizeof(*e)) : NULL;
  if (e == NULL) {
    if (fd >= 0)
      close(fd);
    return;
  }
  e->up = up;
  e->pid = (pid_t)upgrade_jint(w, "pid", 0);
  e->slot = upgrade_jint(w, "slot", -1);
  e->gen = (unsigned)upgrade_jint(w, "generation", 0);
  e->deadline_ms = UINT64_MAX;
  uv_pipe_init(up->m->loop, &e->bus, 0);
  e->bus.data = e;
  if (fd >= 0) {
    util_set_cloexec(fd, 1);
    if (uv_pipe_open(&e->bus, fd) == 0)
      uv_read_start((uv_stream_t *)&e->bus, elder_alloc, elder_read);
    else
      close(fd);
  }
  e->output =
      output_adopt(upgrade_jint(w, "out", -1), upgrade_jint(w, "err", -1));
  if (e->output) {
    for (int i = 0; i < 2; i++)
      util_set_cloexec(output_fd(e->output, i), 1);
    output_start(e->output, up->m->loop, e->slot, e->pid);
  }
  json_t *left = json_object_get(w, "left_ms");
  if (json_is_integer(left)) {
    /* Told to drain before the exec: the rest of its time. */
    e->draining = 1;
    e->deadline_ms = uv_now(up->m->loop) + (uint64_t)json_integer_value(left);
  }
  e->next = up->elders;
  up->elders = e;
  up->nelders++;
}

void upgrade_new(struct master *m) {
  if (m->up)
    return;
  struct upgrade *up = calloc(1, sizeof(*up));
  if (up == NULL)
    return;
  up->m = m;
  up->client_fd = up->image_fd = up->ctl_fd = -1;
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    exe[n] = '\0';
    up->binary = strdup(exe);
  }
  m->up = up;
}

void upgrade_adopt(struct master *m) {
  upgrade_new(m);
  struct upgrade *up = m->up;
  json_t *h = upgrade_env.handoff;
  unsigned old_gen = upgrade_generation();
  upgrade_env.handoff = NULL;
  if (up == NULL || h == NULL) {
    json_decref(h);
    upgrade_hold_signals(SIG_UNBLOCK);
    return;
  }
  const char *bin = upgrade_jstr(h, "binary"),
             *old = upgrade_jstr(h, "old_binary");
  if (bin) {
    free(up->binary);
    up->binary = strdup(bin);
  }
  up->old_binary = old ? strdup(old) : NULL;
  const char *conf = upgrade_jstr(h, "config");
  up->old_config = conf ? strdup(conf) : NULL;
  up->upgrades = (unsigned)upgrade_jint(h, "upgrades", 0);
  up->failures = (unsigned)upgrade_jint(h, "upgrade_failures", 0);
  up->client_fd = upgrade_jint(h, "client", -1);
  up->ctl_fd = upgrade_jint(h, "control", -1);
  const char *cp = upgrade_jstr(h, "control_path");
  up->ctl_path = cp ? strdup(cp) : NULL;
  if (up->ctl_fd >= 0)
    util_set_cloexec(up->ctl_fd, 1);
  up->image_fd = upgrade_jint(h, "image", -1);
  if (up->client_fd >= 0)
    util_set_cloexec(up->client_fd, 1);
  if (up->image_fd >= 0)
    util_set_cloexec(up->image_fd, 1);
  const char *err = upgrade_jstr(h, "error");
  if (err) {
    up->fallback = 1;
    up->failures++;
    snprintf(up->last_error, sizeof(up->last_error), "%s", err);
  }
  m->reloads = (unsigned)upgrade_jint(h, "reloads", 0);
  m->reload_failures = (unsigned)upgrade_jint(h, "reload_failures", 0);
  size_t i;
  json_t *v;
  json_array_foreach(json_object_get(h, "sockets"), i, v) {
    int fd = upgrade_jint(v, "fd", -1);
    if (fd >= 0 && activation_add(&m->act, fd, upgrade_jstr(v, "server"),
                                  upgrade_jint(v, "slot", -1),
                                  !upgrade_jint(v, "systemd", 0)))
      log_error("upgrade: out of memory adopting the sockets");
  }
  json_array_foreach(json_object_get(h, "workers"), i, v) elder_add(up, v);
  /* Workers that exited while no handler was installed: SIGCHLD is
   * pending (held across the exec) and reaps them. */
  upgrade_hold_signals(SIG_UNBLOCK);
  if (up->fallback)
    log_error("upgrade failed: %s; back on %s (generation %u)", err,
              up->binary ? up->binary : "the old binary", old_gen);
  else
    log_info("upgrade: running %s in place of generation %u; %zu old "
             "worker%s serve until the new ones do",
             up->binary ? up->binary : "?", old_gen, up->nelders,
             up->nelders == 1 ? "" : "s");
  json_decref(h);
}

static void elder_stop(struct master *m, struct elder *e, int graceful) {
  uint64_t now = uv_now(m->loop);
  uint64_t limit =
      graceful ? (uint64_t)(m->gen->app.s.graceful_timeout * 1000) : 2000;
  if (!e->draining || now + limit < e->deadline_ms)
    e->deadline_ms = now + limit;
  e->draining = 1;
  /* The worker drains on SIGTERM as on a stop frame (worker.c). */
  kill(e->pid, graceful ? SIGTERM : SIGQUIT);
}

/* One line to the waiting `aio upgrade` (steals reply), then close. */
static void answer_client(struct upgrade *up, json_t *reply) {
  if (up->client_fd < 0) {
    json_decref(reply);
    return;
  }
  char *s = json_dumps(reply, JSON_COMPACT);
  json_decref(reply);
  if (s) {
    size_t n = strlen(s);
    s[n] = '\n'; /* the NUL goes: written by length */
    ssize_t w;
    do
      w = send(up->client_fd, s, n + 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (w < 0 && errno == EINTR);
    free(s);
  }
  close(up->client_fd);
  up->client_fd = -1;
}

void upgrade_served(struct master *m) {
  struct upgrade *up = m->up;
  if (up == NULL)
    return;
  /* Nothing to go back to from here on: the generation holds dups of
   * the handed sockets (a slot that fails later takes its socket from
   * them no more, and binds again as in any start). */
  activation_drop_handed(&m->act);
  if (up->image_fd >= 0) {
    close(up->image_fd);
    up->image_fd = -1;
  }
  if (up->nelders == 0 && up->client_fd < 0)
    return;
  for (struct elder *e = up->elders; e; e = e->next)
    if (!e->draining)
      elder_stop(m, e, 1);
  if (up->fallback) {
    answer_client(up, json_pack("{s:b,s:s,s:[s],s:i}", "ok", 0, "error",
                                "upgrade failed", "errors", up->last_error,
                                "code", EXIT_SOFTWARE));
    return;
  }
  if (up->nelders || up->client_fd >= 0) {
    up->upgrades++;
    log_info("upgraded: generation %u, binary %s, pid %d; %zu old worker%s "
             "draining",
             m->gen->id, up->binary ? up->binary : "?", (int)getpid(),
             up->nelders, up->nelders == 1 ? "" : "s");
  }
  answer_client(up, json_pack("{s:b,s:i,s:i,s:s}", "ok", 1, "generation",
                              (int)m->gen->id, "pid", (int)getpid(), "binary",
                              up->binary ? up->binary : ""));
}

static void elder_unlink(struct upgrade *up, struct elder *e) {
  for (struct elder **pe = &up->elders; *pe; pe = &(*pe)->next)
    if (*pe == e) {
      *pe = e->next;
      break;
    }
  up->nelders--;
  uv_close((uv_handle_t *)&e->bus, elder_free);
}

int upgrade_reaped(struct master *m, pid_t pid, int status) {
  struct upgrade *up = m->up;
  struct elder *e = up ? up->elders : NULL;
  while (e && e->pid != pid)
    e = e->next;
  if (e == NULL)
    return 0;
  /* Its last lines before the line that says it exited. */
  output_close(e->output);
  e->output = NULL;
  int clean =
      (WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
      (e->draining && WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL);
  if (clean)
    log_info("old worker %d (pid %d, generation %u) exited%s", e->slot,
             (int)pid, e->gen, e->draining ? " after draining" : "");
  else if (WIFSIGNALED(status))
    log_error("old worker %d (pid %d, generation %u) killed by signal %d",
              e->slot, (int)pid, e->gen, WTERMSIG(status));
  else
    log_error("old worker %d (pid %d, generation %u) exited with status %d",
              e->slot, (int)pid, e->gen, WEXITSTATUS(status));
  elder_unlink(up, e);
  return 1;
}

void upgrade_tick(struct master *m, uint64_t now) {
  for (struct elder *e = m->up ? m->up->elders : NULL; e; e = e->next)
    if (e->draining && now >= e->deadline_ms) {
      log_warnx("old worker %d (pid %d) still running after the graceful "
                "timeout; killing it",
                e->slot, (int)e->pid);
      kill(e->pid, SIGKILL);
      e->deadline_ms = UINT64_MAX;
    }
}

void upgrade_stop(struct master *m, int graceful) {
  for (struct elder *e = m->up ? m->up->elders : NULL; e; e = e->next)
    elder_stop(m, e, graceful);
  if (m->up && m->up->client_fd >= 0)
    answer_client(m->up, json_pack("{s:b,s:s,s:i}", "ok", 0, "error",
                                   "the master is shutting down", "code",
                                   EXIT_TEMPFAIL));
}

size_t upgrade_elders(const struct master *m) {
  return m->up ? m->up->nelders : 0;
}

json_t *upgrade_status(const struct master *m) {
  const struct upgrade *up = m->up;
  if (up == NULL)
    return json_null();
  json_t *old = json_array();
  for (const struct elder *e = up->elders; e; e = e->next)
    json_array_append_new(old, json_pack("{s:i,s:i,s:i,s:b}", "slot", e->slot,
                                         "pid", (int)e->pid, "generation",
                                         (int)e->gen, "draining", e->draining));
  return json_pack("{s:s?,s:i,s:i,s:s?,s:o,s:I}", "binary", up->binary,
                   "upgrades", (int)up->upgrades, "failures", (int)up->failures,
                   "last_error", up->last_error[0] ? up->last_error : NULL,
                   "old_workers", old, "old_bus_bytes_dropped",
                   (json_int_t)up->bus_bytes);
}

void upgrade_close(struct master *m) {
  struct upgrade *up = m->up;
  if (up == NULL)
    return;
  /* The loop is closing every handle; the elders go with it. */
  struct elder *e = up->elders;
  while (e) {
    struct elder *next = e->next;
    output_close(e->output);
    if (!uv_is_closing((uv_handle_t *)&e->bus))
      uv_close((uv_handle_t *)&e->bus, elder_free);
    e = next;
  }
  up->elders = NULL;
  if (up->client_fd >= 0)
    close(up->client_fd);
  if (up->image_fd >= 0)
    close(up->image_fd);
  if (up->ctl_fd >= 0)
    close(up->ctl_fd);
  free(up->ctl_path);
  free(up->binary);
  free(up->old_binary);
  free(up->old_config);
  free(up);
  m->up = NULL;
  free(upgrade_env.pidfile_path);
  upgrade_env.pidfile_path = NULL;
}

int upgrade_control_fd(struct master *m, const char *path) {
  struct upgrade *up = m->up;
  if (up == NULL || up->ctl_fd < 0)
    return -1;
  int fd = up->ctl_fd;
  up->ctl_fd = -1;
  if (up->ctl_path && strcmp(up->ctl_path, path) == 0)
    return fd;
  close(fd);
  if (up->ctl_path)
    unlink(up->ctl_path);
  return -1;
}

/* ---- the new image: going back ----------------------------------------- */

int upgrade_start_failed(struct master *m, const char *why) {
  struct upgrade *up = m->up;
  if (up == NULL || up->image_fd < 0)
    return 0;
  /* The new image's own workers become old ones of the image it goes
   * back to: a SIGKILL would reset what they accepted, so they drain
   * there like the rest. */
  log_error("upgrade: the new image cannot serve: %s; going back to %s", why,
            up->old_binary ? up->old_binary : "the old image");
  int image = up->image_fd;
  up->image_fd = -1;
  char msg[512];
  snprintf(msg, sizeof(msg), "the new binary %s: %s",
           up->binary ? up->binary : "", why);
  struct handoff_args a = {.binary = up->old_binary ? up->old_binary : "aio",
                           .config =
                               up->old_config ? up->old_config : m->config_path,
                           .gen = m->gen->id,
                           .client_fd = up->client_fd,
                           .image_fd = -1, /* no way further back */
                           .error = msg};
  upgrade_exec_with(m, NULL, image, &a);
  log_error("upgrade: cannot go back to the old image: %s", strerror(errno));
  close(image);
  return 0;
}

void upgrade_fall_back(const char *why) {
  json_t *h = upgrade_env.handoff;
  int image = h ? upgrade_jint(h, "image", -1) : -1;
  if (image < 0)
    return;
  /* No master yet: the handoff goes back as it came, with the reason. */
  json_object_set_new(h, "error", json_string(why));
  json_object_set_new(h, "image", json_integer(-1));
  json_object_set(h, "binary", json_object_get(h, "old_binary"));
  char *text = json_dumps(h, JSON_COMPACT);
  if (text && setenv(UPGRADE_ENV, text, 1) == 0) {
    notify_export();
    upgrade_hold_signals(SIG_BLOCK);
    const char *bin =
        upgrade_jstr(h, "binary") ? upgrade_jstr(h, "binary") : "aio";
    const char *argv[] = {bin, "-c", upgrade_jstr(h, "config"), "run", NULL};
    /* Every fd it names is still open and not close-on-exec: nothing has
     * touched them since this image started. */
    if (upgrade_env.pidfile_fd >= 0)
      util_set_cloexec(upgrade_env.pidfile_fd, 0);
    util_set_cloexec(image, 1); /* an ELF image: fexecve needs no more */
    fexecve(image, (char **)argv, environ);
    upgrade_hold_signals(SIG_UNBLOCK);
  }
  log_error("upgrade: cannot go back to the old image: %s", strerror(errno));
  free(text);
}
