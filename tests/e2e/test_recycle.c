/*
 * test_recycle.c - [aio] max_requests, max_lifetime and max_memory against
 * a real master: each recycles a worker the way a reload replaces one (a
 * new pid on the slot, ready first; the old pid drains and exits 0), with
 * its reason in the log, `aio status --json` and /metrics; a keep-alive
 * connection in flight finishes its request on the old worker; never more
 * than recycle_concurrency slots in replacement; and zero failed requests
 * from clients that keep loading the workers while they recycle.
 */
#define _GNU_SOURCE
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"
#include "ops_util.h"

#define GET_CLOSE "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
#define GET_KEEP "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
#define BODY "Hello, World!\n"

struct fixture {
  struct aio_proc p;
  int web, metrics;
};

/* aio.hello (or protocol) on [server:web], metrics on a free port, and the
 * [aio] lines extra. */
static void start(struct fixture *f, const char *protocol, const char *extra) {
  char conf[4096];
  f->web = h_free_port();
  f->metrics = h_free_port();
  h_conf(conf, sizeof(conf), "testmod",
         "graceful_timeout = 10\nmetrics = 127.0.0.1:%d\n%s", f->metrics,
         extra);
  h_conf_server(conf, sizeof(conf), "web", protocol, f->web);
  h_start_ready(&f->p, conf, NULL);
}

/* The pid serving slot (ready), from aio status; 0 when none. */
static pid_t slot_pid(const struct aio_proc *p, int slot) {
  json_t *st = ops_status(p);
  pid_t pid = 0;
  size_t i;
  json_t *w;
  json_array_foreach(json_object_get(st, "procs"), i, w) {
    const char *state = json_string_value(json_object_get(w, "state"));
    if (ops_int(w, "slot") == slot && state && strcmp(state, "ready") == 0)
      pid = (pid_t)ops_int(w, "pid");
  }
  json_decref(st);
  return pid;
}

/* start(), then the pid serving slot: the one to be recycled. */
static pid_t start_slot(struct fixture *f, const char *protocol,
                        const char *extra, int slot) {
  start(f, protocol, extra);
  pid_t pid = slot_pid(&f->p, slot);
  ck_assert_int_ne(pid, 0);
  return pid;
}

/* slots[slot].replaced.recycle and recycles.trigger from aio status. */
static void status_counts(const struct aio_proc *p, int slot,
                          const char *trigger, json_int_t *replaced,
                          json_int_t *recycled) {
  json_t *st = ops_status(p);
  json_t *s = json_array_get(json_object_get(st, "slots"), (size_t)slot);
  ck_assert_ptr_nonnull(s);
  *replaced = ops_int(json_object_get(s, "replaced"), "recycle");
  *recycled = ops_int(json_object_get(st, "recycles"), trigger);
  json_decref(st);
}

/* The value of the /metrics sample series (name{labels}), or -1 when
 * there is none. */
static long long metrics_value(const struct fixture *f, const char *series) {
  size_t n = 1 << 20;
  char *buf = malloc(n), want[256];
  ck_assert_ptr_nonnull(buf);
  int r =
      h_exchange_once(f->metrics, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n",
                      NULL, buf, n, 5000);
  snprintf(want, sizeof(want), "\n%s ", series);
  const char *at = r == H_OK || r == H_CLOSED ? strstr(buf, want) : NULL;
  long long v = at ? strtoll(at + strlen(want), NULL, 10) : -1;
  if (at == NULL)
    fprintf(stderr, "metrics lack '%s':\n%s\n", series, buf);
  free(buf);
  return v;
}

/* The least and the most of the limits the log says the workers drew
 * ("its limit N"). Returns how many there were. */
static int drawn_limits(const struct aio_proc *p, double *least, double *most) {
  char *log = h_slurp(p->log);
  int n = 0;
  for (const char *at = log; (at = strstr(at, "its limit ")) != NULL; at++) {
    double v = strtod(at + strlen("its limit "), NULL);
    *least = n == 0 || v < *least ? v : *least;
    *most = n == 0 || v > *most ? v : *most;
    n++;
  }
  free(log);
  return n;
}

/* One request on a connection of its own; 1 when it got its 200. */
static int get_once(int port) {
  char buf[512];
  int r = h_exchange_once(port, GET_CLOSE, NULL, buf, sizeof(buf), 5000);
  return (r == H_OK || r == H_CLOSED) && strstr(buf, "200 OK") &&
         strstr(buf, BODY);
}

