#define _GNU_SOURCE
/*
 * test_cluster.c - aio masters as nodes of one cluster on a real
 * redis-server (harness_redis.h), each with its own node name, control
 * socket and directory: a scope = cluster schedule runs each occurrence
 * exactly once across the nodes while a host schedule runs on every node;
 * with Redis stopped the fallback skips or runs locally as configured, and
 * claims resume when it is back, with one log line per state change; a
 * Redis that accepts connections and never answers holds nothing up; the
 * node announcement and `aio status --cluster`; AUTH over a unix socket.
 * The jobs are busmod.occ, which records occurrence, due time and node.
 */
#include <check.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"
#include "harness_redis.h"
#include "ops_util.h"
#include "process_util.h"
#include "records.h"

static char dir[128], out_path[256];
static struct h_redis R;
static const char *const *node_env; /* for the next node_start, or NULL */

static void setup(void) {
  h_tmpdir(dir, sizeof(dir));
  snprintf(out_path, sizeof(out_path), "%s/records.ndjson", dir);
}

/* Start node `name` on url with the given [aio] and schedule lines. */
static void node_start(struct aio_proc *p, const char *name, const char *url,
                       const char *aio_extra, const char *schedules) {
  char ndir[160], conf[4096];
  snprintf(ndir, sizeof(ndir), "%s/%s", dir, name);
  mkdir(ndir, 0700);
  snprintf(conf, sizeof(conf),
           "[aio]\n"
           "modules = busmod\n"
           "module_path = %s\n"
           "workers = 1\n"
           "cluster = %s\n"
           "node = %s\n"
           "control = %s/aio.sock\n"
           "%s\n"
           "\n"
           "[busmod]\n"
           "out = %s\n"
           "\n"
           "%s\n",
           AIO_TEST_MODULES, url, name, ndir, aio_extra, out_path, schedules);
  struct h_opts o = {.dir = ndir, .env = node_env};
  h_start_ready(p, conf, &o);
}

static const char *const TWO_SCHEDULES =
    "[schedule:once]\nevery = 0.5\nfunc = busmod.occ\nscope = cluster\n\n"
    "[schedule:everywhere]\nevery = 0.5\nfunc = busmod.occ\n";

/* Records of job from node ("" for any). Returns new. */
static json_t *runs_of(const char *job, const char *node) {
  json_t *all = rec_load(out_path), *by_job = rec_where(all, "job", job);
  json_decref(all);
  if (node[0] == '\0')
    return by_job;
  json_t *r = rec_where(by_job, "node", node);
  json_decref(by_job);
  return r;
}

static size_t count_of(const char *job, const char *node) {
  json_t *r = runs_of(job, node);
  size_t n = json_array_size(r);
  json_decref(r);
  return n;
}

/* Wait until job has at least n records from node. */
static void wait_runs(const char *job, const char *node, size_t n,
                      int timeout_ms, const struct aio_proc *a,
                      const struct aio_proc *b) {
  long long deadline = h_now_ms() + timeout_ms;
  while (count_of(job, node) < n) {
    if (h_now_ms() > deadline) {
      h_dump_log(a);
      if (b)
        h_dump_log(b);
      ck_abort_msg("fewer than %zu runs of %s on '%s' (%zu)", n, job, node,
                   count_of(job, node));
    }
    usleep(20000);
  }
}

/* Each occurrence of job at most once in recs, each due at run * 0.5 s;
 * returns how many distinct occurrences there are, and the lowest and
 * highest. */
