/*
 * builtin.c - the built-in module `aio`: aio.echo (TCP, unix and UDP echo)
 * and aio.hello (a minimal HTTP/1.1 responder: keep-alive, pipelining,
 * Connection: close, always 200, 408 after [server:NAME] header_timeout;
 * the health endpoint and the benchmark peer of nginx's `return 200`).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aio.h"
#include "http.h"
#include "loader.h"
#include "settings.h"

/* The built-in declarations are reached through builtin_decls[], never by
 * name: keep them out of the binary's dynamic symbols, where they would
 * clash with a module's own `echo` or `hello`. */
#undef AIO_EXPORT
#define AIO_EXPORT __attribute__((visibility("hidden")))

/* ---- echo ---------------------------------------------------------------- */

static void echo_data(aio_conn_t *c, const char *data, size_t len) {
  aio_write(c, data, len);
}

static void echo_datagram(aio_conn_t *c, const char *data, size_t len,
                          const struct sockaddr *addr) {
  aio_sendto(c, data, len, addr);
}

AIO_PROTOCOL(echo, .data_received = echo_data,
             .datagram_received = echo_datagram);

/* ---- hello --------------------------------------------------------------- */

/* Answers queued per connection, at most. What a client that pipelines
 * without reading is owed beyond it is kept as a count (runs of one
 * answer), not as bytes, and its reading pauses until the queue drains:
 * such a client costs a few KiB, not a socket buffer's worth of answers. */
#define HELLO_QUEUE_MAX 16384
#define HELLO_BODY "Hello, World!\n"

static const char resp_keep[] = "HTTP/1.1 200 OK\r\n"
                                "Server: aio\r\n"
                                "Content-Type: text/plain\r\n"
                                "Content-Length: 14\r\n"
                                "\r\n" HELLO_BODY;
static const char resp_close[] = "HTTP/1.1 200 OK\r\n"
                                 "Server: aio\r\n"
                                 "Content-Type: text/plain\r\n"
                                 "Content-Length: 14\r\n"
                                 "Connection: close\r\n"
                                 "\r\n" HELLO_BODY;
static const char resp_400[] = "HTTP/1.1 400 Bad Request\r\n"
                               "Server: aio\r\n"
                               "Content-Length: 0\r\n"
                               "Connection: close\r\n\r\n";
static const char resp_408[] = "HTTP/1.1 408 Request Timeout\r\n"
                               "Server: aio\r\n"
                               "Content-Length: 0\r\n"
                               "Connection: close\r\n\r\n";
static const char resp_431[] =
    "HTTP/1.1 431 Request Header Fields Too Large\r\n"
    "Server: aio\r\n"
    "Content-Length: 0\r\n"
    "Connection: close\r\n\r\n";

/* X(kind, text, length, ends the connection) */
#define BODY_LEN (sizeof(HELLO_BODY) - 1)
#define HELLO_ANSWERS(X)                                                       \
  X(ANS_KEEP, resp_keep, sizeof(resp_keep) - 1, 0)                             \
  X(ANS_KEEP_HEAD, resp_keep, sizeof(resp_keep) - 1 - BODY_LEN, 0)             \
  X(ANS_CLOSE, resp_close, sizeof(resp_close) - 1, 1)                          \
  X(ANS_CLOSE_HEAD, resp_close, sizeof(resp_close) - 1 - BODY_LEN, 1)          \
  X(ANS_400, resp_400, sizeof(resp_400) - 1, 1)                                \
  X(ANS_431, resp_431, sizeof(resp_431) - 1, 1)

enum answer {
#define ANS_ENUM(k, text, len, ends) k,
  HELLO_ANSWERS(ANS_ENUM)
#undef ANS_ENUM
};

static const struct {
  const char *text;
  size_t len;
  int ends;
} answers[] = {
#define ANS_ROW(k, t, l, e) {t, l, e},
    HELLO_ANSWERS(ANS_ROW)
#undef ANS_ROW
};

/* An owed run: the answer kind in the low 3 bits, how many above. */
#define RUN_KIND(r) ((enum answer)((r)&7u))
#define RUN_COUNT(r) ((r) >> 3)
#define RUN_MAX_COUNT (UINT32_MAX >> 3)

struct hello {
  size_t body_left; /* request body bytes still to skip */
  char *buf;        /* a head split across reads, only while it is */
  size_t len, cap;  /* ... its bytes so far, and room (<= HTTP_MAX_HEAD) */
  uint32_t *owed;   /* answers not yet queued, in order: owed[head, n) */
  size_t owed_head, owed_n, owed_cap;
  unsigned ended : 1;  /* the answer that ends the connection is due */
  unsigned timing : 1; /* the head deadline is set */
};

