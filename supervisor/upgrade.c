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
 * The old workers' shared pages (bus marks, counters) do not survive
 * exec: to the new image they are processes to drain and reap, not
 * workers; signals in flight to or from them at the exec are lost.
 */
#define _GNU_SOURCE
#include "upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "cli.h"
#include "generation.h"
#include "log.h"
#include "master.h"
#include "output.h"
#include "util.h"

#define UPGRADE_ENV "AIO_UPGRADE"
/* How long the new binary's `check` may take (it loads every module). */
#define UPGRADE_CHECK_MAX_MS 60000
/* What of its output goes into the error message. */
#define UPGRADE_CHECK_OUT 2048
/* How long a new image that goes back waits for its own workers. */
#define UPGRADE_BACK_WAIT_MS 2000

/* An old worker: a child of this process from before the exec. */
struct elder {
  struct upgrade *up;
  pid_t pid;
  int slot;
  unsigned gen;
  uv_pipe_t bus; /* read and dropped, so it never blocks on a full pipe */
  struct output *output; /* its stdout and stderr, logged as before */
  int draining;
  uint64_t deadline_ms; /* killed then; UINT64_MAX: not draining yet */
  struct elder *next;
};

struct upgrade {
  struct master *m;
  struct elder *elders;
  size_t nelders;
  char *binary;     /* what `aio upgrade` execs by default */
  char *old_binary; /* the image to go back to runs from here */
  char *old_config; /* with this configuration */
  unsigned upgrades, failures;
  char last_error[512];
  int client_fd;      /* the `aio upgrade` that waits for us, or -1 */
  int image_fd;       /* the image to go back to, or -1 */
  int fallback;       /* this image came back after a failed upgrade */
  uint64_t bus_bytes; /* read from old workers and dropped */
  int ctl_fd;         /* the control socket handed over, or -1 */
  char *ctl_path;     /* where it is bound */
};

/* What the environment said (upgrade_init), until master_run adopts it. */
static json_t *handoff;
static int pidfile_fd = -1;
static char *pidfile_path;

static const int held_signals[] = {SIGCHLD, SIGTERM, SIGINT,  SIGQUIT, SIGHUP,
                                   SIGUSR1, SIGUSR2, SIGTTIN, SIGTTOU};

static void hold_signals(int how) {
  sigset_t set;
  sigemptyset(&set);
  for (size_t i = 0; i < UTIL_ARRAY_LEN(held_signals); i++)
    sigaddset(&set, held_signals[i]);
  sigprocmask(how, &set, NULL);
}

static int jint(const json_t *o, const char *k, int dflt) {
  json_t *v = json_object_get(o, k);
  return json_is_integer(v) ? (int)json_integer_value(v) : dflt;
}

static const char *jstr(const json_t *o, const char *k) {
  return json_string_value(json_object_get(o, k));
}

/* ---- the new image: taking over ---------------------------------------- */

int upgrade_init(void) {
  const char *s = getenv(UPGRADE_ENV);
  if (s == NULL)
    return 0;
  json_t *h = json_loads(s, 0, NULL);
  unsetenv(UPGRADE_ENV);
  if (!json_is_object(h) || jint(h, "v", 0) != UPGRADE_HANDOFF ||
      jint(h, "pid", 0) != (int)getpid()) {
    /* Not meant for this process (a child that kept the variable). */
    json_decref(h);
    return 0;
  }
  handoff = h;
  pidfile_fd = jint(h, "pidfile_fd", -1);
  if (pidfile_fd >= 0)
    util_set_cloexec(pidfile_fd, 1);
  const char *pp = jstr(h, "pidfile");
  pidfile_path = pp ? strdup(pp) : NULL;
  return 1;
}

void upgrade_set_pidfile(int fd, const char *path) {
  pidfile_fd = fd;
  free(pidfile_path);
  pidfile_path = path ? strdup(path) : NULL;
}

int upgrade_pidfile(const char **path) {
  *path = pidfile_path;
  return handoff ? pidfile_fd : -1;
}

