/*
 * test_ops_control.c - the daemon and its control socket: `aio run -d`
 * with a locked pidfile (a second one is refused, a stale one is taken
 * over, `aio stop` removes it), `aio status` in JSON and for humans, `aio
 * emit` reaching a listener, the commands with no master running, and a
 * control socket fed garbage that keeps serving.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <aio.h> /* AIO_VERSION */

#include "check_main.h"
#include "ops_util.h"
#include "process_util.h"

/* testmod.whoami on port, with more [aio] lines (may be NULL). */
static void conf_whoami(char *out, size_t n, int port, const char *aio_extra) {
  h_conf(out, n, "testmod", "workers = 2\ngraceful_timeout = 5\n%s",
         aio_extra ? aio_extra : "");
  h_conf_server(out, n, "who", "testmod.whoami", port);
}

static pid_t read_pidfile(const char *path) {
  char *s = h_slurp(path);
  int pid = 0;
  int ok = sscanf(s, "%d", &pid) == 1;
  free(s);
  return ok ? (pid_t)pid : -1;
}

/* The daemon answers on port through one of its own workers. */
static void assert_daemon_serves(pid_t daemon, int port) {
  pid_t kids[2];
  pu_workers(daemon, kids, 2);
  pu_assert_served_by(port, kids, 2, 4);
}

/* Start whoami on a free port with more [aio] lines (may be NULL); returns
 * the port. */
static int start_whoami(struct aio_proc *p, const char *aio_extra) {
  char conf[4096];
  int port = h_free_port();
  conf_whoami(conf, sizeof(conf), port, aio_extra);
  h_start_ready(p, conf, NULL);
  return port;
}

START_TEST(test_daemon_pidfile_lock_takeover_and_stop) {
  struct aio_proc p;
  char conf[4096], out[8192], pidfile[256], logfile[256], sock[256];
  int port = h_free_port();
  /* Relative paths: the config's directory, whatever the cwd. */
  conf_whoami(conf, sizeof(conf), port,
              "pidfile = run/aio.pid\nlog_file = daemon.log\n");
  ck_assert_int_eq(h_prepare(&p, conf, NULL), 0);
  snprintf(pidfile, sizeof(pidfile), "%s/run/aio.pid", p.dir);
  snprintf(logfile, sizeof(logfile), "%s/daemon.log", p.dir);
  snprintf(sock, sizeof(sock), "%s/run/aio.sock", p.dir);
  char rundir[256];
  snprintf(rundir, sizeof(rundir), "%s/run", p.dir);
  ck_assert_int_eq(mkdir(rundir, 0755), 0);

  /* Returns once ready: the port answers at once, no retry needed. */
  ops_expect(&p, 0, out, sizeof(out), "run", "-d", NULL);
  pid_t d1 = read_pidfile(pidfile);
  ck_assert_int_gt(d1, 0);
  ck_assert(h_pid_alive(d1));
  char buf[256];
  ck_assert_int_eq(h_exchange_once(port, "who\n", "\n", buf, sizeof(buf), 5000),
                   H_OK);
  assert_daemon_serves(d1, port);
  ck_assert_int_eq(access(sock, F_OK), 0); /* control beside the pidfile */
  char *log = h_slurp(logfile);
  ck_assert_msg(strstr(log, "ready:"), "daemon.log: %s", log);
  free(log);

  /* A second one on the same pidfile is refused and names the holder. */
  char holder[64];
  snprintf(holder, sizeof(holder), "pid %d holds the lock", (int)d1);
  ops_expect(&p, 69, out, sizeof(out), "run", "-d", NULL);
  ck_assert_msg(strstr(out, holder), "no '%s' in: %s", holder, out);
  ck_assert_int_eq(read_pidfile(pidfile), d1);

  /* The clients find the master from any directory. */
  char elsewhere[128];
  h_tmpdir(elsewhere, sizeof(elsewhere));
  const char *status[] = {"-c", p.conf, "status", NULL};
  int rc = h_aio(elsewhere, out, sizeof(out), status);
  ck_assert_msg(rc == 0, "aio status from %s exited %d: %s", elsewhere, rc,
                out);

  /* Killed outright: its workers follow (PDEATHSIG), the pidfile stays. */
  pid_t kids[2];
  ck_assert_int_eq(pu_live_children(d1, kids, 2), 2);
  ck_assert_int_eq(kill(d1, SIGKILL), 0);
  ck_assert_int_eq(h_wait_gone(&d1, 1, 5000), 0);
  ck_assert_int_eq(h_wait_gone(kids, 2, 5000), 0);
  ck_assert_int_eq(read_pidfile(pidfile), d1);

  /* A new daemon takes the stale pidfile over. */
  ops_expect(&p, 0, out, sizeof(out), "run", "-d", NULL);
  pid_t d2 = read_pidfile(pidfile);
  ck_assert_int_gt(d2, 0);
  ck_assert_int_ne(d2, d1);
  assert_daemon_serves(d2, port);

  /* `aio stop` returns when it is gone, pidfile and socket removed. */
  ops_expect(&p, 0, out, sizeof(out), "stop", NULL);
  ck_assert(!h_pid_alive(d2));
  ck_assert_int_eq(access(pidfile, F_OK), -1);
  ck_assert_int_eq(access(sock, F_OK), -1);
  ops_expect(&p, 69, out, sizeof(out), "status", NULL);
}
END_TEST

