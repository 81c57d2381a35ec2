/*
 * spawn.c - fork one worker. The child keeps only what it needs (its bus
 * end, its slot's sockets, the log, stdout and stderr on the pipes the
 * master reads, output.c), is pinned to its CPU ([aio] cpu_affinity),
 * resets the master's signal handling and builds a fresh loop in
 * worker_run(); it never touches the master's loop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
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
#include "output.h"
#include "util.h"
#include "worker.h"

/* [aio] cpu_affinity = auto: slot k runs on the k-th (mod their count) of
 * the CPUs the master may run on (its own affinity, which taskset, a
 * cgroup's cpuset or systemd's CPUAffinity= narrowed), not of all CPUs.
 * The CPU, or -1 when not pinned. */
static int spawn_cpu_for(const struct settings *set, int slot) {
  cpu_set_t mine;
  if (!set->cpu_affinity || sched_getaffinity(0, sizeof(mine), &mine) < 0)
    return -1;
  int n = CPU_COUNT(&mine);
  if (n <= 0)
    return -1;
  int want = slot % n;
  for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
    if (CPU_ISSET(cpu, &mine) && want-- == 0)
      return cpu;
  return -1;
}

int spawn_worker(struct master *m, struct generation *g, struct slot *s,
                 struct wproc **out, int *fd) {
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
  p->ctrs = p->mark ? ctr_region_new(nserv) : NULL;
  p->output = p->ctrs ? output_new() : NULL;
  if (p->output == NULL) {
    int err = p->mark && p->ctrs ? -errno : -ENOMEM;
    close(sv[0]);
    close(sv[1]);
    bus_mark_free(p->mark);
    ctr_region_free(p->ctrs, nserv);
    free(p);
    return err;
  }
  router_proc_init(m, p);
  p->cpu = spawn_cpu_for(&g->app.s, s->index);
  pid_t master_pid = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    int err = -errno;
    close(sv[0]);
    close(sv[1]);
    bus_mark_free(p->mark);
    output_close(p->output);
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
    int out_err = output_child(p->output);
    p->output = NULL;
    if (out_err)
      _exit(1);
    if (p->cpu >= 0) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(p->cpu, &one);
      if (sched_setaffinity(0, sizeof(one), &one) < 0)
        log_warn("worker %d: cannot pin to CPU %d", s->index, p->cpu);
    }
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
    /* The child's copy: nothing in it refers to p. */
    struct bus_mark *mark = p->mark;
    free(p);
    int rc =
        worker_run(&g->app, s->index, g->id, sv[1], g->fds[s->index], mark);
    fflush(NULL); /* _exit would lose a last line printf left unflushed */
    _exit(rc);
  }
  close(sv[1]);
  output_start(p->output, m->loop, s->index, pid);
  /* Its mark is for it alone: workers forked later do not inherit it. */
  bus_mark_dontfork(p->mark);
  ctr_region_dontfork(p->ctrs, nserv);
  p->pid = pid;
  *out = p;
  *fd = sv[0];
  return 0;
}