/* After the trigger: slot's worker was old, is now another pid; the old
 * one exited 0 after draining; reason in log, status and metrics. */
static void assert_recycled(struct fixture *f, int slot, pid_t old,
                            const char *trigger) {
  char want[160];
  snprintf(want, sizeof(want), "worker %d (pid %d): recycling (%s): ", slot,
           (int)old, trigger);
  ck_assert_msg(h_wait_log(&f->p, want, 10000) == 0, "no '%s' in the log",
                want);
  snprintf(want, sizeof(want), ", pid %d drains (graceful_timeout", (int)old);
  ck_assert_msg(h_wait_log(&f->p, want, 10000) == 0, "no '%s' in the log",
                want);
  snprintf(want, sizeof(want), "worker %d (pid %d) exited with status 0", slot,
           (int)old);
  ck_assert_msg(h_wait_log(&f->p, want, 15000) == 0, "no '%s' in the log",
                want);
  pid_t now = slot_pid(&f->p, slot);
  ck_assert_int_ne(now, 0);
  ck_assert_int_ne(now, old);
  json_int_t replaced, recycled;
  status_counts(&f->p, slot, trigger, &replaced, &recycled);
  ck_assert_int_ge(replaced, 1);
  ck_assert_int_ge(recycled, 1);
  /* Read after the status: as many or more (the trigger may go on). */
  snprintf(want, sizeof(want),
           "aio_worker_restarts_total{slot=\"%d\",reason=\"recycle\"}", slot);
  ck_assert_int_ge(metrics_value(f, want), replaced);
  snprintf(want, sizeof(want), "aio_worker_recycles_total{trigger=\"%s\"}",
           trigger);
  ck_assert_int_ge(metrics_value(f, want), recycled);
}

START_TEST(test_max_requests_recycles_after_that_many_requests) {
  struct fixture f = {0};
  pid_t old = start_slot(&f, "aio.hello", "workers = 1\nmax_requests = 3\n", 0);
  /* Three requests, each on a connection of its own: the limit. */
  ck_assert(get_once(f.web));
  ck_assert(get_once(f.web));
  ck_assert(get_once(f.web));
  assert_recycled(&f, 0, old, "requests");
  ck_assert(h_log_has(&f.p, "served 3 requests, its limit 3 (max_requests = "
                            "3, max_requests_jitter = 0)"));
  /* The new worker serves, and counts afresh; the slot's series goes on
   * from the old worker's total. */
  ck_assert(get_once(f.web));
  ck_assert_int_eq(
      metrics_value(&f, "aio_worker_recycles_total{trigger=\"requests\"}"), 1);
  ck_assert_int_eq(
      metrics_value(&f, "aio_requests_total{server=\"web\",slot=\"0\"}"), 4);
  h_stop_ok(&f.p);
}
END_TEST

/* aio.echo does not count requests: its connections count instead. */
START_TEST(test_max_requests_counts_connections_of_other_protocols) {
  struct fixture f = {0};
  pid_t old = start_slot(&f, "aio.echo", "workers = 1\nmax_requests = 2\n", 0);
  char buf[64];
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq(
        h_exchange_once(f.web, "ping\n", "\n", buf, sizeof(buf), 5000), H_OK);
  assert_recycled(&f, 0, old, "requests");
  ck_assert(h_log_has(&f.p, "served 2 requests, its limit 2"));
  h_stop_ok(&f.p);
}
END_TEST

START_TEST(test_max_lifetime_recycles_one_slot_at_a_time) {
  struct fixture f = {0};
  pid_t old = start_slot(
      &f, "aio.hello",
      "workers = 3\nmax_lifetime = 300ms\nmax_lifetime_jitter = 0.2\n", 2);
  assert_recycled(&f, 2, old, "lifetime");
  /* Every slot goes in turn: wait for several recycles, then check that
   * the log never has a second one begun before the last one was done
   * (recycle_concurrency = 1). */
  long long deadline = h_now_ms() + 15000;
  while (h_log_count(&f.p, "recycled (lifetime)") < 6 && h_now_ms() < deadline)
    usleep(20000);
  ck_assert_int_ge(h_log_count(&f.p, "recycled (lifetime)"), 6);
  char *log = h_slurp(f.p.log);
  int open = 0, most = 0;
  for (const char *at = log; (at = strstr(at, "recycl")) != NULL; at++) {
    if (strncmp(at, "recycling (", 11) == 0)
      open++;
    else if (strncmp(at, "recycled (", 10) == 0)
      open--;
    most = open > most ? open : most;
  }
  free(log);
  ck_assert_int_eq(most, 1);
  /* Each limit is max_lifetime + uniform(0, jitter): 0.3 to 0.5 s. */
  ck_assert(h_log_has(&f.p, "(max_lifetime = 0.3 s, max_lifetime_jitter = "
                            "0.2 s)"));
  double low, high;
  ck_assert_int_ge(drawn_limits(&f.p, &low, &high), 6);
  ck_assert_msg(low >= 0.3 && high <= 0.5, "limits from %g to %g s", low, high);
  json_t *st = ops_status(&f.p);
  size_t i;
  json_t *s;
  json_array_foreach(json_object_get(st, "slots"), i, s)
      ck_assert_int_eq(ops_int(json_object_get(s, "replaced"), "crash"), 0);
  json_decref(st);
  h_stop_ok(&f.p);
}
END_TEST

