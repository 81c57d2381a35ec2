/* harness_net.c - the loopback side of harness.h: free ports, listening
 * sockets, connecting (retried, or once), and exchanges. */
#define _GNU_SOURCE
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

static const char *const result_names[] = {
#define H_NAME(e, s) s,
    H_RESULTS(H_NAME)
#undef H_NAME
};

const char *h_result_name(int r) {
  if (r < 0 || (size_t)r >= sizeof(result_names) / sizeof(result_names[0]))
    return "?";
  return result_names[r];
}

static struct sockaddr_in loopback(int port) {
  return (struct sockaddr_in){.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
}

/* Ports are handed out from below the kernel's ephemeral range
 * (32768-60999 on Linux), so no port the kernel picks for a connect() or a
 * bind(0) elsewhere can be one we hand out. Within one process a counter
 * walks the range and never hands a port out twice (bind 0, close, bind 0
 * may give the same port back, which once made CI fail); each process
 * starts at an offset drawn from its pid, so the suites ctest runs side by
 * side walk different parts of the range, and a port still taken by
 * someone else is skipped by the bind check.
 *
 * The bind check alone leaves a window: two test processes may both find
 * a port free before either aio binds it, and aio's SO_REUSEPORT sockets
 * (same uid) would then share it silently, each server answering some of
 * the other's clients. So a port handed out is also reserved across
 * processes: an flock on a file named after it, held until the process
 * that took it exits (each Check case is its own process). */
enum { PORT_LO = 20000, PORT_SPAN = 12000 };

#define PORT_LOCK_DIR "/tmp/aio-test-ports"

/* 1 when this process now holds port's reservation, 0 when another does. */
static int reserve_port(int port) {
  char path[64];
  if (mkdir(PORT_LOCK_DIR, 01777) < 0 && errno != EEXIST)
    return 1; /* no reservations possible: the bind check only */
  snprintf(path, sizeof(path), PORT_LOCK_DIR "/%d", port);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0)
    return 1;
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    close(fd);
    return 0;
  }
  return 1; /* fd stays open: the lock goes with this process */
}

int h_free_port(void) {
  static pid_t owner;
  static unsigned next;
  if (owner != getpid()) { /* a forked Check case starts its own walk */
    owner = getpid();
    next = ((unsigned)owner * 997u) % PORT_SPAN;
  }
  /* A port free for both TCP and UDP. */
  for (int tries = 0; tries < PORT_SPAN; tries++) {
    int port = PORT_LO + (int)(next++ % PORT_SPAN);
    struct sockaddr_in sin = loopback(port);
    int t = socket(AF_INET, SOCK_STREAM, 0);
    int ok = t >= 0 && bind(t, (struct sockaddr *)&sin, sizeof(sin)) == 0;
    if (ok) {
      int u = socket(AF_INET, SOCK_DGRAM, 0);
      ok = u >= 0 && bind(u, (struct sockaddr *)&sin, sizeof(sin)) == 0;
      if (u >= 0)
        close(u);
    }
    if (t >= 0)
      close(t);
    if (ok && reserve_port(port))
      return port;
  }
  abort();
}

int h_listen_tcp(int *port, int reuseport) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in sin = loopback(*port);
  socklen_t sl = sizeof(sin);
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
      (reuseport &&
       setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
      bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
      listen(fd, 128) < 0 ||
      getsockname(fd, (struct sockaddr *)&sin, &sl) < 0) {
    close(fd);
    return -1;
  }
  *port = ntohs(sin.sin_port);
  return fd;
}

/* The outcome of a connect that is under way on fd: 0 or an errno. */
static int connect_outcome(int fd, int timeout_ms) {
  long long deadline = h_now_ms() + (timeout_ms > 0 ? timeout_ms : 5000);
  for (;;) {
    long long left = deadline - h_now_ms();
    if (left <= 0)
      return ETIMEDOUT;
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    int r = poll(&pfd, 1, (int)left);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return errno;
    if (r == 0)
      return ETIMEDOUT;
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
      return errno;
    return err;
  }
}

/* One connect, no retry: the fd, or -errno. A send timeout (when
 * timeout_ms > 0) bounds a connect the listener does not answer. */
