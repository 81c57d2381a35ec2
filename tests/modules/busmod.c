#define _GNU_SOURCE /* struct ucred */
/*
 * busmod.c - fixtures for the signal bus and schedule tests. Listeners and
 * schedulers append one JSON record per call to the file named by
 * `[busmod] out`, with the worker's pid and CLOCK_MONOTONIC times in ns;
 * each record is one write() on an O_APPEND descriptor, so records of
 * concurrent workers never interleave. The `emitter` protocol emits signals
 * on command, and can write junk on its own worker's bus to show what the
 * master does with a worker that says nonsense.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <aio.h>
#include <uv.h>

static long long mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int out_fd = -1; /* per worker: the module is loaded after fork */

/* Append rec (stolen) with our pid as one line. */
static void put_record(json_t *rec) {
  if (out_fd < 0) {
    const char *path = aio_config_get("busmod", "out");
    if (path)
      out_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  }
  json_object_set_new(rec, "pid", json_integer(getpid()));
  char *s = json_dumps(rec, JSON_COMPACT);
  json_decref(rec);
  if (s == NULL || out_fd < 0) {
    free(s);
    return;
  }
  size_t n = strlen(s);
  char *line = realloc(s, n + 2);
  if (line == NULL) {
    free(s);
    return;
  }
  line[n] = '\n';
  ssize_t w = write(out_fd, line, n + 1);
  (void)w;
  free(line);
}

/* The worker's loop thread: the one that runs init. */
static pthread_t loop_thread;

/* Whether the caller runs on the loop thread, as two witnesses: the
 * pthread the module's init ran on, and the kernel's thread id, which is
 * the pid on a process's main thread (the worker's loop runs there). */
static json_t *thread_witness(json_t *rec) {
  json_object_set_new(rec, "on_loop",
                      json_boolean(pthread_equal(pthread_self(), loop_thread)));
  json_object_set_new(rec, "tid",
                      json_integer((json_int_t)syscall(SYS_gettid)));
  return rec;
}

/* ---- listeners ---------------------------------------------------------- */

static void record(const aio_signal_t *sig) {
  put_record(json_pack("{s:s,s:O,s:I}", "sig", sig->name, "data",
                       sig->data ? sig->data : json_null(), "t",
                       (json_int_t)mono_ns()));
}

AIO_LISTENER(record);

/* record, with which thread it ran on. */
static void record_thread(const aio_signal_t *sig) {
  put_record(thread_witness(json_pack("{s:s,s:O,s:I}", "sig", sig->name, "data",
                                      sig->data ? sig->data : json_null(), "t",
                                      (json_int_t)mono_ns())));
}

AIO_LISTENER(record_thread);

/* A chain: records, holds the loop for data.ms, and emits the next link
 * (data.seq + 1) until data.n. Each link runs in a later turn of the
 * loop than the one that emitted it, so a chain spans many turns. */
static void chain(const aio_signal_t *sig) {
  record(sig);
  long long seq = json_integer_value(json_object_get(sig->data, "seq"));
  long long n = json_integer_value(json_object_get(sig->data, "n"));
  long long ms = json_integer_value(json_object_get(sig->data, "ms"));
  long long until = mono_ns() + ms * 1000000LL;
  while (mono_ns() < until)
    ;
  if (seq < n)
    aio_emit_new(sig->name, json_pack("{s:O,s:I,s:I,s:I}", "tag",
                                      json_object_get(sig->data, "tag"), "seq",
                                      (json_int_t)seq + 1, "n", (json_int_t)n,
                                      "ms", (json_int_t)ms));
}
AIO_LISTENER(chain);

/* Records the signal's tag and seq only: for floods of large signals. */
static void tally(const aio_signal_t *sig) {
  put_record(json_pack("{s:s,s:{s:O,s:O}}", "sig", sig->name, "data", "tag",
                       json_object_get(sig->data, "tag"), "seq",
                       json_object_get(sig->data, "seq")));
}
AIO_LISTENER(tally);

static long long conf_ms(const char *key, long long dflt) {
  const char *v = aio_config_get("busmod", key);
  return v ? atoll(v) : dflt;
}

/* ---- an async listener: finishes [busmod] later_ms after its call ------- */

/* Records "phase": "begin" at the call, "done" as it finishes; odd seqs
 * finish from a thread, even ones from a uv_timer on the loop. */
struct async_job {
  const aio_signal_t *sig;
  uv_timer_t timer;
};

