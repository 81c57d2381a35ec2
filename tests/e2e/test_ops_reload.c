/*
 * test_ops_reload.c - `aio reload` and SIGHUP against a real master: a
 * broken configuration keeps the old workers serving and is reported with
 * FILE:LINE; a changed port moves; an unchanged port answers throughout; a
 * rebuilt module is picked up; a new worker count applies.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
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

/* A config serving testmod.whoami ("pid N") on 127.0.0.1:port. */
static void conf_whoami(char *out, size_t n, int workers, int port) {
  h_conf(out, n, "testmod", "workers = %d\ngraceful_timeout = 5\n", workers);
  h_conf_server(out, n, "who", "testmod.whoami", port);
}

/* The line number the next line appended to text would have. */
static int next_line(const char *text) {
  int line = 1;
  for (const char *c = text; *c; c++)
    line += *c == '\n';
  return line;
}

/* Start with 2 workers serving whoami on a free port (conf gets the
 * config); before gets the workers, sorted. Returns the port. */
static int start_two(struct aio_proc *p, char *conf, size_t n,
                     pid_t before[2]) {
  int port = h_free_port();
  conf_whoami(conf, n, 2, port);
  h_start_ready(p, conf, NULL);
  pu_workers(p->pid, before, 2);
  return port;
}

static void assert_same_workers(const struct aio_proc *p, const pid_t before[2],
                                int port) {
  pid_t now[2];
  pu_workers(p->pid, now, 2);
  ck_assert_int_eq(now[0], before[0]);
  ck_assert_int_eq(now[1], before[1]);
  pu_assert_served_by(port, before, 2, 8);
}

START_TEST(test_reload_keeps_old_workers_on_bad_config) {
  struct aio_proc p = {0};
  char conf[4096], bad[4096];
  pid_t before[2];
  int port = start_two(&p, conf, sizeof(conf), before);

  /* A symbol the module does not have: only the probe child can tell. */
  int line = next_line(conf) + 2; /* the protocol line */
  conf_whoami(bad, sizeof(bad), 2, port);
  h_conf_server(bad, sizeof(bad), "bad", "testmod.nosuch", h_free_port());
  ops_rewrite(&p, bad);
  char out[8192], where[64];
  snprintf(where, sizeof(where), "aio.conf:%d:", line);
  ops_expect(&p, 78, out, sizeof(out), "reload", NULL);
  ck_assert_msg(strstr(out, where) && strstr(out, "nosuch"),
                "no %s ... nosuch in: %s", where, out);
  ck_assert_msg(h_log_has(&p, where), "the log does not name %s", where);
  ck_assert(h_log_has(&p, "reload failed"));
  assert_same_workers(&p, before, port);

  json_t *st = ops_status(&p);
  ck_assert_int_eq(ops_int(st, "generation"), 1);
  ck_assert_int_eq(ops_int(st, "reloads"), 0);
  json_decref(st);
  h_stop_ok(&p);
}
END_TEST

START_TEST(test_sighup_keeps_old_workers_on_bad_config) {
  struct aio_proc p = {0};
  char conf[4096];
  pid_t before[2];
  int port = start_two(&p, conf, sizeof(conf), before);

  /* A syntax error this time: the master's own parse catches it. */
  char bad[4200], where[64];
  int line = next_line(conf);
  snprintf(bad, sizeof(bad), "%sthis line is not INI\n", conf);
  ops_rewrite(&p, bad);
  snprintf(where, sizeof(where), "aio.conf:%d:", line);
  ck_assert_int_eq(kill(p.pid, SIGHUP), 0);
  if (h_wait_log(&p, "SIGHUP: not reloaded", 10000) != 0) {
    h_dump_log(&p);
    ck_abort_msg("no report of the failed SIGHUP reload");
  }
  ck_assert_msg(h_log_has(&p, where), "the log does not name %s", where);
  assert_same_workers(&p, before, port);

  /* Fixed, the next SIGHUP reloads. */
  ops_rewrite(&p, conf);
  ck_assert_int_eq(kill(p.pid, SIGHUP), 0);
  ck_assert_int_eq(h_wait_log(&p, "reloaded: generation 2", 10000), 0);
  ck_assert_int_eq(h_wait_gone(before, 2, 10000), 0);
  pid_t w = pu_ask_pid(port);
  ck_assert(!pu_pid_in(w, before, 2));
  h_stop_ok(&p);
}
END_TEST

