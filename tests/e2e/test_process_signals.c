/*
 * test_process_signals.c - the master's lifecycle signals with real
 * processes: TTIN/TTOU scale the pool, QUIT ends it at once (even after a
 * TERM whose drain hangs), no child is ever left a zombie, and a run that
 * starts, respawns, scales and stops leaks nothing in the master (ASan in
 * the sanitizer build; valgrind here when it is installed).
 */
#define _GNU_SOURCE
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "process_util.h"
#include "sockets.h"

/* Send sig and wait until the master has taken it (no longer pending), so
 * that the next signal is handled after it: the kernel delivers pending
 * signals lowest number first, not in the order they were sent. */
static void signal_taken(pid_t pid, int sig) {
  ck_assert_int_eq(kill(pid, sig), 0);
  long long deadline = h_now_ms() + 2000;
  while (pu_signal_pending(pid, sig)) {
    ck_assert_msg(h_now_ms() < deadline, "signal %d stays pending", sig);
    usleep(1000);
  }
}

/* Connect until a worker not in `known` answers. Its pid, or -1. */
static pid_t new_pid_answers(int port, const pid_t *known, int nknown) {
  long long deadline = h_now_ms() + 5000;
  for (int i = 0; i < 400 && h_now_ms() < deadline; i++) {
    char buf[128];
    int r = h_exchange_once(port, "?\n", "\n", buf, sizeof(buf), 3000);
    ck_assert_msg(r == H_OK, "connection %d: %s", i, h_result_name(r));
    pid_t pid = pu_parse_pid(buf);
    if (!pu_pid_in(pid, known, nknown))
      return pid;
  }
  return -1;
}

START_TEST(test_ttin_adds_ttou_removes_and_no_zombie_stays) {
  struct aio_proc p;
  int port = pu_start_one(&p, "workers = 2\ngraceful_timeout = 5\n", "whoami");
  pid_t two[8], three[8];
  ck_assert_int_eq(pu_live_children(p.pid, two, 8), 2);

  ck_assert_int_eq(kill(p.pid, SIGTTIN), 0);
  ck_assert_int_eq(pu_wait_live_children(p.pid, 3, 3000), 0);
  ck_assert(h_log_has(&p, "workers: 2 -> 3"));
  ck_assert_int_eq(pu_live_children(p.pid, three, 8), 3);
  pid_t added = new_pid_answers(port, two, 2);
  ck_assert_msg(added > 0, "the added worker never served");
  ck_assert(pu_pid_in(added, three, 3));
  ck_assert_int_eq(pu_wait_no_zombies(p.pid, 1000), 0);

  /* TTOU retires the highest slot: the one TTIN added. */
  ck_assert_int_eq(kill(p.pid, SIGTTOU), 0);
  ck_assert_int_eq(pu_wait_live_children(p.pid, 2, 5000), 0);
  ck_assert(h_log_has(&p, "workers: 3 -> 2"));
  ck_assert(!h_pid_alive(added));
  ck_assert_int_eq(pu_wait_no_zombies(p.pid, 1000), 0);
  if (sockets_migrate_req() != 1)
    ck_assert_msg(h_log_has(&p, "tcp_migrate_req"),
                  "no warning that TTOU resets queued connections");
  pid_t left[8];
  ck_assert_int_eq(pu_live_children(p.pid, left, 8), 2);
  ck_assert(pu_pid_in(two[0], left, 2) && pu_pid_in(two[1], left, 2));

  /* Down to one, and no further: the last worker stays. */
  signal_taken(p.pid, SIGTTOU);
  signal_taken(p.pid, SIGTTOU);
  ck_assert_int_eq(pu_wait_live_children(p.pid, 1, 5000), 0);
  ck_assert_int_eq(kill(p.pid, SIGTTIN), 0);
  ck_assert_int_eq(h_wait_log(&p, "workers: 1 -> 2", 3000), 0);
  ck_assert_int_eq(pu_wait_live_children(p.pid, 2, 3000), 0);
  ck_assert(!h_log_has(&p, "workers: 1 -> 1"));
  ck_assert(!h_log_has(&p, "-> 0"));
  ck_assert_int_eq(pu_wait_no_zombies(p.pid, 1000), 0);
  h_stop_ok(&p);
}
END_TEST

/* One rule for the worker count (1 to 1024): workers = 0 is refused in
 * the file as `aio scale 0` is, and TTOU at one worker keeps it, says so,
 * and does not wrap around to 1024. */
