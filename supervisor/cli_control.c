/*
 * cli_control.c - the clients of the master's control socket: `aio reload`,
 * `aio stop [--now]`, `aio status [--json]`, `aio emit SIGNAL [JSON]`,
 * `aio scale N`. Each finds the socket from the same configuration the
 * master read and exits 69 with a clear message when no master answers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "cli.h"
#include "config.h"
#include "ctl.h"
#include "settings_keys.h"
#include "util.h"

/* Why a request got no reply, on stderr unless quiet. */
static void __attribute__((format(printf, 2, 3)))
ctl_say(int quiet, const char *fmt, ...) {
  if (quiet)
    return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
}

/* The reply to one request, or NULL after saying why (unless quiet).
 * *code gets the exit status to use when NULL. */
static json_t *ctl_call_q(const char *config_path, json_t *req, int timeout_ms,
                          int quiet, int *code) {
  char *path = cli_config_path(config_path);
  if (path == NULL) {
    *code = EXIT_CONFIG;
    return NULL;
  }
  char *sock = ctl_socket_path_lenient(path);
  json_t *reply = NULL;
  int fd = -1;
  char why[256];
  int err = sock ? ctl_socket_dir(sock, 0, why, sizeof(why)) : 0;
  if (err && err != -ENOENT) {
    ctl_say(quiet,
            "aio: refusing the control socket %s: %s (someone else may "
            "have made it to take over the control socket)\n",
            sock, why);
    *code = EXIT_NOPERM;
    goto out;
  }
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sock ? sock : "");
  if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
    ctl_say(quiet, "aio: no master is running for %s (control socket %s: %s)\n",
            path, sock ? sock : "?", strerror(errno));
    *code = EXIT_UNAVAILABLE;
    goto out;
  }
  /* Before a byte is sent: a request may say stop, and the reply is
   * believed. */
  if (ctl_peer_trusted(fd, why, sizeof(why))) {
    ctl_say(quiet,
            "aio: refusing to talk to the control socket %s: it is served "
            "by %s; it is not your master (someone else may have taken the "
            "path)\n",
            sock, why);
    *code = EXIT_NOPERM;
    goto out;
  }
  char *line = json_dumps(req, JSON_COMPACT);
  if (line == NULL) {
    ctl_say(quiet, "aio: the request cannot be encoded\n");
    *code = EXIT_USAGE;
    goto out;
  }
  struct util_buf out = {0};
  util_buf_printf(&out, "%s\n", line);
  free(line);
  /* EPIPE: the master may have answered and closed at once (busy, too
   * many clients); its answer is read below. */
  int sent = send(fd, out.data, out.len, MSG_NOSIGNAL) == (ssize_t)out.len;
  int cut = !sent && errno == EPIPE;
  if (!sent && !cut) {
    ctl_say(quiet, "aio: cannot talk to the master: %s\n", strerror(errno));
    free(out.data);
    *code = EXIT_UNAVAILABLE;
    goto out;
  }
  free(out.data);
  struct util_buf in = {0};
  long long deadline = (long long)util_now_ms() + timeout_ms;
  while (memchr(in.data ? in.data : "", '\n', in.len) == NULL) {
    long long left = deadline - (long long)util_now_ms();
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int ready = left > 0 ? poll(&pfd, 1, (int)left) : 0;
    if (ready < 0 && errno == EINTR)
      continue;
    if (ready <= 0) {
      ctl_say(quiet, "aio: no answer from the master within %d s\n",
              timeout_ms / 1000);
      *code = EXIT_TEMPFAIL;
      free(in.data);
      goto out;
    }
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    util_buf_add(&in, buf, (size_t)n);
  }
  reply = in.data ? json_loads(in.data, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
  free(in.data);
  if (reply == NULL && cut) {
    ctl_say(quiet, "aio: cannot talk to the master: %s\n", strerror(EPIPE));
    *code = EXIT_UNAVAILABLE;
  } else if (!json_is_object(reply)) {
    ctl_say(quiet, "aio: the master sent no valid answer\n");
    json_decref(reply);
    reply = NULL;
    *code = EXIT_SOFTWARE;
  }
out:
  if (fd >= 0)
    close(fd);
  free(sock);
  free(path);
  return reply;
}

