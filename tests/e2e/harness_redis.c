/*
 * harness_redis.c - a redis-server per test (harness_redis.h).
 */
#define _GNU_SOURCE
#include "harness_redis.h"

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "harness.h"

#define REDIS_BIN "redis-server"

static void spawn(struct h_redis *r) {
  char port[16];
  snprintf(port, sizeof(port), "%d", r->port);
  pid_t parent = getpid();
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(1);
    const char *av[32] = {REDIS_BIN,
                          "--bind",
                          "127.0.0.1",
                          "--port",
                          r->sock[0] ? "0" : port,
                          "--save",
                          "",
                          "--appendonly",
                          "no",
                          "--daemonize",
                          "no",
                          "--logfile",
                          r->log,
                          "--dir",
                          r->dir};
    int n = 15;
    if (r->sock[0]) {
      av[n++] = "--unixsocket";
      av[n++] = r->sock;
      av[n++] = "--unixsocketperm";
      av[n++] = "700";
    }
    char extra[sizeof(r->extra)];
    snprintf(extra, sizeof(extra), "%s", r->extra);
    for (char *tok = strtok(extra, " "); tok && n < 30; tok = strtok(NULL, " "))
      av[n++] = tok;
    av[n] = NULL;
    execvp(REDIS_BIN, (char **)av);
    _exit(127);
  }
  r->pid = pid;
  /* Up when it answers PING (a wrong password still answers: NOAUTH). */
  long long deadline = h_now_ms() + 5000;
  char out[64];
  while (h_now_ms() < deadline) {
    if (h_redis_cmd(r, out, sizeof(out), (const char *[]){"PING", NULL}) == 0)
      return;
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      r->pid = 0;
      break;
    }
    usleep(20000);
  }
  char *log = h_slurp(r->log);
  fprintf(stderr, "redis-server did not come up:\n%s\n", log);
  free(log);
  ck_abort_msg("redis-server did not start");
}

void h_redis_start(struct h_redis *r, const char *dir, int unix_socket,
                   const char *extra) {
  memset(r, 0, sizeof(*r));
  snprintf(r->dir, sizeof(r->dir), "%s", dir);
  snprintf(r->extra, sizeof(r->extra), "%s", extra ? extra : "");
  if (unix_socket) {
    snprintf(r->sock, sizeof(r->sock), "%s/redis.sock", dir);
    snprintf(r->log, sizeof(r->log), "%s/redis-unix.log", dir);
  } else {
    do
      r->port = h_free_port();
    while (r->port == 6379);
    snprintf(r->log, sizeof(r->log), "%s/redis-%d.log", dir, r->port);
  }
  spawn(r);
}

void h_redis_restart(struct h_redis *r) {
  ck_assert_int_eq(r->pid, 0);
  spawn(r);
}

void h_redis_stop(struct h_redis *r) {
  if (r->pid <= 0)
    return;
  kill(r->pid, SIGTERM);
  long long deadline = h_now_ms() + 5000;
  int st;
  while (waitpid(r->pid, &st, WNOHANG) == 0) {
    if (h_now_ms() > deadline) {
      kill(r->pid, SIGKILL);
      waitpid(r->pid, &st, 0);
      break;
    }
    usleep(10000);
  }
  r->pid = 0;
}

void h_redis_url(const struct h_redis *r, char *out, size_t n) {
  if (r->sock[0])
    snprintf(out, n, "unix://%s", r->sock);
  else
    snprintf(out, n, "redis://127.0.0.1:%d", r->port);
}

static void reply_text(const redisReply *rp, char *out, size_t n) {
  size_t len = strlen(out);
  if (len >= n)
    return;
  switch (rp->type) {
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS:
  case REDIS_REPLY_ERROR:
    snprintf(out + len, n - len, "%.*s", (int)rp->len, rp->str);
    break;
  case REDIS_REPLY_INTEGER:
    snprintf(out + len, n - len, "%lld", rp->integer);
    break;
  case REDIS_REPLY_NIL:
    snprintf(out + len, n - len, "(nil)");
    break;
  case REDIS_REPLY_ARRAY:
    for (size_t i = 0; i < rp->elements; i++) {
      if (i)
        snprintf(out + strlen(out), n - strlen(out), "\n");
      reply_text(rp->element[i], out, n);
    }
    break;
  }
}

int h_redis_cmd(const struct h_redis *r, char *out, size_t n,
                const char *const *argv) {
  struct timeval tv = {2, 0};
  redisContext *c = r->sock[0]
                        ? redisConnectUnixWithTimeout(r->sock, tv)
                        : redisConnectWithTimeout("127.0.0.1", r->port, tv);
  out[0] = '\0';
  if (c == NULL || c->err) {
    if (c)
      redisFree(c);
    return -1;
  }
  redisSetTimeout(c, tv);
  int argc = 0;
  while (argv[argc])
    argc++;
  redisReply *rp = redisCommandArgv(c, argc, (const char **)argv, NULL);
  if (rp == NULL) {
    redisFree(c);
    return -1;
  }
  reply_text(rp, out, n);
  freeReplyObject(rp);
  redisFree(c);
  return 0;
}
