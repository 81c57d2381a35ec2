/*
 * test_ops_systemd.c - what a process manager sees: sd_notify datagrams on
 * a socket the test owns (standing in for systemd), socket activation with
 * a listening socket the test bound, and [aio] user dropping the workers'
 * privileges while the master keeps a port below 1024. aio is started
 * through `sh -c 'LISTEN_PID=$$ exec aio ...'`, as systemd would set the
 * variables for the pid it starts.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "check_main.h"
#include "ops_util.h"
#include "process_util.h"

static void conf_server(char *out, size_t n, const char *name, int port,
                        const char *protocol, const char *aio_extra) {
  h_conf(out, n, "testmod opsmod slowload",
         "workers = 2\ngraceful_timeout = 5\n%s", aio_extra ? aio_extra : "");
  h_conf_server(out, n, name, protocol, port);
}

static void assert_workers_serve(const struct aio_proc *p, int port) {
  pid_t kids[2];
  pu_workers(p->pid, kids, 2);
  pu_assert_served_by(port, kids, 2, 6);
}

/* ---- sd_notify ------------------------------------------------------------
 */

#define MAX_NOTES 256

/* The datagrams received so far, in order. */
struct notes {
  int fd;
  char path[256];
  char *msg[MAX_NOTES];
  int n;
};

