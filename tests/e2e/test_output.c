/*
 * test_output.c - a worker's stdout and stderr in the log (supervisor/
 * output.c), with the outmod fixture: one entry per line tagged with the
 * worker's slot, pid and stream, in the foreground, under -d with log_file
 * and as JSON; a line past the cut is cut and counted; a flood from one
 * worker neither stalls the master nor grows it; logrotate's rename + USR1
 * takes master, captured and direct worker lines to the new file; and
 * cpu_affinity pins each worker to its CPU.
 */
#define _GNU_SOURCE
#include <check.h>
#include <jansson.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "harness.h"
#include "ops_util.h"
#include "process_util.h"

/* Must match OUTPUT_LINE_MAX (supervisor/output.h), as documented. */
#define CUT 4096

static void conf_out(char *out, size_t n, const char *name,
                     const char *protocol, int port, const char *aio_extra) {
  h_conf(out, n, "outmod", "graceful_timeout = 5\n%s",
         aio_extra ? aio_extra : "");
  h_conf_server(out, n, name, protocol, port);
}

/* p's log, with the log at path instead (log_file). */
static struct aio_proc log_at(const struct aio_proc *p, const char *name) {
  struct aio_proc q = *p;
  snprintf(q.log, sizeof(q.log), "%s/%s", p->dir, name);
  return q;
}

static void assert_log(const struct aio_proc *p, const char *s) {
  if (h_wait_log(p, s, 10000) != 0) {
    h_dump_log(p);
    ck_abort_msg("no '%s' in %s", s, p->log);
  }
}

/* Wait until s is in p's log n times; fail with the log if it is not. */
static void wait_count(const struct aio_proc *p, const char *s, int n) {
  long long deadline = h_now_ms() + 10000;
  while (h_log_count(p, s) < n && h_now_ms() < deadline)
    usleep(10000);
  if (h_log_count(p, s) != n) {
    h_dump_log(p);
    ck_abort_msg("'%s' is in %s %d times, not %d", s, p->log, h_log_count(p, s),
                 n);
  }
}

/* "say WORD": the pid of the worker that printed it. */
static pid_t say(int port, const char *word) {
  char req[64], buf[64];
  snprintf(req, sizeof(req), "%s\n", word);
  ck_assert_int_eq(h_exchange_once(port, req, "\n", buf, sizeof(buf), 5000),
                   H_OK);
  ck_assert_msg(strncmp(buf, "ok ", 3) == 0, "answer: %s", buf);
  return (pid_t)atoi(buf + 3);
}

/* The slot of worker pid in `aio status --json`, or -1. */
static int slot_of(const struct aio_proc *p, pid_t pid) {
  json_t *st = ops_status(p);
  int slot = -1;
  size_t i;
  json_t *w;
  json_array_foreach(json_object_get(st, "procs"), i, w) {
    if (ops_int(w, "pid") == pid)
      slot = (int)ops_int(w, "slot");
  }
  json_decref(st);
  return slot;
}

