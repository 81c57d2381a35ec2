#define _DEFAULT_SOURCE /* usleep */
/*
 * test_sched.c - [schedule:NAME] end to end: `every` runs on a drift-free
 * monotonic grid and never overlaps; cb follows a success and err a
 * failure; a run that outlives its period makes the next ones be skipped,
 * not stacked; a run whose worker dies is a failure whose err runs on
 * another worker; cron expressions are validated by `aio check`. The jobs
 * are tests/modules/busmod.c's, which record pid, run, the due time the
 * master gave, how late after it they started, and monotonic start/end
 * times (records.h).
 *
 * On a loaded machine the master itself may be held up past a due time:
 * it then skips it and says so (a log line naming the runs, `skipped` and
 * `late` in `aio status --json`). The tests account for every due time
 * from what the master reports (account()) instead of assuming it is
 * never starved: each one ran exactly once or was skipped for a reason
 * logged, and the due times stay on the grid whatever the load.
 */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "ops_util.h"
#include "process_util.h"
#include "records.h"

#define MS 1000000LL /* ns */

static struct aio_proc P;
static char out_path[256];

static void start_with(const char *aio_extra, const char *schedule,
                       const char *busmod_extra) {
  char dir[128], conf[2048];
  h_tmpdir(dir, sizeof(dir));
  snprintf(out_path, sizeof(out_path), "%s/records.ndjson", dir);
  snprintf(conf, sizeof(conf),
           "[aio]\n"
           "modules = busmod\n"
           "module_path = %s\n"
           "workers = 2\n"
           "max_restarts = 50\n"
           "%s"
           "\n"
           "[busmod]\n"
           "out = %s\n"
           "%s\n"
           "\n"
           "%s\n",
           AIO_TEST_MODULES, aio_extra, out_path, busmod_extra, schedule);
  h_start_ready(&P, conf, NULL);
}

static void start(const char *schedule, const char *busmod_extra) {
  start_with("", schedule, busmod_extra);
}

static void stop(void) { h_stop_ok(&P); }

static json_t *wait_fn(const char *fn, size_t n, int timeout_ms) {
  json_t *recs = rec_wait(out_path, "fn", fn, n, timeout_ms);
  if (recs == NULL)
    h_dump_log(&P);
  ck_assert_msg(recs != NULL, "fewer than %zu '%s' records", n, fn);
  return recs;
}

/* No run starts before the previous one (on any worker) has ended. */
static void assert_no_overlap(const json_t *runs) {
  for (size_t i = 1; i < json_array_size(runs); i++) {
    const json_t *a = json_array_get(runs, i - 1), *b = json_array_get(runs, i);
    ck_assert_msg(rec_int(b, "start") >= rec_int(a, "end"),
                  "run %lld started before run %lld ended", rec_int(b, "run"),
                  rec_int(a, "run"));
  }
}

/* Why the master skipped a run, from its log. */
enum skip { NOT_SKIPPED, SKIP_LATE, SKIP_RUNNING, SKIP_NO_WORKER };

#define MAX_RUN 512

/* The runs of schedule name the master logged as skipped, into why[]
 * (runs up to MAX_RUN - 1). A "due time passed while the master was busy"
 * line must be true to its own figures: the first of its runs was due at
 * least a period per run skipped before the one that ran. */
