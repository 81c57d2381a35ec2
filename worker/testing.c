/*
 * testing.c - the harness for module tests run by `aio test`
 * (AIO_MODULE(.tests = ...)): aio_test_serve() serves a protocol on an
 * ephemeral loopback port from a background thread that has a libuv loop
 * and a struct worker of its own, so the runtime (conn.c, server.c) runs
 * there exactly as in a worker process; aio_test_exchange() is the client
 * side; aio_config_get() answers from the configuration the suites run
 * with, whose listeners are resolved here for worker/testing_loop.c (the
 * test's own loop, and what aio_emit() runs).
 *
 * `aio test` runs each test in a child it forks (Check's CK_FORK), so a
 * server belongs to the test that started it and dies with it at the
 * latest.
 */
#define _GNU_SOURCE
#include "testing.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app.h"
#include "bus.h"
#include "loader.h"
#include "log.h"
#include "server.h"
#include "util.h"
#include "worker.h"

/* aio_test_exchange() reading until the peer closes keeps at most this. */
#define TESTING_MAX_REPLY (16u << 20)

/* One aio_test_serve(): a worker of its own in a thread of its own. */
struct tserver {
  struct worker w;
  struct wserver srv;
  struct server_conf conf;
  uv_async_t stop;
  pthread_t tid;
  int closing; /* the loop ended; `stop` may be closed (under T.lock) */
  struct tserver *next;
};

static struct {
  pthread_mutex_t lock; /* servers, closing, the loader */
  struct app *app;
  struct loader *loader;
  const aio_decl_t **listeners; /* app->s.listeners, resolved */
  struct tserver *servers;
  int atexit_done;
} T = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* ---- the configuration ------------------------------------------------- */

int testing_attach(struct app *app, struct loader *l) {
  const struct settings *s = &app->s;
  struct diag d;
  diag_init(&d);
  T.listeners = calloc(s->nlisteners + 1, sizeof(*T.listeners));
  if (T.listeners == NULL)
    return -1;
  for (size_t i = 0; i < s->nlisteners; i++)
    T.listeners[i] =
        loader_resolve(l, &s->listeners[i].fn, AIO_KIND_LISTENER, &d);
  for (size_t i = 0; i < d.n; i++)
    log_error("%s", d.msgs[i]);
  int rc = diag_failed(&d) ? -1 : 0;
  diag_close(&d);
  T.app = app;
  T.loader = l;
  testing_loop_attach();
  loader_set_process(l);
  return rc;
}

void testing_detach(void) {
  aio_test_stop();
  testing_loop_detach();
  free(T.listeners);
  T.listeners = NULL;
  T.app = NULL;
  T.loader = NULL;
  loader_set_process(NULL);
}

const struct app *testing_app(void) { return T.app; }

const aio_decl_t *testing_listener(size_t i) {
  return T.app && i < T.app->s.nlisteners ? T.listeners[i] : NULL;
}

/* ---- serving ----------------------------------------------------------- */

static void on_stop(uv_async_t *h) { uv_stop(h->loop); }

static void *serve_thread(void *arg) {
  struct tserver *t = arg;
  worker_self = &t->w;
  uv_run(&t->w.loop, UV_RUN_DEFAULT);
  pthread_mutex_lock(&T.lock);
  t->closing = 1;
  pthread_mutex_unlock(&T.lock);
  server_stop_accepting(&t->srv); /* and its socket with it */
  worker_close_loop(&t->w);
  worker_self = NULL;
  return NULL;
}

static void tserver_free(struct tserver *t) {
  settings_ref_close(&t->conf.handler);
  free(t);
}

static void stop_at_exit(void) { aio_test_stop(); }

/* The symbol `text` refers to, loading (and initialising) its module when
 * the configuration did not name it. Borrowed, or NULL (logged). With
 * T.lock held. */
static const aio_decl_t *resolve(const char *text, struct ref *ref,
                                 aio_kind_t kind, const char *what) {
  struct diag d;
  diag_init(&d);
  const aio_decl_t *decl = NULL;
  if (settings_parse_ref(ref, text, what, 0, &d) == 0 &&
      (loader_find_module(T.loader, ref->module) ||
       (loader_load(T.loader, &T.app->s, ref->module, what, 0, &d) &&
        loader_init(T.loader, &d) == 0)))
    decl = loader_resolve(T.loader, ref, kind, &d);
  for (size_t i = 0; i < d.n; i++)
    log_error("%s", d.msgs[i]);
  diag_close(&d);
  return decl;
}

const aio_decl_t *testing_resolve(const char *text, struct ref *ref,
                                  aio_kind_t kind, const char *what) {
  pthread_mutex_lock(&T.lock);
  const aio_decl_t *decl = T.app ? resolve(text, ref, kind, what) : NULL;
  pthread_mutex_unlock(&T.lock);
  return decl;
}