START_TEST(test_output_lines_are_logged_tagged_in_the_foreground) {
  struct aio_proc p;
  char conf[2048], want[160];
  int port = h_free_port();
  conf_out(conf, sizeof(conf), "say", "outmod.say", port, "workers = 2\n");
  h_start_ready(&p, conf, NULL);
  /* init's printf and fprintf(stderr), each worker's. */
  wait_count(&p, "] stdout: outmod init on stdout", 2);
  wait_count(&p, "] stderr: outmod init on stderr", 2);
  ck_assert_int_eq(h_log_count(&p, "info  [worker 0 "), 1);
  ck_assert_int_eq(h_log_count(&p, "warn  [worker 1 "), 1);

  /* One connection, so one worker: a line, then one with no newline. */
  int fd = h_connect(port, 5000);
  ck_assert_int_ge(fd, 0);
  char buf[64];
  ck_assert_int_eq(h_send(fd, "hello\n", 6), 0);
  ck_assert_int_gt(h_recv_until(fd, buf, sizeof(buf), "\n", 5000), 0);
  ck_assert_int_eq(h_send(fd, "last:hello\n", 11), 0);
  ck_assert_int_gt(h_recv_until(fd, buf, sizeof(buf), "\n", 5000), 0);
  close(fd);
  pid_t pid = (pid_t)atoi(buf + 3);
  int slot = slot_of(&p, pid);
  ck_assert_int_ge(slot, 0);
  snprintf(want, sizeof(want), "info  [worker %d %d] stdout: said hello", slot,
           (int)pid);
  assert_log(&p, want);
  snprintf(want, sizeof(want), "warn  [worker %d %d] stderr: warned hello",
           slot, (int)pid);
  assert_log(&p, want);
  /* Nothing reaches the terminal untagged. */
  ck_assert_int_eq(h_log_count(&p, "said hello"), 1);
  ck_assert_int_eq(h_log_count(&p, "outmod init on stdout"), 2);

  /* The line with no newline is flushed when the worker exits, before the
   * master says it exited. */
  h_stop_ok(&p);
  char *log = h_slurp(p.log);
  snprintf(want, sizeof(want), "[worker %d %d] stdout: tail hello\n", slot,
           (int)pid);
  char *tail = strstr(log, want);
  snprintf(want, sizeof(want), "worker %d (pid %d) exited", slot, (int)pid);
  char *exited = strstr(log, want);
  if (!tail || !exited || tail > exited)
    h_dump_log(&p);
  ck_assert_msg(tail && exited && tail < exited,
                "the partial line was not flushed before the exit");
  free(log);
}
END_TEST

START_TEST(test_output_reaches_log_file_under_daemon_as_json) {
  struct aio_proc p;
  char conf[2048], out[4096];
  int port = h_free_port();
  conf_out(conf, sizeof(conf), "say", "outmod.say", port,
           "workers = 1\nlog_file = daemon.log\nlog_format = json\n"
           "pidfile = aio.pid\n");
  ck_assert_int_eq(h_prepare(&p, conf, NULL), 0);
  ops_expect(&p, 0, out, sizeof(out), "run", "-d", NULL);
  struct aio_proc q = log_at(&p, "daemon.log");
  /* A quote and a backslash, which jansson escapes. */
  pid_t pid = say(port, "q\"b\\");
  ck_assert_int_eq(say(port, "last:q\"b\\"), pid);
  assert_log(&q, "said q\\\"b\\\\");
  ops_expect(&p, 0, out, sizeof(out), "stop", NULL);
  char *log = h_slurp(q.log);
  int said = 0, warned = 0, tail = 0;
  for (char *line = log, *next; *line; line = next) {
    next = strchr(line, '\n');
    ck_assert_ptr_nonnull(next);
    *next++ = '\0';
    json_error_t e;
    json_t *o = json_loads(line, 0, &e);
    ck_assert_msg(json_is_object(o), "not JSON (%s): %s", e.text, line);
    const char *msg = json_string_value(json_object_get(o, "msg"));
    const char *stream = json_string_value(json_object_get(o, "stream"));
    ck_assert_ptr_nonnull(msg);
    if (stream) {
      ck_assert_str_eq(json_string_value(json_object_get(o, "role")), "worker");
      ck_assert_int_eq(json_integer_value(json_object_get(o, "slot")), 0);
      ck_assert_int_eq(json_integer_value(json_object_get(o, "pid")), pid);
      const char *level = json_string_value(json_object_get(o, "level"));
      ck_assert_str_eq(level, strcmp(stream, "stdout") == 0 ? "info" : "warn");
      said += strcmp(msg, "said q\"b\\") == 0 && !strcmp(stream, "stdout");
      warned += strcmp(msg, "warned q\"b\\") == 0 && !strcmp(stream, "stderr");
      tail += strcmp(msg, "tail q\"b\\") == 0;
    }
    json_decref(o);
  }
  free(log);
  ck_assert_int_eq(said, 1);
  ck_assert_int_eq(warned, 1);
  ck_assert_int_eq(tail, 1);
}
END_TEST

