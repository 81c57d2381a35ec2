/*
 * test_ops_upgrade.c - `aio upgrade` and SIGUSR2 against a real master: to
 * a copy of the binary nothing changes but the exec (same pid, the next
 * generation, new workers, no connection refused, a request in flight
 * finishes); to a binary that cannot start, the master and its workers
 * serve on and `aio upgrade` says why (exit 70); a new image whose
 * workers fail goes back to the old one.
 */
#define _GNU_SOURCE
#include <check.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "ops_util.h"
#include "process_util.h"

/* whoami on port, slow on slow (0: none), the control socket in dir. */
static void conf_upgrade(char *out, size_t n, const char *dir, int port,
                         int slow) {
  h_conf(out, n, "testmod lifemod",
         "workers = 2\ngraceful_timeout = 5\ncontrol = %s/aio.sock\n", dir);
  h_conf_server(out, n, "who", "testmod.whoami", port);
  if (slow)
    h_conf_server(out, n, "slow", "testmod.slow", slow);
}

static void start(struct aio_proc *p, char *conf, size_t n, int port,
                  int slow) {
  h_tmpdir(p->dir, sizeof(p->dir));
  conf_upgrade(conf, n, p->dir, port, slow);
  h_start_ready(p, conf, &(struct h_opts){.dir = p->dir});
}

/* An executable file dir/name with text. Its path goes into out. */
static void write_exec(const char *dir, const char *name, const char *text,
                       char *out, size_t n) {
  ck_assert_int_eq(h_write(dir, name, text), 0);
  snprintf(out, n, "%s/%s", dir, name);
  ck_assert_int_eq(chmod(out, 0755), 0);
}

static void copy_binary(const char *dir, char *out, size_t n) {
  snprintf(out, n, "%s/aio-copy", dir);
  char cmd[600];
  snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", AIO_BIN, out);
  ck_assert_int_eq(system(cmd), 0);
}

/* ---- clients that connect anew for every exchange ------------------------ */

enum { NLOOPS = 2 };

struct loops {
  int port;
  pthread_t t[NLOOPS];
  _Atomic int stop;
  _Atomic int done;
  _Atomic int failed;
  _Atomic int first; /* H_* of the first failure */
};

static void *loop_run(void *arg) {
  struct loops *l = arg;
  long long deadline = h_now_ms() + 80000;
  char buf[128];
  while (!l->stop && h_now_ms() < deadline) {
    int r = h_exchange_once(l->port, "who\n", "\n", buf, sizeof(buf), 5000);
    if (r == H_OK)
      l->done++;
    else if (l->failed++ == 0)
      l->first = r;
  }
  return NULL;
}

static void loops_start(struct loops *l, int port) {
  memset(l, 0, sizeof(*l));
  l->port = port;
  for (int i = 0; i < NLOOPS; i++)
    ck_assert_int_eq(pthread_create(&l->t[i], NULL, loop_run, l), 0);
}

/* Wait until n more exchanges were answered. 0 or -1. */
static int loops_more(struct loops *l, int n) {
  int want = l->done + n;
  long long deadline = h_now_ms() + 10000;
  while (l->done < want && h_now_ms() < deadline)
    usleep(2000);
  return l->done >= want ? 0 : -1;
}

static void loops_stop_no_failure(struct loops *l, const char *what) {
  l->stop = 1;
  for (int i = 0; i < NLOOPS; i++)
    pthread_join(l->t[i], NULL);
  ck_assert_msg(l->failed == 0, "%d of %d exchanges failed across %s: %s",
                (int)l->failed, l->failed + l->done, what,
                h_result_name(l->first));
}

static json_t *upgrade_info(const struct aio_proc *p, json_t **st) {
  *st = ops_status(p);
  json_t *up = json_object_get(*st, "upgrade");
  ck_assert_msg(json_is_object(up), "no upgrade in aio status");
  return up;
}

/* The old workers are gone, the loops saw no failure across what, the
 * master's pid is p's: its status in *st (new), the upgrade part
 * returned (borrowed from it). */
static json_t *assert_switched(const struct aio_proc *p, const pid_t before[2],
                               struct loops *l, const char *what, json_t **st) {
  ck_assert_int_eq(h_wait_gone(before, 2, 10000), 0);
  ck_assert_int_eq(loops_more(l, 20), 0);
  loops_stop_no_failure(l, what);
  json_t *up = upgrade_info(p, st);
  ck_assert_int_eq(ops_int(*st, "pid"), p->pid);
  return up;
}

