/*
 * builtin.c - the built-in module `aio`: aio.echo (TCP, unix and UDP echo)
 * and aio.hello (a minimal HTTP/1.1 responder: keep-alive, pipelining,
 * Connection: close, always 200; the health endpoint and the benchmark peer
 * of nginx's `return 200`).
 */
#include <stdlib.h>
#include <string.h>

#include "aio.h"
#include "http.h"
#include "loader.h"

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

#define HELLO_BODY "Hello, World!\n"

struct hello {
  size_t body_left; /* request body bytes still to skip */
  size_t len;       /* bytes of a partial head kept in buf */
  char *buf;        /* HTTP_MAX_HEAD bytes, only while a head is split */
};

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
static const char resp_431[] =
    "HTTP/1.1 431 Request Header Fields Too Large\r\n"
    "Server: aio\r\n"
    "Content-Length: 0\r\n"
    "Connection: close\r\n\r\n";

/* Answers to one read are gathered and written once. */
struct out {
  char data[16384];
  size_t len;
};

static void out_add(aio_conn_t *c, struct out *o, const char *s, size_t n) {
  if (o->len + n > sizeof(o->data)) {
    aio_write(c, o->data, o->len);
    o->len = 0;
  }
  memcpy(o->data + o->len, s, n);
  o->len += n;
}

static void hello_made(aio_conn_t *c) {
  aio_conn_set_data(c, calloc(1, sizeof(struct hello)));
  if (aio_conn_get_data(c) == NULL)
    aio_close(c);
}

static void hello_lost(aio_conn_t *c, int status) {
  struct hello *h = aio_conn_get_data(c);
  (void)status;
  if (h) {
    free(h->buf);
    free(h);
  }
}

/* One complete head was parsed: answer it. Returns 0 to go on, 1 when the
 * connection is to be closed after the answer. */
static int hello_answer(aio_conn_t *c, struct hello *h, struct out *o,
                        const struct http_req *req) {
  int close = !req->keep_alive || aio_conn_draining(c);
  const char *r = close ? resp_close : resp_keep;
  size_t n = close ? sizeof(resp_close) - 1 : sizeof(resp_keep) - 1;
  if (req->head)
    n -= sizeof(HELLO_BODY) - 1;
  out_add(c, o, r, n);
  h->body_left = req->body_len;
  return close;
}

static void hello_data(aio_conn_t *c, const char *data, size_t len) {
  struct hello *h = aio_conn_get_data(c);
  struct out o;
  struct http_req req;
  int close = 0;
  o.len = 0;
  while (len > 0 && !close) {
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
      used = r > 0 ? (size_t)r : 0;
    } else {
      size_t take = HTTP_MAX_HEAD - h->len;
      if (take > len)
        take = len;
      memcpy(h->buf + h->len, data, take);
      size_t old = h->len;
      r = http_parse(h->buf, old + take, &req);
      if (r > 0) {
        used = (size_t)r - old;
        h->len = 0;
      } else {
        used = take;
        h->len += take;
      }
    }
    if (r == HTTP_NEED_MORE) {
      if (h->len == 0) {
        if (h->buf == NULL && (h->buf = malloc(HTTP_MAX_HEAD)) == NULL) {
          close = 1;
          break;
        }
        memcpy(h->buf, data, len);
        h->len = len;
      }
      break;
    }
    if (r < 0) {
      if (r == HTTP_TOO_LARGE)
        out_add(c, &o, resp_431, sizeof(resp_431) - 1);
      else
        out_add(c, &o, resp_400, sizeof(resp_400) - 1);
      close = 1;
      break;
    }
    close = hello_answer(c, h, &o, &req);
    data += used;
    len -= used;
  }
  if (o.len)
    aio_write(c, o.data, o.len);
  if (close)
    aio_close(c);
}

AIO_PROTOCOL(hello, .connection_made = hello_made, .data_received = hello_data,
             .connection_lost = hello_lost);

const aio_decl_t *const builtin_decls[] = {&aio__decl_echo, &aio__decl_hello,
                                           NULL};
