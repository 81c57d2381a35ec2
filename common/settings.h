/*
 * settings.h - the typed view of an interpolated configuration: [aio]
 * options, servers, schedules, listeners and commands, each remembering the
 * file:line it came from so later checks (the loader, bind) can name it.
 */
#ifndef AIO_COMMON_SETTINGS_H
#define AIO_COMMON_SETTINGS_H

#include <stddef.h>
#include <sys/types.h>

#include "config.h"
#include "diag.h"
#include "redis_url.h"

/* The built-in defaults, the lowest layer of every configuration: the
 * [aio] keys with their defaults, in the order of the table
 * (settings_keys.c), as `aio config` prints them. Borrowed, static, made
 * at the first call. */
const char *settings_builtin_defaults(void);

/* The number of workers a master runs: [aio] workers, `aio scale`, the
 * control protocol's scale and TTIN/TTOU all keep to this range. At least
 * one: a runner of network services with no worker binds nothing and
 * serves nothing, which is an outage rather than a mode (`aio stop`
 * stops). */
#define SETTINGS_WORKERS_MIN 1
#define SETTINGS_WORKERS_MAX 1024
/* n is a worker count a master may run: 1, else 0. */
int settings_workers_ok(long long n);

/* A `module.symbol` reference in the config. */
struct ref {
  char *text;   /* as written */
  char *module; /* before the last dot */
  char *symbol; /* after it */
  const char *file;
  int line;
};

enum server_type { SERVER_TCP, SERVER_UDP, SERVER_UNIX };

/* The [server:NAME] timeouts' defaults, in seconds (0 turns one off). */
#define SETTINGS_IDLE_TIMEOUT 60.0
#define SETTINGS_SEND_TIMEOUT 60.0
#define SETTINGS_HEADER_TIMEOUT 10.0

struct server_conf {
  char *name;
  struct ref handler; /* protocol or factory */
  int is_factory;
  enum server_type type;
  char *address; /* "" for all interfaces */
  int port;
  char *path; /* unix */
  int backlog;
  /* Stream servers with a protocol, seconds, 0: off. */
  double idle_timeout;   /* no byte either way: closed */
  double send_timeout;   /* queued output that does not move: reset */
  double header_timeout; /* aio.hello: a request head takes longer: 408 */
  const char *file;
  int line;
};

struct schedule_conf {
  char *name;
  double every; /* seconds; 0 when cron is used */
  char *cron;
  double offset;
  int overlap;
  double timeout; /* a pending run fails after this long; 0: never */
  struct ref func, cb, err;
  int has_cb, has_err;
  int cluster;  /* scope = cluster: one run per occurrence in the cluster */
  int fallback; /* enum cluster_fallback, for scope = cluster */
  const char *file;
  int line;
};

/* What a scope = cluster schedule does while Redis is unreachable. */
enum cluster_fallback {
  CLUSTER_FALLBACK_SKIP, /* nothing runs: a partition never doubles a job */
  CLUSTER_FALLBACK_LOCAL /* every node runs it, as a host schedule */
};

struct listener_conf {
  char *signal;
  struct ref fn;
  int broadcast;
  int cluster; /* a cluster listener (docs/cluster.md): the master's */
};

struct command_conf {
  char *name;
  struct ref fn;
};

/* The fields [aio] sets come from its rows in settings_table.c; so do
 * those of server_conf and schedule_conf, from settings_sections.c (but
 * name, file and line). */
struct settings {
  int workers;
  double timeout;          /* heartbeat silence that gets a worker killed */
  double graceful_timeout; /* drain time on stop and reload */
  char *log_file;
  int log_level;
  int log_format; /* LOG_FORMAT_TEXT or LOG_FORMAT_JSON (log.h) */
  char **modules;
  size_t nmodules;
  const char *modules_file; /* where [aio] modules was set (borrowed) */
  int *module_lines;        /* the line that names each of modules */
  char **module_path;       /* absolute or relative to the config's directory */
  size_t npath;
  char *config_dir;
  char *pidfile;
  char *control;
  double control_timeout; /* a control client that reads none of its
                             replies this long is dropped */
  size_t control_buffer;  /* reply bytes waiting past which a control
                             client is not read */
  char *user, *group;
  int drop_privileges; /* user or group set: workers run as uid/gid */
  int ids_unknown;     /* user or group not found: uid/gid are not what
                        * was asked for, so no user code may run */
  uid_t uid;
  gid_t gid;
  int max_restarts;       /* crashes of a slot within restart_window ... */
  double restart_window;  /* ... after which it is not respawned */
  double start_timeout;   /* the first generation must be ready by then,
                             or `aio run` fails (0: no limit) */
  size_t max_connections; /* per worker */
  size_t write_limit;     /* per connection, bytes queued before -ENOBUFS */
  int rlimit_nofile;      /* at least this RLIMIT_NOFILE; 0: what is needed */
  /* The bus's bounds (docs/bus.md), past which aio_emit() says -EAGAIN: */
  size_t bus_buffer;        /* a worker's frames not yet written, bytes */
  size_t bus_queue;         /* the master's deliveries for one worker ... */
  size_t bus_queue_bytes;   /* ... and their bytes */
  size_t bus_journal;       /* a worker's own signals not yet run ... */
  size_t bus_journal_bytes; /* ... and their bytes */

