/* ops_util.c - see ops_util.h. */
#define _GNU_SOURCE
#include "ops_util.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* Where the --ready-fd pipe goes in the child: clear of fd 3, which socket
 * activation uses. */
#define OPS_READY_FD 9

int ops_start(struct aio_proc *p, const char *conf_text,
              const struct ops_start *o) {
  char dir[sizeof(p->dir)];
  snprintf(dir, sizeof(dir), "%s", p->dir);
  memset(p, 0, sizeof(*p));
  if (dir[0])
    snprintf(p->dir, sizeof(p->dir), "%s", dir);
  else
    h_tmpdir(p->dir, sizeof(p->dir));
  snprintf(p->conf, sizeof(p->conf), "%s/aio.conf", p->dir);
  snprintf(p->log, sizeof(p->log), "%s/aio.log", p->dir);
  if (h_write(p->dir, "aio.conf", conf_text))
    return -1;
  int pfd[2];
  if (pipe(pfd) < 0)
    return -1;
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    close(pfd[0]);
    int log = open(p->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(log, 2);
    dup2(log, 1);
    if (log > 2)
      close(log);
    /* Move the ready pipe first: it may sit on fd 3. */
    if (dup2(pfd[1], OPS_READY_FD) < 0)
      _exit(126);
    if (pfd[1] != OPS_READY_FD)
      close(pfd[1]);
    /* Passed sockets go to 3, 4, ... as systemd lays them out: first
     * above the way, then down into place (an fd may already sit on the
     * number another one needs). */
    int n = o ? o->nlisten : 0, high[8];
    if (n > 5)
      _exit(126);
    for (int i = 0; i < n; i++)
      if ((high[i] = fcntl(o->listen_fds[i], F_DUPFD, 20)) < 0)
        _exit(126);
    for (int i = 0; i < n; i++)
      if (dup2(high[i], 3 + i) < 0 || close(high[i]) < 0)
        _exit(126);
    for (int i = 0; o && o->env && o->env[i]; i++)
      putenv((char *)o->env[i]);
    char script[256];
    snprintf(script, sizeof(script), "%sexec \"$0\" \"$@\"",
             o && o->shell ? o->shell : "");
    const char *argv[40] = {"/bin/sh", "-c",  script,       AIO_BIN, "-c",
                            p->conf,   "run", "--ready-fd", "9"};
    int argc = 9;
    for (int i = 0; o && o->extra && o->extra[i] && argc < 39; i++)
      argv[argc++] = o->extra[i];
    argv[argc] = NULL;
    execv(argv[0], (char **)argv);
    _exit(127);
  }
  close(pfd[1]);
  p->pid = pid;
  p->ready_fd = pfd[0];
  return 0;
}

void ops_start_ready(struct aio_proc *p, const char *conf_text,
                     const struct ops_start *o) {
  ck_assert_int_eq(ops_start(p, conf_text, o), 0);
  if (h_wait_ready(p, 15000) != 0) {
    h_dump_log(p);
    ck_abort_msg("aio did not become ready");
  }
}

void ops_stop(struct aio_proc *p) {
  int rc = h_stop(p, SIGTERM, 15000);
  if (rc != 0)
    h_dump_log(p);
  ck_assert_int_eq(rc, 0);
}

int ops_aio(const struct aio_proc *p, char *out, size_t n, ...) {
  const char *argv[24] = {"-c", p->conf};
  int argc = 2;
  va_list ap;
  va_start(ap, n);
  const char *a;
  while ((a = va_arg(ap, const char *)) != NULL && argc < 23)
    argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  return h_aio(p->dir, out, n, argv);
}

pid_t ops_aio_async(const struct aio_proc *p, const char *cmd_out, ...) {
  const char *argv[24] = {AIO_BIN, "-c", p->conf};
  int argc = 3;
  va_list ap;
  va_start(ap, cmd_out);
  const char *a;
  while ((a = va_arg(ap, const char *)) != NULL && argc < 23)
    argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(cmd_out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execv(AIO_BIN, (char **)argv);
    _exit(127);
  }
  return pid;
}

