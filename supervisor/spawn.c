/*
 * spawn.c - fork one worker. The child keeps only what it needs (its bus
 * end, its slot's sockets, the log, stdio), resets the master's signal
 * handling and builds a fresh loop in worker_run(); it never touches the
 * master's loop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "child.h"
#include "counters.h"
#include "log.h"
#include "master.h"
#include "util.h"
#include "worker.h"

static void on_proc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  static char buf_[65536];
  buf->base = buf_;
  buf->len = sizeof(buf_);
}

static void on_proc_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct wproc *p = s->data;
  if (nread == 0)
    return;
  if (nread < 0) {
    /* EOF: the worker is exiting; SIGCHLD tells us how. */
    uv_read_stop(s);
    return;
  }
  int err = router_feed(p, buf->base, (size_t)nread);
  if (err) {
    log_error("worker %d pid %d sent a bad bus frame (%s); killing it", p->slot,
              (int)p->pid, strerror(-err < 0 ? 0 : -err));
    uv_read_stop(s);
    /* Nothing more is read from or written to a channel that said
     * nonsense; what it had pending goes to other workers when it is
     * reaped. */
    p->bus_open = 0;
    kill(p->pid, SIGKILL);
  }
}

int spawn_worker(struct master *m, struct generation *g, struct slot *s,
                 struct wproc **out) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return -errno;
  struct wproc *p = calloc(1, sizeof(*p));
  if (p == NULL) {
    close(sv[0]);
    close(sv[1]);
    return -ENOMEM;
  }
  /* What the worker was doing when it died: without it, neither side
   * could tell which delivery to redeliver. */
  p->mark = bus_mark_new();
  /* What it counted, for the master to read at any time (counters.h). */
  size_t nserv = g->app.s.nservers;
  p->ctrs = ctr_region_new(nserv);
  if (p->mark == NULL || p->ctrs == NULL) {
    close(sv[0]);
    close(sv[1]);
    bus_mark_free(p->mark);
    ctr_region_free(p->ctrs, nserv);
    free(p);
    return -ENOMEM;
  }
  pid_t master_pid = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    int err = -errno;
    close(sv[0]);
    close(sv[1]);
    bus_mark_free(p->mark);
    ctr_region_free(p->ctrs, nserv);
    free(p);
    return err;
  }
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    static const int sigs[] = {SIGHUP,  SIGTERM, SIGINT,  SIGQUIT, SIGUSR1,
                               SIGUSR2, SIGTTIN, SIGTTOU, SIGCHLD, SIGWINCH};
    for (size_t i = 0; i < UTIL_ARRAY_LEN(sigs); i++)
      signal(sigs[i], SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != master_pid)
      _exit(1); /* the master died between fork and prctl */
    ctr_self = p->ctrs;
    int *keep = calloc(nserv + 2, sizeof(int));
    if (keep == NULL)
      _exit(1);
    size_t nk = 0;
    keep[nk++] = sv[1];
    keep[nk++] = log_fd();
    for (size_t i = 0; i < nserv; i++)
      keep[nk++] = g->fds[s->index][i];
    child_close_fds_except(keep, nk);
    free(keep);
    if (child_drop_privileges(&g->app.s))
      _exit(1);
    _exit(
        worker_run(&g->app, s->index, g->id, sv[1], g->fds[s->index], p->mark));
  }
  close(sv[1]);
  /* Its mark is for it alone: workers forked later do not inherit it. */
  bus_mark_dontfork(p->mark);
  ctr_region_dontfork(p->ctrs, nserv);
  p->m = m;
  p->g = g;
  g->refs++;
  p->pid = pid;
  p->slot = s->index;
  p->state = WPROC_STARTING;
  p->started_ms = p->last_hb_ms = uv_now(m->loop);
  p->restarts = s->restarts;
  uv_pipe_init(m->loop, &p->bus, 0);
  p->bus.data = p;
  uv_pipe_open(&p->bus, sv[0]);
  p->bus_open = 1;
  uv_read_start((uv_stream_t *)&p->bus, on_proc_alloc, on_proc_read);
  p->next = m->procs;
  m->procs = p;
  *out = p;
  log_info("worker %d started (pid %d, generation %u)", s->index, (int)pid,
           g->id);
  return 0;
}