unsigned upgrade_generation(void) {
  return handoff ? (unsigned)jint(handoff, "generation", 0) : 0;
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
  int fd = jint(w, "bus", -1);
  /* kill(0) or kill(-1) would reach far more than one old worker. */
  struct elder *e = jint(w, "pid", 0) > 1 ? calloc(1, sizeof(*e)) : NULL;
  if (e == NULL) {
    if (fd >= 0)
      close(fd);
    return;
  }
  e->up = up;
  e->pid = (pid_t)jint(w, "pid", 0);
  e->slot = jint(w, "slot", -1);
  e->gen = (unsigned)jint(w, "generation", 0);
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
  e->output = output_adopt(jint(w, "out", -1), jint(w, "err", -1));
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

static void upgrade_new(struct master *m) {
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
  json_t *h = handoff;
  unsigned old_gen = upgrade_generation();
  handoff = NULL;
  if (up == NULL || h == NULL) {
    json_decref(h);
    hold_signals(SIG_UNBLOCK);
    return;
  }
  const char *bin = jstr(h, "binary"), *old = jstr(h, "old_binary");
  if (bin) {
    free(up->binary);
    up->binary = strdup(bin);
  }
  up->old_binary = old ? strdup(old) : NULL;
  const char *conf = jstr(h, "config");
  up->old_config = conf ? strdup(conf) : NULL;
  up->upgrades = (unsigned)jint(h, "upgrades", 0);
  up->failures = (unsigned)jint(h, "upgrade_failures", 0);
  up->client_fd = jint(h, "client", -1);
  up->ctl_fd = jint(h, "control", -1);
  const char *cp = jstr(h, "control_path");
  up->ctl_path = cp ? strdup(cp) : NULL;
  if (up->ctl_fd >= 0)
    util_set_cloexec(up->ctl_fd, 1);
  up->image_fd = jint(h, "image", -1);
  if (up->client_fd >= 0)
    util_set_cloexec(up->client_fd, 1);
  if (up->image_fd >= 0)
    util_set_cloexec(up->image_fd, 1);
  const char *err = jstr(h, "error");
  if (err) {
    up->fallback = 1;
    up->failures++;
    snprintf(up->last_error, sizeof(up->last_error), "%s", err);
  }
  m->reloads = (unsigned)jint(h, "reloads", 0);
  m->reload_failures = (unsigned)jint(h, "reload_failures", 0);
  size_t i;
  json_t *v;
  json_array_foreach(json_object_get(h, "sockets"), i, v) {
    int fd = jint(v, "fd", -1);
    if (fd >= 0 && activation_add(&m->act, fd, jstr(v, "server"),
                                  jint(v, "slot", -1), !jint(v, "systemd", 0)))
      log_error("upgrade: out of memory adopting the sockets");
  }
  json_array_foreach(json_object_get(h, "workers"), i, v) elder_add(up, v);
  /* Workers that exited while no handler was installed: SIGCHLD is
   * pending (held across the exec) and reaps them. */
  hold_signals(SIG_UNBLOCK);
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
  free(pidfile_path);
  pidfile_path = NULL;
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

/* ---- the old image: validating and handing over ------------------------ */

/* Run `binary -c config check --handoff=N`: 0, or the exit status for
 * `aio upgrade` with why set (new). Blocks, as a reload's probe does, and
 * keeps systemd's watchdog fed meanwhile. */
static int check_binary(const char *binary, const char *config, char **why) {
  if (access(binary, X_OK) < 0) {
    *why = util_asprintf("cannot execute %s: %s", binary, strerror(errno));
    return EXIT_SOFTWARE;
  }
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) {
    *why = util_asprintf("cannot check %s: %s", binary, strerror(errno));
    return EXIT_OSERR;
  }
  char handoff_arg[32];
  snprintf(handoff_arg, sizeof(handoff_arg), "--handoff=%d", UPGRADE_HANDOFF);
  pid_t pid = fork();
  if (pid < 0) {
    *why = util_asprintf("cannot check %s: %s", binary, strerror(errno));
    close(p[0]);
    close(p[1]);
    return EXIT_OSERR;
  }
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int nul = open("/dev/null", O_RDONLY);
    if (nul >= 0)
      dup2(nul, 0);
    dup2(p[1], 1);
    dup2(p[1], 2);
    const char *argv[] = {binary, "-c", config, "check", handoff_arg, NULL};
    execv(binary, (char **)argv);
    dprintf(2, "cannot execute %s: %s\n", binary, strerror(errno));
    _exit(127);
  }
  close(p[1]);
  struct util_buf buf = {0};
  int status;
  int err = child_read_wait(pid, p[0], &buf, 64 * 1024, UPGRADE_CHECK_MAX_MS,
                            app_wait_hook, &status);
  int timed_out = err == -ETIMEDOUT;
  char out[UPGRADE_CHECK_OUT + 1];
  size_t len = buf.len < UPGRADE_CHECK_OUT ? buf.len : UPGRADE_CHECK_OUT;
  memcpy(out, buf.data ? buf.data : "", len);
  free(buf.data);
  out[len] = '\0';
  while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == ' '))
    out[--len] = '\0';
  for (char *c = out; *c; c++)
    if (*c == '\n')
      *c = ';';
  if (timed_out) {
    *why = util_asprintf("%s: `check` did not finish within %d s", binary,
                         UPGRADE_CHECK_MAX_MS / 1000);
    return EXIT_SOFTWARE;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    return 0;
  if (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_CONFIG) {
    *why = util_asprintf("%s rejects the configuration: %s", binary, out);
    return EXIT_CONFIG;
  }
  char how[64];
  if (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_USAGE)
    snprintf(how, sizeof(how), "does not take an upgrade handoff (exit %d)",
             EXIT_USAGE);
  else if (WIFEXITED(status))
    snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(status));
  else
    snprintf(how, sizeof(how), "was killed by signal %d", WTERMSIG(status));
  *why = util_asprintf("the new binary cannot start: `%s check` %s%s%s", binary,
                       how, out[0] ? ": " : "", out);
  return EXIT_SOFTWARE;
}

