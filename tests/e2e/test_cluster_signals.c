#define _GNU_SOURCE
/*
 * test_cluster_signals.c - cluster listeners (docs/cluster.md, Cluster
 * signals) on a real redis-server (harness_redis.h), with up to three aio
 * masters as three nodes, each with its own node name, control socket,
 * emitter server and records file: once-per-emit signals run exactly once
 * across the nodes; a node killed with entries it had not acknowledged
 * has them run elsewhere after the claim timeout; a listener that kills
 * its worker sends its entry to the dead letters after
 * cluster_max_deliveries; a broadcast cluster signal runs on every worker
 * of every node; while Redis is down emits wait in the bounded queue,
 * which drops the oldest, and arrive after the reconnect.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "harness_redis.h"
#include "ops_util.h"
#include "process_util.h"
#include "records.h"

#define MAXN 3

static char dir[128];
static struct h_redis R;
static int ports[MAXN];

static void rec_path(char *out, size_t n, int k) {
  snprintf(out, n, "%s/rec-%c.ndjson", dir, 'a' + k);
}

/* Node k ('a' + k) on R, with the [aio] lines extra. */
static void node_start(struct aio_proc *p, int k, const char *extra) {
  char ndir[160], conf[4096], url[128], rec[192];
  snprintf(ndir, sizeof(ndir), "%s/%c", dir, 'a' + k);
  mkdir(ndir, 0700);
  h_redis_url(&R, url, sizeof(url));
  rec_path(rec, sizeof(rec), k);
  ports[k] = h_free_port();
  snprintf(conf, sizeof(conf),
           "[aio]\n"
           "modules = busmod\n"
           "module_path = %s\n"
           "workers = 2\n"
           "max_restarts = 50\n"
           "cluster = %s\n"
           "node = %c\n"
           "control = %s/aio.sock\n"
           "cluster_timeout = 0.5\n"
           "%s\n"
           "\n"
           "[busmod]\n"
           "out = %s\n"
           "slow_listener_ms = 200\n"
           "\n"
           "[server:emitter]\n"
           "protocol = busmod.emitter\n"
           "address = 127.0.0.1\n"
           "port = %d\n"
           "\n"
           "[listen:cluster]\n"
           "c-once = busmod.tally cluster\n"
           "c-slow = busmod.slowpoke cluster\n"
           "c-crash = busmod.crash cluster\n"
           "c-all = busmod.record broadcast cluster\n"
           "local-only = busmod.record\n",
           AIO_TEST_MODULES, url, 'a' + k, ndir, extra ? extra : "", rec,
           ports[k]);
  struct h_opts o = {.dir = ndir};
  h_start_ready(p, conf, &o);
}

static void nodes_start(struct aio_proc *p, int n, const char *extra) {
  h_tmpdir(dir, sizeof(dir));
  h_redis_start(&R, dir, 0, NULL);
  for (int k = 0; k < n; k++)
    node_start(&p[k], k, extra);
}

/* Send one emitter command to node k and read its one-line answer. */
static void emitter(int k, const char *cmd, char *reply, size_t n) {
  int fd = h_connect(ports[k], 5000);
  ck_assert_int_ge(fd, 0);
  char line[256];
  snprintf(line, sizeof(line), "%s\n", cmd);
  ck_assert_int_eq(h_send(fd, line, strlen(line)), 0);
  ck_assert_int_gt(h_recv_until(fd, reply, n, "\n", 10000), 0);
  close(fd);
}

/* The records of signal on node k (new). */
static json_t *recs_of(int k, const char *sig) {
  char path[192];
  rec_path(path, sizeof(path), k);
  json_t *all = rec_load(path), *r = rec_where(all, "sig", sig);
  json_decref(all);
  return r;
}

static size_t count_all(int n, const char *sig) {
  size_t total = 0;
  for (int k = 0; k < n; k++) {
    json_t *r = recs_of(k, sig);
    total += json_array_size(r);
    json_decref(r);
  }
  return total;
}

