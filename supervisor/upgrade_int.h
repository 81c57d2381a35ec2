/*
 * upgrade_int.h - what the two sides of an upgrade share: upgrade.c (the
 * new image that takes over, and goes back when it cannot serve) and
 * upgrade_exec.c (the image that validates the new binary and hands
 * everything over to it by exec).
 */
#ifndef AIO_SUPERVISOR_UPGRADE_INT_H
#define AIO_SUPERVISOR_UPGRADE_INT_H

#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "master.h"

#define UPGRADE_ENV "AIO_UPGRADE"
/* How long the new binary's `check` may take (it loads every module). */
#define UPGRADE_CHECK_MAX_MS 60000
/* What of its output goes into the error message. */
#define UPGRADE_CHECK_OUT 2048
/* How long a new image that goes back waits for its own workers. */
#define UPGRADE_BACK_WAIT_MS 2000

/* An old worker: a child of this process from before the exec. */
struct elder {
  struct upgrade *up;
  pid_t pid;
  int slot;
  unsigned gen;
  uv_pipe_t bus; /* read and dropped, so it never blocks on a full pipe */
  struct output *output; /* its stdout and stderr, logged as before */
  int draining;
  uint64_t deadline_ms; /* killed then; UINT64_MAX: not draining yet */
  struct elder *next;
};

struct upgrade {
  struct master *m;
  struct elder *elders;
  size_t nelders;
  char *binary;     /* what `aio upgrade` execs by default */
  char *old_binary; /* the image to go back to runs from here */
  char *old_config; /* with this configuration */
  unsigned upgrades, failures;
  char last_error[512];
  int client_fd;      /* the `aio upgrade` that waits for us, or -1 */
  int image_fd;       /* the image to go back to, or -1 */
  int fallback;       /* this image came back after a failed upgrade */
  uint64_t bus_bytes; /* read from old workers and dropped */
  int ctl_fd;         /* the control socket handed over, or -1 */
  char *ctl_path;     /* where it is bound */
};

/* What the environment said (upgrade_init), until master_run adopts it,
 * and the pidfile to hand on (upgrade.c). */
struct upgrade_env {
  json_t *handoff;
  int pidfile_fd;
  char *pidfile_path;
};
extern struct upgrade_env upgrade_env;

/* Block (SIG_BLOCK) or unblock the signals the master handles, around an
 * exec (upgrade.c). */
void upgrade_hold_signals(int how);

static inline int upgrade_jint(const json_t *o, const char *k, int dflt) {
  json_t *v = json_object_get(o, k);
  return json_is_integer(v) ? (int)json_integer_value(v) : dflt;
}

static inline const char *upgrade_jstr(const json_t *o, const char *k) {
  return json_string_value(json_object_get(o, k));
}

/* What is handed to the next image besides the sockets and workers. */
struct handoff_args {
  const char *binary;     /* the next image's default binary */
  const char *old_binary; /* the image it may go back to */
  const char *config;
  unsigned gen;      /* the generation serving now */
  int client_fd;     /* the `aio upgrade` waiting, or -1 */
  int image_fd;      /* the image to go back to, or -1 */
  const char *error; /* going back: why */
};

/* upgrade.c: m's upgrade state, made once (m->up; NULL when out of
 * memory). */
void upgrade_new(struct master *m);

/* upgrade_exec.c: exec path (or, path NULL, the image exec_fd) in place,
 * handing on what a says; returns only when the exec failed (errno). */
int upgrade_exec_with(struct master *m, const char *path, int exec_fd,
                      const struct handoff_args *a);

#endif
