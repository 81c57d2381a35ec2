/*
 * test_factory.c - factories that serve (aio_server_serve, with the
 * factmod fixture): one factory on two servers answers from each one's
 * section, its connections are counted in `aio status`, get the server's
 * idle_timeout and are drained on reload; a factory that holds the worker
 * (aio_server_hold) makes the stop wait for its release, and one that
 * never releases is cut at graceful_timeout.
 */
#define _GNU_SOURCE
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "ops_util.h"
#include "process_util.h"

/* Two servers served by factmod.serve, answering "alpha" and "beta". */
static void conf_two(char *out, size_t n, int pa, int pb) {
  h_conf(out, n, "factmod", "workers = 1\ngraceful_timeout = 10\n");
  h_conf_add(out, n,
             "[server:a]\nfactory = factmod.serve\naddress = 127.0.0.1\n"
             "port = %d\nanswer = alpha\nidle_timeout = 1.5\n",
             pa);
  h_conf_add(out, n,
             "[server:b]\nfactory = factmod.serve\naddress = 127.0.0.1\n"
             "port = %d\nanswer = beta\n",
             pb);
}

START_TEST(test_one_factory_serves_two_servers_each_its_own_way) {
  struct aio_proc p = {0};
  char conf[4096], buf[256];
  int pa = h_free_port(), pb = h_free_port();
  conf_two(conf, sizeof(conf), pa, pb);
  h_start_ready(&p, conf, NULL);
  ck_assert_int_eq(h_exchange_once(pa, "ask\n", "\n", buf, sizeof(buf), 5000),
                   H_OK);
  ck_assert_str_eq(buf, "alpha\n");
  ck_assert_int_eq(h_exchange_once(pb, "ask\n", "\n", buf, sizeof(buf), 5000),
                   H_OK);
  ck_assert_str_eq(buf, "beta\n");
  /* The factory's own keys are its business: no "unknown key" warning. */
  ck_assert_msg(!h_log_has(&p, "unknown key 'answer'"),
                "a factory's key was warned about");

  /* Counted in `aio status`, like a configured protocol's. */
  long long t0 = h_now_ms();
  int fa = h_connect(pa, 5000), fb = h_connect(pb, 5000);
  ck_assert_int_ge(fa, 0);
  ck_assert_int_ge(fb, 0);
  ck_assert_int_eq(ops_wait_connections(&p, 2, 5000), 0);
  /* [server:a] idle_timeout = 1.5 applies to the factory's connections,
   * [server:b] has the default (60 s) and stays open meanwhile. */
  ck_assert_int_eq(h_read_eof(fa, 5000), 0);
  ck_assert_int_ge(h_now_ms() - t0, 1400);
  close(fa);
  ck_assert_int_eq(ops_wait_connections(&p, 1, 5000), 0);
  ck_assert_int_eq(h_send(fb, "ask\n", 4), 0);
  ck_assert_int_gt(h_recv_until(fb, buf, sizeof(buf), "\n", 5000), 0);
  ck_assert_str_eq(buf, "beta\n");
  close(fb);
  h_stop_ok(&p);
}
END_TEST

START_TEST(test_reload_drains_a_factory_s_connections) {
  struct aio_proc p = {0};
  char conf[4096], buf[256], out[4096];
  int pa = h_free_port(), pb = h_free_port();
  conf_two(conf, sizeof(conf), pa, pb);
  h_start_ready(&p, conf, NULL);
  pid_t before[1];
  ck_assert_int_eq(pu_live_children(p.pid, before, 1), 1);

  /* A request in flight in the old worker when the reload comes. */
  int fd = h_connect(pb, 5000);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(ops_wait_connections(&p, 1, 5000), 0);
  ck_assert_int_eq(h_send(fd, "slow 700\n", 9), 0);
  ops_expect(&p, 0, out, sizeof(out), "reload", NULL);
  int n = h_recv_until(fd, buf, sizeof(buf), "\n", 5000);
  ck_assert_msg(n > 0 && strcmp(buf, "beta late\n") == 0,
                "the request in flight got %d bytes: '%s'", n, buf);
  /* Then the draining worker closes the quiet connection and exits. */
  ck_assert_int_eq(h_read_eof(fd, 5000), 0);
  close(fd);
  ck_assert_int_eq(h_wait_gone(before, 1, 10000), 0);
  /* The new worker's factory serves. */
  ck_assert_int_eq(h_exchange_once(pa, "ask\n", "\n", buf, sizeof(buf), 5000),
                   H_OK);
  ck_assert_str_eq(buf, "alpha\n");
  h_stop_ok(&p);
}
END_TEST

static void conf_hold(char *out, size_t n, double graceful, int release_ms) {
  h_conf(out, n, "factmod", "workers = 1\ngraceful_timeout = %g\n", graceful);
  h_conf_add(out, n,
             "[server:held]\nfactory = factmod.hold\naddress = 127.0.0.1\n"
             "port = %d\nrelease_ms = %d\n",
             h_free_port(), release_ms);
}

START_TEST(test_stop_waits_for_a_factory_s_release) {
  struct aio_proc p = {0};
  char conf[4096];
  conf_hold(conf, sizeof(conf), 10, 800);
  h_start_ready(&p, conf, NULL);
  long long t0 = h_now_ms();
  ck_assert_int_eq(h_stop(&p, SIGTERM, 15000), 0);
  long long took = h_now_ms() - t0;
  ck_assert_msg(h_log_has(&p, "factmod: released (0)"), "never released");
  ck_assert_msg(took >= 800, "the stop took %lld ms: it did not wait", took);
  ck_assert_msg(!h_log_has(&p, "still running after the graceful timeout"),
                "the worker was killed instead of finishing");
}
END_TEST

START_TEST(test_a_hold_never_released_is_cut_at_graceful_timeout) {
  struct aio_proc p = {0};
  char conf[4096];
  conf_hold(conf, sizeof(conf), 1, -1);
  h_start_ready(&p, conf, NULL);
  long long t0 = h_now_ms();
  h_stop(&p, SIGTERM, 15000);
  long long took = h_now_ms() - t0;
  ck_assert_msg(h_log_has(&p, "factmod: drain seen"), "no drain");
  ck_assert_msg(h_log_has(&p, "still running after the graceful timeout"),
                "not cut at graceful_timeout");
  ck_assert_msg(took >= 900 && took < 6000, "the stop took %lld ms", took);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_factory");
  TCase *tc = tcase_create("serve");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_one_factory_serves_two_servers_each_its_own_way);
  tcase_add_test(tc, test_reload_drains_a_factory_s_connections);
  tcase_add_test(tc, test_stop_waits_for_a_factory_s_release);
  tcase_add_test(tc, test_a_hold_never_released_is_cut_at_graceful_timeout);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