/* The output counters of the one worker in status. */
static json_t *worker_output(const struct aio_proc *p) {
  json_t *st = ops_status(p);
  json_t *w = json_array_get(json_object_get(st, "procs"), 0);
  json_t *o = json_incref(json_object_get(w, "output"));
  json_decref(st);
  ck_assert_ptr_nonnull(o);
  return o;
}

START_TEST(test_output_long_line_is_cut_and_counted) {
  struct aio_proc p;
  char conf[2048], buf[64];
  int port = h_free_port();
  conf_out(conf, sizeof(conf), "long", "outmod.longline", port,
           "workers = 1\n");
  h_start_ready(&p, conf, NULL);
  /* Exactly the cut: whole. */
  ck_assert_int_eq(
      h_exchange_once(port, "4096\n", "\n", buf, sizeof(buf), 5000), H_OK);
  assert_log(&p, "stdout: after long");
  ck_assert_int_eq(
      h_exchange_once(port, "10000\n", "\n", buf, sizeof(buf), 5000), H_OK);
  wait_count(&p, "stdout: after long", 2);
  /* Both long lines are logged with CUT bytes: "L" and CUT - 1 x's, then
   * the end of the line. */
  char *log = h_slurp(p.log);
  int found = 0;
  for (char *at = log; (at = strstr(at, "stdout: L")) != NULL; at++) {
    size_t run = strspn(at + 9, "x");
    ck_assert_int_eq(run, CUT - 1);
    ck_assert_int_eq(at[9 + run], '\n');
    found++;
  }
  free(log);
  ck_assert_int_eq(found, 2);
  json_t *o = worker_output(&p);
  ck_assert_int_eq(ops_int(o, "cut"), 1);
  ck_assert_int_eq(ops_int(o, "dropped_bytes"), 10000 - CUT);
  /* init's two, two long lines, two "after long". */
  ck_assert_int_eq(ops_int(o, "lines"), 6);
  json_decref(o);
  char out[4096];
  ops_expect(&p, 0, out, sizeof(out), "status", NULL);
  ck_assert_msg(strstr(out, "6 lines, 1 cut (5904 B dropped)"), "status: %s",
                out);
  h_stop_ok(&p);
}
END_TEST

#define FLOOD_MIB 50

START_TEST(test_output_flood_does_not_stall_or_grow_the_master) {
  struct aio_proc p;
  char conf[2048], buf[64];
  int flood = h_free_port(), echo = h_free_port();
  conf_out(conf, sizeof(conf), "flood", "outmod.flood", flood,
           "workers = 2\ntimeout = 5\n");
  h_conf_server(conf, sizeof(conf), "echo", "aio.echo", echo);
  h_start_ready(&p, conf, NULL);
  pid_t kids[2];
  pu_workers(p.pid, kids, 2);
  long base = ops_proc_id(p.pid, "VmRSS");
  ck_assert_int_gt(base, 0);
  char req[16];
  snprintf(req, sizeof(req), "%d\n", FLOOD_MIB);
  ck_assert_int_eq(h_exchange_once(flood, req, "\n", buf, sizeof(buf), 5000),
                   H_OK);
  ck_assert_str_eq(buf, "started\n");
  /* Until every line is logged: the workers answer and the master answers
   * status, each well within a second, and the master does not grow. */
  long long want = FLOOD_MIB * 1024LL + 1 + 4, lines = 0, worst_echo = 0,
            worst_status = 0, deadline = h_now_ms() + 60000;
  long peak = base;
  int rounds = 0;
  while (lines < want && h_now_ms() < deadline) {
    long long t0 = h_now_ms();
    ck_assert_int_eq(
        h_exchange_once(echo, "ping\n", "\n", buf, sizeof(buf), 5000), H_OK);
    long long t1 = h_now_ms();
    json_t *st = ops_status(&p);
    long long t2 = h_now_ms();
    lines = 0;
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(st, "procs"), i, w) {
      lines += ops_int(json_object_get(w, "output"), "lines");
    }
    json_decref(st);
    long rss = ops_proc_id(p.pid, "VmRSS");
    if (rss > peak)
      peak = rss;
    if (t1 - t0 > worst_echo)
      worst_echo = t1 - t0;
    if (t2 - t1 > worst_status)
      worst_status = t2 - t1;
    rounds++;
  }
  fprintf(stderr,
          "flood of %d MiB: %d rounds, worst echo %lld ms, worst status %lld "
          "ms, master VmRSS %ld -> peak %ld KiB\n",
          FLOOD_MIB, rounds, worst_echo, worst_status, base, peak);
  ck_assert_int_eq(lines, want);
  ck_assert_int_lt(worst_echo, 1000);
  ck_assert_int_lt(worst_status, 1000);
  ck_assert(!H_RSS_CHECKED || peak - base < 4 * 1024);
  ck_assert_int_ge(rounds, 2); /* it was measured during the flood */
  /* Nobody was killed for a missed heartbeat, nothing was cut. */
  pid_t now[2];
  pu_workers(p.pid, now, 2);
  ck_assert(pu_pid_in(kids[0], now, 2) && pu_pid_in(kids[1], now, 2));
  ck_assert_int_eq(h_log_count(&p, "silent for"), 0);
  ck_assert_int_eq(h_log_count(&p, "stderr: flood done"), 1);
  h_stop_ok(&p);
  unlink(p.log); /* 50 MiB */
}
END_TEST

