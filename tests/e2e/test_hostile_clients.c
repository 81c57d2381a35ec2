/*
 * test_hostile_clients.c - clients that try to hold a worker's descriptors
 * and memory without doing anything (project issue 12): slowloris against
 * aio.hello, silent and non-reading peers, a plugin's own timeouts, the
 * file descriptor limit (EMFILE at accept, the RLIMIT_NOFILE raise at
 * start), max_connections refusals, and a pipelining client that never
 * reads. Each figure the suite measures is printed as a "figure:" line
 * (docs/operations.md quotes them).
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "ops_util.h"
#include "process_util.h"

/* Start aio with the [aio] lines aio_lines, serving protocol as
 * [server:NAME] on a free port with the server lines server_lines; wait
 * until it is ready. Returns the port. */
static int start(struct aio_proc *p, const char *aio_lines, const char *name,
                 const char *protocol, const char *server_lines,
                 const struct h_opts *o) {
  char conf[4096];
  int port = h_free_port();
  h_conf(conf, sizeof(conf), "testmod", "%s", aio_lines);
  h_conf_server(conf, sizeof(conf), name, protocol, port);
  h_conf_add(conf, sizeof(conf), "%s", server_lines);
  h_start_ready(p, conf, o);
  return port;
}

/* The only worker of master. */
static pid_t only_worker(pid_t master) {
  pid_t kid;
  pu_workers(master, &kid, 1);
  return kid;
}

/* A field of /proc/pid/status in kB (VmRSS), or -1. */
static long proc_kb(pid_t pid, const char *field) {
  char path[64], line[256];
  snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  long v = -1;
  size_t n = strlen(field);
  while (f && fgets(line, sizeof(line), f))
    if (strncmp(line, field, n) == 0 && line[n] == ':') {
      v = strtol(line + n + 1, NULL, 10);
      break;
    }
  if (f)
    fclose(f);
  return v;
}

/* "Max open files" of /proc/pid/limits: soft and hard. */
static void proc_nofile(pid_t pid, long long *soft, long long *hard) {
  char path[64], line[256];
  snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
  FILE *f = fopen(path, "r");
  *soft = *hard = -1;
  while (f && fgets(line, sizeof(line), f))
    if (strncmp(line, "Max open files", 14) == 0)
      sscanf(line + 14, "%lld %lld", soft, hard);
  if (f)
    fclose(f);
  ck_assert_msg(*soft > 0 && *hard > 0, "no Max open files in %s", path);
}

/* A connection to 127.0.0.1:port with a receive buffer of rcvbuf bytes
 * (0: the kernel's), set before connect so the window is small from the
 * start. */
static int connect_small(int port, int rcvbuf) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(fd, 0);
  if (rcvbuf)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  ck_assert_msg(connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0,
                "connect: %s", strerror(errno));
  return fd;
}

/* Has the peer closed or reset fd? Looked at without reading, so what it
 * sent stays unread (a peer that does not read). */
