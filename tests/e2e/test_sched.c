#define _DEFAULT_SOURCE /* usleep */
/*
 * test_sched.c - [schedule:NAME] end to end: `every` runs on a drift-free
 * monotonic grid and never overlaps; cb follows a success and err a
 * failure; a run that outlives its period makes the next ones be skipped,
 * not stacked; a run whose worker dies is a failure whose err runs on
 * another worker; cron expressions are validated by `aio check`. The jobs
 * are tests/modules/busmod.c's, which record pid, run and monotonic
 * start/end times (records.h).
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
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

static int cmp_ll(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return (x > y) - (x < y);
}

START_TEST(test_sched_every_fires_on_a_drift_free_grid) {
  start("[schedule:tick]\nevery = 0.2\nfunc = busmod.tick\n", "");
  /* 5 s of runs, and two more to close the window. */
  enum { N = 27 };
  json_t *runs = wait_fn("tick", N, 12000);
  long long t1 = rec_int(json_array_get(runs, 0), "start");
  long long off[N], sorted[N];
  int in_window = 0;
  size_t i;
  json_t *r;
  json_array_foreach(runs, i, r) {
    if (i >= N)
      break;
    /* Run k is due at base + (k-1) * 0.2 s whatever earlier runs took. */
    ck_assert_int_eq(rec_int(r, "run"), (long long)i + 1);
    ck_assert_int_eq(rec_int(r, "rc"), 0);
    off[i] = sorted[i] = rec_int(r, "start") - (long long)i * 200 * MS;
    in_window += rec_int(r, "start") - t1 < 5000 * MS;
  }
  /* The grid's base, as most runs saw it: a first run that happened to be
   * late (a loaded machine) does not make every other one look early. */
  qsort(sorted, N, sizeof(sorted[0]), cmp_ll);
  long long base = sorted[N / 2], worst = 0;
  int close = 0;
  for (i = 0; i < N; i++) {
    long long err = llabs(off[i] - base);
    worst = err > worst ? err : worst;
    close += err < 50 * MS;
  }
  /* Almost every run on the grid; none a whole period off (that would be
   * a run stacked or skipped); and no drift: the error does not grow from
   * the first runs to the last. */
  ck_assert_msg(close >= N - 3, "%d of %d runs within 50 ms of the grid", close,
                N);
  ck_assert_msg(worst < 190 * MS, "a run was %lld ms off its grid", worst / MS);
  long long first = 0, last = 0;
  for (i = 0; i < 6; i++) {
    first += off[i] - base;
    last += off[N - 1 - i] - base;
  }
  ck_assert_msg(llabs(last - first) / 6 < 25 * MS,
                "drift: the last runs are %lld ms later than the first",
                (last - first) / 6 / MS);
  ck_assert_msg(in_window >= 24 && in_window <= 26, "%d runs in 5 s",
                in_window);
  assert_no_overlap(runs);
  /* Round robin: both workers take runs. */
  pid_t first_pid = (pid_t)rec_int(json_array_get(runs, 0), "pid");
  int other = 0;
  json_array_foreach(runs, i, r) other += rec_int(r, "pid") != first_pid;
  ck_assert_int_gt(other, 0);
  ck_assert(!h_log_has(&P, "skipped"));
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
  json_t *runs = wait_fn("slow", 4, 8000);
  assert_no_overlap(runs);
  long long t1 = rec_int(json_array_get(runs, 0), "start");
  for (size_t i = 1; i < json_array_size(runs); i++) {
    const json_t *a = json_array_get(runs, i - 1), *b = json_array_get(runs, i);
    /* Not stacked: the next run waits for its own due time on the grid,
     * so due times were skipped in between. */
    ck_assert_int_ge(rec_int(b, "run") - rec_int(a, "run"), 3);
    long long due = t1 + (rec_int(b, "run") - 1) * 200 * MS;
    ck_assert_msg(llabs(rec_int(b, "start") - due) < 50 * MS,
                  "run %lld started %lld ms off its due time",
                  rec_int(b, "run"), (rec_int(b, "start") - due) / MS);
  }
  ck_assert(h_log_has(&P, "[schedule:slow] run 2 skipped: run still in "
                          "progress"));
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
  json_t *runs = wait_fn("later", 4, 10000);
  assert_no_overlap(runs);
  ck_assert(h_log_has(&P, "[schedule:a] run 2 skipped: run still in "
                          "progress"));
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
