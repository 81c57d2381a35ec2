#define _DEFAULT_SOURCE /* usleep */
/*
 * test_bus.c - the signal bus end to end: a signal emitted from a protocol
 * callback reaches its listener exactly once per emit, on the emitting
 * worker and in emit order; broadcast reaches every worker once; the
 * master's lifecycle signals arrive; a listener that kills its worker costs
 * only the delivery in hand; a worker that writes junk on its bus loses its
 * channel and is replaced, and nobody else notices. The fixture module is
 * tests/modules/busmod.c; its records are JSON lines (records.h).
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "ops_util.h"
#include "process_util.h"
#include "records.h"

static struct aio_proc P;
static char out_path[256];
static int port;

/* The configuration; first: sections to put before the listeners. */
static void conf_text(char *conf, size_t n, int workers, const char *first) {
  snprintf(conf, n,
           "[aio]\n"
           "modules = busmod\n"
           "module_path = %s\n"
           "workers = %d\n"
           "max_restarts = 50\n"
           "\n"
           "[busmod]\n"
           "out = %s\n"
           "crash_at = 100\n"
           "\n"
           "[server:emitter]\n"
           "protocol = busmod.emitter\n"
           "address = 127.0.0.1\n"
           "port = %d\n"
           "\n"
           "%s"
           "[listen:bus]\n"
           "bus-once = busmod.record\n"
           "bus-fence = busmod.record\n"
           "bus-bcast = busmod.record broadcast\n"
           "bus-bfence = busmod.record broadcast\n"
           "bus-bdie = busmod.crash_at broadcast\n"
           "bus-basync = busmod.record_async broadcast\n"
           "    busmod.record broadcast\n"
           "crash-sig = busmod.crash\n"
           "bus-chain = busmod.chain\n"
           "bus-thread = busmod.record_thread\n"
           "bus-async = busmod.record_async\n"
           "    busmod.record\n"
           "odd\"bcast = busmod.record broadcast\n"
           "bus-wait = busmod.status_async\n"
           "    busmod.record\n"
           "bus-wbcast = busmod.record broadcast\n"
           "\n"
           "[listen:lifecycle]\n"
           "aio-starting = busmod.record broadcast\n"
           "aio-started = busmod.record broadcast\n"
           "aio-stopping = busmod.record broadcast\n"
           "worker-exited = busmod.record\n",
           AIO_TEST_MODULES, workers, out_path, port, first);
}

static void start(int workers) {
  char dir[128], conf[4096];
  h_tmpdir(dir, sizeof(dir));
  snprintf(out_path, sizeof(out_path), "%s/records.ndjson", dir);
  port = h_free_port();
  conf_text(conf, sizeof(conf), workers, "");
  h_start_ready(&P, conf, NULL);
}

static void stop(void) { h_stop_ok(&P); }

/* Read until n lines arrived or timeout. Returns the line count. */
static int read_lines(int fd, char *buf, size_t cap, int n, int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  size_t have = 0;
  int lines = 0;
  buf[0] = '\0';
  while (lines < n && have < cap - 1 && h_now_ms() < deadline) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 50) <= 0)
      continue;
    ssize_t r = recv(fd, buf + have, cap - 1 - have, 0);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    for (ssize_t i = 0; i < r; i++)
      lines += buf[have + (size_t)i] == '\n';
    have += (size_t)r;
    buf[have] = '\0';
  }
  return lines;
}

/* Send one line of ';'-separated commands; wait for one reply each. */
static void ask(int fd, const char *line, char *reply, size_t cap) {
  int n = 1;
  for (const char *s = line; *s; s++)
    n += *s == ';';
  ck_assert_int_eq(h_send(fd, line, strlen(line)), 0);
  ck_assert_int_eq(h_send(fd, "\n", 1), 0);
  ck_assert_int_eq(read_lines(fd, reply, cap, n, 10000), n);
}

static pid_t ask_pid(int fd) {
  char buf[64];
  ask(fd, "pid", buf, sizeof(buf));
  int pid = 0;
  ck_assert_int_eq(sscanf(buf, "pid %d", &pid), 1);
  return pid;
}

/* Connections until each of n workers holds one: fds[i] is served by
 * pids[i]. SO_REUSEPORT spreads connections by a hash of the 4-tuple, so a
 * bounded number of tries reaches every worker. */
static void conn_per_worker(int n, int *fds, pid_t *pids) {
  int have = 0;
  for (int tries = 0; have < n && tries < 500; tries++) {
    int fd = h_connect(port, 5000);
    ck_assert_int_ge(fd, 0);
    pid_t pid = ask_pid(fd);
    int seen = 0;
    for (int i = 0; i < have; i++)
      seen |= pids[i] == pid;
    if (seen) {
      close(fd);
      continue;
    }
    fds[have] = fd;
    pids[have++] = pid;
  }
  ck_assert_int_eq(have, n);
}

/* Records of `sig` with data.tag == tag. Returns new. */
static json_t *tagged(const json_t *all, const char *sig, const char *tag) {
  json_t *some = rec_where(all, "sig", sig), *out = json_array();
  size_t i;
  json_t *r;
  json_array_foreach(some, i, r) if (strcmp(rec_data_str(r, "tag"), tag) == 0)
      json_array_append(out, r);
  json_decref(some);
  return out;
}

static int count_pid(const json_t *recs, pid_t pid) {
  int n = 0;
  size_t i;
  json_t *r;
  json_array_foreach(recs, i, r) n += rec_int(r, "pid") == pid;
  return n;
}

/* recs are exactly seq 1..n, in that order. */
static void assert_seq_once_in_order(const json_t *recs, int n,
                                     const char *what) {
  ck_assert_msg((int)json_array_size(recs) == n, "%s: %zu records, want %d",
                what, json_array_size(recs), n);
  for (int i = 0; i < n; i++) {
    long long seq = rec_data_int(json_array_get(recs, (size_t)i), "seq");
    ck_assert_msg(seq == i + 1, "%s: record %d has seq %lld", what, i + 1, seq);
  }
}

/* Every worker emits n signals from a protocol callback, then a fence;
 * each emit reaches its once-per-emit listener exactly once, on the
 * emitting worker, in emit order. */
static void check_once_per_emit(int workers, int n) {
  int fds[16];
  pid_t pids[16];
  char line[128], reply[256], tag[16];
  conn_per_worker(workers, fds, pids);
  /* All emitters first, then the replies: the workers emit concurrently. */
  for (int k = 0; k < workers; k++) {
    snprintf(line, sizeof(line),
             "emit bus-once w%d-%d %d; emit bus-fence w%d-%d 1\n", k,
             (int)pids[k], n, k, (int)pids[k]);
    ck_assert_int_eq(h_send(fds[k], line, strlen(line)), 0);
  }
  for (int k = 0; k < workers; k++) {
    ck_assert_int_eq(read_lines(fds[k], reply, sizeof(reply), 2, 10000), 2);
    snprintf(line, sizeof(line), "emitted %d\nemitted 1\n", n);
    ck_assert_str_eq(reply, line);
  }
  /* Per-emitter order: once a worker's fence is in, so is all it emitted
   * before it. */
  json_t *fences =
      rec_wait(out_path, "sig", "bus-fence", (size_t)workers, 20000);
  if (fences == NULL)
    h_dump_log(&P);
  ck_assert_ptr_nonnull(fences);
  json_t *all = rec_load(out_path);
  for (int k = 0; k < workers; k++) {
    snprintf(tag, sizeof(tag), "w%d-%d", k, (int)pids[k]);
    json_t *recs = tagged(all, "bus-once", tag);
    assert_seq_once_in_order(recs, n, tag);
    size_t i;
    json_t *r;
    json_array_foreach(recs, i, r) {
      ck_assert_int_eq(rec_int(r, "pid"), pids[k]);
      ck_assert_int_eq(rec_data_int(r, "from"), pids[k]);
    }
    json_decref(recs);
    close(fds[k]);
  }
  json_decref(all);
  json_decref(fences);
}

START_TEST(test_bus_once_per_emit_exactly_once_on_emitter_in_order) {
  start(2);
  check_once_per_emit(2, 1500);
  json_t *all = rec_load(out_path);
  json_t *once = rec_where(all, "sig", "bus-once");
  ck_assert_int_eq(json_array_size(once), 3000);
  json_decref(once);
  json_decref(all);
  stop();
}
END_TEST

