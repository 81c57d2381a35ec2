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
      cli_print_cluster(reply, 1);
    } else {
      cli_print_status(reply);
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