static void async_record(const aio_signal_t *sig, const char *phase) {
  put_record(thread_witness(json_pack(
      "{s:s,s:s,s:O,s:I}", "sig", sig->name, "phase", phase, "data",
      sig->data ? sig->data : json_null(), "t", (json_int_t)mono_ns())));
}

static void async_finish(struct async_job *j) {
  async_record(j->sig, "done");
  aio_signal_done(j->sig, 0);
}

static void async_closed(uv_handle_t *h) { free(h->data); }

static void async_fire(uv_timer_t *t) {
  async_finish(t->data);
  uv_close((uv_handle_t *)t, async_closed);
}

static void *async_main(void *arg) {
  long long ms = conf_ms("later_ms", 200);
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
    ;
  async_finish(arg);
  free(arg);
  return NULL;
}

static int record_async(const aio_signal_t *sig) {
  struct async_job *j = calloc(1, sizeof(*j));
  pthread_t tid;
  if (j == NULL)
    return -ENOMEM;
  j->sig = sig;
  async_record(sig, "begin");
  if (json_integer_value(json_object_get(sig->data, "seq")) % 2 == 0) {
    uv_timer_init(aio_loop(), &j->timer);
    j->timer.data = j;
    uv_timer_start(&j->timer, async_fire, (uint64_t)conf_ms("later_ms", 200),
                   0);
  } else if (pthread_create(&tid, NULL, async_main, j) == 0) {
    pthread_detach(tid);
  } else {
    free(j);
    return -EAGAIN;
  }
  return AIO_PENDING;
}

AIO_LISTENER_ASYNC(record_async);

/* An async listener that ends with data.status: at once when data.now,
 * else from a uv_timer later_ms after its call; records "phase". */
struct status_job {
  const aio_signal_t *sig;
  int status;
  uv_timer_t timer;
};

static void status_fire(uv_timer_t *t) {
  struct status_job *j = t->data;
  async_record(j->sig, "done");
  aio_signal_done(j->sig, j->status);
  uv_close((uv_handle_t *)t, async_closed);
}

static int status_async(const aio_signal_t *sig) {
  int status = (int)json_integer_value(json_object_get(sig->data, "status"));
  async_record(sig, "begin");
  if (json_is_true(json_object_get(sig->data, "now")))
    return status;
  struct status_job *j = calloc(1, sizeof(*j));
  if (j == NULL)
    return -ENOMEM;
  j->sig = sig;
  j->status = status;
  uv_timer_init(aio_loop(), &j->timer);
  j->timer.data = j;
  uv_timer_start(&j->timer, status_fire, (uint64_t)conf_ms("later_ms", 200), 0);
  return AIO_PENDING;
}
AIO_LISTENER_ASYNC(status_async);

static void spin_ms(long long ms) {
  long long until = mono_ns() + ms * 1000000LL;
  while (mono_ns() < until)
    ;
}

/* A slow listener: holds the loop for [busmod] slow_listener_ms (50 by
 * default), then tallies. Slow, not hung: its loop turns between calls. */
static void slowpoke(const aio_signal_t *sig) {
  spin_ms(conf_ms("slow_listener_ms", 50));
  tally(sig);
}
AIO_LISTENER(slowpoke);

/* A hung listener: records, then holds the loop for [busmod] stuck_ms
 * (10 s by default), far past any test's timeout. */
static void stuck(const aio_signal_t *sig) {
  record(sig);
  spin_ms(conf_ms("stuck_ms", 10000));
}
AIO_LISTENER(stuck);

/* Records, then kills its worker: the delivery in hand when it died. */
static void crash(const aio_signal_t *sig) {
  record(sig);
  raise(SIGKILL);
}
AIO_LISTENER(crash);

/* Records, then kills its worker when data.seq is [busmod] crash_at: one
 * delivery of a burst, the rest behind it. */
static void crash_at(const aio_signal_t *sig) {
  record(sig);
  if (json_integer_value(json_object_get(sig->data, "seq")) ==
      conf_ms("crash_at", -1))
    raise(SIGKILL);
}
AIO_LISTENER(crash_at);

/* ---- schedulers ------------------------------------------------------- */

static long long wall_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

/* A record of a job's call, with what a cb or err was given: its run, the
 * due time the master gave it (wall clock, us) and how long after that it
 * started (late_us), its monotonic start and end. */