START_TEST(test_bus_broadcast_reaches_every_worker_once_in_order) {
  start(3);
  pid_t kids[8];
  ck_assert_int_eq(h_children(P.pid, kids, 8), 3);
  int fd[2];
  for (int k = 0; k < 2; k++) {
    fd[k] = h_connect(port, 5000);
    ck_assert_int_ge(fd[k], 0);
    char line[96];
    /* odd"bcast: a name the bus escapes, which the worker's quick take
     * on deliver frames leaves to the full check. */
    snprintf(line, sizeof(line),
             "emit bus-bcast b%d 500; emit odd\"bcast o%d 5; "
             "emit bus-bfence b%d 1\n",
             k, k, k);
    ck_assert_int_eq(h_send(fd[k], line, strlen(line)), 0);
  }
  json_t *fences = rec_wait(out_path, "sig", "bus-bfence", 6, 20000);
  ck_assert_ptr_nonnull(fences);
  json_t *all = rec_load(out_path);
  for (int w = 0; w < 3; w++)
    for (int k = 0; k < 2; k++) {
      char tag[8], what[64];
      snprintf(tag, sizeof(tag), "b%d", k);
      snprintf(what, sizeof(what), "worker %d, emitter %d", (int)kids[w], k);
      json_t *recs = tagged(all, "bus-bcast", tag), *mine = json_array();
      size_t i;
      json_t *r;
      json_array_foreach(recs, i, r) if (rec_int(r, "pid") == kids[w])
          json_array_append(mine, r);
      assert_seq_once_in_order(mine, 500, what);
      json_decref(mine);
      json_decref(recs);
      snprintf(tag, sizeof(tag), "o%d", k);
      recs = tagged(all, "odd\"bcast", tag);
      ck_assert_int_eq(count_pid(recs, kids[w]), 5);
      json_decref(recs);
    }
  /* Nobody but the three workers received anything. */
  json_t *b = rec_where(all, "sig", "bus-bcast");
  ck_assert_int_eq(json_array_size(b), 3 * 2 * 500);
  json_decref(b);
  json_decref(all);
  json_decref(fences);
  close(fd[0]);
  close(fd[1]);
  stop();
}
END_TEST

START_TEST(test_bus_lifecycle_signals_arrive) {
  start(2);
  pid_t kids[8];
  ck_assert_int_eq(h_children(P.pid, kids, 8), 2);
  json_t *started = rec_wait(out_path, "sig", "aio-started", 2, 5000);
  ck_assert_ptr_nonnull(started);
  json_t *all = rec_load(out_path);
  json_t *starting = rec_where(all, "sig", "aio-starting");
  ck_assert_int_eq(json_array_size(starting), 2);
  for (int w = 0; w < 2; w++) {
    ck_assert_int_eq(count_pid(starting, kids[w]), 1);
    ck_assert_int_eq(count_pid(started, kids[w]), 1);
  }
  /* Each worker sees aio-starting before aio-started. */
  size_t i;
  json_t *r;
  int seen_starting[2] = {0, 0};
  json_array_foreach(all, i, r) {
    const char *sig = json_string_value(json_object_get(r, "sig"));
    int w = rec_int(r, "pid") == kids[0] ? 0 : 1;
    if (sig && strcmp(sig, "aio-starting") == 0)
      seen_starting[w] = 1;
    if (sig && strcmp(sig, "aio-started") == 0)
      ck_assert_msg(seen_starting[w], "aio-started before aio-starting");
  }
  json_decref(starting);
  json_decref(started);
  json_decref(all);

  /* A worker killed: the other one hears of it, with how it died. */
  ck_assert_int_eq(kill(kids[0], SIGKILL), 0);
  json_t *exited = rec_wait(out_path, "sig", "worker-exited", 1, 5000);
  ck_assert_ptr_nonnull(exited);
  r = json_array_get(exited, 0);
  ck_assert_int_eq(rec_data_int(r, "pid"), kids[0]);
  ck_assert_int_eq(rec_data_int(r, "signal"), SIGKILL);
  ck_assert_int_eq(rec_int(r, "pid"), kids[1]);
  json_decref(exited);

  /* Its successor serves; then both hear aio-stopping before they stop. */
  long long deadline = h_now_ms() + 5000;
  while (h_log_count(&P, " ready in ") < 3 && h_now_ms() < deadline)
    usleep(10000);
  ck_assert_int_eq(h_log_count(&P, " ready in "), 3);
  ck_assert_int_eq(h_children(P.pid, kids, 8), 2);
  stop();
  all = rec_load(out_path);
  json_t *stopping = rec_where(all, "sig", "aio-stopping");
  ck_assert_int_eq(json_array_size(stopping), 2);
  for (int w = 0; w < 2; w++)
    ck_assert_int_eq(count_pid(stopping, kids[w]), 1);
  json_decref(stopping);
  json_decref(all);
}
END_TEST

/* With 2 workers, send one line of commands that emits crash-sig (whose
 * listener kills its worker) among others, ending with a bus-fence. Waits
 * for the fence, which must run on another worker than the victim, and
 * checks that the crash ran once, on the victim, and was not redelivered.
 * Returns every record (new); *victim and *heir: who died, who fenced. */
static json_t *crash_mid_line(const char *line, pid_t *victim, pid_t *heir) {
  start(2);
  int fd = h_connect(port, 5000);
  ck_assert_int_ge(fd, 0);
  *victim = ask_pid(fd);
  ck_assert_int_eq(h_send(fd, line, strlen(line)), 0);
  json_t *fence = rec_wait(out_path, "sig", "bus-fence", 1, 20000);
  if (fence == NULL)
    h_dump_log(&P);
  ck_assert_ptr_nonnull(fence);
  *heir = (pid_t)rec_int(json_array_get(fence, 0), "pid");
  ck_assert_int_ne(*heir, *victim);
  json_decref(fence);
  json_t *all = rec_load(out_path);
  /* The delivery in hand is not redelivered: it would kill again. */
  json_t *crash = rec_where(all, "sig", "crash-sig");
  ck_assert_int_eq(json_array_size(crash), 1);
  ck_assert_int_eq(rec_int(json_array_get(crash, 0), "pid"), *victim);
  json_decref(crash);
  ck_assert(h_log_has(&P, "not redelivered"));
  ck_assert(h_pid_alive(P.pid));
  ck_assert_int_eq(h_wait_children(P.pid, 2, 5000), 0);
  close(fd);
  return all;
}

START_TEST(test_bus_crashing_listener_loses_no_other_delivery) {
  pid_t victim, heir;
  /* One callback emits all of it, so it is all queued before the crash
   * listener runs. */
  json_t *all = crash_mid_line("emit bus-once before 200; emit crash-sig x 1; "
                               "emit bus-once after 200; emitodd bus-once odd "
                               "3; emit bus-fence f 1\n",
                               &victim, &heir);
  json_t *before = tagged(all, "bus-once", "before");
  json_t *after = tagged(all, "bus-once", "after");
  assert_seq_once_in_order(before, 200, "before the crash");
  assert_seq_once_in_order(after, 200, "after the crash");
  ck_assert_int_eq(count_pid(before, victim), 200);
  ck_assert_int_eq(count_pid(after, heir), 200);
  /* Frames the master's fast check cannot settle (an escaped key) are
   * redelivered as well. */
  json_t *odd = tagged(all, "bus-once", "odd");
  assert_seq_once_in_order(odd, 3, "with an escaped key");
  ck_assert_int_eq(count_pid(odd, heir), 3);
  json_decref(odd);
  json_decref(before);
  json_decref(after);
  json_decref(all);
  stop();
}
END_TEST

/* A worker keeps the signals only its own listeners hear in a ring it
 * shares with the master; when the ring is full, it sends them to the
 * master instead. A worker that dies with both kinds pending loses none:
 * the master merges the two back into emit order. Here the first signal
 * kills its worker, and 2500 signals of 600 bytes (1.5 MB, more than the
 * ring's 1 MiB) wait behind it. */
