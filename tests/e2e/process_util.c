/* process_util.c - see process_util.h. */
#define _GNU_SOURCE
#include "process_util.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "check_main.h"

int pu_start_one(struct aio_proc *p, const char *aio_extra,
                 const char *symbol) {
  char conf[1024], protocol[64];
  int port = h_free_port();
  snprintf(protocol, sizeof(protocol), "testmod.%s", symbol);
  h_conf(conf, sizeof(conf), "testmod", "%s", aio_extra);
  h_conf_server(conf, sizeof(conf), symbol, protocol, port);
  h_start_ready(p, conf, NULL);
  return port;
}

int pu_run_suite(Suite *s) {
  struct rlimit no_core = {0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  return check_main(s);
}

pid_t pu_parse_pid(const char *answer) {
  int pid;
  return sscanf(answer, "pid %d", &pid) == 1 && pid > 0 ? (pid_t)pid : -1;
}

int pu_pid_in(pid_t pid, const pid_t *set, int n) {
  for (int i = 0; i < n; i++)
    if (set[i] == pid)
      return 1;
  return 0;
}

int pu_live_children(pid_t pid, pid_t *out, int max) {
  pid_t kids[256];
  int n = h_children(pid, kids, 256), live = 0;
  for (int i = 0; i < n; i++) {
    char st = h_proc_state(kids[i]);
    if (st == 0 || st == 'Z' || st == 'X')
      continue;
    if (out && live < max)
      out[live] = kids[i];
    live++;
  }
  return live;
}

int pu_zombie_children(pid_t pid) {
  pid_t kids[256];
  int n = h_children(pid, kids, 256), z = 0;
  for (int i = 0; i < n; i++)
    z += h_proc_state(kids[i]) == 'Z';
  return z;
}

int pu_wait_no_zombies(pid_t pid, int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  while (pu_zombie_children(pid) > 0) {
    if (h_now_ms() > deadline)
      return -1;
    usleep(5000);
  }
  return 0;
}

int pu_wait_live_children(pid_t pid, int n, int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  while (pu_live_children(pid, NULL, 0) != n) {
    if (h_now_ms() > deadline)
      return -1;
    usleep(5000);
  }
  return 0;
}

int pu_signal_pending(pid_t pid, int sig) {
  char path[64], line[256];
  snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return 0;
  unsigned long long mask = 0, m;
  while (fgets(line, sizeof(line), f))
    if (sscanf(line, "SigPnd: %llx", &m) == 1 ||
        sscanf(line, "ShdPnd: %llx", &m) == 1)
      mask |= m;
  fclose(f);
  return (mask >> (sig - 1)) & 1;
}

pid_t pu_ask_pid(int port) {
  char buf[256];
  int r = h_exchange_once(port, "who\n", "\n", buf, sizeof(buf), 5000);
  ck_assert_msg(r == H_OK, "port %d: %s", port, h_result_name(r));
  pid_t pid = pu_parse_pid(buf);
  ck_assert_msg(pid > 0, "port %d answered '%s'", port, buf);
  return pid;
}

static int by_pid(const void *a, const void *b) {
  pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
  return (x > y) - (x < y);
}

void pu_workers(pid_t master, pid_t *kids, int n) {
  ck_assert_int_eq(pu_wait_live_children(master, n, 10000), 0);
  ck_assert_int_eq(pu_live_children(master, kids, n), n);
  qsort(kids, (size_t)n, sizeof(*kids), by_pid);
}

void pu_assert_served_by(int port, const pid_t *pids, int n, int times) {
  for (int i = 0; i < times; i++) {
    pid_t pid = pu_ask_pid(port);
    ck_assert_msg(pu_pid_in(pid, pids, n), "answer %d on port %d from pid %d",
                  i, port, (int)pid);
  }
}