static int job_record(const aio_event_t *ev, const char *fn, long long start,
                      int rc) {
  long long end = mono_ns(), due_us = (long long)(ev->due * 1e6 + 0.5);
  long long start_us = wall_us() - (end - start) / 1000;
  json_t *rec =
      json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:i}", "fn", fn, "job", ev->name,
                "run", (json_int_t)ev->run, "start", (json_int_t)start, "end",
                (json_int_t)end, "due_us", (json_int_t)due_us, "late_us",
                (json_int_t)(start_us - due_us), "rc", rc);
  if (ev->result)
    json_object_set(rec, "result", ev->result);
  if (ev->status)
    json_object_set_new(rec, "status", json_integer(ev->status));
  if (ev->error)
    json_object_set_new(rec, "error", json_string(ev->error));
  put_record(rec);
  return rc;
}

/* ---- async schedulers: finish [busmod] later_ms after they return -------- */

/* The work of a `later` run: odd runs succeed with a result, even runs
 * fail with status 5 and a message. Recorded as it finishes (with the
 * event, valid until aio_event_done). */
static void later_finish(aio_event_t *ev, long long start, const char *via) {
  int fail = ev->run % 2 == 0;
  job_record(ev, "later", start, fail ? 5 : 0);
  json_t *res =
      fail ? json_string("even runs fail")
           : json_pack("{s:I,s:s}", "run", (json_int_t)ev->run, "via", via);
  int rc = aio_event_done(ev, fail ? 5 : 0, res);
  json_decref(res);
  put_record(json_pack("{s:s,s:I,s:i}", "fn", "later-done", "run",
                       (json_int_t)ev->run, "rc", rc));
}

struct later {
  aio_event_t *ev;
  long long start;
  uv_timer_t timer;
};

static void later_closed(uv_handle_t *h) { free(h->data); }

static void later_fire(uv_timer_t *t) {
  struct later *l = t->data;
  later_finish(l->ev, l->start, "timer");
  uv_close((uv_handle_t *)t, later_closed);
}

/* Completes from a uv_timer on the worker's loop. */
static int later(aio_event_t *ev) {
  struct later *l = calloc(1, sizeof(*l));
  if (l == NULL)
    return -ENOMEM;
  l->ev = ev;
  l->start = mono_ns();
  uv_timer_init(aio_loop(), &l->timer);
  l->timer.data = l;
  uv_timer_start(&l->timer, later_fire, (uint64_t)conf_ms("later_ms", 200), 0);
  return AIO_PENDING;
}
AIO_SCHEDULER(later);

static void *later_main(void *arg) {
  struct later *l = arg;
  long long ms = conf_ms("later_ms", 200);
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
    ;
  later_finish(l->ev, l->start, "thread");
  free(l);
  return NULL;
}

/* Completes from a thread of its own. */
static int later_thread(aio_event_t *ev) {
  struct later *l = calloc(1, sizeof(*l));
  pthread_t tid;
  if (l == NULL)
    return -ENOMEM;
  l->ev = ev;
  l->start = mono_ns();
  if (pthread_create(&tid, NULL, later_main, l)) {
    free(l);
    return -EAGAIN;
  }
  pthread_detach(tid);
  return AIO_PENDING;
}
AIO_SCHEDULER(later_thread);

static int tick(aio_event_t *ev) {
  return job_record(ev, "tick", mono_ns(), 0);
}
AIO_SCHEDULER(tick);

/* Odd runs succeed, even runs fail. */
static int flaky(aio_event_t *ev) {
  return job_record(ev, "flaky", mono_ns(), ev->run % 2 == 0);
}
AIO_SCHEDULER(flaky);

/* Records which occurrence ran where (the cluster suite): run, the
 * occurrence's due time in ms since the epoch, and the node. */
static int occ(aio_event_t *ev) {
  put_record(json_pack("{s:s,s:s,s:I,s:I,s:s}", "fn", "occ", "job", ev->name,
                       "run", (json_int_t)ev->run, "due_ms",
                       (json_int_t)(ev->due * 1000 + 0.5), "node",
                       ev->node ? ev->node : ""));
  return 0;
}
AIO_SCHEDULER(occ);

static int on_cb(aio_event_t *ev) { return job_record(ev, "cb", mono_ns(), 0); }
AIO_SCHEDULER(on_cb);

static int on_err(aio_event_t *ev) {
  return job_record(ev, "err", mono_ns(), 0);
}
AIO_SCHEDULER(on_err);

/* Outlives its period: blocks the worker for [busmod] slow_ms. */
static int slow(aio_event_t *ev) {
  long long start = mono_ns();
  const char *ms = aio_config_get("busmod", "slow_ms");
  long long wait_ns = (ms ? atoll(ms) : 500) * 1000000LL;
  while (mono_ns() - start < wait_ns)
    usleep(1000);
  return job_record(ev, "slow", start, 0);
}
AIO_SCHEDULER(slow);