static void log_skips(const char *name, long long every_ms,
                      enum skip why[MAX_RUN]) {
  char pre[96];
  snprintf(pre, sizeof(pre), "[schedule:%s] run", name);
  char *log = h_slurp(P.log);
  memset(why, 0, MAX_RUN * sizeof(why[0]));
  for (const char *q = log; (q = strstr(q, pre)) != NULL; q += strlen(pre)) {
    const char *t = q + strlen(pre);
    long long a, b, ago;
    int used = 0;
    enum skip w = SKIP_LATE;
    if (sscanf(t,
               "s %lld to %lld skipped: their due times passed while the "
               "master was busy (run %*d due %lld ms ago)%n",
               &a, &b, &ago, &used) == 3 &&
        used > 0) {
    } else if (sscanf(t,
                      " %lld skipped: its due time passed while the master "
                      "was busy (due %lld ms ago)%n",
                      &a, &ago, &used) == 2 &&
               used > 0) {
      b = a;
    } else if (sscanf(t, " %lld skipped: run still in progress%n", &a, &used) ==
                   1 &&
               used > 0) {
      b = a;
      w = SKIP_RUNNING;
    } else if (sscanf(t, " %lld: no ready worker; skipped%n", &a, &used) == 1 &&
               used > 0) {
      b = a;
      w = SKIP_NO_WORKER;
    } else {
      continue;
    }
    if (w == SKIP_LATE)
      ck_assert_msg(ago >= (b - a + 1) * every_ms - 1,
                    "runs %lld to %lld skipped as late, but run %lld was due "
                    "only %lld ms before",
                    a, b, a, ago);
    for (long long r = a; r <= b; r++) {
      ck_assert_msg(r > 0 && r < MAX_RUN, "run %lld", r);
      ck_assert_msg(why[r] == NOT_SKIPPED, "run %lld skipped twice", r);
      why[r] = w;
    }
  }
  free(log);
}

static int by_run(const void *a, const void *b) {
  long long x = rec_int(*(json_t *const *)a, "run");
  long long y = rec_int(*(json_t *const *)b, "run");
  return (x > y) - (x < y);
}

/* What the master reports of schedule name's runs, checked against what
 * the runs recorded: once at least n runs of fn have recorded, the
 * status's last_run L is taken, and then every due time 1..L either ran
 * exactly once (a record of fn) or was skipped, and logged with its
 * reason (why[]); the status counts agree (ok + failed + skipped +
 * in_flight = L, skipped and late = the runs logged as such). Returns fn's
 * records of runs 1..L sorted by run (new).
 */
static json_t *account(const char *name, const char *fn, long long every_ms,
                       size_t n, int timeout_ms, enum skip why[MAX_RUN]) {
  json_decref(wait_fn(fn, n, timeout_ms));
  json_t *st = ops_status(&P);
  json_t *sc = json_object_get(json_object_get(st, "schedules"), name);
  ck_assert_msg(json_is_object(sc), "no schedules.%s in the status", name);
  long long last = ops_int(sc, "last_run"), skipped = ops_int(sc, "skipped");
  long long late = ops_int(sc, "late");
  ck_assert_int_lt(last, MAX_RUN);
  ck_assert_int_eq(ops_int(sc, "ok") + ops_int(sc, "failed") + skipped +
                       ops_int(sc, "in_flight"),
                   last);
  json_decref(st);
  /* The runs in flight as the status was taken record soon. */
  json_t *mine = NULL;
  long long deadline = h_now_ms() + timeout_ms;
  for (;;) {
    json_t *all = rec_load(out_path), *recs = rec_where(all, "fn", fn);
    json_decref(all);
    json_decref(mine);
    mine = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(recs, i, r) if (rec_int(r, "run") <= last)
        json_array_append(mine, r);
    json_decref(recs);
    if ((long long)json_array_size(mine) >= last - skipped)
      break;
    ck_assert_msg(h_now_ms() < deadline,
                  "%zu runs of %s recorded of the %lld the status says ran",
                  json_array_size(mine), name, last - skipped);
    usleep(10000);
  }
  size_t nr = json_array_size(mine);
  json_t **v = malloc(nr * sizeof(*v));
  for (size_t i = 0; i < nr; i++)
    v[i] = json_array_get(mine, i);
  qsort(v, nr, sizeof(*v), by_run);
  json_t *sorted = json_array();
  for (size_t i = 0; i < nr; i++)
    json_array_append(sorted, v[i]);
  free(v);
  json_decref(mine);
  log_skips(name, every_ms, why);
  long long nskipped = 0, nlate = 0, next = 0;
  for (long long run = 1; run <= last; run++) {
    int ran = next < (long long)nr &&
              rec_int(json_array_get(sorted, (size_t)next), "run") == run;
    next += ran;
    ck_assert_msg(
        !(ran && next < (long long)nr &&
          rec_int(json_array_get(sorted, (size_t)next), "run") == run),
        "run %lld ran twice", run);
    ck_assert_msg(ran != (why[run] != NOT_SKIPPED),
                  ran ? "run %lld ran and was logged as skipped"
                      : "run %lld neither ran nor was logged as skipped",
                  run);
    nskipped += why[run] != NOT_SKIPPED;
    nlate += why[run] == SKIP_LATE;
  }
  ck_assert_int_eq(nskipped, skipped);
  ck_assert_int_eq(nlate, late);
  return sorted;
}

