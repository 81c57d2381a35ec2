/* http.c - see http.h. Pure and allocation-free, so it is fuzzed alone. */
#include "http.h"

#include <string.h>
#include <strings.h>

static int is_tchar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Does the comma-separated header value contain token tok? */
static int has_token(const char *v, size_t len, const char *tok) {
  size_t tl = strlen(tok);
  size_t i = 0;
  while (i < len) {
    while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    size_t start = i;
    while (i < len && v[i] != ',')
      i++;
    size_t end = i;
    while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
      end--;
    if (end - start == tl && strncasecmp(v + start, tok, tl) == 0)
      return 1;
  }
  return 0;
}

long http_parse(const char *buf, size_t len, struct http_req *req) {
  /* Find the end of the head first: nothing is parsed twice per byte of a
   * partial head that is larger than one read. */
  const char *end = NULL;
  size_t scan = len < HTTP_MAX_HEAD ? len : HTTP_MAX_HEAD;
  /* Empty lines before the request line are tolerated (RFC 9112 2.2), so
   * they must not be taken for the blank line that ends the head. */
  size_t lead = 0;
  while (lead < scan && (buf[lead] == '\r' || buf[lead] == '\n'))
    lead++;
  for (size_t i = lead; i + 1 < scan; i++) {
    if (buf[i] == '\n' && buf[i + 1] == '\n') {
      end = buf + i + 2;
      break;
    }
    if (buf[i] == '\n' && buf[i + 1] == '\r' && i + 2 < scan &&
        buf[i + 2] == '\n') {
      end = buf + i + 3;
      break;
    }
  }
  if (end == NULL)
    return len >= HTTP_MAX_HEAD ? HTTP_TOO_LARGE : HTTP_NEED_MORE;

  memset(req, 0, sizeof(*req));
  const char *p = buf, *e = end;
  /* Tolerate empty lines before the request line (RFC 9112 2.2). */
  while (p < e && (*p == '\r' || *p == '\n'))
    p++;
  const char *m = p;
  while (p < e && is_tchar((unsigned char)*p))
    p++;
  if (p == m || p >= e || *p != ' ')
    return HTTP_BAD;
  req->head = (p - m == 4 && memcmp(m, "HEAD", 4) == 0);
  p++;
  const char *target = p;
  while (p < e && *p != ' ' && (unsigned char)*p > 0x20 && *p != 0x7f)
    p++;
  if (p == target || p >= e || *p != ' ')
    return HTTP_BAD;
  p++;
  if (e - p < 8 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9')
    return HTTP_BAD;
  req->minor = p[7] - '0';
  p += 8;
  if (*p == '\r')
    p++;
  if (*p != '\n')
    return HTTP_BAD;
  p++;
  req->keep_alive = req->minor >= 1;
  int seen_len = 0, seen_close = 0;
  while (p < e) {
    if (*p == '\r' || *p == '\n') {
      /* The blank line, which must be the end found above: a stray CR
       * would otherwise hide the bytes after it. */
      if (p + (*p == '\r' ? 2 : 1) != e)
        return HTTP_BAD;
      break;
    }
    const char *name = p;
    while (p < e && is_tchar((unsigned char)*p))
      p++;
    if (p == name || p >= e || *p != ':')
      return HTTP_BAD; /* includes obsolete line folding */
    size_t nlen = (size_t)(p - name);
    p++;
    while (p < e && (*p == ' ' || *p == '\t'))
      p++;
    const char *val = p;
    while (p < e && *p != '\r' && *p != '\n') {
      if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
        return HTTP_BAD;
      p++;
    }
    size_t vlen = (size_t)(p - val);
    while (vlen > 0 && (val[vlen - 1] == ' ' || val[vlen - 1] == '\t'))
      vlen--;
    if (*p == '\r')
      p++;
    if (p >= e || *p != '\n')
      return HTTP_BAD;
    p++;
    if (nlen == 10 && strncasecmp(name, "connection", 10) == 0) {
      /* close wins, whichever Connection header says it (RFC 9112 9.6). */
      if (has_token(val, vlen, "close"))
        seen_close = 1;
      else if (has_token(val, vlen, "keep-alive"))
        req->keep_alive = 1;
    } else if (nlen == 14 && strncasecmp(name, "content-length", 14) == 0) {
      size_t v = 0;
      if (vlen == 0 || vlen > 15 || seen_len)
        return HTTP_BAD; /* ambiguous framing is a smuggling risk */
      for (size_t i = 0; i < vlen; i++) {
        if (val[i] < '0' || val[i] > '9')
          return HTTP_BAD;
        v = v * 10 + (size_t)(val[i] - '0');
      }
      req->body_len = v;
      seen_len = 1;
    } else if (nlen == 17 && strncasecmp(name, "transfer-encoding", 17) == 0) {
      return HTTP_BAD; /* chunked bodies are not for a hello responder */
    }
  }
  if (seen_close)
    req->keep_alive = 0;
  return (long)(end - buf);
}
