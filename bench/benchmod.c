#define _GNU_SOURCE /* uv.h needs the POSIX types */
/*
 * benchmod.c - the aio side of bench/bus. A client sends "go COUNT WINDOW"
 * to the `driver` protocol; it emits `bench-go`, which a broadcast listener
 * turns into a burst on every worker: COUNT emits of `bench-sig`, at most
 * WINDOW of them not yet delivered, each carrying its CLOCK_MONOTONIC emit
 * time. The once-per-emit listener `on_sig` runs on the emitting worker and
 * records emit-to-listener latency. When a worker's COUNT have arrived it
 * writes DIR/lat.PID (int64 ns each) and DIR/res.PID ("count first_emit_ns
 * last_recv_ns cpu_ns", the last the worker's CPU time during the burst),
 * DIR being `[bench] out`. WINDOW 1 is a ping-pong: the
 * unloaded latency.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <aio.h>

/* This process's user + system CPU time so far. */
static int64_t cpu_ns(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
         ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct {
  long count, window, emitted, received, refused;
  int64_t first_emit, last_recv, cpu_start;
  int64_t *lat;
  uv_idle_t idle;
  uv_timer_t retry;
  int idle_init;
} B;

/* Data made only to be emitted: aio_emit_new() takes it over, so the
 * listener here gets it without a copy (aio_emit() would copy it). Built
 * member by member: json_pack("{s:I,s:I}") costs about 0.14 us more per
 * message here (parsing its format), which is the module's time, not the
 * bus's. */
static int emit_stamped(const char *signal, long i) {
  json_t *d = json_object();
  if (d == NULL ||
      json_object_set_new_nocheck(d, "t", json_integer(mono_ns())) ||
      json_object_set_new_nocheck(d, "i", json_integer(i))) {
    json_decref(d);
    return -ENOMEM;
  }
  return aio_emit_new(signal, d);
}

static int emit_one(void) {
  int err = emit_stamped("bench-sig", B.emitted);
  if (err == 0)
    B.emitted++;
  return err;
}

static void on_idle(uv_idle_t *h);

static void on_retry(uv_timer_t *t) {
  (void)t;
  uv_idle_start(&B.idle, on_idle);
}

/* Fill the window, then wait for deliveries to open it again (the
 * listener restarts this): the emitter does not spin. An emit refused
 * for back-pressure (-EAGAIN: the bus is at its bound) is counted and
 * tried again 1 ms later, not at once: the master must get to read. */
static void on_idle(uv_idle_t *h) {
  int err = 0;
  while (!err && B.emitted < B.count && B.emitted - B.received < B.window)
    err = emit_one();
  uv_idle_stop(h);
  if (err == -EAGAIN) {
    B.refused++;
    uv_timer_start(&B.retry, on_retry, 1, 0);
  }
}

static void write_results(void) {
  int64_t cpu = cpu_ns() - B.cpu_start;
  const char *dir = aio_config_get("bench", "out");
  char path[512];
  if (dir == NULL)
    return;
  snprintf(path, sizeof(path), "%s/lat.%d", dir, (int)getpid());
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd >= 0) {
    size_t left = (size_t)B.received * sizeof(int64_t);
    const char *p = (const char *)B.lat;
    while (left > 0) {
      ssize_t n = write(fd, p, left);
      if (n <= 0)
        break;
      p += n;
      left -= (size_t)n;
    }
    close(fd);
  }
  /* res last: its presence says lat is complete. */
  char tmp[512], line[128];
  snprintf(tmp, sizeof(tmp), "%s/res.%d.tmp", dir, (int)getpid());
  snprintf(path, sizeof(path), "%s/res.%d", dir, (int)getpid());
  int n =
      snprintf(line, sizeof(line), "%ld %lld %lld %lld\n", B.received,
               (long long)B.first_emit, (long long)B.last_recv, (long long)cpu);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd >= 0) {
    if (write(fd, line, (size_t)n) == n)
      rename(tmp, path);
    close(fd);
  }
}

static void start(long count, long window) {
  free(B.lat);
  B.lat = calloc((size_t)count + 1, sizeof(int64_t));
  B.count = count;
  B.window = window < 1 ? 1 : window;
  B.emitted = B.received = B.refused = 0;
  B.first_emit = mono_ns();
  B.cpu_start = cpu_ns();
  if (!B.idle_init) {
    uv_idle_init(aio_loop(), &B.idle);
    uv_timer_init(aio_loop(), &B.retry);
    B.idle_init = 1;
  }
  uv_idle_start(&B.idle, on_idle);
}

/* bench-go (broadcast): start this worker's burst. */
static void go(const aio_signal_t *sig) {
  start((long)json_integer_value(json_object_get(sig->data, "count")),
        (long)json_integer_value(json_object_get(sig->data, "window")));
}
AIO_LISTENER(go);

/* bench-sig (once per emit, so on the emitting worker). */
static void on_sig(const aio_signal_t *sig) {
  int64_t now = mono_ns();
  int64_t t = (int64_t)json_integer_value(json_object_get(sig->data, "t"));
  if (B.lat == NULL || B.received >= B.count)
    return;
  B.lat[B.received++] = now - t;
  B.last_recv = now;
  if (B.received == B.count)
    write_results();
  else if (B.emitted < B.count)
    uv_idle_start(&B.idle, on_idle); /* room in the window again */
}
AIO_LISTENER(on_sig);