/* Run k of an every schedule is due at base + (k-1) * every whatever
 * earlier runs took, to the microsecond (the master's monotonic grid given
 * to the run as wall clock: both clocks read at once), and none of the
 * runs started before it was due (the clocks read in the master and in the
 * worker: a few us apart). */
static void assert_on_grid(const json_t *runs, long long every_us) {
  const json_t *r0 = json_array_get(runs, 0);
  size_t i;
  json_t *r;
  json_array_foreach(runs, i, r) {
    long long due = rec_int(r0, "due_us") +
                    (rec_int(r, "run") - rec_int(r0, "run")) * every_us;
    ck_assert_msg(llabs(rec_int(r, "due_us") - due) < 1000,
                  "run %lld was due %lld us off the grid", rec_int(r, "run"),
                  rec_int(r, "due_us") - due);
    ck_assert_msg(rec_int(r, "late_us") > -250,
                  "run %lld started %lld us before it was due",
                  rec_int(r, "run"), -rec_int(r, "late_us"));
  }
}

START_TEST(test_sched_every_fires_on_a_drift_free_grid) {
  start("[schedule:tick]\nevery = 0.1\nfunc = busmod.tick\n", "");
  /* 8 s of runs. */
  enum { N = 80 };
  enum skip why[MAX_RUN];
  json_t *runs = account("tick", "tick", 100, N, 20000, why);
  size_t nr = json_array_size(runs), i;
  json_t *r;
  assert_on_grid(runs, 100000);
  json_array_foreach(runs, i, r) ck_assert_int_eq(rec_int(r, "rc"), 0);
  /* No drift: the runs start on their due times, at the end as at the
   * beginning. A loaded machine makes some runs late, not each of a
   * quarter of them (the master and the worker sleep until then, so they
   * are woken first: each quarter's least stays near 1 ms, idle or with
   * four CPU hogs on 2 cores); a timer armed from the previous run instead
   * of from the grid is later with each run (0.3 ms a run: 6 ms a
   * quarter), a fixed error late always. */
  ck_assert_uint_ge(nr, N / 2);
  long long least[4] = {LLONG_MAX, LLONG_MAX, LLONG_MAX, LLONG_MAX};
  json_array_foreach(runs, i, r) {
    long long *m = &least[i * 4 / nr];
    *m = rec_int(r, "late_us") < *m ? rec_int(r, "late_us") : *m;
  }
  for (int q = 0; q < 4; q++)
    ck_assert_msg(least[q] < 5000,
                  "every run of quarter %d was over %lld ms late", q + 1,
                  least[q] / 1000);
  assert_no_overlap(runs);
  /* Round robin: both workers take runs. */
  pid_t first_pid = (pid_t)rec_int(json_array_get(runs, 0), "pid");
  int other = 0;
  json_array_foreach(runs, i, r) other += rec_int(r, "pid") != first_pid;
  ck_assert_int_gt(other, 0);
  json_decref(runs);
  stop();
}
END_TEST

/* A master stopped past several due times (SIGSTOP, as a starved or
 * frozen process) runs the last of them once when it goes on and skips
 * the others, logged and counted as late: no burst, and the runs after it
 * are back on the grid. */