static size_t assert_once_each(const json_t *recs, long long *lo,
                               long long *hi) {
  size_t n = json_array_size(recs);
  *lo = *hi = 0;
  for (size_t i = 0; i < n; i++) {
    const json_t *a = json_array_get(recs, i);
    long long run = rec_int(a, "run");
    ck_assert_int_eq(rec_int(a, "due_ms"), run * 500);
    if (*lo == 0 || run < *lo)
      *lo = run;
    if (run > *hi)
      *hi = run;
    for (size_t j = 0; j < i; j++)
      ck_assert_msg(
          rec_int(json_array_get(recs, j), "run") != run,
          "occurrence %lld ran twice (on %s and on %s)", run,
          json_string_value(json_object_get(json_array_get(recs, j), "node")),
          json_string_value(json_object_get(a, "node")));
  }
  return n;
}

/* Wait for the status of p to say cluster state. Returns the cluster
 * object (new). */
static json_t *wait_state(const struct aio_proc *p, const char *state,
                          int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  for (;;) {
    json_t *st = ops_status(p);
    json_t *c = json_incref(json_object_get(st, "cluster"));
    json_decref(st);
    const char *s = json_string_value(json_object_get(c, "state"));
    if (s && strcmp(s, state) == 0)
      return c;
    json_decref(c);
    if (h_now_ms() > deadline) {
      h_dump_log(p);
      ck_abort_msg("the cluster state did not become %s", state);
    }
    usleep(50000);
  }
}

/* A fresh directory, a redis-server on a free port, and node a on it,
 * with the [aio] lines aio_extra and the schedules. */
static void one_node(struct aio_proc *a, const char *aio_extra,
                     const char *schedules) {
  setup();
  h_redis_start(&R, dir, 0, NULL);
  char url[128];
  h_redis_url(&R, url, sizeof(url));
  node_start(a, "a", url, aio_extra, schedules);
}

/* The same, and node b beside a. */
static void two_nodes(struct aio_proc *a, struct aio_proc *b,
                      const char *aio_extra, const char *schedules) {
  one_node(a, aio_extra, schedules);
  char url[128];
  h_redis_url(&R, url, sizeof(url));
  node_start(b, "b", url, aio_extra, schedules);
}

/* Wait until p's log has text n times. */
static void wait_log_count(const struct aio_proc *p, const char *text, int n,
                           int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  while (h_log_count(p, text) < n) {
    if (h_now_ms() > deadline) {
      h_dump_log(p);
      ck_abort_msg("'%s' is not %d times in the log", text, n);
    }
    usleep(50000);
  }
}

START_TEST(test_cluster_occurrence_runs_once_across_nodes) {
  struct aio_proc a, b;
  two_nodes(&a, &b, "", TWO_SCHEDULES);
  /* ~10 occurrences while both are up: b's host schedule is the clock. */
  size_t b0 = count_of("everywhere", "b");
  wait_runs("everywhere", "b", b0 + 12, 15000, &a, &b);
  wait_runs("everywhere", "a", 12, 15000, &a, &b);
  h_stop_ok(&a);
  h_stop_ok(&b);
  json_t *once = runs_of("once", "");
  long long lo, hi;
  size_t n = assert_once_each(once, &lo, &hi);
  ck_assert_uint_ge(n, 10);
  /* No occurrence lost between the first and the last either. */
  ck_assert_int_eq((long long)n, hi - lo + 1);
  json_decref(once);
  /* Both master logs: one connection each, no loss. */
  ck_assert_int_eq(h_log_count(&a, "cluster: connected"), 1);
  ck_assert_int_eq(h_log_count(&b, "cluster: lost"), 0);
  h_redis_stop(&R);
}
END_TEST

/* Three nodes; the master of the node that ran the latest occurrence is
 * SIGKILLed: the next occurrences still run, once each, on the other two. */
