#define _GNU_SOURCE
/*
 * busbench.c - the measuring side of bench/bus. Every mode sends COUNT
 * messages per sender with at most WINDOW of them in flight (WINDOW 1 is a
 * ping-pong: unloaded latency), stamps each with CLOCK_MONOTONIC, and
 * prints one line: mode, senders, messages, seconds, msgs/s, p50 and p99 of
 * send-to-receive latency in microseconds, and the CPU time (user +
 * system) per message of every process of the system measured: the
 * sender and relay for raw; the clients and redis-server (INFO cpu) for
 * redis; the master (/proc) and the workers (getrusage) for aio.
 *
 *   busbench freeport
 *   busbench raw PAIRS COUNT WINDOW           socketpair relay, no JSON
 *   busbench redis PORT PAIRS COUNT WINDOW    PUBLISH / SUBSCRIBE
 *   busbench aio AIO MODDIR WORKERS COUNT WINDOW [broadcast]
 *
 * raw mirrors the bus's path without the bus: a sender writes ~90-byte
 * lines to a relay process over a socketpair, the relay writes back what
 * it reads, the sender reads them (an emit goes to the master and comes
 * back as a delivery to the same worker). Everything is bounded: a mode
 * that has not finished after DEADLINE_S gives up and says so.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEADLINE_S 120
#define MSG_SIZE 90

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t tv_ns(struct timeval tv) {
  return (int64_t)tv.tv_sec * 1000000000 + (int64_t)tv.tv_usec * 1000;
}

static int64_t rusage_ns(const struct rusage *ru) {
  return tv_ns(ru->ru_utime) + tv_ns(ru->ru_stime);
}

static int64_t self_cpu_ns(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return rusage_ns(&ru);
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static void report(const char *mode, int senders, int64_t *lat, long n,
                   int64_t t0, int64_t t1, int64_t cpu) {
  double secs = (double)(t1 - t0) / 1e9;
  qsort(lat, (size_t)n, sizeof(*lat), cmp64);
  double p50 = n ? (double)lat[n / 2] / 1e3 : 0;
  double p99 = n ? (double)lat[n * 99 / 100] / 1e3 : 0;
  printf("%-8s %7d %9ld %8.3f %11.0f %9.1f %9.1f %9.2f\n", mode, senders, n,
         secs, secs > 0 ? (double)n / secs : 0, p50, p99,
         n ? (double)cpu / 1e3 / (double)n : 0);
  fflush(stdout);
}

static int connect_port(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && errno == EAGAIN) {
      struct pollfd pf = {.fd = fd, .events = POLLOUT};
      poll(&pf, 1, 1000);
      continue;
    }
    if (w <= 0)
      die("write");
    p += w;
    n -= (size_t)w;
  }
}

/* ---- raw socketpair relay ----------------------------------------------- */

/* One sender and its relay. Writes the latencies to lat_fd; span gets the
 * start, the end and the CPU time of both processes. */