START_TEST(test_daemon_reports_a_failed_start) {
  /* The address is taken: the parent of -d exits with the start's
   * status (69) and no pidfile is left behind. */
  int port = 0;
  int busy = h_listen_tcp(&port, 0);
  ck_assert_int_ge(busy, 0);
  struct aio_proc p;
  char conf[4096], out[8192], pidfile[256];
  conf_whoami(conf, sizeof(conf), port, "pidfile = aio.pid\n");
  ck_assert_int_eq(h_prepare(&p, conf, NULL), 0);
  snprintf(pidfile, sizeof(pidfile), "%s/aio.pid", p.dir);
  int rc = ops_aio(&p, out, sizeof(out), "run", "-d", NULL);
  close(busy);
  ck_assert_msg(rc == 69, "aio run -d on a busy port exited %d: %s", rc, out);
  ck_assert_int_eq(access(pidfile, F_OK), -1);
}
END_TEST

START_TEST(test_start_refusals_name_their_exit_status) {
  /* A port chosen by the kernel at each start: only the control socket
   * tells that this configuration already has a master. */
  struct aio_proc p = {0};
  char conf[4096], out[8192];
  snprintf(conf, sizeof(conf),
           "[aio]\nworkers = 1\n\n[server:echo]\nprotocol = aio.echo\n"
           "address = 127.0.0.1\nport = 0\n");
  h_start_ready(&p, conf, NULL);
  ops_expect(&p, 69, out, sizeof(out), "run", NULL);
  ck_assert_msg(strstr(out, "another aio master is running"), "%s", out);
  ck_assert_msg(!strstr(out, "worker 0 started"),
                "the second master forked a worker: %s", out);
  ck_assert_int_eq(pu_live_children(p.pid, NULL, 0), 1);

  /* A pidfile that cannot be created. */
  ops_expect(&p, 73, out, sizeof(out), "run", "--pidfile",
             "/nonexistent-aio-dir/aio.pid", NULL);
  ops_expect(&p, 0, out, sizeof(out), "status", NULL);
  h_stop_ok(&p);
}
END_TEST

/* ---- status -------------------------------------------------------------- */

static double real_field(const json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  ck_assert_msg(json_is_real(v), "\"%s\" is not a number", key);
  return json_real_value(v);
}

static const char *str_field(const json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  ck_assert_msg(json_is_string(v), "\"%s\" is not a string", key);
  return json_string_value(v);
}

/* Every field of `aio status --json` for a steady master of n workers in
 * generation gen. */
static void assert_status(const struct aio_proc *p, json_t *st, int n, int gen,
                          int reloads) {
  ck_assert_int_eq(ops_int(st, "pid"), p->pid);
  ck_assert_str_eq(str_field(st, "version"), AIO_VERSION);
  double up = real_field(st, "uptime");
  ck_assert(up >= 0 && up < 120);
  ck_assert_str_eq(str_field(st, "config"), p->conf);
  ck_assert_int_eq(ops_int(st, "generation"), gen);
  ck_assert_int_eq(ops_int(st, "workers"), n);
  ck_assert_int_eq(ops_int(st, "reloads"), reloads);
  json_t *procs = json_object_get(st, "procs");
  ck_assert(json_is_array(procs));
  ck_assert_int_eq(json_array_size(procs), n);
  pid_t kids[16];
  int nk = pu_live_children(p->pid, kids, 16);
  unsigned slots = 0;
  size_t i;
  json_t *w;
  json_int_t last = -1;
  json_array_foreach(procs, i, w) {
    json_int_t slot = ops_int(w, "slot");
    ck_assert(slot >= 0 && slot < n);
    ck_assert_msg(slot > last, "slot %lld listed after slot %lld",
                  (long long)slot, (long long)last); /* in slot order */
    last = slot;
    slots |= 1u << slot;
    ck_assert_msg(pu_pid_in((pid_t)ops_int(w, "pid"), kids, nk),
                  "procs[%zu].pid %lld is not a child of the master", i,
                  (long long)ops_int(w, "pid"));
    ck_assert_str_eq(str_field(w, "state"), "ready");
    ck_assert_int_eq(ops_int(w, "generation"), gen);
    double wup = real_field(w, "uptime");
    ck_assert(wup >= 0 && wup <= up + 0.5);
    ck_assert_int_eq(ops_int(w, "restarts"), 0);
    ck_assert_int_ge(ops_int(w, "connections"), 0);
    ck_assert_int_gt(ops_int(w, "rss"), 0);
    ck_assert_int_gt(ops_int(w, "private"), 0);
    ck_assert_int_le(ops_int(w, "private"), ops_int(w, "rss"));
    json_t *bus = json_object_get(w, "bus");
    ck_assert_int_ge(ops_int(bus, "pending"), 0);
    ck_assert_int_ge(ops_int(bus, "journal"), 0);
    ck_assert_int_ge(ops_int(bus, "ring_bytes"), 0);
  }
  ck_assert_int_ge(ops_int(st, "backlog"), 0);
  ck_assert_int_eq(slots, (1u << n) - 1); /* each slot once */
}

