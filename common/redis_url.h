/*
 * redis_url.h - the [aio] cluster address as users write it for Redis
 * clients: redis://[user:password@]host[:port][/db] or
 * unix://[user:password@]/path/redis.sock[?db=N]. A pure parser, so that a
 * bad address is a FILE:LINE error at load time and the master never
 * meets one.
 */
#ifndef AIO_COMMON_REDIS_URL_H
#define AIO_COMMON_REDIS_URL_H

#include <stddef.h>

#define REDIS_URL_DEFAULT_PORT 6379

struct redis_url {
  char *host;     /* TCP: a name or an address ([v6] without brackets) */
  int port;       /* TCP */
  char *path;     /* unix socket, or NULL */
  char *user;     /* ACL user (Redis 6+), or NULL */
  char *password; /* or NULL */
  int db;         /* SELECT, 0 by default */
};

/* Parse text into u (new strings; redis_url_close). 0, or -1 with why in
 * err (u is left empty). */
int redis_url_parse(struct redis_url *u, const char *text, char *err,
                    size_t errlen);
void redis_url_close(struct redis_url *u);
/* u for logs and status: the address without the password, in out. */
void redis_url_describe(const struct redis_url *u, char *out, size_t n);

#endif