static int raw_pair(long count, long window, int lat_fd, int64_t *span) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    die("socketpair");
  pid_t relay = fork();
  if (relay == 0) {
    close(sv[0]);
    char buf[65536];
    ssize_t n;
    while ((n = read(sv[1], buf, sizeof(buf))) > 0)
      write_all(sv[1], buf, (size_t)n);
    _exit(0);
  }
  close(sv[1]);
  int fd = sv[0];
  int64_t *lat = calloc((size_t)count, sizeof(*lat));
  char out[1 << 16], in[1 << 16];
  size_t inlen = 0;
  long sent = 0, got = 0;
  int64_t cpu0 = self_cpu_ns();
  int64_t t0 = mono_ns(), deadline = t0 + (int64_t)DEADLINE_S * 1000000000;
  while (got < count && mono_ns() < deadline) {
    /* Fill the window in one write, as the bus batches a loop's frames. */
    size_t olen = 0;
    while (sent < count && sent - got < window &&
           olen + MSG_SIZE < sizeof(out)) {
      int n = snprintf(out + olen, MSG_SIZE + 1, "%lld %ld ",
                       (long long)mono_ns(), sent);
      memset(out + olen + n, 'x', (size_t)(MSG_SIZE - 1 - n));
      out[olen + MSG_SIZE - 1] = '\n';
      olen += MSG_SIZE;
      sent++;
    }
    if (olen)
      write_all(fd, out, olen);
    ssize_t r = read(fd, in + inlen, sizeof(in) - inlen);
    if (r <= 0)
      die("read");
    inlen += (size_t)r;
    int64_t now = mono_ns();
    char *p = in, *nl;
    while ((nl = memchr(p, '\n', inlen - (size_t)(p - in))) != NULL) {
      lat[got++] = now - strtoll(p, NULL, 10);
      p = nl + 1;
    }
    inlen -= (size_t)(p - in);
    memmove(in, p, inlen);
  }
  span[0] = t0;
  span[1] = mono_ns();
  span[2] = self_cpu_ns() - cpu0;
  close(fd);
  struct rusage ru;
  if (wait4(relay, NULL, 0, &ru) == relay)
    span[2] += rusage_ns(&ru);
  ssize_t w = write(lat_fd, lat, (size_t)got * sizeof(*lat));
  (void)w;
  free(lat);
  return got < count;
}

/* ---- redis PUBLISH / SUBSCRIBE --------------------------------------------
 */

/* One complete pushed "message" array at buf, or 0 when incomplete; sets
 * *payload to its third element. Returns the bytes it takes. */
static size_t resp_message(const char *buf, size_t len, const char **payload) {
  const char *p = buf, *end = buf + len;
  if (len == 0)
    return 0;
  if (*p != '*')
    return (size_t)-1;
  const char *nl = memchr(p, '\n', (size_t)(end - p));
  if (nl == NULL)
    return 0;
  int items = atoi(p + 1);
  p = nl + 1;
  for (int i = 0; i < items; i++) {
    if (p >= end)
      return 0;
    nl = memchr(p, '\n', (size_t)(end - p));
    if (nl == NULL)
      return 0;
    if (*p == ':') { /* subscribe confirmation count */
      p = nl + 1;
      continue;
    }
    long n = atol(p + 1);
    const char *data = nl + 1;
    if (data + n + 2 > end)
      return 0;
    if (i == 2)
      *payload = data;
    p = data + n + 2;
  }
  return (size_t)(p - buf);
}