  /* ---- placement ---- */
  int cpu_affinity; /* 1 (auto): worker slot k pinned to CPU k; 0 (off) */

  /* ---- recycling (supervisor/recycle.c); 0: off ---- */
  int max_requests;           /* requests (or connections) per worker */
  int max_requests_jitter;    /* each worker's limit: + randint(0, this) */
  double max_lifetime;        /* seconds a worker serves */
  double max_lifetime_jitter; /* + uniform(0, this) seconds */
  size_t max_memory;          /* resident bytes of a worker */
  int recycle_concurrency;    /* slots being replaced at once, at most */

  /* ---- [aio] cluster keys (issue 15; docs/cluster.md) ---------------- */
  char *cluster;                /* the URL as written; NULL: a single host */
  struct redis_url redis;       /* cluster, parsed (password from the file) */
  char *node;                   /* this master's name; default the host name */
  char *cluster_prefix;         /* of every key, default "aio" */
  char *cluster_password_file;  /* absolute; its first line is the password */
  int cluster_fallback;         /* enum cluster_fallback: the default of the
                                   schedules */
  double cluster_timeout;       /* connect and reply timeout, seconds */
  size_t cluster_queue;         /* cluster emits kept while Redis is down */
  size_t cluster_queue_bytes;   /* and their bytes */
  double cluster_claim_timeout; /* an entry idle this long is claimed */
  int cluster_max_deliveries;   /* then it goes to the dead-letter stream */
  size_t cluster_stream_len;    /* XADD MAXLEN ~ of each stream */
  /* ---- end of the cluster keys ---------------------------------------- */
  char *metrics; /* [aio] metrics address, or NULL: off */

  struct server_conf *servers;
  size_t nservers;
  struct schedule_conf *schedules;
  size_t nschedules;
  struct listener_conf *listeners;
  size_t nlisteners;
  struct command_conf *commands;
  size_t ncommands;
  /* What is ignored but does not stop a start (a listener named twice for
   * one signal): "FILE:LINE: ..." each, for settings_warnings(). */
  struct diag warnings;
};

/* Fill s from cfg; every problem goes to d. 0 or -1. s must be closed with
 * settings_close() either way. */
int settings_load(struct settings *s, const struct config *cfg, struct diag *d);
void settings_close(struct settings *s);

/* Parse "module.symbol" into r (new strings). 0 or -1 with a message. */
int settings_parse_ref(struct ref *r, const char *text, const char *file,
                       int line, struct diag *d);
void settings_ref_close(struct ref *r);

/* Keys that aio does not know in the sections it owns, [aio],
 * [server:NAME] and [schedule:NAME] (a typo such as "worker = 4" or
 * "adress = 127.0.0.1" would otherwise be ignored in silence): one
 * "FILE:LINE: ..." warning each in warn, with the known key it most likely
 * meant; and [aio:commands] lines that name a built-in command, which are
 * ignored. Returns the count. */
size_t settings_unknown_keys(const struct config *cfg, struct diag *warn);

/* Every warning of a configuration, for `aio check` and `aio run`: the
 * unknown keys and ignored commands of cfg, then those s recorded. */
void settings_warnings(const struct settings *s, const struct config *cfg,
                       struct diag *warn);

/* An address to listen on: "HOST:PORT" (an IPv4 literal or localhost,
 * or [IPv6]), or an absolute unix socket path. */
struct settings_endpoint {
  int unix_path, ipv6, port;
  char host[64];
  char path[108];
};
/* 0 with *out set, or -1 when text is none of those. */
int settings_parse_endpoint(const char *text, struct settings_endpoint *out);

/* Names of built-in commands, which [aio:commands] cannot remap. */
int settings_is_builtin_command(const char *name);

#endif