/* Any worker is bigger than a mebibyte. */
START_TEST(test_max_memory_recycles_a_worker_over_it) {
  struct fixture f = {0};
  pid_t old = start_slot(&f, "aio.hello", "workers = 1\nmax_memory = 1M\n", 0);
  assert_recycled(&f, 0, old, "memory");
  ck_assert(h_log_has(&f.p, "over max_memory = 1.0 MiB"));
  ck_assert(get_once(f.web));
  h_stop_ok(&f.p);
}
END_TEST

/* Read one keep-alive answer (headers and the 14-byte body) from fd into
 * buf. 1 when it came. */
static int read_answer(int fd, char *buf, size_t n) {
  int got = h_recv_until(fd, buf, n, BODY, 5000);
  return got > 0 && strstr(buf, "200 OK") != NULL && strstr(buf, BODY) != NULL;
}

/* A client with a request half sent when its worker is recycled gets its
 * answer from that worker, which then closes and exits 0. */
START_TEST(test_keepalive_connection_in_flight_finishes_its_requests) {
  struct fixture f = {0};
  pid_t old = start_slot(&f, "aio.hello", "workers = 1\nmax_requests = 3\n", 0);
  int fd = h_connect(f.web, 5000);
  ck_assert_int_ge(fd, 0);
  char buf[1024];
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(h_send(fd, GET_KEEP, strlen(GET_KEEP)), 0);
    ck_assert(read_answer(fd, buf, sizeof(buf)));
    ck_assert_ptr_null(strstr(buf, "Connection: close"));
  }
  /* A head begun, then the third request elsewhere triggers the recycle;
   * the head goes on, a header line every 50 ms (a client that is
   * sending, not an idle one the drain may close), until the recycle is
   * done. */
  const char *half = "GET / HTTP/1.1\r\nHost: t\r\n";
  ck_assert_int_eq(h_send(fd, half, strlen(half)), 0);
  ck_assert(get_once(f.web));
  const char *done = "worker 0 recycled (requests): pid ";
  long long deadline = h_now_ms() + 10000;
  while (!h_log_has(&f.p, done) && h_now_ms() < deadline) {
    ck_assert_int_eq(h_send(fd, "X-Wait: 1\r\n", 11), 0);
    usleep(50000);
  }
  ck_assert_msg(h_log_has(&f.p, done), "no '%s' in the log", done);
  char want[96];
  /* The old worker drains, holding the connection: it has not exited. */
  ck_assert(h_pid_alive(old));
  ck_assert_int_eq(h_send(fd, "\r\n", 2), 0);
  ck_assert(read_answer(fd, buf, sizeof(buf)));
  ck_assert_ptr_nonnull(strstr(buf, "Connection: close"));
  ck_assert_int_eq(h_read_eof(fd, 5000), 0);
  close(fd);
  snprintf(want, sizeof(want), "worker 0 (pid %d) exited with status 0",
           (int)old);
  ck_assert_int_eq(h_wait_log(&f.p, want, 10000), 0);
  h_stop_ok(&f.p);
}
END_TEST

/* ---- zero failures under load ------------------------------------------ */

struct loader {
  int port;
  int keepalive;
  long long deadline;
  int done;   /* answered requests */
  int failed; /* requests not answered with a 200 */
  char first[160];
};

static void loader_fail(struct loader *l, const char *what) {
  if (l->failed++ == 0)
    snprintf(l->first, sizeof(l->first), "%s", what);
}

/* Connection per request, or keep-alive connections that reconnect when
 * the server says Connection: close (a draining worker does). */