static void wait_count(int n, const char *sig, size_t want, int timeout_ms,
                       const struct aio_proc *p) {
  long long deadline = h_now_ms() + timeout_ms;
  while (count_all(n, sig) < want) {
    if (h_now_ms() > deadline) {
      for (int k = 0; k < n; k++)
        h_dump_log(&p[k]);
      ck_abort_msg("%zu runs of %s, not %zu", count_all(n, sig), sig, want);
    }
    usleep(20000);
  }
}

/* How often each data.seq in 1..max ran across nodes 0..n-1 of sig:
 * runs[seq] (room for max + 1). */
static void runs_per_seq(int n, const char *sig, int max, int *runs) {
  memset(runs, 0, (size_t)(max + 1) * sizeof(*runs));
  for (int k = 0; k < n; k++) {
    json_t *r = recs_of(k, sig);
    size_t i;
    json_t *e;
    json_array_foreach(r, i, e) {
      long long seq = rec_data_int(e, "seq");
      ck_assert_msg(seq >= 1 && seq <= max, "seq %lld", seq);
      runs[seq]++;
    }
    json_decref(r);
  }
}

static json_t *csig_status(const struct aio_proc *p) {
  json_t *st = ops_status(p);
  json_t *c =
      json_incref(json_object_get(json_object_get(st, "cluster"), "signals"));
  json_decref(st);
  ck_assert_ptr_nonnull(c);
  return c;
}

/* Wait until p sees n live nodes. */
static void wait_peers(const struct aio_proc *p, size_t n) {
  long long deadline = h_now_ms() + 10000;
  for (;;) {
    json_t *st = ops_status(p);
    size_t got = json_array_size(
        json_object_get(json_object_get(st, "cluster"), "peers"));
    json_decref(st);
    if (got >= n)
      return;
    if (h_now_ms() > deadline) {
      h_dump_log(p);
      ck_abort_msg("%zu peers, not %zu", got, n);
    }
    usleep(50000);
  }
}

START_TEST(test_csig_once_per_emit_exactly_once_across_three_nodes) {
  struct aio_proc p[3];
  nodes_start(p, 3, NULL);
  char reply[128];
  emitter(0, "emitnew c-once t 1000", reply, sizeof(reply));
  ck_assert_str_eq(reply, "emitted 1000\n");
  /* From the command line of node c, too. */
  char out[512];
  ck_assert_int_eq(ops_aio(&p[2], out, sizeof(out), "emit", "c-once",
                           "{\"tag\":\"cli\",\"seq\":1000}", NULL),
                   0);
  wait_count(3, "c-once", 1001, 30000, p);
  /* Until every node has acknowledged them all: no more can come. */
  long long deadline = h_now_ms() + 10000;
  for (int k = 0; k < 3; k++) {
    for (;;) {
      json_t *c = csig_status(&p[k]);
      json_int_t held = ops_int(c, "held");
      json_decref(c);
      if (held == 0)
        break;
      ck_assert_msg(h_now_ms() < deadline, "node %d still holds entries", k);
      usleep(20000);
    }
  }
  for (int k = 0; k < 3; k++)
    h_stop_ok(&p[k]);
  ck_assert_uint_eq(count_all(3, "c-once"), 1001);
  int runs[1001];
  runs_per_seq(3, "c-once", 1000, runs);
  for (int s = 1; s < 1000; s++)
    ck_assert_msg(runs[s] == 1, "seq %d ran %d times", s, runs[s]);
  ck_assert_int_eq(runs[1000], 2); /* the emitter's and the command line's */
  /* Nothing was left for the claims. */
  char n[64];
  ck_assert_int_eq(
      h_redis_cmd(&R, n, sizeof(n),
                  (const char *[]){"XPENDING", "aio:sig:c-once", "aio", NULL}),
      0);
  ck_assert_msg(strncmp(n, "0\n", 2) == 0, "XPENDING: %s", n);
  /* A local listener stays local: no stream for it. */
  ck_assert_int_eq(
      h_redis_cmd(&R, n, sizeof(n),
                  (const char *[]){"EXISTS", "aio:sig:local-only", NULL}),
      0);
  ck_assert_str_eq(n, "0");
  h_redis_stop(&R);
}
END_TEST