START_TEST(test_worker_count_is_one_to_1024_everywhere) {
  char conf[256];
  snprintf(conf, sizeof(conf),
           "[aio]\nworkers = 0\n[server:e]\nprotocol = aio.echo\n"
           "address = 127.0.0.1\nport = %d\n",
           h_free_port());
  struct aio_proc p;
  ck_assert_int_eq(h_start(&p, conf, NULL), 0);
  ck_assert_int_eq(h_wait_exit(&p, 10000), 0);
  h_assert_exit_status(&p, 78);
  ck_assert(h_log_has(&p, "aio.conf:2: [aio] workers: expected a whole "
                          "number between 1 and 1024"));

  int port = pu_start_one(&p, "workers = 1\n", "whoami");
  signal_taken(p.pid, SIGTTOU);
  ck_assert_int_eq(h_wait_log(&p, "workers: staying at 1", 3000), 0);
  ck_assert_int_eq(pu_live_children(p.pid, NULL, 0), 1);
  ck_assert_msg(!h_log_has(&p, "-> 1024"), "TTOU at 1 wrapped around");
  ck_assert_msg(!h_log_has(&p, "-> 0"), "TTOU at 1 left no worker");
  ck_assert_int_eq(kill(p.pid, SIGTTIN), 0);
  ck_assert_int_eq(h_wait_log(&p, "workers: 1 -> 2\n", 3000), 0);
  ck_assert_int_eq(pu_wait_live_children(p.pid, 2, 3000), 0);
  char buf[128];
  ck_assert_int_eq(h_exchange_once(port, "?\n", "\n", buf, sizeof(buf), 3000),
                   H_OK);
  h_stop_ok(&p);
}
END_TEST

START_TEST(test_quit_ends_a_busy_connection_at_once) {
  struct aio_proc p;
  int port = pu_start_one(&p, "workers = 2\ngraceful_timeout = 30\n", "slow");
  int fd = h_connect(port, 3000);
  ck_assert_int_ge(fd, 0);
  /* A connection that is never idle: a graceful drain would wait for it
   * up to graceful_timeout; QUIT does not. */
  long long quit_at = -1, ended_at = -1;
  for (int i = 0; i < 500; i++) {
    char buf[64];
    if (h_send(fd, "sleep 0\n", 8) < 0 ||
        h_recv_until(fd, buf, sizeof(buf), "done\n", 2000) <= 0 ||
        strcmp(buf, "done\n") != 0) {
      ended_at = h_now_ms();
      break;
    }
    if (i == 3) {
      ck_assert_int_eq(kill(p.pid, SIGQUIT), 0);
      quit_at = h_now_ms();
    }
    if (quit_at >= 0 && h_now_ms() - quit_at > 5000)
      break;
    usleep(20000); /* pacing: a client that talks every 20 ms */
  }
  close(fd);
  ck_assert_msg(ended_at >= 0, "the connection outlived QUIT");
  ck_assert_msg(ended_at - quit_at < 1000, "QUIT took %lld ms",
                ended_at - quit_at);
  ck_assert_int_eq(h_wait_exit(&p, 3000), 0);
  ck_assert(h_log_has(&p, "immediate shutdown"));
  ck_assert(!h_log_has(&p, "still running after"));
  h_assert_exit_status(&p, 0);
}
END_TEST

/* A worker that hangs ignores TERM's drain; QUIT then gives it the short
 * grace (2 s) before SIGKILL, not the rest of graceful_timeout. */
START_TEST(test_quit_after_term_does_not_wait_for_a_hung_drain) {
  struct aio_proc p;
  int port = pu_start_one(
      &p, "workers = 1\ntimeout = 0\ngraceful_timeout = 60\n", "spinner");
  int fd = h_connect(port, 3000);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(h_send(fd, "x", 1), 0);
  /* Hung first: a worker that has not read the byte yet would take the
   * stop frame and exit at QUIT by itself. A spinning worker stays
   * runnable; an idle one sleeps. */
  pid_t worker;
  ck_assert_int_eq(pu_live_children(p.pid, &worker, 1), 1);
  long long deadline = h_now_ms() + 3000;
  for (int running = 0; running < 5; usleep(10000)) {
    running = h_proc_state(worker) == 'R' ? running + 1 : 0;
    ck_assert_msg(h_now_ms() < deadline, "the worker does not spin");
  }
  ck_assert_int_eq(kill(p.pid, SIGTERM), 0);
  ck_assert_int_eq(h_wait_log(&p, "graceful shutdown", 3000), 0);
  long long t0 = h_now_ms();
  ck_assert_int_eq(kill(p.pid, SIGQUIT), 0);
  int exited = h_wait_exit(&p, 6000);
  close(fd);
  if (exited != 0)
    h_stop(&p, SIGKILL, 1000);
  ck_assert_msg(exited == 0, "QUIT after TERM waited for graceful_timeout");
  ck_assert_msg(h_now_ms() - t0 < 5000, "QUIT took %lld ms", h_now_ms() - t0);
  ck_assert(h_log_has(&p, "killing it"));
  h_assert_exit_status(&p, 0);
}
END_TEST