/* The first run kills its worker. */
static int die(aio_event_t *ev) {
  long long start = mono_ns();
  if (ev->run == 1) {
    job_record(ev, "die", start, -1);
    raise(SIGKILL);
  }
  return job_record(ev, "die", start, 0);
}
AIO_SCHEDULER(die);

/* ---- threads of the module's own ---------------------------------------- */

/* One call a thread handed to the loop: records it with the thread it ran
 * on. */
struct soon_call {
  char tag[64];
  int seq;
};

static void soon_record(void *arg) {
  struct soon_call *c = arg;
  put_record(thread_witness(
      json_pack("{s:s,s:s,s:i}", "fn", "soon", "tag", c->tag, "seq", c->seq)));
  free(c);
}

struct thread_job {
  char tag[64];
  int n;
  int ok_soon, ok_emit;
};

static void thread_done(void *arg) {
  struct thread_job *j = arg;
  put_record(thread_witness(json_pack("{s:s,s:s,s:i,s:i}", "fn", "thread-done",
                                      "tag", j->tag, "soon", j->ok_soon, "emit",
                                      j->ok_emit)));
  free(j);
}

/* n times: aio_call_soon(soon_record), then aio_emit("bus-thread") (odd
 * seq) or aio_emit_new (even), then one thread_done with the tallies. */
static void *thread_main(void *arg) {
  struct thread_job *j = arg;
  for (int i = 1; i <= j->n; i++) {
    struct soon_call *c = malloc(sizeof(*c));
    if (c) {
      snprintf(c->tag, sizeof(c->tag), "%s", j->tag);
      c->seq = i;
      if (aio_call_soon(soon_record, c) == 0)
        j->ok_soon++;
      else
        free(c);
    }
    json_t *data = json_pack("{s:s,s:i,s:I}", "tag", j->tag, "seq", i, "tid",
                             (json_int_t)syscall(SYS_gettid));
    if (i % 2) {
      j->ok_emit += aio_emit("bus-thread", data) == 0;
      json_decref(data);
    } else {
      j->ok_emit += aio_emit_new("bus-thread", data) == 0;
    }
  }
  while (aio_call_soon(thread_done, j) == -EAGAIN)
    usleep(1000);
  return NULL;
}

/* "threads TAG K N": K detached threads TAGk, each as thread_main. */
static int start_threads(const char *tag, int k, int n) {
  int started = 0;
  for (int t = 0; t < k; t++) {
    struct thread_job *j = calloc(1, sizeof(*j));
    pthread_t tid;
    if (j == NULL)
      break;
    snprintf(j->tag, sizeof(j->tag), "%.50s%d", tag, t);
    j->n = n;
    if (pthread_create(&tid, NULL, thread_main, j)) {
      free(j);
      break;
    }
    pthread_detach(tid);
    started++;
  }
  return started;
}

static long long soon_counted; /* loop thread only */
static void soon_count(void *arg) {
  (void)arg;
  soon_counted++;
}

struct flood {
  int n, ok, again, other;
};

static void *flood_main(void *arg) {
  struct flood *f = arg;
  for (int i = 0; i < f->n; i++) {
    int rc = aio_call_soon(soon_count, NULL);
    f->ok += rc == 0;
    f->again += rc == -EAGAIN;
    f->other += rc != 0 && rc != -EAGAIN;
  }
  return NULL;
}

/* ---- aio_emit_wait ------------------------------------------------------ */

static int in_wait_call; /* loop thread: inside an aio_emit_wait() call */

/* done_cb: one record of what it was given, and where it ran. */
static void wait_done(const aio_emit_result_t *r, void *arg) {
  char *tag = arg;
  json_t *ls = json_array();
  for (size_t i = 0; i < r->n; i++)
    json_array_append_new(ls, json_pack("{s:s,s:i}", "listener",
                                        r->listeners[i].listener, "status",
                                        r->listeners[i].status));
  put_record(thread_witness(json_pack(
      "{s:s,s:s,s:s,s:i,s:I,s:o,s:b,s:I}", "fn", "wait-done", "sig", r->signal,
      "tag", tag, "status", r->status, "n", (json_int_t)r->n, "listeners", ls,
      "in_call", in_wait_call, "t", (json_int_t)mono_ns())));
  free(tag);
}

/* n waits for sig, data {tag, seq, status}; the count that returned 0 and
 * the first error. */
