/*
 * probemod.c - a module that tells who loaded it. Its constructor writes
 * $AIO_TEST_PROBE_RECORD/PID: "euid N", "title T" (its process title) and
 * one "fd N TARGET" line per open descriptor (from /proc/self/fd). Its init,
 * which only a worker runs, adds PID.worker, so a record without one is the
 * probe child that loads the modules to check a configuration
 * (test_e2e_hijack).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <aio.h>

__attribute__((constructor)) static void probemod_record(void) {
  const char *dir = getenv("AIO_TEST_PROBE_RECORD");
  if (dir == NULL)
    return;
  char lines[8192];
  int len = snprintf(lines, sizeof(lines), "euid %d\n", (int)geteuid());
  /* The process title ps shows: the first string of its cmdline. */
  char title[256] = "";
  int tfd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
  if (tfd >= 0) {
    ssize_t n = read(tfd, title, sizeof(title) - 1);
    title[n > 0 ? n : 0] = '\0';
    close(tfd);
  }
  len +=
      snprintf(lines + len, sizeof(lines) - (size_t)len, "title %s\n", title);
  DIR *d = opendir("/proc/self/fd");
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL && len < (int)sizeof(lines) - 512) {
      int fd = atoi(e->d_name);
      if (e->d_name[0] == '.' || fd == dirfd(d))
        continue;
      char link[64], target[PATH_MAX];
      snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
      ssize_t n = readlink(link, target, sizeof(target) - 1);
      target[n > 0 ? n : 0] = '\0';
      len += snprintf(lines + len, sizeof(lines) - (size_t)len, "fd %d %s\n",
                      fd, target);
    }
    closedir(d);
  }
  char path[PATH_MAX];
  snprintf(path, sizeof(path), "%s/%d", dir, (int)getpid());
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd >= 0) {
    if (write(fd, lines, (size_t)len) < 0)
      perror("probemod");
    close(fd);
  }
}

static int probemod_init(void) {
  const char *dir = getenv("AIO_TEST_PROBE_RECORD");
  if (dir) {
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%d.worker", dir, (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0)
      close(fd);
  }
  return 0;
}

AIO_MODULE(.name = "probemod", .description = "records who loads it",
           .init = probemod_init);