static int peer_gone(int fd) {
  struct pollfd pfd = {.fd = fd, .events = POLLRDHUP};
  return poll(&pfd, 1, 0) > 0 &&
         (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* Wait until the peer closes fd, reading and dropping what comes. The
 * milliseconds it took, or -1 after timeout_ms. */
static long long wait_closed(int fd, int timeout_ms) {
  long long t0 = h_now_ms();
  return h_read_eof(fd, timeout_ms) == 0 || peer_gone(fd) ? h_now_ms() - t0
                                                          : -1;
}

static int count_env(const char *name, int dflt) {
  const char *v = getenv(name);
  return v && atoi(v) > 0 ? atoi(v) : dflt;
}

/* ---- 1. timeouts --------------------------------------------------------- */

#define SLOW_HEAD "GET / HTTP/1.1\r\nHost: x\r\n"
#define ANSWER_408 "HTTP/1.1 408 Request Timeout\r\n"

/* Slowloris: many connections that each send a request head a byte at a
 * time and never finish it. Bytes must not move the head's deadline: each
 * gets its 408 and is closed header_timeout after it connected. */
START_TEST(test_slowloris_gets_408_after_header_timeout) {
  enum { MAX = 2000 };
  int n = count_env("AIO_HOSTILE_SLOWLORIS", 200);
  ck_assert_int_le(n, MAX);
  struct aio_proc p;
  int port = start(&p, "workers = 1\n", "hello", "aio.hello",
                   "header_timeout = 0.5\n", NULL);
  static int fd[MAX];
  static long long t0[MAX], closed[MAX];
  static char head[MAX][sizeof(ANSWER_408)];
  static size_t got[MAX];
  for (int i = 0; i < n; i++) {
    fd[i] = h_connect(port, 3000);
    ck_assert_int_ge(fd[i], 0);
    t0[i] = h_now_ms();
    closed[i] = got[i] = 0;
    ck_assert_int_eq(h_send(fd[i], SLOW_HEAD, strlen(SLOW_HEAD)), 0);
  }
  static struct pollfd pfd[MAX];
  int open = n;
  long long deadline = h_now_ms() + 10000, next_byte = 0;
  while (open > 0 && h_now_ms() < deadline) {
    if (h_now_ms() >= next_byte) { /* one more header byte each */
      for (int i = 0; i < n; i++)
        if (!closed[i] && got[i] == 0)
          send(fd[i], "X", 1, MSG_NOSIGNAL);
      next_byte = h_now_ms() + 100;
    }
    for (int i = 0; i < n; i++)
      pfd[i] = (struct pollfd){.fd = closed[i] ? -1 : fd[i], .events = POLLIN};
    if (poll(pfd, (nfds_t)n, 50) <= 0)
      continue;
    for (int i = 0; i < n; i++) {
      if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      char buf[512];
      ssize_t m = recv(fd[i], buf, sizeof(buf), 0);
      if (m > 0) {
        size_t keep = sizeof(head[i]) - 1 - got[i];
        if ((size_t)m < keep)
          keep = (size_t)m;
        memcpy(head[i] + got[i], buf, keep);
        got[i] += keep;
        continue;
      }
      if (m < 0 && errno == EINTR)
        continue;
      closed[i] = h_now_ms(); /* EOF, or a reset after the answer */
      open--;
    }
  }
  long long lo = -1, hi = -1;
  for (int i = 0; i < n; i++) {
    ck_assert_msg(closed[i], "connection %d of %d still open after 10 s", i, n);
    head[i][got[i]] = '\0';
    ck_assert_msg(strcmp(head[i], ANSWER_408) == 0,
                  "connection %d answered '%s', not 408", i, head[i]);
    long long took = closed[i] - t0[i];
    lo = lo < 0 || took < lo ? took : lo;
    hi = took > hi ? took : hi;
    close(fd[i]);
  }
  fprintf(stderr,
          "figure: slowloris: %d connections to aio.hello, header_timeout "
          "0.5 s: all answered 408 and closed %lld-%lld ms after connecting\n",
          n, lo, hi);
  ck_assert_msg(lo >= 450, "a connection was closed after %lld ms", lo);
  ck_assert_msg(hi <= 3000, "a connection was closed only after %lld ms", hi);
  h_stop_ok(&p);
  /* Counted, and said in one line (the timeouts of a drain are said when
   * it begins). */
  char want[128];
  snprintf(want, sizeof(want), "0 idle, 0 send, %d deadline", n);
  ck_assert_msg(h_log_has(&p, want), "no '%s' in the log", want);
}
END_TEST

/* A request head that comes whole in time is answered, even when it came
 * a byte at a time. */
START_TEST(test_header_timeout_spares_a_head_that_arrives_in_time) {
  struct aio_proc p;
  int port = start(&p, "workers = 1\n", "hello", "aio.hello",
                   "header_timeout = 1\n", NULL);
  int fd = h_connect(port, 3000);
  ck_assert_int_ge(fd, 0);
  const char *req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  for (const char *c = req; *c; c++) {
    ck_assert_int_eq(h_send(fd, c, 1), 0);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    poll(&pfd, 1, 20); /* a slow but honest client */
  }
  char buf[512];
  ck_assert_int_gt(h_recv_until(fd, buf, sizeof(buf), "World!\n", 3000), 0);
  ck_assert_ptr_nonnull(strstr(buf, "HTTP/1.1 200 OK"));
  /* Between requests the idle timeout (60 s) holds, not header_timeout:
   * still open well after it. */
  struct pollfd pfd = {.fd = fd, .events = POLLIN | POLLRDHUP};
  ck_assert_int_eq(poll(&pfd, 1, 1500), 0);
  close(fd);
  h_stop_ok(&p);
}
END_TEST

/* A silent connection is closed after idle_timeout, on a TCP and on a unix
 * server; one that keeps talking is not. */
START_TEST(test_idle_timeout_closes_a_silent_connection_only) {
  struct aio_proc p;
  char dir[128], lines[512], sock[192];
  h_tmpdir(dir, sizeof(dir));
  snprintf(sock, sizeof(sock), "%s/echo.sock", dir);
  snprintf(lines, sizeof(lines),
           "idle_timeout = 0.5\n\n[server:local]\nprotocol = aio.echo\n"
           "path = %s\nidle_timeout = 0.5\n",
           sock);
  struct h_opts o = {.dir = dir};
  int port = start(&p, "workers = 1\n", "echo", "aio.echo", lines, &o);
  int silent = h_connect(port, 3000);
  int usilent = h_connect_unix(sock, 3000);
  int talker = h_connect(port, 3000);
  ck_assert_int_ge(silent, 0);
  ck_assert_int_ge(usilent, 0);
  ck_assert_int_ge(talker, 0);
  long long t0 = h_now_ms(), silent_at = 0, usilent_at = 0;
  int echoes = 0;
  while (h_now_ms() - t0 < 2000) {
    char buf[16];
    ck_assert_int_eq(h_send(talker, "x", 1), 0);
    ck_assert_msg(h_recv_until(talker, buf, sizeof(buf), "x", 2000) == 1,
                  "the talking connection got no echo");
    echoes++;
    if (!silent_at && peer_gone(silent))
      silent_at = h_now_ms();
    if (!usilent_at && peer_gone(usilent))
      usilent_at = h_now_ms();
    struct pollfd pfd = {.fd = talker, .events = POLLRDHUP};
    poll(&pfd, 1, 100); /* one byte per 100 ms */
    ck_assert_msg(!(pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)),
                  "the talking connection was closed after %lld ms",
                  h_now_ms() - t0);
  }
  ck_assert_msg(silent_at && usilent_at,
                "silent connections still open after 2 s (tcp %lld, unix "
                "%lld)",
                silent_at ? silent_at - t0 : -1,
                usilent_at ? usilent_at - t0 : -1);
  ck_assert_int_ge(silent_at - t0, 450);
  ck_assert_int_ge(usilent_at - t0, 450);
  ck_assert_int_ge(echoes, 5);
  fprintf(stderr,
          "figure: idle_timeout 0.5 s: silent connections closed after %lld "
          "ms (tcp), %lld ms (unix)\n",
          silent_at - t0, usilent_at - t0);
  close(silent);
  close(usilent);
  close(talker);
  h_stop_ok(&p);
}
END_TEST

/* Ask testmod.big for n bytes in one write on fd; read all of it, pausing
 * pause_ms between reads of up to `piece` bytes, to the "\nr=R\n"
 * trailer. Meanwhile *gone_at gets the time the peer of watch closed or
 * reset it, if it did. Returns the bytes of 'x' that arrived. */
static size_t read_big(int fd, size_t n, size_t piece, int pause_ms, int watch,
                       long long *gone_at) {
  char req[64];
  int len = snprintf(req, sizeof(req), "big %zu\n", n);
  ck_assert_int_eq(h_send(fd, req, (size_t)len), 0);
  static char chunk[1 << 16];
  size_t xs = 0;
  char last[8] = "";
  long long deadline = h_now_ms() + 20000;
  while (h_now_ms() < deadline && strcmp(last, "\nr=0\n") != 0) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, 100) <= 0)
      continue;
    ssize_t m =
        recv(fd, chunk, piece < sizeof(chunk) ? piece : sizeof(chunk), 0);
    if (m <= 0)
      break;
    for (ssize_t i = 0; i < m; i++) {
      xs += chunk[i] == 'x';
      memmove(last, last + 1, 4);
      last[4] = chunk[i];
    }
    poll(NULL, 0, pause_ms); /* the slow reader's pace */
    if (*gone_at == 0 && peer_gone(watch))
      *gone_at = h_now_ms();
  }
  ck_assert_str_eq(last, "\nr=0\n");
  return xs;
}