START_TEST(test_output_follows_a_rotated_log) {
  /* logrotate without copytruncate: rename, USR1. The new file, created
   * by aio at the old path, gets the master's lines, the workers' captured
   * output (written by the master) and the workers' own lines (written by
   * them, after they reopened on the bus's word). */
  struct aio_proc p = {0};
  char conf[2048], logf[256], rotated[300], out[4096];
  int port = h_free_port();
  conf_out(conf, sizeof(conf), "say", "outmod.say", port,
           "workers = 2\nlog_file = aio-file.log\n");
  h_tmpdir(p.dir, sizeof(p.dir));
  snprintf(logf, sizeof(logf), "%s/aio-file.log", p.dir);
  snprintf(rotated, sizeof(rotated), "%s.1", logf);
  h_start_ready(&p, conf, &(struct h_opts){.dir = p.dir});
  struct aio_proc now = log_at(&p, "aio-file.log");
  struct aio_proc old = log_at(&p, "aio-file.log.1");
  say(port, "before");
  assert_log(&now, "stdout: said before");
  ck_assert_int_eq(rename(logf, rotated), 0);
  ck_assert_int_eq(kill(p.pid, SIGUSR1), 0);
  assert_log(&old, "reopening");
  /* The master reopened before it read another line of theirs. */
  say(port, "after");
  assert_log(&now, "stdout: said after");
  ck_assert_int_eq(h_log_count(&old, "said after"), 0);
  /* The workers got the word on the bus before the stop a reload sends
   * them; draining, they log themselves. The new generation's init lines
   * follow. */
  ops_expect(&p, 0, out, sizeof(out), "reload", NULL);
  wait_count(&now, "] draining", 2);
  wait_count(&now, "] stdout: outmod init on stdout", 2);
  ck_assert_int_eq(h_log_count(&old, "] draining"), 0);
  ck_assert_int_eq(h_log_count(&now, "cannot reopen"), 0);
  ck_assert_int_eq(h_log_count(&old, "cannot reopen"), 0);
  ck_assert_int_gt(h_log_count(&now, "[master "), 0);
  h_stop_ok(&p);
}
END_TEST

/* The k-th CPU (mod their count) of this process's affinity, which aio
 * inherits. */
static int nth_cpu(int k) {
  cpu_set_t mine;
  ck_assert_int_eq(sched_getaffinity(0, sizeof(mine), &mine), 0);
  int want = k % CPU_COUNT(&mine);
  for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
    if (CPU_ISSET(cpu, &mine) && want-- == 0)
      return cpu;
  return -1;
}

/* Each worker in status: its Cpus_allowed_list and its "cpu" are what
 * its slot's one CPU when pinned, else the master's list and null. */