START_TEST(test_status_reports_master_and_workers) {
  struct aio_proc p;
  char out[8192];
  int port = start_whoami(&p, NULL);
  json_t *st = ops_status(&p);
  assert_status(&p, st, 2, 1, 0);
  json_decref(st);

  /* An open connection shows up within a heartbeat or two. */
  int fd = h_connect(port, 5000);
  ck_assert_int_ge(fd, 0);
  char buf[64];
  ck_assert_int_eq(h_send(fd, "x\n", 2), 0);
  ck_assert_int_gt(h_recv_until(fd, buf, sizeof(buf), "\n", 5000), 0);
  ck_assert_int_eq(ops_wait_connections(&p, 1, 5000), 0);
  close(fd);

  ops_expect(&p, 0, out, sizeof(out), "reload", NULL);
  long long deadline = h_now_ms() + 10000;
  for (;;) {
    st = ops_status(&p);
    if (json_array_size(json_object_get(st, "procs")) == 2 ||
        h_now_ms() > deadline)
      break;
    json_decref(st);
    usleep(20000);
  }
  assert_status(&p, st, 2, 2, 1);
  json_decref(st);

  /* For humans: a summary, a header row, one row per worker. */
  ops_expect(&p, 0, out, sizeof(out), "status", NULL);
  ck_assert_msg(strstr(out, "SLOT") && strstr(out, "PID") &&
                    strstr(out, "STATE") && strstr(out, "RSS"),
                "no header row in: %s", out);
  char master[64];
  snprintf(master, sizeof(master), "master pid %d", (int)p.pid);
  ck_assert_msg(strstr(out, master), "no '%s' in: %s", master, out);
  pid_t kids[2];
  ck_assert_int_eq(pu_live_children(p.pid, kids, 2), 2);
  for (int i = 0; i < 2; i++) {
    char pid[32];
    snprintf(pid, sizeof(pid), " %d ", (int)kids[i]);
    ck_assert_msg(strstr(out, pid), "worker %d not listed: %s", (int)kids[i],
                  out);
  }
  h_stop_ok(&p);
}
END_TEST

/* ---- emit --------------------------------------------------------------- */

START_TEST(test_emit_reaches_a_listener) {
  struct aio_proc p = {0};
  char conf[4096], out[4096], events[256];
  h_tmpdir(p.dir, sizeof(p.dir));
  snprintf(events, sizeof(events), "%s/events.jsonl", p.dir);
  h_conf(conf, sizeof(conf), "opsmod", "workers = 2\n");
  h_conf_add(conf, sizeof(conf),
             "\n[opsmod]\nout = %s\n\n[listen:ops]\nops-ping = opsmod.record\n",
             events);
  h_start_ready(&p, conf, &(struct h_opts){.dir = p.dir});
  ops_expect(&p, 0, out, sizeof(out), "emit", "ops-ping",
             "{\"n\": 7, \"who\": \"test\"}", NULL);
  long long deadline = h_now_ms() + 5000;
  char *got = h_slurp(events);
  while (strstr(got, "\"ops-ping\"") == NULL && h_now_ms() < deadline) {
    free(got);
    usleep(10000);
    got = h_slurp(events);
  }
  json_t *rec = json_loads(got, JSON_DISABLE_EOF_CHECK, NULL);
  ck_assert_msg(rec, "no record in %s: %s", events, got);
  ck_assert_str_eq(json_string_value(json_object_get(rec, "sig")), "ops-ping");
  json_t *data = json_object_get(rec, "data");
  ck_assert_int_eq(ops_int(data, "n"), 7);
  ck_assert_str_eq(json_string_value(json_object_get(data, "who")), "test");
  pid_t kids[2];
  ck_assert_int_eq(pu_live_children(p.pid, kids, 2), 2);
  ck_assert(pu_pid_in((pid_t)ops_int(rec, "pid"), kids, 2));
  json_decref(rec);
  free(got);

  /* No data is null; bad JSON is a usage error, and nothing is sent. */
  ops_expect(&p, 0, out, sizeof(out), "emit", "ops-ping", NULL);
  ops_expect(&p, 64, out, sizeof(out), "emit", "ops-ping", "{nope", NULL);
  ck_assert_ptr_nonnull(strstr(out, "not JSON"));
  ops_expect(&p, 64, out, sizeof(out), "emit", NULL);
  deadline = h_now_ms() + 5000;
  int lines = 0;
  while (h_now_ms() < deadline) {
    got = h_slurp(events);
    lines = 0;
    for (char *c = got; *c; c++)
      lines += *c == '\n';
    free(got);
    if (lines >= 2)
      break;
    usleep(10000);
  }
  ck_assert_int_eq(lines, 2);
  h_stop_ok(&p);
}
END_TEST