/* A client that never reads a large answer is reset after send_timeout;
 * one that reads it slowly, in small bites, is not (its queue moves). */
START_TEST(test_send_timeout_resets_a_peer_that_does_not_read) {
  struct aio_proc p;
  int port = start(&p, "workers = 1\n", "big", "testmod.big",
                   "send_timeout = 0.5\n", NULL);
  /* Far more than the kernel's buffers hold, so it waits in aio. */
  int sleeper = connect_small(port, 4096);
  ck_assert_int_eq(h_send(sleeper, "big 4000000\n", 12), 0);
  long long t0 = h_now_ms(), gone_at = 0;
  int reader = connect_small(port, 0);
  size_t xs = read_big(reader, 1000000, 16384, 20, sleeper, &gone_at);
  ck_assert_uint_eq(xs, 1000000);
  while (h_now_ms() - t0 < 5000 && gone_at == 0) {
    if (peer_gone(sleeper))
      gone_at = h_now_ms();
    else
      poll(NULL, 0, 20);
  }
  ck_assert_msg(gone_at, "the peer that does not read is still connected");
  long long gone = gone_at - t0;
  fprintf(stderr,
          "figure: send_timeout 0.5 s: a peer that reads nothing of 4 MB "
          "reset %lld ms after asking; one reading 16 KiB per 20 ms got "
          "all of 1 MB\n",
          gone);
  ck_assert_int_ge(gone, 450);
  close(sleeper);
  close(reader);
  h_stop_ok(&p);
}
END_TEST