START_TEST(test_sched_held_up_master_skips_instead_of_a_burst) {
  start("[schedule:tick]\nevery = 0.1\nfunc = busmod.tick\n", "");
  json_decref(wait_fn("tick", 3, 5000));
  ck_assert_int_eq(kill(P.pid, SIGSTOP), 0);
  long long until = h_now_ms() + 650;
  while (h_now_ms() < until)
    usleep(10000);
  ck_assert_int_eq(kill(P.pid, SIGCONT), 0);
  json_t *all = rec_load(out_path);
  size_t before = json_array_size(all);
  json_decref(all);
  enum skip why[MAX_RUN];
  json_t *runs = account("tick", "tick", 100, before + 5, 10000, why);
  long long late = 0;
  for (long long k = 1; k < MAX_RUN; k++)
    late += why[k] == SKIP_LATE;
  ck_assert_msg(late >= 5, "%lld due times skipped as late in a 650 ms stop",
                late);
  /* One run for the due times passed, then the grid: no two runs for a
   * due time (account() checked), each on its own. */
  assert_on_grid(runs, 100000);
  assert_no_overlap(runs);
  json_decref(runs);
  stop();
}
END_TEST

START_TEST(test_sched_cb_after_success_err_after_failure) {
  start("[schedule:flaky]\nevery = 0.1\nfunc = busmod.flaky\n"
        "cb = busmod.on_cb\nerr = busmod.on_err\n",
        "");
  /* flaky fails its even runs. */
  json_t *errs = wait_fn("err", 3, 5000);
  json_t *cbs = wait_fn("cb", 3, 5000);
  json_t *all = rec_load(out_path);
  json_t *funcs = rec_where(all, "fn", "flaky");
  size_t i;
  json_t *r;
  json_array_foreach(cbs, i, r) ck_assert_int_eq(rec_int(r, "run") % 2, 1);
  json_array_foreach(errs, i, r) {
    ck_assert_int_eq(rec_int(r, "run") % 2, 0);
    /* err is told why: flaky returned 1. */
    ck_assert_int_eq(rec_int(r, "status"), 1);
    ck_assert_str_eq(json_string_value(json_object_get(r, "error")),
                     "returned 1");
  }
  /* Each of runs 1..6 had exactly one of cb/err, after the run, and cb
   * ran on the worker that ran the job. */
  for (long long run = 1; run <= 6; run++) {
    const json_t *f = NULL, *after = NULL;
    int nafter = 0;
    json_array_foreach(funcs, i, r) if (rec_int(r, "run") == run) f = r;
    json_array_foreach(all, i, r) {
      const char *fn = json_string_value(json_object_get(r, "fn"));
      if (fn && (!strcmp(fn, "cb") || !strcmp(fn, "err")) &&
          rec_int(r, "run") == run) {
        after = r;
        nafter++;
      }
    }
    if (f == NULL || nafter == 0)
      continue; /* a run still in flight when we looked */
    ck_assert_int_eq(nafter, 1);
    ck_assert_str_eq(json_string_value(json_object_get(after, "fn")),
                     run % 2 ? "cb" : "err");
    ck_assert_int_ge(rec_int(after, "start"), rec_int(f, "end"));
    if (run % 2)
      ck_assert_int_eq(rec_int(after, "pid"), rec_int(f, "pid"));
  }
  /* The failure is logged too (whichever even run it was: on a loaded
   * machine the master may skip a due time it was late for). */
  char failed[64];
  snprintf(failed, sizeof(failed), "[schedule:flaky] run %lld failed",
           rec_int(json_array_get(errs, 0), "run"));
  ck_assert_msg(h_log_has(&P, failed), "no '%s' in the log", failed);
  json_decref(funcs);
  json_decref(all);
  json_decref(cbs);
  json_decref(errs);
  stop();
}
END_TEST

START_TEST(test_sched_long_run_skips_instead_of_stacking) {
  start("[schedule:slow]\nevery = 0.2\nfunc = busmod.slow\n",
        "slow_ms = 500\n");
  enum skip why[MAX_RUN];
  json_t *runs = account("slow", "slow", 200, 4, 8000, why);
  assert_no_overlap(runs);
  /* Each run waits for its own due time on the grid. */
  assert_on_grid(runs, 200000);
  int running = 0;
  for (size_t i = 1; i < json_array_size(runs); i++) {
    const json_t *b = json_array_get(runs, i);
    /* Not stacked: the due time after a run's is 0.2 s into its 0.5 s, so
     * it was skipped (as still in progress, or as late if the master came
     * to it only past the next one), and so is every due time up to the
     * next run (account() checked each was logged). */
    const json_t *a = json_array_get(runs, i - 1);
    ck_assert_int_ge(rec_int(b, "run") - rec_int(a, "run"), 2);
    for (long long k = rec_int(a, "run") + 1; k < rec_int(b, "run"); k++)
      running += why[k] == SKIP_RUNNING;
  }
  ck_assert_msg(running > 0, "no run was skipped as still in progress");
  json_decref(runs);
  stop();
}
END_TEST