static void notes_open(struct notes *ns, const char *dir) {
  memset(ns, 0, sizeof(*ns));
  snprintf(ns->path, sizeof(ns->path), "%s/notify.sock", dir);
  ns->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  ck_assert_uint_lt(strlen(ns->path), sizeof(sun.sun_path));
  memcpy(sun.sun_path, ns->path, strlen(ns->path) + 1);
  ck_assert_int_eq(bind(ns->fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
}

/* The same in the abstract namespace; ns->path gets "@name", as systemd
 * writes it in NOTIFY_SOCKET. */
static void notes_open_abstract(struct notes *ns) {
  memset(ns, 0, sizeof(*ns));
  snprintf(ns->path, sizeof(ns->path), "@aio-test-notify-%d", (int)getpid());
  ns->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  size_t n = strlen(ns->path);
  memcpy(sun.sun_path + 1, ns->path + 1, n - 1);
  socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
  ck_assert_int_eq(bind(ns->fd, (struct sockaddr *)&sun, len), 0);
}

static void notes_close(struct notes *ns) {
  close(ns->fd);
  if (ns->path[0] == '/')
    unlink(ns->path);
  for (int i = 0; i < ns->n; i++)
    free(ns->msg[i]);
}

/* Receive one datagram within timeout_ms (0: only one already queued).
 * Returns its index, or -1. */
static int notes_recv(struct notes *ns, int timeout_ms) {
  struct pollfd pfd = {.fd = ns->fd, .events = POLLIN};
  if (ns->n == MAX_NOTES || poll(&pfd, 1, timeout_ms) <= 0)
    return -1;
  char buf[2048];
  ssize_t r = recv(ns->fd, buf, sizeof(buf) - 1, 0);
  if (r < 0)
    return -1;
  buf[r] = '\0';
  ns->msg[ns->n] = strdup(buf);
  return ns->n++;
}

/* Receive until a datagram containing want arrives (NULL: until the time
 * is up). Returns its index, or -1. */
static int notes_until(struct notes *ns, const char *want, int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  for (;;) {
    long long left = deadline - h_now_ms();
    if (left <= 0 || ns->n == MAX_NOTES)
      return -1;
    int i = notes_recv(ns, (int)left);
    if (i >= 0 && want && strstr(ns->msg[i], want))
      return i;
  }
}

/* Does message i hold the line `line` exactly? */
static int has_line(const char *msg, const char *line) {
  size_t n = strlen(line);
  for (const char *p = msg; (p = strstr(p, line)) != NULL; p += n)
    if ((p == msg || p[-1] == '\n') && (p[n] == '\0' || p[n] == '\n'))
      return 1;
  return 0;
}

static unsigned long long mono_usec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (unsigned long long)ts.tv_sec * 1000000ull +
         (unsigned long long)ts.tv_nsec / 1000u;
}

/* Start aio serving whoami in p->dir (or a fresh one) with NOTIFY_SOCKET
 * naming ns, more variables from env (NULL-terminated, may be NULL) and
 * the shell prefix, as systemd would. */
static void start_notified(struct aio_proc *p, const struct notes *ns,
                           const char *const *env, const char *shell) {
  char notify[300], conf[4096];
  snprintf(notify, sizeof(notify), "NOTIFY_SOCKET=%s", ns->path);
  const char *all[8] = {notify};
  for (int i = 0; env && env[i] && i < 6; i++)
    all[i + 1] = env[i];
  conf_server(conf, sizeof(conf), "who", h_free_port(), "testmod.whoami", NULL);
  h_start_ready(p, conf,
                &(struct h_opts){.dir = p->dir, .env = all, .shell = shell});
}

/* Wait for READY=1, which must carry MAINPID=pid; returns its index. */
static int ready_note(struct notes *ns, pid_t pid) {
  int ready = notes_until(ns, "READY=1", 5000);
  ck_assert_int_ge(ready, 0);
  char mainpid[32];
  snprintf(mainpid, sizeof(mainpid), "MAINPID=%d", (int)pid);
  ck_assert_msg(has_line(ns->msg[ready], mainpid), "READY without %s: %s",
                mainpid, ns->msg[ready]);
  return ready;
}

/* start_notified in a fresh directory, with a watchdog of 400 ms for
 * aio's pid; returns the index of READY=1. */
static int start_watched(struct aio_proc *p, struct notes *ns) {
  h_tmpdir(p->dir, sizeof(p->dir));
  notes_open(ns, p->dir);
  static const char *const env[] = {"WATCHDOG_USEC=400000", NULL};
  start_notified(p, ns, env, "WATCHDOG_PID=$$ ");
  return ready_note(ns, p->pid);
}

START_TEST(test_sd_notify_ready_reload_watchdog_stopping) {
  struct aio_proc p = {0};
  struct notes ns;
  /* READY=1 with MAINPID, the first thing said, once ready. */
  int ready = start_watched(&p, &ns);
  ck_assert_msg(has_line(ns.msg[ready], "READY=1"), "%s", ns.msg[ready]);
  ck_assert_ptr_nonnull(strstr(ns.msg[ready], "STATUS="));
  for (int i = 0; i < ready; i++)
    ck_assert_msg(!strstr(ns.msg[i], "READY=1") &&
                      !strstr(ns.msg[i], "RELOADING=1"),
                  "before READY: %s", ns.msg[i]);

  /* WATCHDOG=1 every WATCHDOG_USEC/2 = 200 ms: at least twice in any
   * second (what was queued before it started does not count). */
  while (notes_recv(&ns, 0) >= 0)
    ;
  int queued = ns.n;
  notes_until(&ns, NULL, 1000);
  int pings = 0;
  for (int i = queued; i < ns.n; i++)
    pings += has_line(ns.msg[i], "WATCHDOG=1");
  ck_assert_msg(pings >= 2, "%d WATCHDOG=1 in a second", pings);

  /* A reload: RELOADING=1 with MONOTONIC_USEC, then READY=1 again. */
  unsigned long long before = mono_usec();
  char out[4096];
  int rc = ops_aio(&p, out, sizeof(out), "reload", NULL);
  unsigned long long after = mono_usec();
  ck_assert_msg(rc == 0, "aio reload exited %d: %s", rc, out);
  int reloading = notes_until(&ns, "RELOADING=1", 5000);
  ck_assert_int_ge(reloading, 0);
  const char *mono = strstr(ns.msg[reloading], "MONOTONIC_USEC=");
  ck_assert_msg(mono, "RELOADING without MONOTONIC_USEC: %s",
                ns.msg[reloading]);
  unsigned long long usec = strtoull(mono + 15, NULL, 10);
  ck_assert_msg(usec >= before && usec <= after,
                "MONOTONIC_USEC=%llu not within the reload [%llu, %llu]", usec,
                before, after);
  int ready2 = notes_until(&ns, "READY=1", 5000);
  ck_assert_int_gt(ready2, reloading);

  /* STOPPING=1 on TERM, last of all. */
  h_stop_ok(&p);
  int stopping = notes_until(&ns, "STOPPING=1", 2000);
  ck_assert_int_gt(stopping, ready2);
  for (int i = stopping + 1; i < ns.n; i++)
    ck_assert_msg(!strstr(ns.msg[i], "READY=1"), "after STOPPING: %s",
                  ns.msg[i]);
  /* aio kept NOTIFY_SOCKET from its workers: only the master spoke. */
  ck_assert(!h_log_has(&p, "sd_notify"));
  notes_close(&ns);
}
END_TEST

/* A reload waits for its probe child, which loads the modules: a module
 * slow to load must not starve systemd's watchdog (WatchdogSec would kill
 * the whole service). */
START_TEST(test_sd_notify_watchdog_fed_while_a_reload_loads_modules) {
  struct aio_proc p = {0};
  struct notes ns;
  h_tmpdir(p.dir, sizeof(p.dir));
  notes_open(&ns, p.dir);
  char slow_env[340];
  snprintf(slow_env, sizeof(slow_env), "AIO_TEST_SLOW_LOAD=%s/slow", p.dir);
  const char *env[] = {"WATCHDOG_USEC=400000", slow_env, NULL};
  start_notified(&p, &ns, env, "WATCHDOG_PID=$$ ");
  ready_note(&ns, p.pid);
  ck_assert_int_eq(h_write(p.dir, "slow", "1"), 0);
  while (notes_recv(&ns, 0) >= 0)
    ;
  /* Read the datagrams while the reload runs, as systemd does: a unix
   * datagram queue holds only a few, and the master drops what does not
   * fit rather than block. */
  char out_path[300];
  snprintf(out_path, sizeof(out_path), "%s/reload.out", p.dir);
  pid_t r = ops_aio_async(&p, out_path, "reload", NULL);
  int reloading = notes_until(&ns, "RELOADING=1", 5000);
  ck_assert_int_ge(reloading, 0);
  int ready = notes_until(&ns, "READY=1", 15000);
  ck_assert_int_eq(h_aio_wait(r, 15000), 0);
  ck_assert_int_gt(ready, reloading);
  int pings = 0;
  for (int i = reloading + 1; i < ready; i++)
    pings += has_line(ns.msg[i], "WATCHDOG=1");
  /* 2.5 s in the probe: about one ping a second from the wait itself;
   * without it the loop owes the timer one overdue ping at most. */
  ck_assert_msg(pings >= 2, "%d WATCHDOG=1 during a 2.5 s module load", pings);
  h_stop_ok(&p);
  notes_close(&ns);
}
END_TEST

START_TEST(test_sd_notify_abstract_socket) {
  struct aio_proc p = {0};
  struct notes ns;
  notes_open_abstract(&ns);
  start_notified(&p, &ns, NULL, NULL);
  ready_note(&ns, p.pid);
  /* No WATCHDOG_USEC: no pings. */
  ck_assert_int_eq(notes_until(&ns, "WATCHDOG=1", 500), -1);
  h_stop_ok(&p);
  ck_assert_int_ge(notes_until(&ns, "STOPPING=1", 2000), 0);
  notes_close(&ns);
}
END_TEST

START_TEST(test_sd_notify_watchdog_is_for_the_named_pid_only) {
  /* WATCHDOG_PID names another process: aio must not ping for it. */
  struct aio_proc p = {0};
  struct notes ns;
  h_tmpdir(p.dir, sizeof(p.dir));
  notes_open(&ns, p.dir);
  static const char *const env[] = {"WATCHDOG_USEC=400000", "WATCHDOG_PID=1",
                                    NULL};
  start_notified(&p, &ns, env, NULL);
  ready_note(&ns, p.pid);
  ck_assert_int_eq(notes_until(&ns, "WATCHDOG=1", 700), -1);
  h_stop_ok(&p);
  notes_close(&ns);
}
END_TEST

/* ---- socket activation -------------------------------------------------- */

/* Start aio on conf with listening sockets of ours as fds 3, 4, ...
 * (LISTEN_FDS=n); fdnames (colon-separated) may be NULL. */
static void start_activated(struct aio_proc *p, const char *conf,
                            const int *fds, int n, const char *fdnames) {
  char count[32], names[128];
  snprintf(count, sizeof(count), "LISTEN_FDS=%d", n);
  snprintf(names, sizeof(names), "LISTEN_FDNAMES=%s", fdnames ? fdnames : "");
  const char *env[] = {count, fdnames ? names : NULL, NULL};
  struct h_opts o = {
      .env = env, .shell = "LISTEN_PID=$$ ", .listen_fds = fds, .nlisten = n};
  ck_assert_int_eq(h_start(p, conf, &o), 0);
  for (int i = 0; i < n; i++)
    close(fds[i]); /* aio holds them now */
  h_assert_ready(p, 15000);
}

/* aio serves port on the socket passed for it, binding no second one;
 * also after a reload. Stops p. */
static void assert_activated(struct aio_proc *p, const int *ports, int n) {
  char line[64];
  snprintf(line, sizeof(line), "socket activation: %d socket%s passed", n,
           n == 1 ? "" : "s");
  ck_assert_msg(h_log_has(p, line), "no '%s' in the log", line);
  for (int round = 0; round < 2; round++) {
    if (round == 1) {
      char out[4096];
      ops_expect(p, 0, out, sizeof(out), "reload", NULL);
    }
    ck_assert_int_eq(pu_wait_live_children(p->pid, 2, 10000), 0);
    for (int i = 0; i < n; i++) {
      char buf[256];
      for (int k = 0; k < 6; k++)
        ck_assert_int_eq(
            h_exchange_once(ports[i], "?\n", "\n", buf, sizeof(buf), 5000),
            H_OK);
      /* Ours is the only listener on the port. */
      ck_assert_int_eq(ops_listeners(ports[i]), 1);
    }
  }
  h_stop_ok(p);
  for (int i = 0; i < n; i++) /* aio closed them: the ports are free */
    ck_assert_int_eq(ops_listeners(ports[i]), 0);
}

static void activate_one(const char *fdnames) {
  struct aio_proc p;
  char conf[4096];
  int port = 0;
  int fd = h_listen_tcp(&port, 0);
  ck_assert_int_ge(fd, 0);
  conf_server(conf, sizeof(conf), "web", port, "testmod.whoami", NULL);
  start_activated(&p, conf, &fd, 1, fdnames);
  assert_workers_serve(&p, port);
  assert_activated(&p, &port, 1);
}

START_TEST(test_socket_activation_by_name) { activate_one("web"); }
END_TEST

START_TEST(test_socket_activation_by_address) { activate_one(NULL); }
END_TEST

START_TEST(test_socket_activation_two_sockets_by_name) {
  /* The fds come in another order than the servers: names decide. */
  int ports[2] = {0, 0}, fds[2];
  fds[1] = h_listen_tcp(&ports[0], 0); /* server a's, passed second */
  fds[0] = h_listen_tcp(&ports[1], 0); /* server b's, passed first */
  ck_assert(fds[0] >= 0 && fds[1] >= 0);
  char conf[4096];
  conf_server(conf, sizeof(conf), "a", ports[0], "testmod.whoami", NULL);
  h_conf_server(conf, sizeof(conf), "b", "opsmod.version", ports[1]);
  struct aio_proc p;
  start_activated(&p, conf, fds, 2, "b:a");
  char buf[256];
  ck_assert_int_eq(
      h_exchange_once(ports[1], "?\n", "\n", buf, sizeof(buf), 5000), H_OK);
  ck_assert_str_eq(buf, "v1\n");
  assert_activated(&p, ports, 2);
}
END_TEST

START_TEST(test_socket_activation_ignores_another_pids_fds) {
  /* LISTEN_PID names another process: the fds are not ours, and aio
   * binds its own sockets (the address is free: SO_REUSEPORT would join
   * ours, so close it first). */
  struct aio_proc p = {0};
  char conf[4096];
  int port = h_free_port();
  const char *env[] = {"LISTEN_FDS=1", "LISTEN_PID=1", NULL};
  struct h_opts o = {.env = env};
  conf_server(conf, sizeof(conf), "web", port, "testmod.whoami", NULL);
  h_start_ready(&p, conf, &o);
  ck_assert(!h_log_has(&p, "socket activation"));
  assert_workers_serve(&p, port);
  ck_assert_int_eq(ops_listeners(port), 2); /* one per slot */
  h_stop_ok(&p);
}
END_TEST

/* ---- privilege drop -------------------------------------------------------
 */

#define LOW_PORT 1009

START_TEST(test_user_nobody_drops_worker_privileges) {
  if (geteuid() != 0) {
    fprintf(stderr, "skipped test_user_nobody_drops_worker_privileges: "
                    "needs root\n");
    return;
  }
  struct passwd *pw = getpwnam("nobody");
  if (pw == NULL) {
    fprintf(stderr, "skipped test_user_nobody_drops_worker_privileges: "
                    "no user nobody\n");
    return;
  }
  uid_t uid = pw->pw_uid;
  gid_t gid = pw->pw_gid;
  int port = LOW_PORT;
  int probe = h_listen_tcp(&port, 0);
  if (probe < 0) {
    fprintf(stderr,
            "skipped test_user_nobody_drops_worker_privileges: "
            "127.0.0.1:%d is taken\n",
            LOW_PORT);
    return;
  }
  close(probe);
  struct aio_proc p = {0};
  char conf[4096];
  conf_server(conf, sizeof(conf), "low", LOW_PORT, "opsmod.ident",
              "user = nobody\n");
  h_start_ready(&p, conf, NULL);
  ck_assert_int_eq(ops_proc_id(p.pid, "Uid"), 0);
  pid_t kids[2];
  ck_assert_int_eq(pu_wait_live_children(p.pid, 2, 10000), 0);
  ck_assert_int_eq(pu_live_children(p.pid, kids, 2), 2);
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(ops_proc_id(kids[i], "Uid"), (long)uid);
    ck_assert_int_eq(ops_proc_id(kids[i], "Gid"), (long)gid);
  }
  char buf[256], want[64];
  ck_assert_int_eq(
      h_exchange_once(LOW_PORT, "id\n", "\n", buf, sizeof(buf), 5000), H_OK);
  snprintf(want, sizeof(want), "uid %d\n", (int)uid);
  ck_assert_msg(strstr(buf, want), "answer: %s", buf);

  /* A reload's workers drop too, and the low port stays served. */
  char out[4096];
  ops_expect(&p, 0, out, sizeof(out), "reload", NULL);
  ck_assert_int_eq(h_wait_gone(kids, 2, 10000), 0);
  ck_assert_int_eq(pu_live_children(p.pid, kids, 2), 2);
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq(ops_proc_id(kids[i], "Uid"), (long)uid);
  ck_assert_int_eq(
      h_exchange_once(LOW_PORT, "id\n", "\n", buf, sizeof(buf), 5000), H_OK);
  ck_assert_msg(strstr(buf, want), "answer: %s", buf);
  h_stop_ok(&p);
}
END_TEST

