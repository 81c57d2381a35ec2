/*
 * control.c - the master's control socket: a unix socket (mode 0600, and
 * only the master's own user or root may talk to it) that takes one JSON
 * request per line and answers each with one JSON line. `aio reload`,
 * `aio stop`, `aio status`, `aio emit` and `aio scale` are its clients.
 * A malformed request gets an error reply; a client that sends more than
 * CTL_MAX_REQUEST without a newline is cut off.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "cluster.h"
#include "ctl.h"
#include "log.h"
#include "master.h"
#include "util.h"

struct client {
  uv_pipe_t h;
  struct control *ctl;
  struct util_buf in;
  int waiting_reload; /* answer when the reload finishes */
  int closing;
  struct client *next;
};

struct control {
  uv_pipe_t server;
  struct master *m;
  char *path;
  struct client *clients;
  int server_closed; /* freed when the server and every client are */
};

static void on_client_closed(uv_handle_t *h) {
  struct client *c = h->data;
  struct control *ctl = c->ctl;
  for (struct client **cc = &ctl->clients; *cc; cc = &(*cc)->next)
    if (*cc == c) {
      *cc = c->next;
      break;
    }
  free(c->in.data);
  free(c);
  if (ctl->server_closed && ctl->clients == NULL) {
    free(ctl->path);
    free(ctl);
  }
}

static void client_close(struct client *c) {
  if (c->closing)
    return;
  c->closing = 1;
  uv_close((uv_handle_t *)&c->h, on_client_closed);
}

struct reply {
  uv_write_t req;
  char *line;
};

static void on_reply_written(uv_write_t *req, int status) {
  struct reply *r = (struct reply *)req;
  (void)status;
  free(r->line);
  free(r);
}

/* Send a reply (steals it). */
static void client_reply(struct client *c, json_t *reply) {
  char *s = json_dumps(reply, JSON_COMPACT);
  json_decref(reply);
  if (s == NULL || c->closing) {
    free(s);
    return;
  }
  size_t n = strlen(s);
  char *line = realloc(s, n + 2);
  struct reply *r = malloc(sizeof(*r));
  if (line == NULL || r == NULL) {
    free(line ? line : s);
    free(r);
    return;
  }
  line[n] = '\n';
  r->line = line;
  uv_buf_t b = uv_buf_init(line, (unsigned)(n + 1));
  if (uv_write(&r->req, (uv_stream_t *)&c->h, &b, 1, on_reply_written)) {
    free(line);
    free(r);
  }
}

static json_t *error_reply(const char *msg) {
  return json_pack("{s:b,s:s}", "ok", 0, "error", msg);
}

/* Refused for now (a reload in flight, a shutdown): try again later. */
static json_t *busy_reply(const char *msg) {
  return json_pack("{s:b,s:s,s:i}", "ok", 0, "error", msg, "code",
                   EXIT_TEMPFAIL);
}

/* RSS and private (unshared) memory of pid, in bytes; -1 when unknown. */
static void proc_memory(pid_t pid, long long *rss, long long *priv) {
  char path[64], line[256];
  *rss = *priv = -1;
  snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
  FILE *f = fopen(path, "re");
  if (f == NULL)
    return;
  long long kb, pc = 0, pd = 0;
  while (fgets(line, sizeof(line), f)) {
    if (sscanf(line, "Rss: %lld kB", &kb) == 1)
      *rss = kb * 1024;
    else if (sscanf(line, "Private_Clean: %lld kB", &kb) == 1)
      pc = kb;
    else if (sscanf(line, "Private_Dirty: %lld kB", &kb) == 1)
      pd = kb;
  }
  fclose(f);
  *priv = (pc + pd) * 1024;
}

static const char *const wproc_state_names[] = {
#define WPROC_NAME(e, s) s,
    WPROC_STATES(WPROC_NAME)
#undef WPROC_NAME
};

