/* ctl.c - see ctl.h. */
#define _GNU_SOURCE
#include "ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "settings.h"
#include "util.h"

static const char *const ctl_names[] = {[CTL_NONE] = "none",
#define CTL_NAME(e, s) [CTL_##e] = s,
                                        CTL_COMMANDS(CTL_NAME)
#undef CTL_NAME
};

const char *ctl_cmd_name(enum ctl_cmd c) { return ctl_names[c]; }

void ctl_req_close(struct ctl_req *req) {
  json_decref(req->msg);
  memset(req, 0, sizeof(*req));
}

int ctl_decode(const char *line, size_t len, struct ctl_req *req, char *err,
               size_t errlen) {
  memset(req, 0, sizeof(*req));
  if (len > CTL_MAX_REQUEST) {
    snprintf(err, errlen, "request larger than %d bytes", CTL_MAX_REQUEST);
    return -1;
  }
  json_error_t jerr;
  json_t *msg = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
  if (msg == NULL || !json_is_object(msg)) {
    snprintf(err, errlen, "not a JSON object: %s",
             msg ? "wrong type" : jerr.text);
    json_decref(msg);
    return -1;
  }
  req->msg = msg;
  const char *cmd = json_string_value(json_object_get(msg, "cmd"));
  if (cmd == NULL) {
    snprintf(err, errlen, "missing \"cmd\"");
    goto fail;
  }
  for (int c = CTL_NONE + 1; c < (int)UTIL_ARRAY_LEN(ctl_names); c++)
    if (strcmp(cmd, ctl_names[c]) == 0)
      req->cmd = (enum ctl_cmd)c;
  switch (req->cmd) {
  case CTL_NONE:
    snprintf(err, errlen, "unknown command \"%.64s\"", cmd);
    goto fail;
  case CTL_STOP: {
    json_t *now = json_object_get(msg, "now");
    if (now && !json_is_boolean(now)) {
      snprintf(err, errlen, "\"now\" must be true or false");
      goto fail;
    }
    req->now = json_is_true(now);
    break;
  }
  case CTL_EMIT:
    req->signal = json_string_value(json_object_get(msg, "signal"));
    if (req->signal == NULL || *req->signal == '\0' ||
        strlen(req->signal) > 256) {
      snprintf(err, errlen, "emit needs a \"signal\" name (1-256 bytes)");
      goto fail;
    }
    req->data = json_object_get(msg, "data");
    break;
  case CTL_SCALE: {
    json_t *w = json_object_get(msg, "workers");
    if (!json_is_integer(w) || !settings_workers_ok(json_integer_value(w))) {
      snprintf(err, errlen, "scale needs \"workers\": %d to %d",
               SETTINGS_WORKERS_MIN, SETTINGS_WORKERS_MAX);
      goto fail;
    }
    req->workers = (long)json_integer_value(w);
    break;
  }
  case CTL_UPGRADE: {
    json_t *b = json_object_get(msg, "binary");
    req->binary = json_string_value(b);
    if (b && !json_is_null(b) &&
        (req->binary == NULL || req->binary[0] != '/' ||
         strlen(req->binary) >= 4096)) {
      snprintf(err, errlen, "upgrade needs \"binary\": an absolute path");
      goto fail;
    }
    break;
  }
  default:
    break;
  }
  return 0;
fail:
  ctl_req_close(req);
  return -1;
}

static uint64_t fnv1a(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

/* May dir hold a control socket of ours? A directory (not a symbolic link)
 * owned by the euid with none of the mode bits in forbid. Looked at with
 * lstat, then opened O_NOFOLLOW and checked again through the descriptor,
 * so what is checked is what was looked at. 0, -ENOENT when missing, or
 * -EPERM (or another -errno) with a message naming dir and what is
 * wrong. */
static int dir_trusted(const char *dir, mode_t forbid, char *err, size_t n) {
  struct stat lst, st;
  if (lstat(dir, &lst) < 0) {
    if (errno == ENOENT)
      return -ENOENT;
    snprintf(err, n, "cannot stat %s: %s", dir, strerror(errno));
    return -errno;
  }
  int fd = -1, rc = -EPERM;
  if (S_ISLNK(lst.st_mode)) {
    snprintf(err, n, "%s is a symbolic link", dir);
  } else if (!S_ISDIR(lst.st_mode)) {
    snprintf(err, n, "%s is not a directory", dir);
  } else if (lst.st_uid != geteuid()) {
    snprintf(err, n, "%s belongs to uid %d, not to this user (uid %d)", dir,
             (int)lst.st_uid, (int)geteuid());
  } else if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) <
                 0 ||
             fstat(fd, &st) < 0) {
    rc = -errno;
    snprintf(err, n, "cannot open %s: %s", dir, strerror(errno));
  } else if (st.st_dev != lst.st_dev || st.st_ino != lst.st_ino ||
             st.st_uid != geteuid()) {
    snprintf(err, n, "%s was replaced while it was checked", dir);
  } else if (st.st_mode & forbid) {
    snprintf(err, n, "%s has mode %04o: others may %s it", dir,
             (unsigned)(st.st_mode & 07777),
             (st.st_mode & forbid & 022) ? "create or replace sockets in"
                                         : "look into");
  } else {
    rc = 0;
  }
  if (fd >= 0)
    close(fd);
  return rc;
}