/* Ask cmd on fd, expect the answer. */
static void ask(int fd, const char *cmd, const char *want) {
  char buf[64];
  ck_assert_int_eq(h_send(fd, cmd, strlen(cmd)), 0);
  ck_assert_int_gt(h_recv_until(fd, buf, sizeof(buf), "\n", 3000), 0);
  ck_assert_str_eq(buf, want);
}

/* A plugin's aio_conn_set_timeout() and aio_conn_set_deadline(). */
START_TEST(test_plugin_sets_timeouts_and_deadlines) {
  struct aio_proc p;
  int port = start(&p, "workers = 1\n", "timer", "testmod.timer", "", NULL);
  int idle = h_connect(port, 3000), dl = h_connect(port, 3000),
      dlc = h_connect(port, 3000), bad = h_connect(port, 3000);
  ck_assert_int_ge(idle, 0);
  ck_assert_int_ge(dl, 0);
  ck_assert_int_ge(dlc, 0);
  ck_assert_int_ge(bad, 0);
  ask(bad, "bad\n", "ok -22\n");
  ask(idle, "idle 300\n", "ok 0\n");
  long long t0 = h_now_ms();
  ask(dl, "deadline 300\n", "ok 0\n");
  ask(dlc, "deadline-close 300\n", "ok 0\n");
  /* The deadline holds however much the peer talks. */
  char buf[64] = "";
  int talked = 0;
  while (h_now_ms() - t0 < 3000) {
    if (h_send(dl, "x", 1) < 0)
      break;
    int m = h_recv_until(dl, buf, sizeof(buf), "\n", 2000);
    if (m <= 0 || strcmp(buf, "?\n") != 0)
      break;
    talked++;
    poll(NULL, 0, 50);
  }
  long long dl_at = h_now_ms() - t0;
  ck_assert_msg(strcmp(buf, "deadline\n") == 0, "after %lld ms: '%s'", dl_at,
                buf);
  ck_assert_int_ge(talked, 2);
  ck_assert_int_ge(dl_at, 250);
  ck_assert_int_le(dl_at, 2500);
  ck_assert_int_ge(wait_closed(dl, 3000), 0);
  ck_assert_int_ge(wait_closed(dlc, 3000), 0);
  ck_assert_int_ge(wait_closed(idle, 3000), 0);
  ck_assert_int_ge(h_now_ms() - t0, 250);
  /* The server's own timeouts still hold for the one that set none. */
  ask(bad, "x", "?\n");
  close(idle);
  close(dl);
  close(dlc);
  close(bad);
  h_stop_ok(&p);
}
END_TEST

