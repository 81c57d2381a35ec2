/*
 * test_metrics.c - [aio] metrics (project issue 14): the master's
 * Prometheus endpoint, read by Debian's prometheus_client parser
 * (prom_parse.py), against what the test did: connections made while
 * scrapes run, a worker SIGKILLed, a reload, /healthz once no worker
 * serves, and clients that try to hold the endpoint.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "ops_util.h"
#include "process_util.h"
#include "prom_util.h"

#define HELLO_REQ "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"

struct fixture {
  struct aio_proc p;
  int web, metrics;
};

/* aio serving aio.hello as [server:web], with metrics on a free port and
 * the [aio] lines extra. */
static void start(struct fixture *f, const char *extra) {
  char conf[4096];
  f->web = h_free_port();
  f->metrics = h_free_port();
  h_conf(conf, sizeof(conf), "testmod", "metrics = 127.0.0.1:%d\n%s",
         f->metrics, extra);
  h_conf_server(conf, sizeof(conf), "web", "aio.hello", f->web);
  h_start_ready(&f->p, conf, NULL);
}

static int get(const struct fixture *f, const char *path, char **out,
               int timeout_ms) {
  return prom_get(f->metrics, path, out, timeout_ms);
}

/* GET path must answer code. */
static void expect_get(const struct fixture *f, const char *path, int code) {
  char *answer;
  int got = get(f, path, &answer, 5000);
  ck_assert_msg(got == code, "GET %s: %d, not %d: %s", path, got, code, answer);
  free(answer);
}

static char *scrape(const struct fixture *f) {
  return prom_scrape(f->metrics, f->p.dir);
}

#define WEB "server=\"web\""

static double web(const struct fixture *f, const char *name) {
  char *parsed = scrape(f);
  double v = prom_sum(parsed, name, WEB, NULL);
  free(parsed);
  return v;
}

/* Wait until the sum of name (with filters) is want. It polls the raw
 * body (whose sample lines sum_of reads as well as the parser's): a
 * parser run per poll would miss a short state on a busy machine. */
static int wait_value(const struct fixture *f, const char *name,
                      const char *filter, double want, int timeout_ms) {
  long long until = h_now_ms() + timeout_ms;
  for (;;) {
    char *answer;
    ck_assert_int_eq(get(f, "/metrics", &answer, 5000), 200);
    double v = prom_sum(answer, name, filter, NULL);
    free(answer);
    if (v == want)
      return 0;
    if (h_now_ms() > until)
      return -1;
    usleep(5 * 1000);
  }
}

/* ---- a real load ------------------------------------------------------ */

struct load {
  int port, n;
  int ok;
  long long bytes_in; /* the answers' bytes, as received */
  int first_bad;      /* the first exchange that failed, or -1 */
  int bad_result;     /* its enum h_result */
  long long bad_ms;   /* how long it took */
  int bad_errno;      /* and the errno behind it */
};

static void *run_load(void *arg) {
  struct load *l = arg;
  char buf[4096];
  l->first_bad = -1;
  for (int i = 0; i < l->n; i++) {
    long long t0 = h_now_ms();
    int r = h_exchange_once(l->port, HELLO_REQ, NULL, buf, sizeof(buf), 5000);
    if (r == H_OK) {
      l->ok++;
      l->bytes_in += (long long)strlen(buf);
    } else if (l->first_bad < 0) {
      l->first_bad = i;
      l->bad_result = r;
      l->bad_ms = h_now_ms() - t0;
      l->bad_errno = h_exchange_errno();
    }
  }
  return NULL;
}

/* n connections, scraped all along; every scrape parses, and accepted
 * never goes back. */
static void load_while_scraping(const struct fixture *f, int n,
                                struct load *l) {
  memset(l, 0, sizeof(*l));
  l->port = f->web;
  l->n = n;
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, run_load, l), 0);
  double last = 0;
  int scrapes = 0;
  for (;;) {
    /* The raw body (the same lines sum_of reads), and every tenth through
     * the parser. */
    double v;
    if (scrapes % 10 == 9) {
      v = web(f, "aio_connections_accepted_total");
    } else {
      char *answer;
      ck_assert_int_eq(get(f, "/metrics", &answer, 5000), 200);
      v = prom_sum(answer, "aio_connections_accepted_total", WEB, NULL);
      free(answer);
    }
    ck_assert_msg(v >= last, "accepted went back: %g after %g", v, last);
    last = v;
    scrapes++;
    if (pthread_tryjoin_np(t, NULL) == 0)
      break;
    usleep(2 * 1000);
  }
  ck_assert_msg(l->ok == n,
                "%d of %d exchanges failed; the first, #%d: %s (%s) after "
                "%lld ms",
                n - l->ok, n, l->first_bad, h_result_name(l->bad_result),
                strerror(l->bad_errno), l->bad_ms);
  fprintf(stderr, "figure: %d scrapes during %d connections\n", scrapes, n);
}