START_TEST(test_reload_moves_a_changed_port) {
  struct aio_proc p = {0};
  char conf[4096];
  int port1 = h_free_port(), port2 = h_free_port();
  while (port2 == port1)
    port2 = h_free_port();
  conf_whoami(conf, sizeof(conf), 2, port1);
  h_start_ready(&p, conf, NULL);
  pid_t before[2];
  pu_workers(p.pid, before, 2);
  pu_ask_pid(port1);

  conf_whoami(conf, sizeof(conf), 2, port2);
  ops_rewrite(&p, conf);
  char out[4096];
  ops_expect(&p, 0, out, sizeof(out), "reload", NULL);
  ck_assert_ptr_nonnull(strstr(out, "generation 2"));
  pid_t w = pu_ask_pid(port2);
  ck_assert(!pu_pid_in(w, before, 2));

  /* The old port closes with the old generation. */
  ck_assert_int_eq(h_wait_gone(before, 2, 10000), 0);
  long long deadline = h_now_ms() + 5000;
  char buf[256];
  int r;
  while ((r = h_exchange_once(port1, "who\n", "\n", buf, sizeof(buf), 2000)) !=
             H_REFUSED &&
         h_now_ms() < deadline)
    usleep(10000);
  ck_assert_msg(r == H_REFUSED, "old port %d: %s", port1, h_result_name(r));
  ck_assert_int_eq(ops_listeners(port1), 0);
  pu_ask_pid(port2);
  h_stop_ok(&p);
}
END_TEST

/* ---- a client loop across a reload -------------------------------------- */

struct client_loop {
  int port;
  _Atomic int stop;
  _Atomic int done; /* exchanges that answered */
  int failed;
  int first_failure; /* H_* of the first failure */
  long long deadline;
};

static void *client_loop_run(void *arg) {
  struct client_loop *c = arg;
  char buf[256];
  while (!c->stop && h_now_ms() < c->deadline) {
    int r = h_exchange_once(c->port, "who\n", "\n", buf, sizeof(buf), 5000);
    if (r == H_OK) {
      c->done++;
    } else if (c->failed++ == 0) {
      c->first_failure = r;
    }
  }
  return NULL;
}

static int wait_done(struct client_loop *c, int n, int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  while (c->done < n && h_now_ms() < deadline)
    usleep(5000);
  return c->done >= n ? 0 : -1;
}

START_TEST(test_reload_keeps_an_unchanged_port_answering) {
  struct aio_proc p = {0};
  char conf[4096];
  int port = h_free_port();
  conf_whoami(conf, sizeof(conf), 2, port);
  h_start_ready(&p, conf, NULL);

  /* Three clients in a loop; three reloads, each a real change (a server
   * beside ours comes and goes) that keeps our address. */
  enum { NCLIENTS = 3, NRELOADS = 3 };
  struct client_loop c[NCLIENTS];
  pthread_t t[NCLIENTS];
  for (int i = 0; i < NCLIENTS; i++) {
    c[i] = (struct client_loop){.port = port, .deadline = h_now_ms() + 60000};
    ck_assert_int_eq(pthread_create(&t[i], NULL, client_loop_run, &c[i]), 0);
  }
  for (int i = 0; i < NCLIENTS; i++)
    ck_assert_int_eq(wait_done(&c[i], 10, 10000), 0);
  int rc = 0, gone = 0;
  char out[4096] = "";
  for (int r = 0; r < NRELOADS && rc == 0 && gone == 0; r++) {
    pid_t before[2];
    pu_workers(p.pid, before, 2);
    conf_whoami(conf, sizeof(conf), 2, port);
    if (r % 2 == 0)
      h_conf_server(conf, sizeof(conf), "more", "aio.echo", h_free_port());
    ops_rewrite(&p, conf);
    int done0 = c[0].done;
    rc = ops_aio(&p, out, sizeof(out), "reload", NULL);
    gone = h_wait_gone(before, 2, 15000);
    /* Every client goes on being answered after the old ones left. */
    for (int i = 0; i < NCLIENTS; i++)
      wait_done(&c[i], c[i].done + 10, 10000);
    ck_assert_int_gt(c[0].done, done0);
  }
  int failed = 0, done = 0, first = H_OK;
  for (int i = 0; i < NCLIENTS; i++) {
    c[i].stop = 1;
    pthread_join(t[i], NULL);
    if (c[i].failed && !failed)
      first = c[i].first_failure;
    failed += c[i].failed;
    done += c[i].done;
  }
  ck_assert_msg(rc == 0, "aio reload exited %d: %s", rc, out);
  ck_assert_int_eq(gone, 0);
  ck_assert_msg(failed == 0,
                "%d of %d exchanges failed across %d reloads (first: %s)",
                failed, failed + done, NRELOADS, h_result_name(first));
  json_t *st = ops_status(&p);
  ck_assert_int_eq(ops_int(st, "generation"), 1 + NRELOADS);
  json_decref(st);
  h_stop_ok(&p);
}
END_TEST

