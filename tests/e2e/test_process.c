/*
 * test_process.c - the process model with real processes and sockets on
 * 127.0.0.1: the pool serves on every worker, a killed, crashing or hung
 * worker is replaced (or, in a crash loop, given up on) without the master
 * or the other workers noticing, TERM drains, a dead master takes its
 * workers with it, and a taken port fails the start before any fork.
 * Scaling, QUIT, zombies and leaks are in test_process_signals.c.
 *
 * Every wait is a bounded loop on a deadline; nothing sleeps and hopes.
 */
#define _GNU_SOURCE
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "process_util.h"

START_TEST(test_all_workers_serve_and_share_connections) {
  struct aio_proc p;
  int port = pu_start_one(&p, "workers = 3\n", "whoami");
  pid_t kids[8];
  ck_assert_int_eq(pu_live_children(p.pid, kids, 8), 3);

  /* SO_REUSEPORT hashes each connection's 4-tuple onto a slot: short
   * connections from fresh ports reach every worker soon. */
  pid_t seen[8];
  int nseen = 0, n;
  long long deadline = h_now_ms() + 10000;
  for (n = 0; n < 400 && nseen < 3 && h_now_ms() < deadline; n++) {
    char buf[128];
    int r = h_exchange_once(port, "?\n", "\n", buf, sizeof(buf), 3000);
    ck_assert_msg(r == H_OK, "connection %d: %s", n, h_result_name(r));
    pid_t pid = pu_parse_pid(buf);
    ck_assert_msg(pu_pid_in(pid, kids, 3), "answer '%s' is not from a worker",
                  buf);
    if (!pu_pid_in(pid, seen, nseen))
      seen[nseen++] = pid;
  }
  ck_assert_msg(nseen == 3, "only %d of 3 workers served %d connections", nseen,
                n);
  h_stop_ok(&p);
}
END_TEST

START_TEST(test_killed_worker_is_replaced_without_refusing_anyone) {
  struct aio_proc p;
  int port = pu_start_one(&p, "workers = 2\n", "whoami");
  pid_t kids[8];
  ck_assert_int_eq(pu_live_children(p.pid, kids, 8), 2);
  pid_t victim = kids[0], survivor = kids[1];

  char buf[128];
  ck_assert_int_eq(h_exchange_once(port, "?\n", "\n", buf, sizeof(buf), 3000),
                   H_OK);
  ck_assert_int_eq(kill(victim, SIGKILL), 0);
  long long t0 = h_now_ms(), replaced_at = -1;
  pid_t fresh = 0;
  int fails = 0, served_by_fresh = 0, n;
  /* Keep connecting through the death and the respawn: the victim's
   * listening socket belongs to the master, so what the kernel queues on
   * it meanwhile waits for the slot's next worker instead of being
   * refused or reset. */
  for (n = 0; n < 3000; n++) {
    long long now = h_now_ms();
    if (now - t0 > 5000 || (now - t0 >= 1000 && served_by_fresh))
      break;
    int r = h_exchange_once(port, "?\n", "\n", buf, sizeof(buf), 3000);
    if (r != H_OK) {
      fprintf(stderr, "connection %d after the kill: %s\n", n,
              h_result_name(r));
      fails++;
      continue;
    }
    pid_t pid = pu_parse_pid(buf);
    ck_assert_msg(pid != victim, "the killed worker %d answered", (int)victim);
    if (replaced_at < 0) {
      pid_t now_kids[8];
      int k = pu_live_children(p.pid, now_kids, 8);
      if (k == 2 && !pu_pid_in(victim, now_kids, k)) {
        replaced_at = h_now_ms();
        fresh = now_kids[0] == survivor ? now_kids[1] : now_kids[0];
      }
    }
    if (fresh && pid == fresh)
      served_by_fresh = 1;
  }
  ck_assert_msg(fails == 0, "%d of %d connections failed", fails, n);
  ck_assert_msg(replaced_at >= 0 && replaced_at - t0 <= 1000,
                "worker not replaced within 1 s (%lld ms)",
                replaced_at < 0 ? -1 : replaced_at - t0);
  ck_assert_msg(served_by_fresh, "the new worker %d never served", (int)fresh);
  char line[128];
  snprintf(line, sizeof(line), "(pid %d) killed by signal 9", (int)victim);
  ck_assert(h_log_has(&p, line));
  ck_assert_int_eq(pu_wait_no_zombies(p.pid, 1000), 0);
  /* Under ASan this exit status also says the master leaked nothing
   * across a start, a respawn and a stop. */
  h_stop_ok(&p);
}
END_TEST

/* One crash per call: connect to the crasher, send a byte, and wait for the
 * master to decide what to do about the death (each crash logs exactly one
 * decision). Returns how many decisions are logged. */
