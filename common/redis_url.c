/*
 * redis_url.c - parse the [aio] cluster address (redis_url.h). The user and
 * password may be percent-encoded, as in any URL, so a password with '@' or
 * ':' can be written; a password that should not be in the file at all
 * goes in [aio] cluster_password_file instead.
 */
#define _GNU_SOURCE
#include "redis_url.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void redis_url_close(struct redis_url *u) {
  free(u->host);
  free(u->path);
  free(u->user);
  if (u->password)
    memset(u->password, 0, strlen(u->password));
  free(u->password);
  memset(u, 0, sizeof(*u));
}

static int hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* s[0, n) percent-decoded as a new string, or NULL (bad escape, a NUL
 * byte, out of memory). */
static char *decode(const char *s, size_t n) {
  char *out = malloc(n + 1), *o = out;
  if (out == NULL)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    if (s[i] != '%') {
      *o++ = s[i];
      continue;
    }
    int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
    int lo = hi >= 0 ? hexval(s[i + 2]) : -1;
    if (lo < 0 || (hi == 0 && lo == 0)) {
      free(out);
      return NULL;
    }
    *o++ = (char)(hi * 16 + lo);
    i += 2;
  }
  *o = '\0';
  return out;
}

/* [user:]password@ at the start of *p (before end), if there is one. */
static int parse_userinfo(struct redis_url *u, const char **p, const char *end,
                          char *err, size_t errlen) {
  const char *at = memchr(*p, '@', (size_t)(end - *p));
  if (at == NULL)
    return 0;
  const char *colon = memchr(*p, ':', (size_t)(at - *p));
  if (colon == NULL) {
    snprintf(err, errlen,
             "'%.*s@' has no password: write user:password@ or :password@",
             (int)(at - *p), *p);
    return -1;
  }
  if (colon > *p && (u->user = decode(*p, (size_t)(colon - *p))) == NULL)
    goto bad;
  if ((u->password = decode(colon + 1, (size_t)(at - colon - 1))) == NULL)
    goto bad;
  if (*u->password == '\0') {
    snprintf(err, errlen, "the password before '@' is empty");
    return -1;
  }
  *p = at + 1;
  return 0;
bad:
  snprintf(err, errlen, "bad percent-encoding in the user or password");
  return -1;
}

static int parse_db(const char *s, int *db, char *err, size_t errlen) {
  long v;
  if (util_parse_long(s, 0, 1000000, &v)) {
    snprintf(err, errlen, "the database '%s' is not a number from 0", s);
    return -1;
  }
  *db = (int)v;
  return 0;
}

static int parse_tcp(struct redis_url *u, const char *p, char *err,
                     size_t errlen) {
  const char *end = p + strcspn(p, "/?#");
  if (parse_userinfo(u, &p, end, err, errlen))
    return -1;
  const char *host = p, *host_end, *port = NULL;
  if (*p == '[') {
    host = p + 1;
    host_end = memchr(host, ']', (size_t)(end - host));
    if (host_end == NULL) {
      snprintf(err, errlen, "'[' without ']' around an IPv6 address");
      return -1;
    }
    if (host_end + 1 < end) {
      if (host_end[1] != ':') {
        snprintf(err, errlen, "expected ':PORT' after ']'");
        return -1;
      }
      port = host_end + 2;
    }
  } else {
    host_end = memchr(p, ':', (size_t)(end - p));
    if (host_end)
      port = host_end + 1;
    else
      host_end = end;
  }
  if (host_end == host) {
    snprintf(err, errlen, "no host (redis://HOST[:PORT][/DB])");
    return -1;
  }
  for (const char *c = host; c < host_end; c++)
    if (!(('a' <= *c && *c <= 'z') || ('A' <= *c && *c <= 'Z') ||
          ('0' <= *c && *c <= '9') || *c == '.' || *c == '-' || *c == '_' ||
          (*c == ':' && *p == '['))) {
      snprintf(err, errlen, "'%.*s' is not a host name or address",
               (int)(host_end - host), host);
      return -1;
    }
  u->host = strndup(host, (size_t)(host_end - host));
  u->port = REDIS_URL_DEFAULT_PORT;
  if (port) {
    char num[16];
    long v;
    size_t n = (size_t)(end - port);
    if (n == 0 || n >= sizeof(num)) {
      snprintf(err, errlen, "the port is missing or too long");
      return -1;
    }
    memcpy(num, port, n);
    num[n] = '\0';
    if (util_parse_long(num, 1, 65535, &v)) {
      snprintf(err, errlen, "the port '%s' is not 1 to 65535", num);
      return -1;
    }
    u->port = (int)v;
  }
  if (*end == '/' && end[1] != '\0') {
    if (parse_db(end + 1, &u->db, err, errlen))
      return -1;
  } else if (*end == '?' || *end == '#') {
    snprintf(err, errlen,
             "query strings are not supported (write the "
             "database as redis://HOST:PORT/DB)");
    return -1;
  }
  return u->host ? 0 : (snprintf(err, errlen, "out of memory"), -1);
}

