/* sockets.c - bind listening sockets (see sockets.h). */
#define _GNU_SOURCE
#include "sockets.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

void sockets_describe(const struct server_conf *sc, int port, char *out,
                      size_t n) {
  if (sc->type == SERVER_UNIX)
    snprintf(out, n, "unix:%s", sc->path);
  else if (sc->address == NULL || *sc->address == '\0')
    snprintf(out, n, "*:%d%s", port, sc->type == SERVER_UDP ? "/udp" : "");
  else if (strchr(sc->address, ':'))
    snprintf(out, n, "[%s]:%d%s", sc->address, port,
             sc->type == SERVER_UDP ? "/udp" : "");
  else
    snprintf(out, n, "%s:%d%s", sc->address, port,
             sc->type == SERVER_UDP ? "/udp" : "");
}

int sockets_same_address(const struct server_conf *a,
                         const struct server_conf *b) {
  if (a->type != b->type)
    return 0;
  if (a->type == SERVER_UNIX)
    return strcmp(a->path, b->path) == 0;
  return a->port != 0 && a->port == b->port &&
         strcmp(a->address, b->address) == 0;
}

/* A unix socket file left by a dead process is removed; one that still
 * answers belongs to someone and is an address in use. */
static int unix_clear_stale(const char *path) {
  struct stat sb;
  if (lstat(path, &sb) < 0)
    return 0;
  if (!S_ISSOCK(sb.st_mode))
    return -EEXIST;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
  int r = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
  close(fd);
  if (r == 0)
    return -EADDRINUSE;
  unlink(path);
  return 0;
}

static void bind_failed(const struct server_conf *sc, const char *where,
                        int err, char *msg, size_t msglen) {
  snprintf(msg, msglen, "[server:%s] cannot listen on %s: %s%s", sc->name,
           where, strerror(-err),
           err == -EADDRINUSE ? " (another process has this address)" : "");
}

/* A plain socket, neither SO_REUSEPORT nor (for UDP) SO_REUSEADDR, can only
 * bind where nobody is: unlike ours, it cannot join another process's
 * SO_REUSEPORT group (a second `aio run` of the same file, say), with
 * which we would otherwise share the connections without a word. TCP sets
 * SO_REUSEADDR so that connections in TIME_WAIT do not count; a listener
 * does. */
int sockets_probe(const struct server_conf *sc, int port, char *msg,
                  size_t msglen) {
  const char *addr = sc->address;
  if (sc->type == SERVER_UNIX || port == 0)
    return 0;
  int any6 = (addr == NULL || *addr == '\0'), one = 1, v6only = 0;
  struct sockaddr_in6 s6 = {.sin6_family = AF_INET6,
                            .sin6_port = htons((uint16_t)port)};
  struct sockaddr_in s4 = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port)};
  int v6 = any6 || strchr(addr, ':');
  if (v6 && !any6)
    inet_pton(AF_INET6, addr, &s6.sin6_addr);
  else if (!v6)
    inet_pton(AF_INET, addr, &s4.sin_addr);
  int udp = sc->type == SERVER_UDP;
  int fd = socket(v6 ? AF_INET6 : AF_INET,
                  (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return 0; /* sockets_bind will say what is wrong */
  if (v6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
  if (!udp)
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  int r = v6 ? bind(fd, (struct sockaddr *)&s6, sizeof(s6))
             : bind(fd, (struct sockaddr *)&s4, sizeof(s4));
  int err = r < 0 ? -errno : 0;
  close(fd);
  if (err != -EADDRINUSE)
    return 0;
  char where[160];
  sockets_describe(sc, port, where, sizeof(where));
  bind_failed(sc, where, err, msg, msglen);
  return err;
}

int sockets_bind(const struct server_conf *sc, int *port, char *msg,
                 size_t msglen) {
  int type = (sc->type == SERVER_UDP ? SOCK_DGRAM : SOCK_STREAM) |
             SOCK_CLOEXEC | SOCK_NONBLOCK;
  int fd = -1, one = 1, err;
  char where[160];
  sockets_describe(sc, *port, where, sizeof(where));
  if (sc->type == SERVER_UNIX) {
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sc->path);
    err = unix_clear_stale(sc->path);
    if (err)
      goto fail;
    fd = socket(AF_UNIX, type, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
        listen(fd, sc->backlog) < 0) {
      err = -errno;
      goto fail;
    }
    return fd;
  }
  struct sockaddr_storage ss;
  socklen_t sl;
  memset(&ss, 0, sizeof(ss));
  const char *addr = sc->address;
  int any6 = (addr == NULL || *addr == '\0');
  struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
  if (any6 || strchr(addr, ':')) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)*port);
    if (!any6)
      inet_pton(AF_INET6, addr, &s6->sin6_addr);
    sl = sizeof(*s6);
  } else {
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)*port);
    inet_pton(AF_INET, addr, &s4->sin_addr);
    sl = sizeof(*s4);
  }
  fd = socket(ss.ss_family, type, 0);
  if (fd < 0 && any6 && errno == EAFNOSUPPORT) {
    /* No IPv6 on this host: all interfaces means all IPv4 ones. */
    memset(&ss, 0, sizeof(ss));
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)*port);
    sl = sizeof(*s4);
    fd = socket(AF_INET, type, 0);
  }
  if (fd < 0) {
    err = -errno;
    goto fail;
  }
  if (ss.ss_family == AF_INET6) {
    int v6only = !any6;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
  }
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
      bind(fd, (struct sockaddr *)&ss, sl) < 0) {
    err = -errno;
    goto fail;
  }
  if (sc->type != SERVER_UDP && listen(fd, sc->backlog) < 0) {
    err = -errno;
    goto fail;
  }
  if (*port == 0) {
    sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *port = ntohs(ss.ss_family == AF_INET6 ? s6->sin6_port : s4->sin_port);
  }
  return fd;
fail:
  if (fd >= 0)
    close(fd);
  bind_failed(sc, where, err, msg, msglen);
  return err;
}

int sockets_migrate_req(void) {
  FILE *f = fopen("/proc/sys/net/ipv4/tcp_migrate_req", "r");
  int v = -1;
  if (f == NULL)
    return -1;
  if (fscanf(f, "%d", &v) != 1)
    v = -1;
  fclose(f);
  return v;
}