/* A listening TCP socket, or a bound UDP one, on 127.0.0.1 and a port the
 * kernel picked. */
static int listen_loopback(int *port, int udp) {
  int fd = socket(AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t slen = sizeof(sa);
  if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
      (!udp && listen(fd, SOMAXCONN) < 0) ||
      getsockname(fd, (struct sockaddr *)&sa, &slen) < 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  *port = ntohs(sa.sin_port);
  return fd;
}

/* The [server:NAME] of the configuration that serves this protocol, so that
 * aio_conn_server() and lookups by that name work, and its timeouts apply,
 * as in production. NULL when there is none. */
static const struct server_conf *configured(const char *protocol) {
  const struct settings *s = &T.app->s;
  for (size_t i = 0; i < s->nservers; i++)
    if (!s->servers[i].is_factory && s->servers[i].handler.text &&
        strcmp(s->servers[i].handler.text, protocol) == 0)
      return &s->servers[i];
  return NULL;
}

/* Start t's server on fd and its thread. 0 or a negative errno; on failure
 * everything but t itself is released. */
static int tserver_start(struct tserver *t, int fd) {
  struct worker *w = &t->w;
  int err = uv_loop_init(&w->loop);
  if (err) {
    close(fd);
    return err;
  }
  w->slot = -1;
  w->app = T.app;
  w->loader = T.loader;
  w->in_test = 1;
  w->servers = &t->srv;
  w->nservers = 1;
  t->srv.w = w;
  t->srv.conf = &t->conf;
  t->srv.fd = fd;
  /* A UDP endpoint is made (and its connection_made run) here, before the
   * thread: as in a worker, that code sees its worker and loop. */
  struct worker *caller = worker_self;
  worker_self = w;
  err = server_start(&t->srv);
  worker_self = caller;
  if (err && !t->srv.listening)
    close(fd); /* libuv did not adopt it */
  if (err == 0)
    err = uv_async_init(&w->loop, &t->stop, on_stop);
  if (err == 0) {
    /* Signals are for the test's own thread; a SIGPIPE from a write to a
     * peer that left stays pending here and the write fails with EPIPE.
     * A protocol's own faults still end the test, as they end a worker. */
    static const int faults[] = {SIGSEGV, SIGBUS,  SIGFPE, SIGILL,
                                 SIGABRT, SIGTRAP, SIGSYS};
    sigset_t all, old;
    sigfillset(&all);
    for (size_t i = 0; i < UTIL_ARRAY_LEN(faults); i++)
      sigdelset(&all, faults[i]);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = -pthread_create(&t->tid, NULL, serve_thread, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  if (err)
    worker_close_loop(w); /* no connection can exist yet */
  return err;
}

static int test_serve(const char *protocol, int udp) {
  if (protocol == NULL)
    return -EINVAL;
  pthread_mutex_lock(&T.lock);
  int rc;
  struct tserver *t = NULL;
  if (T.app == NULL) {
    log_error("aio_test_serve(\"%s\"): only a test run by `aio test` can "
              "serve a protocol",
              protocol);
    rc = -ENOTSUP;
    goto out;
  }
  t = calloc(1, sizeof(*t));
  if (t == NULL) {
    rc = -ENOMEM;
    goto out;
  }
  t->srv.decl =
      resolve(protocol, &t->conf.handler, AIO_KIND_PROTOCOL, "aio_test_serve");
  if (t->srv.decl == NULL) {
    rc = t->conf.handler.text ? -ENOENT : -EINVAL;
    goto out;
  }
  int port = 0, fd = listen_loopback(&port, udp);
  if (fd < 0) {
    rc = fd;
    log_error("aio_test_serve(\"%s\"): cannot listen on 127.0.0.1: %s",
              protocol, strerror(-fd));
    goto out;
  }
  const struct server_conf *sc = configured(protocol);
  t->conf.name = sc ? sc->name : (char *)"test";
  t->conf.idle_timeout = sc ? sc->idle_timeout : SETTINGS_IDLE_TIMEOUT;
  t->conf.send_timeout = sc ? sc->send_timeout : SETTINGS_SEND_TIMEOUT;
  t->conf.header_timeout = sc ? sc->header_timeout : SETTINGS_HEADER_TIMEOUT;
  t->conf.type = udp ? SERVER_UDP : SERVER_TCP;
  t->conf.address = "127.0.0.1";
  t->conf.port = port;
  t->conf.backlog = SOMAXCONN;
  t->conf.file = "aio_test_serve";
  rc = tserver_start(t, fd);
  if (rc) {
    log_error("aio_test_serve(\"%s\"): %s", protocol, strerror(-rc));
    goto out;
  }
  t->next = T.servers;
  T.servers = t;
  t = NULL;
  rc = port;
  /* A test that does not stop its servers still gets connection_lost for
   * every connection and a clean exit. */
  if (!T.atexit_done)
    T.atexit_done = atexit(stop_at_exit) == 0;
out:
  if (t)
    tserver_free(t);
  pthread_mutex_unlock(&T.lock);
  return rc;
}

int aio_test_serve(const char *protocol) { return test_serve(protocol, 0); }

int aio_test_serve_udp(const char *protocol) { return test_serve(protocol, 1); }

void aio_test_stop(void) {
  pthread_mutex_lock(&T.lock);
  struct tserver *t = T.servers, *next;
  T.servers = NULL;
  for (struct tserver *s = t; s; s = s->next)
    if (!s->closing)
      uv_async_send(&s->stop);
  pthread_mutex_unlock(&T.lock);
  for (; t; t = next) {
    next = t->next;
    pthread_join(t->tid, NULL);
    tserver_free(t);
  }
}

/* ---- the client side --------------------------------------------------- */

/* Wait for `events` on fd until deadline. 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, uint64_t deadline) {
  for (;;) {
    uint64_t now = util_now_ms();
    if (now >= deadline)
      return 0;
    struct pollfd p = {.fd = fd, .events = events};
    int n = poll(&p, 1, (int)(deadline - now));
    if (n > 0)
      return 1;
    if (n < 0 && errno != EINTR)
      return -1;
  }
}

static int connect_loopback(int port, uint64_t deadline) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int err = 0;
  socklen_t elen = sizeof(err);
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
    return fd;
  if (errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline) == 1 &&
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == 0)
    return fd;
  close(fd);
  return -1;
}

static int send_all(int fd, const char *s, size_t len, uint64_t deadline) {
  while (len > 0) {
    ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
    if (n > 0) {
      s += n;
      len -= (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {
      if (wait_fd(fd, POLLOUT, deadline) != 1)
        return -1;
    } else {
      return -1;
    }
  }
  return 0;
}

char *aio_test_exchange(int port, const char *request, size_t expect_len,
                        int timeout_ms) {
  if (port <= 0 || port > 65535)
    return NULL;
  uint64_t deadline =
      util_now_ms() + (timeout_ms > 0 ? (uint64_t)timeout_ms : 0);
  int fd = connect_loopback(port, deadline);
  if (fd < 0)
    return NULL;
  if (request && send_all(fd, request, strlen(request), deadline) < 0) {
    close(fd);
    return NULL;
  }
  /* Empty, not NULL, when nothing arrived: the test's string comparison
   * then says what was expected. */
  struct util_buf b = {0};
  util_buf_add(&b, "", 0);
  char chunk[16384];
  while ((expect_len == 0 || b.len < expect_len) && b.len < TESTING_MAX_REPLY &&
         !b.failed && wait_fd(fd, POLLIN, deadline) == 1) {
    size_t room = sizeof(chunk);
    if (expect_len && expect_len - b.len < room)
      room = expect_len - b.len; /* exactly expect_len, not a byte more */
    ssize_t n = recv(fd, chunk, room, 0);
    if (n > 0)
      util_buf_add(&b, chunk, (size_t)n);
    else if (n == 0 || (errno != EINTR && errno != EAGAIN))
      break; /* the peer closed (or reset): what arrived is the answer */
  }
  close(fd);
  if (b.failed) {
    free(b.data);
    return NULL;
  }
  return b.data;
}

char *aio_test_datagram(int port, const char *request, int timeout_ms) {
  if (port <= 0 || port > 65535)
    return NULL;
  uint64_t deadline =
      util_now_ms() + (timeout_ms > 0 ? (uint64_t)timeout_ms : 0);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return NULL;
  /* Connected: only the server's answers are read, and an ICMP "port
   * unreachable" (no server) fails the receive at once. */
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  const char *req = request ? request : "";
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
      send(fd, req, strlen(req), MSG_NOSIGNAL) < 0) {
    close(fd);
    return NULL;
  }
  char datagram[65536]; /* the largest a UDP datagram can be */
  struct util_buf b = {0};
  util_buf_add(&b, "", 0);
  while (!b.failed && wait_fd(fd, POLLIN, deadline) == 1) {
    ssize_t n = recv(fd, datagram, sizeof(datagram), 0);
    if (n >= 0) {
      util_buf_add(&b, datagram, (size_t)n);
      break; /* one datagram is the answer */
    }
    if (errno != EINTR && errno != EAGAIN) {
      close(fd);
      free(b.data);
      return NULL; /* refused: nothing listens there */
    }
  }
  close(fd);
  if (b.failed) {
    free(b.data);
    return NULL;
  }
  return b.data;
}