static json_t *ctl_call(const char *config_path, json_t *req, int timeout_ms,
                        int *code) {
  return ctl_call_q(config_path, req, timeout_ms, 0, code);
}

int cli_emit(const char *config_path, const char *signal, const json_t *data) {
  json_t *req = json_pack("{s:s,s:s,s:O}", "cmd", "emit", "signal", signal,
                          "data", data ? (json_t *)data : json_null());
  if (req == NULL)
    return -EINVAL;
  /* What the master would refuse, refused here with the bus's own code. */
  char *line = json_dumps(req, JSON_COMPACT);
  size_t len = line ? strlen(line) : 0;
  free(line);
  if (line == NULL || len >= CTL_MAX_REQUEST) {
    json_decref(req);
    return line == NULL ? -EINVAL : -EMSGSIZE;
  }
  int code = 0;
  json_t *reply = ctl_call_q(config_path, req, CLI_EMIT_TIMEOUT_MS, 1, &code);
  json_decref(req);
  if (reply == NULL)
    return code == EXIT_UNAVAILABLE ? -ENOTCONN
           : code == EXIT_NOPERM    ? -EACCES
           : code == EXIT_TEMPFAIL  ? -ETIMEDOUT
           : code == EXIT_CONFIG    ? -ENOENT
                                    : -EPROTO;
  int ok = json_is_true(json_object_get(reply, "ok"));
  json_decref(reply);
  return ok ? 0 : -EPROTO;
}

static int reply_ok(json_t *reply, const char *what) {
  if (json_is_true(json_object_get(reply, "ok")))
    return 1;
  fprintf(stderr, "aio %s: %s\n", what,
          json_string_value(json_object_get(reply, "error"))
              ? json_string_value(json_object_get(reply, "error"))
              : "failed");
  size_t i;
  json_t *e;
  json_array_foreach(json_object_get(reply, "errors"), i, e)
      fprintf(stderr, "%s\n", json_string_value(e));
  return 0;
}

static void fmt_bytes(long long b, char *out, size_t n) {
  if (b < 0)
    snprintf(out, n, "-");
  else if (b < 1024)
    snprintf(out, n, "%lldB", b);
  else if (b >= 10 * 1024 * 1024)
    snprintf(out, n, "%lldM", b / (1024 * 1024));
  else if (b >= 1024 * 1024)
    snprintf(out, n, "%.1fM", (double)b / (1024.0 * 1024.0));
  else
    snprintf(out, n, "%lldK", b / 1024);
}

static long long ival(const json_t *o, const char *key) {
  return (long long)json_integer_value(json_object_get(o, key));
}

/* The cluster line of `aio status`, and `aio status --cluster`: the live
 * nodes the master saw at its last read (docs/cluster.md). */
static void print_cluster(json_t *r, int nodes) {
  json_t *c = json_object_get(r, "cluster");
  const char *state = json_string_value(json_object_get(c, "state"));
  if (state == NULL || strcmp(state, "off") == 0) {
    printf("cluster off\n");
    return;
  }
  json_t *q = json_object_get(c, "queue"), *cl = json_object_get(c, "claims");
  printf("cluster %s, node %s, %s", state,
         json_string_value(json_object_get(c, "node")),
         json_string_value(json_object_get(c, "redis")));
  if (json_object_get(c, "down_since")) {
    time_t t = (time_t)json_number_value(json_object_get(c, "down_since"));
    char when[32];
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime(&t));
    printf(" (down since %s: %s)", when,
           json_string_value(json_object_get(c, "last_error")));
  }
  printf("\n  %zu peer%s, %lld outstanding, %lld refused; claims won %lld, "
         "lost %lld, failed %lld, skipped %lld, local %lld\n",
         json_array_size(json_object_get(c, "peers")),
         json_array_size(json_object_get(c, "peers")) == 1 ? "" : "s",
         ival(q, "outstanding"), ival(q, "refused"), ival(cl, "won"),
         ival(cl, "lost"), ival(cl, "failed"), ival(cl, "skipped"),
         ival(cl, "local"));
  json_t *sg = json_object_get(c, "signals");
  if (ival(sg, "streams") > 0 || ival(sg, "emitted") > 0)
    printf("  signals: %lld queued, %lld dropped, %lld added, %lld ran, "
           "%lld claimed, %lld dead; reader %s\n",
           ival(sg, "queued"), ival(sg, "dropped"), ival(sg, "added"),
           ival(sg, "ran"), ival(sg, "claimed"), ival(sg, "dead"),
           json_string_value(json_object_get(sg, "reader")));
  if (!nodes)
    return;
  printf("%-20s %-8s %-10s %-4s %-8s %s\n", "NODE", "PID", "VERSION", "GEN",
         "WORKERS", "SEEN");
  size_t i;
  json_t *p;
  json_array_foreach(json_object_get(c, "peers"), i, p) {
    printf("%-20s %-8lld %-10s %-4lld %-8lld %.1fs ago\n",
           json_string_value(json_object_get(p, "node")),
           (long long)json_integer_value(json_object_get(p, "pid")),
           json_string_value(json_object_get(p, "version")),
           (long long)json_integer_value(json_object_get(p, "generation")),
           (long long)json_integer_value(json_object_get(p, "workers")),
           json_number_value(json_object_get(p, "seen_ago")));
  }
}

