/* http.h - the small HTTP/1.x request-head parser behind aio.hello. It
 * reads only what a responder that always answers 200 needs: method,
 * version, Connection and Content-Length, and rejects what is malformed. */
#ifndef AIO_WORKER_HTTP_H
#define AIO_WORKER_HTTP_H

#include <stddef.h>

/* Largest request head accepted (request line and headers). */
#define HTTP_MAX_HEAD 8192

struct http_req {
  int head;        /* HEAD method: no body in the answer */
  int minor;       /* HTTP/1.minor */
  int keep_alive;  /* after the version and Connection header */
  size_t body_len; /* Content-Length */
};

enum {
  HTTP_NEED_MORE = 0,
  HTTP_BAD = -1,      /* 400 and close */
  HTTP_TOO_LARGE = -2 /* 431 and close */
};

/* Parse one request head at buf. Returns the head's length (including the
 * blank line) when complete, or one of the values above. */
long http_parse(const char *buf, size_t len, struct http_req *req);

#endif