/* The fds left open across exec, to be made close-on-exec again if the
 * exec fails. */
struct keep {
  int *fds;
  size_t n, cap;
  int failed; /* one could not be recorded: no exec */
};

static int keep_fd(struct keep *k, int fd) {
  if (fd < 0)
    return -1;
  if (util_grow((void **)&k->fds, &k->cap, k->n + 1, sizeof(int))) {
    k->failed = 1;
    return -1;
  }
  util_set_cloexec(fd, 0);
  k->fds[k->n++] = fd;
  return fd;
}

static void add_socket(json_t *socks, struct keep *k, int fd, const char *name,
                       int slot, int systemd) {
  if (keep_fd(k, fd) >= 0)
    json_array_append_new(socks,
                          json_pack("{s:i,s:s?,s:i,s:b}", "fd", fd, "server",
                                    name, "slot", slot, "systemd", systemd));
}

/* What is handed to the next image besides the sockets and workers. */
struct handoff_args {
  const char *binary;     /* the next image's default binary */
  const char *old_binary; /* the image it may go back to */
  const char *config;
  unsigned gen;      /* the generation serving now */
  int client_fd;     /* the `aio upgrade` waiting, or -1 */
  int image_fd;      /* the image to go back to, or -1 */
  const char *error; /* going back: why */
};

/* What the next image needs (new): the sockets of the serving generation
 * and of socket activation, every live worker (as old ones), the control
 * socket, the pidfile, the client, the image to go back to. */