/* start() with 2 workers (before gets them) and the client loops going. */
static void start_loaded(struct aio_proc *p, char *conf, size_t n, int port,
                         pid_t before[2], struct loops *l) {
  start(p, conf, n, port, 0);
  pu_workers(p->pid, before, 2);
  loops_start(l, port);
  ck_assert_int_eq(loops_more(l, 10), 0);
}

START_TEST(test_upgrade_to_a_copy_changes_only_the_exec) {
  struct aio_proc p = {0};
  char conf[4096], copy[300], out[8192];
  int port = h_free_port(), slow = h_free_port();
  start(&p, conf, sizeof(conf), port, slow);
  copy_binary(p.dir, copy, sizeof(copy));
  pid_t before[2];
  pu_workers(p.pid, before, 2);

  /* A request in progress in an old worker when the exec happens, and a
   * connection that is only open. */
  int busy = h_connect(slow, 5000), idle = h_connect(port, 5000);
  ck_assert_int_ge(busy, 0);
  ck_assert_int_ge(idle, 0);
  ck_assert_int_eq(ops_wait_connections(&p, 2, 5000), 0);
  struct loops l;
  loops_start(&l, port);
  ck_assert_int_eq(loops_more(&l, 20), 0);
  ck_assert_int_eq(h_send(busy, "sleep 700\n", 10), 0);

  ops_expect(&p, 0, out, sizeof(out), "upgrade", copy, NULL);
  char want[400];
  snprintf(want, sizeof(want), "upgraded: generation 2, pid %d, binary %s",
           (int)p.pid, copy);
  ck_assert_msg(strstr(out, want), "no '%s' in: %s", want, out);

  char buf[256];
  int n = h_recv_until(busy, buf, sizeof(buf), "\n", 5000);
  ck_assert_msg(n > 0 && strcmp(buf, "done\n") == 0,
                "the request in flight got %d bytes: '%s'", n, buf);
  /* The draining old workers close what is left, cleanly, and exit. */
  ck_assert_int_eq(h_read_eof(busy, 6000), 0);
  ck_assert_int_eq(h_read_eof(idle, 6000), 0);
  close(busy);
  close(idle);
  ck_assert_int_eq(h_wait_gone(before, 2, 10000), 0);
  ck_assert_int_eq(loops_more(&l, 20), 0);
  loops_stop_no_failure(&l, "an upgrade");

  /* The same process, now running the copy. */
  char exe[64], target[PATH_MAX];
  snprintf(exe, sizeof(exe), "/proc/%d/exe", (int)p.pid);
  ssize_t len = readlink(exe, target, sizeof(target) - 1);
  ck_assert_int_gt(len, 0);
  target[len] = '\0';
  ck_assert_str_eq(target, copy);
  json_t *st, *up = upgrade_info(&p, &st);
  ck_assert_int_eq(ops_int(st, "pid"), p.pid);
  ck_assert_int_eq(ops_int(st, "generation"), 2);
  ck_assert_int_eq(ops_int(up, "upgrades"), 1);
  ck_assert_int_eq(ops_int(up, "failures"), 0);
  ck_assert_str_eq(json_string_value(json_object_get(up, "binary")), copy);
  json_decref(st);
  pid_t after[2];
  pu_workers(p.pid, after, 2);
  ck_assert(!pu_pid_in(after[0], before, 2) && !pu_pid_in(after[1], before, 2));
  pu_assert_served_by(port, after, 2, 6);
  /* One listening socket per worker slot, as before: none was added. */
  ck_assert_int_eq(ops_listeners(port), 2);

  /* And back, by default to the binary it runs from now. */
  ops_expect(&p, 0, out, sizeof(out), "upgrade", NULL);
  ck_assert_msg(strstr(out, "generation 3"), "%s", out);
  h_stop_ok(&p);
}
END_TEST