static void emit_waits(const char *sig, const char *tag, int n, int status,
                       int *ok, int *again, int *other) {
  for (int i = 1; i <= n; i++) {
    char *t = strdup(tag);
    json_t *data =
        json_pack("{s:s,s:i,s:i}", "tag", tag, "seq", i, "status", status);
    in_wait_call = 1;
    int rc = t ? aio_emit_wait(sig, data, wait_done, t) : -ENOMEM;
    in_wait_call = 0;
    json_decref(data);
    if (rc)
      free(t);
    *ok += rc == 0;
    *again += rc == -EAGAIN;
    *other += rc != 0 && rc != -EAGAIN;
  }
}

struct wait_thread {
  char sig[128], tag[64];
  int status, rc;
};

static void *wait_main(void *arg) {
  struct wait_thread *j = arg;
  int ok = 0, again = 0, other = 0;
  emit_waits(j->sig, j->tag, 1, j->status, &ok, &again, &other);
  j->rc = ok ? 0 : -1;
  return NULL;
}

/* ---- the emitter protocol --------------------------------------------- */

/* The worker's end of its bus: the socketpair the master created, so the
 * peer's credentials (taken at socketpair() time) are the master's. */
static int find_bus_fd(void) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL)
    return -1;
  int found = -1;
  struct dirent *e;
  while (found < 0 && (e = readdir(d)) != NULL) {
    int fd = atoi(e->d_name);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    struct ucred uc;
    socklen_t ul = sizeof(uc);
    if (fd > 2 && getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
        ss.ss_family == AF_UNIX &&
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &ul) == 0 &&
        uc.pid == getppid())
      found = fd;
  }
  closedir(d);
  return found;
}

/* Write all of buf on a non-blocking fd, waiting a bounded time. */
static void write_all(int fd, const char *buf, size_t len) {
  for (int tries = 0; len > 0 && tries < 100;) {
    ssize_t n = write(fd, buf, len);
    if (n > 0) {
      buf += n;
      len -= (size_t)n;
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      poll(&p, 1, 100);
      tries++;
    } else {
      return; /* the master has cut us off */
    }
  }
}

static int junk(const char *kind) {
  int fd = find_bus_fd();
  if (fd < 0)
    return -1;
  if (strcmp(kind, "oversize") == 0) {
    /* One frame longer than BUS_MAX_FRAME (256 KiB), no newline yet. */
    size_t n = 300 * 1024;
    char *big = malloc(n);
    if (big == NULL)
      return -1;
    memset(big, 'x', n);
    big[0] = '"';
    write_all(fd, big, n);
    free(big);
    return 0;
  }
  const char *s = strcmp(kind, "garbage") == 0     ? "this is not json\n"
                  : strcmp(kind, "unknown") == 0   ? "{\"t\":\"bogus\"}\n"
                  : strcmp(kind, "notobject") == 0 ? "[\"t\",\"emit\"]\n"
                  /* an emit whose seq does not grow */
                  : strcmp(kind, "badseq") == 0
                      ? "{\"t\":\"emit\",\"signal\":\"x\",\"seq\":0}\n"
                  /* acknowledging own emits never made, or nothing */
                  : strcmp(kind, "badack") == 0
                      ? "{\"t\":\"delivered\",\"seq\":999999999}\n"
                  : strcmp(kind, "emptyack") == 0 ? "{\"t\":\"delivered\"}\n"
                  /* a master-to-worker message, from a worker */
                  : strcmp(kind, "wrongway") == 0
                      ? "{\"t\":\"run\",\"id\":1,\"job\":0,\"which\":0}\n"
                      : NULL;
  if (s == NULL)
    return -1;
  write_all(fd, s, strlen(s));
  return 0;
}

/* One command: "pid", "emit SIGNAL TAG N", "emitnew SIGNAL TAG N" (with
 * aio_emit_new), "emitbig SIGNAL TAG N BYTES" (each padded), "emitodd SIGNAL
 * TAG N" (a key that needs escaping), "flood SIGNAL TAG N BYTES" (counts
 * what aio_emit refused), "reuse SIGNAL TAG N" (one object, changed
 * after each emit and renamed at the end: listeners must see each emit as it
 * was), "chain TAG N MS" (see chain), "junk KIND", "busy MS" (say "busy", hold
 * the loop, say "idle"), "die", "wait SIGNAL TAG N STATUS" (aio_emit_wait
 * with done_cb wait_done), "waitthread SIGNAL TAG STATUS" (one, from a
 * thread). */