START_TEST(test_control_commands_without_a_master_exit_69) {
  struct aio_proc p;
  char conf[4096], out[4096];
  conf_whoami(conf, sizeof(conf), h_free_port(), NULL);
  ck_assert_int_eq(h_prepare(&p, conf, NULL), 0);
  static const char *const cmds[][3] = {
      {"status", NULL, NULL}, {"status", "--json", NULL},
      {"reload", NULL, NULL}, {"stop", NULL, NULL},
      {"emit", "x", NULL},    {"scale", "3", NULL}};
  for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
    ops_expect(&p, 69, out, sizeof(out), cmds[i][0], cmds[i][1], NULL);
    ck_assert_msg(strstr(out, "no master is running"), "aio %s said: %s",
                  cmds[i][0], out);
  }
}
END_TEST

/* ---- a control socket fed garbage ---------------------------------------- */

static void assert_error_reply(const char *sock, const char *req, size_t len,
                               const char *want) {
  char buf[4096];
  int n = ops_raw_request(sock, req, len, buf, sizeof(buf), 5000);
  ck_assert_msg(n > 0, "no reply to %.40s", req);
  json_t *r = json_loads(buf, JSON_DISABLE_EOF_CHECK, NULL);
  ck_assert_msg(json_is_object(r), "reply is not JSON: %s", buf);
  ck_assert(json_is_false(json_object_get(r, "ok")));
  const char *err = json_string_value(json_object_get(r, "error"));
  ck_assert_msg(err && strstr(err, want), "reply to %.40s: %s", req, buf);
  json_decref(r);
}

START_TEST(test_control_socket_survives_malformed_requests) {
  struct aio_proc p;
  char sock[256];
  int port = start_whoami(&p, "control = ctl.sock\n");
  snprintf(sock, sizeof(sock), "%s/ctl.sock", p.dir);
  struct stat sb;
  ck_assert_int_eq(stat(sock, &sb), 0);
  ck_assert_int_eq(sb.st_mode & 0777, 0600);
  pid_t before[2];
  ck_assert_int_eq(pu_live_children(p.pid, before, 2), 2);

  /* A client that connects and says nothing blocks nobody. */
  int idle = h_connect_unix(sock, 5000);
  ck_assert_int_ge(idle, 0);

  assert_error_reply(sock, "hello\n", 6, "not a JSON object");
  assert_error_reply(sock, "[1,2]\n", 6, "not a JSON object");
  assert_error_reply(sock, "{\"cmd\":\"bogus\"}\n", 16, "unknown command");
  assert_error_reply(sock, "{\"nocmd\":1}\n", 12, "missing");
  assert_error_reply(sock, "{\"cmd\":\"scale\",\"workers\":0}\n", 28,
                     "scale needs");
  assert_error_reply(sock, "{\"cmd\":\"emit\"}\n", 15, "emit needs");
  assert_error_reply(sock, "{\"cmd\":\"stop\",\"now\":\"yes\"}\n", 27,
                     "\"now\"");
  assert_error_reply(sock, "{\"cmd\":1}\n", 10, "missing");
  assert_error_reply(sock, "{\"cmd\":\"status\",\"cmd\":\"stop\"}\n", 31,
                     "not a JSON object");

  /* Two requests in one write get two replies, in order. */
  char buf[65536];
  const char two[] = "{\"cmd\":\"bogus\"}\n{\"cmd\":\"status\"}\n";
  int fd = h_connect_unix(sock, 5000);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(h_send(fd, two, sizeof(two) - 1), 0);
  int n = h_recv_until(fd, buf, sizeof(buf), "\"procs\"", 5000);
  ck_assert_int_gt(n, 0);
  ck_assert_msg(strstr(buf, "unknown command") &&
                    strstr(buf, "unknown command") < strstr(buf, "\"procs\""),
                "replies: %s", buf);
  close(fd);

  /* More than 64 KiB with no newline: an error, then the door. */
  size_t big = 70 * 1024;
  char *junk = malloc(big + 1);
  memset(junk, 'x', big);
  junk[big] = '\0';
  n = ops_raw_request(sock, junk, big, buf, sizeof(buf), 5000);
  ck_assert_msg(n == 0 || (n > 0 && strstr(buf, "too large")),
                "oversize request got: %.200s", buf);
  /* And a well-formed JSON line that is too long. */
  const char head[] = "{\"cmd\":\"status\",\"pad\":\"";
  memcpy(junk, head, sizeof(head) - 1);
  junk[big - 3] = '"';
  junk[big - 2] = '}';
  junk[big - 1] = '\n';
  n = ops_raw_request(sock, junk, big, buf, sizeof(buf), 5000);
  ck_assert_msg(n == 0 || (n > 0 && strstr(buf, "\"ok\":false")),
                "oversize line got: %.200s", buf);
  free(junk);

  /* Binary garbage with NULs. */
  const char bin[] = "\x00\xff\xfe{\"cmd\"\x00:\"status\"}\n";
  assert_error_reply(sock, bin, sizeof(bin) - 1, "not a JSON object");

  /* The master is unmoved: same workers, serving, answering status. */
  close(idle);
  char out[8192];
  ops_expect(&p, 0, out, sizeof(out), "status", NULL);
  pid_t now[2];
  ck_assert_int_eq(pu_live_children(p.pid, now, 2), 2);
  ck_assert(pu_pid_in(now[0], before, 2) && pu_pid_in(now[1], before, 2));
  ck_assert(pu_pid_in(pu_ask_pid(port), before, 2));
  h_stop_ok(&p);
}
END_TEST

