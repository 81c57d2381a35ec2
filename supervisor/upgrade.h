/*
 * upgrade.h - `aio upgrade` and SIGUSR2: the master replaces its own
 * executable in place (same pid) without closing a listening socket. See
 * upgrade.c for the handoff and docs/operations.md ("Upgrading the
 * binary") for what an operator sees when it fails.
 */
#ifndef AIO_SUPERVISOR_UPGRADE_H
#define AIO_SUPERVISOR_UPGRADE_H

#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>

struct master;

/* The version of the handoff (the AIO_UPGRADE variable) this binary
 * writes and reads; `aio check --handoff=N` says whether a binary speaks
 * it before the master execs it. */
#define UPGRADE_HANDOFF 1

/* ---- main.c (cmd_run) ---- */

/* First thing in `aio run`: take AIO_UPGRADE out of the environment. 1
 * when this process is a master that re-executed itself (its sockets,
 * workers and pidfile are inherited), else 0. */
int upgrade_init(void);
/* The pidfile `aio run` holds (fd locked, path borrowed), handed to the
 * next image; in an upgraded image, the inherited one (-1 when none). */
void upgrade_set_pidfile(int fd, const char *path);
int upgrade_pidfile(const char **path);
/* An upgraded image that cannot get as far as serving (its configuration
 * does not load): back to the image it replaced, which serves on. Returns
 * only when there is none to go back to. */
void upgrade_fall_back(const char *why);

/* ---- the master (master*.c) ---- */

/* The generation the old image served (0: not an upgrade). */
unsigned upgrade_generation(void);
/* After the signal handlers and socket activation are set up: the
 * inherited sockets join m->act, the old workers are watched, counters
 * carry on. */
void upgrade_adopt(struct master *m);
/* The first generation serves: the handed sockets are let go, the old
 * workers drain, `aio upgrade` hears how it went. */
void upgrade_served(struct master *m);
/* The first generation of an upgraded image cannot start: back to the
 * old image (does not return when that works). 0 when this is no upgrade
 * or going back failed. */
int upgrade_start_failed(struct master *m, const char *why);
/* A child that is not one of m->procs was reaped: 1 when it was an old
 * worker. */
int upgrade_reaped(struct master *m, pid_t pid, int status);
void upgrade_tick(struct master *m, uint64_t now);
/* The master stops: so do the old workers (graceful: drain). */
void upgrade_stop(struct master *m, int graceful);
/* Old workers still running. */
size_t upgrade_elders(const struct master *m);
/* For `aio status` (new). */
json_t *upgrade_status(const struct master *m);
void upgrade_close(struct master *m);

/* ---- control.c ---- */

/* The control socket handed over for path (taken: the caller owns it),
 * or -1. One bound elsewhere (the path changed) is closed and unlinked. */
int upgrade_control_fd(struct master *m, const char *path);
/* Validate binary (NULL: the one the master runs from) and exec it in
 * place. Returns only on failure, with the exit status for `aio upgrade`
 * (cli.h) and *why (new). client_fd: the `aio upgrade` connection, which
 * the new image answers, or -1. */
int upgrade_start(struct master *m, const char *binary, int client_fd,
                  char **why);

#endif