static void assert_unchanged(const struct aio_proc *p, const pid_t before[2],
                             int port, int failures) {
  pid_t now[2];
  pu_workers(p->pid, now, 2);
  ck_assert_int_eq(now[0], before[0]);
  ck_assert_int_eq(now[1], before[1]);
  pu_assert_served_by(port, before, 2, 6);
  json_t *st, *up = upgrade_info(p, &st);
  ck_assert_int_eq(ops_int(st, "generation"), 1);
  ck_assert_int_eq(ops_int(st, "pid"), p->pid);
  ck_assert_int_eq(ops_int(up, "failures"), failures);
  json_decref(st);
}

START_TEST(test_upgrade_to_a_binary_that_cannot_start_keeps_serving) {
  struct aio_proc p = {0};
  char conf[4096], bin[300], out[8192];
  int port = h_free_port();
  pid_t before[2];
  struct loops l;
  start_loaded(&p, conf, sizeof(conf), port, before, &l);

  /* A binary that exits 1. */
  write_exec(p.dir, "broken", "#!/bin/sh\necho 'broken: no luck' >&2\nexit 1\n",
             bin, sizeof(bin));
  ops_expect(&p, 70, out, sizeof(out), "upgrade", bin, NULL);
  ck_assert_msg(strstr(out, "exited with status 1") &&
                    strstr(out, "broken: no luck"),
                "%s", out);
  assert_unchanged(&p, before, port, 1);

  /* One that is not there. */
  snprintf(bin, sizeof(bin), "%s/nosuch", p.dir);
  ops_expect(&p, 70, out, sizeof(out), "upgrade", bin, NULL);
  ck_assert_msg(strstr(out, "No such file"), "%s", out);
  assert_unchanged(&p, before, port, 2);

  /* One that rejects the configuration, as a binary built without a
   * module's API would. */
  write_exec(p.dir, "strict",
             "#!/bin/sh\necho 'aio.conf:3: not for me' >&2\nexit 78\n", bin,
             sizeof(bin));
  ops_expect(&p, 78, out, sizeof(out), "upgrade", bin, NULL);
  ck_assert_msg(strstr(out, "rejects the configuration"), "%s", out);
  assert_unchanged(&p, before, port, 3);
  ck_assert(h_log_has(&p, "upgrade failed: "));
  ck_assert_int_eq(loops_more(&l, 10), 0);
  loops_stop_no_failure(&l, "three failed upgrades");
  h_stop_ok(&p);
}
END_TEST

/* A new image that passes its check and then cannot serve (here: it runs
 * a configuration whose factory fails) goes back to the old image, which
 * serves again with new workers of its own; the old workers served
 * throughout. */
START_TEST(test_upgrade_goes_back_when_the_new_image_cannot_serve) {
  struct aio_proc p = {0};
  char conf[4096], failing[4096], path[300], bin[300], wrap[2048], out[8192];
  int port = h_free_port();
  pid_t before[2];
  struct loops l;
  start_loaded(&p, conf, sizeof(conf), port, before, &l);
  h_conf(failing, sizeof(failing), "lifemod",
         "workers = 2\nmax_restarts = 1\ncontrol = %s/aio.sock\n", p.dir);
  h_conf_add(failing, sizeof(failing),
             "\n[server:who]\nfactory = lifemod.failing\naddress = "
             "127.0.0.1\nport = %d\n",
             port);
  ck_assert_int_eq(h_write(p.dir, "failing.conf", failing), 0);
  snprintf(path, sizeof(path), "%s/failing.conf", p.dir);
  snprintf(wrap, sizeof(wrap),
           "#!/bin/sh\ncase \"$*\" in *check*) exec '%s' \"$@\";; esac\n"
           "exec '%s' -c '%s' run\n",
           AIO_BIN, AIO_BIN, path);
  write_exec(p.dir, "wrapped", wrap, bin, sizeof(bin));

  ops_expect(&p, 70, out, sizeof(out), "upgrade", bin, NULL);
  ck_assert_msg(strstr(out, "max_restarts"), "%s", out);
  ck_assert(h_log_has(&p, "going back to"));
  json_t *st,
      *up = assert_switched(&p, before, &l, "an upgrade that went back", &st);
  ck_assert_int_eq(ops_int(up, "failures"), 1);
  ck_assert_str_eq(json_string_value(json_object_get(up, "binary")), AIO_BIN);
  ck_assert_ptr_nonnull(
      strstr(json_string_value(json_object_get(up, "last_error")), bin));
  json_decref(st);
  pid_t after[2];
  pu_workers(p.pid, after, 2);
  pu_assert_served_by(port, after, 2, 6);
  h_stop_ok(&p);
}
END_TEST

