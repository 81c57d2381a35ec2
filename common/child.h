/*
 * child.h - what a forked child does before it runs user code: keep only
 * the descriptors it was given, and drop to [aio] user/group. The workers
 * (supervisor/spawn.c) and the probe child that loads the modules to check
 * a configuration (common/app.c) both run module code, so both go through
 * here.
 */
#ifndef AIO_COMMON_CHILD_H
#define AIO_COMMON_CHILD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "settings.h"

/* Close every descriptor above stderr that is not in keep (n entries). */
void child_close_fds_except(const int *keep, size_t n);

/* Switch to s->uid/s->gid when [aio] user or group is set (supplementary
 * groups dropped, and checked that root cannot be regained). 0, or -1
 * after logging why; the caller must then not run user code. */
int child_drop_privileges(const struct settings *s);

struct util_buf;

/* Read what child pid writes on fd into out (up to max bytes) until it
 * closes fd, then reap it (*status). Blocks, waking at least once a second
 * to call keepalive (may be NULL): the master's systemd watchdog must not
 * starve behind a slow child. Past timeout_ms, or past max bytes, the
 * child is killed. 0, -ETIMEDOUT or -EMSGSIZE; fd is closed. */
int child_read_wait(pid_t pid, int fd, struct util_buf *out, size_t max,
                    uint64_t timeout_ms, void (*keepalive)(void), int *status);

#endif