static int crash_once(struct aio_proc *p, int port, int decisions) {
  char buf[64];
  int r = h_exchange_once(port, "x", "never", buf, sizeof(buf), 5000);
  ck_assert_msg(r == H_RESET || r == H_CLOSED, "crasher: %s", h_result_name(r));
  long long deadline = h_now_ms() + 5000;
  int now;
  while ((now = h_log_count(p, ": respawning\n") +
                h_log_count(p, "respawning in ") +
                h_log_count(p, "not respawning it")) <= decisions) {
    ck_assert_msg(h_now_ms() < deadline, "no respawn decision logged");
    usleep(5000);
  }
  return now;
}

START_TEST(test_crash_loop_backs_off_then_stops_and_others_serve) {
  struct aio_proc p;
  int crash_port = h_free_port(), who_port = h_free_port();
  char conf[1024];
  h_conf(conf, sizeof(conf), "testmod",
         "workers = 2\nmax_restarts = 2\nrestart_window = 60\n");
  h_conf_server(conf, sizeof(conf), "crasher", "testmod.crasher", crash_port);
  h_conf_server(conf, sizeof(conf), "whoami", "testmod.whoami", who_port);
  h_start_ready(&p, conf, NULL);
  int decisions = 0, crashes;
  /* max_restarts = 2: a slot's third crash in the window is its last;
   * the other slot has had at most two by then. */
  for (crashes = 0; crashes < 6 && !h_log_has(&p, "not respawning it");
       crashes++)
    decisions = crash_once(&p, crash_port, decisions);
  ck_assert_msg(h_log_has(&p, "not respawning it"),
                "no crash-loop stop after %d crashes", crashes);
  ck_assert_int_eq(h_log_count(&p, "not respawning it"), 1);
  ck_assert(h_log_has(&p, "(max_restarts = 2)"));
  ck_assert_msg(h_log_has(&p, "respawning in "), "no backoff before the stop");
  ck_assert_int_ge(crashes, 3);

  /* The master is up, and the healthy server answers every connection:
   * none of them may wait in the failed slot's accept queue, which no
   * worker will ever serve again. */
  ck_assert(h_pid_alive(p.pid));
  for (int i = 0; i < 40; i++) {
    char buf[128];
    int r = h_exchange_once(who_port, "?\n", "\n", buf, sizeof(buf), 3000);
    ck_assert_msg(r == H_OK, "who, connection %d: %s", i, h_result_name(r));
    ck_assert_int_gt(pu_parse_pid(buf), 0);
  }
  ck_assert_int_eq(pu_live_children(p.pid, NULL, 0), 1);
  h_stop_ok(&p);
}
END_TEST

START_TEST(test_spinning_worker_is_killed_after_timeout_and_replaced) {
  struct aio_proc p;
  int spin_port = h_free_port(), who_port = h_free_port();
  char conf[1024];
  h_conf(conf, sizeof(conf), "testmod", "workers = 1\ntimeout = 1\n");
  h_conf_server(conf, sizeof(conf), "spinner", "testmod.spinner", spin_port);
  h_conf_server(conf, sizeof(conf), "whoami", "testmod.whoami", who_port);
  h_start_ready(&p, conf, NULL);
  char buf[128];
  ck_assert_int_eq(
      h_exchange_once(who_port, "?\n", "\n", buf, sizeof(buf), 3000), H_OK);
  pid_t old = pu_parse_pid(buf);
  ck_assert_int_gt(old, 0);

  long long t0 = h_now_ms();
  int r = h_exchange_once(spin_port, "x", "never", buf, sizeof(buf), 6000);
  ck_assert_msg(r == H_RESET || r == H_CLOSED, "spinner: %s", h_result_name(r));
  long long killed_after = h_now_ms() - t0;
  ck_assert_int_eq(h_wait_log(&p, "silent for", 1000), 0);
  /* Silence counts from the last heartbeat (every timeout / 4). */
  ck_assert_msg(killed_after >= 600, "killed after %lld ms, timeout is 1 s",
                killed_after);
  char line[128];
  snprintf(line, sizeof(line), "worker 0 (pid %d) killed by signal 9",
           (int)old);
  ck_assert_int_eq(h_wait_log(&p, line, 2000), 0);

  ck_assert_int_eq(
      h_exchange_once(who_port, "?\n", "\n", buf, sizeof(buf), 3000), H_OK);
  pid_t fresh = pu_parse_pid(buf);
  ck_assert_int_gt(fresh, 0);
  ck_assert_int_ne(fresh, old);
  ck_assert(!h_pid_alive(old));
  /* Killed once, reported once. */
  ck_assert_int_eq(h_log_count(&p, "silent for"), 1);
  h_stop_ok(&p);
}
END_TEST