static void *loader_run(void *arg) {
  struct loader *l = arg;
  char buf[1024];
  while (h_now_ms() < l->deadline) {
    if (!l->keepalive) {
      if (get_once(l->port))
        l->done++;
      else
        loader_fail(l, "connection per request: no 200");
      continue;
    }
    int fd = h_connect(l->port, 0);
    if (fd < 0) {
      loader_fail(l, "keep-alive: cannot connect");
      continue;
    }
    int closing = 0;
    while (!closing && h_now_ms() < l->deadline) {
      if (h_send(fd, GET_KEEP, strlen(GET_KEEP)) != 0 ||
          !read_answer(fd, buf, sizeof(buf))) {
        loader_fail(l, "keep-alive: no 200");
        break;
      }
      l->done++;
      closing = strstr(buf, "Connection: close") != NULL;
    }
    close(fd);
  }
  return NULL;
}

/* A bounded load (4 clients, both shapes, 4 s) while workers recycle
 * every few hundred requests: every request answered. */
START_TEST(test_zero_failed_requests_while_workers_recycle) {
  struct fixture f = {0};
  start(&f, "aio.hello",
        "workers = 2\nmax_requests = 300\nmax_requests_jitter = 100\n");
  enum { N = 4 };
  struct loader l[N];
  pthread_t t[N];
  long long deadline = h_now_ms() + 4000;
  for (int i = 0; i < N; i++) {
    l[i] = (struct loader){
        .port = f.web, .keepalive = i % 2, .deadline = deadline};
    ck_assert_int_eq(pthread_create(&t[i], NULL, loader_run, &l[i]), 0);
  }
  int done = 0, failed = 0;
  const char *first = "";
  for (int i = 0; i < N; i++) {
    pthread_join(t[i], NULL);
    done += l[i].done;
    failed += l[i].failed;
    if (l[i].failed && !*first)
      first = l[i].first;
  }
  int recycled = h_log_count(&f.p, "recycled (requests)");
  fprintf(stderr, "figure: %d requests, %d failed, %d recycles\n", done, failed,
          recycled);
  ck_assert_msg(failed == 0, "%d of %d requests failed (first: %s)", failed,
                done + failed, first);
  ck_assert_int_ge(recycled, 2);
  /* gunicorn's jitter: each worker's limit is 300 + randint(0, 100), and
   * they differ. */
  double least, most;
  ck_assert_int_ge(drawn_limits(&f.p, &least, &most), 2);
  ck_assert_msg(least >= 300 && most <= 400 && least < most,
                "limits from %g to %g", least, most);
  h_stop_ok(&f.p);
}
END_TEST

/* Reloads while workers recycle: each reload works, the replacements in
 * flight make way for the reload's workers, and nothing counts as a
 * crash. */
START_TEST(test_reloads_while_workers_recycle) {
  struct fixture f = {0};
  start(&f, "aio.hello", "workers = 2\nmax_lifetime = 100ms\n");
  ck_assert_int_eq(h_wait_log(&f.p, "recycled (lifetime)", 10000), 0);
  char out[4096];
  for (int i = 0; i < 3; i++) {
    ops_expect(&f.p, 0, out, sizeof(out), "reload", NULL);
    ck_assert(get_once(f.web));
  }
  json_t *st = ops_status(&f.p);
  ck_assert_int_eq(ops_int(st, "generation"), 4);
  size_t i;
  json_t *s;
  json_array_foreach(json_object_get(st, "slots"), i, s) {
    json_t *r = json_object_get(s, "replaced");
    ck_assert_int_eq(ops_int(r, "crash"), 0);
    ck_assert_int_eq(ops_int(r, "reload"), 3);
  }
  json_decref(st);
  h_stop_ok(&f.p);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("recycle");
  TCase *tc = tcase_create("recycle");
  tcase_set_timeout(tc, 90);
  tcase_add_test(tc, test_max_requests_recycles_after_that_many_requests);
  tcase_add_test(tc, test_max_requests_counts_connections_of_other_protocols);
  tcase_add_test(tc, test_max_lifetime_recycles_one_slot_at_a_time);
  tcase_add_test(tc, test_max_memory_recycles_a_worker_over_it);
  tcase_add_test(tc, test_keepalive_connection_in_flight_finishes_its_requests);
  tcase_add_test(tc, test_zero_failed_requests_while_workers_recycle);
  tcase_add_test(tc, test_reloads_while_workers_recycle);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