/* ---- the control socket's bounds ------------------------------------------
 */

/* VmRSS of pid in kB, or -1. */
static long rss_kb(pid_t pid) {
  char path[64], line[256];
  snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "re");
  long kb = -1;
  while (f && fgets(line, sizeof(line), f))
    if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
      break;
  if (f)
    fclose(f);
  return kb;
}

/* The "control" counter key of `aio status --json` (-1 when absent). */
static long long control_counter(const struct aio_proc *p, const char *key) {
  json_t *st = ops_status(p);
  json_t *v = json_object_get(json_object_get(st, "control"), key);
  long long n = json_is_integer(v) ? json_integer_value(v) : -1;
  json_decref(st);
  return n;
}

/* A status request of another client on sock must be answered within 1 s
 * (the master's answer, timed without the start of an aio process, which
 * is slow under ASan on a loaded machine). Returns the time it took in ms;
 * *control gets the reply's "control" counter key (-1 when absent). */
static long long timed_status(const char *sock, const char *key,
                              long long *control) {
  static const char req[] = "{\"cmd\":\"status\"}\n";
  char buf[16384];
  long long t0 = h_now_ms();
  int n = ops_raw_request(sock, req, sizeof(req) - 1, buf, sizeof(buf), 5000);
  long long ms = h_now_ms() - t0;
  ck_assert_msg(n > 0 && strstr(buf, "\"ok\":true"), "status got: %.200s", buf);
  ck_assert_msg(ms < 1000,
                "status took %lld ms beside a client that does not read", ms);
  json_t *r = json_loads(buf, JSON_DISABLE_EOF_CHECK, NULL);
  json_t *v = json_object_get(json_object_get(r, "control"), key);
  *control = json_is_integer(v) ? json_integer_value(v) : -1;
  json_decref(r);
  return ms;
}

#define HOSTILE_REQUESTS 100000

/* What the master's RSS may keep after the hostile client is gone. ASan's
 * allocator never gives back what it mapped (nor its shadow), so there
 * RSS stays where it peaked, and only the bound during the attack holds. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_AFTER_SLACK_KB (16 * 1024)
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RSS_AFTER_SLACK_KB (16 * 1024)
#endif
#endif
#ifndef RSS_AFTER_SLACK_KB
#define RSS_AFTER_SLACK_KB (4 * 1024)
#endif

/* A child that pipelines HOSTILE_REQUESTS status requests on path and
 * never reads a reply; it stays connected until killed. */