START_TEST(test_bus_crash_with_ring_full_loses_nothing) {
  pid_t victim, heir;
  json_t *all = crash_mid_line("emit crash-sig x 1; emitbig bus-once big 2500 "
                               "600; emit bus-fence f 1\n",
                               &victim, &heir);
  json_t *big = tagged(all, "bus-once", "big");
  assert_seq_once_in_order(big, 2500, "behind the crash, ring and socket");
  ck_assert_int_eq(count_pid(big, heir), 2500);
  json_decref(big);
  json_decref(all);
  stop();
}
END_TEST

/* A broadcast that comes back to its emitter names the emit whose data
 * the worker kept instead of carrying it. If the emitter dies before it
 * ran them, the master makes those deliveries whole again for the
 * slot's successor: between the dead worker and its successor each of
 * the emitter's broadcasts runs once, in order, with its data; the other
 * worker runs them all. */
START_TEST(test_bus_kept_broadcasts_of_a_dead_emitter_reach_its_successor) {
  pid_t victim, heir;
  json_t *all = crash_mid_line(
      "emit crash-sig x 1; emit bus-bcast kept 200; emit bus-fence f 1\n",
      &victim, &heir);
  json_decref(all);
  json_t *got = rec_wait(out_path, "sig", "bus-bcast", 400, 20000);
  if (got == NULL)
    h_dump_log(&P);
  ck_assert_ptr_nonnull(got);
  json_decref(got);
  all = rec_load(out_path);
  json_t *kept = tagged(all, "bus-bcast", "kept");
  json_t *theirs = json_array(), *ours = json_array();
  size_t i;
  json_t *r;
  json_array_foreach(kept, i, r) {
    json_array_append(rec_int(r, "pid") == heir ? theirs : ours, r);
    ck_assert_str_eq(rec_data_str(r, "tag"), "kept"); /* its data, whole */
  }
  assert_seq_once_in_order(theirs, 200, "on the other worker");
  assert_seq_once_in_order(ours, 200, "on the emitter and its successor");
  ck_assert_int_lt(count_pid(ours, victim), 200); /* the successor ran some */
  json_decref(theirs);
  json_decref(ours);
  json_decref(kept);
  json_decref(all);
  stop();
}
END_TEST

/* deliveries and deliver_frames of the one worker, from aio status. */
static void deliver_counts(long long *deliveries, long long *frames) {
  json_t *st = ops_status(&P);
  json_t *bus =
      json_object_get(json_array_get(json_object_get(st, "procs"), 0), "bus");
  *deliveries = ops_int(bus, "deliveries");
  *frames = ops_int(bus, "deliver_frames");
  json_decref(st);
}

/* One worker: its broadcasts come back to it in runs, several emits to a
 * deliver frame, and each is still a delivery of its own. Here the 100th
 * of 200 kills it: it ran 1 to 100, the 100th (in hand) is not
 * redelivered, and its successor gets 101 to 200, each once, in order;
 * then a burst of the successor's comes back to it in runs as well. */
START_TEST(test_bus_run_of_own_broadcasts_cut_by_a_crash_goes_on_in_the_heir) {
  start(1);
  int fd = h_connect(port, 5000);
  ck_assert_int_ge(fd, 0);
  pid_t victim = ask_pid(fd);
  static const char line[] = "emit bus-bdie die 200\n";
  ck_assert_int_eq(h_send(fd, line, sizeof(line) - 1), 0);
  json_t *got = rec_wait(out_path, "sig", "bus-bdie", 200, 20000);
  if (got == NULL)
    h_dump_log(&P);
  ck_assert_ptr_nonnull(got);
  json_decref(got);
  close(fd);
  json_t *all = rec_load(out_path);
  json_t *recs = tagged(all, "bus-bdie", "die");
  assert_seq_once_in_order(recs, 200, "the burst");
  pid_t heir = (pid_t)rec_int(json_array_get(recs, 199), "pid");
  ck_assert_int_ne(heir, victim);
  for (size_t i = 0; i < 200; i++)
    ck_assert_int_eq(rec_int(json_array_get(recs, i), "pid"),
                     i < 100 ? victim : heir);
  json_decref(recs);
  json_decref(all);
  ck_assert(h_log_has(&P, "not redelivered"));
  /* The heir got the rest as frames of their own, with the data; its own
   * burst comes back in runs. */
  long long d0, f0, d1, f1;
  deliver_counts(&d0, &f0);
  /* (and the master's worker-exited, to its listener here) */
  ck_assert_int_eq(d0, 101);
  ck_assert_int_eq(f0, 101);
  fd = h_connect(port, 5000);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(ask_pid(fd), heir);
  static const char more[] = "emit bus-bcast run 300\n";
  ck_assert_int_eq(h_send(fd, more, sizeof(more) - 1), 0);
  got = rec_wait(out_path, "sig", "bus-bcast", 300, 20000);
  ck_assert_ptr_nonnull(got);
  json_decref(got);
  all = rec_load(out_path);
  recs = tagged(all, "bus-bcast", "run");
  assert_seq_once_in_order(recs, 300, "the heir's burst");
  ck_assert_int_eq(count_pid(recs, heir), 300);
  json_decref(recs);
  json_decref(all);
  deliver_counts(&d1, &f1);
  ck_assert_int_eq(d1 - d0, 300);
  /* One callback's 300 emits reach the master in a few writes, each
   * coming back as one run. */
  ck_assert_msg(f1 - f0 <= 30, "300 deliveries in %lld frames", f1 - f0);
  close(fd);
  stop();
}
END_TEST

/* Start 1 worker; returns a connection to it, its pid in *pid. */
static int start_one(pid_t *pid) {
  start(1);
  int fd = h_connect(port, 5000);
  ck_assert_int_ge(fd, 0);
  *pid = ask_pid(fd);
  return fd;
}

/* Emits of one protocol callback reach the kernel before the worker runs
 * the next one, so a callback that kills the worker does not take them
 * along, although their listeners (on this worker) had not run yet. The
 * worker is held busy so that both connections' data are read in the same
 * loop iteration: no end-of-iteration flush, and no turn of the queue of
 * its own signals, between the two callbacks. */
START_TEST(test_bus_emits_survive_a_later_callback_crash) {
  start(1);
  int hold = h_connect(port, 5000), a = h_connect(port, 5000),
      b = h_connect(port, 5000);
  ck_assert_int_ge(hold, 0);
  ck_assert_int_ge(a, 0);
  ck_assert_int_ge(b, 0);
  /* hold is asked last: libuv reads a connection again right after its
   * callback, so the busy command that follows goes first. */
  pid_t victim = ask_pid(b);
  ck_assert_int_eq(ask_pid(a), victim);
  ck_assert_int_eq(ask_pid(hold), victim);
  ck_assert_int_eq(h_send(hold, "busy 300\n", 9), 0);
  /* It says "busy" before it spins: a and b arrive while it spins. */
  char said[16];
  ck_assert_int_eq(read_lines(hold, said, sizeof(said), 1, 5000), 1);
  ck_assert_str_eq(said, "busy\n");
  ck_assert_int_eq(h_send(a, "emit bus-once pre 300\n", 22), 0);
  ck_assert_int_eq(h_send(b, "die\n", 4), 0);
  json_t *recs = rec_wait(out_path, "sig", "bus-once", 300, 10000);
  if (recs == NULL)
    h_dump_log(&P);
  ck_assert_ptr_nonnull(recs);
  assert_seq_once_in_order(recs, 300, "emitted before the crash");
  ck_assert_int_eq(count_pid(recs, victim), 0);
  ck_assert(!h_pid_alive(victim));
  json_decref(recs);
  close(hold);
  close(a);
  close(b);
  stop();
}
END_TEST

/* After a reload the listener list can differ. A worker of the old
 * generation (still finishing a connection) runs its own emits with its
 * own list: the code that emitted is the code that listens. What it leaves
 * unfinished when it dies goes to the new generation, numbered by the new
 * list. Here the new list starts with a listener that kills its worker,
 * so numbering by the old list would run it instead of the recorder. */
