/*
 * metrics_http.c - the [aio] metrics endpoint on the master's loop (see
 * metrics.c for its bounds): GET /metrics and GET /healthz, one answer
 * per connection.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "counters.h"
#include "log.h"
#include "master.h"
#include "metrics_int.h"
#include "settings.h"
#include "util.h"
#define METRICS_HEAD_MAX 8192
#define METRICS_TIMEOUT_MS 5000
#define METRICS_MAX_CLIENTS 32
#define METRICS_SWEEP_MS 250

enum client_state { CL_READING, CL_WRITING, CL_DRAINING };

/* A TCP or a unix stream: the endpoint may be either. */
union mstream {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
};

struct mclient {
  union mstream h;
  struct metrics *mt;
  enum client_state state;
  uint64_t deadline_ms;
  uv_write_t wreq;
  uv_shutdown_t sreq;
  char *out; /* the answer being written (owned) */
  struct mclient *prev, *next;
  size_t len;
  char head[METRICS_HEAD_MAX];
};

/* One listening socket; a reload to another address swaps it. */
struct listener {
  union mstream h;
  struct metrics *mt;
  char *addr;      /* as configured (owned) */
  char *unix_path; /* to unlink at close, or NULL (owned) */
};

/* ---- the endpoint -------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h);

static void metrics_release(struct metrics *mt) {
  if (--mt->handles > 0 || !mt->closed)
    return;
  for (size_t i = 0; i < mt->ntotals; i++)
    free(mt->totals[i].server);
  free(mt->totals);
  free(mt->bus);
  free(mt);
}

static void on_client_closed(uv_handle_t *h) {
  struct mclient *c = h->data;
  struct metrics *mt = c->mt;
  if (c->prev)
    c->prev->next = c->next;
  else
    mt->clients = c->next;
  if (c->next)
    c->next->prev = c->prev;
  mt->nclients--;
  free(c->out);
  free(c);
  metrics_release(mt);
}

static void client_close(struct mclient *c) {
  if (!uv_is_closing(&c->h.handle))
    uv_close(&c->h.handle, on_client_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct mclient *c = h->data;
  (void)suggested;
  static char discard[4096];
  if (c->state == CL_READING && c->len < sizeof(c->head)) {
    buf->base = c->head + c->len;
    buf->len = sizeof(c->head) - c->len;
  } else {
    buf->base = discard; /* after the answer: read to the peer's close */
    buf->len = sizeof(discard);
  }
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  struct mclient *c = req->data;
  if (status < 0)
    client_close(c);
  /* else: the peer closes, or the deadline comes */
}