static pid_t start_hostile_client(const char *path) {
  int fd = h_connect_unix(path, 5000);
  ck_assert_int_ge(fd, 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    static const char req[] = "{\"cmd\":\"status\"}\n";
    size_t one = sizeof(req) - 1, per = 1000;
    char *chunk = malloc(one * per);
    for (size_t i = 0; chunk && i < per; i++)
      memcpy(chunk + i * one, req, one);
    for (int sent = 0; chunk && sent < HOSTILE_REQUESTS; sent += (int)per)
      if (h_send(fd, chunk, one * per) < 0)
        break; /* dropped by the master */
    for (;;)
      pause();
  }
  close(fd);
  return pid;
}

START_TEST(test_control_client_that_never_reads_is_bounded) {
  struct aio_proc p;
  char sock[256], conf[4096], asan[512];
  /* Under ASan freed memory waits in a quarantine (256 MB by default), and
   * RSS would measure that, not what the master holds: keep it small. */
  const char *given = getenv("ASAN_OPTIONS");
  snprintf(asan, sizeof(asan), "ASAN_OPTIONS=%s%squarantine_size_mb=1",
           given ? given : "", given && *given ? ":" : "");
  const char *env[] = {asan, NULL};
  conf_whoami(conf, sizeof(conf), h_free_port(),
              "control = ctl.sock\ncontrol_timeout = 2\n");
  h_start_ready(&p, conf, &(struct h_opts){.env = env});
  snprintf(sock, sizeof(sock), "%s/ctl.sock", p.dir);
  long long n;
  long long idle_ms = timed_status(sock, "paused", &n);
  ck_assert_int_eq(n, 0);
  long idle = rss_kb(p.pid);
  ck_assert_int_gt(idle, 0);

  long long t0 = h_now_ms(), paused_at = -1, dropped_at = -1;
  pid_t hostile = start_hostile_client(sock);
  /* Until it is dropped: memory stays bounded, others are served, and it
   * is not read while its replies wait (paused). */
  long peak = idle, worst_ms = 0;
  int statuses = 0;
  while (dropped_at < 0 && h_now_ms() - t0 < 20000) {
    long long ms = timed_status(sock, paused_at < 0 ? "paused" : "dropped", &n);
    worst_ms = ms > worst_ms ? (long)ms : worst_ms;
    statuses++;
    if (paused_at < 0 && n >= 1) {
      paused_at = h_now_ms() - t0;
      /* `aio status` itself works beside it. */
      char out[16384];
      ops_expect(&p, 0, out, sizeof(out), "status", NULL);
    } else if (paused_at >= 0 && n >= 1) {
      dropped_at = h_now_ms() - t0;
    }
    long r = rss_kb(p.pid);
    peak = r > peak ? r : peak;
    ck_assert_msg(r - idle < 16 * 1024,
                  "master RSS %ld kB, %ld kB at idle, beside a client that "
                  "does not read",
                  r, idle);
    usleep(10 * 1000); /* a sample every 10 ms or so is plenty */
  }
  ck_assert_msg(paused_at >= 0, "the client that does not read was still "
                                "read after 20 s");
  /* Dropped once it has left its replies unread for control_timeout (2 s),
   * give or take a sweep (0.5 s) and a loaded machine. */
  ck_assert_msg(dropped_at >= 0 && dropped_at - paused_at < 2000 + 3000,
                "the client that does not read was not dropped within "
                "control_timeout + 3 s of being paused (paused at %lld ms, "
                "dropped at %lld ms)",
                paused_at, dropped_at);
  ck_assert_int_eq(h_wait_log(&p, "dropped a client", 5000), 0);
  ck_assert_int_eq(control_counter(&p, "clients"), 1); /* this status */
  long after = rss_kb(p.pid);
  fprintf(stderr,
          "test_control_client_that_never_reads_is_bounded: RSS %ld kB idle, "
          "%ld kB peak, %ld kB after; status %lld ms alone, %d beside it, "
          "the slowest %ld ms; paused at %lld ms, dropped at %lld ms\n",
          idle, peak, after, idle_ms, statuses, worst_ms, paused_at,
          dropped_at);
  ck_assert_int_lt(after - idle, RSS_AFTER_SLACK_KB);
  kill(hostile, SIGKILL);
  waitpid(hostile, NULL, 0);
  h_stop_ok(&p);
}
END_TEST

/* The reply queue's bound is [aio] control_buffer: a client that never
 * reads is paused once that many bytes of replies wait for it (give or
 * take one turn's batch of 8 replies), not at the 64 KiB default, and
 * `aio status` shows the bound. */