START_TEST(test_cluster_survives_the_winner_being_killed) {
  struct aio_proc a, b, c, *nodes[3] = {&a, &b, &c};
  two_nodes(&a, &b, "", TWO_SCHEDULES);
  char url[128];
  h_redis_url(&R, url, sizeof(url));
  node_start(&c, "c", url, "", TWO_SCHEDULES);
  wait_runs("everywhere", "c", 4, 10000, &a, &c);
  json_t *once = runs_of("once", "");
  json_t *last = json_array_get(once, json_array_size(once) - 1);
  const char *who = json_string_value(json_object_get(last, "node"));
  long long killed_at = rec_int(last, "run");
  struct aio_proc *victim = nodes[who[0] - 'a'];
  kill(victim->pid, SIGKILL);
  ck_assert_int_eq(h_wait_exit(victim, 5000), 0);
  json_decref(once);
  /* The occurrence after the kill may have been claimed by the victim;
   * from the one after it on, every occurrence runs. */
  long long deadline = h_now_ms() + 15000;
  long long lo = 0, hi = 0;
  for (;;) {
    once = runs_of("once", "");
    assert_once_each(once, &lo, &hi);
    json_decref(once);
    if (hi >= killed_at + 8)
      break;
    ck_assert_msg(h_now_ms() < deadline, "occurrences stopped at %lld", hi);
    usleep(50000);
  }
  once = runs_of("once", "");
  for (long long k = killed_at + 2; k <= killed_at + 8; k++) {
    int found = 0;
    for (size_t i = 0; i < json_array_size(once); i++)
      found += rec_int(json_array_get(once, i), "run") == k;
    ck_assert_msg(found == 1, "occurrence %lld ran %d times", k, found);
  }
  json_decref(once);
  for (int i = 0; i < 3; i++)
    if (nodes[i] != victim)
      h_stop_ok(nodes[i]);
  h_redis_stop(&R);
}
END_TEST

START_TEST(test_cluster_status_lists_the_live_nodes) {
  struct aio_proc a, b;
  two_nodes(&a, &b, "", "");
  /* a reads the peers every few seconds: wait until it has seen b. */
  long long deadline = h_now_ms() + 10000;
  for (;;) {
    json_t *c = wait_state(&a, "connected", 5000);
    ck_assert_str_eq(json_string_value(json_object_get(c, "node")), "a");
    json_t *peers = json_object_get(c, "peers");
    int seen_b = 0;
    size_t i;
    json_t *p;
    json_array_foreach(peers, i, p) {
      if (strcmp(json_string_value(json_object_get(p, "node")), "b") == 0) {
        seen_b = 1;
        ck_assert_int_eq(json_integer_value(json_object_get(p, "pid")), b.pid);
        ck_assert_int_eq(json_integer_value(json_object_get(p, "workers")), 1);
        ck_assert_int_eq(json_integer_value(json_object_get(p, "generation")),
                         1);
      }
    }
    json_decref(c);
    if (seen_b)
      break;
    ck_assert_msg(h_now_ms() < deadline, "node a never listed node b");
    usleep(100000);
  }
  char out[8192];
  ck_assert_int_eq(ops_aio(&a, out, sizeof(out), "status", "--cluster", NULL),
                   0);
  ck_assert_msg(strstr(out, "cluster connected, node a") != NULL, "%s", out);
  ck_assert_msg(strstr(out, "\nb ") != NULL, "b is not listed: %s", out);
  ck_assert_int_eq(ops_aio(&a, out, sizeof(out), "status", NULL), 0);
  ck_assert_msg(strstr(out, "cluster connected, node a") != NULL, "%s", out);
  /* The node key, with a TTL; gone when the node stops. */
  char key[64], reply[256];
  snprintf(key, sizeof(key), "aio:node:b");
  ck_assert_int_eq(h_redis_cmd(&R, reply, sizeof(reply),
                               (const char *[]){"PTTL", key, NULL}),
                   0);
  ck_assert_msg(atoll(reply) > 0 && atoll(reply) <= 15000, "PTTL %s", reply);
  h_stop_ok(&b);
  ck_assert_int_eq(h_redis_cmd(&R, reply, sizeof(reply),
                               (const char *[]){"EXISTS", key, NULL}),
                   0);
  ck_assert_str_eq(reply, "0");
  h_stop_ok(&a);
  h_redis_stop(&R);
}
END_TEST

