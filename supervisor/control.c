/*
 * control.c - the master's control socket: a unix socket (mode 0600, and
 * only the master's own user or root may talk to it) that takes one JSON
 * request per line and answers each with one JSON line. `aio reload`,
 * `aio stop`, `aio status`, `aio emit` and `aio scale` are its clients.
 * A malformed request gets an error reply; a client that sends more than
 * CTL_MAX_REQUEST without a newline is cut off.
 *
 * Bounded: a client is read only while its replies drain. Past [aio]
 * control_buffer bytes of replies waiting, reading it stops until they
 * are written; one that has not read for [aio] control_timeout while
 * replies wait is dropped; a loop turn answers at most CONTROL_BATCH
 * requests of a client; past CONTROL_MAX_CLIENTS connections, more are
 * refused. Each refusal is counted in `aio status`.
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
#include "ctl.h"
#include "log.h"
#include "master.h"
#include "upgrade.h"
#include "util.h"

/* Requests of one client answered in one loop turn (a status reply reads
 * /proc for every worker: a few of them are already a slice). */
#define CONTROL_BATCH 8
/* Connections at once; more are answered busy and closed. */
#define CONTROL_MAX_CLIENTS 64
/* How often slow readers are looked for. */
#define CONTROL_SWEEP_MS 500
/* An input buffer above this is given back once empty. */
#define CONTROL_IN_KEEP (16 * 1024)

struct client {
  uv_pipe_t h;
  struct control *ctl;
  struct util_buf in;   /* received, not yet handled (bounded: reading stops
                           while whole requests wait in it) */
  uint64_t progress_ms; /* last sign of life: a read, replies drained (or
                           beginning to wait) */
  int reading;
  int full;                /* not read until its replies drain */
  unsigned waiting_reload; /* answer when the reload of this number
                              (master's reload_serial) finishes; 0: none */
  int closing;
  size_t replies; /* written to libuv, not to the socket yet */
  struct client *next;
};

struct control {
  uv_pipe_t server;
  uv_timer_t sweep; /* drops clients that do not read their replies */
  uv_idle_t pump;   /* answers the requests left over from a turn */
  struct master *m;
  char *path;
  struct client *clients;
  size_t nclients;
  uint64_t refused; /* connections past CONTROL_MAX_CLIENTS */
  uint64_t dropped; /* clients that did not read for control_timeout */
  uint64_t paused;  /* times a client was not read for its replies */
  size_t high;      /* most reply bytes one client had waiting */
  int handles;      /* open: server, sweep, pump; freed with the last */
};

static void control_free(struct control *ctl) {
  free(ctl->path);
  free(ctl);
}

static void control_release(struct control *ctl) {
  if (--ctl->handles == 0 && ctl->clients == NULL)
    control_free(ctl);
}

static void on_client_closed(uv_handle_t *h) {
  struct client *c = h->data;
  struct control *ctl = c->ctl;
  for (struct client **cc = &ctl->clients; *cc; cc = &(*cc)->next)
    if (*cc == c) {
      *cc = c->next;
      break;
    }
  ctl->nclients--;
  free(c->in.data);
  free(c);
  if (ctl->handles == 0 && ctl->clients == NULL)
    control_free(ctl);
}

static void client_close(struct client *c) {
  if (c->closing)
    return;
  c->closing = 1;
  uv_close((uv_handle_t *)&c->h, on_client_closed);
}

/* Replies waiting to be written to one client before it is read no more
 * ([aio] control_buffer; a status reply is about 1 KiB, more with many
 * workers). */
static size_t queue_max(const struct control *ctl) {
  return ctl->m->gen->app.s.control_buffer;
}

static size_t client_queued(const struct client *c) {
  return uv_stream_get_write_queue_size((const uv_stream_t *)&c->h);
}

static void client_pump(struct client *c);
static void on_pump(uv_idle_t *h);

struct reply {
  uv_write_t req;
  char *line;
};