START_TEST(test_bus_reload_delivers_by_the_receivers_listener_list) {
  pid_t old;
  int fd = start_one(&old);
  char conf[4096], reply[64];
  conf_text(conf, sizeof(conf), 1,
            "[listen:first]\nbus-shift = busmod.crash\n\n");
  FILE *f = fopen(P.conf, "w");
  ck_assert_ptr_nonnull(f);
  fputs(conf, f);
  fclose(f);
  ck_assert_int_eq(kill(P.pid, SIGHUP), 0);
  if (h_wait_log(&P, "reloaded: generation 2", 10000)) {
    h_dump_log(&P);
    ck_abort_msg("no reload");
  }
  /* The old worker drains: it still answers the open connection, and
   * runs what it emits itself. */
  ask(fd, "emit bus-once late 5; emit bus-fence late 1", reply, sizeof(reply));
  json_t *fence = rec_wait(out_path, "sig", "bus-fence", 1, 5000);
  if (fence == NULL)
    h_dump_log(&P);
  ck_assert_ptr_nonnull(fence);
  json_decref(fence);
  json_t *all = rec_load(out_path);
  json_t *late = tagged(all, "bus-once", "late");
  assert_seq_once_in_order(late, 5, "emitted by the old generation");
  ck_assert_int_eq(count_pid(late, old), 5);
  json_decref(late);
  json_decref(all);
  /* Now it dies in a listener: the emits behind it go to the new worker. */
  const char *line = "emit crash-sig x 1; emit bus-once orphan 5; "
                     "emit bus-fence orphan 1\n";
  ck_assert_int_eq(h_send(fd, line, strlen(line)), 0);
  fence = rec_wait(out_path, "sig", "bus-fence", 2, 5000);
  if (fence == NULL)
    h_dump_log(&P);
  ck_assert_ptr_nonnull(fence);
  pid_t heir = (pid_t)rec_int(json_array_get(fence, 1), "pid");
  ck_assert_int_ne(heir, old);
  all = rec_load(out_path);
  json_t *orphan = tagged(all, "bus-once", "orphan");
  assert_seq_once_in_order(orphan, 5, "left by the dead old worker");
  ck_assert_int_eq(count_pid(orphan, heir), 5);
  json_t *crash = rec_where(all, "sig", "crash-sig");
  ck_assert_int_eq(json_array_size(crash), 1);
  ck_assert_int_eq(rec_int(json_array_get(crash, 0), "pid"), old);
  /* Only the old worker was killed: the heir ran the recorder. */
  ck_assert_int_eq(h_log_count(&P, "killed by signal"), 1);
  ck_assert(h_pid_alive(heir));
  json_decref(crash);
  json_decref(orphan);
  json_decref(all);
  json_decref(fence);
  close(fd);
  stop();
}
END_TEST

/* aio_emit() hands the listeners the data as it was at the emit, whatever
 * the caller does with its object afterwards; aio_emit_new() takes the
 * object over. Either way, once per emit and in order. */
START_TEST(test_bus_emit_copies_and_emit_new_takes_over) {
  pid_t pid;
  int fd = start_one(&pid);
  char reply[128];
  ask(fd, "reuse bus-once r 50; emitnew bus-once n 50; emit bus-fence f 1",
      reply, sizeof(reply));
  ck_assert_str_eq(reply, "emitted 50\nemitted 50\nemitted 1\n");
  json_t *fence = rec_wait(out_path, "sig", "bus-fence", 1, 5000);
  if (fence == NULL)
    h_dump_log(&P);
  ck_assert_ptr_nonnull(fence);
  json_t *all = rec_load(out_path);
  json_t *reused = tagged(all, "bus-once", "r");
  json_t *taken = tagged(all, "bus-once", "n");
  json_t *changed = tagged(all, "bus-once", "changed after the emit");
  assert_seq_once_in_order(reused, 50, "one object, changed after each emit");
  assert_seq_once_in_order(taken, 50, "aio_emit_new");
  ck_assert_int_eq(json_array_size(changed), 0);
  ck_assert_int_eq(count_pid(reused, pid), 50);
  ck_assert_int_eq(count_pid(taken, pid), 50);
  json_decref(changed);
  json_decref(taken);
  json_decref(reused);
  json_decref(all);
  json_decref(fence);
  close(fd);
  stop();
}
END_TEST

/* Records of key == val with "tag" tag (top level). Returns new. */
static json_t *with_tag(const json_t *all, const char *key, const char *val,
                        const char *tag, int in_data) {
  json_t *some = rec_where(all, key, val), *out = json_array();
  size_t i;
  json_t *r;
  json_array_foreach(some, i, r) {
    const char *t = in_data ? rec_data_str(r, "tag")
                            : json_string_value(json_object_get(r, "tag"));
    if (t && strcmp(t, tag) == 0)
      json_array_append(out, r);
  }
  json_decref(some);
  return out;
}

/* recs (of worker pid) ran on its loop thread, seq 1..n in order. */
static void assert_on_loop_in_order(const json_t *recs, int n, pid_t pid,
                                    int in_data, const char *what) {
  ck_assert_msg((int)json_array_size(recs) == n, "%s: %zu records, want %d",
                what, json_array_size(recs), n);
  size_t i;
  json_t *r;
  json_array_foreach(recs, i, r) {
    ck_assert_msg(json_is_true(json_object_get(r, "on_loop")),
                  "%s: record %zu not on the loop thread", what, i + 1);
    ck_assert_int_eq(rec_int(r, "tid"), pid);
    ck_assert_int_eq(rec_int(r, "pid"), pid);
    long long seq = in_data ? rec_data_int(r, "seq") : rec_int(r, "seq");
    ck_assert_msg(seq == (long long)i + 1, "%s: record %zu has seq %lld", what,
                  i + 1, seq);
  }
}

/* Threads of a module's own call aio_call_soon() and aio_emit() /
 * aio_emit_new(): every call runs, and every listener, on the worker's
 * loop thread (not the caller's), each thread's in the order it made
 * them. */
START_TEST(test_bus_threads_call_soon_and_emit_run_on_the_loop) {
  pid_t pid;
  int fd = start_one(&pid);
  char reply[64], tag[16];
  enum { THREADS = 3, N = 400 };
  snprintf(reply, sizeof(reply), "threads t %d %d", THREADS, N);
  ask(fd, reply, reply, sizeof(reply));
  ck_assert_str_eq(reply, "started 3\n");
  json_t *done = rec_wait(out_path, "fn", "thread-done", THREADS, 20000);
  json_t *sigs = rec_wait(out_path, "sig", "bus-thread", THREADS * N, 20000);
  if (done == NULL || sigs == NULL)
    h_dump_log(&P);
  ck_assert_ptr_nonnull(done);
  ck_assert_ptr_nonnull(sigs);
  size_t i;
  json_t *r;
  json_array_foreach(done, i, r) {
    ck_assert_int_eq(rec_int(r, "soon"), N);
    ck_assert_int_eq(rec_int(r, "emit"), N);
    ck_assert(json_is_true(json_object_get(r, "on_loop")));
  }
  json_t *all = rec_load(out_path);
  for (int t = 0; t < THREADS; t++) {
    snprintf(tag, sizeof(tag), "t%d", t);
    json_t *soon = with_tag(all, "fn", "soon", tag, 0);
    json_t *emits = with_tag(all, "sig", "bus-thread", tag, 1);
    assert_on_loop_in_order(soon, N, pid, 0, "aio_call_soon");
    assert_on_loop_in_order(emits, N, pid, 1, "aio_emit from a thread");
    /* The emitter was another thread indeed. */
    ck_assert_int_ne(rec_data_int(json_array_get(emits, 0), "tid"), pid);
    json_decref(soon);
    json_decref(emits);
  }
  json_decref(all);
  json_decref(sigs);
  json_decref(done);
  close(fd);
  stop();
}
END_TEST

/* The worker's private memory, from `aio status`. */
static long long worker_private(void) {
  json_t *st = ops_status(&P);
  long long v =
      ops_int(json_array_get(json_object_get(st, "procs"), 0), "private");
  json_decref(st);
  return v;
}

/* aio_call_soon()'s queue is bounded: with the loop held, a thread's
 * 65536 first calls are taken and the rest refused with -EAGAIN, counted
 * in `aio status`; the taken ones all run once the loop is free, and the
 * queue's 1 MiB is given back after. */