START_TEST(test_user_nobody_workers_follow_a_rotated_log) {
  if (geteuid() != 0 || getpwnam("nobody") == NULL) {
    fprintf(stderr, "skipped test_user_nobody_workers_follow_a_rotated_log: "
                    "needs root and a user nobody\n");
    return;
  }
  /* logrotate: rename the file, USR1; the workers (no longer root) must
   * write to the new file too. */
  struct aio_proc p = {0};
  char conf[4096], logf[256], rotated[300];
  h_tmpdir(p.dir, sizeof(p.dir));
  ck_assert_int_eq(chmod(p.dir, 0755), 0); /* like /var/log/aio */
  snprintf(logf, sizeof(logf), "%s/aio-file.log", p.dir);
  snprintf(rotated, sizeof(rotated), "%s.1", logf);
  int port = h_free_port(), say = h_free_port();
  h_conf(conf, sizeof(conf), "testmod outmod",
         "workers = 2\ngraceful_timeout = 5\nuser = nobody\n"
         "log_file = aio-file.log\n");
  h_conf_server(conf, sizeof(conf), "who", "testmod.whoami", port);
  h_conf_server(conf, sizeof(conf), "say", "outmod.say", say);
  h_start_ready(&p, conf, &(struct h_opts){.dir = p.dir});
  pid_t kids[2];
  ck_assert_int_eq(pu_live_children(p.pid, kids, 2), 2);
  ck_assert_int_eq(rename(logf, rotated), 0);
  ck_assert_int_eq(kill(p.pid, SIGUSR1), 0);
  /* The master says so in the file it is about to leave. */
  long long deadline = h_now_ms() + 5000;
  char *log = h_slurp(rotated);
  while (!strstr(log, "reopening") && h_now_ms() < deadline) {
    free(log);
    usleep(10000);
    log = h_slurp(rotated);
  }
  ck_assert_msg(strstr(log, "reopening"), "the master did not reopen");
  free(log);
  /* What a worker prints reaches the new file through the master. */
  char buf[64];
  ck_assert_int_eq(
      h_exchange_once(say, "rotated\n", "\n", buf, sizeof(buf), 5000), H_OK);
  struct aio_proc now = p;
  snprintf(now.log, sizeof(now.log), "%s/aio-file.log", p.dir);
  ck_assert_int_eq(h_wait_log(&now, "] stdout: said rotated", 5000), 0);
  /* The workers got the word over the bus, before the stop a reload
   * sends them; draining, they log. */
  char out[4096];
  ops_expect(&p, 0, out, sizeof(out), "reload", NULL);
  ck_assert_int_eq(h_wait_gone(kids, 2, 10000), 0);
  log = h_slurp(logf);
  char *old = h_slurp(rotated);
  int ok = strstr(log, "[worker 0") && strstr(log, "draining") &&
           !strstr(log, "cannot reopen") && !strstr(old, "cannot reopen");
  if (!ok)
    fprintf(stderr, "---- %s ----\n%s---- %s ----\n%s", rotated, old, logf,
            log);
  free(log);
  free(old);
  ck_assert_msg(ok, "the workers did not follow the rotated log");
  h_stop_ok(&p);
}
END_TEST