START_TEST(test_term_lets_an_open_exchange_finish) {
  struct aio_proc p;
  int port = pu_start_one(&p, "workers = 1\ngraceful_timeout = 20\n", "slow");
  int fd = h_connect(port, 3000);
  ck_assert_int_ge(fd, 0);
  char buf[256];
  /* One quick exchange first: the worker has accepted this connection. */
  ck_assert_int_eq(h_send(fd, "sleep 0\n", 8), 0);
  ck_assert_int_gt(h_recv_until(fd, buf, sizeof(buf), "done\n", 3000), 0);
  ck_assert_str_eq(buf, "done\n");

  ck_assert_int_eq(h_send(fd, "sleep 700\n", 10), 0);
  ck_assert_int_eq(kill(p.pid, SIGTERM), 0);
  long long t0 = h_now_ms();
  ck_assert_int_gt(h_recv_until(fd, buf, sizeof(buf), "done\n", 5000), 0);
  ck_assert_str_eq(buf, "done\n");
  if (!h_pid_alive(p.pid))
    h_dump_log(&p);
  ck_assert_msg(h_pid_alive(p.pid),
                "the master exited before the exchange finished");
  /* Then the idle connection is closed and everyone exits cleanly. */
  ck_assert_int_eq(h_read_eof(fd, 5000), 0);
  close(fd);
  ck_assert_int_eq(h_wait_exit(&p, 10000), 0);
  ck_assert_msg(h_now_ms() - t0 < 5000, "drain took %lld ms", h_now_ms() - t0);
  h_assert_exit_status(&p, 0);
  ck_assert(h_log_has(&p, "graceful shutdown"));
}
END_TEST

START_TEST(test_master_killed_takes_its_workers_along) {
  struct aio_proc p;
  int port = pu_start_one(&p, "workers = 3\n", "whoami");
  pid_t kids[8];
  int n = pu_live_children(p.pid, kids, 8);
  ck_assert_int_eq(n, 3);
  ck_assert_int_eq(kill(p.pid, SIGKILL), 0);
  ck_assert_int_eq(h_wait_exit(&p, 3000), 0);
  int alive = h_wait_gone(kids, n, 2000);
  ck_assert_msg(alive == 0, "%d workers outlived their master", alive);
  /* Nothing listens on the port any more. */
  char buf[64];
  ck_assert_int_eq(h_exchange_once(port, "?\n", "\n", buf, sizeof(buf), 1000),
                   H_REFUSED);
  close(p.ready_fd);
}
END_TEST

/* Start aio on a port somebody else holds; it must exit 69 naming the
 * address, without ever forking a worker. */
static void check_port_taken(int reuseport) {
  int port = 0;
  int lfd = h_listen_tcp(&port, reuseport);
  ck_assert_int_ge(lfd, 0);

  char conf[512];
  h_conf(conf, sizeof(conf), "testmod", "workers = 2\n");
  h_conf_server(conf, sizeof(conf), "who", "testmod.whoami", port);
  struct aio_proc p;
  ck_assert_int_eq(h_start(&p, conf, NULL), 0);
  ck_assert_int_ne(h_wait_ready(&p, 10000), 0);
  ck_assert_int_eq(h_wait_exit(&p, 10000), 0);
  close(lfd);
  h_assert_exit_status(&p, 69);
  char where[64];
  snprintf(where, sizeof(where), "cannot listen on 127.0.0.1:%d", port);
  ck_assert_msg(h_log_has(&p, where), "the error does not name %s", where);
  ck_assert(h_log_has(&p, "Address already in use"));
  ck_assert(h_log_has(&p, "aio.conf:"));
  ck_assert_msg(!h_log_has(&p, "started (pid"), "a worker was forked");
}

START_TEST(test_port_in_use_fails_the_start_before_any_fork) {
  check_port_taken(0);
}
END_TEST

/* Another process of ours listening with SO_REUSEPORT (a second `aio run`
 * of the same file, say) would silently share the port with us. */
START_TEST(test_port_shared_by_another_reuseport_listener_fails_too) {
  check_port_taken(1);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_process");
  TCase *tc = tcase_create("process");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_all_workers_serve_and_share_connections);
  tcase_add_test(tc, test_killed_worker_is_replaced_without_refusing_anyone);
  tcase_add_test(tc, test_crash_loop_backs_off_then_stops_and_others_serve);
  tcase_add_test(tc, test_spinning_worker_is_killed_after_timeout_and_replaced);
  tcase_add_test(tc, test_term_lets_an_open_exchange_finish);
  tcase_add_test(tc, test_master_killed_takes_its_workers_along);
  tcase_add_test(tc, test_port_in_use_fails_the_start_before_any_fork);
  tcase_add_test(tc, test_port_shared_by_another_reuseport_listener_fails_too);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return pu_run_suite(suite()); }
