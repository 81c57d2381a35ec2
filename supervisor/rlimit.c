/*
 * rlimit.c - RLIMIT_NOFILE at start. The usual soft limit is 1024, far
 * below what max_connections = 10000 needs, and a worker that hits it can
 * only pause accepting (server.c); so the master raises the soft limit for
 * itself and the workers it forks, as nginx does with
 * worker_rlimit_nofile. The hard limit is the administrator's (systemd's
 * LimitNOFILE=): only [aio] rlimit_nofile, as root, goes past it.
 */
#include "rlimit.h"

#include <stdio.h>
#include <sys/resource.h>

#include "log.h"

/* Beyond connections and sockets: stdio, the log, libuv's epoll, eventfd,
 * signal pipe and EMFILE reserve, the bus, what a module opens itself. */
#define RLIMIT_MARGIN 128

unsigned long long rlimit_nofile_need(const struct settings *s) {
  unsigned long long servers = s->nservers, workers = (unsigned)s->workers;
  unsigned long long worker = s->max_connections + servers + RLIMIT_MARGIN;
  /* One socket per server and slot, twice over during a reload, and a
   * socketpair end and its duplicate per worker. */
  unsigned long long master =
      servers * workers * 2 + workers * 4 + RLIMIT_MARGIN;
  return worker > master ? worker : master;
}

/* The kernel's ceiling for any RLIMIT_NOFILE (fs.nr_open). */
static rlim_t nr_open(void) {
  unsigned long long v = 1048576;
  FILE *f = fopen("/proc/sys/fs/nr_open", "r");
  if (f) {
    if (fscanf(f, "%llu", &v) != 1)
      v = 1048576;
    fclose(f);
  }
  return (rlim_t)v;
}

void rlimit_nofile_fit(const struct settings *s) {
  struct rlimit was, rl;
  if (getrlimit(RLIMIT_NOFILE, &was) != 0) {
    log_warn("getrlimit(RLIMIT_NOFILE)");
    return;
  }
  unsigned long long need = rlimit_nofile_need(s);
  rlim_t want = (rlim_t)need;
  if (s->rlimit_nofile > 0 && (rlim_t)s->rlimit_nofile > want)
    want = (rlim_t)s->rlimit_nofile;
  if (was.rlim_cur == RLIM_INFINITY || was.rlim_cur >= want)
    return;
  rl = was;
  int raised_hard = 0;
  if (want > was.rlim_max && was.rlim_max != RLIM_INFINITY &&
      s->rlimit_nofile > 0) {
    /* Asked for more than the hard limit: as root (CAP_SYS_RESOURCE),
     * that can be had; otherwise EPERM, and the soft limit goes as far as
     * it can below. */
    rl.rlim_cur = rl.rlim_max = want < nr_open() ? want : nr_open();
    raised_hard = setrlimit(RLIMIT_NOFILE, &rl) == 0;
  }
  if (!raised_hard) {
    rl = was;
    rl.rlim_cur = was.rlim_max == RLIM_INFINITY || want < was.rlim_max
                      ? want
                      : was.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      log_warn("setrlimit(RLIMIT_NOFILE, %llu)",
               (unsigned long long)rl.rlim_cur);
      rl = was;
    }
  }
  if (rl.rlim_cur < want)
    log_warnx("RLIMIT_NOFILE is %llu (hard limit %llu), below the %llu %s: "
              "at the limit workers stop accepting for a moment; raise the "
              "hard limit (LimitNOFILE= in the unit, ulimit -Hn)%s",
              (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
              (unsigned long long)want,
              want > need ? "that [aio] rlimit_nofile asks for"
                          : "that max_connections and the servers need",
              s->rlimit_nofile > 0 ? ", or run as root" : "");
  else
    log_debug("RLIMIT_NOFILE raised from %llu to %llu (hard limit %llu)",
              (unsigned long long)was.rlim_cur, (unsigned long long)rl.rlim_cur,
              (unsigned long long)rl.rlim_max);
}
