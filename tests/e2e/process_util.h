/*
 * process_util.h - helpers for the process-model suites: start aio serving
 * the testmod fixture, and the master's children as /proc sees them,
 * zombies included.
 */
#ifndef AIO_TESTS_PROCESS_UTIL_H
#define AIO_TESTS_PROCESS_UTIL_H

#include <stddef.h>
#include <sys/types.h>

#include "harness.h"

/* Start aio serving testmod.SYMBOL ([server:SYMBOL]) on a free port, with
 * the [aio] lines aio_extra, and wait until it is ready (the log and a
 * failure if not). Returns the port. */
int pu_start_one(struct aio_proc *p, const char *aio_extra, const char *symbol);

/* check_main() with cores off: crashing workers should not spend the
 * suite's time writing them. Returns the exit status. */
struct Suite;
int pu_run_suite(struct Suite *s);

/* "pid N" -> N, or -1. */
pid_t pu_parse_pid(const char *answer);
int pu_pid_in(pid_t pid, const pid_t *set, int n);

/* Children of pid that are not zombies (out may be NULL). */
int pu_live_children(pid_t pid, pid_t *out, int max);
int pu_zombie_children(pid_t pid);
/* A zombie lives for the instant between a child's exit and its parent's
 * waitpid; one that lasts timeout_ms is a reaping bug. 0 when none is
 * left, -1 if one stays. */
int pu_wait_no_zombies(pid_t pid, int timeout_ms);
/* Wait until pid has n live children. 0 or -1. */
int pu_wait_live_children(pid_t pid, int n, int timeout_ms);
/* Is sig pending (raised, not yet handled) for pid? */
int pu_signal_pending(pid_t pid, int sig);

/* ---- testmod.whoami, which answers "pid N" ---- */

/* One exchange with whoami on port: the serving pid (anything else fails
 * the test). */
pid_t pu_ask_pid(int port);
/* Wait (10 s) until master has n live workers; kids gets them, sorted. */
void pu_workers(pid_t master, pid_t *kids, int n);
/* times exchanges with whoami on port, each answered by one of pids. */
void pu_assert_served_by(int port, const pid_t *pids, int n, int times);

#endif