START_TEST(test_csig_killed_node_entries_run_elsewhere) {
  struct aio_proc p[2];
  nodes_start(p, 2, "cluster_claim_timeout = 1.5");
  /* Node b alone reads them first: a starts reading after b holds all. */
  h_stop_ok(&p[0]);
  char reply[128];
  emitter(1, "emitnew c-slow k 30", reply, sizeof(reply));
  ck_assert_str_eq(reply, "emitted 30\n");
  /* b runs one every 200 ms on one worker: kill its master mid-way. */
  wait_count(2, "c-slow", 3, 10000, p);
  json_t *c = csig_status(&p[1]);
  ck_assert_int_ge(ops_int(c, "held"), 20);
  json_decref(c);
  kill(p[1].pid, SIGKILL);
  ck_assert_int_eq(h_wait_exit(&p[1], 5000), 0);
  size_t ran_b = count_all(2, "c-slow");
  node_start(&p[0], 0, "cluster_claim_timeout = 1.5");
  wait_count(2, "c-slow", 30, 30000, p);
  int runs[31];
  long long t0 = h_now_ms();
  for (;;) {
    runs_per_seq(2, "c-slow", 30, runs);
    int missing = 0;
    for (int s = 1; s <= 30; s++)
      missing += runs[s] == 0;
    if (missing == 0)
      break;
    ck_assert_msg(h_now_ms() - t0 < 30000, "%d entries never ran", missing);
    usleep(50000);
  }
  json_t *a = recs_of(0, "c-slow");
  ck_assert_uint_ge(json_array_size(a), 30 - ran_b);
  json_decref(a);
  c = csig_status(&p[0]);
  ck_assert_int_ge(ops_int(c, "claimed"), (json_int_t)(30 - ran_b));
  json_decref(c);
  h_stop_ok(&p[0]);
  h_redis_stop(&R);
}
END_TEST

START_TEST(test_csig_crashing_listener_goes_to_dead_letters) {
  struct aio_proc p[1];
  nodes_start(p, 1, "cluster_claim_timeout = 0.3\ncluster_max_deliveries = 3");
  char out[512];
  ck_assert_int_eq(
      ops_aio(&p[0], out, sizeof(out), "emit", "c-crash", "{\"seq\":1}", NULL),
      0);
  ck_assert_int_eq(h_wait_log(&p[0], "moved to aio:dead", 20000), 0);
  /* Three deliveries, each killing its worker, then no more. */
  ck_assert_uint_eq(count_all(1, "c-crash"), 3);
  char r[1024];
  ck_assert_int_eq(
      h_redis_cmd(&R, r, sizeof(r), (const char *[]){"XLEN", "aio:dead", NULL}),
      0);
  ck_assert_str_eq(r, "1");
  ck_assert_int_eq(
      h_redis_cmd(&R, r, sizeof(r),
                  (const char *[]){"XRANGE", "aio:dead", "-", "+", NULL}),
      0);
  ck_assert_msg(strstr(r, "c-crash") && strstr(r, "{\"seq\":1}") &&
                    strstr(r, "deliveries\n3"),
                "%s", r);
  json_t *c = csig_status(&p[0]);
  ck_assert_int_eq(ops_int(c, "dead"), 1);
  json_decref(c);
  usleep(1000000); /* three claim timeouts: it does not come back */
  ck_assert_uint_eq(count_all(1, "c-crash"), 3);
  ck_assert_int_eq(h_log_count(&p[0], "moved to aio:dead"), 1);
  h_stop_ok(&p[0]);
  h_redis_stop(&R);
}
END_TEST