static int redis_pair(int port, int id, long count, long window, int lat_fd,
                      int64_t *span) {
  int pub = connect_port(port), sub = connect_port(port);
  if (pub < 0 || sub < 0)
    die("connect redis");
  char ch[32], cmd[256];
  int chlen = snprintf(ch, sizeof(ch), "bench%d", id);
  int n = snprintf(cmd, sizeof(cmd), "*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n",
                   chlen, ch);
  write_all(sub, cmd, (size_t)n);
  char in[1 << 16], junk[1 << 16];
  size_t inlen = 0;
  /* Wait for the subscribe confirmation before publishing. */
  while (inlen == 0 || memmem(in, inlen, ch, (size_t)chlen) == NULL ||
         memchr(in, ':', inlen) == NULL) {
    ssize_t r = read(sub, in + inlen, sizeof(in) - inlen);
    if (r <= 0)
      die("subscribe");
    inlen += (size_t)r;
  }
  inlen = 0;
  fcntl(pub, F_SETFL, O_NONBLOCK);
  int64_t *lat = calloc((size_t)count, sizeof(*lat));
  char *out = malloc((size_t)window * 160 + 256);
  long sent = 0, got = 0;
  int64_t cpu0 = self_cpu_ns();
  int64_t t0 = mono_ns(), deadline = t0 + (int64_t)DEADLINE_S * 1000000000;
  while (got < count && mono_ns() < deadline) {
    size_t olen = 0;
    while (sent < count && sent - got < window) {
      char payload[64];
      int pl = snprintf(payload, sizeof(payload), "%lld %ld xxxxxxxx",
                        (long long)mono_ns(), sent);
      olen += (size_t)sprintf(
          out + olen, "*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n",
          chlen, ch, pl, payload);
      sent++;
    }
    if (olen)
      write_all(pub, out, olen);
    /* Replies to PUBLISH (":1") are read and dropped. */
    while (read(pub, junk, sizeof(junk)) > 0)
      ;
    struct pollfd pf = {.fd = sub, .events = POLLIN};
    if (poll(&pf, 1, 1000) <= 0)
      continue;
    ssize_t r = read(sub, in + inlen, sizeof(in) - inlen);
    if (r <= 0)
      die("read redis");
    inlen += (size_t)r;
    int64_t now = mono_ns();
    size_t off = 0, used;
    const char *payload = NULL;
    while ((used = resp_message(in + off, inlen - off, &payload)) > 0 &&
           used != (size_t)-1) {
      lat[got++] = now - strtoll(payload, NULL, 10);
      off += used;
    }
    if (used == (size_t)-1)
      die("bad RESP");
    inlen -= off;
    memmove(in, in + off, inlen);
  }
  span[0] = t0;
  span[1] = mono_ns();
  span[2] = self_cpu_ns() - cpu0;
  ssize_t w = write(lat_fd, lat, (size_t)got * sizeof(*lat));
  (void)w;
  free(lat);
  free(out);
  close(pub);
  close(sub);
  return got < count;
}

/* Merge what the senders wrote: lat.* files and spans, into one report. */
static int merge(const char *mode, const char *dir, int senders, long count,
                 const int64_t *t0s, const int64_t *t1s, int64_t cpu) {
  int64_t *all = calloc((size_t)senders * (size_t)count + 1, sizeof(*all));
  long n = 0;
  int64_t t0 = INT64_MAX, t1 = 0;
  for (int i = 0; i < senders; i++) {
    char path[512];
    snprintf(path, sizeof(path), "%s/lat.%d", dir, i);
    FILE *f = fopen(path, "r");
    if (f) {
      n += (long)fread(all + n, sizeof(*all), (size_t)count, f);
      fclose(f);
      unlink(path);
    }
    if (t0s[i] < t0)
      t0 = t0s[i];
    if (t1s[i] > t1)
      t1 = t1s[i];
  }
  if (n < (long)senders * count)
    fprintf(stderr, "%s: only %ld of %ld delivered\n", mode, n,
            (long)senders * count);
  report(mode, senders, all, n, t0, t1, cpu);
  free(all);
  return n < (long)senders * count;
}

/* redis-server's own CPU time (INFO cpu), or -1. */
static int64_t redis_cpu_ns(int port) {
  int fd = connect_port(port);
  if (fd < 0)
    return -1;
  write_all(fd, "*2\r\n$4\r\nINFO\r\n$3\r\ncpu\r\n", 23);
  char buf[4096];
  size_t len = 0;
  int64_t total = -1;
  while (len < sizeof(buf) - 1) {
    ssize_t r = read(fd, buf + len, sizeof(buf) - 1 - len);
    if (r <= 0)
      break;
    len += (size_t)r;
    buf[len] = '\0';
    const char *u = strstr(buf, "used_cpu_user:"),
               *sy = strstr(buf, "used_cpu_sys:");
    if (u && sy && strchr(u, '\n') && strchr(sy, '\n')) {
      total = (int64_t)((atof(u + 14) + atof(sy + 13)) * 1e9);
      break;
    }
  }
  close(fd);
  return total;
}

/* Fork `pairs` senders, each running raw_pair or redis_pair, and merge
 * what they measured. port: redis's, 0 for raw. */