static void on_reply_written(uv_write_t *req, int status) {
  struct reply *r = (struct reply *)req;
  struct client *c = req->handle->data;
  free(r->line);
  free(r);
  c->replies--;
  if (status < 0 || c->closing)
    return;
  c->progress_ms = uv_now(c->ctl->m->loop);
  /* Drained below half: its next requests, on the pump's turn (many
   * writes complete in one turn, and each must not answer a batch). */
  if (c->full && client_queued(c) <= queue_max(c->ctl) / 2) {
    c->full = 0;
    uv_idle_start(&c->ctl->pump, on_pump);
  }
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
  if (client_queued(c) == 0)
    c->progress_ms = uv_now(c->ctl->m->loop);
  uv_buf_t b = uv_buf_init(line, (unsigned)(n + 1));
  if (uv_write(&r->req, (uv_stream_t *)&c->h, &b, 1, on_reply_written)) {
    free(line);
    free(r);
    return;
  }
  c->replies++;
  if (client_queued(c) > c->ctl->high)
    c->ctl->high = client_queued(c);
}

static json_t *error_reply(const char *msg) {
  return json_pack("{s:b,s:s}", "ok", 0, "error", msg);
}

/* Refused for now (a reload in flight, a shutdown): try again later. */
static json_t *busy_reply(const char *msg) {
  return json_pack("{s:b,s:s,s:i}", "ok", 0, "error", msg, "code",
                   EXIT_TEMPFAIL);
}