/* Keys that would be ignored are refused, with file and line. */
START_TEST(test_timeout_keys_are_checked) {
  char conf[1024], out[4096];
  struct aio_proc p;
  h_conf(conf, sizeof(conf), "testmod", "workers = 1\n");
  h_conf_server(conf, sizeof(conf), "e", "aio.echo", h_free_port());
  h_conf_add(conf, sizeof(conf), "idle_timeout = soon\n");
  h_conf_add(conf, sizeof(conf),
             "\n[server:u]\nprotocol = aio.echo\ntype = udp\nport = %d\n"
             "send_timeout = 1\n",
             h_free_port());
  ck_assert_int_eq(h_prepare(&p, conf, NULL), 0);
  const char *argv[] = {"-c", p.conf, "check", NULL};
  ck_assert_int_eq(h_aio(p.dir, out, sizeof(out), argv), 78);
  ck_assert_msg(strstr(out, "aio.conf:10: [server:e] idle_timeout: expected a "
                            "number of seconds between 0 and 604800"),
                "%s", out);
  ck_assert_msg(strstr(out, "[server:u] send_timeout: a udp server has no "
                            "connections of aio's to time out"),
                "%s", out);
}
END_TEST

/* ---- 2. the file descriptor limit -----------------------------------------
 */

/* Open n connections to port and send "ping\n" on each. */
static void open_pings(int port, int *fd, int n) {
  for (int i = 0; i < n; i++) {
    fd[i] = h_connect(port, 3000);
    ck_assert_int_ge(fd[i], 0);
    ck_assert_int_eq(h_send(fd[i], "ping\n", 5), 0);
  }
}

/* Which of fd[0..n) have their echo (answered[i] = 1), read within
 * quiet_ms of the last one to come. Returns how many; *closed counts those
 * the server closed instead. */
static int collect_echoes(int *fd, int n, int *answered, int quiet_ms,
                          int *closed) {
  long long last = h_now_ms(), deadline = last + 10000;
  int count = 0;
  *closed = 0;
  for (int i = 0; i < n; i++)
    count += answered[i] == 1;
  while (h_now_ms() - last < quiet_ms && h_now_ms() < deadline) {
    struct pollfd pfd[256];
    for (int i = 0; i < n; i++)
      pfd[i] = (struct pollfd){.fd = answered[i] ? -1 : fd[i],
                               .events = POLLIN | POLLRDHUP};
    if (poll(pfd, (nfds_t)n, 50) <= 0)
      continue;
    for (int i = 0; i < n; i++) {
      if (!pfd[i].revents)
        continue;
      char buf[16];
      ssize_t m = recv(fd[i], buf, sizeof(buf), 0);
      answered[i] = m == 5 ? 1 : -1;
      count += m == 5;
      *closed += m != 5;
      last = h_now_ms();
    }
  }
  return count;
}

/* At the descriptor limit a worker stops accepting for a moment instead
 * of accepting and closing in silence (libuv's EMFILE path): open
 * connections are served, the new ones wait in the listen queue, one line
 * says so, and once descriptors free up the waiting ones are served. */