/* Per server, over every worker that ever ran. */
static void print_servers(json_t *servers) {
  if (json_object_size(servers) == 0)
    return;
  printf("%-12s %-10s %-6s %-8s %-8s %-8s %-8s %-8s %-9s %s\n", "SERVER",
         "ACCEPTED", "OPEN", "REFUSED", "PAUSED", "IDLE-TO", "SEND-TO",
         "DEADLINE", "READ", "WRITTEN");
  const char *name;
  json_t *v;
  json_object_foreach(servers, name, v) {
    char rd[32], wr[32];
    fmt_bytes((long long)json_integer_value(json_object_get(v, "bytes_read")),
              rd, sizeof(rd));
    fmt_bytes(
        (long long)json_integer_value(json_object_get(v, "bytes_written")), wr,
        sizeof(wr));
    printf("%-12s %-10lld %-6lld %-8lld %-8lld %-8lld %-8lld %-8lld %-9s %s\n",
           name, (long long)json_integer_value(json_object_get(v, "accepted")),
           (long long)json_integer_value(json_object_get(v, "open")),
           (long long)json_integer_value(json_object_get(v, "refused")),
           (long long)json_integer_value(json_object_get(v, "accept_paused")),
           (long long)json_integer_value(json_object_get(v, "idle_timeout")),
           (long long)json_integer_value(json_object_get(v, "send_timeout")),
           (long long)json_integer_value(json_object_get(v, "deadline")), rd,
           wr);
  }
}

/* Workers replaced, by reason, summed over the slots, and what recycling
 * did (its triggers); nothing when no worker was ever replaced. */
static void print_replaced(json_t *r) {
  long long by[8] = {0};
  const char *names[8] = {0};
  size_t nr = 0, k;
  json_t *sl;
  json_array_foreach(json_object_get(r, "slots"), k, sl) {
    const char *key;
    json_t *v;
    size_t i = 0;
    json_object_foreach(json_object_get(sl, "replaced"), key, v) {
      if (i >= 8)
        break;
      names[i] = key;
      by[i++] += (long long)json_integer_value(v);
    }
    nr = i > nr ? i : nr;
  }
  long long all = 0;
  for (size_t i = 0; i < nr; i++)
    all += by[i];
  if (all == 0)
    return;
  printf("workers replaced:");
  for (size_t i = 0; i < nr; i++)
    printf("%s %s %lld", i ? "," : "", names[i], by[i]);
  printf("\n");
  json_t *rc = json_object_get(r, "recycles");
  if (json_is_object(rc))
    printf("recycled: requests %lld, lifetime %lld, memory %lld; %lld "
           "replacement%s failed, %lld in flight\n",
           (long long)json_integer_value(json_object_get(rc, "requests")),
           (long long)json_integer_value(json_object_get(rc, "lifetime")),
           (long long)json_integer_value(json_object_get(rc, "memory")),
           (long long)json_integer_value(json_object_get(rc, "failed")),
           json_integer_value(json_object_get(rc, "failed")) == 1 ? "" : "s",
           (long long)json_integer_value(json_object_get(rc, "in_flight")));
}