static void c_start(long count, long pace_ms);

static void driver_data(aio_conn_t *c, const char *data, size_t len) {
  char line[128];
  long count = 0, window = 0;
  size_t n = len < sizeof(line) - 1 ? len : sizeof(line) - 1;
  memcpy(line, data, n);
  line[n] = '\0';
  if (sscanf(line, "cgo %ld %ld", &count, &window) == 2) {
    c_start(count, window);
  } else if (sscanf(line, "go %ld %ld", &count, &window) == 2) {
    json_t *d = json_pack("{s:I,s:I}", "count", (json_int_t)count, "window",
                          (json_int_t)window);
    aio_emit("bench-go", d);
    json_decref(d);
  } else {
    aio_write(c, "?\n", 2);
    return;
  }
  aio_write(c, "ok\n", 3);
}
/* ---- bench/cluster: cluster signals from node a to any node ---------- */

static struct {
  long count, emitted, pace_ms;
  uv_idle_t idle;
  uv_timer_t pace;
  int init;
  /* Receiver: what this worker ran, written out by a timer. */
  int64_t *lat;
  long got, cap, written;
  int64_t first, last;
  uv_timer_t flush;
  int flush_init;
} C;

static void c_emit(void) {
  if (emit_stamped("bench-c", C.emitted) == 0)
    C.emitted++;
}

/* A burst: up to 500 a turn (a refusal waits for the next turn). */
static void c_on_idle(uv_idle_t *h) {
  for (int i = 0; i < 500 && C.emitted < C.count; i++)
    c_emit();
  if (C.emitted >= C.count)
    uv_idle_stop(h);
}

static void c_on_pace(uv_timer_t *t) {
  c_emit();
  if (C.emitted >= C.count)
    uv_timer_stop(t);
}

static void c_start(long count, long pace_ms) {
  if (!C.init) {
    uv_idle_init(aio_loop(), &C.idle);
    uv_timer_init(aio_loop(), &C.pace);
    C.init = 1;
  }
  C.count = count;
  C.emitted = 0;
  const char *dir = aio_config_get("bench", "out");
  char path[512];
  snprintf(path, sizeof(path), "%s/../t0", dir ? dir : ".");
  FILE *f = fopen(path, "w");
  if (f) {
    fprintf(f, "%lld\n", (long long)mono_ns());
    fclose(f);
  }
  if (pace_ms > 0)
    uv_timer_start(&C.pace, c_on_pace, (uint64_t)pace_ms, (uint64_t)pace_ms);
  else
    uv_idle_start(&C.idle, c_on_idle);
}

/* What this worker ran so far, to [bench] out: clat.PID, then cres.PID
 * ("received first last"), renamed into place. */
static void c_on_flush(uv_timer_t *t) {
  (void)t;
  const char *dir = aio_config_get("bench", "out");
  if (dir == NULL || C.got == C.written)
    return;
  char path[512], tmp[512];
  /* Both files renamed into place: a reader never sees half of one. */
  snprintf(tmp, sizeof(tmp), "%s/clat.%d.tmp", dir, (int)getpid());
  snprintf(path, sizeof(path), "%s/clat.%d", dir, (int)getpid());
  FILE *f = fopen(tmp, "wb");
  if (f == NULL)
    return;
  size_t w = fwrite(C.lat, sizeof(int64_t), (size_t)C.got, f);
  fclose(f);
  rename(tmp, path);
  snprintf(tmp, sizeof(tmp), "%s/cres.%d.tmp", dir, (int)getpid());
  snprintf(path, sizeof(path), "%s/cres.%d", dir, (int)getpid());
  f = fopen(tmp, "w");
  if (f == NULL)
    return;
  fprintf(f, "%ld %lld %lld\n", (long)w, (long long)C.first, (long long)C.last);
  fclose(f);
  rename(tmp, path);
  C.written = C.got;
}

/* bench-c (cluster): on whichever node's worker Redis gave it to. */
static void on_csig(const aio_signal_t *sig) {
  int64_t now = mono_ns();
  int64_t t = (int64_t)json_integer_value(json_object_get(sig->data, "t"));
  if (!C.flush_init) {
    uv_timer_init(aio_loop(), &C.flush);
    uv_timer_start(&C.flush, c_on_flush, 100, 100);
    uv_unref((uv_handle_t *)&C.flush);
    C.flush_init = 1;
  }
  if (C.got == C.cap) {
    long cap = C.cap ? C.cap * 2 : 65536;
    int64_t *nl = realloc(C.lat, (size_t)cap * sizeof(*nl));
    if (nl == NULL)
      return;
    C.lat = nl;
    C.cap = cap;
  }
  if (C.got == 0)
    C.first = t;
  C.lat[C.got++] = now - t;
  C.last = now;
}
AIO_LISTENER(on_csig);

AIO_PROTOCOL(driver, .data_received = driver_data);

AIO_MODULE(.name = "benchmod", .description = "signal bus benchmark");