static int have_valgrind(void) {
  const char *path = getenv("PATH");
  char dir[4096];
  snprintf(dir, sizeof(dir), "%s", path ? path : "/usr/bin:/bin");
  for (char *d = strtok(dir, ":"); d; d = strtok(NULL, ":")) {
    char exe[4200];
    snprintf(exe, sizeof(exe), "%s/valgrind", d);
    if (access(exe, X_OK) == 0)
      return 1;
  }
  return 0;
}

/* Start, serve, respawn a killed worker, scale up and down, stop: valgrind
 * exits 9 instead of the master's status if the master leaked or touched
 * memory it should not have. Its workers run under valgrind too (fork,
 * not exec), silently. */
START_TEST(test_master_has_no_leak_under_valgrind) {
#if defined(__SANITIZE_ADDRESS__)
  fprintf(stderr, "skipped: valgrind does not run ASan builds; the "
                  "sanitizer build checks leaks through the exit status\n");
  return;
#endif
  if (!have_valgrind()) {
    fprintf(stderr, "skipped: valgrind is not installed\n");
    return;
  }
  static const char *const vg[] = {"valgrind",
                                   "--leak-check=full",
                                   "--error-exitcode=9",
                                   "--trace-children=no",
                                   "--child-silent-after-fork=yes",
                                   NULL};
  int port = h_free_port();
  char conf[1024];
  h_conf(conf, sizeof(conf), "testmod", "workers = 2\ngraceful_timeout = 10\n");
  h_conf_server(conf, sizeof(conf), "who", "testmod.whoami", port);
  struct aio_proc p;
  ck_assert_int_eq(h_start(&p, conf, &(struct h_opts){.wrap = vg}), 0);
  h_assert_ready(&p, 60000);
  char buf[128];
  ck_assert_int_eq(h_exchange_once(port, "?\n", "\n", buf, sizeof(buf), 10000),
                   H_OK);
  pid_t kids[8];
  ck_assert_int_eq(pu_live_children(p.pid, kids, 8), 2);
  ck_assert_int_eq(kill(kids[0], SIGKILL), 0);
  ck_assert_int_eq(h_wait_log(&p, "respawning", 10000), 0);
  ck_assert_int_eq(kill(p.pid, SIGTTIN), 0);
  ck_assert_int_eq(pu_wait_live_children(p.pid, 3, 20000), 0);
  ck_assert_int_eq(kill(p.pid, SIGTTOU), 0);
  ck_assert_int_eq(pu_wait_live_children(p.pid, 2, 20000), 0);
  ck_assert_int_eq(h_exchange_once(port, "?\n", "\n", buf, sizeof(buf), 10000),
                   H_OK);
  int rc = h_stop(&p, SIGTERM, 60000);
  fprintf(stderr, "valgrind: master exit status %d (9 = leak or error)\n", rc);
  if (rc != 0)
    h_dump_log(&p);
  ck_assert_int_eq(rc, 0);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_process_signals");
  TCase *tc = tcase_create("signals");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_ttin_adds_ttou_removes_and_no_zombie_stays);
  tcase_add_test(tc, test_worker_count_is_one_to_1024_everywhere);
  tcase_add_test(tc, test_quit_ends_a_busy_connection_at_once);
  tcase_add_test(tc, test_quit_after_term_does_not_wait_for_a_hung_drain);
  suite_add_tcase(s, tc);
  /* Slow (valgrind): its own case so it can be run or skipped alone. */
  TCase *vg = tcase_create("valgrind");
  tcase_set_timeout(vg, 120);
  tcase_add_test(vg, test_master_has_no_leak_under_valgrind);
  suite_add_tcase(s, vg);
  return s;
}

int main(void) { return pu_run_suite(suite()); }