START_TEST(test_counts_match_the_load_and_never_go_back) {
  struct fixture f;
  start(&f, "workers = 2\n");
  char *parsed = scrape(&f);
  ck_assert_double_eq(
      prom_sum(parsed, "aio_build_info", "version=\"", "api=\"", NULL), 1);
  ck_assert_double_eq(prom_sum(parsed, "aio_worker_up", NULL), 2);
  double a0 = prom_sum(parsed, "aio_connections_accepted_total", WEB, NULL);
  double r0 = prom_sum(parsed, "aio_bytes_read_total", WEB, NULL);
  double w0 = prom_sum(parsed, "aio_bytes_written_total", WEB, NULL);
  ck_assert_double_eq(a0, 0);
  free(parsed);

  const int n = 1000;
  struct load l;
  load_while_scraping(&f, n, &l);
  /* Each connection is counted before its answer leaves: exact now. */
  parsed = scrape(&f);
  ck_assert_double_eq(
      prom_sum(parsed, "aio_connections_accepted_total", WEB, NULL), a0 + n);
  ck_assert_double_eq(prom_sum(parsed, "aio_bytes_read_total", WEB, NULL),
                      r0 + (double)n * strlen(HELLO_REQ));
  ck_assert_double_eq(prom_sum(parsed, "aio_bytes_written_total", WEB, NULL),
                      w0 + (double)l.bytes_in);
  ck_assert_double_eq(
      prom_sum(parsed, "aio_connections_refused_total", WEB, NULL), 0);
  /* Both slots served some (SO_REUSEPORT spreads them). */
  ck_assert(prom_sum(parsed, "aio_connections_accepted_total", WEB,
                     "slot=\"0\"", NULL) > 0);
  ck_assert(prom_sum(parsed, "aio_connections_accepted_total", WEB,
                     "slot=\"1\"", NULL) > 0);
  free(parsed);
  ck_assert_int_eq(wait_value(&f, "aio_connections_open", WEB, 0, 5000), 0);
  double total = a0 + n;

  /* A worker SIGKILLed: its counts stay in the totals. */
  pid_t kids[2];
  pu_workers(f.p.pid, kids, 2);
  ck_assert_int_eq(kill(kids[0], SIGKILL), 0);
  ck_assert_int_eq(
      wait_value(&f, "aio_worker_restarts_total", "reason=\"crash\"", 1, 10000),
      0);
  ck_assert_int_eq(wait_value(&f, "aio_worker_up", "slot=", 2, 10000), 0);
  ck_assert_double_eq(web(&f, "aio_connections_accepted_total"), total);
  ck_assert_double_eq(web(&f, "aio_connections_open"), 0);
  load_while_scraping(&f, 50, &l);
  total += 50;
  ck_assert_double_eq(web(&f, "aio_connections_accepted_total"), total);

  /* A reload: a new generation of workers, the same totals. */
  char out[4096];
  ops_expect(&f.p, 0, out, sizeof(out), "reload", NULL);
  parsed = scrape(&f);
  ck_assert_double_eq(
      prom_sum(parsed, "aio_connections_accepted_total", WEB, NULL), total);
  ck_assert_double_eq(
      prom_sum(parsed, "aio_reloads_total", "result=\"ok\"", NULL), 1);
  ck_assert_double_eq(
      prom_sum(parsed, "aio_worker_restarts_total", "reason=\"reload\"", NULL),
      2);
  ck_assert_double_eq(prom_sum(parsed, "aio_generation", NULL), 2);
  free(parsed);
  load_while_scraping(&f, 50, &l);
  total += 50;
  ck_assert_double_eq(web(&f, "aio_connections_accepted_total"), total);
  ck_assert_int_eq(wait_value(&f, "aio_connections_open", WEB, 0, 5000), 0);

  /* aio status says the same, per server and per worker. */
  json_t *st = ops_status(&f.p);
  json_t *sv = json_object_get(json_object_get(st, "servers"), "web");
  ck_assert_int_eq(ops_int(sv, "accepted"), (json_int_t)total);
  ck_assert_int_eq(ops_int(sv, "open"), 0);
  json_int_t per_worker = 0;
  size_t i;
  json_t *w;
  json_array_foreach(json_object_get(st, "procs"), i, w) {
    json_t *mine = json_object_get(json_object_get(w, "servers"), "web");
    if (ops_int(w, "generation") == 2)
      per_worker += ops_int(mine, "accepted");
  }
  ck_assert_int_eq(per_worker, 50); /* the new generation's own */
  json_decref(st);
  h_stop_ok(&f.p);
}
END_TEST