static int connect_once(const struct sockaddr *sa, socklen_t sl,
                        int timeout_ms) {
  int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  if (timeout_ms > 0) {
    struct timeval tv = {.tv_sec = timeout_ms / 1000,
                         .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  }
  if (connect(fd, sa, sl) < 0) {
    int err = errno;
    /* Interrupted (with a send timeout set, even a stop and continue of
     * this process does it, see signal(7)): the handshake goes on in the
     * kernel. Wait for its outcome instead of calling it a failure. */
    if (err == EINTR)
      err = connect_outcome(fd, timeout_ms);
    if (err != 0) {
      close(fd);
      return -err;
    }
  }
  if (sa->sa_family == AF_INET) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  return fd;
}

/* connect_once until it works or timeout_ms has passed. */
static int connect_retry(const struct sockaddr *sa, socklen_t sl,
                         int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  for (;;) {
    int fd = connect_once(sa, sl, 0);
    if (fd >= 0)
      return fd;
    if (h_now_ms() > deadline)
      return -1;
    usleep(10000);
  }
}

int h_connect(int port, int timeout_ms) {
  struct sockaddr_in sin = loopback(port);
  return connect_retry((struct sockaddr *)&sin, sizeof(sin), timeout_ms);
}

int h_connect_unix(const char *path, int timeout_ms) {
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
  return connect_retry((struct sockaddr *)&sun, sizeof(sun), timeout_ms);
}

int h_send(int fd, const char *s, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    s += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Wait for fd to be readable until deadline: 1, 0 on timeout. */
static int readable(int fd, long long deadline) {
  for (;;) {
    long long left = deadline - h_now_ms();
    if (left <= 0)
      return 0;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int r = poll(&pfd, 1, (int)left);
    if (r > 0)
      return 1;
    if (r < 0 && errno != EINTR)
      return 0;
  }
}

/* Read into buf (NUL-terminated, *have bytes) until `until` appears (NULL:
 * until EOF). Returns how it ended, H_OK when it got what it waited for. */
static int recv_until(int fd, char *buf, size_t n, const char *until,
                      long long deadline, size_t *have) {
  *have = 0;
  buf[0] = '\0';
  for (;;) {
    if (until && strstr(buf, until))
      return H_OK;
    if (*have >= n - 1)
      return H_ERROR;
    if (!readable(fd, deadline))
      return H_TIMEOUT;
    ssize_t got = recv(fd, buf + *have, n - 1 - *have, 0);
    if (got < 0 && errno == EINTR)
      continue;
    if (got == 0)
      return until ? H_CLOSED : H_OK;
    if (got < 0)
      return errno == ECONNRESET ? H_RESET : H_ERROR;
    *have += (size_t)got;
    buf[*have] = '\0';
  }
}

int h_recv_until(int fd, char *buf, size_t n, const char *until,
                 int timeout_ms) {
  size_t have;
  int r = recv_until(fd, buf, n, until, h_now_ms() + timeout_ms, &have);
  if ((r == H_RESET || r == H_ERROR) && have == 0)
    return -1;
  return (int)have;
}

static _Thread_local int last_errno;

int h_exchange_errno(void) { return last_errno; }

int h_exchange_once(int port, const char *req, const char *until, char *buf,
                    size_t n, int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  buf[0] = '\0';
  last_errno = 0;
  struct sockaddr_in sin = loopback(port);
  int fd = connect_once((struct sockaddr *)&sin, sizeof(sin), timeout_ms);
  if (fd < 0) {
    last_errno = -fd;
    return fd == -ECONNREFUSED                      ? H_REFUSED
           : fd == -EINPROGRESS || fd == -ETIMEDOUT ? H_TIMEOUT
                                                    : H_ERROR;
  }
  int r;
  size_t have;
  errno = 0;
  if (h_send(fd, req, strlen(req)) < 0)
    r = errno == ECONNRESET || errno == EPIPE ? H_RESET : H_ERROR;
  else
    r = recv_until(fd, buf, n, until, deadline, &have);
  if (r != H_OK)
    last_errno = errno;
  close(fd);
  return r;
}

int h_read_eof(int fd, int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  char buf[256];
  while (readable(fd, deadline)) {
    ssize_t got = recv(fd, buf, sizeof(buf), 0);
    if (got < 0 && errno == EINTR)
      continue;
    return got == 0 ? 0 : -1;
  }
  return -1;
}

char *h_udp_exchange(int port, const char *req, int timeout_ms) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = loopback(port);
  char buf[65536];
  long long deadline = h_now_ms() + timeout_ms;
  /* UDP may be dropped: resend until answered or out of time. */
  while (h_now_ms() < deadline) {
    sendto(fd, req, strlen(req), 0, (struct sockaddr *)&sin, sizeof(sin));
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, 200) > 0) {
      ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
      if (n >= 0) {
        buf[n] = '\0';
        close(fd);
        return strdup(buf);
      }
    }
  }
  close(fd);
  return NULL;
}
