/* daemon.c - see daemon.h. */
#define _GNU_SOURCE
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The pidfile is written as root into directories others may write to
 * (/tmp, a shared run directory): never through a symbolic link, and only
 * into a plain file of our own that has no other name, or another user
 * could have it overwrite a file of their choosing. */
static int pidfile_trusted(int fd, const char *path, char *msg, size_t n) {
  struct stat st;
  if (fstat(fd, &st) < 0) {
    snprintf(msg, n, "cannot stat pidfile %s: %s", path, strerror(errno));
    return 0;
  }
  if (!S_ISREG(st.st_mode))
    snprintf(msg, n, "pidfile %s is not a regular file; refusing it", path);
  else if (st.st_uid != geteuid())
    snprintf(msg, n,
             "pidfile %s belongs to uid %d, not to this user (uid %d); "
             "refusing it (remove it, or use another pidfile)",
             path, (int)st.st_uid, (int)geteuid());
  else if (st.st_nlink != 1)
    snprintf(msg, n,
             "pidfile %s has %d hard links; refusing to write through them "
             "(remove it, or use another pidfile)",
             path, (int)st.st_nlink);
  else
    return 1;
  return 0;
}

int daemon_pidfile_lock(const char *path, char *msg, size_t n) {
  /* O_NOFOLLOW: a symbolic link as the last component is refused (ELOOP),
   * also when O_CREAT would create its target. O_EXCL is not wanted: a
   * stale pidfile is taken over under the lock below. */
  int fd =
      open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
  if (fd < 0 && errno == ELOOP) {
    snprintf(msg, n,
             "pidfile %s is a symbolic link; refusing to follow it (remove "
             "it, or set pidfile to the real path)",
             path);
    return -2;
  }
  if (fd < 0) {
    snprintf(msg, n, "cannot open pidfile %s: %s", path, strerror(errno));
    return -2;
  }
  if (!pidfile_trusted(fd, path, msg, n)) {
    close(fd);
    return -2;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    int err = errno; /* before pread can change it */
    if (err != EWOULDBLOCK) {
      snprintf(msg, n, "cannot lock pidfile %s: %s", path, strerror(err));
      close(fd);
      return -2;
    }
    char buf[32] = "";
    ssize_t r = pread(fd, buf, sizeof(buf) - 1, 0);
    buf[r > 0 ? r : 0] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    snprintf(msg, n,
             "another aio is running (pid %s holds the lock on %s); stop it "
             "first or use another pidfile",
             *buf ? buf : "?", path);
    close(fd);
    return -1;
  }
  return fd;
}

int daemon_pidfile_write(int fd, pid_t pid) {
  char buf[32];
  int len = snprintf(buf, sizeof(buf), "%d\n", (int)pid);
  if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)len, 0) != len)
    return -errno;
  return 0;
}

static void to_devnull(int keep_stderr) {
  int fd = open("/dev/null", O_RDWR);
  if (fd < 0)
    return;
  dup2(fd, STDIN_FILENO);
  dup2(fd, STDOUT_FILENO);
  if (!keep_stderr)
    dup2(fd, STDERR_FILENO);
  if (fd > STDERR_FILENO)
    close(fd);
}

int daemon_detach(int keep_stderr) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0)
    return -1;
  pid_t pid = fork();
  if (pid < 0) {
    close(p[0]);
    close(p[1]);
    return -1;
  }
  if (pid > 0) {
    /* The original process: wait for the daemon's word. */
    close(p[1]);
    char c = 0;
    ssize_t r;
    do
      r = read(p[0], &c, 1);
    while (r < 0 && errno == EINTR);
    /* 'R': ready. Another byte: the exit status of a failed start, then
     * why, to a newline. */
    if (r == 1 && c != 'R') {
      char why[1024];
      size_t n = 0;
      while (n < sizeof(why) - 1 && (n == 0 || why[n - 1] != '\n')) {
        ssize_t m = read(p[0], why + n, sizeof(why) - 1 - n);
        if (m < 0 && errno == EINTR)
          continue;
        if (m <= 0)
          break;
        n += (size_t)m;
      }
      while (n > 0 && why[n - 1] == '\n')
        n--;
      if (n > 0)
        fprintf(stderr, "aio: %.*s\n", (int)n, why);
    }
    waitpid(pid, NULL, 0); /* the session leader, gone by now */
    _exit(r == 1 ? (c == 'R' ? 0 : (unsigned char)c) : 1);
  }
  close(p[0]);
  if (setsid() < 0)
    _exit(1);
  pid = fork();
  if (pid < 0)
    _exit(1);
  if (pid > 0)
    _exit(0); /* the session leader goes: the daemon can never get a tty */
  if (chdir("/") < 0)
    _exit(1);
  umask(022);
  to_devnull(keep_stderr);
  return p[1];
}
