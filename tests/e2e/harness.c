/* harness.c - see harness.h. */
#define _GNU_SOURCE
#include "harness.h"

#include <check.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

long long h_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void h_tmpdir(char *out, size_t n) {
  snprintf(out, n, "/tmp/aio-test-XXXXXX");
  if (mkdtemp(out) == NULL)
    abort();
}

int h_write(const char *dir, const char *name, const char *text) {
  char path[512];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  if (f == NULL)
    return -1;
  fputs(text, f);
  fclose(f);
  return 0;
}

/* Where the --ready-fd pipe goes in aio: clear of fd 3 and up, which
 * socket activation uses. */
#define READY_FD 9
#define MAX_LISTEN 5

/* In the child: set up fds and environment, then exec aio through sh. */
_Noreturn static void exec_aio(const struct aio_proc *p, const struct h_opts *o,
                               int ready) {
  int log = open(p->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
  dup2(log, 2);
  dup2(log, 1);
  if (log > 2)
    close(log);
  /* Move the ready pipe first: it may sit on fd 3. */
  if (dup2(ready, READY_FD) < 0)
    _exit(126);
  if (ready != READY_FD)
    close(ready);
  /* Passed sockets go to 3, 4, ... as systemd lays them out: first above
   * the way, then down into place (an fd may already sit on the number
   * another one needs). */
  int high[MAX_LISTEN];
  for (int i = 0; i < o->nlisten; i++)
    if ((high[i] = fcntl(o->listen_fds[i], F_DUPFD, 20)) < 0)
      _exit(126);
  for (int i = 0; i < o->nlisten; i++)
    if (dup2(high[i], 3 + i) < 0 || close(high[i]) < 0)
      _exit(126);
  for (int i = 0; o->env && o->env[i]; i++)
    putenv((char *)o->env[i]);
  char script[256], ready_arg[16];
  snprintf(script, sizeof(script), "%sexec \"$0\" \"$@\"",
           o->shell ? o->shell : "");
  snprintf(ready_arg, sizeof(ready_arg), "%d", READY_FD);
  const char *argv[64] = {"/bin/sh", "-c", script};
  int n = 3;
  for (int i = 0; o->wrap && o->wrap[i] && n < 24; i++)
    argv[n++] = o->wrap[i];
  const char *run[] = {AIO_BIN, "-c", p->conf, "run", "--ready-fd", ready_arg};
  for (size_t i = 0; i < sizeof(run) / sizeof(run[0]); i++)
    argv[n++] = run[i];
  for (int i = 0; o->extra && o->extra[i] && n < 63; i++)
    argv[n++] = o->extra[i];
  argv[n] = NULL;
  execv(argv[0], (char **)argv);
  _exit(127);
}

/* Append to out what fmt formats with ap. */
static void conf_vadd(char *out, size_t n, const char *fmt, va_list ap) {
  size_t len = strlen(out);
  int r = vsnprintf(out + len, n - len, fmt, ap);
  ck_assert_msg(r >= 0 && (size_t)r < n - len, "config longer than %zu bytes",
                n);
}

void h_conf(char *out, size_t n, const char *modules, const char *aio_fmt,
            ...) {
  out[0] = '\0';
  h_conf_add(out, n, "[aio]\nmodules = %s\nmodule_path = %s\n", modules,
             AIO_TEST_MODULES);
  va_list ap;
  va_start(ap, aio_fmt);
  conf_vadd(out, n, aio_fmt, ap);
  va_end(ap);
}

void h_conf_add(char *out, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  conf_vadd(out, n, fmt, ap);
  va_end(ap);
}

void h_conf_server(char *out, size_t n, const char *name, const char *protocol,
                   int port) {
  h_conf_add(out, n,
             "\n[server:%s]\nprotocol = %s\naddress = 127.0.0.1\nport = %d\n",
             name, protocol, port);
}

int h_prepare(struct aio_proc *p, const char *conf_text, const char *dir) {
  char keep[sizeof(p->dir)] = ""; /* dir may be p->dir */
  if (dir)
    snprintf(keep, sizeof(keep), "%s", dir);
  memset(p, 0, sizeof(*p));
  if (keep[0])
    memcpy(p->dir, keep, sizeof(keep));
  else
    h_tmpdir(p->dir, sizeof(p->dir));
  snprintf(p->conf, sizeof(p->conf), "%s/aio.conf", p->dir);
  snprintf(p->log, sizeof(p->log), "%s/aio.log", p->dir);
  return h_write(p->dir, "aio.conf", conf_text);
}

int h_start(struct aio_proc *p, const char *conf_text, const struct h_opts *o) {
  static const struct h_opts defaults;
  if (o == NULL)
    o = &defaults;
  if (o->nlisten > MAX_LISTEN || h_prepare(p, conf_text, o->dir) < 0)
    return -1;
  int pfd[2];
  if (pipe(pfd) < 0)
    return -1;
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    close(pfd[0]);
    exec_aio(p, o, pfd[1]);
  }
  close(pfd[1]);
  p->pid = pid;
  p->ready_fd = pfd[0];
  return 0;
}

void h_assert_ready(struct aio_proc *p, int timeout_ms) {
  if (h_wait_ready(p, timeout_ms) != 0) {
    h_dump_log(p);
    ck_abort_msg("aio did not become ready");
  }
}

void h_start_ready(struct aio_proc *p, const char *conf_text,
                   const struct h_opts *o) {
  ck_assert_int_eq(h_start(p, conf_text, o), 0);
  h_assert_ready(p, 15000);
}