static int parse_unix(struct redis_url *u, const char *p, char *err,
                      size_t errlen) {
  const char *end = p + strcspn(p, "?");
  const char *slash = memchr(p, '/', (size_t)(end - p));
  if (slash == NULL) {
    snprintf(err, errlen, "expected unix:///absolute/path/redis.sock");
    return -1;
  }
  if (slash > p) {
    /* unix://[user:password@]/path */
    const char *q = p;
    if (parse_userinfo(u, &q, slash, err, errlen))
      return -1;
    if (q != slash) {
      snprintf(err, errlen, "expected unix:///absolute/path/redis.sock");
      return -1;
    }
  }
  size_t n = (size_t)(end - slash);
  if (n < 2 || n >= 108) {
    snprintf(err, errlen, "the socket path is empty or longer than 107 bytes");
    return -1;
  }
  u->path = strndup(slash, n);
  if (*end == '?') {
    if (strncmp(end, "?db=", 4) != 0) {
      snprintf(err, errlen, "the only query a unix URL takes is ?db=N");
      return -1;
    }
    if (parse_db(end + 4, &u->db, err, errlen))
      return -1;
  }
  return u->path ? 0 : (snprintf(err, errlen, "out of memory"), -1);
}

int redis_url_parse(struct redis_url *u, const char *text, char *err,
                    size_t errlen) {
  memset(u, 0, sizeof(*u));
  int rc;
  if (strncmp(text, "redis://", 8) == 0) {
    rc = parse_tcp(u, text + 8, err, errlen);
  } else if (strncmp(text, "unix://", 7) == 0) {
    rc = parse_unix(u, text + 7, err, errlen);
  } else if (strncmp(text, "rediss://", 9) == 0) {
    snprintf(err, errlen,
             "TLS (rediss://) is not supported: use redis:// "
             "on a trusted network or a unix socket");
    rc = -1;
  } else {
    snprintf(err, errlen,
             "'%s' is not a Redis URL: expected "
             "redis://[user:password@]host[:port][/db] or "
             "unix:///path/redis.sock",
             text);
    rc = -1;
  }
  if (rc)
    redis_url_close(u);
  return rc;
}

void redis_url_describe(const struct redis_url *u, char *out, size_t n) {
  const char *user = u->user ? u->user : "";
  const char *at = u->user || u->password ? "@" : "";
  const char *pw = u->password ? ":***" : "";
  if (u->path) {
    char db[24] = "";
    if (u->db)
      snprintf(db, sizeof(db), "?db=%d", u->db);
    snprintf(out, n, "unix://%s%s%s%s%s", user, pw, at, u->path, db);
  } else {
    int v6 = strchr(u->host, ':') != NULL;
    snprintf(out, n, "redis://%s%s%s%s%s%s:%d/%d", user, pw, at, v6 ? "[" : "",
             u->host, v6 ? "]" : "", u->port, u->db);
  }
}