/* A long job holds one worker: the runs of another schedule go to the idle
 * worker, on time, instead of being dealt round robin to the busy one and
 * then skipped as "still in progress" behind it. */
START_TEST(test_sched_runs_go_to_a_worker_not_running_a_job) {
  start("[schedule:slow]\nevery = 0.5\nfunc = busmod.slow\n"
        "[schedule:tick]\nevery = 0.1\nfunc = busmod.tick\n",
        "slow_ms = 1500\n");
  json_t *slows = wait_fn("slow", 1, 8000);
  const json_t *sl = json_array_get(slows, 0);
  long long s0 = rec_int(sl, "start"), s1 = rec_int(sl, "end");
  long long slow_pid = rec_int(sl, "pid");
  /* Every tick that started while the slow run held its worker. */
  json_t *ticks = wait_fn("tick", 1, 8000);
  for (int tries = 0; tries < 100; tries++) {
    const json_t *last = json_array_get(ticks, json_array_size(ticks) - 1);
    if (rec_int(last, "start") >= s1)
      break;
    json_decref(ticks);
    ticks = wait_fn("tick", json_array_size(ticks) + 1, 8000);
  }
  size_t during = 0;
  for (size_t i = 0; i < json_array_size(ticks); i++) {
    const json_t *t = json_array_get(ticks, i);
    if (rec_int(t, "start") < s0 || rec_int(t, "start") > s1)
      continue;
    during++;
    ck_assert_msg(rec_int(t, "pid") != slow_pid,
                  "tick run %lld went to the worker running the slow job",
                  rec_int(t, "run"));
  }
  /* 1.5 s at one tick per 0.1 s: about 15 (fewer on a loaded machine,
   * whose master skips due times it was late for); round robin gave 1 or
   * 2, the rest skipped behind the run stuck on the busy worker. */
  ck_assert_msg(during >= 5, "only %zu ticks ran during the 1.5 s slow run",
                during);
  json_decref(ticks);
  json_decref(slows);
  stop();
}
END_TEST

START_TEST(test_sched_run_whose_worker_dies_fails_and_err_runs_elsewhere) {
  start("[schedule:die]\nevery = 0.3\nfunc = busmod.die\n"
        "cb = busmod.on_cb\nerr = busmod.on_err\n",
        "");
  json_t *errs = wait_fn("err", 1, 5000);
  json_t *all = rec_load(out_path);
  json_t *died = rec_where(all, "fn", "die");
  const json_t *d1 = json_array_get(died, 0), *e1 = json_array_get(errs, 0);
  ck_assert_int_eq(rec_int(d1, "run"), 1);
  ck_assert_int_eq(rec_int(e1, "run"), 1);
  ck_assert_int_ne(rec_int(e1, "pid"), rec_int(d1, "pid"));
  ck_assert(!h_pid_alive((pid_t)rec_int(d1, "pid")));
  ck_assert(h_log_has(&P, "[schedule:die] run 1: worker"));
  json_decref(died);
  json_decref(all);
  /* The schedule goes on: run 2 succeeds and gets its cb. */
  json_t *cbs = wait_fn("cb", 1, 5000);
  ck_assert_int_ge(rec_int(json_array_get(cbs, 0), "run"), 2);
  json_decref(cbs);
  json_decref(errs);
  stop();
}
END_TEST

/* The record of fn for run, or NULL. */
static const json_t *run_rec(const json_t *all, const char *fn, long long run) {
  size_t i;
  json_t *r;
  json_array_foreach(all, i, r) {
    const char *f = json_string_value(json_object_get(r, "fn"));
    if (f && strcmp(f, fn) == 0 && rec_int(r, "run") == run)
      return r;
  }
  return NULL;
}

