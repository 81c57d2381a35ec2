#define _GNU_SOURCE
/*
 * clusterbench.c - the measuring side of bench/cluster. The raw modes are
 * what aio's cluster signals are measured against: a plain hiredis client
 * sends COUNT messages of the same payload ({"t": send time, "i": n}) to
 * a consumer process on the same Redis, with at most WINDOW replies
 * outstanding (PACE_US > 0: one message every PACE_US instead, for the
 * unloaded latency), and the consumer prints one line: mode, messages,
 * seconds (first send to last receipt), msgs/s, p50 and p99 of
 * send-to-receive latency in microseconds.
 *
 *   clusterbench freeport
 *   clusterbench stream PORT COUNT WINDOW PACE_US   XADD / XREADGROUP+XACK
 *   clusterbench pubsub PORT COUNT WINDOW PACE_US   PUBLISH / SUBSCRIBE
 *   clusterbench aio DIR COUNT                      aio's receivers' files
 *
 * aio: the bench module's receivers (bench/benchmod.c, on_csig) write
 * DIR/clat.PID (latencies, int64 ns) and DIR/cres.PID ("received first
 * last"); this waits (up to DEADLINE_S) until they add up to COUNT and
 * prints the same line for all of them, and one per node directory.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#define DEADLINE_S 120

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "clusterbench: %s\n", what);
  exit(1);
}

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static void report(const char *mode, int64_t *lat, long n, int64_t t0,
                   int64_t t1) {
  double secs = (double)(t1 - t0) / 1e9;
  qsort(lat, (size_t)n, sizeof(*lat), cmp64);
  printf("%-14s %8ld %8.3f %10.0f %9.1f %9.1f\n", mode, n, secs,
         secs > 0 ? (double)n / secs : 0, n ? (double)lat[n / 2] / 1e3 : 0,
         n ? (double)lat[n * 99 / 100] / 1e3 : 0);
  fflush(stdout);
}

static redisContext *conn(int port) {
  struct timeval tv = {5, 0};
  redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
  if (c == NULL || c->err)
    die("cannot connect to redis");
  redisSetTimeout(c, tv);
  return c;
}

static int64_t stamp_of(const char *s, size_t n) {
  /* {"t":NNN,"i":M} */
  const char *p = memmem(s, n, "\"t\":", 4);
  return p ? strtoll(p + 4, NULL, 10) : 0;
}

/* The consumer: COUNT messages, then the report; t0 is shared through the
 * first message's stamp. */
static void consume(const char *mode, int port, long count) {
  redisContext *c = conn(port);
  int64_t *lat = calloc((size_t)count + 1, sizeof(*lat));
  int64_t first = 0, last = 0;
  long got = 0;
  int stream = strcmp(mode, "stream") == 0;
  redisReply *r;
  if (!stream) {
    r = redisCommand(c, "SUBSCRIBE bench-ch");
    freeReplyObject(r);
  }
  /* Tell the parent we are reading. */
  printf("ready\n");
  fflush(stdout);
  int64_t deadline = mono_ns() + (int64_t)DEADLINE_S * 1000000000;
  while (got < count && mono_ns() < deadline) {
    if (stream) {
      r = redisCommand(c, "XREADGROUP GROUP g c COUNT 256 BLOCK 1000 STREAMS "
                          "bench-st >");
      if (r == NULL)
        die("XREADGROUP: no reply");
      if (r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
        redisReply *es = r->element[0]->element[1];
        const char **argv = calloc(es->elements + 3, sizeof(*argv));
        argv[0] = "XACK";
        argv[1] = "bench-st";
        argv[2] = "g";
        for (size_t i = 0; i < es->elements; i++) {
          redisReply *e = es->element[i], *fv = e->element[1];
          int64_t now = mono_ns();
          for (size_t j = 0; j + 1 < fv->elements; j += 2)
            if (strcmp(fv->element[j]->str, "d") == 0) {
              int64_t t =
                  stamp_of(fv->element[j + 1]->str, fv->element[j + 1]->len);
              if (got == 0)
                first = t;
              if (got < count)
                lat[got++] = now - t;
              last = now;
            }
          argv[3 + i] = e->element[0]->str;
        }
        redisReply *a = redisCommandArgv(c, (int)es->elements + 3, argv, NULL);
        freeReplyObject(a);
        free(argv);
      }
      freeReplyObject(r);
    } else {
      if (redisGetReply(c, (void **)&r) != REDIS_OK)
        die("SUBSCRIBE: no message");
      if (r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
        int64_t t = stamp_of(r->element[2]->str, r->element[2]->len);
        if (got == 0)
          first = t;
        lat[got++] = mono_ns() - t;
        last = mono_ns();
      }
      freeReplyObject(r);
    }
  }
  report(stream ? "raw-stream" : "raw-pubsub", lat, got, first, last);
  exit(0);
}

static void produce(const char *mode, int port, long count, long window,
                    long pace_us) {
  redisContext *c = conn(port);
  int stream = strcmp(mode, "stream") == 0;
  long out = 0;
  char d[64];
  for (long i = 0; i < count; i++) {
    snprintf(d, sizeof(d), "{\"t\":%lld,\"i\":%ld}", (long long)mono_ns(), i);
    if (stream)
      redisAppendCommand(c, "XADD bench-st MAXLEN ~ 100000 * s bench-sig d %s",
                         d);
    else
      redisAppendCommand(c, "PUBLISH bench-ch %s", d);
    out++;
    /* Paced: each reply before the next; else down to half the window
     * once it is full, and all at the end. */
    long keep = pace_us > 0 || i == count - 1 ? 0
                : out >= window               ? window / 2
                                              : out;
    while (out > keep) {
      redisReply *r;
      if (redisGetReply(c, (void **)&r) != REDIS_OK)
        die("no reply to a send");
      freeReplyObject(r);
      out--;
    }
    if (pace_us > 0)
      usleep((useconds_t)pace_us);
  }
  redisFree(c);
}