static json_t *handoff_build(struct master *m, struct keep *k,
                             const struct handoff_args *a) {
  struct upgrade *up = m->up;
  struct generation *g = m->gen;
  json_t *socks = json_array(), *workers = json_array();
  int handed = 0;
  for (size_t i = 0; i < m->act.n; i++) {
    handed |= m->act.handed[i];
    add_socket(socks, k, m->act.fds[i], m->act.names[i], m->act.slot[i],
               !m->act.handed[i]);
  }
  /* An image that has not served yet (going back) hands back what it was
   * handed, whatever became of its own generation's sockets. */
  for (size_t i = 0; !handed && i < g->app.s.nservers; i++) {
    const char *name = g->app.s.servers[i].name;
    if (g->shared[i] >= 0) {
      if (!g->activated[i]) /* else: among the activation's above */
        add_socket(socks, k, g->shared[i], name, -1, 0);
      continue;
    }
    for (size_t s = 0; s < g->nslots_fds; s++)
      if (g->fds[s] && g->fds[s][i] >= 0)
        add_socket(socks, k, g->fds[s][i], name, (int)s, 0);
  }
  uint64_t now = uv_now(m->loop);
  for (struct wproc *p = m->procs; p; p = p->next) {
    if (p->state == WPROC_DEAD)
      continue;
    int fd = channel_fd(&p->ch);
    json_t *w =
        json_pack("{s:i,s:i,s:i,s:i,s:i,s:i}", "pid", (int)p->pid, "slot",
                  p->slot, "generation", (int)p->g->id, "bus", keep_fd(k, fd),
                  "out", keep_fd(k, output_fd(p->output, 0)), "err",
                  keep_fd(k, output_fd(p->output, 1)));
    if (p->state == WPROC_DRAINING)
      json_object_set_new(
          w, "left_ms",
          json_integer(p->stop_deadline_ms > now
                           ? (json_int_t)(p->stop_deadline_ms - now)
                           : 0));
    json_array_append_new(workers, w);
  }
  for (struct elder *e = up->elders; e; e = e->next) {
    uv_os_fd_t fd = -1;
    if (uv_fileno((uv_handle_t *)&e->bus, &fd))
      fd = -1;
    json_t *w =
        json_pack("{s:i,s:i,s:i,s:i,s:i,s:i}", "pid", (int)e->pid, "slot",
                  e->slot, "generation", (int)e->gen, "bus", keep_fd(k, fd),
                  "out", keep_fd(k, output_fd(e->output, 0)), "err",
                  keep_fd(k, output_fd(e->output, 1)));
    if (e->draining)
      json_object_set_new(
          w, "left_ms",
          json_integer(e->deadline_ms > now && e->deadline_ms != UINT64_MAX
                           ? (json_int_t)(e->deadline_ms - now)
                           : 0));
    json_array_append_new(workers, w);
  }
  uv_os_fd_t ctl = -1;
  const char *ctl_path = control_path(m);
  if (ctl_path == NULL || control_fd(m, &ctl))
    ctl = -1;
  json_t *h = json_pack(
      "{s:i,s:i,s:s,s:s,s:s?,s:i,s:i,s:i,s:i,s:i,s:o,s:o,s:i,s:s?,s:i,s:i,"
      "s:s?,s:i}",
      "v", UPGRADE_HANDOFF, "pid", (int)getpid(), "config", a->config, "binary",
      a->binary, "old_binary", a->old_binary, "generation", (int)a->gen,
      "reloads", (int)m->reloads, "reload_failures", (int)m->reload_failures,
      "upgrades", (int)up->upgrades, "upgrade_failures", (int)up->failures,
      "sockets", socks, "workers", workers, "control", keep_fd(k, ctl),
      "control_path", ctl_path, "client", keep_fd(k, a->client_fd), "image",
      keep_fd(k, a->image_fd), "pidfile", pidfile_path, "pidfile_fd",
      keep_fd(k, pidfile_fd));
  if (h && a->error)
    json_object_set_new(h, "error", json_string(a->error));
  return h;
}

/* Exec path (or, path NULL, the image exec_fd) in place with the handoff.
 * Only returns on failure, everything left as it was, with errno set. */
static int exec_with(struct master *m, const char *path, int exec_fd,
                     const struct handoff_args *a) {
  struct keep k = {0};
  json_t *h = handoff_build(m, &k, a);
  char *text = h && !k.failed ? json_dumps(h, JSON_COMPACT) : NULL;
  json_decref(h);
  int err = ENOMEM;
  if (text && setenv(UPGRADE_ENV, text, 1) == 0) {
    notify_export();
    /* Held across the exec: the new image acts on them once its handlers
     * are in place (upgrade_adopt). A TERM now must not kill the master
     * with its default action. */
    hold_signals(SIG_BLOCK);
    const char *argv[] = {a->binary, "-c", a->config, "run", NULL};
    if (path)
      execv(path, (char **)argv);
    else
      fexecve(exec_fd, (char **)argv, environ);
    err = errno;
    hold_signals(SIG_UNBLOCK);
    notify_init(); /* takes the variables out again */
  }
  unsetenv(UPGRADE_ENV);
  free(text);
  for (size_t i = 0; i < k.n; i++)
    util_set_cloexec(k.fds[i], 1);
  free(k.fds);
  errno = err;
  return -1;
}