/* `aio upgrade`: RELOADING=1 before the exec, READY=1 with the same
 * MAINPID once the new image serves, and the watchdog goes on (the
 * variables notify_init takes out are put back for the new image). */
START_TEST(test_sd_notify_upgrade_keeps_mainpid_and_watchdog) {
  struct aio_proc p = {0};
  struct notes ns;
  int ready = start_watched(&p, &ns);
  char out[4096];
  ops_expect(&p, 0, out, sizeof(out), "upgrade", NULL);
  int reloading = notes_until(&ns, "RELOADING=1", 5000);
  ck_assert_int_gt(reloading, ready);
  ck_assert_ptr_nonnull(strstr(ns.msg[reloading], "MONOTONIC_USEC="));
  int again = ready_note(&ns, p.pid);
  ck_assert_int_gt(again, reloading);
  ck_assert_int_ge(notes_until(&ns, "WATCHDOG=1", 2000), 0);
  h_stop_ok(&p);
  notes_close(&ns);
}
END_TEST

/* A socket systemd passed is handed on by an upgrade like the others:
 * still the only listener on its port, closed at the stop. */
START_TEST(test_socket_activation_survives_an_upgrade) {
  struct aio_proc p;
  char conf[4096], out[4096];
  int port = 0;
  int fd = h_listen_tcp(&port, 0);
  ck_assert_int_ge(fd, 0);
  conf_server(conf, sizeof(conf), "web", port, "testmod.whoami", NULL);
  start_activated(&p, conf, &fd, 1, "web");
  assert_workers_serve(&p, port);
  ops_expect(&p, 0, out, sizeof(out), "upgrade", NULL);
  ck_assert_msg(strstr(out, "generation 2"), "%s", out);
  assert_workers_serve(&p, port);
  ck_assert_int_eq(ops_listeners(port), 1);
  ops_expect(&p, 0, out, sizeof(out), "reload", NULL);
  assert_workers_serve(&p, port);
  ck_assert_int_eq(ops_listeners(port), 1);
  h_stop_ok(&p);
  ck_assert_int_eq(ops_listeners(port), 0);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_ops_systemd");
  TCase *tc = tcase_create("systemd");
  tcase_set_timeout(tc, 90);
  tcase_add_test(tc, test_sd_notify_ready_reload_watchdog_stopping);
  tcase_add_test(tc, test_sd_notify_abstract_socket);
  tcase_add_test(tc, test_sd_notify_watchdog_fed_while_a_reload_loads_modules);
  tcase_add_test(tc, test_sd_notify_watchdog_is_for_the_named_pid_only);
  tcase_add_test(tc, test_sd_notify_upgrade_keeps_mainpid_and_watchdog);
  tcase_add_test(tc, test_socket_activation_survives_an_upgrade);
  tcase_add_test(tc, test_socket_activation_by_name);
  tcase_add_test(tc, test_socket_activation_by_address);
  tcase_add_test(tc, test_socket_activation_two_sockets_by_name);
  tcase_add_test(tc, test_socket_activation_ignores_another_pids_fds);
  tcase_add_test(tc, test_user_nobody_drops_worker_privileges);
  tcase_add_test(tc, test_user_nobody_workers_follow_a_rotated_log);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