/* The directory of the default socket path when no XDG_RUNTIME_DIR: per
 * user in /tmp, or /run/aio for root. Returns new. */
static char *default_dir(void) {
  if (geteuid() == 0)
    return strdup("/run/aio");
  return util_asprintf("/tmp/aio-%u", (unsigned)geteuid());
}

static const char *usable_xdg(void) {
  const char *xdg = getenv("XDG_RUNTIME_DIR");
  char err[16];
  /* Not one another user owns (sudo -E keeps the invoking user's). */
  if (xdg && *xdg == '/' && dir_trusted(xdg, 077, err, sizeof(err)) == 0)
    return xdg;
  return NULL;
}

int ctl_socket_dir(const char *path, int create, char *err, size_t n) {
  char *dir = util_dirname(path);
  char *own = default_dir();
  int rc = 0;
  if (dir && own && strcmp(dir, own) == 0) {
    /* /run/aio may be systemd's RuntimeDirectory=aio (0755); the one in
     * /tmp is private. */
    int root = geteuid() == 0;
    if (create && mkdir(dir, root ? 0755 : 0700) < 0 && errno != EEXIST) {
      rc = -errno;
      snprintf(err, n, "cannot create %s: %s", dir, strerror(errno));
    } else {
      rc = dir_trusted(dir, root ? 022 : 077, err, n);
      if (rc == -ENOENT)
        snprintf(err, n, "%s does not exist", dir);
    }
  }
  free(dir);
  free(own);
  return rc;
}

int ctl_peer_trusted(int fd, char *err, size_t n) {
  struct ucred cr;
  socklen_t len = sizeof(cr);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
    snprintf(err, n, "cannot read its credentials: %s", strerror(errno));
    return -errno;
  }
  if (cr.uid == 0 || cr.uid == geteuid())
    return 0;
  snprintf(err, n, "uid %d (pid %d), not this user (uid %d) or root",
           (int)cr.uid, (int)cr.pid, (int)geteuid());
  return -EPERM;
}

static char *socket_path(const char *control, const char *pidfile,
                         const char *config_path) {
  if (control && *control)
    return strdup(control);
  if (pidfile && *pidfile) {
    size_t n = strlen(pidfile);
    if (n > 4 && strcmp(pidfile + n - 4, ".pid") == 0)
      return util_asprintf("%.*s.sock", (int)(n - 4), pidfile);
    return util_asprintf("%s.sock", pidfile);
  }
  char abs[PATH_MAX];
  if (realpath(config_path, abs) == NULL)
    snprintf(abs, sizeof(abs), "%s", config_path);
  uint64_t h = fnv1a(abs);
  const char *xdg = usable_xdg();
  if (xdg)
    return util_asprintf("%s/aio-%016llx.sock", xdg, (unsigned long long)h);
  char *dir = default_dir();
  char *path =
      dir ? util_asprintf("%s/aio-%016llx.sock", dir, (unsigned long long)h)
          : NULL;
  free(dir);
  return path;
}

char *ctl_socket_path(const struct settings *s, const char *config_path) {
  return socket_path(s->control, s->pidfile, config_path);
}

/* [aio] key of cfg, relative to the config file's directory as
 * settings_load makes it: the master's cwd is not the client's. Returns new
 * (NULL when unset). */
static char *beside_config(const struct config *cfg, const char *key) {
  const char *v = config_get(cfg, "aio", key);
  if (v == NULL || *v == '\0' || *v == '/' || cfg->dir == NULL)
    return v ? strdup(v) : NULL;
  return util_asprintf("%s/%s", cfg->dir, v);
}

char *ctl_socket_path_lenient(const char *config_path) {
  struct config *cfg = config_new();
  struct diag d;
  diag_init(&d);
  char *path = NULL;
  if (cfg) {
    config_parse_file(cfg, config_path, &d);
    config_interpolate(cfg, &d);
    char *control = beside_config(cfg, "control");
    char *pidfile = beside_config(cfg, "pidfile");
    path = socket_path(control, pidfile, config_path);
    free(control);
    free(pidfile);
  }
  config_free(cfg);
  diag_close(&d);
  return path;
}