/* A scheduler that returns AIO_PENDING and calls aio_event_done() 200 ms
 * later (via: from a uv_timer, or from a thread of its own): the run
 * ends then, not at the return; cb gets the result it gave, err the
 * status and message of a failure (busmod's later: odd runs succeed,
 * even runs fail with 5, "even runs fail"). */
static void check_async(const char *func, const char *via) {
  char sched[256];
  snprintf(sched, sizeof(sched),
           "[schedule:a]\nevery = 0.5\nfunc = busmod.%s\n"
           "cb = busmod.on_cb\nerr = busmod.on_err\n",
           func);
  start(sched, "later_ms = 200\n");
  json_t *cbs = wait_fn("cb", 2, 10000);
  json_t *errs = wait_fn("err", 1, 10000);
  json_t *all = rec_load(out_path);
  size_t i;
  json_t *r;
  json_array_foreach(cbs, i, r) {
    long long run = rec_int(r, "run");
    const json_t *l = run_rec(all, "later", run);
    ck_assert_int_eq(run % 2, 1);
    ck_assert_ptr_nonnull(l);
    ck_assert_msg(rec_int(l, "end") - rec_int(l, "start") >= 190 * MS,
                  "run %lld finished %lld ms after it began", run,
                  (rec_int(l, "end") - rec_int(l, "start")) / MS);
    /* cb runs after the work ended, not after the scheduler returned. */
    ck_assert_int_ge(rec_int(r, "start"), rec_int(l, "end"));
    json_t *res = json_object_get(r, "result");
    ck_assert_int_eq(json_integer_value(json_object_get(res, "run")), run);
    ck_assert_str_eq(json_string_value(json_object_get(res, "via")), via);
    ck_assert_int_eq(rec_int(run_rec(all, "later-done", run), "rc"), 0);
  }
  json_array_foreach(errs, i, r) {
    long long run = rec_int(r, "run");
    ck_assert_int_eq(run % 2, 0);
    ck_assert_int_eq(rec_int(r, "status"), 5);
    ck_assert_str_eq(json_string_value(json_object_get(r, "error")),
                     "even runs fail");
    ck_assert_ptr_null(json_object_get(r, "result"));
    ck_assert_int_ge(rec_int(r, "start"),
                     rec_int(run_rec(all, "later", run), "end"));
  }
  json_decref(all);
  json_decref(errs);
  json_decref(cbs);
  stop();
}

START_TEST(test_sched_async_job_finished_from_a_timer) {
  check_async("later", "timer");
}
END_TEST

START_TEST(test_sched_async_job_finished_from_a_thread) {
  check_async("later_thread", "thread");
}
END_TEST

/* A pending run counts as running: the runs due meanwhile are skipped,
 * not sent to the other (idle) worker. */
START_TEST(test_sched_async_run_in_progress_is_not_overlapped) {
  start("[schedule:a]\nevery = 0.1\nfunc = busmod.later\n", "later_ms = 350\n");
  enum skip why[MAX_RUN];
  json_t *runs = account("a", "later", 100, 4, 10000, why);
  assert_no_overlap(runs);
  /* Run 2 was due while run 1 was pending (or, on a master held up past
   * it, late: then a later one was). */
  int running = 0;
  for (long long k = 1; k < MAX_RUN; k++)
    running += why[k] == SKIP_RUNNING;
  ck_assert_msg(running > 0, "no run was skipped as still in progress");
  json_decref(runs);
  stop();
}
END_TEST

/* A pending run past the schedule's timeout fails: err runs with
 * -ETIMEDOUT and says so, no cb runs for it, the worker lives on, and the
 * run's late aio_event_done() is ignored (logged at debug). */