int upgrade_start(struct master *m, const char *binary, int client_fd,
                  char **why) {
  *why = NULL;
  upgrade_new(m);
  struct upgrade *up = m->up;
  if (up == NULL) {
    *why = strdup("out of memory");
    return EXIT_OSERR;
  }
  if (master_stopping(m) || m->phase != MASTER_SERVING) {
    *why = util_asprintf("the master is %s; try again",
                         master_stopping(m)             ? "shutting down"
                         : m->phase == MASTER_RELOADING ? "reloading"
                                                        : "starting");
    return EXIT_TEMPFAIL;
  }
  if (binary == NULL)
    binary = up->binary;
  if (binary == NULL || binary[0] != '/') {
    *why = util_asprintf("the binary must be an absolute path, not %s",
                         binary ? binary : "(unknown)");
    return EXIT_USAGE;
  }
  log_info("upgrade: checking %s", binary);
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  notify_send("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=upgrading to %s",
              (unsigned long long)ts.tv_sec * 1000000ull +
                  (unsigned long long)ts.tv_nsec / 1000u,
              binary);
  int code = check_binary(binary, m->config_path, why);
  /* The check may have taken a while: the workers' heartbeats were not
   * read meanwhile. */
  uv_update_time(m->loop);
  for (struct wproc *p = m->procs; p; p = p->next)
    if (p->last_hb_ms < UINT64_MAX / 2)
      p->last_hb_ms = uv_now(m->loop);
  int image = -1;
  if (code == 0) {
    image = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (image < 0)
      log_warn("upgrade: cannot keep the running image to go back to");
    log_info("upgrade: %s checked; executing it in place (pid %d)", binary,
             (int)getpid());
    char *next = strdup(binary); /* binary may be up->binary */
    struct handoff_args a = {.binary = next ? next : binary,
                             .old_binary = up->binary,
                             .config = m->config_path,
                             .gen = m->gen->id,
                             .client_fd = client_fd,
                             .image_fd = image};
    exec_with(m, binary, -1, &a);
    *why = util_asprintf("cannot execute %s: %s", binary, strerror(errno));
    free(next);
    if (image >= 0)
      close(image);
    code = EXIT_SOFTWARE;
  }
  up->failures++;
  snprintf(up->last_error, sizeof(up->last_error), "%s", *why);
  log_error("upgrade failed: %s; still serving generation %u", *why,
            m->gen->id);
  notify_send("READY=1\nSTATUS=upgrade failed: %s", *why);
  return code;
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
  exec_with(m, NULL, image, &a);
  log_error("upgrade: cannot go back to the old image: %s", strerror(errno));
  close(image);
  return 0;
}

void upgrade_fall_back(const char *why) {
  json_t *h = handoff;
  int image = h ? jint(h, "image", -1) : -1;
  if (image < 0)
    return;
  /* No master yet: the handoff goes back as it came, with the reason. */
  json_object_set_new(h, "error", json_string(why));
  json_object_set_new(h, "image", json_integer(-1));
  json_object_set(h, "binary", json_object_get(h, "old_binary"));
  char *text = json_dumps(h, JSON_COMPACT);
  if (text && setenv(UPGRADE_ENV, text, 1) == 0) {
    notify_export();
    hold_signals(SIG_BLOCK);
    const char *bin = jstr(h, "binary") ? jstr(h, "binary") : "aio";
    const char *argv[] = {bin, "-c", jstr(h, "config"), "run", NULL};
    /* Every fd it names is still open and not close-on-exec: nothing has
     * touched them since this image started. */
    if (pidfile_fd >= 0)
      util_set_cloexec(pidfile_fd, 0);
    util_set_cloexec(image, 1); /* an ELF image: fexecve needs no more */
    fexecve(image, (char **)argv, environ);
    hold_signals(SIG_UNBLOCK);
  }
  log_error("upgrade: cannot go back to the old image: %s", strerror(errno));
  free(text);
}