START_TEST(test_reload_lets_old_workers_finish_their_requests) {
  struct aio_proc p = {0};
  char conf[4096];
  int port = h_free_port(), slow = h_free_port();
  conf_whoami(conf, sizeof(conf), 2, port);
  h_conf_server(conf, sizeof(conf), "slow", "testmod.slow", slow);
  h_start_ready(&p, conf, NULL);
  pid_t before[2];
  pu_workers(p.pid, before, 2);

  /* A request in progress in an old worker when the reload switches. */
  int fd = h_connect(slow, 5000);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(ops_wait_connections(&p, 1, 5000), 0); /* an old one's */
  ck_assert_int_eq(h_send(fd, "sleep 700\n", 10), 0);
  char out[4096];
  ops_expect(&p, 0, out, sizeof(out), "reload", NULL);
  char buf[256];
  int n = h_recv_until(fd, buf, sizeof(buf), "\n", 5000);
  ck_assert_msg(n > 0 && strcmp(buf, "done\n") == 0,
                "the request in flight got %d bytes: '%s'", n, buf);
  /* Then the draining worker closes the idle connection and exits. */
  ck_assert_int_eq(h_read_eof(fd, 5000), 0);
  close(fd);
  ck_assert_int_eq(h_wait_gone(before, 2, 10000), 0);
  ck_assert(!pu_pid_in(pu_ask_pid(port), before, 2));
  h_stop_ok(&p);
}
END_TEST

/* ---- a rebuilt module ------------------------------------------------- */

static void copy_file(const char *from, const char *to) {
  FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
  ck_assert_msg(in && out, "cannot copy %s to %s", from, to);
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
    ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
  fclose(in);
  ck_assert_int_eq(fclose(out), 0);
}

static void ask_version(int port, const char *want) {
  char buf[256];
  int r = h_exchange_once(port, "version?\n", "\n", buf, sizeof(buf), 5000);
  ck_assert_msg(r == H_OK, "port %d: %s", port, h_result_name(r));
  ck_assert_str_eq(buf, want);
}

START_TEST(test_reload_picks_up_a_rebuilt_module) {
  struct aio_proc p = {0};
  char mods[256], so[300], tmp[300], conf[2048];
  h_tmpdir(p.dir, sizeof(p.dir));
  snprintf(mods, sizeof(mods), "%s/mods", p.dir);
  ck_assert_int_eq(mkdir(mods, 0755), 0);
  snprintf(so, sizeof(so), "%s/opsmod.so", mods);
  snprintf(tmp, sizeof(tmp), "%s/.opsmod.so.tmp", mods);
  copy_file(OPS_MODULE_V1, so);
  int port = h_free_port();
  snprintf(conf, sizeof(conf),
           "[aio]\n"
           "modules = opsmod\n"
           "module_path = mods   ; relative to this file\n"
           "workers = 2\n"
           "graceful_timeout = 5\n"
           "\n"
           "[server:version]\n"
           "protocol = opsmod.version\n"
           "address = 127.0.0.1\n"
           "port = %d\n",
           port);
  h_start_ready(&p, conf, &(struct h_opts){.dir = p.dir});
  ask_version(port, "v1\n");
  pid_t before[2];
  pu_workers(p.pid, before, 2);

  /* As a build does it: write beside, rename over. */
  copy_file(OPS_MODULE_V2, tmp);
  ck_assert_int_eq(rename(tmp, so), 0);
  ask_version(port, "v1\n"); /* nothing changes before the reload */
  char out[4096];
  ops_expect(&p, 0, out, sizeof(out), "reload", NULL);
  ck_assert_int_eq(h_wait_gone(before, 2, 10000), 0);
  for (int i = 0; i < 6; i++)
    ask_version(port, "v2\n");
  h_stop_ok(&p);
}
END_TEST

