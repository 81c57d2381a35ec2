/* process_util.c - see process_util.h. */
#define _GNU_SOURCE
#include "process_util.h"

#include <check.h>
#include <stdio.h>
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
