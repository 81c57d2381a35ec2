/*
 * harness_redis.h - a real redis-server for one test: on a free loopback
 * port (never 6379, where a system Redis may listen) or a unix socket in
 * the test's directory, with no persistence, killed with the test (a
 * parent-death signal covers a test that dies first). A small blocking
 * hiredis client with timeouts asks it what aio wrote.
 */
#ifndef AIO_TESTS_HARNESS_REDIS_H
#define AIO_TESTS_HARNESS_REDIS_H

#include <sys/types.h>

struct h_redis {
  pid_t pid;       /* 0 when stopped */
  int port;        /* TCP, or 0 for the unix socket */
  char dir[128];   /* where its log (and socket) live */
  char sock[192];  /* dir/redis.sock when unix */
  char log[192];   /* dir/redis-PORT.log */
  char extra[256]; /* more arguments, as "--requirepass x" */
};

/* Start redis-server on a free port (unix = 0) or on dir/redis.sock, and
 * wait (5 s) until it answers PING. dir is the test's directory. extra:
 * more arguments separated by spaces, or NULL. Fails the test if it does
 * not come up. */
void h_redis_start(struct h_redis *r, const char *dir, int unix_socket,
                   const char *extra);
/* Start it again, on the same port or socket. */
void h_redis_restart(struct h_redis *r);
/* SIGTERM, then SIGKILL after 5 s; waits for it. */
void h_redis_stop(struct h_redis *r);
/* "redis://127.0.0.1:PORT" or "unix://PATH", in out. */
void h_redis_url(const struct h_redis *r, char *out, size_t n);
/* One command (argv, NULL-terminated) with a 2 s timeout: the reply as
 * text in out (strings as they are, integers in decimal, arrays one
 * element per line, nil as "(nil)"). 0, or -1 when there is no answer. */
int h_redis_cmd(const struct h_redis *r, char *out, size_t n,
                const char *const *argv);

#endif