static void on_written(uv_write_t *req, int status) {
  struct mclient *c = req->data;
  free(c->out);
  c->out = NULL;
  if (status < 0 || uv_is_closing(&c->h.handle)) {
    client_close(c);
    return;
  }
  /* Closing with unread input would reset the connection and could cost
   * the peer the answer: send FIN, read what it still sends until it
   * closes (or the deadline). */
  c->state = CL_DRAINING;
  c->sreq.data = c;
  if (uv_shutdown(&c->sreq, &c->h.stream, on_shutdown))
    client_close(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Answer with status, the body (may be NULL) and its type, once. */
static void respond(struct mclient *c, int code, const char *reason,
                    const char *type, const struct util_buf *body, int head,
                    const char *extra) {
  struct util_buf out = {0};
  size_t blen = body ? body->len : 0;
  util_buf_printf(&out,
                  "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                  "Content-Length: %zu\r\nCache-Control: no-store\r\n"
                  "%sConnection: close\r\n\r\n",
                  code, reason, type, blen, extra ? extra : "");
  if (body && !head)
    util_buf_add(&out, body->data, blen);
  uv_read_stop(&c->h.stream);
  if (out.failed) {
    free(out.data);
    client_close(c);
    return;
  }
  c->state = CL_WRITING;
  c->out = out.data;
  c->wreq.data = c;
  uv_buf_t b = uv_buf_init(out.data, (unsigned)out.len);
  if (uv_write(&c->wreq, &c->h.stream, &b, 1, on_written)) {
    free(c->out);
    c->out = NULL;
    client_close(c);
    return;
  }
  /* Reading resumes only to drain once the answer is out. */
  uv_read_start(&c->h.stream, on_alloc, on_read);
}

static void respond_text(struct mclient *c, int code, const char *reason,
                         const char *text, int head, const char *extra) {
  struct util_buf b = {0};
  util_buf_add(&b, text, strlen(text));
  respond(c, code, reason, "text/plain; charset=utf-8", &b, head, extra);
  free(b.data);
}

static void handle_request(struct mclient *c) {
  struct master *m = c->mt->m;
  /* "METHOD SP TARGET SP HTTP/x.y" */
  char *sp1 = memchr(c->head, ' ', c->len);
  char *eol = memchr(c->head, '\n', c->len);
  char *sp2 = sp1 && eol ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
  if (sp1 == NULL || sp2 == NULL || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
    c->mt->bad++;
    respond_text(c, 400, "Bad Request", "bad request\n", 0, NULL);
    return;
  }
  size_t mlen = (size_t)(sp1 - c->head), tlen = (size_t)(sp2 - sp1 - 1);
  const char *target = sp1 + 1;
  size_t plen = tlen;
  const char *q = memchr(target, '?', tlen);
  if (q)
    plen = (size_t)(q - target);
  int get = mlen == 3 && memcmp(c->head, "GET", 3) == 0;
  int head = mlen == 4 && memcmp(c->head, "HEAD", 4) == 0;
  c->mt->requests++;
  if (!get && !head) {
    respond_text(c, 405, "Method Not Allowed", "GET or HEAD\n", 0,
                 "Allow: GET, HEAD\r\n");
    return;
  }
  if (plen == 8 && memcmp(target, "/metrics", 8) == 0) {
    struct util_buf b = {0};
    expose(&b, m);
    if (b.failed)
      respond_text(c, 500, "Internal Server Error", "out of memory\n", head,
                   NULL);
    else
      respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", &b,
              head, NULL);
    free(b.data);
  } else if (plen == 8 && memcmp(target, "/healthz", 8) == 0) {
    if (any_serves(m))
      respond_text(c, 200, "OK", "ok\n", head, NULL);
    else
      respond_text(c, 503, "Service Unavailable", "no worker is serving\n",
                   head, NULL);
  } else {
    respond_text(c, 404, "Not Found", "/metrics or /healthz\n", head, NULL);
  }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct mclient *c = s->data;
  (void)buf;
  if (nread == 0)
    return;
  if (nread < 0) {
    client_close(c);
    return;
  }
  if (c->state != CL_READING)
    return; /* draining after the answer */
  size_t from = c->len > 3 ? c->len - 3 : 0;
  c->len += (size_t)nread;
  /* The end of the head: an empty line (bare LF tolerated). */
  for (size_t i = from; i < c->len; i++)
    if (c->head[i] == '\n' &&
        ((i >= 1 && c->head[i - 1] == '\n') ||
         (i >= 2 && c->head[i - 1] == '\r' && c->head[i - 2] == '\n'))) {
      handle_request(c);
      return;
    }
  if (c->len >= sizeof(c->head)) {
    c->mt->too_large++;
    respond_text(c, 431, "Request Header Fields Too Large",
                 "request head over 8 KiB\n", 0, NULL);
  }
}

/* At the bound: close the oldest client still sending its request. */
static int evict_one(struct metrics *mt) {
  struct mclient *oldest = NULL;
  for (struct mclient *c = mt->clients; c; c = c->next)
    if (c->state == CL_READING && !uv_is_closing(&c->h.handle) &&
        (oldest == NULL || c->deadline_ms <= oldest->deadline_ms))
      oldest = c;
  if (oldest == NULL)
    return 0;
  mt->evicted++;
  client_close(oldest);
  return 1;
}

static void on_connection(uv_stream_t *server, int status) {
  struct listener *l = server->data;
  struct metrics *mt = l->mt;
  if (status < 0)
    return;
  struct mclient *c = malloc(sizeof(*c));
  if (c == NULL)
    return;
  memset(c, 0, offsetof(struct mclient, head));
  c->mt = mt;
  int err = server->type == UV_TCP ? uv_tcp_init(mt->m->loop, &c->h.tcp)
                                   : uv_pipe_init(mt->m->loop, &c->h.pipe, 0);
  if (err) {
    free(c);
    return;
  }
  c->h.handle.data = c;
  c->next = mt->clients;
  if (mt->clients)
    mt->clients->prev = c;
  mt->clients = c;
  mt->nclients++;
  mt->handles++;
  c->deadline_ms = uv_now(mt->m->loop) + METRICS_TIMEOUT_MS;
  if (uv_accept(server, &c->h.stream)) {
    client_close(c);
    return;
  }
  size_t live = 0;
  for (struct mclient *o = mt->clients; o; o = o->next)
    live += !uv_is_closing(&o->h.handle);
  if (live > METRICS_MAX_CLIENTS && !evict_one(mt)) {
    mt->refused++;
    client_close(c);
    return;
  }
  if (uv_read_start(&c->h.stream, on_alloc, on_read))
    client_close(c);
}

static void on_sweep(uv_timer_t *t) {
  struct metrics *mt = t->data;
  uint64_t now = uv_now(mt->m->loop);
  for (struct mclient *c = mt->clients; c; c = c->next)
    if (!uv_is_closing(&c->h.handle) && now >= c->deadline_ms) {
      if (c->state != CL_DRAINING)
        mt->timed_out++; /* one that has its whole answer is no fault */
      client_close(c);
    }
}

static void on_handle_closed(uv_handle_t *h) {
  struct metrics *mt = h->data;
  metrics_release(mt);
}

static void on_listener_closed(uv_handle_t *h) {
  struct listener *l = h->data;
  struct metrics *mt = l->mt;
  if (l->unix_path)
    unlink(l->unix_path);
  free(l->unix_path);
  free(l->addr);
  free(l);
  metrics_release(mt);
}

static void listener_close(struct listener *l) {
  if (l && !uv_is_closing(&l->h.handle))
    uv_close(&l->h.handle, on_listener_closed);
}

/* Listen on addr. 0 with *out, or a negative errno (logged). */
static int listener_open(struct metrics *mt, const char *addr,
                         struct listener **out) {
  struct settings_endpoint ep;
  if (settings_parse_endpoint(addr, &ep)) {
    log_error("[aio] metrics: '%s' is not an address", addr);
    return -EINVAL;
  }
  struct listener *l = calloc(1, sizeof(*l));
  if (l == NULL || (l->addr = strdup(addr)) == NULL) {
    free(l);
    return -ENOMEM;
  }
  l->mt = mt;
  uv_loop_t *loop = mt->m->loop;
  int err;
  if (ep.unix_path) {
    uv_pipe_init(loop, &l->h.pipe, 0);
    /* A socket left by a master that died is taken over; one that
     * answers belongs to a running master, and is not. */
    struct stat st;
    if (lstat(ep.path, &st) == 0 && S_ISSOCK(st.st_mode)) {
      int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      struct sockaddr_un sun = {.sun_family = AF_UNIX};
      memcpy(sun.sun_path, ep.path, strlen(ep.path) + 1);
      int alive =
          fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
      if (fd >= 0)
        close(fd);
      if (!alive)
        unlink(ep.path);
    }
    err = uv_pipe_bind(&l->h.pipe, ep.path);
    if (err == 0)
      l->unix_path = strdup(ep.path);
  } else {
    struct sockaddr_storage ss;
    uv_tcp_init(loop, &l->h.tcp);
    err = ep.ipv6 ? uv_ip6_addr(ep.host, ep.port, (struct sockaddr_in6 *)&ss)
                  : uv_ip4_addr(ep.host, ep.port, (struct sockaddr_in *)&ss);
    if (err == 0)
      err = uv_tcp_bind(&l->h.tcp, (struct sockaddr *)&ss,
                        ep.ipv6 ? UV_TCP_IPV6ONLY : 0);
  }
  l->h.handle.data = l;
  if (err == 0)
    err = uv_listen(&l->h.stream, 64, on_connection);
  mt->handles++;
  if (err) {
    log_error("[aio] metrics: cannot listen on %s: %s", addr, uv_strerror(err));
    listener_close(l);
    return err;
  }
  log_info("metrics on %s (GET /metrics, /healthz)", addr);
  *out = l;
  return 0;
}

int metrics_open(struct master *m) {
  struct metrics *mt = calloc(1, sizeof(*mt));
  if (mt == NULL)
    return -ENOMEM;
  mt->m = m;
  mt->started = time(NULL);
  m->metrics = mt;
  uv_timer_init(m->loop, &mt->sweep);
  mt->sweep.data = mt;
  mt->handles = 1;
  const char *addr = m->gen->app.s.metrics;
  if (addr == NULL)
    return 0;
  int err = listener_open(mt, addr, &mt->lst);
  if (err)
    return err;
  uv_timer_start(&mt->sweep, on_sweep, METRICS_SWEEP_MS, METRICS_SWEEP_MS);
  return 0;
}

void metrics_reloaded(struct master *m) {
  struct metrics *mt = m->metrics;
  if (mt == NULL)
    return;
  const char *want = m->gen->app.s.metrics;
  const char *have = mt->lst ? mt->lst->addr : NULL;
  if ((want == NULL && have == NULL) ||
      (want && have && strcmp(want, have) == 0))
    return;
  struct listener *l = NULL;
  if (want && listener_open(mt, want, &l)) {
    log_error("[aio] metrics: still serving on %s", have ? have : "nothing");
    return;
  }
  listener_close(mt->lst);
  mt->lst = l;
  if (l == NULL)
    log_info("metrics: off");
  if (l)
    uv_timer_start(&mt->sweep, on_sweep, METRICS_SWEEP_MS, METRICS_SWEEP_MS);
  else
    uv_timer_stop(&mt->sweep);
}

void metrics_close(struct master *m) {
  struct metrics *mt = m->metrics;
  if (mt == NULL)
    return;
  m->metrics = NULL;
  mt->closed = 1;
  listener_close(mt->lst);
  mt->lst = NULL;
  for (struct mclient *c = mt->clients; c; c = c->next)
    client_close(c);
  uv_close((uv_handle_t *)&mt->sweep, on_handle_closed);
}

json_t *metrics_endpoint_status(const struct master *m) {
  const struct metrics *mt = m->metrics;
  if (mt == NULL || mt->lst == NULL)
    return json_null();
  return json_pack(
      "{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "address", mt->lst->addr, "clients",
      (json_int_t)mt->nclients, "requests", (json_int_t)mt->requests,
      "too_large", (json_int_t)mt->too_large, "timed_out",
      (json_int_t)mt->timed_out, "evicted", (json_int_t)mt->evicted, "refused",
      (json_int_t)mt->refused, "bad", (json_int_t)mt->bad);
}