static void print_status(json_t *r) {
  printf("master pid %lld, up %.1f s, generation %lld%s, %lld worker%s, "
         "%lld reload%s\nconfig %s\n",
         (long long)json_integer_value(json_object_get(r, "pid")),
         json_real_value(json_object_get(r, "uptime")),
         (long long)json_integer_value(json_object_get(r, "generation")),
         json_is_true(json_object_get(r, "reloading")) ? " (reloading)" : "",
         (long long)json_integer_value(json_object_get(r, "workers")),
         json_integer_value(json_object_get(r, "workers")) == 1 ? "" : "s",
         (long long)json_integer_value(json_object_get(r, "reloads")),
         json_integer_value(json_object_get(r, "reloads")) == 1 ? "" : "s",
         json_string_value(json_object_get(r, "config")));
  json_t *ctl = json_object_get(r, "control");
  if (ctl)
    printf("control: %lld client%s, %lld refused, %lld dropped (unread "
           "replies), %lld paused\n",
           (long long)json_integer_value(json_object_get(ctl, "clients")),
           json_integer_value(json_object_get(ctl, "clients")) == 1 ? "" : "s",
           (long long)json_integer_value(json_object_get(ctl, "refused")),
           (long long)json_integer_value(json_object_get(ctl, "dropped")),
           (long long)json_integer_value(json_object_get(ctl, "paused")));
  const char *problem = json_string_value(json_object_get(r, "problem"));
  if (problem)
    printf("WARNING: %s\n", problem);
  json_int_t failures =
      json_integer_value(json_object_get(r, "start_failures"));
  if (failures > 0)
    printf("%lld failed start%s of a worker (before it existed; retried)\n",
           (long long)failures, failures == 1 ? "" : "s");
  print_replaced(r);
  size_t k;
  json_t *sl;
  json_array_foreach(json_object_get(r, "slots"), k, sl) {
    const char *st = json_string_value(json_object_get(sl, "state"));
    if (st && strcmp(st, "running") != 0)
      printf("slot %lld %s: %s\n",
             (long long)json_integer_value(json_object_get(sl, "slot")), st,
             json_string_value(json_object_get(sl, "why")));
  }
  print_cluster(r, 0);
  json_t *mt = json_object_get(r, "metrics");
  if (json_is_object(mt))
    printf("metrics: %s, %lld request%s, %lld too large, %lld timed out, "
           "%lld evicted, %lld refused\n",
           json_string_value(json_object_get(mt, "address")),
           (long long)json_integer_value(json_object_get(mt, "requests")),
           json_integer_value(json_object_get(mt, "requests")) == 1 ? "" : "s",
           (long long)json_integer_value(json_object_get(mt, "too_large")),
           (long long)json_integer_value(json_object_get(mt, "timed_out")),
           (long long)json_integer_value(json_object_get(mt, "evicted")),
           (long long)json_integer_value(json_object_get(mt, "refused")));
  print_servers(json_object_get(r, "servers"));
  printf("%-5s %-8s %-9s %-4s %-9s %-8s %-6s %-7s %-7s %-7s %-7s %-12s %-4s "
         "%s\n",
         "SLOT", "PID", "STATE", "GEN", "UPTIME", "RESTARTS", "CONNS", "RSS",
         "PRIVATE", "PENDING", "REFUSED", "SOON-REFUSED", "CPU", "OUTPUT");
  size_t i;
  json_t *w;
  json_array_foreach(json_object_get(r, "procs"), i, w) {
    char rss[32], priv[32], up[32];
    fmt_bytes((long long)json_integer_value(json_object_get(w, "rss")), rss,
              sizeof(rss));
    fmt_bytes((long long)json_integer_value(json_object_get(w, "private")),
              priv, sizeof(priv));
    snprintf(up, sizeof(up), "%.1fs",
             json_real_value(json_object_get(w, "uptime")));
    json_t *bus = json_object_get(w, "bus");
    char cpu[16] = "-", output[96];
    json_t *c = json_object_get(w, "cpu"), *o = json_object_get(w, "output");
    if (json_is_integer(c))
      snprintf(cpu, sizeof(cpu), "%lld", (long long)json_integer_value(c));
    /* Lines logged, of which cut, and the bytes cut lines lost. */
    snprintf(
        output, sizeof(output), "%lld lines, %lld cut (%lld B dropped)",
        (long long)json_integer_value(json_object_get(o, "lines")),
        (long long)json_integer_value(json_object_get(o, "cut")),
        (long long)json_integer_value(json_object_get(o, "dropped_bytes")));
    printf("%-5lld %-8lld %-9s %-4lld %-9s %-8lld %-6lld %-7s %-7s %-7lld "
           "%-7lld %-12lld %-4s %s\n",
           (long long)json_integer_value(json_object_get(w, "slot")),
           (long long)json_integer_value(json_object_get(w, "pid")),
           json_string_value(json_object_get(w, "state")),
           (long long)json_integer_value(json_object_get(w, "generation")), up,
           (long long)json_integer_value(json_object_get(w, "restarts")),
           (long long)json_integer_value(json_object_get(w, "connections")),
           rss, priv,
           (long long)json_integer_value(json_object_get(bus, "pending")),
           (long long)json_integer_value(json_object_get(bus, "refused")),
           (long long)json_integer_value(json_object_get(bus, "soon_refused")),
           cpu, output);
  }
}