START_TEST(test_bus_call_soon_queue_is_bounded_and_counted) {
  pid_t pid;
  int fd = start_one(&pid);
  char reply[128];
  long long before = worker_private();
  ask(fd, "soonflood 70000", reply, sizeof(reply));
  ck_assert_str_eq(reply, "soonflood ok 65536 again 4464 other 0\n");
  long long deadline = h_now_ms() + 10000;
  do {
    ask(fd, "sooncount", reply, sizeof(reply));
  } while (strcmp(reply, "sooncount 65536\n") && h_now_ms() < deadline &&
           usleep(10000) == 0);
  ck_assert_str_eq(reply, "sooncount 65536\n");
  json_t *st = ops_status(&P);
  json_t *bus =
      json_object_get(json_array_get(json_object_get(st, "procs"), 0), "bus");
  ck_assert_int_eq(ops_int(bus, "soon_refused"), 4464);
  json_decref(st);
  long long after = worker_private();
  ck_assert_msg(!H_RSS_CHECKED || (before > 0 && after - before < 512 * 1024),
                "the worker kept %lld KiB after the burst",
                (after - before) / 1024);
  close(fd);
  stop();
}
END_TEST

/* Records of sig with data.tag == tag and "phase" phase. Returns new. */
static json_t *phased(const json_t *all, const char *tag, const char *phase) {
  json_t *some = tagged(all, "bus-async", tag), *out = json_array();
  size_t i;
  json_t *r;
  json_array_foreach(some, i, r) {
    const char *ph = json_string_value(json_object_get(r, "phase"));
    if (ph && strcmp(ph, phase) == 0)
      json_array_append(out, r);
  }
  json_decref(some);
  return out;
}

/* Start 1 worker whose async listeners take later_ms, with aio_keys
 * ("key = value\n"...) added to [aio]; returns a connection to it, its pid
 * in *pid. */
static int start_async_with(int later_ms, const char *aio_keys, pid_t *pid) {
  char dir[128], conf[4096], with[4200], keys[4400];
  h_tmpdir(dir, sizeof(dir));
  snprintf(out_path, sizeof(out_path), "%s/records.ndjson", dir);
  port = h_free_port();
  conf_text(conf, sizeof(conf), 1, "");
  /* later_ms for record_async, first in [busmod]. */
  char *at = strstr(conf, "[busmod]\n");
  ck_assert_ptr_nonnull(at);
  snprintf(with, sizeof(with), "%.*s[busmod]\nlater_ms = %d\n%s",
           (int)(at - conf), conf, later_ms, at + 9);
  /* [aio] is first: its keys go right after its header. */
  snprintf(keys, sizeof(keys), "[aio]\n%s%s", aio_keys, with + 6);
  h_start_ready(&P, keys, NULL);
  int fd = h_connect(port, 5000);
  ck_assert_int_ge(fd, 0);
  *pid = ask_pid(fd);
  return fd;
}

static int start_async(int later_ms, pid_t *pid) {
  return start_async_with(later_ms, "", pid);
}

/* The loop answers (a pid) in well under an async listener's later_ms
 * while it is pending; then the fence signal's record, which comes after
 * everything before it (new). */
static json_t *served_then_fence(int fd, pid_t pid, const char *fence_sig) {
  long long t0 = h_now_ms();
  ck_assert_int_eq(ask_pid(fd), pid);
  ck_assert_msg(h_now_ms() - t0 < 250, "the loop was held %lld ms",
                h_now_ms() - t0);
  json_t *fence = rec_wait(out_path, "sig", fence_sig, 1, 10000);
  if (fence == NULL)
    h_dump_log(&P);
  ck_assert_ptr_nonnull(fence);
  return fence;
}

/* An async listener (AIO_LISTENER_ASYNC, busmod.record_async: 300 ms,
 * from a thread or a uv_timer) holds its signal in hand until its
 * aio_signal_done(): the next listener of the signal, and the signals
 * emitted after it, run only then, in order, while the loop goes on
 * answering. */
START_TEST(test_bus_async_listener_holds_later_signals_until_done) {
  char reply[128];
  pid_t pid;
  int fd = start_async(300, &pid);
  ask(fd, "emit bus-async a 3; emit bus-fence f 1", reply, sizeof(reply));
  ck_assert_str_eq(reply, "emitted 3\nemitted 1\n");
  /* The loop serves while the first is pending. */
  json_t *fence = served_then_fence(fd, pid, "bus-fence");
  json_t *all = rec_load(out_path);
  json_t *begins = phased(all, "a", "begin"), *dones = phased(all, "a", "done");
  json_t *plain = tagged(all, "bus-async", "a");
  assert_seq_once_in_order(begins, 3, "async begin");
  assert_seq_once_in_order(dones, 3, "async done");
  /* In file order: begin k, done k, the plain listener of k, begin k+1 ...,
   * then the fence. */
  long long last = 0;
  for (int k = 0; k < 3; k++) {
    const json_t *b = json_array_get(begins, (size_t)k),
                 *d = json_array_get(dones, (size_t)k);
    ck_assert_int_ge(rec_int(b, "t"), last);
    ck_assert_int_ge(rec_int(d, "t") - rec_int(b, "t"), 290 * 1000000LL);
    last = rec_int(d, "t");
  }
  ck_assert_int_ge(rec_int(json_array_get(fence, 0), "t"), last);
  /* The plain second listener of each ran after its async one was done. */
  size_t i;
  json_t *r;
  int plain_n = 0;
  json_array_foreach(plain, i, r) {
    if (json_object_get(r, "phase"))
      continue;
    long long seq = rec_data_int(r, "seq");
    ck_assert_int_ge(rec_int(r, "t"),
                     rec_int(json_array_get(dones, (size_t)seq - 1), "t"));
    plain_n++;
  }
  ck_assert_int_eq(plain_n, 3);
  json_decref(plain);
  json_decref(dones);
  json_decref(begins);
  json_decref(all);
  json_decref(fence);
  close(fd);
  stop();
}
END_TEST

/* An async broadcast listener in the middle of a run of the worker's own
 * broadcasts (one deliver frame for all four) holds the rest of the run,
 * and the frames after it, until its done; the loop serves meanwhile. */
START_TEST(test_bus_async_listener_holds_the_rest_of_a_run) {
  char reply[128];
  pid_t pid;
  int fd = start_async(300, &pid);
  long long d0, f0, d1, f1;
  deliver_counts(&d0, &f0);
  ask(fd, "emit bus-basync r 4; emit bus-bfence f 1", reply, sizeof(reply));
  ck_assert_str_eq(reply, "emitted 4\nemitted 1\n");
  json_t *fence = served_then_fence(fd, pid, "bus-bfence");
  json_t *all = rec_load(out_path), *recs = tagged(all, "bus-basync", "r");
  /* In file order: begin k, done k, the plain listener of k, begin k+1. */
  ck_assert_uint_eq(json_array_size(recs), 12);
  static const char *const phases[] = {"begin", "done", NULL};
  for (size_t i = 0; i < 12; i++) {
    const json_t *r = json_array_get(recs, i);
    const char *ph = json_string_value(json_object_get(r, "phase"));
    const char *want = phases[i % 3];
    ck_assert_msg(want ? ph && strcmp(ph, want) == 0 : ph == NULL,
                  "record %zu: phase %s", i, ph ? ph : "none");
    ck_assert_int_eq(rec_data_int(r, "seq"), (long long)i / 3 + 1);
    if (i % 3 == 0 && i > 0)
      ck_assert_int_ge(rec_int(r, "t"),
                       rec_int(json_array_get(recs, i - 2), "t"));
  }
  ck_assert_int_ge(rec_int(json_array_get(fence, 0), "t"),
                   rec_int(json_array_get(recs, 10), "t"));
  json_decref(recs);
  json_decref(all);
  json_decref(fence);
  deliver_counts(&d1, &f1);
  ck_assert_int_eq(d1 - d0, 5);
  ck_assert_int_eq(f1 - f0, 2); /* the run of four, then the fence */
  close(fd);
  stop();
}
END_TEST

/* A frame from the master (here a broadcast's deliver) that arrives
 * while an own emit's async listener is pending waits for its done: the
 * signal in hand is one at a time, so the deliver's listeners run after,
 * and the pending one's name and data are intact at its done. (The read
 * went on once, and a broadcast ran over the signal in hand.) */
