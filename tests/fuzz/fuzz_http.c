/*
 * fuzz_http.c - the request-head parser of aio.hello (worker/http.c) and the
 * protocol around it (worker/builtin.c), on hostile bytes.
 *
 * http_parse() must stay inside its input and be stable on the prefix it
 * claims; aio.hello, fed the input (after its first byte) in one read and
 * again in reads whose sizes come from the first byte, must answer both
 * the same bytes and close the same way; and again when the peer takes
 * nothing until the protocol pauses reading (what it owes is queued only
 * as the recording connection below "drains"), which must not change a
 * byte either. The connection functions are test doubles that record what
 * the protocol does: this binary links builtin.c and http.c, not the
 * runtime.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aio.h"
#include "http.h"

/* ---- a connection that records what the protocol does ------------------ */

struct aio_conn_s {
  void *data;
  char *out;
  size_t len, cap;
  int closed;
  int slow;        /* the peer takes nothing until drained */
  size_t queued;   /* what it has not taken */
  int paused;      /* aio_conn_pause_reading() */
  size_t requests; /* aio_conn_request_done() */
};

/* write_limit at its smallest: the protocol must never be refused. */
#define STUB_WRITE_LIMIT 4096

int aio_write(aio_conn_t *c, const void *data, size_t len) {
  if (c->closed)
    abort(); /* the runtime refuses it; the protocol should not try */
  if (c->queued + len > STUB_WRITE_LIMIT && c->slow)
    abort(); /* -ENOBUFS, which the protocol must not run into */
  if (c->slow)
    c->queued += len;
  if (c->len + len > c->cap) {
    size_t cap = c->cap ? c->cap : 4096;
    while (cap < c->len + len)
      cap *= 2;
    char *p = realloc(c->out, cap);
    if (p == NULL)
      abort();
    c->out = p;
    c->cap = cap;
  }
  memcpy(c->out + c->len, data, len);
  c->len += len;
  return 0;
}

void aio_close(aio_conn_t *c) { c->closed = 1; }
size_t aio_conn_queued(const aio_conn_t *c) { return c->queued; }
size_t aio_conn_write_room(const aio_conn_t *c) {
  return c->slow ? STUB_WRITE_LIMIT - c->queued : (size_t)1 << 30;
}
void aio_conn_pause_reading(aio_conn_t *c) { c->paused = 1; }
void aio_conn_resume_reading(aio_conn_t *c) { c->paused = 0; }
const char *aio_conn_server(const aio_conn_t *c) {
  (void)c;
  return "fuzz";
}
const char *aio_config_get(const char *section, const char *key) {
  (void)section;
  (void)key;
  return NULL;
}
int aio_conn_set_deadline(aio_conn_t *c, double seconds, aio_timeout_fn *fn) {
  (void)c;
  (void)seconds;
  (void)fn;
  return 0;
}
void aio_conn_set_data(aio_conn_t *c, void *data) { c->data = data; }
void *aio_conn_get_data(const aio_conn_t *c) { return c->data; }
void aio_conn_request_done(aio_conn_t *c) { c->requests++; }
int aio_conn_draining(const aio_conn_t *c) {
  (void)c;
  return 0;
}
int aio_sendto(aio_conn_t *c, const void *data, size_t len,
               const struct sockaddr *addr) {
  (void)c;
  (void)data;
  (void)len;
  (void)addr;
  return 0;
}

extern const aio_decl_t aio__decl_hello;

/* ---- the parser alone -------------------------------------------------- */

static void check_parse(const char *buf, size_t len) {
  struct http_req req, again;
  long r = http_parse(buf, len, &req);
  if (r == HTTP_NEED_MORE) {
    if (len >= HTTP_MAX_HEAD)
      abort(); /* a head that can no longer fit must be refused */
    return;
  }
  if (r == HTTP_BAD || r == HTTP_TOO_LARGE)
    return;
  if (r < 0 || (size_t)r > len || r > HTTP_MAX_HEAD)
    abort();
  /* The head it found is a complete head on its own, read the same way. */
  if (http_parse(buf, (size_t)r, &again) != r ||
      memcmp(&req, &again, sizeof(req)) != 0)
    abort();
}

/* ---- the protocol ------------------------------------------------------ */

/* The slow peer takes everything queued; the runtime then calls
 * write_drained, until the protocol reads again or closes. */
static void drain(const aio_protocol_t *p, aio_conn_t *c) {
  while (c->paused && !c->closed) {
    if (c->queued == 0)
      abort(); /* paused with nothing queued: no write_drained will come */
    c->queued = 0;
    p->write_drained(c);
  }
}

static void serve(const uint8_t *data, size_t size, size_t chunk, int slow,
                  aio_conn_t *c) {
  const aio_protocol_t *p = aio__decl_hello.u.protocol;
  memset(c, 0, sizeof(*c));
  c->slow = slow;
  p->connection_made(c);
  for (size_t off = 0; off < size && !c->closed;) {
    drain(p, c);
    if (c->closed)
      break;
    size_t n = size - off < chunk ? size - off : chunk;
    /* An exact copy per read: the runtime's buffer is reused between
     * reads, so the protocol must not keep pointers into it. */
    char *copy = malloc(n);
    if (copy == NULL)
      abort();
    memcpy(copy, data + off, n);
    p->data_received(c, copy, n);
    memset(copy, 0xa5, n);
    free(copy);
    off += n;
  }
  drain(p, c);
  p->connection_lost(c, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  size_t chunk = (size_t)data[0] * 7 % 97 + 1;
  data++;
  size--;
  char *exact = malloc(size ? size : 1);
  if (exact == NULL)
    abort();
  memcpy(exact, data, size);
  check_parse(exact, size);
  free(exact);

  aio_conn_t whole, parts, slow, slow_whole;
  serve(data, size, size ? size : 1, 0, &whole);
  serve(data, size, chunk, 0, &parts);
  serve(data, size, chunk, 1, &slow);
  serve(data, size, size ? size : 1, 1, &slow_whole);
  const aio_conn_t *other[] = {&parts, &slow, &slow_whole};
  const char *how[] = {"in reads of", "to a slow peer in reads of",
                       "to a slow peer in one read of"};
  size_t sizes[] = {chunk, chunk, size};
  for (size_t i = 0; i < 3; i++) {
    const aio_conn_t *o = other[i];
    if (whole.closed != o->closed || whole.len != o->len ||
        whole.requests != o->requests ||
        (whole.len && memcmp(whole.out, o->out, whole.len) != 0)) {
      fprintf(stderr,
              "aio.hello answers differ: one read %zu bytes%s (%zu "
              "requests), %s %zu: %zu bytes%s (%zu requests)\n",
              whole.len, whole.closed ? " and close" : "", whole.requests,
              how[i], sizes[i], o->len, o->closed ? " and close" : "",
              o->requests);
      abort();
    }
  }
  free(whole.out);
  free(parts.out);
  free(slow.out);
  free(slow_whole.out);
  return 0;
}