START_TEST(test_reload_applies_a_new_worker_count) {
  struct aio_proc p = {0};
  char conf[4096];
  pid_t before[2];
  int port = start_two(&p, conf, sizeof(conf), before);

  conf_whoami(conf, sizeof(conf), 3, port);
  ops_rewrite(&p, conf);
  char out[4096];
  ops_expect(&p, 0, out, sizeof(out), "reload", NULL);
  ck_assert_int_eq(h_wait_gone(before, 2, 10000), 0);
  ck_assert_int_eq(pu_wait_live_children(p.pid, 3, 10000), 0);
  /* The old workers have exited, and the master lists them until it has
   * reaped them (its next loop turn, on a loaded machine a while later). */
  json_t *st = ops_status(&p);
  for (long long until = h_now_ms() + 10000;
       json_array_size(json_object_get(st, "procs")) != 3 && h_now_ms() < until;
       usleep(20000)) {
    json_decref(st);
    st = ops_status(&p);
  }
  ck_assert_int_eq(ops_int(st, "workers"), 3);
  ck_assert_int_eq(json_array_size(json_object_get(st, "procs")), 3);
  json_decref(st);
  pu_ask_pid(port);

  pid_t three[3];
  ck_assert_int_eq(pu_live_children(p.pid, three, 3), 3);
  conf_whoami(conf, sizeof(conf), 1, port);
  ops_rewrite(&p, conf);
  ops_expect(&p, 0, out, sizeof(out), "reload", NULL);
  ck_assert_int_eq(h_wait_gone(three, 3, 10000), 0);
  ck_assert_int_eq(pu_wait_live_children(p.pid, 1, 10000), 0);
  st = ops_status(&p);
  ck_assert_int_eq(ops_int(st, "workers"), 1);
  ck_assert_int_eq(ops_int(st, "generation"), 3);
  ck_assert_int_eq(ops_int(st, "reloads"), 2);
  json_decref(st);
  for (int i = 0; i < 4; i++)
    pu_ask_pid(port);
  h_stop_ok(&p);
}
END_TEST

/* ---- reloads that cannot finish ----------------------------------------- */

/* opsmod.ident ("pid N uid U") on port, with an [opsmod] section. */
static void conf_ident(char *out, size_t n, int port, const char *opsmod) {
  h_conf(out, n, "opsmod", "workers = 2\ngraceful_timeout = 5\n");
  h_conf_add(out, n, "\n[opsmod]\n%s", opsmod);
  h_conf_server(out, n, "ident", "opsmod.ident", port);
}

START_TEST(test_reload_fails_when_new_workers_cannot_start) {
  struct aio_proc p = {0};
  char conf[4096], out[4096];
  int port = h_free_port();
  conf_ident(conf, sizeof(conf), port, "");
  h_start_ready(&p, conf, NULL);
  pid_t before[2];
  pu_workers(p.pid, before, 2);

  /* Valid, but every new worker's module init fails. */
  conf_ident(conf, sizeof(conf), port, "init_fail = yes\n");
  ops_rewrite(&p, conf);
  ops_expect(&p, 70, out, sizeof(out), "reload", NULL);
  ck_assert_msg(strstr(out, "before it was ready"), "%s", out);
  ck_assert(h_log_has(&p, "reload failed"));
  assert_same_workers(&p, before, port);

  /* A port someone else holds: the address is unavailable. */
  int busy_port = 0;
  int busy = h_listen_tcp(&busy_port, 0);
  ck_assert_int_ge(busy, 0);
  conf_ident(conf, sizeof(conf), port, "");
  h_conf_server(conf, sizeof(conf), "taken", "aio.echo", busy_port);
  ops_rewrite(&p, conf);
  int rc = ops_aio(&p, out, sizeof(out), "reload", NULL);
  close(busy);
  ck_assert_msg(rc == 69, "aio reload onto a taken port exited %d: %s", rc,
                out);
  assert_same_workers(&p, before, port);

  json_t *st = ops_status(&p);
  ck_assert_int_eq(ops_int(st, "generation"), 1);
  json_decref(st);
  conf_ident(conf, sizeof(conf), port, "");
  ops_rewrite(&p, conf);
  ops_expect(&p, 0, out, sizeof(out), "reload", NULL);
  h_stop_ok(&p);
}
END_TEST

/* Start, then begin a reload whose new workers take init_ms to be ready;
 * returns the pid of the `aio reload` in flight. */