static void assert_placement(const struct aio_proc *p, int pinned) {
  char master[64], got[64], want[64];
  ops_proc_field(p->pid, "Cpus_allowed_list", master, sizeof(master));
  ck_assert_str_ne(master, "");
  json_t *st = ops_status(p);
  size_t i;
  json_t *w;
  ck_assert_int_eq(json_array_size(json_object_get(st, "procs")), 2);
  json_array_foreach(json_object_get(st, "procs"), i, w) {
    int slot = (int)ops_int(w, "slot");
    ops_proc_field((pid_t)ops_int(w, "pid"), "Cpus_allowed_list", got,
                   sizeof(got));
    if (pinned) {
      snprintf(want, sizeof(want), "%d", nth_cpu(slot));
      ck_assert_int_eq(ops_int(w, "cpu"), nth_cpu(slot));
    } else {
      snprintf(want, sizeof(want), "%s", master);
      ck_assert(json_is_null(json_object_get(w, "cpu")));
    }
    ck_assert_msg(strcmp(got, want) == 0,
                  "worker %d: Cpus_allowed_list %s, not %s", slot, got, want);
  }
  json_decref(st);
}

/* Two workers started with aio_extra: placed as assert_placement says. */
static void placement_case(const char *aio_extra, int pinned) {
  struct aio_proc p;
  char conf[2048];
  conf_out(conf, sizeof(conf), "say", "outmod.say", h_free_port(), aio_extra);
  h_start_ready(&p, conf, NULL);
  assert_placement(&p, pinned);
  h_stop_ok(&p);
}

START_TEST(test_cpu_affinity_auto_pins_each_slot_to_its_cpu) {
  placement_case("workers = 2\ncpu_affinity = auto\n", 1);
}
END_TEST

START_TEST(test_cpu_affinity_off_leaves_the_masters_set) {
  placement_case("workers = 2\n", 0);
}
END_TEST

START_TEST(test_cpu_affinity_auto_uses_the_cpus_aio_may_use) {
  /* Under taskset, both slots share the one CPU aio was given, whatever
   * the machine has. */
  cpu_set_t mine;
  ck_assert_int_eq(sched_getaffinity(0, sizeof(mine), &mine), 0);
  int last = -1;
  for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
    if (CPU_ISSET(cpu, &mine))
      last = cpu;
  char cpu[16];
  snprintf(cpu, sizeof(cpu), "%d", last);
  const char *wrap[] = {"taskset", "-c", cpu, NULL};
  struct aio_proc p;
  char conf[2048];
  conf_out(conf, sizeof(conf), "say", "outmod.say", h_free_port(),
           "workers = 2\ncpu_affinity = auto\n");
  h_start_ready(&p, conf, &(struct h_opts){.wrap = wrap});
  json_t *st = ops_status(&p);
  size_t i;
  json_t *w;
  json_array_foreach(json_object_get(st, "procs"), i, w) {
    char got[64];
    ops_proc_field((pid_t)ops_int(w, "pid"), "Cpus_allowed_list", got,
                   sizeof(got));
    ck_assert_str_eq(got, cpu);
    ck_assert_int_eq(ops_int(w, "cpu"), last);
  }
  json_decref(st);
  h_stop_ok(&p);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_output");
  TCase *tc = tcase_create("output");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_output_lines_are_logged_tagged_in_the_foreground);
  tcase_add_test(tc, test_output_reaches_log_file_under_daemon_as_json);
  tcase_add_test(tc, test_output_long_line_is_cut_and_counted);
  tcase_add_test(tc, test_output_flood_does_not_stall_or_grow_the_master);
  tcase_add_test(tc, test_output_follows_a_rotated_log);
  tcase_add_test(tc, test_cpu_affinity_auto_pins_each_slot_to_its_cpu);
  tcase_add_test(tc, test_cpu_affinity_off_leaves_the_masters_set);
  tcase_add_test(tc, test_cpu_affinity_auto_uses_the_cpus_aio_may_use);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