START_TEST(test_healthz_says_whether_a_worker_serves) {
  struct fixture f;
  /* max_restarts = 0: a slot whose worker dies is not respawned. */
  start(&f, "workers = 2\nmax_restarts = 0\n");
  expect_get(&f, "/healthz", 200);
  pid_t kids[2];
  pu_workers(f.p.pid, kids, 2);
  kill(kids[0], SIGKILL);
  ck_assert_int_eq(
      wait_value(&f, "aio_worker_restarts_total", "reason=\"crash\"", 1, 10000),
      0);
  expect_get(&f, "/healthz", 200);
  kill(kids[1], SIGKILL);
  long long until = h_now_ms() + 10000;
  int code;
  char *answer;
  while ((code = get(&f, "/healthz", &answer, 5000)) == 200 &&
         h_now_ms() < until) {
    free(answer);
    usleep(20 * 1000);
  }
  ck_assert_msg(code == 503, "healthz %d: %s", code, answer);
  free(answer);
  char *parsed = scrape(&f);
  ck_assert_double_eq(prom_sum(parsed, "aio_worker_up", NULL), 0);
  ck_assert_double_eq(
      prom_sum(parsed, "aio_worker_restarts_total", "reason=\"crash\"", NULL),
      2);
  free(parsed);
  /* Not found, not allowed. */
  expect_get(&f, "/nope", 404);
  char buf[1024];
  ck_assert_int_eq(h_exchange_once(f.metrics,
                                   "POST /metrics HTTP/1.1\r\nHost: t\r\n\r\n",
                                   NULL, buf, sizeof(buf), 5000),
                   H_OK);
  ck_assert_msg(strncmp(buf, "HTTP/1.1 405", 12) == 0, "%s", buf);
  h_stop_ok(&f.p);
}
END_TEST

/* Is fd closed by the peer (EOF or reset) within timeout_ms? */
static int closed_within(int fd, int timeout_ms) {
  long long until = h_now_ms() + timeout_ms;
  char buf[4096];
  for (;;) {
    int left = (int)(until - h_now_ms());
    if (left <= 0)
      return 0;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, left) <= 0)
      continue;
    ssize_t r = read(fd, buf, sizeof(buf));
    if (r <= 0)
      return 1;
  }
}

START_TEST(test_hostile_clients_cost_nothing) {
  struct fixture f;
  start(&f, "workers = 1\n");
  /* An endless head: 431 once it passes 8 KiB, then closed. */
  int big = h_connect(f.metrics, 2000);
  ck_assert_int_ge(big, 0);
  char head[16384];
  int n = snprintf(head, sizeof(head), "GET /metrics HTTP/1.1\r\nX: ");
  memset(head + n, 'a', sizeof(head) - (size_t)n);
  ck_assert_int_eq(h_send(big, head, sizeof(head)), 0);
  char buf[4096];
  ck_assert_int_gt(h_recv_until(big, buf, sizeof(buf), "\r\n\r\n", 5000), 0);
  ck_assert_msg(strncmp(buf, "HTTP/1.1 431", 12) == 0, "%s", buf);
  ck_assert(closed_within(big, 5000));
  close(big);

  /* 40 clients that never send: past 32 the oldest make room. */
  int silent[40];
  long long opened = h_now_ms();
  for (int i = 0; i < 40; i++) {
    silent[i] = h_connect(f.metrics, 2000);
    ck_assert_int_ge(silent[i], 0);
  }
  /* A scrape beside them is answered at once. */
  long long t0 = h_now_ms();
  char *answer;
  ck_assert_int_eq(get(&f, "/metrics", &answer, 5000), 200);
  long long took = h_now_ms() - t0;
  free(answer);
  char *parsed = scrape(&f);
  fprintf(stderr, "figure: a scrape beside 40 silent clients took %lld ms\n",
          took);
  ck_assert_msg(took < 1000, "the scrape took %lld ms", took);
  ck_assert(prom_sum(parsed, "aio_metrics_clients_rejected_total",
                     "reason=\"evicted\"", NULL) >= 8);
  ck_assert_double_eq(prom_sum(parsed, "aio_metrics_clients_rejected_total",
                               "reason=\"too_large\"", NULL),
                      1);
  free(parsed);
  /* The newest silent one is cut off by the 5 s timeout. */
  ck_assert(closed_within(silent[39], 8000));
  long long after = h_now_ms() - opened;
  fprintf(stderr, "figure: a silent client was closed after %lld ms\n", after);
  ck_assert_msg(after >= 4500, "closed after %lld ms", after);
  for (int i = 0; i < 40; i++)
    close(silent[i]);
  parsed = scrape(&f);
  ck_assert(prom_sum(parsed, "aio_metrics_clients_rejected_total",
                     "reason=\"timeout\"", NULL) >= 1);
  free(parsed);
  h_stop_ok(&f.p);
}
END_TEST