static void command(aio_conn_t *c, char *cmd) {
  char out[128], sig[128], tag[64], kind[32];
  int n, i_ms;
  while (*cmd == ' ')
    cmd++;
  if (strcmp(cmd, "pid") == 0) {
    n = snprintf(out, sizeof(out), "pid %d\n", (int)getpid());
  } else if (strcmp(cmd, "die") == 0) {
    raise(SIGKILL);
    return;
  } else if (sscanf(cmd, "busy %d", &n) == 1) {
    aio_write(c, "busy\n", 5); /* before the spin: the client knows */
    long long until = mono_ns() + (long long)n * 1000000LL;
    while (mono_ns() < until)
      ;
    n = snprintf(out, sizeof(out), "idle\n");
  } else if (sscanf(cmd, "emit %127s %63s %d", sig, tag, &n) == 3) {
    int ok = 0;
    for (int i = 1; i <= n; i++) {
      json_t *data =
          json_pack("{s:s,s:i,s:i,s:I}", "tag", tag, "seq", i, "from",
                    (int)getpid(), "t", (json_int_t)mono_ns());
      ok += aio_emit(sig, data) == 0;
      json_decref(data);
    }
    n = snprintf(out, sizeof(out), "emitted %d\n", ok);
  } else if (sscanf(cmd, "wait %127s %63s %d %d", sig, tag, &n, &i_ms) == 4) {
    int ok = 0, again = 0, other = 0;
    emit_waits(sig, tag, n, i_ms, &ok, &again, &other);
    n = snprintf(out, sizeof(out), "wait ok %d again %d other %d\n", ok, again,
                 other);
  } else if (sscanf(cmd, "waitthread %127s %63s %d", sig, tag, &i_ms) == 3) {
    struct wait_thread j = {.status = i_ms, .rc = -1};
    pthread_t tid;
    snprintf(j.sig, sizeof(j.sig), "%s", sig);
    snprintf(j.tag, sizeof(j.tag), "%s", tag);
    if (pthread_create(&tid, NULL, wait_main, &j) == 0)
      pthread_join(tid, NULL);
    n = snprintf(out, sizeof(out), "waitthread %d\n", j.rc);
  } else if (sscanf(cmd, "emitbig %127s %63s %d %d", sig, tag, &n, &i_ms) ==
             4) {
    /* Like emit, each with i_ms bytes of padding. */
    char *pad = malloc((size_t)i_ms + 1);
    int ok = 0;
    if (pad) {
      memset(pad, 'x', (size_t)i_ms);
      pad[i_ms] = '\0';
      for (int i = 1; i <= n; i++)
        ok += aio_emit_new(sig,
                           json_pack("{s:s,s:i,s:i,s:s}", "tag", tag, "seq", i,
                                     "from", (int)getpid(), "pad", pad)) == 0;
      free(pad);
    }
    n = snprintf(out, sizeof(out), "emitted %d\n", ok);
  } else if (sscanf(cmd, "flood %127s %63s %d %d", sig, tag, &n, &i_ms) == 4) {
    /* n emits with i_ms bytes of padding each, counted by outcome:
     * taken, refused for back-pressure (-EAGAIN), any other error. */
    char *pad = malloc((size_t)i_ms + 1);
    int ok = 0, again = 0, other = 0;
    if (pad) {
      memset(pad, 'x', (size_t)i_ms);
      pad[i_ms] = '\0';
      for (int i = 1; i <= n; i++) {
        int rc = aio_emit_new(
            sig, json_pack("{s:s,s:i,s:s}", "tag", tag, "seq", i, "pad", pad));
        ok += rc == 0;
        again += rc == -EAGAIN;
        other += rc != 0 && rc != -EAGAIN;
      }
      free(pad);
    }
    n = snprintf(out, sizeof(out), "flood ok %d again %d other %d\n", ok, again,
                 other);
  } else if (sscanf(cmd, "emitodd %127s %63s %d", sig, tag, &n) == 3) {
    /* A key with a quote in it: escaped on the bus, which the master's
     * fast check leaves to jansson. */
    int ok = 0;
    for (int i = 1; i <= n; i++)
      ok += aio_emit_new(sig,
                         json_pack("{s:s,s:i,s:i,s:b}", "tag", tag, "seq", i,
                                   "from", (int)getpid(), "odd\"key", 1)) == 0;
    n = snprintf(out, sizeof(out), "emitted %d\n", ok);
  } else if (sscanf(cmd, "emitnew %127s %63s %d", sig, tag, &n) == 3) {
    int ok = 0;
    for (int i = 1; i <= n; i++)
      ok += aio_emit_new(sig, json_pack("{s:s,s:i,s:i,s:I}", "tag", tag, "seq",
                                        i, "from", (int)getpid(), "t",
                                        (json_int_t)mono_ns())) == 0;
    n = snprintf(out, sizeof(out), "emitted %d\n", ok);
  } else if (sscanf(cmd, "reuse %127s %63s %d", sig, tag, &n) == 3) {
    int ok = 0;
    json_t *data =
        json_pack("{s:s,s:i,s:i}", "tag", tag, "seq", 0, "from", (int)getpid());
    for (int i = 1; i <= n; i++) {
      json_object_set_new(data, "seq", json_integer(i));
      ok += aio_emit(sig, data) == 0;
    }
    json_object_set_new(data, "tag", json_string("changed after the emit"));
    json_decref(data);
    n = snprintf(out, sizeof(out), "emitted %d\n", ok);
  } else if (sscanf(cmd, "chain %63s %d %d", tag, &n, &i_ms) == 3) {
    int ok =
        aio_emit_new("bus-chain", json_pack("{s:s,s:i,s:i,s:i}", "tag", tag,
                                            "seq", 1, "n", n, "ms", i_ms)) == 0;
    n = snprintf(out, sizeof(out), "emitted %d\n", ok);
  } else if (sscanf(cmd, "threads %63s %d %d", tag, &n, &i_ms) == 3) {
    n = snprintf(out, sizeof(out), "started %d\n", start_threads(tag, n, i_ms));
  } else if (sscanf(cmd, "soonflood %d", &n) == 1) {
    /* The loop waits for the thread: none of its calls can run meanwhile,
     * so the queue's bound is reached exactly. */
    struct flood f = {.n = n};
    pthread_t tid;
    if (pthread_create(&tid, NULL, flood_main, &f) == 0)
      pthread_join(tid, NULL);
    n = snprintf(out, sizeof(out), "soonflood ok %d again %d other %d\n", f.ok,
                 f.again, f.other);
  } else if (strcmp(cmd, "sooncount") == 0) {
    n = snprintf(out, sizeof(out), "sooncount %lld\n", soon_counted);
  } else if (sscanf(cmd, "junk %31s", kind) == 1) {
    n = snprintf(out, sizeof(out), "%s\n", junk(kind) ? "no junk" : "junked");
  } else {
    n = snprintf(out, sizeof(out), "unknown command\n");
  }
  aio_write(c, out, (size_t)n);
}