START_TEST(test_bus_async_listener_holds_the_masters_frames_too) {
  char reply[128];
  pid_t pid;
  int fd = start_async(600, &pid);
  ask(fd, "emit bus-async h 1", reply, sizeof(reply));
  ck_assert_str_eq(reply, "emitted 1\n");
  json_t *begun = rec_wait(out_path, "sig", "bus-async", 1, 5000);
  ck_assert_ptr_nonnull(begun);
  ask(fd, "emit bus-bcast b 1", reply, sizeof(reply));
  ck_assert_str_eq(reply, "emitted 1\n");
  json_t *bcast = rec_wait(out_path, "sig", "bus-bcast", 1, 10000);
  if (bcast == NULL)
    h_dump_log(&P);
  ck_assert_ptr_nonnull(bcast);
  json_t *all = rec_load(out_path);
  json_t *dones = phased(all, "h", "done");
  assert_seq_once_in_order(dones, 1, "async done");
  const json_t *d = json_array_get(dones, 0);
  ck_assert_str_eq(json_string_value(json_object_get(d, "sig")), "bus-async");
  ck_assert_int_ge(rec_int(json_array_get(bcast, 0), "t"), rec_int(d, "t"));
  json_decref(dones);
  json_decref(all);
  json_decref(bcast);
  json_decref(begun);
  close(fd);
  stop();
}
END_TEST

/* A signal whose async listener is pending when its worker dies was in
 * hand: it is not redelivered (it may be what killed it), while the
 * signal emitted behind it is, on the next worker, once. */
START_TEST(test_bus_async_listener_pending_at_a_crash_is_in_hand) {
  char reply[128];
  pid_t victim;
  int fd = start_async(3000, &victim);
  ask(fd, "emit bus-async x 1; emit bus-once behind 1", reply, sizeof(reply));
  json_t *begun = rec_wait(out_path, "sig", "bus-async", 1, 5000);
  ck_assert_ptr_nonnull(begun);
  ck_assert_int_eq(h_send(fd, "die\n", 4), 0);
  json_t *behind = rec_wait(out_path, "sig", "bus-once", 1, 10000);
  if (behind == NULL)
    h_dump_log(&P);
  ck_assert_ptr_nonnull(behind);
  ck_assert_int_ne(rec_int(json_array_get(behind, 0), "pid"), victim);
  ck_assert(h_log_has(&P, "not redelivered"));
  json_t *all = rec_load(out_path);
  json_t *async = tagged(all, "bus-async", "x");
  /* One call, on the victim: not redelivered, and never done. */
  ck_assert_int_eq(json_array_size(async), 1);
  ck_assert_int_eq(rec_int(json_array_get(async, 0), "pid"), victim);
  json_decref(async);
  json_decref(all);
  json_decref(behind);
  json_decref(begun);
  close(fd);
  stop();
}
END_TEST

/* A worker told to stop finishes the signals it emitted and runs itself
 * before it exits, even with no connection left to wait for: here a
 * chain of listeners, each link emitted by the one before, which spans
 * many turns of the loop, with the stop arriving in the middle. */
/* Start 1 worker and a chain of listeners ("chain TAG N MS", see
 * busmod.c); returns the connection that asked for it. */
static int start_chain(const char *cmd) {
  pid_t pid;
  int fd = start_one(&pid);
  char reply[64];
  ask(fd, cmd, reply, sizeof(reply));
  ck_assert_str_eq(reply, "emitted 1\n");
  return fd;
}

START_TEST(test_bus_drain_runs_own_emits_first) {
  close(start_chain("chain c 15 30"));
  json_t *first = rec_wait(out_path, "sig", "bus-chain", 1, 5000);
  ck_assert_ptr_nonnull(first);
  json_decref(first);
  stop(); /* TERM: drain, then exit 0 */
  json_t *all = rec_load(out_path);
  json_t *links = tagged(all, "bus-chain", "c");
  assert_seq_once_in_order(links, 15, "links of the chain");
  /* aio-stopping reached the worker mid-chain: the drain began there. */
  json_t *stopping = rec_where(all, "sig", "aio-stopping");
  ck_assert_int_eq(json_array_size(stopping), 1);
  ck_assert_int_lt(rec_int(json_array_get(stopping, 0), "t"),
                   rec_int(json_array_get(links, 14), "t"));
  json_decref(stopping);
  json_decref(links);
  json_decref(all);
}
END_TEST

/* `aio status --json` shows what the bus holds for each worker: here the
 * links of a chain of listeners waiting in the worker's ring while it
 * runs them, then nothing once they have run. */
START_TEST(test_bus_status_shows_signals_waiting) {
  int fd = start_chain("chain w 40 50");
  long long seen = 0, deadline = h_now_ms() + 1500;
  while (seen <= 0 && h_now_ms() < deadline) {
    json_t *st = ops_status(&P);
    ck_assert_int_ge(ops_int(st, "backlog"), 0);
    json_t *bus =
        json_object_get(json_array_get(json_object_get(st, "procs"), 0), "bus");
    ck_assert_int_ge(ops_int(bus, "pending"), 0);
    ck_assert_int_ge(ops_int(bus, "journal"), 0);
    seen = ops_int(bus, "ring_bytes");
    json_decref(st);
  }
  ck_assert_msg(seen > 0, "the chain never showed in the ring");
  json_t *links = rec_wait(out_path, "sig", "bus-chain", 40, 10000);
  ck_assert_ptr_nonnull(links);
  json_decref(links);
  deadline = h_now_ms() + 2000;
  while (seen != 0 && h_now_ms() < deadline) {
    json_t *st = ops_status(&P);
    seen = ops_int(
        json_object_get(json_array_get(json_object_get(st, "procs"), 0), "bus"),
        "ring_bytes");
    json_decref(st);
    if (seen != 0)
      usleep(20000);
  }
  ck_assert_int_eq(seen, 0);
  close(fd);
  stop();
}
END_TEST

/* Deliveries the master holds for a worker are bounded (bus_queue): a
 * worker held busy while another floods it with broadcast signals draws
 * a warning at the bound, the emits past it are refused at aio_emit()
 * and counted in `aio status`, every emit taken reaches both workers
 * once, in order, and a "caught up" line ends it. */
START_TEST(test_bus_refuses_broadcasts_while_a_worker_falls_behind) {
  start(2);
  int fds[2];
  pid_t pids[2];
  conn_per_worker(2, fds, pids);
  char said[32];
  ck_assert_int_eq(h_send(fds[1], "busy 3000\n", 10), 0);
  ck_assert_int_eq(read_lines(fds[1], said, sizeof(said), 1, 5000), 1);
  ck_assert_str_eq(said, "busy\n");
  char reply[64];
  ask(fds[0], "emit bus-bcast flood 15000", reply, sizeof(reply));
  int taken = 0;
  ck_assert_int_eq(sscanf(reply, "emitted %d", &taken), 1);
  ck_assert_msg(taken > 0 && taken < 15000, "%d of 15000 taken", taken);
  if (h_wait_log(&P, "signals for broadcast listeners are refused", 5000)) {
    h_dump_log(&P);
    ck_abort_msg("no warning while worker %d was busy", (int)pids[1]);
  }
  /* The fence waits until the busy worker caught up: refused meanwhile. */
  long long deadline = h_now_ms() + 15000;
  do
    ask(fds[0], "emit bus-bfence fl 1", reply, sizeof(reply));
  while (strcmp(reply, "emitted 1\n") != 0 && h_now_ms() < deadline &&
         usleep(100 * 1000) == 0);
  ck_assert_str_eq(reply, "emitted 1\n");
  json_t *fences = rec_wait(out_path, "sig", "bus-bfence", 2, 30000);
  ck_assert_ptr_nonnull(fences);
  json_decref(fences);
  json_t *all = rec_load(out_path),
         *flooded = tagged(all, "bus-bcast", "flood");
  for (int k = 0; k < 2; k++) {
    json_t *mine = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(flooded, i, r) if (rec_int(r, "pid") == pids[k])
        json_array_append(mine, r);
    ck_assert_int_eq((int)json_array_size(mine), taken);
    for (i = 1; i < json_array_size(mine); i++)
      ck_assert_int_lt(rec_data_int(json_array_get(mine, i - 1), "seq"),
                       rec_data_int(json_array_get(mine, i), "seq"));
    json_decref(mine);
  }
  json_decref(flooded);
  json_decref(all);
  ck_assert_int_eq(h_wait_log(&P, "caught up", 5000), 0);
  /* Refusals are counted where the emitter is shown. */
  json_t *st = ops_status(&P);
  long long refused = 0;
  size_t i;
  json_t *w;
  json_array_foreach(json_object_get(st, "procs"), i,
                     w) if (ops_int(w, "pid") == pids[0]) refused =
      ops_int(json_object_get(w, "bus"), "refused");
  json_decref(st);
  ck_assert_int_ge(refused, 15000 - taken);
  close(fds[0]);
  close(fds[1]);
  stop();
}
END_TEST