json_t *control_status(const struct master *m) {
  const struct control *ctl = m->ctl;
  if (ctl == NULL)
    return json_null();
  size_t replies = 0, bytes = 0;
  for (const struct client *c = ctl->clients; c; c = c->next) {
    replies += c->replies;
    bytes += client_queued(c);
  }
  return json_pack(
      "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "clients", (json_int_t)ctl->nclients,
      "refused", (json_int_t)ctl->refused, "dropped", (json_int_t)ctl->dropped,
      "paused", (json_int_t)ctl->paused, "replies", (json_int_t)replies,
      "bytes", (json_int_t)bytes, "high_bytes", (json_int_t)ctl->high,
      "limit_bytes", (json_int_t)queue_max(ctl));
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
  case CTL_STATUS: {
    json_t *r = status_reply(m);
    client_reply(c, r);
    break;
  }
  case CTL_RELOAD: {
    char *why = NULL;
    /* The reload that starts now, or the one queued after the reload in
     * flight: either way the next number. */
    c->waiting_reload = m->reload_serial + 1;
    if (reload_start(m, &why) < 0) {
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
    /* The graceful_timeout in force, so `aio stop` waits as long as this
     * master will, not what the file on disk says now. */
    client_reply(c, json_pack("{s:b,s:s,s:i,s:f}", "ok", 1, "stopping",
                              req.now ? "immediate" : "graceful", "pid",
                              (int)getpid(), "graceful_timeout",
                              m->gen->app.s.graceful_timeout));
    master_begin_stop(m, req.now ? MASTER_QUITTING : MASTER_STOPPING);
    break;
  case CTL_UPGRADE: {
    /* Answered by the new image once it serves (this one is gone), or
     * here when it did not get that far. */
    uv_os_fd_t fd = -1;
    char *why = NULL;
    if (uv_fileno((uv_handle_t *)&c->h, &fd))
      fd = -1;
    int code = upgrade_start(m, req.binary, fd, &why);
    client_reply(c, json_pack("{s:b,s:s,s:[s],s:i}", "ok", 0, "error",
                              "upgrade failed", "errors",
                              why ? why : "upgrade failed", "code", code));
    free(why);
    break;
  }
  case CTL_EMIT:
    router_emit(m, req.signal, req.data);
    client_reply(c, json_pack("{s:b}", "ok", 1));
    break;
  case CTL_SCALE:
    if (m->phase == MASTER_RELOADING) {
      client_reply(c, busy_reply("a reload is in progress"));
    } else if (master_stopping(m)) {
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

static void on_client_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void client_read(struct client *c, int on) {
  if (c->reading == on || c->closing)
    return;
  c->reading = on;
  if (on)
    uv_read_start((uv_stream_t *)&c->h, on_client_alloc, on_client_read);
  else
    uv_read_stop((uv_stream_t *)&c->h);
}

/* Answer up to CONTROL_BATCH of the requests c has sent, while its replies
 * are below the bound; then read more only if nothing is left to do. */
static void client_pump(struct client *c) {
  size_t off = 0;
  int done = 0;
  char *nl;
  while (!c->closing && done < CONTROL_BATCH && off < c->in.len &&
         client_queued(c) <= queue_max(c->ctl) &&
         (nl = memchr(c->in.data + off, '\n', c->in.len - off)) != NULL) {
    size_t len = (size_t)(nl - (c->in.data + off));
    handle(c, c->in.data + off, len);
    off += len + 1;
    done++;
  }
  if (c->closing)
    return;
  util_buf_consume(&c->in, off);
  if (c->in.len == 0 && c->in.cap > CONTROL_IN_KEEP) {
    free(c->in.data); /* a burst's buffer is given back */
    c->in = (struct util_buf){0};
  }
  if (c->in.len > CTL_MAX_REQUEST) {
    client_reply(c, error_reply("request too large"));
    client_close(c);
    return;
  }
  int full = client_queued(c) > queue_max(c->ctl);
  int more = c->in.len && memchr(c->in.data, '\n', c->in.len) != NULL;
  if (full && !c->full)
    c->ctl->paused++;
  c->full = full;
  /* Full: on_reply_written resumes. More whole requests: the pump does,
   * next turn. */
  client_read(c, !full && !more);
  if (more && !full)
    uv_idle_start(&c->ctl->pump, on_pump);
}

static void on_pump(uv_idle_t *h) {
  struct control *ctl = h->data;
  uv_idle_stop(h); /* client_pump starts it again while work is left */
  for (struct client *c = ctl->clients; c; c = c->next)
    if (!c->closing && !c->reading && !c->full)
      client_pump(c);
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
  c->progress_ms = uv_now(c->ctl->m->loop);
  client_pump(c);
}

/* A client that leaves its replies unread for control_timeout is gone:
 * it would otherwise hold its queue, and its place, for ever. */
static void on_sweep(uv_timer_t *t) {
  struct control *ctl = t->data;
  uint64_t now = uv_now(ctl->m->loop);
  uint64_t limit = (uint64_t)(ctl->m->gen->app.s.control_timeout * 1000);
  for (struct client *c = ctl->clients; c; c = c->next) {
    size_t q = client_queued(c);
    if (c->closing || q == 0 || now - c->progress_ms < limit)
      continue;
    log_warnx("control: dropped a client that read none of its replies for "
              "%.1f s (%zu bytes waiting)",
              (double)(now - c->progress_ms) / 1000.0, q);
    ctl->dropped++;
    client_close(c);
  }
}

/* At the bound, a client silent for control_timeout with nothing waiting
 * (no reply, no reload) makes room. 1 when one was closed. */
static int evict_idle(struct control *ctl) {
  uint64_t now = uv_now(ctl->m->loop);
  uint64_t limit = (uint64_t)(ctl->m->gen->app.s.control_timeout * 1000);
  struct client *oldest = NULL;
  for (struct client *c = ctl->clients; c; c = c->next)
    if (!c->closing && !c->waiting_reload && client_queued(c) == 0 &&
        now - c->progress_ms >= limit &&
        (oldest == NULL || c->progress_ms < oldest->progress_ms))
      oldest = c;
  if (oldest == NULL)
    return 0;
  ctl->dropped++;
  client_close(oldest);
  return 1;
}

static void on_connection(uv_stream_t *server, int status) {
  struct control *ctl = server->data;
  if (status < 0)
    return;
  struct client *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return;
  c->ctl = ctl;
  c->progress_ms = uv_now(ctl->m->loop);
  uv_pipe_init(ctl->m->loop, &c->h, 0);
  c->h.data = c;
  c->next = ctl->clients;
  ctl->clients = c;
  ctl->nclients++;
  if (uv_accept(server, (uv_stream_t *)&c->h)) {
    client_close(c);
    return;
  }
  uv_os_fd_t fd;
  char why[160] = "unknown credentials";
  if (uv_fileno((uv_handle_t *)&c->h, &fd) ||
      ctl_peer_trusted(fd, why, sizeof(why))) {
    log_warnx("control: refused a client of %s", why);
    client_close(c);
    return;
  }
  if (ctl->nclients > CONTROL_MAX_CLIENTS && !evict_idle(ctl)) {
    /* Accepted only to say so: left in the backlog, it would wait. */
    if (ctl->refused++ == 0)
      log_warnx("control: more than %d clients at once; refusing more "
                "(counted in aio status)",
                CONTROL_MAX_CLIENTS);
    client_reply(c, busy_reply("too many control clients; try again"));
    client_close(c);
    return;
  }
  client_read(c, 1);
}

/* Is someone answering on path? 0: nobody; -EADDRINUSE: a master of ours
 * (or root's); -EPERM: another user, who has taken the path (why says
 * who). */
static int path_in_use(const char *path, char *why, size_t n) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return 0;
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
  int rc = 0;
  if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
    rc = ctl_peer_trusted(fd, why, n) == -EPERM ? -EPERM : -EADDRINUSE;
  close(fd);
  return rc;
}

int control_open(struct master *m) {
  struct control *ctl = calloc(1, sizeof(*ctl));
  if (ctl == NULL)
    return -ENOMEM;
  ctl->m = m;
  ctl->path = ctl_socket_path(&m->gen->app.s, m->config_path);
  if (ctl->path == NULL || strlen(ctl->path) >= 108) {
    log_error("control socket path is too long: %s", ctl->path);
    control_free(ctl);
    return -ENAMETOOLONG;
  }
  char why[256];
  int err = ctl_socket_dir(ctl->path, 1, why, sizeof(why));
  if (err == -EPERM)
    log_error("control socket directory refused: %s; remove it (someone "
              "else may have made it to take over the control socket), or "
              "set [aio] control",
              why);
  else if (err)
    log_error("control socket directory: %s", why);
  if (err) {
    control_free(ctl);
    return err;
  }
  int handed = upgrade_control_fd(m, ctl->path);
  err = handed >= 0 ? 0 : path_in_use(ctl->path, why, sizeof(why));
  if (err == -EPERM) {
    log_error("the control socket %s answers for %s: someone else has "
              "taken the path; not starting (set [aio] control elsewhere)",
              ctl->path, why);
    control_free(ctl);
    return -EPERM;
  }
  if (err) {
    log_error("another aio master is running on this configuration "
              "(control socket %s answers); not starting a second one",
              ctl->path);
    control_free(ctl);
    return -EADDRINUSE;
  }
  uv_pipe_init(m->loop, &ctl->server, 0);
  ctl->server.data = ctl;
  if (handed >= 0) {
    /* The image an upgrade replaced listened here: the clients that
     * connected meanwhile wait in its backlog. */
    err = uv_pipe_open(&ctl->server, handed);
    if (err)
      close(handed);
  } else {
    unlink(ctl->path);
    mode_t old = umask(0177); /* the socket is created 0600 */
    err = uv_pipe_bind(&ctl->server, ctl->path);
    umask(old);
  }
  if (err == 0)
    err = uv_listen((uv_stream_t *)&ctl->server, 16, on_connection);
  if (err) {
    log_error("cannot open the control socket %s: %s", ctl->path,
              uv_strerror(err));
    uv_close((uv_handle_t *)&ctl->server, NULL);
    uv_run(m->loop, UV_RUN_NOWAIT);
    control_free(ctl);
    return err;
  }
  chmod(ctl->path, 0600);
  ctl->handles = 3;
  uv_timer_init(m->loop, &ctl->sweep);
  ctl->sweep.data = ctl;
  uv_timer_start(&ctl->sweep, on_sweep, CONTROL_SWEEP_MS, CONTROL_SWEEP_MS);
  uv_idle_init(m->loop, &ctl->pump);
  ctl->pump.data = ctl;
  m->ctl = ctl;
  log_info("control socket %s", ctl->path);
  return 0;
}

static void on_handle_closed(uv_handle_t *h) { control_release(h->data); }

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
  uv_close((uv_handle_t *)&ctl->server, on_handle_closed);
  uv_close((uv_handle_t *)&ctl->sweep, on_handle_closed);
  uv_close((uv_handle_t *)&ctl->pump, on_handle_closed);
}

const char *control_path(const struct master *m) {
  return m->ctl ? m->ctl->path : NULL;
}

int control_fd(const struct master *m, int *fd) {
  uv_os_fd_t f;
  if (m->ctl == NULL || uv_fileno((const uv_handle_t *)&m->ctl->server, &f))
    return -1;
  *fd = f;
  return 0;
}

void control_reload_done(struct master *m, int code, json_t *errors) {
  if (m->ctl == NULL)
    return;
  for (struct client *c = m->ctl->clients; c; c = c->next) {
    if (!c->waiting_reload || c->waiting_reload > m->reload_serial)
      continue; /* waits for the queued reload */
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