struct line {
  size_t len;
  char buf[4096];
};

static void emitter_made(aio_conn_t *c) {
  aio_conn_set_data(c, calloc(1, sizeof(struct line)));
}

/* A line may hold several commands separated by ';': they run in one
 * callback, so their emits reach the bus back to back. */
static void emitter_data(aio_conn_t *c, const char *data, size_t len) {
  struct line *l = aio_conn_get_data(c);
  if (l == NULL)
    return;
  for (size_t i = 0; i < len; i++) {
    if (data[i] != '\n') {
      if (l->len < sizeof(l->buf) - 1)
        l->buf[l->len++] = data[i];
      continue;
    }
    l->buf[l->len] = '\0';
    l->len = 0;
    for (char *save = NULL, *cmd = strtok_r(l->buf, ";", &save); cmd;
         cmd = strtok_r(NULL, ";", &save))
      command(c, cmd);
  }
}

static void emitter_lost(aio_conn_t *c, int status) {
  (void)status;
  free(aio_conn_get_data(c));
}

AIO_PROTOCOL(emitter, .connection_made = emitter_made,
             .data_received = emitter_data, .connection_lost = emitter_lost);

/* Slow to start on demand: the first worker to find the file [busmod]
 * slow_start names removes it and waits 2 s before it serves, so that its
 * slot keeps what the master holds for it meanwhile. */
static int busmod_init(void) {
  loop_thread = pthread_self();
  const char *flag = aio_config_get("busmod", "slow_start");
  if (flag && *flag && unlink(flag) == 0)
    spin_ms(2000);
  return 0;
}

#ifdef AIO_HAVE_CHECK
#include <check.h>

/* ---- under `aio test`: the test's loop runs them for real --------------- */

/* An async scheduler (busmod.later, from a uv_timer) runs on the test's
 * loop until its aio_event_done(): odd runs succeed with a result. */
