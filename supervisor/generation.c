/* generation.c - see generation.h. */
#define _GNU_SOURCE
#include "generation.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "sockets.h"
#include "util.h"

/* Unix sockets and activated sockets are one socket for all slots. */
static int is_shared(const struct generation *g, size_t i) {
  return g->shared[i] >= 0 || g->app.s.servers[i].type == SERVER_UNIX;
}

void generation_close_slot(struct generation *g, size_t slot) {
  if (slot >= g->nslots_fds || g->fds[slot] == NULL)
    return;
  for (size_t i = 0; i < g->app.s.nservers; i++)
    if (g->fds[slot][i] >= 0)
      close(g->fds[slot][i]);
  free(g->fds[slot]);
  g->fds[slot] = NULL;
}

static int serves_path(const struct generation *g, const char *path) {
  for (size_t i = 0; g && i < g->app.s.nservers; i++)
    if (g->app.s.servers[i].type == SERVER_UNIX &&
        strcmp(g->app.s.servers[i].path, path) == 0)
      return 1;
  return 0;
}

void generation_free(struct generation *g, const struct generation *keep) {
  if (g == NULL)
    return;
  for (size_t i = g->nslots_fds; i-- > 0;)
    generation_close_slot(g, i);
  for (size_t i = 0; i < g->app.s.nservers; i++) {
    const struct server_conf *sc = &g->app.s.servers[i];
    if (g->shared && g->shared[i] >= 0) {
      close(g->shared[i]);
      if (sc->type == SERVER_UNIX && !g->activated[i] &&
          !serves_path(keep, sc->path))
        unlink(sc->path);
    }
  }
  free(g->fds);
  free(g->ports);
  free(g->shared);
  free(g->activated);
  bus_index_close(&g->sigs);
  app_close(&g->app);
  free(g);
}

struct generation *generation_new(struct app *app, unsigned id) {
  struct generation *g = calloc(1, sizeof(*g));
  if (g == NULL)
    return NULL;
  g->id = id;
  g->app = *app;
  memset(app, 0, sizeof(*app));
  size_t n = g->app.s.nservers + 1;
  g->ports = calloc(n, sizeof(int));
  g->shared = malloc(n * sizeof(int));
  g->activated = calloc(n, sizeof(int));
  /* The listener index both the router and the workers read. */
  if (!g->ports || !g->shared || !g->activated ||
      bus_index_build(&g->sigs, &g->app.s)) {
    generation_free(g, NULL);
    return NULL;
  }
  for (size_t i = 0; i < n; i++)
    g->shared[i] = -1;
  for (size_t i = 0; i < g->app.s.nservers; i++)
    g->ports[i] = g->app.s.servers[i].port;
  return g;
}

/* The server of `from` with the same address as sc, or -1. */
static int find_same(const struct generation *from,
                     const struct server_conf *sc) {
  for (size_t j = 0; from && j < from->app.s.nservers; j++)
    if (sockets_same_address(&from->app.s.servers[j], sc))
      return (int)j;
  return -1;
}

/* ---- socket activation --------------------------------------------------- */

void activation_init(struct activation *a) {
  memset(a, 0, sizeof(*a));
  const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
  long p, n;
  if (!pid || !fds || util_parse_long(pid, 1, 1L << 30, &p) ||
      util_parse_long(fds, 1, 1024, &n) || p != (long)getpid())
    goto out;
  a->fds = calloc((size_t)n, sizeof(int));
  a->names = calloc((size_t)n, sizeof(char *));
  if (!a->fds || !a->names)
    goto out;
  a->n = (size_t)n;
  char **names = NULL;
  const char *fdnames = getenv("LISTEN_FDNAMES");
  int nn = 0;
  if (fdnames) {
    /* Colon-separated; util_split_words splits on blanks and commas. */
    char *copy = strdup(fdnames);
    for (char *c = copy; c && *c; c++)
      if (*c == ':')
        *c = ',';
    nn = copy ? util_split_words(copy, &names) : 0;
    free(copy);
  }
  for (size_t i = 0; i < a->n; i++) {
    a->fds[i] = 3 + (int)i;
    util_set_cloexec(a->fds[i], 1);
    if (nn > 0 && i < (size_t)nn)
      a->names[i] = strdup(names[i]);
  }
  util_strv_free(names, nn > 0 ? (size_t)nn : 0);
  log_info("socket activation: %zu socket%s passed", a->n,
           a->n == 1 ? "" : "s");
out:
  /* Our workers are not the process systemd meant. */
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
}

void activation_close(struct activation *a) {
  for (size_t i = 0; i < a->n; i++) {
    close(a->fds[i]);
    free(a->names[i]);
  }
  free(a->fds);
  free(a->names);
  memset(a, 0, sizeof(*a));
}

