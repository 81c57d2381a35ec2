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

#include "settings.h"

/* Close every descriptor above stderr that is not in keep (n entries). */
void child_close_fds_except(const int *keep, size_t n);

/* Switch to s->uid/s->gid when [aio] user or group is set (supplementary
 * groups dropped, and checked that root cannot be regained). 0, or -1
 * after logging why; the caller must then not run user code. */
int child_drop_privileges(const struct settings *s);

#endif
