/*
 * upgrade_exec.c - the image that is replaced (upgrade.c says the whole
 * way): validate the new binary with `check --handoff`, leave open what
 * it takes over, name it in AIO_UPGRADE, and exec it in place; and the
 * same exec for a new image that goes back.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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
#include "output.h"
#include "upgrade.h"
#include "upgrade_int.h"
#include "util.h"

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
      keep_fd(k, a->image_fd), "pidfile", upgrade_env.pidfile_path,
      "pidfile_fd", keep_fd(k, upgrade_env.pidfile_fd));
  if (h && a->error)
    json_object_set_new(h, "error", json_string(a->error));
  return h;
}

/* Exec path (or, path NULL, the image exec_fd) in place with the handoff.
 * Only returns on failure, everything left as it was, with errno set. */
int upgrade_exec_with(struct master *m, const char *path, int exec_fd,
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
    upgrade_hold_signals(SIG_BLOCK);
    const char *argv[] = {a->binary, "-c", a->config, "run", NULL};
    if (path)
      execv(path, (char **)argv);
    else
      fexecve(exec_fd, (char **)argv, environ);
    err = errno;
    upgrade_hold_signals(SIG_UNBLOCK);
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
  master_waited(m);
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
    upgrade_exec_with(m, binary, -1, &a);
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