/* Redis stopped, then started again, under cluster_fallback = fb. */
static void redis_outage(const char *fb) {
  char extra[128];
  snprintf(extra, sizeof(extra), "cluster_fallback = %s\ncluster_timeout = 0.5",
           fb);
  int local = strcmp(fb, "local") == 0;
  /* A schedule of its own fallback, the other way round. */
  char schedules[1024];
  snprintf(schedules, sizeof(schedules),
           "%s\n[schedule:own]\nevery = 0.5\nfunc = busmod.occ\n"
           "scope = cluster\ncluster_fallback = %s\n",
           TWO_SCHEDULES, local ? "skip" : "local");
  struct aio_proc a, b;
  two_nodes(&a, &b, extra, schedules);
  wait_runs("once", "", 3, 10000, &a, &b);

  h_redis_stop(&R);
  ck_assert_int_eq(h_wait_log(&a, "cluster: lost", 5000), 0);
  ck_assert_int_eq(h_wait_log(&b, "cluster: lost", 5000), 0);
  json_t *c = wait_state(&a, "down", 2000);
  ck_assert(json_number_value(json_object_get(c, "down_since")) > 0);
  ck_assert_ptr_nonnull(json_object_get(c, "last_error"));
  json_decref(c);
  size_t once_down = count_of("once", ""), own_down = count_of("own", "");
  /* Six occurrences while it is down: the host schedule goes on. */
  size_t a0 = count_of("everywhere", "a"), b0 = count_of("everywhere", "b");
  wait_runs("everywhere", "a", a0 + 6, 10000, &a, &b);
  wait_runs("everywhere", "b", b0 + 6, 10000, &a, &b);
  json_t *recs = runs_of("once", "");
  size_t during = json_array_size(recs) - once_down;
  size_t own_during = count_of("own", "") - own_down;
  ck_assert_msg(local ? own_during <= 1 : own_during >= 8,
                "[schedule:own] ran %zu times while Redis was down",
                own_during);
  if (local) {
    /* Both nodes ran the same occurrences. */
    ck_assert_uint_ge(count_of("once", "a"), 4);
    ck_assert_uint_ge(count_of("once", "b"), 4);
    ck_assert_uint_ge(during, 8);
  } else {
    /* One run may have been claimed just before the loss was noticed. */
    ck_assert_uint_le(during, 1);
  }
  json_decref(recs);

  h_redis_restart(&R);
  wait_log_count(&a, "cluster: connected", 2, 15000);
  wait_log_count(&b, "cluster: connected", 2, 15000);
  c = wait_state(&b, "connected", 2000);
  ck_assert_int_eq(
      json_integer_value(json_object_get(json_object_get(c, "link"), "losses")),
      1);
  json_decref(c);
  /* Claims resume: the occurrences after the reconnect, once each. */
  size_t before = count_of("once", "");
  wait_runs("once", "", before + 4, 10000, &a, &b);
  h_stop_ok(&a);
  h_stop_ok(&b);
  recs = runs_of("once", "");
  json_t *after = json_array();
  for (size_t i = before; i < json_array_size(recs); i++)
    json_array_append(after, json_array_get(recs, i));
  long long lo, hi;
  ck_assert_uint_ge(assert_once_each(after, &lo, &hi), 4);
  json_decref(after);
  json_decref(recs);
  /* One line per state change: connected, lost, connected. */
  for (int i = 0; i < 2; i++) {
    const struct aio_proc *p = i ? &b : &a;
    ck_assert_int_eq(h_log_count(p, "cluster: connected"), 2);
    ck_assert_int_eq(h_log_count(p, "cluster: lost"), 1);
    ck_assert_int_eq(h_log_count(p, "still unreachable"), 0);
    /* Once per schedule and outage. */
    if (h_log_count(p, "cluster_fallback =") != 2)
      h_dump_log(p);
    ck_assert_int_eq(h_log_count(p, "cluster_fallback ="), 2);
  }
  h_redis_stop(&R);
}