static json_t *status_reply(struct master *m) {
  uint64_t now = uv_now(m->loop);
  json_t *workers = json_array();
  for (struct wproc *p = m->procs; p; p = p->next) {
    long long rss, priv;
    proc_memory(p->pid, &rss, &priv);
    json_array_append_new(
        workers,
        json_pack("{s:i,s:i,s:s,s:i,s:f,s:i,s:I,s:I,s:I,s:o}", "slot", p->slot,
                  "pid", (int)p->pid, "state", wproc_state_names[p->state],
                  "generation", (int)p->g->id, "uptime",
                  (double)(now - p->started_ms) / 1000.0, "restarts",
                  (int)p->restarts, "connections", (json_int_t)p->conns, "rss",
                  (json_int_t)rss, "private", (json_int_t)priv, "bus",
                  router_proc_status(p)));
  }
  long long rss, priv;
  proc_memory(getpid(), &rss, &priv);
  return json_pack("{s:b,s:i,s:s,s:f,s:s,s:i,s:i,s:i,s:b,s:I,s:I,s:o,s:o}",
                   "ok", 1, "pid", (int)getpid(), "version", AIO_VERSION,
                   "uptime", (double)(now - m->start_ms) / 1000.0, "config",
                   m->config_path, "generation", (int)m->gen->id, "workers",
                   (int)m->nslots, "reloads", (int)m->reloads, "reloading",
                   m->next_gen != NULL, "rss", (json_int_t)rss, "backlog",
                   (json_int_t)router_backlog(m), "procs", workers, "cluster",
                   cluster_status(m));
}

static void handle(struct client *c, const char *line, size_t len) {
  struct master *m = c->ctl->m;
  struct ctl_req req;
  char err[256];
  if (ctl_decode(line, len, &req, err, sizeof(err))) {
    client_reply(c, error_reply(err));
    return;
  }
  log_debug("control: %s", ctl_cmd_name(req.cmd));
  switch (req.cmd) {
  case CTL_STATUS:
    client_reply(c, status_reply(m));
    break;
  case CTL_RELOAD: {
    char *why = NULL;
    c->waiting_reload = 1;
    if (reload_start(m, &why)) {
      /* reload_start has already answered waiters when it failed after
       * starting; answer here when it refused to start at all. */
      if (c->waiting_reload) {
        c->waiting_reload = 0;
        client_reply(c, busy_reply(why ? why : "reload refused"));
      }
    }
    free(why);
    break;
  }
  case CTL_STOP:
    client_reply(c, json_pack("{s:b,s:s,s:i}", "ok", 1, "stopping",
                              req.now ? "immediate" : "graceful", "pid",
                              (int)getpid()));
    master_begin_stop(m, req.now ? 2 : 1);
    break;
  case CTL_EMIT:
    router_emit(m, req.signal, req.data);
    client_reply(c, json_pack("{s:b}", "ok", 1));
    break;
  case CTL_SCALE:
    if (m->next_gen) {
      client_reply(c, busy_reply("a reload is in progress"));
    } else if (m->stopping) {
      client_reply(c, busy_reply("the master is shutting down"));
    } else {
      master_scale(m, (size_t)req.workers);
      client_reply(c,
                   json_pack("{s:b,s:i}", "ok", 1, "workers", (int)m->nslots));
    }
    break;
  default:
    client_reply(c, error_reply("unknown command"));
  }
  ctl_req_close(&req);
}

static void on_client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  static char slab[16384];
  buf->base = slab;
  buf->len = sizeof(slab);
}

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct client *c = s->data;
  if (nread == 0)
    return;
  if (nread < 0) {
    client_close(c);
    return;
  }
  if (util_buf_add(&c->in, buf->base, (size_t)nread)) {
    client_close(c);
    return;
  }
  char *nl;
  while (!c->closing && (nl = memchr(c->in.data, '\n', c->in.len)) != NULL) {
    size_t len = (size_t)(nl - c->in.data);
    handle(c, c->in.data, len);
    util_buf_consume(&c->in, len + 1);
  }
  if (c->in.len > CTL_MAX_REQUEST) {
    client_reply(c, error_reply("request too large"));
    client_close(c);
  }
}

static int peer_allowed(int fd) {
  struct ucred cr;
  socklen_t len = sizeof(cr);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
    return 0;
  return cr.uid == 0 || cr.uid == geteuid();
}