static pid_t start_slow_reload(struct aio_proc *p, int port,
                               const char *out_path) {
  char conf[4096];
  conf_ident(conf, sizeof(conf), port, "");
  h_start_ready(p, conf, &(struct h_opts){.dir = p->dir});
  conf_ident(conf, sizeof(conf), port, "init_ms = 1500\n");
  ops_rewrite(p, conf);
  pid_t r = ops_aio_async(p, out_path, "reload", NULL);
  ck_assert_int_gt(r, 0);
  if (h_wait_log(p, "generation 2)", 10000) != 0) {
    h_dump_log(p);
    ck_abort_msg("the reload did not start its workers");
  }
  return r;
}

/* A second reload in flight is queued (test_e2e_lifecycle covers what it
 * loads); a scale is refused until the reload is over. */
START_TEST(test_reload_queues_a_second_reload_in_flight) {
  struct aio_proc p = {0};
  char out[4096], first_out[256], second_out[256];
  int port = h_free_port();
  h_tmpdir(p.dir, sizeof(p.dir));
  snprintf(first_out, sizeof(first_out), "%s/first.out", p.dir);
  snprintf(second_out, sizeof(second_out), "%s/second.out", p.dir);
  pid_t first = start_slow_reload(&p, port, first_out);
  pid_t second = ops_aio_async(&p, second_out, "reload", NULL);
  if (h_wait_log(&p, "during a reload: queued", 10000) != 0) {
    h_dump_log(&p);
    ck_abort_msg("the second reload was not queued");
  }
  ops_expect(&p, 75, out, sizeof(out), "scale", "3", NULL);
  json_t *st = ops_status(&p);
  ck_assert(json_is_true(json_object_get(st, "reloading")));
  ck_assert(json_is_true(json_object_get(st, "reload_queued")));
  json_decref(st);
  int rc = h_aio_wait(first, 20000);
  char *o = h_slurp(first_out);
  ck_assert_msg(rc == 0 && strstr(o, "generation 2"),
                "the first aio reload exited %d: %s", rc, o);
  free(o);
  rc = h_aio_wait(second, 20000);
  o = h_slurp(second_out);
  ck_assert_msg(rc == 0 && strstr(o, "generation 3"),
                "the second aio reload exited %d: %s", rc, o);
  free(o);
  st = ops_status(&p);
  ck_assert_int_eq(ops_int(st, "generation"), 3);
  ck_assert(json_is_false(json_object_get(st, "reloading")));
  json_decref(st);
  h_stop_ok(&p);
}
END_TEST

START_TEST(test_term_during_a_reload_stops_without_switching) {
  struct aio_proc p = {0};
  char reload_out[256];
  int port = h_free_port();
  h_tmpdir(p.dir, sizeof(p.dir));
  snprintf(reload_out, sizeof(reload_out), "%s/reload.out", p.dir);
  pid_t r = start_slow_reload(&p, port, reload_out);
  long long t0 = h_now_ms();
  h_stop_ok(&p);
  ck_assert_int_lt(h_now_ms() - t0, 10000);
  int rc = h_aio_wait(r, 10000);
  char *o = h_slurp(reload_out);
  ck_assert_msg(rc == 75, "aio reload cut short by TERM exited %d: %s", rc, o);
  ck_assert_msg(strstr(o, "shutting down"), "%s", o);
  free(o);
  if (h_log_has(&p, "reloaded: generation 2")) {
    h_dump_log(&p);
    ck_abort_msg("the master switched generations while stopping");
  }
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_ops_reload");
  TCase *tc = tcase_create("reload");
  tcase_set_timeout(tc, 90);
  tcase_add_test(tc, test_reload_keeps_old_workers_on_bad_config);
  tcase_add_test(tc, test_sighup_keeps_old_workers_on_bad_config);
  tcase_add_test(tc, test_reload_moves_a_changed_port);
  tcase_add_test(tc, test_reload_keeps_an_unchanged_port_answering);
  tcase_add_test(tc, test_reload_lets_old_workers_finish_their_requests);
  tcase_add_test(tc, test_reload_picks_up_a_rebuilt_module);
  tcase_add_test(tc, test_reload_applies_a_new_worker_count);
  tcase_add_test(tc, test_reload_fails_when_new_workers_cannot_start);
  tcase_add_test(tc, test_reload_queues_a_second_reload_in_flight);
  tcase_add_test(tc, test_term_during_a_reload_stops_without_switching);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