START_TEST(test_cluster_redis_down_skip_then_resume) { redis_outage("skip"); }
END_TEST

START_TEST(test_cluster_redis_down_local_then_resume) { redis_outage("local"); }
END_TEST

/* A server that accepts the connection (the kernel does, from the backlog)
 * and never says a word must not hold the master: it times out, the
 * master serves, answers status at once, and runs its host schedules. */
START_TEST(test_cluster_silent_redis_times_out) {
  setup();
  int port = 0;
  int fd = h_listen_tcp(&port, 0);
  ck_assert_int_ge(fd, 0);
  char url[128];
  snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
  struct aio_proc a;
  node_start(&a, "a", url, "cluster_timeout = 0.3", TWO_SCHEDULES);
  ck_assert_int_eq(h_wait_log(&a, "cluster: cannot reach", 5000), 0);
  ck_assert(h_log_has(&a, "no answer within 300 ms"));
  long long t0 = h_now_ms();
  json_t *c = wait_state(&a, "down", 1000);
  ck_assert_int_lt(h_now_ms() - t0, 1000);
  ck_assert_uint_ge(json_integer_value(json_object_get(
                        json_object_get(c, "link"), "timeouts")),
                    1);
  json_decref(c);
  wait_runs("everywhere", "a", 4, 5000, &a, NULL);
  ck_assert_uint_eq(count_of("once", "a"), 0); /* skip: the default */
  c = wait_state(&a, "down", 1000);
  json_t *cl = json_object_get(c, "claims");
  ck_assert_int_ge(json_integer_value(json_object_get(cl, "skipped")), 3);
  ck_assert_int_eq(json_integer_value(json_object_get(cl, "won")), 0);
  json_decref(c);
  h_stop_ok(&a);
  close(fd);
}
END_TEST

/* Nothing listens on the port: the refusal is seen at once and named,
 * not found out when the connect deadline (5 s here) expires. */
START_TEST(test_cluster_refused_connection_is_seen_at_once) {
  setup();
  char url[128];
  int port;
  do
    port = h_free_port();
  while (port == 6379);
  snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
  struct aio_proc a;
  long long t0 = h_now_ms();
  node_start(&a, "a", url, "cluster_timeout = 5", "");
  ck_assert_int_eq(h_wait_log(&a, "cluster: cannot reach", 4000), 0);
  ck_assert_int_lt(h_now_ms() - t0, 4000);
  ck_assert_msg(h_log_has(&a, "Connection refused"), "the reason is not "
                                                     "named");
  json_t *c = wait_state(&a, "down", 1000);
  ck_assert_str_eq(json_string_value(json_object_get(c, "last_error")),
                   "Connection refused");
  json_decref(c);
  h_stop_ok(&a);
}
END_TEST

/* A Redis that stops answering a live connection (CLIENT PAUSE): the
 * replies' deadline drops it, the master answers status meanwhile, and
 * it reconnects once Redis answers again. */
START_TEST(test_cluster_stalled_redis_costs_a_reconnect) {
  char reply[64];
  struct aio_proc a;
  one_node(&a, "cluster_timeout = 0.3", TWO_SCHEDULES);
  json_decref(wait_state(&a, "connected", 5000));
  ck_assert_int_eq(
      h_redis_cmd(&R, reply, sizeof(reply),
                  (const char *[]){"CLIENT", "PAUSE", "2000", NULL}),
      0);
  ck_assert_str_eq(reply, "OK");
  ck_assert_int_eq(h_wait_log(&a, "cluster: lost", 5000), 0);
  ck_assert(h_log_has(&a, "no reply within 300 ms"));
  long long t0 = h_now_ms();
  json_decref(ops_status(&a));
  ck_assert_int_lt(h_now_ms() - t0, 1000);
  wait_log_count(&a, "cluster: connected", 2, 15000);
  json_t *c = wait_state(&a, "connected", 1000);
  json_t *link = json_object_get(c, "link");
  ck_assert_int_ge(json_integer_value(json_object_get(link, "timeouts")), 1);
  ck_assert_int_eq(json_integer_value(json_object_get(link, "losses")), 1);
  ck_assert_int_eq(json_integer_value(json_object_get(link, "connects")), 2);
  json_decref(c);
  h_stop_ok(&a);
  h_redis_stop(&R);
}
END_TEST