START_TEST(test_control_buffer_sets_the_reply_queue_bound) {
  struct aio_proc p;
  char sock[256], conf[4096], buf[16384];
  conf_whoami(conf, sizeof(conf), h_free_port(),
              "control = ctl.sock\ncontrol_timeout = 30\n"
              "control_buffer = 4096\n");
  h_start_ready(&p, conf, NULL);
  snprintf(sock, sizeof(sock), "%s/ctl.sock", p.dir);
  static const char req[] = "{\"cmd\":\"status\"}\n";
  int reply =
      ops_raw_request(sock, req, sizeof(req) - 1, buf, sizeof(buf), 5000);
  ck_assert_int_gt(reply, 0);
  ck_assert_int_eq(control_counter(&p, "limit_bytes"), 4096);
  pid_t hostile = start_hostile_client(sock);
  long long deadline = h_now_ms() + 20000;
  while (control_counter(&p, "paused") < 1 && h_now_ms() < deadline)
    usleep(20 * 1000);
  long long high = control_counter(&p, "high_bytes");
  fprintf(stderr,
          "test_control_buffer_sets_the_reply_queue_bound: a status reply "
          "%d bytes, the most waiting for the client %lld bytes\n",
          reply, high);
  ck_assert_msg(control_counter(&p, "paused") >= 1,
                "the client that does not read was never paused");
  ck_assert_msg(high > 0 && high <= 4096 + 8 * (long long)reply,
                "%lld bytes of replies waited for one client, past "
                "control_buffer = 4096 and a batch of 8 replies of %d bytes",
                high, reply);
  kill(hostile, SIGKILL);
  waitpid(hostile, NULL, 0);
  h_stop_ok(&p);
}
END_TEST

START_TEST(test_control_clients_are_bounded) {
  struct aio_proc p;
  char sock[256], out[8192];
  start_whoami(&p, "control = ctl.sock\ncontrol_timeout = 3\n");
  snprintf(sock, sizeof(sock), "%s/ctl.sock", p.dir);
  /* 64 silent clients fill the table (accepted in order, before the
   * status below)... */
  long long t0 = h_now_ms();
  int fds[64];
  for (int i = 0; i < 64; i++) {
    fds[i] = h_connect_unix(sock, 5000);
    ck_assert_int_ge(fds[i], 0);
  }
  /* ...so one more is refused at once, busy (75)... */
  int rc = ops_aio(&p, out, sizeof(out), "status", NULL);
  if (h_now_ms() - t0 < 2500) {
    ck_assert_msg(rc == 75, "aio status exited %d past 64 clients: %s", rc,
                  out);
    ck_assert_msg(strstr(out, "too many control clients"), "%s", out);
  }
  /* ...until one of them has been silent for control_timeout and makes
   * room. */
  long long deadline = h_now_ms() + 3000 + 5000;
  while ((rc = ops_aio(&p, out, sizeof(out), "status", "--json", NULL)) == 75 &&
         h_now_ms() < deadline)
    usleep(100 * 1000);
  ck_assert_msg(rc == 0, "aio status exited %d: %s", rc, out);
  json_t *st = json_loads(out, 0, NULL);
  json_t *ctl = json_object_get(st, "control");
  ck_assert_int_ge(ops_int(ctl, "refused"), 1);
  ck_assert_int_ge(ops_int(ctl, "dropped"), 1);
  ck_assert_int_le(ops_int(ctl, "clients"), 64);
  json_decref(st);
  for (int i = 0; i < 64; i++)
    close(fds[i]);
  h_stop_ok(&p);
}
END_TEST

/* ---- stop and scale ------------------------------------------------------ */

START_TEST(test_stop_drains_and_stop_now_does_not) {
  struct aio_proc p = {0};
  char conf[4096], out[4096], buf[256];
  int slow = h_free_port();
  conf_whoami(conf, sizeof(conf), h_free_port(), NULL);
  h_conf_server(conf, sizeof(conf), "slow", "testmod.slow", slow);

  /* Graceful: the request in flight is answered, then aio is gone (the
   * test has not reaped it yet: a zombie counts as gone). */
  h_start_ready(&p, conf, NULL);
  int fd = h_connect(slow, 5000);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(ops_wait_connections(&p, 1, 5000), 0); /* accepted */
  ck_assert_int_eq(h_send(fd, "sleep 600\n", 10), 0);
  long long t0 = h_now_ms();
  ops_expect(&p, 0, out, sizeof(out), "stop", NULL);
  ck_assert_int_lt(h_now_ms() - t0, 4000);
  ck_assert_int_eq(h_recv_until(fd, buf, sizeof(buf), "\n", 1000), 5);
  ck_assert_str_eq(buf, "done\n");
  close(fd);
  ck_assert_int_eq(h_wait_exit(&p, 1000), 0);
  h_assert_exit_status(&p, 0);

  /* --now: a long request does not hold it up. */
  memset(&p, 0, sizeof(p));
  h_start_ready(&p, conf, NULL);
  fd = h_connect(slow, 5000);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(ops_wait_connections(&p, 1, 5000), 0);
  ck_assert_int_eq(h_send(fd, "sleep 8000\n", 11), 0);
  t0 = h_now_ms();
  ops_expect(&p, 0, out, sizeof(out), "stop", "--now", NULL);
  ck_assert_int_lt(h_now_ms() - t0, 4000);
  close(fd);
  ck_assert_int_eq(h_wait_exit(&p, 1000), 0);
}
END_TEST