int ops_aio_wait(pid_t pid, int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  int status;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (h_now_ms() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    usleep(5000);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

json_t *ops_status(const struct aio_proc *p) {
  char out[65536];
  int rc = ops_aio(p, out, sizeof(out), "status", "--json", NULL);
  ck_assert_msg(rc == 0, "aio status --json exited %d: %s", rc, out);
  json_error_t e;
  json_t *st = json_loads(out, 0, &e);
  ck_assert_msg(json_is_object(st), "status is not a JSON object (%s): %s",
                e.text, out);
  return st;
}

static long long total_connections(const struct aio_proc *p) {
  json_t *st = ops_status(p);
  long long sum = 0;
  size_t i;
  json_t *w;
  json_array_foreach(json_object_get(st, "procs"), i, w) sum +=
      json_integer_value(json_object_get(w, "connections"));
  json_decref(st);
  return sum;
}

int ops_wait_connections(const struct aio_proc *p, long long n,
                         int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  while (total_connections(p) != n) {
    if (h_now_ms() > deadline)
      return -1;
    usleep(50000);
  }
  return 0;
}

void ops_rewrite(const struct aio_proc *p, const char *text) {
  /* Write beside and rename, so a reload never reads half a file. */
  char tmp[256];
  snprintf(tmp, sizeof(tmp), "%s.new", p->conf);
  FILE *f = fopen(tmp, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  ck_assert_int_eq(fclose(f), 0);
  ck_assert_int_eq(rename(tmp, p->conf), 0);
}

int ops_raw_request(const char *path, const char *req, size_t len, char *buf,
                    size_t n, int timeout_ms) {
  int fd = h_connect_unix(path, timeout_ms);
  buf[0] = '\0';
  if (fd < 0)
    return -1;
  /* The master may cut us off mid-request: that is an answer too. */
  size_t off = 0;
  while (off < len) {
    ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      break;
    off += (size_t)w;
  }
  int r = h_recv_until(fd, buf, n, "\n", timeout_ms);
  close(fd);
  return r;
}

int ops_wait_gone(const pid_t *pids, int n, int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  for (;;) {
    int alive = 0;
    for (int i = 0; i < n; i++)
      alive += h_pid_alive(pids[i]);
    if (alive == 0)
      return 0;
    if (h_now_ms() > deadline)
      return -1;
    usleep(10000);
  }
}

long ops_proc_id(pid_t pid, const char *field) {
  char path[64], line[256];
  snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return -1;
  long id = -1;
  size_t fl = strlen(field);
  while (fgets(line, sizeof(line), f))
    if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
      id = strtol(line + fl + 1, NULL, 10);
      break;
    }
  fclose(f);
  return id;
}

int ops_listeners(int port) {
  static const char *const tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
  int count = 0;
  for (size_t t = 0; t < 2; t++) {
    FILE *f = fopen(tables[t], "r");
    if (f == NULL)
      continue;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
      char local[128];
      unsigned st;
      if (sscanf(line, " %*d: %127s %*s %x", local, &st) != 2)
        continue;
      char *colon = strrchr(local, ':');
      if (colon && st == 0x0A && strtol(colon + 1, NULL, 16) == port)
        count++;
    }
    fclose(f);
  }
  return count;
}

int ops_listen_tcp(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)*port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof(sin);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
      listen(fd, 128) < 0 ||
      getsockname(fd, (struct sockaddr *)&sin, &sl) < 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  *port = ntohs(sin.sin_port);
  return fd;
}

char *ops_slurp(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return strdup("");
  size_t cap = 4096, n = 0, r;
  char *buf = malloc(cap);
  while (buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
    n += r;
    if (cap - n < 1024)
      buf = realloc(buf, cap *= 2);
  }
  fclose(f);
  if (buf)
    buf[n] = '\0';
  return buf;
}