START_TEST(test_sigusr2_upgrades_like_aio_upgrade) {
  struct aio_proc p = {0};
  char conf[4096];
  int port = h_free_port();
  pid_t before[2];
  struct loops l;
  start_loaded(&p, conf, sizeof(conf), port, before, &l);
  ck_assert_int_eq(kill(p.pid, SIGUSR2), 0);
  if (h_wait_log(&p, "upgraded: generation 2", 10000)) {
    h_dump_log(&p);
    ck_abort_msg("SIGUSR2 did not upgrade");
  }
  json_t *st, *up = assert_switched(&p, before, &l, "SIGUSR2", &st);
  ck_assert_int_eq(ops_int(st, "generation"), 2);
  ck_assert_int_eq(ops_int(up, "upgrades"), 1);
  json_decref(st);

  /* The binary it runs from replaced by one that cannot start (as a
   * botched install would): SIGUSR2 says so in the log and changes
   * nothing. */
  char copy[300], bad[300], out[4096];
  copy_binary(p.dir, copy, sizeof(copy));
  ops_expect(&p, 0, out, sizeof(out), "upgrade", copy, NULL);
  write_exec(p.dir, "broken", "#!/bin/sh\nexit 3\n", bad, sizeof(bad));
  ck_assert_int_eq(rename(bad, copy), 0);
  pu_workers(p.pid, before, 2);
  ck_assert_int_eq(kill(p.pid, SIGUSR2), 0);
  if (h_wait_log(&p, "SIGUSR2: not upgraded", 10000)) {
    h_dump_log(&p);
    ck_abort_msg("no report of the failed SIGUSR2 upgrade");
  }
  ck_assert(h_log_has(&p, "exited with status 3"));
  pid_t now[2];
  pu_workers(p.pid, now, 2);
  ck_assert_int_eq(now[0], before[0]);
  ck_assert_int_eq(now[1], before[1]);
  pu_assert_served_by(port, now, 2, 6);
  h_stop_ok(&p);
}
END_TEST

/* What an old worker writes after the exec still reaches the log, as its
 * own: here the line it leaves unfinished until it exits. */
START_TEST(test_upgrade_keeps_the_old_workers_output) {
  struct aio_proc p = {0};
  char conf[4096], out[4096], buf[128];
  int port = h_free_port();
  h_tmpdir(p.dir, sizeof(p.dir));
  h_conf(conf, sizeof(conf), "outmod",
         "workers = 1\ngraceful_timeout = 5\ncontrol = %s/aio.sock\n", p.dir);
  h_conf_server(conf, sizeof(conf), "say", "outmod.say", port);
  h_start_ready(&p, conf, &(struct h_opts){.dir = p.dir});
  int fd = h_connect(port, 5000);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(h_send(fd, "last:handed\n", 12), 0);
  ck_assert_int_gt(h_recv_until(fd, buf, sizeof(buf), "\n", 5000), 0);
  pid_t old = (pid_t)atoi(buf + 3);
  ck_assert_int_gt(old, 0);
  ops_expect(&p, 0, out, sizeof(out), "upgrade", NULL);
  ck_assert_int_eq(h_read_eof(fd, 6000), 0);
  close(fd);
  ck_assert_int_eq(h_wait_gone(&old, 1, 10000), 0);
  char want[64];
  snprintf(want, sizeof(want), "[worker 0 %d] stdout: tail handed", (int)old);
  if (h_wait_log(&p, want, 5000)) {
    h_dump_log(&p);
    ck_abort_msg("no '%s' in the log", want);
  }
  h_stop_ok(&p);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("ops_upgrade");
  TCase *tc = tcase_create("upgrade");
  tcase_set_timeout(tc, 90);
  tcase_add_test(tc, test_upgrade_to_a_copy_changes_only_the_exec);
  tcase_add_test(tc, test_upgrade_to_a_binary_that_cannot_start_keeps_serving);
  tcase_add_test(tc, test_upgrade_goes_back_when_the_new_image_cannot_serve);
  tcase_add_test(tc, test_sigusr2_upgrades_like_aio_upgrade);
  tcase_add_test(tc, test_upgrade_keeps_the_old_workers_output);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
