/*
 * ctl.h - the control protocol spoken on the master's control socket:
 * one JSON object per line, a request {"cmd": ...} and one reply
 * {"ok": true|false, ...}. Decoding is a pure function so it can be fuzzed;
 * anything malformed gets an error reply, never a crash.
 */
#ifndef AIO_COMMON_CTL_H
#define AIO_COMMON_CTL_H

#include <jansson.h>
#include <stddef.h>

#include "app.h"

#define CTL_MAX_REQUEST (64 * 1024)

/* X(enum, name) */
#define CTL_COMMANDS(X)                                                        \
  X(STATUS, "status")                                                          \
  X(RELOAD, "reload")                                                          \
  X(STOP, "stop")                                                              \
  X(EMIT, "emit")                                                              \
  X(SCALE, "scale")                                                            \
  X(UPGRADE, "upgrade")

enum ctl_cmd {
  CTL_NONE = 0,
#define CTL_ENUM(e, s) CTL_##e,
  CTL_COMMANDS(CTL_ENUM)
#undef CTL_ENUM
};

struct ctl_req {
  enum ctl_cmd cmd;
  int now;            /* stop: immediate */
  const char *signal; /* emit: borrowed from msg */
  json_t *data;       /* emit: borrowed from msg */
  long workers;       /* scale */
  const char *binary; /* upgrade: an absolute path, or NULL; borrowed */
  json_t *msg;        /* the decoded request (new; ctl_req_close) */
};

/* Decode one request line. 0, or -1 with a message in err. */
int ctl_decode(const char *line, size_t len, struct ctl_req *req, char *err,
               size_t errlen);
void ctl_req_close(struct ctl_req *req);
const char *ctl_cmd_name(enum ctl_cmd c);

/* Where the control socket of this configuration lives: [aio] control, or
 * beside [aio] pidfile (foo.pid -> foo.sock), or a per-config path under
 * $XDG_RUNTIME_DIR (when it is the user's own, mode 0700), /run/aio (root)
 * or /tmp/aio-UID. Returns new. */
char *ctl_socket_path(const struct settings *s, const char *config_path);
/* The same for a configuration file that may be broken (a client must still
 * find the master that runs the last good one): only [aio] control and
 * pidfile are read, leniently. Returns new. */
char *ctl_socket_path_lenient(const char *config_path);

/* When path is in a default directory of aio's (/tmp/aio-UID, /run/aio),
 * make sure nobody else can put a socket there: create it when asked (the
 * master: 0700 in /tmp, 0755 for /run/aio) and check that it is a
 * directory, not a symbolic link, owned by the euid, with no group or
 * other bits (no write bits for /run/aio). Other paths are the operator's
 * choice and are not checked. 0; -ENOENT when it does not exist (and
 * create is 0); -EPERM when it is not trusted, or another -errno; err
 * names the directory and what is wrong. */
int ctl_socket_dir(const char *path, int create, char *err, size_t n);

/* Is the other end of the connected unix socket fd our own euid or root?
 * 0, or -EPERM (or -errno) with err saying who it is ("uid N (pid P),
 * not this user (uid U) or root"). */
int ctl_peer_trusted(int fd, char *err, size_t n);

#endif