static void on_connection(uv_stream_t *server, int status) {
  struct control *ctl = server->data;
  if (status < 0)
    return;
  struct client *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return;
  c->ctl = ctl;
  uv_pipe_init(ctl->m->loop, &c->h, 0);
  c->h.data = c;
  c->next = ctl->clients;
  ctl->clients = c;
  if (uv_accept(server, (uv_stream_t *)&c->h)) {
    client_close(c);
    return;
  }
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->h, &fd) || !peer_allowed(fd)) {
    log_warnx("control: refused a client of another user");
    client_close(c);
    return;
  }
  uv_read_start((uv_stream_t *)&c->h, on_client_alloc, on_client_read);
}

/* Is someone answering on path? */
static int path_in_use(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return 0;
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
  int r = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
  close(fd);
  return r == 0;
}

int control_open(struct master *m) {
  struct control *ctl = calloc(1, sizeof(*ctl));
  if (ctl == NULL)
    return -ENOMEM;
  ctl->m = m;
  ctl->path = ctl_socket_path(&m->gen->app.s, m->config_path);
  if (ctl->path == NULL || strlen(ctl->path) >= 108) {
    log_error("control socket path is too long: %s", ctl->path);
    free(ctl->path);
    free(ctl);
    return -ENAMETOOLONG;
  }
  if (path_in_use(ctl->path)) {
    log_error("another aio master is running on this configuration "
              "(control socket %s answers); not starting a second one",
              ctl->path);
    free(ctl->path);
    free(ctl);
    return -EADDRINUSE;
  }
  if (strncmp(ctl->path, "/run/aio/", 9) == 0)
    mkdir("/run/aio", 0755); /* the default for root; systemd's
                                RuntimeDirectory=aio makes it too */
  unlink(ctl->path);
  uv_pipe_init(m->loop, &ctl->server, 0);
  ctl->server.data = ctl;
  mode_t old = umask(0177); /* the socket is created 0600 */
  int err = uv_pipe_bind(&ctl->server, ctl->path);
  umask(old);
  if (err == 0)
    err = uv_listen((uv_stream_t *)&ctl->server, 16, on_connection);
  if (err) {
    log_error("cannot open the control socket %s: %s", ctl->path,
              uv_strerror(err));
    uv_close((uv_handle_t *)&ctl->server, NULL);
    uv_run(m->loop, UV_RUN_NOWAIT);
    free(ctl->path);
    free(ctl);
    return err;
  }
  chmod(ctl->path, 0600);
  m->ctl = ctl;
  log_info("control socket %s", ctl->path);
  return 0;
}

static void on_server_closed(uv_handle_t *h) {
  struct control *ctl = h->data;
  ctl->server_closed = 1;
  if (ctl->clients == NULL) {
    free(ctl->path);
    free(ctl);
  }
}

void control_close(struct master *m) {
  struct control *ctl = m->ctl;
  if (ctl == NULL)
    return;
  m->ctl = NULL;
  /* Unlink so `aio status` says nobody is running. Replies already
   * handed to uv_write went out at once (libuv writes immediately when
   * nothing is queued), so closing the clients loses nothing. */
  unlink(ctl->path);
  for (struct client *c = ctl->clients; c; c = c->next) {
    if (c->waiting_reload) {
      c->waiting_reload = 0;
      client_reply(c, busy_reply("the master is shutting down"));
    }
    client_close(c);
  }
  uv_close((uv_handle_t *)&ctl->server, on_server_closed);
}

void control_reload_done(struct master *m, int code, json_t *errors) {
  if (m->ctl == NULL)
    return;
  for (struct client *c = m->ctl->clients; c; c = c->next) {
    if (!c->waiting_reload)
      continue;
    c->waiting_reload = 0;
    if (code == 0)
      client_reply(
          c, json_pack("{s:b,s:i}", "ok", 1, "generation", (int)m->gen->id));
    else
      client_reply(c, json_pack("{s:b,s:s,s:o,s:i}", "ok", 0, "error",
                                "reload failed", "errors",
                                errors ? json_incref(errors) : json_array(),
                                "code", code));
  }
}