/* A worker that writes junk on its bus is killed and replaced; the master
 * and the other worker carry on, and the bus still delivers exactly once. */
START_TEST(test_bus_bad_frame_costs_only_that_worker) {
  static const struct {
    const char *kind, *why;
  } junk[] = {
      {"garbage", "(Bad message); killing it"},
      {"notobject", "(Bad message); killing it"},
      {"unknown", "(Protocol error); killing it"},
      {"wrongway", "(Protocol error); killing it"},
      {"oversize", "(Message too long); killing it"},
      {"badseq", "(Bad message); killing it"},
      {"badack", "(Bad message); killing it"},
      {"emptyack", "(Bad message); killing it"},
  };
  start(2);
  for (size_t j = 0; j < sizeof(junk) / sizeof(junk[0]); j++) {
    int fd = h_connect(port, 5000);
    ck_assert_int_ge(fd, 0);
    pid_t victim = ask_pid(fd), kids[8];
    int nk = h_children(P.pid, kids, 8);
    ck_assert_int_eq(nk, 2);
    pid_t other = kids[0] == victim ? kids[1] : kids[0];
    int bad_before = h_log_count(&P, "sent a bad bus frame");
    int why_before = h_log_count(&P, junk[j].why);
    char line[64];
    snprintf(line, sizeof(line), "junk %s\n", junk[j].kind);
    ck_assert_int_eq(h_send(fd, line, strlen(line)), 0);
    long long deadline = h_now_ms() + 5000;
    while (h_pid_alive(victim) && h_now_ms() < deadline)
      usleep(5000);
    ck_assert_msg(!h_pid_alive(victim), "%s: worker not killed", junk[j].kind);
    close(fd);
    ck_assert(h_pid_alive(P.pid));
    ck_assert(h_pid_alive(other));
    ck_assert_int_eq(h_log_count(&P, "sent a bad bus frame"), bad_before + 1);
    ck_assert_int_eq(h_log_count(&P, junk[j].why), why_before + 1);
    /* Replaced, and the replacement serves. */
    deadline = h_now_ms() + 10000;
    while (h_log_count(&P, " ready in ") < 3 + (int)j && h_now_ms() < deadline)
      usleep(10000);
    ck_assert_int_eq(h_log_count(&P, " ready in "), 3 + (int)j);
  }
  check_once_per_emit(2, 300);
  stop();
}
END_TEST

START_TEST(test_bus_listener_spelling_checked) {
  char dir[128], out[4096];
  h_tmpdir(dir, sizeof(dir));
  const char *head = "[aio]\nmodules = busmod\nmodule_path = %s\n"
                     "[listen:x]\n%s\n";
  char conf[1024];
  /* One listener per line; continuation lines add more. */
  snprintf(conf, sizeof(conf), head, AIO_TEST_MODULES,
           "sig-a = busmod.record\n"
           "sig-b = busmod.record broadcast\n"
           "        busmod.crash");
  h_write(dir, "good.conf", conf);
  const char *good[] = {"-c", "good.conf", "check", NULL};
  int rc = h_aio(dir, out, sizeof(out), good);
  ck_assert_msg(rc == 0, "check failed (%d): %s", rc, out);

  snprintf(conf, sizeof(conf), head, AIO_TEST_MODULES,
           "sig-a = busmod.record everywhere");
  h_write(dir, "bad.conf", conf);
  const char *bad[] = {"-c", "bad.conf", "check", NULL};
  rc = h_aio(dir, out, sizeof(out), bad);
  ck_assert_int_eq(rc, 78);
  ck_assert_msg(strstr(out, "bad.conf:5:") &&
                    strstr(out, "'module.function broadcast'"),
                "%s", out);

  /* A scheduler is not a listener. */
  snprintf(conf, sizeof(conf), head, AIO_TEST_MODULES, "sig-a = busmod.tick");
  h_write(dir, "kind.conf", conf);
  const char *kind[] = {"-c", "kind.conf", "check", NULL};
  rc = h_aio(dir, out, sizeof(out), kind);
  ck_assert_int_eq(rc, 78);
  ck_assert_msg(strstr(out, "busmod.tick") != NULL, "%s", out);
}
END_TEST

/* The wait-done record (busmod.wait_done) of tag, waiting for it. */
static json_t *wait_done_of(const char *tag, int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  for (;;) {
    json_t *all = rec_load(out_path), *done = rec_where(all, "fn", "wait-done");
    json_decref(all);
    size_t i;
    json_t *r;
    json_array_foreach(done, i, r) {
      const char *t = json_string_value(json_object_get(r, "tag"));
      if (t && strcmp(t, tag) == 0) {
        json_incref(r);
        json_decref(done);
        return r;
      }
    }
    json_decref(done);
    if (h_now_ms() >= deadline)
      return NULL;
    usleep(10000);
  }
}

/* How many wait-done records there are. */
static size_t waits_done(void) {
  json_t *all = rec_load(out_path), *done = rec_where(all, "fn", "wait-done");
  size_t n = json_array_size(done);
  json_decref(done);
  json_decref(all);
  return n;
}

static void assert_listener(const json_t *done, size_t i, const char *name,
                            int status) {
  const json_t *l = json_array_get(json_object_get(done, "listeners"), i);
  ck_assert_ptr_nonnull(l);
  ck_assert_str_eq(json_string_value(json_object_get(l, "listener")), name);
  ck_assert_int_eq(rec_int(l, "status"), status);
}

/* aio_emit_wait: done_cb runs once every once-per-emit listener finished
 * (the async one up to its aio_signal_done, 300 ms later, and the plain
 * one after it), on the loop, never inside the call, with each one's
 * status; a signal with no listener, or only broadcast ones, is done with
 * none, on a later turn; the broadcast still reaches its listener. */
START_TEST(test_bus_emit_wait_reports_every_listener_once_all_finished) {
  char reply[256];
  pid_t pid;
  int fd = start_async(300, &pid);
  ask(fd, "wait bus-wait a 1 7; wait bus-none n 1 0; wait bus-wbcast b 1 0",
      reply, sizeof(reply));
  ck_assert_str_eq(reply, "wait ok 1 again 0 other 0\n"
                          "wait ok 1 again 0 other 0\n"
                          "wait ok 1 again 0 other 0\n");
  json_t *a = wait_done_of("a", 10000);
  if (a == NULL)
    h_dump_log(&P);
  ck_assert_ptr_nonnull(a);
  json_t *n = wait_done_of("n", 1000), *b = wait_done_of("b", 1000);
  ck_assert_ptr_nonnull(n);
  ck_assert_ptr_nonnull(b);
  ck_assert_int_eq(rec_int(a, "status"), 7);
  ck_assert_int_eq(rec_int(a, "n"), 2);
  assert_listener(a, 0, "busmod.status_async", 7);
  assert_listener(a, 1, "busmod.record", 0);
  json_t *all = rec_load(out_path);
  json_t *wait_sigs = tagged(all, "bus-wait", "a");
  /* begin, done (status_async), then record's: done_cb after all three. */
  ck_assert_int_eq(json_array_size(wait_sigs), 3);
  for (size_t i = 0; i < 3; i++)
    ck_assert_int_ge(rec_int(a, "t"),
                     rec_int(json_array_get(wait_sigs, i), "t"));
  ck_assert_int_ge(rec_int(json_array_get(wait_sigs, 1), "t") -
                       rec_int(json_array_get(wait_sigs, 0), "t"),
                   290 * 1000000LL);
  json_decref(wait_sigs);
  json_decref(all);
  const json_t *all3[] = {a, n, b};
  for (size_t i = 0; i < 3; i++) {
    ck_assert(json_is_false(json_object_get(all3[i], "in_call")));
    ck_assert(json_is_true(json_object_get(all3[i], "on_loop")));
    ck_assert_int_eq(rec_int(all3[i], "pid"), pid);
  }
  ck_assert_int_eq(rec_int(n, "n"), 0);
  ck_assert_int_eq(rec_int(n, "status"), 0);
  ck_assert_int_eq(rec_int(b, "n"), 0);
  json_t *bcast = rec_wait(out_path, "sig", "bus-wbcast", 1, 10000);
  ck_assert_ptr_nonnull(bcast);
  json_decref(bcast);
  /* Exactly once each. */
  ck_assert_uint_eq(waits_done(), 3);
  json_decref(a);
  json_decref(n);
  json_decref(b);
  close(fd);
  stop();
}
END_TEST

