/* child.c - see child.h. */
#define _GNU_SOURCE
#include "child.h"

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

static int kept(int fd, const int *keep, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (keep[i] == fd)
      return 1;
  return 0;
}

void child_close_fds_except(const int *keep, size_t n) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) {
    for (int fd = 3; fd < 65536; fd++)
      if (!kept(fd, keep, n))
        close(fd);
    return;
  }
  int dfd = dirfd(d);
  /* Collected first: closing while readdir walks the directory could
   * skip entries. */
  int *doomed = NULL;
  size_t nd = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    long fd;
    if (util_parse_long(e->d_name, 3, 1 << 30, &fd) || fd == dfd ||
        kept((int)fd, keep, n))
      continue;
    if (util_grow((void **)&doomed, &cap, nd + 1, sizeof(int)) == 0)
      doomed[nd++] = (int)fd;
  }
  closedir(d);
  for (size_t i = 0; i < nd; i++)
    close(doomed[i]);
  free(doomed);
}

/* [aio] user/group: workers serve the sockets the master bound (a port
 * below 1024 included) without root. */
int child_drop_privileges(const struct settings *s) {
  if (!s->drop_privileges)
    return 0;
  if (geteuid() != 0) {
    if (s->uid == geteuid() && s->gid == getegid())
      return 0;
    log_error("[aio] user/group need the master to run as root");
    return -1;
  }
  if (setgroups(0, NULL) < 0 || setgid(s->gid) < 0 || setuid(s->uid) < 0) {
    log_warn("cannot switch to uid %d gid %d", (int)s->uid, (int)s->gid);
    return -1;
  }
  if (s->uid != 0 && setuid(0) == 0) {
    log_error("privileges could be regained after dropping them");
    return -1;
  }
  return 0;
}

int child_read_wait(pid_t pid, int fd, struct util_buf *out, size_t max,
                    uint64_t timeout_ms, void (*keepalive)(void), int *status) {
  uint64_t deadline = util_now_ms() + timeout_ms;
  int err = 0;
  for (;;) {
    uint64_t now = util_now_ms();
    if (now >= deadline) {
      err = -ETIMEDOUT;
      break;
    }
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    uint64_t wait = deadline - now < 1000 ? deadline - now : 1000;
    int r = poll(&pfd, 1, (int)wait);
    if (r == 0 && keepalive)
      keepalive();
    if (r <= 0)
      continue; /* EINTR, or the deadline is looked at again */
    char chunk[8192];
    ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    if (out->len + (size_t)n > max) {
      err = -EMSGSIZE;
      break;
    }
    util_buf_add(out, chunk, (size_t)n);
  }
  close(fd);
  if (err)
    kill(pid, SIGKILL);
  *status = 0;
  while (waitpid(pid, status, 0) < 0 && errno == EINTR)
    ;
  return err;
}