/* What was only in the log: refusals over max_connections and timeouts,
 * in /metrics and in aio status. */
START_TEST(test_refusals_and_timeouts_are_counted) {
  struct fixture f;
  char conf[4096];
  f.web = h_free_port();
  f.metrics = h_free_port();
  h_conf(conf, sizeof(conf), "testmod",
         "workers = 1\nmax_connections = 1\nmetrics = 127.0.0.1:%d\n",
         f.metrics);
  h_conf_server(conf, sizeof(conf), "web", "aio.hello", f.web);
  h_conf_add(conf, sizeof(conf), "header_timeout = 1\n");
  h_start_ready(&f.p, conf, NULL);
  int a = h_connect(f.web, 2000);
  ck_assert_int_ge(a, 0);
  ck_assert_int_eq(wait_value(&f, "aio_connections_open", WEB, 1, 5000), 0);
  int b = h_connect(f.web, 2000);
  ck_assert_int_ge(b, 0);
  ck_assert(closed_within(b, 5000)); /* over max_connections */
  close(b);
  ck_assert(closed_within(a, 5000)); /* header_timeout */
  close(a);
  ck_assert_int_eq(wait_value(&f, "aio_connections_timed_out_total",
                              "kind=\"deadline\"", 1, 5000),
                   0);
  char *parsed = scrape(&f);
  ck_assert_double_eq(
      prom_sum(parsed, "aio_connections_refused_total", WEB, NULL), 1);
  ck_assert_double_eq(
      prom_sum(parsed, "aio_connections_accepted_total", WEB, NULL), 1);
  free(parsed);
  ck_assert_int_eq(wait_value(&f, "aio_connections_open", WEB, 0, 5000), 0);
  json_t *st = ops_status(&f.p);
  json_t *sv = json_object_get(json_object_get(st, "servers"), "web");
  ck_assert_int_eq(ops_int(sv, "refused"), 1);
  ck_assert_int_eq(ops_int(sv, "deadline"), 1);
  ck_assert_int_eq(ops_int(sv, "accepted"), 1);
  json_decref(st);
  char out[8192];
  ops_expect(&f.p, 0, out, sizeof(out), "status", NULL);
  ck_assert_msg(strstr(out, "SERVER ") && strstr(out, "\nweb "), "%s", out);
  h_stop_ok(&f.p);
}
END_TEST

/* Schedule runs by result, kept across a reload; a worker killed for its
 * heartbeat's silence is counted as such. */
START_TEST(test_schedules_and_heartbeat_restarts) {
  struct fixture f;
  char conf[4096], out[4096];
  f.web = h_free_port();
  f.metrics = h_free_port();
  h_conf(conf, sizeof(conf), "testmod busmod",
         "workers = 1\ntimeout = 1\nmetrics = 127.0.0.1:%d\n", f.metrics);
  h_conf_server(conf, sizeof(conf), "web", "aio.hello", f.web);
  /* busmod.flaky: odd runs succeed, even runs fail. */
  h_conf_add(conf, sizeof(conf),
             "\n[schedule:flaky]\nevery = 0.05\nfunc = busmod.flaky\n");
  h_start_ready(&f.p, conf, NULL);
  const char *job = "schedule=\"flaky\"";
  long long until = h_now_ms() + 10000;
  double ok = 0, failed = 0;
  while (h_now_ms() < until && (ok < 3 || failed < 3)) {
    char *parsed = scrape(&f);
    ok =
        prom_sum(parsed, "aio_schedule_runs_total", job, "result=\"ok\"", NULL);
    failed = prom_sum(parsed, "aio_schedule_runs_total", job,
                      "result=\"failed\"", NULL);
    double done =
        prom_sum(parsed, "aio_schedule_run_duration_seconds_count", job, NULL);
    ck_assert_double_eq(done, ok + failed);
    free(parsed);
  }
  ck_assert(ok >= 3 && failed >= 3);
  ops_expect(&f.p, 0, out, sizeof(out), "reload", NULL);
  char *parsed = scrape(&f);
  ck_assert(prom_sum(parsed, "aio_schedule_runs_total", job, "result=\"ok\"",
                     NULL) >= ok);
  ck_assert(prom_sum(parsed, "aio_schedule_runs_total", job,
                     "result=\"failed\"", NULL) >= failed);
  free(parsed);

  /* A stopped worker sends no heartbeat: killed after timeout = 1. */
  pid_t kid;
  pu_workers(f.p.pid, &kid, 1);
  ck_assert_int_eq(kill(kid, SIGSTOP), 0);
  ck_assert_int_eq(wait_value(&f, "aio_worker_restarts_total",
                              "reason=\"heartbeat\"", 1, 10000),
                   0);
  ck_assert_int_eq(wait_value(&f, "aio_worker_up", "slot=", 1, 10000), 0);
  parsed = scrape(&f);
  ck_assert_double_eq(
      prom_sum(parsed, "aio_worker_restarts_total", "reason=\"crash\"", NULL),
      0);
  free(parsed);
  h_stop_ok(&f.p);
}
END_TEST