START_TEST(test_sched_async_timeout_fails_the_run_and_err_says_why) {
  start_with("log_level = debug\n",
             "[schedule:a]\nevery = 2\nfunc = busmod.later\n"
             "timeout = 0.3\ncb = busmod.on_cb\nerr = busmod.on_err\n",
             "later_ms = 700\n");
  json_t *errs = wait_fn("err", 1, 10000);
  json_t *late = wait_fn("later-done", 1, 10000);
  const json_t *e = json_array_get(errs, 0);
  ck_assert_int_eq(rec_int(e, "run"), 1);
  ck_assert_int_eq(rec_int(e, "status"), -ETIMEDOUT);
  ck_assert_str_eq(json_string_value(json_object_get(e, "error")),
                   "timed out after 0.3 s");
  json_t *all = rec_load(out_path);
  const json_t *l = run_rec(all, "later", 1);
  ck_assert_ptr_nonnull(l);
  long long after = rec_int(e, "start") - rec_int(l, "start");
  ck_assert_msg(after >= 290 * MS && after < 650 * MS,
                "err ran %lld ms after the run began", after / MS);
  /* The late completion was refused, and is not a success. */
  ck_assert_int_eq(rec_int(json_array_get(late, 0), "rc"), -ETIMEDOUT);
  ck_assert_ptr_null(run_rec(all, "cb", 1));
  ck_assert(h_pid_alive((pid_t)rec_int(l, "pid")));
  ck_assert(h_log_has(&P, "[schedule:a] run 1 failed: timed out after 0.3 s"));
  ck_assert(h_log_has(&P, "aio_event_done() after its timeout; ignored"));
  ck_assert(!h_log_has(&P, "killing"));
  json_decref(all);
  json_decref(late);
  json_decref(errs);
  stop();
}
END_TEST

START_TEST(test_sched_cron_checked_by_aio_check) {
  static const struct {
    const char *spec;
    int rc;
    const char *msg;
  } cases[] = {
      {"cron = */5 * * * *", 0, NULL},
      {"cron = 0 9-17 * * 1-5", 0, NULL},
      {"cron = 61 * * * *", 78, "t.conf:5:"},
      {"cron = * * *", 78, "t.conf:5:"},
      {"every = 1\ncron = * * * * *", 78, "not both"},
      {"every = 0", 78, "every"},
      {"offset = 1", 78, "needs 'every = SECONDS' or 'cron"},
  };
  char dir[128], out[4096], conf[1024];
  h_tmpdir(dir, sizeof(dir));
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    snprintf(conf, sizeof(conf),
             "[aio]\nmodules = busmod\nmodule_path = %s\n"
             "[schedule:c]\n%s\nfunc = busmod.tick\n",
             AIO_TEST_MODULES, cases[i].spec);
    h_write(dir, "t.conf", conf);
    const char *argv[] = {"-c", "t.conf", "check", NULL};
    int rc = h_aio(dir, out, sizeof(out), argv);
    ck_assert_msg(rc == cases[i].rc, "'%s': exit %d: %s", cases[i].spec, rc,
                  out);
    if (cases[i].msg)
      ck_assert_msg(strstr(out, cases[i].msg) != NULL, "'%s': %s",
                    cases[i].spec, out);
  }
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_sched");
  TCase *tc = tcase_create("sched");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_sched_every_fires_on_a_drift_free_grid);
  tcase_add_test(tc, test_sched_held_up_master_skips_instead_of_a_burst);
  tcase_add_test(tc, test_sched_cb_after_success_err_after_failure);
  tcase_add_test(tc, test_sched_long_run_skips_instead_of_stacking);
  tcase_add_test(tc, test_sched_runs_go_to_a_worker_not_running_a_job);
  tcase_add_test(tc,
                 test_sched_run_whose_worker_dies_fails_and_err_runs_elsewhere);
  tcase_add_test(tc, test_sched_cron_checked_by_aio_check);
  tcase_add_test(tc, test_sched_async_job_finished_from_a_timer);
  tcase_add_test(tc, test_sched_async_job_finished_from_a_thread);
  tcase_add_test(tc, test_sched_async_run_in_progress_is_not_overlapped);
  tcase_add_test(tc, test_sched_async_timeout_fails_the_run_and_err_says_why);
  suite_add_tcase(s, tc);
  return s;
}

/* pu_run_suite also turns core dumps off: workers crash here on purpose. */
int main(void) { return pu_run_suite(suite()); }