START_TEST(test_accept_pauses_at_the_descriptor_limit) {
  enum { N = 80 };
  struct aio_proc p;
  /* Soft and hard: nothing for aio to raise. */
  struct h_opts o = {.shell = "ulimit -n 48; "};
  int port = start(&p, "workers = 1\n", "echo", "aio.echo", "", &o);
  ck_assert_msg(h_log_has(&p, "RLIMIT_NOFILE"),
                "no line about the descriptor limit at start");
  int fd[N], answered[N] = {0}, closed;
  open_pings(port, fd, N);
  ck_assert_int_eq(h_wait_log(&p, "not accepting for 250 ms", 5000), 0);
  long long first = h_now_ms();
  int served = collect_echoes(fd, N, answered, 600, &closed);
  ck_assert_msg(closed == 0, "%d waiting connections were closed", closed);
  ck_assert_msg(served >= 10 && served < N, "%d of %d served", served, N);
  /* The open ones are served on. */
  for (int i = 0; i < N; i++)
    if (answered[i] == 1) {
      char buf[16];
      ck_assert_int_eq(h_send(fd[i], "again", 5), 0);
      ck_assert_int_eq(h_recv_until(fd[i], buf, sizeof(buf), "again", 3000), 5);
    }
  /* Several pauses later: still the one line. */
  while (h_now_ms() - first < 1200)
    poll(NULL, 0, 50);
  ck_assert_int_eq(h_log_count(&p, "not accepting for 250 ms"), 1);
  /* Room again: the waiting ones are served. */
  for (int i = 0, shut = 0; i < N && shut < 10; i++)
    if (answered[i] == 1) {
      close(fd[i]);
      fd[i] = -1;
      answered[i] = 2; /* gone */
      shut++;
    }
  int more = collect_echoes(fd, N, answered, 1500, &closed) - (served - 10);
  ck_assert_msg(closed == 0, "%d waiting connections were closed", closed);
  ck_assert_msg(more >= 5,
                "only %d waiting connections served after ten "
                "closed",
                more);
  ck_assert_int_eq(h_wait_log(&p, "accept paused", 8000), 0);
  /* Counted where an operator looks, not only said in the log. */
  json_t *st = ops_status(&p);
  json_int_t paused = ops_int(
      json_object_get(json_object_get(st, "servers"), "echo"), "accept_paused");
  json_decref(st);
  ck_assert_msg(paused >= 2, "aio status counts %lld accept pauses",
                (long long)paused);
  fprintf(stderr,
          "figure: RLIMIT_NOFILE 48: %d of %d connections served, the rest "
          "waited; %d more served once ten closed\n",
          served, N, more);
  for (int i = 0; i < N; i++)
    if (fd[i] >= 0)
      close(fd[i]);
  h_stop_ok(&p);
}
END_TEST

/* Over max_connections new connections are closed, and the log says so
 * once, then with a count: not one line per connection. */
START_TEST(test_max_connections_refusals_are_counted_not_logged_each) {
  enum { KEEP = 4, MORE = 30 };
  struct aio_proc p;
  int port = start(&p, "workers = 1\nmax_connections = 4\n", "echo", "aio.echo",
                   "", NULL);
  int fd[KEEP + MORE], answered[KEEP + MORE] = {0}, closed;
  open_pings(port, fd, KEEP);
  ck_assert_int_eq(collect_echoes(fd, KEEP, answered, 300, &closed), KEEP);
  for (int i = KEEP; i < KEEP + MORE; i++) {
    fd[i] = h_connect(port, 3000);
    ck_assert_int_ge(fd[i], 0);
    ck_assert_msg(wait_closed(fd[i], 3000) >= 0,
                  "connection %d over max_connections not closed", i);
    close(fd[i]);
  }
  ck_assert_int_eq(h_log_count(&p, "over max_connections (4)"), 1);
  ck_assert_int_eq(
      h_wait_log(&p, "closed 29 new connections in the last 5 s", 8000), 0);
  ck_assert_int_eq(h_log_count(&p, "over max_connections (4)"), 2);
  for (int i = 0; i < KEEP; i++)
    close(fd[i]);
  h_stop_ok(&p);
}
END_TEST