/* Does the passed socket fd listen where sc says? */
static int fd_matches(int fd, const struct server_conf *sc) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof(ss);
  int type = 0;
  socklen_t tl = sizeof(type);
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0 ||
      getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0)
    return 0;
  if ((type == SOCK_DGRAM) != (sc->type == SERVER_UDP))
    return 0;
  if (sc->type == SERVER_UNIX)
    return ss.ss_family == AF_UNIX &&
           strcmp(((struct sockaddr_un *)&ss)->sun_path, sc->path) == 0;
  char host[INET6_ADDRSTRLEN] = "";
  int port;
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
    port = ntohs(s4->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
    port = ntohs(s6->sin6_port);
  } else {
    return 0;
  }
  if (port != sc->port)
    return 0;
  if (*sc->address == '\0')
    return strcmp(host, "::") == 0 || strcmp(host, "0.0.0.0") == 0;
  unsigned char a[16], b[16];
  int fam = strchr(sc->address, ':') ? AF_INET6 : AF_INET;
  return inet_pton(fam, sc->address, a) == 1 && inet_pton(fam, host, b) == 1 &&
         memcmp(a, b, fam == AF_INET6 ? 16 : 4) == 0;
}

static int activation_find(const struct activation *act,
                           const struct server_conf *sc) {
  for (size_t i = 0; act && i < act->n; i++)
    if (act->names[i] && strcmp(act->names[i], sc->name) == 0)
      return act->fds[i];
  for (size_t i = 0; act && i < act->n; i++)
    if (fd_matches(act->fds[i], sc))
      return act->fds[i];
  return -1;
}

/* ---- binding ------------------------------------------------------------- */

static int dup_cloexec(int fd) {
  int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  return d < 0 ? -errno : d;
}

/* The one socket of a shared server i. 0 or a negative errno. */
static int bind_shared(struct generation *g, size_t i,
                       const struct generation *from,
                       const struct activation *act) {
  const struct server_conf *sc = &g->app.s.servers[i];
  if (g->shared[i] >= 0)
    return 0;
  int j = find_same(from, sc);
  int src = -1;
  if (j >= 0 && from->shared[j] >= 0) {
    src = from->shared[j];
    g->activated[i] = from->activated[j];
  } else if ((src = activation_find(act, sc)) >= 0) {
    g->activated[i] = 1;
  }
  if (src >= 0) {
    int fd = dup_cloexec(src);
    if (fd < 0)
      return fd;
    g->shared[i] = fd;
    return 0;
  }
  if (sc->type != SERVER_UNIX)
    return 1; /* not shared: bound per slot */
  char msg[512];
  int fd = sockets_bind(sc, &g->ports[i], msg, sizeof(msg));
  if (fd < 0) {
    log_error("%s:%d: %s", sc->file, sc->line, msg);
    return fd;
  }
  g->shared[i] = fd;
  return 0;
}

/* Does another slot of g hold a socket for server i? Then binding joins
 * our own SO_REUSEPORT group; otherwise the address is new to us. */
static int bound_elsewhere(const struct generation *g, size_t slot, size_t i) {
  for (size_t k = 0; k < g->nslots_fds; k++)
    if (k != slot && g->fds[k] && g->fds[k][i] >= 0)
      return 1;
  return 0;
}

int generation_bind_slot(struct generation *g, size_t slot,
                         const struct generation *from,
                         const struct activation *act) {
  const struct settings *s = &g->app.s;
  if (slot >= g->nslots_fds) {
    int **fds = realloc(g->fds, (slot + 1) * sizeof(*fds));
    if (fds == NULL)
      return -ENOMEM;
    for (size_t i = g->nslots_fds; i <= slot; i++)
      fds[i] = NULL;
    g->fds = fds;
    g->nslots_fds = slot + 1;
  }
  if (g->fds[slot])
    return 0;
  int *fds = malloc((s->nservers + 1) * sizeof(int));
  if (fds == NULL)
    return -ENOMEM;
  g->fds[slot] = fds;
  for (size_t i = 0; i < s->nservers; i++)
    fds[i] = -1;
  int err = 0;
  for (size_t i = 0; i < s->nservers && err == 0; i++) {
    const struct server_conf *sc = &s->servers[i];
    int r = bind_shared(g, i, from, act);
    if (r < 0) {
      err = r;
      break;
    }
    if (is_shared(g, i)) {
      fds[i] = dup_cloexec(g->shared[i]);
      err = fds[i] < 0 ? fds[i] : 0;
      continue;
    }
    int j = find_same(from, sc);
    if (j >= 0 && slot < from->nslots_fds && from->fds[slot] &&
        from->fds[slot][j] >= 0) {
      fds[i] = dup_cloexec(from->fds[slot][j]);
      err = fds[i] < 0 ? fds[i] : 0;
      continue;
    }
    char msg[512];
    int fd = j < 0 && !bound_elsewhere(g, slot, i)
                 ? sockets_probe(sc, g->ports[i], msg, sizeof(msg))
                 : 0;
    if (fd == 0)
      fd = sockets_bind(sc, &g->ports[i], msg, sizeof(msg));
    if (fd < 0) {
      log_error("%s:%d: %s", sc->file, sc->line, msg);
      err = fd;
      break;
    }
    fds[i] = fd;
  }
  if (err)
    generation_close_slot(g, slot);
  return err;
}
