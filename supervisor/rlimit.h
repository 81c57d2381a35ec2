/* rlimit.h - RLIMIT_NOFILE fitted to a configuration at start. */
#ifndef AIO_SUPERVISOR_RLIMIT_H
#define AIO_SUPERVISOR_RLIMIT_H

#include "settings.h"

/* Descriptors one process of s needs at most: a worker's max_connections
 * and sockets, or the master's sockets and pipes, whichever is more, with
 * room for stdio, the log, libuv's own and a module's. */
unsigned long long rlimit_nofile_need(const struct settings *s);

/* Raise this process's soft RLIMIT_NOFILE (which the workers inherit) to
 * what s needs, or to [aio] rlimit_nofile if that is more: up to the hard
 * limit, and past it, as root, when rlimit_nofile asks. One warning when
 * the limit stays below that. Call once, before the first fork. */
void rlimit_nofile_fit(const struct settings *s);

#endif