/* aio raises its soft RLIMIT_NOFILE to what the configuration needs (up
 * to the hard limit), and the workers inherit it. */
START_TEST(test_rlimit_nofile_is_raised_to_what_the_config_needs) {
  struct aio_proc p;
  struct h_opts o = {.shell = "ulimit -S -n 256; "};
  start(&p, "workers = 1\nmax_connections = 3000\n", "echo", "aio.echo", "",
        &o);
  long long soft, hard;
  proc_nofile(only_worker(p.pid), &soft, &hard);
  if (hard >= 4000) {
    ck_assert_msg(soft >= 3000 && soft <= hard, "soft %lld hard %lld", soft,
                  hard);
    ck_assert(!h_log_has(&p, "RLIMIT_NOFILE"));
  } else { /* a box whose hard limit is lower: all of it, and a line */
    ck_assert_int_eq(soft, hard);
    ck_assert(h_log_has(&p, "RLIMIT_NOFILE"));
  }
  h_stop_ok(&p);
}
END_TEST

/* Can this process raise a hard limit (CAP_SYS_RESOURCE: root, but not
 * root in every container)? */
static int can_raise_hard_limits(void) {
  char line[256];
  unsigned long long eff = 0;
  FILE *f = fopen("/proc/self/status", "r");
  while (f && fgets(line, sizeof(line), f))
    if (sscanf(line, "CapEff: %llx", &eff) == 1)
      break;
  if (f)
    fclose(f);
  return (eff >> 24) & 1; /* CAP_SYS_RESOURCE */
}

/* [aio] rlimit_nofile asks for more; as root that raises the hard limit
 * too, otherwise the log says what it could not get. */
START_TEST(test_rlimit_nofile_setting_raises_the_hard_limit_as_root) {
  struct aio_proc p;
  struct h_opts o = {.shell = "ulimit -S -n 256; ulimit -H -n 1024; "};
  start(&p, "workers = 1\nmax_connections = 100\nrlimit_nofile = 8192\n",
        "echo", "aio.echo", "", &o);
  long long soft, hard;
  proc_nofile(only_worker(p.pid), &soft, &hard);
  if (can_raise_hard_limits()) {
    ck_assert_int_eq(soft, 8192);
    ck_assert_int_eq(hard, 8192);
  } else {
    ck_assert_int_eq(soft, 1024);
    ck_assert(h_log_has(&p, "RLIMIT_NOFILE"));
  }
  h_stop_ok(&p);
}
END_TEST

/* ---- 3. a pipelining client that never reads ------------------------------
 */

#define PIPE_REQ "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
#define PIPE_ANSWER_LEN 92 /* aio.hello's keep-alive 200 */
/* What a connection that pipelines without reading may cost a worker. */
#define PIPE_BOUND_KB 40

