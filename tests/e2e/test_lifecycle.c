/*
 * test_lifecycle.c - the master's process lifecycle under hostile
 * conditions (issue 12): a worker that cannot be started for a transient
 * reason (the master out of file descriptors) is retried until it comes
 * back; a first start that cannot succeed (init fails or crashes, a
 * factory fails, init hangs past start_timeout) ends `aio run` with 70
 * instead of a master serving nothing; a running service that loses its
 * last worker to a crash loop says so and retries slowly until the cause
 * goes away; HUPs that arrive during a reload (or the start) are
 * coalesced into one more reload instead of being thrown away.
 */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "check_main.h"
#include "ops_util.h"
#include "process_util.h"

/* How long the tests wait for a start that cannot succeed to be given up.
 * aio gives up after max_restarts = 5 crashes of each slot (1.5 s of
 * backoff, plus the crashes: each one over a second under ASan on a
 * loaded machine, so no time bound is a promise). Half the default
 * start_timeout: the reason (max_restarts, see GAVE_UP) tells a crash loop
 * given up from a start that waited for its timeout. */
#define GIVE_UP_MS 30000
#define GAVE_UP "times in 60 s, max_restarts = 5)"

/* Open descriptors of pid, from /proc. */
static int fd_count(pid_t pid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
  DIR *d = opendir(path);
  if (d == NULL)
    return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

/* The milliseconds of the day of the log line at line (its
 * "YYYY-MM-DD HH:MM:SS.mmm" prefix), or -1. */
static long long line_ms(const char *line) {
  int h, mi, s, ms;
  if (sscanf(line, "%*d-%*d-%*d %d:%d:%d.%d", &h, &mi, &s, &ms) != 4)
    return -1;
  return ((h * 60LL + mi) * 60 + s) * 1000 + ms;
}

/* The times (ms of the day) of the log lines holding s, up to max. */
static int log_times(const struct aio_proc *p, const char *s, long long *out,
                     int max) {
  char *log = h_slurp(p->log);
  int n = 0;
  for (char *q = log; n < max && (q = strstr(q, s)) != NULL; q += strlen(s)) {
    char *bol = q;
    while (bol > log && bol[-1] != '\n')
      bol--;
    out[n++] = line_ms(bol);
  }
  free(log);
  return n;
}

/* Wait until the log holds s at least n times. 0 or -1. */
static int wait_log_count(const struct aio_proc *p, const char *s, int n,
                          int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  while (h_log_count(p, s) < n)
    if (h_now_ms() > deadline)
      return -1;
    else
      usleep(10000);
  return 0;
}

/* Wait until `aio status` says n workers serve. 0 or -1. */
static int wait_serving(const struct aio_proc *p, json_int_t n,
                        int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  for (;;) {
    json_t *st = ops_status(p);
    json_int_t serving = ops_int(st, "serving");
    json_decref(st);
    if (serving == n)
      return 0;
    if (h_now_ms() > deadline)
      return -1;
    usleep(20000);
  }
}

static void expect_log(const struct aio_proc *p, const char *s,
                       int timeout_ms) {
  if (h_wait_log(p, s, timeout_ms) != 0) {
    h_dump_log(p);
    ck_abort_msg("no \"%s\" in the log", s);
  }
}

/* The last bytes of the log hold s: the reason is where an operator who
 * reads `journalctl -n` or `tail` looks. */
static void assert_log_tail_has(const struct aio_proc *p, const char *s) {
  char *log = h_slurp(p->log);
  size_t n = strlen(log);
  const char *tail = n > 2048 ? log + n - 2048 : log;
  int found = strstr(tail, s) != NULL;
  if (!found)
    h_dump_log(p);
  free(log);
  ck_assert_msg(found, "\"%s\" is not in the last lines of the log", s);
}

/* Nothing listens on port any more, and it can be bound again. */
static void assert_port_free(int port) {
  ck_assert_int_eq(ops_listeners(port), 0);
  int again = port;
  int fd = h_listen_tcp(&again, 0);
  ck_assert_msg(fd >= 0, "port %d cannot be bound after aio exited", port);
  close(fd);
}

/* A datagram socket standing in for systemd's notify socket, in a fresh
 * p->dir, and the h_opts that give its NOTIFY_SOCKET to aio there. */
struct notify {
  int fd;
  char env[300];
  const char *envv[2];
  struct h_opts opts;
};

static void notify_open(struct notify *n, struct aio_proc *p) {
  char path[256];
  h_tmpdir(p->dir, sizeof(p->dir));
  snprintf(path, sizeof(path), "%s/notify.sock", p->dir);
  n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  ck_assert_uint_lt(strlen(path), sizeof(sun.sun_path));
  memcpy(sun.sun_path, path, strlen(path) + 1);
  ck_assert_int_eq(bind(n->fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
  snprintf(n->env, sizeof(n->env), "NOTIFY_SOCKET=%s", path);
  n->envv[0] = n->env;
  n->envv[1] = NULL;
  n->opts = (struct h_opts){.dir = p->dir, .env = n->envv};
}

/* The datagrams waiting on fd, one per line, into all (n bytes). */
static void notify_collect(int fd, char *all, size_t n) {
  size_t len = 0;
  ssize_t r;
  all[0] = '\0';
  while (len + 2 < n && (r = recv(fd, all + len, n - len - 2, 0)) > 0) {
    len += (size_t)r;
    all[len++] = '\n';
    all[len] = '\0';
  }
}

/* Does a datagram waiting on fd hold s? */
static int notify_seen(int fd, const char *s) {
  char all[16384];
  notify_collect(fd, all, sizeof(all));
  return strstr(all, s) != NULL;
}

/* ---- 1. a transient failure to start a worker ------------------------- */

START_TEST(test_start_failure_before_fork_is_retried_until_it_passes) {
  struct aio_proc p = {0};
  char conf[4096], ctl[256];
  int port = h_free_port();
  h_tmpdir(p.dir, sizeof(p.dir));
  snprintf(ctl, sizeof(ctl), "%s/ctl.sock", p.dir);
  h_conf(conf, sizeof(conf), "testmod",
         "workers = 2\ngraceful_timeout = 2\ncontrol = %s\n", ctl);
  h_conf_server(conf, sizeof(conf), "who", "testmod.whoami", port);
  /* The master's limit, soft and hard (so aio cannot raise it), set in the
   * shell that execs it: low enough that the control connections the
   * master accepts (at most 64, docs/operations.md) fill it. */
  enum { LIMIT = 64 };
  struct h_opts o = {.dir = p.dir, .shell = "ulimit -n 64 && "};
  h_start_ready(&p, conf, &o);
  pid_t kids[2];
  pu_workers(p.pid, kids, 2);

  /* Fill the master's descriptor table with control connections it
   * accepts (libuv closes those it cannot accept). */
  static int held[200];
  int nheld = 0;
  while (nheld < 200) {
    int fd = h_connect_unix(ctl, 2000);
    if (fd < 0)
      break;
    held[nheld++] = fd;
  }
  long long deadline = h_now_ms() + 5000;
  while (fd_count(p.pid) < LIMIT && h_now_ms() < deadline)
    usleep(10000);
  ck_assert_msg(fd_count(p.pid) >= LIMIT, "the master holds %d fds, not %d",
                fd_count(p.pid), LIMIT);

  ck_assert_int_eq(kill(kids[0], SIGKILL), 0);
  /* Retried, not given up: the failure is logged again. */
  if (wait_log_count(&p, "cannot start: Too many open files", 2, 10000)) {
    h_dump_log(&p);
    ck_abort_msg("the failed start was not retried");
  }
  for (int i = 0; i < nheld; i++)
    close(held[i]);

  /* The cause gone, the slot comes back. */
  if (pu_wait_live_children(p.pid, 2, 15000) != 0) {
    h_dump_log(&p);
    ck_abort_msg("the slot did not come back once the fds were freed");
  }
  ck_assert_int_eq(wait_serving(&p, 2, 10000), 0);
  pid_t now[2];
  pu_workers(p.pid, now, 2);
  pu_assert_served_by(port, now, 2, 6);
  json_t *st = ops_status(&p);
  ck_assert_int_ge(ops_int(st, "start_failures"), 2);
  ck_assert_int_eq(ops_int(st, "serving"), 2);
  json_t *slots = json_object_get(st, "slots");
  ck_assert_int_eq(json_array_size(slots), 2);
  json_int_t sum = 0;
  size_t i;
  json_t *s;
  json_array_foreach(slots, i, s) {
    ck_assert_str_eq(json_string_value(json_object_get(s, "state")), "running");
    sum += ops_int(s, "start_failures");
  }
  ck_assert_int_eq(sum, ops_int(st, "start_failures"));
  json_decref(st);
  char out[8192];
  ops_expect(&p, 0, out, sizeof(out), "status", NULL);
  ck_assert_msg(strstr(out, "failed starts of a worker"), "%s", out);
  h_stop_ok(&p);
}
END_TEST

/* ---- 2. a start that cannot succeed ------------------------------------ */

/* Start conf and expect aio run to exit 70, given up after the crash
 * loop, with reason in the last lines of its log and the port free
 * again. */
static void expect_start_fails(struct aio_proc *p, const char *conf,
                               const struct h_opts *o, int port,
                               const char *reason) {
  ck_assert_int_eq(h_start(p, conf, o), 0);
  if (h_wait_exit(p, GIVE_UP_MS) != 0) {
    h_dump_log(p);
    h_stop(p, SIGKILL, 2000);
    ck_abort_msg("aio run did not exit after a start that cannot succeed");
  }
  h_assert_exit_status(p, 70);
  assert_log_tail_has(p, reason);
  assert_log_tail_has(p, "start failed");
  assert_log_tail_has(p, GAVE_UP);
  ck_assert(!h_log_has(p, "the other workers keep serving"));
  assert_port_free(port);
}

/* 2 workers of modules serving [server:s] (handler: its protocol or
 * factory line) on a free port, then extra: aio run fails with reason. */
static void check_start_fails(const char *modules, const char *handler,
                              const char *extra, const char *reason) {
  struct aio_proc p = {0};
  char conf[4096];
  int port = h_free_port();
  h_conf(conf, sizeof(conf), modules, "workers = 2\n");
  h_conf_add(conf, sizeof(conf),
             "\n[server:s]\n%s\naddress = 127.0.0.1\nport = %d\n%s", handler,
             port, extra);
  expect_start_fails(&p, conf, NULL, port, reason);
}

/* The same config with opsmod's failing init and the [aio] lines
 * aio_extra, for the tests that start it themselves. */
static void conf_init_fails(char *conf, size_t n, int port,
                            const char *aio_extra) {
  h_conf(conf, n, "opsmod", "workers = 2\n%s", aio_extra);
  h_conf_server(conf, n, "v", "opsmod.version", port);
  h_conf_add(conf, n, "\n[opsmod]\ninit_fail = yes\n");
}

START_TEST(test_start_fails_when_init_fails) {
  check_start_fails("opsmod", "protocol = opsmod.version",
                    "\n[opsmod]\ninit_fail = yes\n", "init failed");
}
END_TEST

START_TEST(test_start_fails_when_init_crashes) {
  /* SIGSEGV, or SIGABRT where ASan catches it first. */
  check_start_fails("testmod lifemod", "protocol = testmod.whoami",
                    "\n[lifemod]\ninit = crash\n", "killed by signal");
}
END_TEST

START_TEST(test_start_fails_when_a_factory_fails) {
  check_start_fails("lifemod", "factory = lifemod.failing", "",
                    "factory lifemod.failing failed");
}
END_TEST

/* systemd's side: no READY=1, the reason in STATUS=, exit 70. */
START_TEST(test_failed_start_under_systemd_is_not_ready) {
  struct aio_proc p = {0};
  struct notify nt;
  char conf[4096];
  int port = h_free_port();
  notify_open(&nt, &p);
  conf_init_fails(conf, sizeof(conf), port, "");
  expect_start_fails(&p, conf, &nt.opts, port, "init failed");
  char all[16384];
  notify_collect(nt.fd, all, sizeof(all));
  close(nt.fd);
  int ready = strstr(all, "READY=1") != NULL;
  int status = strstr(all, "STATUS=start failed") != NULL;
  ck_assert_msg(!ready, "READY=1 sent for a start that failed");
  ck_assert_msg(status, "no STATUS=start failed");
}
END_TEST

START_TEST(test_daemon_returns_the_failed_start_status) {
  struct aio_proc p = {0};
  char conf[4096], out[4096];
  int port = h_free_port();
  conf_init_fails(conf, sizeof(conf), port, "log_file = aio.log\n");
  ck_assert_int_eq(h_prepare(&p, conf, NULL), 0);
  int rc = ops_aio(&p, out, sizeof(out), "run", "-d", NULL);
  if (rc != 70)
    h_dump_log(&p);
  ck_assert_msg(rc == 70, "aio run -d exited %d: %s", rc, out);
  assert_log_tail_has(&p, "init failed");
  assert_log_tail_has(&p, GAVE_UP);
  /* The user who typed it is told why, and where the rest is: the log is
   * a file they may not think of (and without log_file, discarded). */
  ck_assert_msg(strstr(out, "aio: start failed: worker ") &&
                    strstr(out, "; the log: ") && strstr(out, "aio.log"),
                "aio run -d said: %s", out);
  /* Nobody is left behind answering. */
  ops_expect(&p, 69, out, sizeof(out), "status", NULL);
  assert_port_free(port);
}
END_TEST

/* 2 workers serving whoami on port, with the [aio] lines aio_extra, whose
 * init (opsmod's) takes init_ms. */
static void conf_slow_init(char *conf, size_t n, int port,
                           const char *aio_extra, int init_ms) {
  h_conf(conf, n, "testmod opsmod", "workers = 2\n%s", aio_extra);
  h_conf_server(conf, n, "who", "testmod.whoami", port);
  h_conf_add(conf, n, "\n[opsmod]\ninit_ms = %d\n", init_ms);
}

START_TEST(test_start_timeout_ends_a_start_that_hangs) {
  struct aio_proc p = {0};
  char conf[4096];
  int port = h_free_port();
  conf_slow_init(conf, sizeof(conf), port, "start_timeout = 1.5\n", 30000);
  long long t0 = h_now_ms();
  ck_assert_int_eq(h_start(&p, conf, NULL), 0);
  ck_assert_int_eq(h_wait_exit(&p, 10000), 0);
  long long took = h_now_ms() - t0;
  h_assert_exit_status(&p, 70);
  ck_assert_msg(took >= 1400 && took < 6000, "took %lld ms", took);
  assert_log_tail_has(&p, "start_timeout");
  assert_log_tail_has(&p, "still starting");
  assert_port_free(port);
}
END_TEST

/* A running service whose workers all start crash-looping (a module that
 * crashes at init while a file exists, like a corrupt data file): the
 * master stays, says no worker serves, retries slowly, and recovers. */
START_TEST(test_losing_the_last_worker_retries_slowly_and_recovers) {
  struct aio_proc p = {0};
  struct notify nt;
  char conf[4096], poison[256];
  int port = h_free_port();
  notify_open(&nt, &p);
  snprintf(poison, sizeof(poison), "%s/poison", p.dir);
  h_conf(conf, sizeof(conf), "testmod lifemod",
         "workers = 2\nmax_restarts = 2\nrestart_window = 60\n"
         "graceful_timeout = 2\n");
  h_conf_server(conf, sizeof(conf), "who", "testmod.whoami", port);
  h_conf_add(conf, sizeof(conf), "\n[lifemod]\ncrash_if = %s\n", poison);
  h_start_ready(&p, conf, &nt.opts);
  pid_t kids[2];
  pu_workers(p.pid, kids, 2);

  ck_assert_int_eq(h_write(p.dir, "poison", ""), 0);
  kill(kids[0], SIGKILL);
  kill(kids[1], SIGKILL);
  expect_log(&p, "no worker serves", 10000);
  json_t *st = ops_status(&p);
  ck_assert_int_eq(ops_int(st, "serving"), 0);
  ck_assert_msg(strstr(json_string_value(json_object_get(st, "problem")),
                       "no worker serves"),
                "status problem: %s",
                json_string_value(json_object_get(st, "problem")));
  json_decref(st);
  char out[8192];
  ops_expect(&p, 0, out, sizeof(out), "status", NULL);
  ck_assert_msg(strstr(out, "WARNING: no worker serves"), "%s", out);
  ck_assert_msg(notify_seen(nt.fd, "STATUS=no worker serves"),
                "systemd was not told");

  /* Retries are spaced: 1 s, then 2 s (never a spin). */
  if (wait_log_count(&p, "no worker serves", 3, 10000)) {
    h_dump_log(&p);
    ck_abort_msg("the last worker was not retried");
  }
  long long t[3];
  ck_assert_int_eq(log_times(&p, "no worker serves", t, 3), 3);
  ck_assert_msg(t[1] - t[0] >= 900 && t[2] - t[1] >= 1800,
                "retries at +%lld ms, +%lld ms", t[1] - t[0], t[2] - t[1]);
  ck_assert_int_eq(h_log_count(&p, "no worker serves"), 3);
  /* Still there, still holding the port. */
  ck_assert(h_pid_alive(p.pid));
  ck_assert_int_ge(ops_listeners(port), 1);

  /* The cause goes away: the next retry serves, and the given-up slot
   * comes back with it. */
  ck_assert_int_eq(unlink(poison), 0);
  expect_log(&p, "serves again after", 15000);
  if (pu_wait_live_children(p.pid, 2, 10000) != 0) {
    h_dump_log(&p);
    ck_abort_msg("the given-up slot did not come back");
  }
  ck_assert_int_eq(wait_serving(&p, 2, 10000), 0);
  ck_assert_msg(notify_seen(nt.fd, "STATUS=serving generation 1 with 2"),
                "systemd was not told of the recovery");
  close(nt.fd);
  pid_t now[2];
  pu_workers(p.pid, now, 2);
  pu_assert_served_by(port, now, 2, 6);
  h_stop_ok(&p);
}
END_TEST

/* ---- 3. HUPs during a reload ------------------------------------------- */

/* Start 2 workers serving whoami on port (conf gets the config), then
 * write a config whose new workers take 1.5 s to be ready: the next
 * reload is in flight that long. */
static void start_then_slow_config(struct aio_proc *p, char *conf, size_t n,
                                   int port) {
  h_conf(conf, n, "testmod opsmod", "workers = 2\ngraceful_timeout = 2\n");
  h_conf_server(conf, n, "who", "testmod.whoami", port);
  h_start_ready(p, conf, NULL);
  h_conf_add(conf, n, "\n[opsmod]\ninit_ms = 1500\n");
  ops_rewrite(p, conf);
}

/* Once the reload in flight started its workers: the config gets a new
 * server on port2, which only a reload after this one can bind. */
static void during_the_reload_add_a_server(struct aio_proc *p, char *conf,
                                           size_t n, int port2) {
  expect_log(p, "generation 2)", 10000);
  h_conf_server(conf, n, "new", "testmod.whoami", port2);
  ops_rewrite(p, conf);
}

START_TEST(test_hups_during_a_reload_make_one_more_reload) {
  struct aio_proc p = {0};
  char conf[4096];
  int port = h_free_port(), port2 = h_free_port();
  start_then_slow_config(&p, conf, sizeof(conf), port);
  ck_assert_int_eq(kill(p.pid, SIGHUP), 0);
  /* During it: a new server, and 100 HUPs (issue 12: they ran 1 reload).
   * The kernel merges a HUP that comes while one is pending, so the
   * master sees up to 100. */
  during_the_reload_add_a_server(&p, conf, sizeof(conf), port2);
  for (int i = 0; i < 100; i++) {
    ck_assert_int_eq(kill(p.pid, SIGHUP), 0);
    usleep(1000);
  }
  expect_log(&p, "reload requested during a reload: queued", 5000);
  expect_log(&p, "reloaded: generation 3", 20000);
  ck_assert(h_log_has(&p, "reloaded: generation 2"));
  ck_assert_int_eq(h_log_count(&p, "reloading "), 2);
  /* One line for the storm, not one per HUP; the reload says how many. */
  ck_assert_int_eq(h_log_count(&p, "reload requested during a reload"), 1);
  expect_log(&p, "running the reload queued during the last one (", 1000);
  json_t *st = ops_status(&p);
  ck_assert_int_eq(ops_int(st, "generation"), 3);
  ck_assert_int_eq(ops_int(st, "reloads"), 2);
  ck_assert(json_is_false(json_object_get(st, "reload_queued")));
  json_decref(st);
  pu_ask_pid(port2);
  pu_ask_pid(port);
  h_stop_ok(&p);
}
END_TEST

/* `aio reload` while a reload runs waits for the queued reload, which
 * reads the configuration as it is now. */
START_TEST(test_aio_reload_during_a_reload_waits_for_the_queued_one) {
  struct aio_proc p = {0};
  char conf[4096], out[4096], first_out[256];
  int port = h_free_port(), port2 = h_free_port();
  start_then_slow_config(&p, conf, sizeof(conf), port);
  snprintf(first_out, sizeof(first_out), "%s/first.out", p.dir);
  pid_t first = ops_aio_async(&p, first_out, "reload", NULL);
  during_the_reload_add_a_server(&p, conf, sizeof(conf), port2);
  ops_expect(&p, 0, out, sizeof(out), "reload", NULL);
  ck_assert_msg(strstr(out, "generation 3"), "%s", out);
  int rc = h_aio_wait(first, 20000);
  char *o = h_slurp(first_out);
  ck_assert_msg(rc == 0 && strstr(o, "generation 2"), "first: %d %s", rc, o);
  free(o);
  pu_ask_pid(port2);
  h_stop_ok(&p);
}
END_TEST

/* A HUP while the first workers start waits until they serve: replacing
 * a generation that never served would leave the start unannounced. */
START_TEST(test_hup_during_the_start_reloads_once_serving) {
  struct aio_proc p = {0};
  char conf[4096];
  int port = h_free_port();
  conf_slow_init(conf, sizeof(conf), port, "", 1000);
  ck_assert_int_eq(h_start(&p, conf, NULL), 0);
  expect_log(&p, "generation 1)", 10000);
  ck_assert_int_eq(kill(p.pid, SIGHUP), 0);
  expect_log(&p, "reload requested during the start: queued", 5000);
  h_assert_ready(&p, 15000);
  expect_log(&p, "reloaded: generation 2", 15000);
  json_t *st = ops_status(&p);
  ck_assert_str_eq(json_string_value(json_object_get(st, "phase")), "serving");
  ck_assert_int_eq(ops_int(st, "generation"), 2);
  json_decref(st);
  pu_ask_pid(port);
  h_stop_ok(&p);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_lifecycle");
  TCase *tc = tcase_create("lifecycle");
  tcase_set_timeout(tc, 90);
  tcase_add_test(tc, test_start_failure_before_fork_is_retried_until_it_passes);
  tcase_add_test(tc, test_start_fails_when_init_fails);
  tcase_add_test(tc, test_start_fails_when_init_crashes);
  tcase_add_test(tc, test_start_fails_when_a_factory_fails);
  tcase_add_test(tc, test_failed_start_under_systemd_is_not_ready);
  tcase_add_test(tc, test_daemon_returns_the_failed_start_status);
  tcase_add_test(tc, test_start_timeout_ends_a_start_that_hangs);
  tcase_add_test(tc, test_losing_the_last_worker_retries_slowly_and_recovers);
  tcase_add_test(tc, test_hups_during_a_reload_make_one_more_reload);
  tcase_add_test(tc, test_aio_reload_during_a_reload_waits_for_the_queued_one);
  tcase_add_test(tc, test_hup_during_the_start_reloads_once_serving);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return pu_run_suite(suite()); }