/* From a thread of the module's own: handed to the loop, done_cb there. */
START_TEST(test_bus_emit_wait_from_a_thread_completes_on_the_loop) {
  char reply[128];
  pid_t pid;
  int fd = start_async(100, &pid);
  ask(fd, "waitthread bus-wait t 0", reply, sizeof(reply));
  ck_assert_str_eq(reply, "waitthread 0\n");
  json_t *t = wait_done_of("t", 10000);
  if (t == NULL)
    h_dump_log(&P);
  ck_assert_ptr_nonnull(t);
  ck_assert(json_is_true(json_object_get(t, "on_loop")));
  ck_assert_int_eq(rec_int(t, "status"), 0);
  ck_assert_int_eq(rec_int(t, "n"), 2);
  assert_listener(t, 0, "busmod.status_async", 0);
  json_decref(t);
  close(fd);
  stop();
}
END_TEST

/* Waits pending are bounded by bus_journal: past it aio_emit_wait says
 * -EAGAIN, and `aio status` counts it; those taken all finish, and then
 * there is room again. */
START_TEST(test_bus_emit_wait_is_bounded_and_counted) {
  char reply[128];
  pid_t pid;
  int fd = start_async_with(100, "bus_journal = 8\n", &pid);
  ask(fd, "wait bus-none f 20 0", reply, sizeof(reply));
  ck_assert_str_eq(reply, "wait ok 8 again 12 other 0\n");
  long long deadline = h_now_ms() + 10000;
  while (waits_done() < 8 && h_now_ms() < deadline)
    usleep(10000);
  ck_assert_uint_eq(waits_done(), 8);
  json_t *st = ops_status(&P);
  json_t *bus =
      json_object_get(json_array_get(json_object_get(st, "procs"), 0), "bus");
  ck_assert_int_eq(ops_int(bus, "wait_refused"), 12);
  ck_assert_int_eq(ops_int(bus, "refused"), 0);
  json_decref(st);
  ask(fd, "wait bus-none g 8 0", reply, sizeof(reply));
  ck_assert_str_eq(reply, "wait ok 8 again 0 other 0\n");
  deadline = h_now_ms() + 10000;
  while (waits_done() < 16 && h_now_ms() < deadline)
    usleep(10000);
  ck_assert_uint_eq(waits_done(), 16);
  close(fd);
  stop();
}
END_TEST

/* One aio_emit_wait of bus-wait tagged tag, its async listener begun and
 * pending for later_ms; returns the connection, the worker in *pid. */
static int start_pending_wait(int later_ms, const char *tag, pid_t *pid) {
  char cmd[64], reply[128];
  int fd = start_async(later_ms, pid);
  snprintf(cmd, sizeof(cmd), "wait bus-wait %s 1 0", tag);
  ask(fd, cmd, reply, sizeof(reply));
  ck_assert_str_eq(reply, "wait ok 1 again 0 other 0\n");
  json_t *begun = rec_wait(out_path, "sig", "bus-wait", 1, 5000);
  ck_assert_ptr_nonnull(begun);
  json_decref(begun);
  ck_assert_uint_eq(waits_done(), 0);
  return fd;
}

/* A drain (`aio stop`) waits for a pending wait: its async listener
 * finishes and done_cb runs with 0 before the worker exits. */
START_TEST(test_bus_drain_finishes_emit_waits) {
  pid_t pid;
  int fd = start_pending_wait(500, "d", &pid);
  close(fd);
  stop();
  json_t *d = wait_done_of("d", 0);
  ck_assert_ptr_nonnull(d);
  ck_assert_int_eq(rec_int(d, "status"), 0);
  assert_listener(d, 0, "busmod.status_async", 0);
  assert_listener(d, 1, "busmod.record", 0);
  json_decref(d);
}
END_TEST

/* A worker told to stop at once (QUIT) calls the done_cb of a wait still
 * pending as it stops, with -ECANCELED for what did not finish. */
START_TEST(test_bus_quit_cancels_pending_emit_waits) {
  pid_t pid;
  int fd = start_pending_wait(10000, "q", &pid);
  ck_assert_int_eq(kill(pid, SIGQUIT), 0);
  json_t *q = wait_done_of("q", 10000);
  if (q == NULL)
    h_dump_log(&P);
  ck_assert_ptr_nonnull(q);
  ck_assert_int_eq(rec_int(q, "status"), -ECANCELED);
  ck_assert_int_eq(rec_int(q, "pid"), pid);
  assert_listener(q, 0, "busmod.status_async", -ECANCELED);
  assert_listener(q, 1, "busmod.record", -ECANCELED);
  json_decref(q);
  close(fd);
  stop();
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_bus");
  TCase *tc = tcase_create("bus");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_bus_once_per_emit_exactly_once_on_emitter_in_order);
  tcase_add_test(tc, test_bus_broadcast_reaches_every_worker_once_in_order);
  tcase_add_test(
      tc, test_bus_kept_broadcasts_of_a_dead_emitter_reach_its_successor);
  tcase_add_test(tc, test_bus_lifecycle_signals_arrive);
  tcase_add_test(tc, test_bus_crashing_listener_loses_no_other_delivery);
  tcase_add_test(tc, test_bus_emits_survive_a_later_callback_crash);
  tcase_add_test(tc, test_bus_crash_with_ring_full_loses_nothing);
  tcase_add_test(
      tc, test_bus_run_of_own_broadcasts_cut_by_a_crash_goes_on_in_the_heir);
  tcase_add_test(tc, test_bus_reload_delivers_by_the_receivers_listener_list);
  tcase_add_test(tc, test_bus_emit_copies_and_emit_new_takes_over);
  tcase_add_test(tc, test_bus_drain_runs_own_emits_first);
  tcase_add_test(tc, test_bus_status_shows_signals_waiting);
  tcase_add_test(tc, test_bus_refuses_broadcasts_while_a_worker_falls_behind);
  tcase_add_test(tc, test_bus_bad_frame_costs_only_that_worker);
  tcase_add_test(tc, test_bus_listener_spelling_checked);
  tcase_add_test(tc, test_bus_threads_call_soon_and_emit_run_on_the_loop);
  tcase_add_test(tc, test_bus_call_soon_queue_is_bounded_and_counted);
  tcase_add_test(tc, test_bus_async_listener_holds_later_signals_until_done);
  tcase_add_test(tc, test_bus_async_listener_holds_the_masters_frames_too);
  tcase_add_test(tc, test_bus_async_listener_holds_the_rest_of_a_run);
  tcase_add_test(tc, test_bus_async_listener_pending_at_a_crash_is_in_hand);
  tcase_add_test(tc,
                 test_bus_emit_wait_reports_every_listener_once_all_finished);
  tcase_add_test(tc, test_bus_emit_wait_from_a_thread_completes_on_the_loop);
  tcase_add_test(tc, test_bus_emit_wait_is_bounded_and_counted);
  tcase_add_test(tc, test_bus_drain_finishes_emit_waits);
  tcase_add_test(tc, test_bus_quit_cancels_pending_emit_waits);
  suite_add_tcase(s, tc);
  return s;
}

/* pu_run_suite also turns core dumps off: workers crash here on purpose. */
int main(void) { return pu_run_suite(suite()); }