START_TEST(test_csig_broadcast_runs_on_every_worker_of_every_node) {
  struct aio_proc p[3];
  nodes_start(p, 3, NULL);
  wait_peers(&p[0], 3);
  char out[512];
  ck_assert_int_eq(
      ops_aio(&p[0], out, sizeof(out), "emit", "c-all", "{\"seq\":7}", NULL),
      0);
  wait_count(3, "c-all", 6, 10000, p);
  for (int k = 0; k < 3; k++) {
    json_t *r = recs_of(k, "c-all");
    ck_assert_uint_eq(json_array_size(r), 2);
    ck_assert_int_ne(rec_int(json_array_get(r, 0), "pid"),
                     rec_int(json_array_get(r, 1), "pid"));
    json_decref(r);
  }
  for (int k = 0; k < 3; k++)
    h_stop_ok(&p[k]);
  ck_assert_uint_eq(count_all(3, "c-all"), 6);
  h_redis_stop(&R);
}
END_TEST

START_TEST(test_csig_redis_down_queue_bounded_then_flushed) {
  struct aio_proc p[2];
  nodes_start(p, 2, "cluster_queue = 50");
  h_redis_stop(&R);
  ck_assert_int_eq(h_wait_log(&p[0], "cluster: lost", 5000), 0);
  char reply[128];
  /* Serving goes on: the emitter answers, and its emits wait. */
  emitter(0, "emitnew c-once q 80", reply, sizeof(reply));
  ck_assert_str_eq(reply, "emitted 80\n");
  /* The master reads the worker's emits in its own time. */
  json_t *c = NULL;
  for (long long deadline = h_now_ms() + 5000;;) {
    c = csig_status(&p[0]);
    if (ops_int(c, "emitted") == 80 || h_now_ms() > deadline)
      break;
    json_decref(c);
    usleep(20000);
  }
  ck_assert_int_eq(ops_int(c, "emitted"), 80);
  ck_assert_int_eq(ops_int(c, "queued"), 50);
  ck_assert_int_eq(ops_int(c, "dropped"), 30);
  ck_assert_int_eq(ops_int(c, "limit"), 50);
  json_decref(c);
  ck_assert_int_ge(h_log_count(&p[0], "the oldest, 'c-once', is dropped"), 1);
  char table[4096];
  ck_assert_int_eq(ops_aio(&p[0], table, sizeof(table), "status", NULL), 0);
  ck_assert_msg(strstr(table, "signals: 50 queued, 30 dropped"), "%s", table);
  json_t *st = ops_status(&p[0]);
  ck_assert_str_eq(json_string_value(json_object_get(
                       json_object_get(st, "cluster"), "state")),
                   "down");
  json_decref(st);
  ck_assert_uint_eq(count_all(2, "c-once"), 0);
  h_redis_restart(&R);
  wait_count(2, "c-once", 50, 20000, p);
  c = csig_status(&p[0]);
  ck_assert_int_eq(ops_int(c, "queued"), 0);
  json_decref(c);
  for (int k = 0; k < 2; k++)
    h_stop_ok(&p[k]);
  int runs[81];
  runs_per_seq(2, "c-once", 80, runs);
  for (int s = 1; s <= 80; s++)
    ck_assert_msg(runs[s] == (s > 30), "seq %d ran %d times", s, runs[s]);
  h_redis_stop(&R);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("cluster_signals");
  TCase *tc = tcase_create("cluster_signals");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_csig_once_per_emit_exactly_once_across_three_nodes);
  tcase_add_test(tc, test_csig_killed_node_entries_run_elsewhere);
  tcase_add_test(tc, test_csig_crashing_listener_goes_to_dead_letters);
  tcase_add_test(tc, test_csig_broadcast_runs_on_every_worker_of_every_node);
  tcase_add_test(tc, test_csig_redis_down_queue_bounded_then_flushed);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return pu_run_suite(suite()); }
