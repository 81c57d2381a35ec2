/* daemon.h - `aio run -d` and the pidfile: detach from the terminal, and
 * hold the pidfile under an exclusive lock for the master's whole life. */
#ifndef AIO_SUPERVISOR_DAEMON_H
#define AIO_SUPERVISOR_DAEMON_H

#include <stddef.h>
#include <sys/types.h>

/* Open and lock path. Returns the locked fd; -1 when another live process
 * holds it (its pid is named in msg), -2 when it cannot be opened or locked
 * at all (msg says why). A stale pidfile, whose process is gone and holds
 * no lock, is taken over. */
int daemon_pidfile_lock(const char *path, char *msg, size_t n);
/* Write pid into the locked file. 0 or -errno. */
int daemon_pidfile_write(int fd, pid_t pid);

/* Detach: fork, setsid, fork again, chdir "/", stdin/stdout to /dev/null
 * (stderr too unless keep_stderr). The original process does not return:
 * it waits for the daemon to say it is ready (exit 0) or to fail (exit 1).
 * In the daemon, returns the fd to write one byte to when ready (the master
 * closes it), or -1 on failure to detach (in the original process). */
int daemon_detach(int keep_stderr);

#endif