START_TEST(test_pipelining_client_that_never_reads_is_bounded) {
  enum { N = 100, REQS = 40000 };
  struct aio_proc p;
  int port = start(&p, "workers = 1\n", "hello", "aio.hello", "", NULL);
  pid_t worker = only_worker(p.pid);
  size_t rl = strlen(PIPE_REQ), total = rl * REQS;
  char *reqs = malloc(total);
  ck_assert_ptr_nonnull(reqs);
  for (size_t i = 0; i < REQS; i++)
    memcpy(reqs + i * rl, PIPE_REQ, rl);
  /* Warm the worker up (its allocator, the first connection's path). */
  char buf[1 << 16];
  ck_assert_int_eq(h_exchange_once(port,
                                   PIPE_REQ PIPE_REQ "GET / HTTP/1.0\r\n\r\n",
                                   NULL, buf, sizeof(buf), 3000),
                   H_OK);
  long rss0 = proc_kb(worker, "VmRSS");
  static int fd[N];
  static size_t sent[N], got[N];
  for (int i = 0; i < N; i++) {
    fd[i] = connect_small(port, 4096);
    fcntl(fd[i], F_SETFL, O_NONBLOCK);
    sent[i] = got[i] = 0;
  }
  /* Send until every socket is full (the worker stopped reading them) or
   * all is sent; watch the worker meanwhile and for a second after. */
  long rss_max = rss0;
  long long last_progress = h_now_ms(), deadline = h_now_ms() + 20000;
  while (h_now_ms() - last_progress < 1000 && h_now_ms() < deadline) {
    int moved = 0;
    for (int i = 0; i < N; i++) {
      if (sent[i] == total)
        continue;
      ssize_t m = send(fd[i], reqs + sent[i], total - sent[i], MSG_NOSIGNAL);
      if (m > 0) {
        sent[i] += (size_t)m;
        moved = 1;
      }
    }
    if (moved)
      last_progress = h_now_ms();
    long rss = proc_kb(worker, "VmRSS");
    rss_max = rss > rss_max ? rss : rss_max;
    poll(NULL, 0, 10);
  }
  size_t all_sent = 0;
  for (int i = 0; i < N; i++)
    all_sent += sent[i];
  double per_conn = (double)(rss_max - rss0) / N;
  fprintf(stderr,
          "figure: pipelining without reading: %d connections sent %zu KiB "
          "of requests each; worker RSS %ld -> %ld kB at most, %.1f kB per "
          "connection\n",
          N, all_sent / N / 1024, rss0, rss_max, per_conn);
#if !defined(__SANITIZE_ADDRESS__)
  /* Under ASan, RSS measures its redzones and the quarantine of freed
   * memory, not what the worker holds: the plain build checks the bound. */
  ck_assert_msg(per_conn < PIPE_BOUND_KB,
                "%.1f kB per connection (bound %d kB)", per_conn,
                PIPE_BOUND_KB);
#endif
  /* Once the clients read, every answer comes, in full. */
  size_t want = (size_t)REQS * PIPE_ANSWER_LEN;
  int done = 0;
  deadline = h_now_ms() + 60000;
  while (done < N && h_now_ms() < deadline) {
    done = 0;
    poll(NULL, 0, 1);
    for (int i = 0; i < N; i++) {
      if (sent[i] < total) {
        ssize_t m = send(fd[i], reqs + sent[i], total - sent[i], MSG_NOSIGNAL);
        if (m > 0)
          sent[i] += (size_t)m;
      }
      ssize_t m;
      while ((m = recv(fd[i], buf, sizeof(buf), 0)) > 0)
        got[i] += (size_t)m;
      done += got[i] == want;
      ck_assert_msg(got[i] <= want, "connection %d got %zu bytes", i, got[i]);
      ck_assert_msg(m != 0, "connection %d closed after %zu of %zu bytes", i,
                    got[i], want);
    }
  }
  ck_assert_msg(done == N, "only %d of %d connections got all answers", done,
                N);
  for (int i = 0; i < N; i++)
    close(fd[i]);
  free(reqs);
  h_stop_ok(&p);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_hostile_clients");
  TCase *tc = tcase_create("timeouts");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_slowloris_gets_408_after_header_timeout);
  tcase_add_test(tc, test_header_timeout_spares_a_head_that_arrives_in_time);
  tcase_add_test(tc, test_idle_timeout_closes_a_silent_connection_only);
  tcase_add_test(tc, test_send_timeout_resets_a_peer_that_does_not_read);
  tcase_add_test(tc, test_plugin_sets_timeouts_and_deadlines);
  tcase_add_test(tc, test_timeout_keys_are_checked);
  suite_add_tcase(s, tc);
  tc = tcase_create("limits");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_accept_pauses_at_the_descriptor_limit);
  tcase_add_test(tc, test_max_connections_refusals_are_counted_not_logged_each);
  tcase_add_test(tc, test_rlimit_nofile_is_raised_to_what_the_config_needs);
  tcase_add_test(tc, test_rlimit_nofile_setting_raises_the_hard_limit_as_root);
  suite_add_tcase(s, tc);
  tc = tcase_create("memory");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_pipelining_client_that_never_reads_is_bounded);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return pu_run_suite(suite()); }