/* Answers to one read are gathered and written once. */
struct out {
  char data[16384];
  size_t len;
};

/* Does an answer of n bytes fit after what o holds? */
static int out_fits(aio_conn_t *c, const struct out *o, size_t n) {
  size_t all = o->len + n;
  return all <= sizeof(o->data) && all <= aio_conn_write_room(c) &&
         aio_conn_queued(c) + all <= HELLO_QUEUE_MAX;
}

static void out_flush(aio_conn_t *c, struct out *o) {
  if (o->len)
    aio_write(c, o->data, o->len); /* fits: out_fits said so */
  o->len = 0;
}

static int owe(struct hello *h, enum answer k) {
  if (h->owed_n > h->owed_head) {
    uint32_t *last = &h->owed[h->owed_n - 1];
    if (RUN_KIND(*last) == k && RUN_COUNT(*last) < RUN_MAX_COUNT) {
      *last += 8;
      return 0;
    }
  }
  if (h->owed_n == h->owed_cap) {
    size_t cap = h->owed_cap ? h->owed_cap * 2 : 16;
    uint32_t *n = realloc(h->owed, cap * sizeof(*n));
    if (n == NULL)
      return -1;
    h->owed = n;
    h->owed_cap = cap;
  }
  h->owed[h->owed_n++] = (1u << 3) | (uint32_t)k;
  return 0;
}

/* Queue answer k, or owe it when the queue is full or answers are owed
 * already (they go first). -1 when it can be neither (out of memory). */
static int answer(aio_conn_t *c, struct hello *h, struct out *o,
                  enum answer k) {
  size_t n = answers[k].len;
  if (answers[k].ends)
    h->ended = 1;
  if (h->owed_n == h->owed_head) {
    if (!out_fits(c, o, n))
      out_flush(c, o);
    if (out_fits(c, o, n)) {
      memcpy(o->data + o->len, answers[k].text, n);
      o->len += n;
      return 0;
    }
  }
  return owe(h, k);
}

/* Queue what is owed while it fits. 1 when nothing is owed any more. */
static int pay(aio_conn_t *c, struct hello *h, struct out *o) {
  while (h->owed_head < h->owed_n) {
    uint32_t *run = &h->owed[h->owed_head];
    enum answer k = RUN_KIND(*run);
    size_t n = answers[k].len;
    if (!out_fits(c, o, n))
      out_flush(c, o);
    if (!out_fits(c, o, n))
      return 0;
    memcpy(o->data + o->len, answers[k].text, n);
    o->len += n;
    *run -= 8;
    if (RUN_COUNT(*run) == 0)
      h->owed_head++;
  }
  /* Paid up: the runs' memory goes back (it was for a burst). */
  free(h->owed);
  h->owed = NULL;
  h->owed_head = h->owed_n = h->owed_cap = 0;
  return 1;
}

/* [server:NAME] header_timeout of c's server, as any module would read
 * its own key (settings.c checked the value at load). One server's value is
 * kept: a worker looks it up once, not per connection. */
static double header_timeout(const aio_conn_t *c) {
  static _Thread_local const char *server;
  static _Thread_local double value;
  const char *name = aio_conn_server(c);
  if (name == NULL || name != server) {
    char section[256];
    snprintf(section, sizeof(section), "server:%s", name ? name : "");
    const char *v = aio_config_get(section, "header_timeout");
    char *end;
    value = v && *v ? strtod(v, &end) : SETTINGS_HEADER_TIMEOUT;
    server = name;
  }
  return value;
}

static void hello_timed_out(aio_conn_t *c);

/* The head deadline: from the first byte of a head (or from the accept,
 * for the first), not moved by more bytes of the same head. */
static void head_deadline(aio_conn_t *c, struct hello *h, int on) {
  if (on && header_timeout(c) > 0) {
    aio_conn_set_deadline(c, header_timeout(c), hello_timed_out);
    h->timing = 1;
  } else if (h->timing) {
    aio_conn_set_deadline(c, 0, NULL);
    h->timing = 0;
  }
}

/* header_timeout passed: 408 for a head begun, a plain close for a
 * connection that sent nothing of one (a browser's preconnect, say). */
static void hello_timed_out(aio_conn_t *c) {
  struct hello *h = aio_conn_get_data(c);
  h->timing = 0;
  if (h->len > 0 || h->body_left > 0)
    aio_write(c, resp_408, sizeof(resp_408) - 1);
  aio_close(c);
}

