/*
 * test_factory.c - factories that serve (aio_server_serve, with the
 * factmod fixture): one factory on two servers answers from each one's
 * section, its connections are counted in `aio status`, get the server's
 * idle_timeout and are drained on reload; a factory that holds the worker
 * (aio_server_hold) makes the stop wait for its release, and one that
 * never releases is cut at graceful_timeout. aio_emit() in a mapped
 * command reaches the running master (-ENOTCONN with none), and one in a
 * module's init is emitted once the worker is ready, within its bounds.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "ops_util.h"
#include "process_util.h"
#include "records.h"

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

/* The next line on fd is want. */
static void expect_line(int fd, const char *want) {
  char buf[256];
  int n = h_recv_until(fd, buf, sizeof(buf), "\n", 5000);
  ck_assert_msg(n > 0 && strcmp(buf, want) == 0, "got %d bytes: '%s', not '%s'",
                n, n > 0 ? buf : "", want);
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
  expect_line(fb, "beta\n");
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
  expect_line(fd, "beta late\n"); /* answered after the reload */
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

/* ---- aio_emit() in a command and in init --------------------------------- */

/* factmod's record listens to cmd-said and init-said, into DIR/rec. */
static void conf_emits(char *out, size_t n, char *rec, size_t rn,
                       const char *dir, const char *extra, const char *mine) {
  snprintf(rec, rn, "%s/rec", dir);
  h_conf(out, n, "factmod", "workers = 1\n%s", extra);
  h_conf_add(out, n,
             "[factmod]\nout = %s\n%s"
             "[listen:signals]\ncmd-said = factmod.record\n"
             "init-said = factmod.record\n"
             "[aio:commands]\nemitter = factmod.emitter\n",
             rec, mine);
}

START_TEST(test_a_command_s_emit_reaches_the_running_master) {
  struct aio_proc p = {0};
  char conf[4096], rec[256], out[4096], dir[128];
  h_tmpdir(dir, sizeof(dir));
  conf_emits(conf, sizeof(conf), rec, sizeof(rec), dir, "", "");
  struct h_opts o = {.dir = dir};
  h_start_ready(&p, conf, &o);
  int rc = ops_aio(&p, out, sizeof(out), "emitter", "cmd-said", "3", NULL);
  ck_assert_msg(rc == 0, "the command exited %d: %s", rc, out);
  ck_assert_msg(strstr(out, "emit 2: 0\n"), "%s", out);
  json_t *got = rec_wait(rec, "sig", "cmd-said", 3, 10000);
  ck_assert_uint_eq(json_array_size(got), 3);
  for (size_t i = 0; i < 3; i++)
    ck_assert_int_eq(rec_data_int(json_array_get(got, i), "n"), (long long)i);
  json_decref(got);
  h_stop_ok(&p);

  /* No master now: the command's aio_emit() says so. */
  rc = ops_aio(&p, out, sizeof(out), "emitter", "cmd-said", "1", NULL);
  char want[64];
  snprintf(want, sizeof(want), "emit 0: %d\n", -ENOTCONN);
  ck_assert_msg(rc == 3 && strstr(out, want), "exit %d: %s", rc, out);
}
END_TEST

START_TEST(test_emits_of_init_go_out_once_the_worker_is_ready) {
  struct aio_proc p = {0};
  char conf[4096], rec[256], dir[128];
  h_tmpdir(dir, sizeof(dir));
  /* Six emits in init, four kept (bus_journal): the last two refused. */
  conf_emits(conf, sizeof(conf), rec, sizeof(rec), dir, "bus_journal = 4\n",
             "init_emits = 6\n");
  struct h_opts o = {.dir = dir};
  h_start_ready(&p, conf, &o);
  json_t *got = rec_wait(rec, "sig", "init-said", 4, 10000);
  ck_assert_msg(json_array_size(got) == 4, "%zu init emits ran",
                json_array_size(got));
  for (size_t i = 0; i < 4; i++)
    ck_assert_int_eq(rec_data_int(json_array_get(got, i), "n"), (long long)i);
  json_decref(got);
  char want[64];
  snprintf(want, sizeof(want), "factmod: init emit 4: %d", -EAGAIN);
  ck_assert_msg(h_log_has(&p, want), "no '%s'", want);
  ck_assert_int_eq(h_log_count(&p, "factmod: init emit"), 2);
  /* Refused, and counted where every refused emit is. */
  json_t *st = ops_status(&p);
  json_t *w0 = json_array_get(json_object_get(st, "procs"), 0);
  ck_assert_int_eq(ops_int(json_object_get(w0, "bus"), "refused"), 2);
  json_decref(st);
  h_stop_ok(&p);
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
  tcase_add_test(tc, test_a_command_s_emit_reaches_the_running_master);
  tcase_add_test(tc, test_emits_of_init_go_out_once_the_worker_is_ready);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