START_TEST(test_later_runs_on_the_test_loop) {
  aio_test_outcome_t o;
  ck_assert_ptr_nonnull(aio_loop());
  ck_assert_int_eq(aio_test_run_schedule("busmod.later", 5000, &o), 0);
  ck_assert_int_eq(o.status, 0);
  ck_assert_int_eq(json_integer_value(json_object_get(o.result, "run")), 1);
  ck_assert_str_eq(json_string_value(json_object_get(o.result, "via")),
                   "timer");
  json_decref(o.result);
  /* Run 2 fails, with its message as the result. */
  ck_assert_int_eq(aio_test_run_schedule("busmod.later", 5000, &o), 0);
  ck_assert_int_eq(o.status, 5);
  ck_assert_str_eq(json_string_value(o.result), "even runs fail");
  json_decref(o.result);
}
END_TEST

/* From a thread of its own, by the schedule's name. */
START_TEST(test_later_thread_completes_from_a_thread) {
  aio_test_outcome_t o;
  ck_assert_int_eq(aio_test_run_schedule("bus-later-thread", 5000, &o), 0);
  ck_assert_int_eq(o.status, 0);
  ck_assert_str_eq(json_string_value(json_object_get(o.result, "via")),
                   "thread");
  json_decref(o.result);
  ck_assert_int_eq(aio_test_run_schedule("nosuch", 100, &o), -ENOENT);
}
END_TEST

static int calls_seen;
static void count_call(void *arg) { calls_seen += arg == &calls_seen; }
static int seen_one(void *arg) {
  (void)arg;
  return calls_seen == 1;
}

START_TEST(test_call_soon_runs_on_the_test_loop) {
  ck_assert_int_eq(aio_call_soon(count_call, &calls_seen), 0);
  ck_assert_int_eq(calls_seen, 0);
  ck_assert_int_eq(aio_test_run(seen_one, NULL, 2000), 0);
  ck_assert_int_eq(aio_test_run(NULL, NULL, 10), -ETIMEDOUT);
}
END_TEST

struct got {
  int calls, status;
  size_t n;
  int st[4];
  char names[4][64];
};

static void got_done(const aio_emit_result_t *r, void *arg) {
  struct got *g = arg;
  g->calls++;
  g->status = r->status;
  g->n = r->n;
  for (size_t i = 0; i < r->n && i < 4; i++) {
    g->st[i] = r->listeners[i].status;
    snprintf(g->names[i], sizeof(g->names[i]), "%s", r->listeners[i].listener);
  }
}

static int got_called(void *arg) { return ((struct got *)arg)->calls > 0; }

/* aio_emit_wait: the async listener ends 7 from a timer, the plain one
 * after it; done_cb on a later turn, with both. */
START_TEST(test_emit_wait_on_the_test_loop) {
  struct got g = {0};
  json_t *data = json_pack("{s:i}", "status", 7);
  ck_assert_int_eq(aio_emit_wait("bus-wait", data, got_done, &g), 0);
  json_decref(data);
  ck_assert_int_eq(g.calls, 0);
  ck_assert_int_eq(aio_test_run(got_called, &g, 5000), 0);
  ck_assert_int_eq(g.calls, 1);
  ck_assert_int_eq(g.status, 7);
  ck_assert_uint_eq(g.n, 2);
  ck_assert_str_eq(g.names[0], "busmod.status_async");
  ck_assert_int_eq(g.st[0], 7);
  ck_assert_str_eq(g.names[1], "busmod.record");
  ck_assert_int_eq(g.st[1], 0);
  /* No listener: done on a later turn too, with none. */
  struct got none = {0};
  ck_assert_int_eq(aio_emit_wait("bus-none", NULL, got_done, &none), 0);
  ck_assert_int_eq(none.calls, 0);
  ck_assert_int_eq(aio_test_run(got_called, &none, 2000), 0);
  ck_assert_uint_eq(none.n, 0);
  ck_assert_int_eq(none.status, 0);
  ck_assert_int_eq(aio_emit_wait("bus-none", NULL, NULL, NULL), -EINVAL);
}
END_TEST

static struct Suite *busmod_tests(void) {
  Suite *s = suite_create("busmod");
  TCase *tc = tcase_create("loop");
  tcase_add_test(tc, test_later_runs_on_the_test_loop);
  tcase_add_test(tc, test_later_thread_completes_from_a_thread);
  tcase_add_test(tc, test_call_soon_runs_on_the_test_loop);
  tcase_add_test(tc, test_emit_wait_on_the_test_loop);
  suite_add_tcase(s, tc);
  return s;
}
#define BUSMOD_TESTS busmod_tests
#else
#define BUSMOD_TESTS NULL
#endif

AIO_MODULE(.name = "busmod", .description = "signal bus and schedule fixtures",
           .init = busmod_init, .tests = BUSMOD_TESTS);