static int run_pairs(const char *mode, int port, int pairs, long count,
                     long window) {
  char dir[] = "/tmp/busbench-XXXXXX";
  if (mkdtemp(dir) == NULL)
    die("mkdtemp");
  int spans[2];
  if (pipe(spans) < 0)
    die("pipe");
  int64_t server0 = port ? redis_cpu_ns(port) : 0;
  for (int i = 0; i < pairs; i++) {
    if (fork() == 0) {
      char path[512];
      snprintf(path, sizeof(path), "%s/lat.%d", dir, i);
      int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int64_t span[4] = {i, 0, 0, 0};
      int rc = port ? redis_pair(port, i, count, window, fd, span + 1)
                    : raw_pair(count, window, fd, span + 1);
      close(fd);
      if (write(spans[1], span, sizeof(span)) != sizeof(span))
        rc = 1;
      _exit(rc);
    }
  }
  close(spans[1]);
  int64_t t0s[64] = {0}, t1s[64] = {0}, span[4], cpu = 0;
  while (read(spans[0], span, sizeof(span)) == sizeof(span))
    if (span[0] >= 0 && span[0] < 64) {
      t0s[span[0]] = span[1];
      t1s[span[0]] = span[2];
      cpu += span[3];
    }
  while (wait(NULL) > 0)
    ;
  if (port) {
    int64_t server1 = redis_cpu_ns(port);
    if (server0 >= 0 && server1 >= server0)
      cpu += server1 - server0;
  }
  int rc = merge(mode, dir, pairs, count, t0s, t1s, cpu);
  rmdir(dir);
  return rc;
}

/* ---- aio ---------------------------------------------------------------- */

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof(sin);
  if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
      getsockname(fd, (struct sockaddr *)&sin, &sl) < 0)
    die("free port");
  close(fd);
  return ntohs(sin.sin_port);
}

/* Pids of the workers whose res.PID is written. Returns the count. */
static int list_res(const char *dir, int *pids, int max) {
  DIR *d = opendir(dir);
  int n = 0, pid;
  char tail;
  struct dirent *e;
  while (d && n < max && (e = readdir(d)) != NULL)
    if (sscanf(e->d_name, "res.%d%c", &pid, &tail) == 1)
      pids[n++] = pid;
  if (d)
    closedir(d);
  return n;
}

/* A process's user + system CPU time from /proc/PID/stat, or 0. */
static int64_t proc_cpu_ns(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  const char *p = strrchr(buf, ')'); /* the name may hold spaces */
  unsigned long long ut = 0, st = 0;
  if (p == NULL || sscanf(p + 2,
                          "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
                          "%llu %llu",
                          &ut, &st) != 2)
    return 0;
  return (int64_t)(ut + st) * (1000000000 / sysconf(_SC_CLK_TCK));
}

/* bcast: the listener is declared broadcast, so every signal goes through
 * the master and comes back as a deliver frame (with 1 worker: once). */