/* A reload keeps the link and the node name it started with (and says
 * that a changed one waits for a restart); the cluster schedule goes on
 * under the new generation, its runs told the node they claimed as. */
START_TEST(test_cluster_reload_keeps_the_link) {
  char out[4096];
  struct aio_proc a;
  one_node(&a, "", TWO_SCHEDULES);
  wait_runs("once", "a", 2, 5000, &a, NULL);
  char *conf = h_slurp(a.conf), *at = strstr(conf, "node = a\n");
  ck_assert_ptr_nonnull(at);
  at[7] = 'z';
  ops_rewrite(&a, conf);
  free(conf);
  ops_expect(&a, 0, out, sizeof(out), "reload", NULL);
  ck_assert_int_eq(h_wait_log(&a, "take effect on a restart; still", 8000), 0);
  json_t *c = wait_state(&a, "connected", 1000);
  ck_assert_str_eq(json_string_value(json_object_get(c, "node")), "a");
  json_decref(c);
  size_t n = count_of("once", "");
  wait_runs("once", "a", n + 3, 5000, &a, NULL);
  ck_assert_uint_eq(count_of("once", "z"), 0);
  ck_assert_int_eq(h_log_count(&a, "cluster: connected"), 1);
  h_stop_ok(&a);
  h_redis_stop(&R);
}
END_TEST

/* AUTH over a unix socket, the password from a file; a wrong one is a
 * refused handshake, said once, and the node stays down. */
START_TEST(test_cluster_unix_socket_and_password_file) {
  setup();
  h_redis_start(&R, dir, 1, "--requirepass s3cret");
  char url[256];
  h_redis_url(&R, url, sizeof(url));
  h_write(dir, "pw", "s3cret\n");
  h_write(dir, "bad", "wrong\n");
  char extra[512];
  snprintf(extra, sizeof(extra), "cluster_password_file = %s/pw", dir);
  struct aio_proc a, b;
  node_start(&a, "a", url, extra, "");
  json_t *c = wait_state(&a, "connected", 5000);
  ck_assert_ptr_nonnull(
      strstr(json_string_value(json_object_get(c, "redis")), "unix://"));
  /* The password is never shown. */
  char *shown = json_dumps(c, 0);
  ck_assert_ptr_null(strstr(shown, "s3cret"));
  free(shown);
  json_decref(c);
  snprintf(extra, sizeof(extra), "cluster_password_file = %s/bad", dir);
  node_start(&b, "b", url, extra, "");
  ck_assert_int_eq(h_wait_log(&b, "AUTH refused", 5000), 0);
  c = wait_state(&b, "down", 2000);
  json_decref(c);
  ck_assert(!h_log_has(&a, "s3cret") && !h_log_has(&b, "wrong"));
  h_stop_ok(&a);
  h_stop_ok(&b);
  h_redis_stop(&R);
}
END_TEST

/* Wait for a datagram on fd holding want. 0 or -1. */
static int notify_until(int fd, const char *want, int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  char buf[2048];
  while (h_now_ms() < deadline) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, (int)(deadline - h_now_ms())) <= 0)
      continue;
    ssize_t r = recv(fd, buf, sizeof(buf) - 1, 0);
    if (r > 0) {
      buf[r] = '\0';
      if (strstr(buf, want))
        return 0;
    }
  }
  return -1;
}