/* Is pid still running? A zombie is not: a daemon's parent is PID 1,
 * and a container's PID 1 may be slow to reap it, or never. */
static int still_running(pid_t pid) {
  if (kill(pid, 0) < 0)
    return 0;
  char path[64], line[512];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "re");
  if (f == NULL)
    return 1; /* no /proc: kill's word it is */
  int zombie = 0;
  if (fgets(line, sizeof(line), f)) {
    const char *paren = strrchr(line, ')'); /* the name may hold spaces */
    zombie = paren && paren[1] == ' ' && paren[2] == 'Z';
  }
  fclose(f);
  return !zombie;
}

static int wants_help(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
      return 1;
  return 0;
}

int cli_control(const char *config_path, int argc, char **argv) {
  const char *cmd = argv[0];
  json_t *req = NULL;
  int json_out = 0, cluster_out = 0, now = 0, timeout_ms = 10000;
  if (wants_help(argc, argv)) {
    printf("usage: aio [-c FILE] reload\n"
           "       aio [-c FILE] upgrade [BINARY]\n"
           "       aio [-c FILE] stop [--now]\n"
           "       aio [-c FILE] status [--json | --cluster]\n"
           "       aio [-c FILE] emit SIGNAL [JSON]\n"
           "       aio [-c FILE] scale N\n"
           "\nTalk to the running master of the configuration over its "
           "control socket.\nExit 69 when no master is running, 77 when the "
           "socket is served by\nanother user than yours or root.\n"
           "upgrade: exit 70 when the new binary cannot start (the master "
           "and\nits workers serve on), 78 when it rejects the "
           "configuration, 75 when\nthe master is busy (starting, reloading, "
           "stopping).\n");
    return 0;
  }
  if (strcmp(cmd, "reload") == 0 && argc == 1) {
    req = json_pack("{s:s}", "cmd", "reload");
    timeout_ms = 120000;
  } else if (strcmp(cmd, "upgrade") == 0 && argc <= 2) {
    /* Absolute, as the master runs elsewhere (a daemon is in "/"). */
    char *bin = NULL;
    if (argc == 2) {
      char *real = realpath(argv[1], NULL);
      if (real == NULL && argv[1][0] != '/') {
        char cwd[4096];
        if (getcwd(cwd, sizeof(cwd)))
          bin = util_asprintf("%s/%s", cwd, argv[1]);
      } else {
        bin = real ? real : strdup(argv[1]);
      }
    }
    req = json_pack("{s:s,s:s?}", "cmd", "upgrade", "binary", bin);
    free(bin);
    timeout_ms = 180000;
  } else if (strcmp(cmd, "stop") == 0 &&
             (argc == 1 || (argc == 2 && strcmp(argv[1], "--now") == 0))) {
    now = argc == 2;
    req = json_pack("{s:s,s:b}", "cmd", "stop", "now", now);
  } else if (strcmp(cmd, "status") == 0 &&
             (argc == 1 ||
              (argc == 2 && (strcmp(argv[1], "--json") == 0 ||
                             strcmp(argv[1], "--cluster") == 0)))) {
    json_out = argc == 2 && strcmp(argv[1], "--json") == 0;
    cluster_out = argc == 2 && !json_out;
    req = json_pack("{s:s}", "cmd", "status");
  } else if (strcmp(cmd, "emit") == 0 && (argc == 2 || argc == 3)) {
    json_t *data = json_null();
    if (argc == 3) {
      json_error_t e;
      data = json_loads(argv[2], JSON_DECODE_ANY, &e);
      if (data == NULL) {
        fprintf(stderr, "aio emit: the data is not JSON: %s\n", e.text);
        return EXIT_USAGE;
      }
    }
    req = json_pack("{s:s,s:s,s:o}", "cmd", "emit", "signal", argv[1], "data",
                    data);
    timeout_ms = CLI_EMIT_TIMEOUT_MS;
  } else if (strcmp(cmd, "scale") == 0 && argc == 2) {
    long n;
    if (util_parse_long(argv[1], SETTINGS_WORKERS_MIN, SETTINGS_WORKERS_MAX,
                        &n)) {
      fprintf(stderr, "aio scale: N must be %d to %d\n", SETTINGS_WORKERS_MIN,
              SETTINGS_WORKERS_MAX);
      return EXIT_USAGE;
    }
    req = json_pack("{s:s,s:i}", "cmd", "scale", "workers", (int)n);
  } else {
    fprintf(stderr, "aio %s: bad arguments (see aio %s --help)\n", cmd, cmd);
    return EXIT_USAGE;
  }
  int code = 0;
  json_t *reply = ctl_call(config_path, req, timeout_ms, &code);
  json_decref(req);
  if (reply == NULL)
    return code;
  int rc = 0;
  if (!reply_ok(reply, cmd)) {
    /* The master says which status fits (a reload: 78 for the config, 69
     * for a taken address, 70 for workers that did not start, 75 when
     * refused for now); else 78 when it listed config errors. */
    json_int_t said = json_integer_value(json_object_get(reply, "code"));
    rc = said > 0 && said < 126             ? (int)said
         : json_object_get(reply, "errors") ? EXIT_CONFIG
                                            : 1;
  } else if (strcmp(cmd, "status") == 0) {
    if (json_out) {
      json_object_del(reply, "ok");
      char *s = json_dumps(reply, JSON_INDENT(2));
      printf("%s\n", s ? s : "{}");
      free(s);
    } else if (cluster_out) {
      print_cluster(reply, 1);
    } else {
      print_status(reply);
    }
  } else if (strcmp(cmd, "upgrade") == 0) {
    printf("upgraded: generation %lld, pid %lld, binary %s\n",
           (long long)json_integer_value(json_object_get(reply, "generation")),
           (long long)json_integer_value(json_object_get(reply, "pid")),
           json_string_value(json_object_get(reply, "binary")));
  } else if (strcmp(cmd, "reload") == 0) {
    printf("reloaded: generation %lld\n",
           (long long)json_integer_value(json_object_get(reply, "generation")));
  } else if (strcmp(cmd, "stop") == 0) {
    /* Wait for the master to be gone, so `aio stop && aio run` works. */
    pid_t pid = (pid_t)json_integer_value(json_object_get(reply, "pid"));
    json_t *g = json_object_get(reply, "graceful_timeout");
    double graceful = json_is_number(g) ? json_number_value(g) : 30;
    long long deadline =
        (long long)util_now_ms() + (long long)(graceful * 1000) + 5000;
    while (pid > 0 && still_running(pid) &&
           (long long)util_now_ms() < deadline) {
      struct timespec ts = {0, 20 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
    if (pid > 0 && still_running(pid)) {
      fprintf(stderr, "aio stop: the master (pid %d) is still running\n",
              (int)pid);
      rc = EXIT_TEMPFAIL;
    }
  } else if (strcmp(cmd, "scale") == 0) {
    printf("workers: %lld\n",
           (long long)json_integer_value(json_object_get(reply, "workers")));
  }
  json_decref(reply);
  return rc;
}