static int run_aio(const char *aio, const char *moddir, int workers, long count,
                   long window, int bcast) {
  char dir[] = "/tmp/busbench-XXXXXX", conf[640], log[640];
  if (mkdtemp(dir) == NULL)
    die("mkdtemp");
  int port = free_port();
  snprintf(conf, sizeof(conf), "%s/aio.conf", dir);
  snprintf(log, sizeof(log), "%s/aio.log", dir);
  FILE *f = fopen(conf, "w");
  fprintf(f,
          "[aio]\nmodules = benchmod\nmodule_path = %s\nworkers = %d\n"
          "log_level = warn\n\n[bench]\nout = %s\n\n"
          "[server:driver]\nprotocol = benchmod.driver\n"
          "address = 127.0.0.1\nport = %d\n\n"
          "[listen:bench]\nbench-go = benchmod.go broadcast\n"
          "bench-sig = benchmod.on_sig%s\n",
          moddir, workers, dir, port, bcast ? " broadcast" : "");
  fclose(f);
  int ready[2];
  if (pipe(ready) < 0)
    die("pipe");
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 2);
    dup2(ready[1], 3);
    execl(aio, aio, "-c", conf, "run", "--ready-fd", "3", (char *)NULL);
    _exit(127);
  }
  close(ready[1]);
  struct pollfd pf = {.fd = ready[0], .events = POLLIN};
  char c;
  if (poll(&pf, 1, 20000) <= 0 || read(ready[0], &c, 1) != 1) {
    fprintf(stderr, "aio did not start; see %s\n", log);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return 1;
  }
  int fd = connect_port(port);
  char cmd[64];
  int64_t master0 = proc_cpu_ns(pid);
  int n = snprintf(cmd, sizeof(cmd), "go %ld %ld\n", count, window);
  write_all(fd, cmd, (size_t)n);
  /* Wait for every worker's res file. */
  int64_t deadline = mono_ns() + (int64_t)DEADLINE_S * 1000000000;
  int pids[64], done = 0;
  while ((done = list_res(dir, pids, 64)) < workers && mono_ns() < deadline)
    usleep(20000);
  close(fd);
  /* lat.PID becomes lat.I for merge(); res.PID gives the span. */
  int64_t t0s[64] = {0}, t1s[64] = {0};
  int64_t cpu = proc_cpu_ns(pid) - master0, master_cpu = cpu;
  for (int i = 0; i < done; i++) {
    char path[700], to[700];
    long got;
    long long a, b, used;
    snprintf(path, sizeof(path), "%s/res.%d", dir, pids[i]);
    FILE *r = fopen(path, "r");
    if (r && fscanf(r, "%ld %lld %lld %lld", &got, &a, &b, &used) == 4) {
      t0s[i] = a;
      t1s[i] = b;
      cpu += used;
    }
    if (r)
      fclose(r);
    unlink(path);
    snprintf(path, sizeof(path), "%s/lat.%d", dir, pids[i]);
    snprintf(to, sizeof(to), "%s/lat.%d", dir, i);
    rename(path, to);
  }
  if (getenv("BUSBENCH_SPLIT")) /* which process the CPU went to */
    fprintf(stderr, "cpu_us per message: master %.3f, workers %.3f\n",
            (double)master_cpu / 1e3 / (double)(count * workers),
            (double)(cpu - master_cpu) / 1e3 / (double)(count * workers));
  kill(pid, SIGTERM);
  waitpid(pid, NULL, 0);
  int rc = merge(bcast ? "aio-bc" : "aio", dir, workers, count, t0s, t1s, cpu);
  if (rc == 0) {
    unlink(conf);
    unlink(log);
    rmdir(dir);
  } else {
    fprintf(stderr, "aio: see %s\n", log);
  }
  return rc;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc >= 2 && strcmp(argv[1], "freeport") == 0) {
    printf("%d\n", free_port());
    return 0;
  }
  if (argc == 5 && strcmp(argv[1], "raw") == 0)
    return run_pairs("raw", 0, atoi(argv[2]), atol(argv[3]), atol(argv[4]));
  if (argc == 6 && strcmp(argv[1], "redis") == 0)
    return run_pairs("redis", atoi(argv[2]), atoi(argv[3]), atol(argv[4]),
                     atol(argv[5]));
  if ((argc == 7 || (argc == 8 && strcmp(argv[7], "broadcast") == 0)) &&
      strcmp(argv[1], "aio") == 0)
    return run_aio(argv[2], argv[3], atoi(argv[4]), atol(argv[5]),
                   atol(argv[6]), argc == 8);
  fprintf(stderr, "usage: busbench freeport | raw PAIRS COUNT WINDOW |\n"
                  "       redis PORT PAIRS COUNT WINDOW |\n"
                  "       aio AIO MODDIR WORKERS COUNT WINDOW [broadcast]\n");
  return 64;
}