static void raw(const char *mode, int port, long count, long window,
                long pace_us) {
  if (strcmp(mode, "stream") == 0) {
    redisContext *c = conn(port);
    freeReplyObject(redisCommand(c, "DEL bench-st"));
    freeReplyObject(redisCommand(c, "XGROUP CREATE bench-st g $ MKSTREAM"));
    redisFree(c);
  }
  int p[2];
  if (pipe(p))
    die("pipe");
  pid_t pid = fork();
  if (pid == 0) {
    dup2(p[1], 1);
    close(p[0]);
    consume(mode, port, count);
  }
  close(p[1]);
  FILE *f = fdopen(p[0], "r");
  char line[256];
  if (fgets(line, sizeof(line), f) == NULL || strcmp(line, "ready\n") != 0)
    die("the consumer did not start");
  produce(mode, port, count, window, pace_us);
  while (fgets(line, sizeof(line), f))
    fputs(line, stdout);
  waitpid(pid, NULL, 0);
}

/* ---- aio's receivers ------------------------------------------------- */

struct res {
  long n;
  int64_t first, last;
};

/* Sum the cres files under dir (not recursive). */
static long read_res(const char *dir, struct res *sum, int64_t **lat) {
  DIR *d = opendir(dir);
  struct dirent *e;
  long total = 0;
  *sum = (struct res){0};
  while (d && (e = readdir(d))) {
    if (strncmp(e->d_name, "cres.", 5) != 0 || strstr(e->d_name, ".tmp"))
      continue;
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
    FILE *f = fopen(path, "r");
    struct res r = {0};
    long long a = 0, b = 0;
    if (f && fscanf(f, "%ld %lld %lld", &r.n, &a, &b) == 3) {
      r.first = a;
      r.last = b;
      if (sum->first == 0 || (r.first && r.first < sum->first))
        sum->first = r.first;
      if (r.last > sum->last)
        sum->last = r.last;
      if (lat) {
        snprintf(path, sizeof(path), "%s/clat.%s", dir, e->d_name + 5);
        FILE *lf = fopen(path, "rb");
        *lat = realloc(*lat, (size_t)(total + r.n + 1) * sizeof(int64_t));
        if (lf) {
          size_t got = fread(*lat + total, sizeof(int64_t), (size_t)r.n, lf);
          r.n = (long)got;
          fclose(lf);
        }
      }
      total += r.n;
    }
    if (f)
      fclose(f);
  }
  if (d)
    closedir(d);
  sum->n = total;
  return total;
}

static void aio_mode(const char *dir, long count, const char *label) {
  char sub[2][512];
  snprintf(sub[0], sizeof(sub[0]), "%s/a", dir);
  snprintf(sub[1], sizeof(sub[1]), "%s/b", dir);
  int64_t deadline = mono_ns() + (int64_t)DEADLINE_S * 1000000000;
  struct res r[2];
  for (;;) {
    long n = read_res(sub[0], &r[0], NULL) + read_res(sub[1], &r[1], NULL);
    if (n >= count)
      break;
    if (mono_ns() > deadline) {
      fprintf(stderr, "clusterbench: aio: %ld of %ld after %d s\n", n, count,
              DEADLINE_S);
      break;
    }
    usleep(20000);
  }
  int64_t *lat[2] = {NULL, NULL}, *all;
  long n0 = read_res(sub[0], &r[0], &lat[0]);
  long n1 = read_res(sub[1], &r[1], &lat[1]);
  all = calloc((size_t)(n0 + n1 + 1), sizeof(*all));
  memcpy(all, lat[0], (size_t)n0 * sizeof(*all));
  memcpy(all + n0, lat[1], (size_t)n1 * sizeof(*all));
  /* The span: the first send is the sender's, in DIR/t0. */
  char path[600];
  snprintf(path, sizeof(path), "%s/t0", dir);
  FILE *f = fopen(path, "r");
  long long t0 = 0;
  if (f) {
    if (fscanf(f, "%lld", &t0) != 1)
      t0 = 0;
    fclose(f);
  }
  int64_t last = r[0].last > r[1].last ? r[0].last : r[1].last;
  char mode[64];
  report(label, all, n0 + n1, t0 ? t0 : r[0].first, last);
  snprintf(mode, sizeof(mode), "%s@b", label);
  if (n1)
    report(mode, lat[1], n1, t0 ? t0 : r[1].first, r[1].last);
  snprintf(mode, sizeof(mode), "%s@a", label);
  if (n0)
    report(mode, lat[0], n0, t0 ? t0 : r[0].first, r[0].last);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc == 2 && strcmp(argv[1], "freeport") == 0) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) ||
        getsockname(s, (struct sockaddr *)&a, &len))
      die("freeport");
    printf("%d\n", ntohs(a.sin_port));
    return 0;
  }
  if (argc == 6 &&
      (strcmp(argv[1], "stream") == 0 || strcmp(argv[1], "pubsub") == 0)) {
    raw(argv[1], atoi(argv[2]), atol(argv[3]), atol(argv[4]), atol(argv[5]));
    return 0;
  }
  if (argc == 5 && strcmp(argv[1], "aio") == 0) {
    aio_mode(argv[2], atol(argv[3]), argv[4]);
    return 0;
  }
  fprintf(stderr, "usage: clusterbench freeport | stream|pubsub PORT COUNT "
                  "WINDOW PACE_US | aio DIR COUNT LABEL\n");
  return 64;
}