/* A reload to another address moves the endpoint. */
START_TEST(test_reload_moves_the_endpoint) {
  struct fixture f;
  start(&f, "workers = 1\n");
  expect_get(&f, "/healthz", 200);
  int old = f.metrics;
  f.metrics = h_free_port();
  char conf[4096], out[4096];
  h_conf(conf, sizeof(conf), "testmod", "workers = 1\nmetrics = 127.0.0.1:%d\n",
         f.metrics);
  h_conf_server(conf, sizeof(conf), "web", "aio.hello", f.web);
  ops_rewrite(&f.p, conf);
  ops_expect(&f.p, 0, out, sizeof(out), "reload", NULL);
  expect_get(&f, "/healthz", 200);
  char *parsed = scrape(&f);
  ck_assert_double_eq(
      prom_sum(parsed, "aio_reloads_total", "result=\"ok\"", NULL), 1);
  free(parsed);
  char buf[256];
  ck_assert_int_eq(h_exchange_once(old, "GET /healthz HTTP/1.1\r\n\r\n", NULL,
                                   buf, sizeof(buf), 2000),
                   H_REFUSED);
  h_stop_ok(&f.p);
}
END_TEST

START_TEST(test_unix_socket_and_bad_addresses) {
  struct aio_proc p;
  char conf[4096], dir[128], out[4096];
  h_tmpdir(dir, sizeof(dir));
  int port = h_free_port();
  h_conf(conf, sizeof(conf), "testmod", "workers = 1\nmetrics = ./m.sock\n");
  h_conf_server(conf, sizeof(conf), "web", "aio.hello", port);
  struct h_opts o = {.dir = dir};
  h_start_ready(&p, conf, &o);
  char path[256];
  snprintf(path, sizeof(path), "%s/m.sock", dir);
  int fd = h_connect_unix(path, 2000);
  ck_assert_int_ge(fd, 0);
  const char *req = "GET /healthz HTTP/1.0\r\n\r\n";
  ck_assert_int_eq(h_send(fd, req, strlen(req)), 0);
  char buf[1024];
  ck_assert_int_gt(h_recv_until(fd, buf, sizeof(buf), NULL, 5000), 0);
  ck_assert_msg(strstr(buf, "HTTP/1.1 200 OK") == buf, "%s", buf);
  close(fd);
  h_stop_ok(&p);
  /* A typo is a FILE:LINE error, exit 78. */
  h_conf(conf, sizeof(conf), "testmod", "metrics = 127.0.0.1\n");
  h_write(dir, "bad.conf", conf);
  const char *argv[] = {"-c", "bad.conf", "check", NULL};
  ck_assert_int_eq(h_aio(dir, out, sizeof(out), argv), 78);
  ck_assert_msg(strstr(out, "bad.conf:4: [aio] metrics") != NULL, "%s", out);
}
END_TEST

static Suite *metrics_suite(void) {
  Suite *s = suite_create("metrics");
  TCase *tc = tcase_create("metrics");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_counts_match_the_load_and_never_go_back);
  tcase_add_test(tc, test_healthz_says_whether_a_worker_serves);
  tcase_add_test(tc, test_hostile_clients_cost_nothing);
  tcase_add_test(tc, test_refusals_and_timeouts_are_counted);
  tcase_add_test(tc, test_schedules_and_heartbeat_restarts);
  tcase_add_test(tc, test_reload_moves_the_endpoint);
  tcase_add_test(tc, test_unix_socket_and_bad_addresses);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return pu_run_suite(metrics_suite()); }