static void hello_made(aio_conn_t *c) {
  struct hello *h = calloc(1, sizeof(*h));
  aio_conn_set_data(c, h);
  if (h == NULL) {
    aio_close(c);
    return;
  }
  head_deadline(c, h, 1);
}

static void hello_lost(aio_conn_t *c, int status) {
  struct hello *h = aio_conn_get_data(c);
  (void)status;
  if (h) {
    free(h->buf);
    free(h->owed);
    free(h);
  }
}

/* Keep len more bytes of a split head. -1 when out of memory. */
static int keep_head(struct hello *h, const char *data, size_t len) {
  if (h->len + len > h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 512;
    while (cap < h->len + len)
      cap *= 2;
    if (cap > HTTP_MAX_HEAD)
      cap = HTTP_MAX_HEAD;
    char *b = realloc(h->buf, cap);
    if (b == NULL)
      return -1;
    h->buf = b;
    h->cap = cap;
  }
  memcpy(h->buf + h->len, data, len);
  h->len += len;
  return 0;
}

static void drop_head(struct hello *h) {
  free(h->buf);
  h->buf = NULL;
  h->len = h->cap = 0;
}

/* After a read, or once what was owed is paid: owing, pause reading (the
 * peer is slow to read, not to send: no head deadline meanwhile); done,
 * close; else read on, under a head deadline while a head is split. */
static void hello_settle(aio_conn_t *c, struct hello *h, int heads_done) {
  if (h->owed_head < h->owed_n) {
    aio_conn_pause_reading(c);
    head_deadline(c, h, 0);
  } else if (h->ended) {
    aio_close(c);
  } else {
    aio_conn_resume_reading(c);
    if (h->len > 0 && (!h->timing || heads_done))
      head_deadline(c, h, 1);
    else if (h->len == 0)
      head_deadline(c, h, 0);
  }
}

static void hello_data(aio_conn_t *c, const char *data, size_t len) {
  struct hello *h = aio_conn_get_data(c);
  struct out o;
  struct http_req req;
  int heads = 0, failed = 0;
  o.len = 0;
  while (len > 0 && !h->ended && !failed) {
    if (h->body_left) {
      size_t skip = len < h->body_left ? len : h->body_left;
      h->body_left -= skip;
      data += skip;
      len -= skip;
      continue;
    }
    long r;
    size_t used;
    if (h->len == 0) {
      r = http_parse(data, len, &req);
      used = r > 0 ? (size_t)r : len;
      if (r == HTTP_NEED_MORE)
        failed = keep_head(h, data, len);
    } else {
      size_t take = HTTP_MAX_HEAD - h->len;
      if (take > len)
        take = len;
      size_t old = h->len;
      failed = keep_head(h, data, take);
      r = failed ? HTTP_BAD : http_parse(h->buf, h->len, &req);
      used = r > 0 ? (size_t)r - old : take;
      if (r != HTTP_NEED_MORE)
        drop_head(h);
    }
    data += used;
    len -= used;
    if (r == HTTP_NEED_MORE)
      break;
    heads++;
    aio_conn_request_done(c); /* answered below: [aio] max_requests */
    if (r < 0) {
      failed |= answer(c, h, &o, r == HTTP_TOO_LARGE ? ANS_431 : ANS_400);
      break;
    }
    int close = !req.keep_alive || aio_conn_draining(c);
    enum answer k = close ? (req.head ? ANS_CLOSE_HEAD : ANS_CLOSE)
                          : (req.head ? ANS_KEEP_HEAD : ANS_KEEP);
    failed |= answer(c, h, &o, k);
    h->body_left = req.body_len;
  }
  out_flush(c, &o);
  if (failed) { /* out of memory */
    aio_close(c);
    return;
  }
  hello_settle(c, h, heads);
}

/* The queue has drained: pay what is owed, then read again. */
static void hello_drained(aio_conn_t *c) {
  struct hello *h = aio_conn_get_data(c);
  struct out o;
  o.len = 0;
  if (h == NULL || h->owed_head == h->owed_n)
    return;
  pay(c, h, &o);
  out_flush(c, &o);
  hello_settle(c, h, 1);
}

AIO_PROTOCOL(hello, .connection_made = hello_made, .data_received = hello_data,
             .connection_lost = hello_lost, .write_drained = hello_drained);

const aio_decl_t *const builtin_decls[] = {&aio__decl_echo, &aio__decl_hello,
                                           NULL};