/* systemd's STATUS= follows the link: connected, then down. */
START_TEST(test_cluster_systemd_status_follows_the_link) {
  setup();
  h_redis_start(&R, dir, 0, NULL);
  char url[128], env[256];
  h_redis_url(&R, url, sizeof(url));
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  snprintf(sun.sun_path, sizeof(sun.sun_path), "%.80s/notify.sock", dir);
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
  snprintf(env, sizeof(env), "NOTIFY_SOCKET=%s", sun.sun_path);
  const char *const envv[] = {env, NULL};
  node_env = envv;
  struct aio_proc a;
  node_start(&a, "a", url, "", "");
  node_env = NULL;
  ck_assert_int_eq(notify_until(fd, "; cluster connected", 5000), 0);
  h_redis_stop(&R);
  ck_assert_int_eq(notify_until(fd,
                                "STATUS=serving with 1 workers; cluster "
                                "down (node a)",
                                5000),
                   0);
  h_stop_ok(&a);
  close(fd);
}
END_TEST

/* A bad URL is a config error at its line: exit 78, nothing started. */
START_TEST(test_cluster_bad_url_is_a_config_error) {
  setup();
  static const char *const bad[] = {
      "http://127.0.0.1:6379", "redis://",         "redis://host:0",
      "redis://host:99999",    "redis://host/x",   "unix://relative.sock",
      "rediss://host",         "redis://user@host"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
    char conf[512], out[4096];
    snprintf(conf, sizeof(conf), "[aio]\nworkers = 1\ncluster = %s\nnode = a\n",
             bad[i]);
    h_write(dir, "bad.conf", conf);
    char path[256];
    snprintf(path, sizeof(path), "%s/bad.conf", dir);
    int rc = h_aio(dir, out, sizeof(out),
                   (const char *[]){"-c", path, "check", NULL});
    ck_assert_msg(rc == 78, "%s: exit %d: %s", bad[i], rc, out);
    ck_assert_msg(strstr(out, "bad.conf:3:") != NULL, "%s: %s", bad[i], out);
  }
  /* scope = cluster without a cluster: a warning, and it checks. */
  char out[4096], path[256];
  char lone[512];
  snprintf(lone, sizeof(lone),
           "[aio]\nmodules = busmod\nmodule_path = %s\n[schedule:x]\n"
           "every = 1\nfunc = busmod.occ\nscope = cluster\n",
           AIO_TEST_MODULES);
  h_write(dir, "lone.conf", lone);
  snprintf(path, sizeof(path), "%s/lone.conf", dir);
  h_aio(dir, out, sizeof(out), (const char *[]){"-c", path, "check", NULL});
  ck_assert_msg(strstr(out, "lone.conf:4: [schedule:x] scope = cluster, but "
                            "[aio] cluster is not set") != NULL,
                "%s", out);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("cluster");
  TCase *tc = tcase_create("cluster");
  tcase_set_timeout(tc, 90);
  tcase_add_test(tc, test_cluster_occurrence_runs_once_across_nodes);
  tcase_add_test(tc, test_cluster_survives_the_winner_being_killed);
  tcase_add_test(tc, test_cluster_status_lists_the_live_nodes);
  tcase_add_test(tc, test_cluster_redis_down_skip_then_resume);
  tcase_add_test(tc, test_cluster_redis_down_local_then_resume);
  tcase_add_test(tc, test_cluster_silent_redis_times_out);
  tcase_add_test(tc, test_cluster_stalled_redis_costs_a_reconnect);
  tcase_add_test(tc, test_cluster_refused_connection_is_seen_at_once);
  tcase_add_test(tc, test_cluster_reload_keeps_the_link);
  tcase_add_test(tc, test_cluster_unix_socket_and_password_file);
  tcase_add_test(tc, test_cluster_bad_url_is_a_config_error);
  tcase_add_test(tc, test_cluster_systemd_status_follows_the_link);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return pu_run_suite(suite()); }