/* aio stop waits as long as the running master's graceful_timeout, which
 * it says in its reply, not the one in the file on disk now: here the file
 * says 0 (nobody reloaded), the master drains for 6.5 s of its 8. */
START_TEST(test_stop_waits_for_the_running_masters_graceful_timeout) {
  struct aio_proc p = {0};
  char conf[4096], out[4096], buf[256];
  int slow = h_free_port();
  h_conf(conf, sizeof(conf), "testmod", "workers = 1\ngraceful_timeout = 8\n");
  h_conf_server(conf, sizeof(conf), "slow", "testmod.slow", slow);
  h_start_ready(&p, conf, NULL);
  int fd = h_connect(slow, 5000);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(ops_wait_connections(&p, 1, 5000), 0);
  ck_assert_int_eq(h_send(fd, "sleep 6500\n", 11), 0);
  h_conf(conf, sizeof(conf), "testmod", "workers = 1\ngraceful_timeout = 0\n");
  h_conf_server(conf, sizeof(conf), "slow", "testmod.slow", slow);
  ck_assert_int_eq(h_write(p.dir, "aio.conf", conf), 0);
  long long t0 = h_now_ms();
  ops_expect(&p, 0, out, sizeof(out), "stop", NULL);
  ck_assert_int_ge(h_now_ms() - t0, 5000); /* it did wait for the drain */
  ck_assert_int_eq(h_recv_until(fd, buf, sizeof(buf), "\n", 1000), 5);
  ck_assert_str_eq(buf, "done\n");
  close(fd);
  ck_assert_int_eq(h_wait_exit(&p, 1000), 0);
  h_assert_exit_status(&p, 0);
}
END_TEST

START_TEST(test_scale_changes_the_worker_count) {
  struct aio_proc p;
  char out[4096];
  int port = start_whoami(&p, NULL);
  ops_expect(&p, 0, out, sizeof(out), "scale", "3", NULL);
  ck_assert_ptr_nonnull(strstr(out, "workers: 3"));
  ck_assert_int_eq(pu_wait_live_children(p.pid, 3, 10000), 0);
  long long deadline = h_now_ms() + 10000;
  json_t *st;
  for (;;) { /* the third is ready a moment later */
    st = ops_status(&p);
    json_t *w = json_array_get(json_object_get(st, "procs"), 0);
    int ready = json_array_size(json_object_get(st, "procs")) == 3;
    size_t i;
    json_array_foreach(json_object_get(st, "procs"), i, w) ready &=
        strcmp(json_string_value(json_object_get(w, "state")), "ready") == 0;
    if (ready || h_now_ms() > deadline)
      break;
    json_decref(st);
    usleep(20000);
  }
  assert_status(&p, st, 3, 1, 0);
  json_decref(st);
  ops_expect(&p, 64, out, sizeof(out), "scale", "0", NULL);
  ops_expect(&p, 64, out, sizeof(out), "scale", "x", NULL);
  ops_expect(&p, 0, out, sizeof(out), "scale", "1", NULL);
  ck_assert_int_eq(pu_wait_live_children(p.pid, 1, 10000), 0);
  for (int i = 0; i < 4; i++)
    pu_ask_pid(port);
  h_stop_ok(&p);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_ops_control");
  TCase *tc = tcase_create("control");
  tcase_set_timeout(tc, 90);
  tcase_add_test(tc, test_daemon_pidfile_lock_takeover_and_stop);
  tcase_add_test(tc, test_daemon_reports_a_failed_start);
  tcase_add_test(tc, test_start_refusals_name_their_exit_status);
  tcase_add_test(tc, test_status_reports_master_and_workers);
  tcase_add_test(tc, test_emit_reaches_a_listener);
  tcase_add_test(tc, test_control_commands_without_a_master_exit_69);
  tcase_add_test(tc, test_control_socket_survives_malformed_requests);
  tcase_add_test(tc, test_control_client_that_never_reads_is_bounded);
  tcase_add_test(tc, test_control_buffer_sets_the_reply_queue_bound);
  tcase_add_test(tc, test_control_clients_are_bounded);
  tcase_add_test(tc, test_stop_drains_and_stop_now_does_not);
  tcase_add_test(tc, test_stop_waits_for_the_running_masters_graceful_timeout);
  tcase_add_test(tc, test_scale_changes_the_worker_count);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