void h_stop_ok(struct aio_proc *p) {
  int rc = h_stop(p, SIGTERM, 15000);
  if (rc != 0)
    h_dump_log(p);
  ck_assert_int_eq(rc, 0);
}

pid_t h_aio_async(const char *dir, const char *out_path,
                  const char *const *argv) {
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    if (chdir(dir) < 0)
      _exit(126);
    const char *av[32] = {AIO_BIN};
    int n = 1;
    for (int i = 0; argv[i] && n < 31; i++)
      av[n++] = argv[i];
    av[n] = NULL;
    execv(AIO_BIN, (char **)av);
    _exit(127);
  }
  return pid;
}

int h_aio_wait(pid_t pid, int timeout_ms) {
  if (pid < 0)
    return -1;
  int status;
  long long deadline = h_now_ms() + timeout_ms;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (h_now_ms() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    usleep(2000);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int h_aio(const char *dir, char *out, size_t outlen, const char *const *argv) {
  char path[256];
  snprintf(path, sizeof(path), "%s/cmd.out", dir);
  int rc = h_aio_wait(h_aio_async(dir, path, argv), 60000);
  if (rc >= 0 && out) {
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(out, 1, outlen - 1, f) : 0;
    out[n] = '\0';
    if (f)
      fclose(f);
  }
  return rc;
}

static int reap(struct aio_proc *p, int block) {
  if (p->exited)
    return 1;
  int st;
  pid_t r = waitpid(p->pid, &st, block ? 0 : WNOHANG);
  if (r == p->pid) {
    p->exited = 1;
    p->status = st;
    return 1;
  }
  return 0;
}

int h_wait_ready(struct aio_proc *p, int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  while (h_now_ms() < deadline) {
    struct pollfd pfd = {.fd = p->ready_fd, .events = POLLIN};
    int r = poll(&pfd, 1, 50);
    if (r > 0) {
      char c;
      ssize_t n = read(p->ready_fd, &c, 1);
      return n == 1 && c == '\n' ? 0 : -1;
    }
    if (reap(p, 0))
      return -1;
  }
  return -1;
}

int h_wait_exit(struct aio_proc *p, int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  while (!reap(p, 0)) {
    if (h_now_ms() > deadline)
      return -1;
    usleep(5000);
  }
  return 0;
}

int h_stop(struct aio_proc *p, int sig, int timeout_ms) {
  if (!p->exited)
    kill(p->pid, sig);
  if (h_wait_exit(p, timeout_ms) < 0) {
    kill(p->pid, SIGKILL);
    reap(p, 1);
    return -1;
  }
  if (p->ready_fd > 0)
    close(p->ready_fd);
  p->ready_fd = -1;
  return WIFEXITED(p->status) ? WEXITSTATUS(p->status)
                              : 128 + WTERMSIG(p->status);
}

void h_assert_exit_status(struct aio_proc *p, int want) {
  ck_assert_msg(p->exited, "aio has not exited");
  int ok = WIFEXITED(p->status) && WEXITSTATUS(p->status) == want;
  if (!ok)
    h_dump_log(p);
  ck_assert_msg(ok, "aio ended with status %#x, want exit status %d", p->status,
                want);
  if (p->ready_fd > 0)
    close(p->ready_fd);
  p->ready_fd = -1;
}

char *h_slurp(const char *path) {
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

int h_log_count(const struct aio_proc *p, const char *s) {
  char *log = h_slurp(p->log);
  int n = 0;
  for (char *q = log; (q = strstr(q, s)) != NULL; q += strlen(s))
    n++;
  free(log);
  return n;
}

int h_log_has(const struct aio_proc *p, const char *s) {
  return h_log_count(p, s) > 0;
}

int h_wait_log(const struct aio_proc *p, const char *s, int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  while (h_now_ms() < deadline) {
    if (h_log_has(p, s))
      return 0;
    usleep(10000);
  }
  return -1;
}

void h_dump_log(const struct aio_proc *p) {
  char *log = h_slurp(p->log);
  fprintf(stderr, "---- %s ----\n%s---- end ----\n", p->log, log);
  free(log);
}

int h_children(pid_t pid, pid_t *out, int max) {
  char path[128];
  snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid, (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return 0;
  int n = 0, v;
  while (n < max && fscanf(f, "%d", &v) == 1)
    out[n++] = v;
  fclose(f);
  return n;
}

int h_wait_children(pid_t pid, int n, int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  pid_t kids[256];
  while (h_now_ms() < deadline) {
    if (h_children(pid, kids, 256) == n)
      return 0;
    usleep(10000);
  }
  return -1;
}

char h_proc_state(pid_t pid) {
  char path[64], state = 0;
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return 0;
  /* The command may hold spaces and parentheses: the state follows the
   * last ')'. */
  char line[512];
  if (fgets(line, sizeof(line), f)) {
    char *paren = strrchr(line, ')');
    if (paren && paren[1] == ' ')
      state = paren[2];
  }
  fclose(f);
  return state;
}

int h_pid_alive(pid_t pid) {
  char st = h_proc_state(pid);
  return st != 0 && st != 'Z' && st != 'X';
}

int h_wait_gone(const pid_t *pids, int n, int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  for (;;) {
    int alive = 0;
    for (int i = 0; i < n; i++)
      alive += h_pid_alive(pids[i]);
    if (alive == 0 || h_now_ms() > deadline)
      return alive;
    usleep(5000);
  }
}
