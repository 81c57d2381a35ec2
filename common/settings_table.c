/*
 * settings_table.c - the keys aio owns, one row each: [aio] (into struct
 * settings), [server:NAME] (struct server_conf), [schedule:NAME] (struct
 * schedule_conf). A row's default is what an absent or empty value means;
 * the [aio] rows, in this order, are also the built-in layer `aio config`
 * prints. settings_keys.c reads the rows; this file holds [aio]'s and
 * settings_sections.c the others, each with the few setters a type
 * cannot express and its section's checks across keys ([aio]'s cluster
 * setters and check: settings_cluster.c).
 *
 * Adding a key is one row in its section's table below (name, type,
 * default, range, offsetof its field, one line of help), plus the field in
 * settings.h when it is a new one (and its free() in settings_close() for a
 * string), plus its row in docs/operations.md "Configuration keys"
 * (test_config checks that every row is there, with its default and
 * help). Nothing else: the parser, the default layer, the list of known
 * keys and the "did you mean" hints all come from the row.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "cron.h"
#include "log.h"
#include "settings_keys.h"
#include "settings_rows.h"
#include "util.h"

int settings_given(const struct settings_ctx *c, const char *key) {
  const char *v = settings_value(c, key);
  return v && *v;
}

/* ---- [aio] -------------------------------------------------------------- */

int settings_workers_ok(long long n) {
  return n >= SETTINGS_WORKERS_MIN && n <= SETTINGS_WORKERS_MAX;
}

static void set_workers(struct settings_ctx *c, const struct settings_key *k,
                        void *base, const char *v) {
  struct settings *s = base;
  long n;
  if (*v == '\0' || strcasecmp(v, "auto") == 0) {
    n = sysconf(_SC_NPROCESSORS_ONLN);
    s->workers = n < SETTINGS_WORKERS_MIN   ? SETTINGS_WORKERS_MIN
                 : n > SETTINGS_WORKERS_MAX ? SETTINGS_WORKERS_MAX
                                            : (int)n;
  } else if (util_parse_long(v, (long)k->min, (long)k->max, &n)) {
    settings_fail(c, k->name,
                  "expected a whole number between %ld and %ld, or auto",
                  (long)k->min, (long)k->max);
  } else {
    s->workers = (int)n;
  }
}

static void set_log_level(struct settings_ctx *c, const struct settings_key *k,
                          void *base, const char *v) {
  struct settings *s = base;
  s->log_level = AIO_LOG_INFO;
  if (*v == '\0')
    return;
  int level = log_level_parse(v);
  if (level < 0)
    settings_fail(c, k->name, "expected debug, info, warn or error");
  else
    s->log_level = level;
}

/* modules, remembering the line of each name so that the loader can point
 * at the one it cannot load. */
static void set_modules(struct settings_ctx *c, const struct settings_key *k,
                        void *base, const char *v) {
  struct settings *s = base;
  size_t cap = 0, lcap = 0;
  if (c->e == NULL)
    return;
  s->modules_file = c->e->file;
  const char *p = v;
  for (size_t part = 0; *p; part++) {
    char **w;
    int n = settings_next_line_words(&p, &w);
    int line = config_entry_line(c->e, part);
    for (int i = 0; i < n; i++) {
      if (strchr(w[i], '/')) {
        diag_add(c->d, c->e->file, line,
                 "[%s] modules: module names have no '/' (put directories "
                 "in module_path): '%s'",
                 c->secname, w[i]);
        c->failed = 1;
        free(w[i]);
      } else if (util_grow((void **)&s->modules, &cap, s->nmodules + 1,
                           sizeof(*s->modules)) ||
                 util_grow((void **)&s->module_lines, &lcap, s->nmodules + 1,
                           sizeof(*s->module_lines))) {
        settings_fail(c, k->name, "out of memory");
        free(w[i]);
      } else {
        s->modules[s->nmodules] = w[i];
        s->module_lines[s->nmodules++] = line;
      }
    }
    if (n < 0)
      settings_fail(c, k->name, "out of memory");
    free(w);
  }
}

/* user and group are looked up now, so a typo is a config error and not
 * a worker that cannot start. user comes first: its group is the default
 * of group. */
static void set_user(struct settings_ctx *c, const struct settings_key *k,
                     void *base, const char *v) {
  struct settings *s = base;
  s->uid = getuid();
  s->gid = getgid();
  if (*v == '\0')
    return;
  s->user = strdup(v);
  s->drop_privileges = 1;
  struct passwd *pw = getpwnam(v);
  long id;
  if (pw) {
    s->uid = pw->pw_uid;
    s->gid = pw->pw_gid;
  } else if (util_parse_long(v, 0, 1L << 30, &id) == 0) {
    s->uid = (uid_t)id;
  } else {
    settings_fail(c, k->name, "no such user '%s'", v);
    s->ids_unknown = 1;
  }
}

static void set_group(struct settings_ctx *c, const struct settings_key *k,
                      void *base, const char *v) {
  struct settings *s = base;
  if (*v == '\0')
    return;
  s->group = strdup(v);
  s->drop_privileges = 1;
  struct group *gr = getgrnam(v);
  long id;
  if (gr)
    s->gid = gr->gr_gid;
  else if (util_parse_long(v, 0, 1L << 30, &id) == 0)
    s->gid = (gid_t)id;
  else {
    settings_fail(c, k->name, "no such group '%s'", v);
    s->ids_unknown = 1;
  }
}

/* metrics: where the master serves /metrics and /healthz, checked here so
 * that a typo is a FILE:LINE error, not a master that cannot bind. A path
 * (it has a '/') is relative to the configuration's directory. */
static void set_metrics(struct settings_ctx *c, const struct settings_key *k,
                        void *base, const char *v) {
  struct settings *s = base;
  struct settings_endpoint ep;
  if (*v == '\0')
    return;
  s->metrics =
      v[0] != '/' && strchr(v, '/')
          ? util_asprintf("%s/%s", s->config_dir ? s->config_dir : ".", v)
          : strdup(v);
  if (s->metrics == NULL)
    settings_fail(c, k->name, "out of memory");
  else if (settings_parse_endpoint(s->metrics, &ep))
    settings_fail(c, k->name,
                  "expected ADDRESS:PORT (127.0.0.1:9464, [::1]:9464) or a "
                  "unix socket path (with a '/'), not '%s'",
                  v);
}

/* cpu_affinity: 0 off, 1 auto (struct settings). */
static const char *const cpu_affinities[] = {"off", "auto", NULL};

/* In the order of LOG_FORMAT_TEXT, LOG_FORMAT_JSON (log.h). */
static const char *const log_formats[] = {"text", "json", NULL};
_Static_assert(LOG_FORMAT_TEXT == 0 && LOG_FORMAT_JSON == 1,
               "log_formats[] is indexed by the LOG_FORMAT_* values");

#define AIO(f) offsetof(struct settings, f)
static const struct settings_key aio_keys[] = {
    {.name = "modules",
     .type = SETTINGS_CUSTOM,
     .dflt = "",
     .set = set_modules,
     .help = "the modules to load: names, several to a line or on "
             "continuation lines"},
    {.name = "module_path",
     .type = SETTINGS_WORDS,
     .dflt = "",
     .offset = AIO(module_path),
     .count = AIO(npath),
     .help = "directories searched for modules first, relative to the "
             "file's directory"},
    {.name = "workers",
     .type = SETTINGS_CUSTOM,
     .dflt = "auto",
     .min = SETTINGS_WORKERS_MIN,
     .max = SETTINGS_WORKERS_MAX,
     .set = set_workers,
     .help = "worker processes; auto is one per CPU"},
    {.name = "timeout",
     .type = SETTINGS_SECONDS,
     .dflt = "30",
     .min = 0,
     .max = DAY,
     .offset = AIO(timeout),
     .help = "a worker silent this long is killed and replaced; 0: never"},
    {.name = "graceful_timeout",
     .type = SETTINGS_SECONDS,
     .dflt = "30",
     .min = 0,
     .max = DAY,
     .offset = AIO(graceful_timeout),
     .help = "the time open connections get to finish on stop and reload"},
    {.name = "log_level",
     .type = SETTINGS_CUSTOM,
     .dflt = "info",
     .set = set_log_level,
     .help = "the least severe messages logged"},
    {.name = "log_file",
     .type = SETTINGS_PATH,
     .dflt = "",
     .offset = AIO(log_file),
     .help = "where the log goes; stderr when empty"},
    {.name = "log_format",
     .type = SETTINGS_ENUM,
     .dflt = "text",
     .names = log_formats,
     .offset = AIO(log_format),
     .help = "text, or json: one object per line for log shippers"},
    {.name = "pidfile",
     .type = SETTINGS_PATH,
     .dflt = "",
     .offset = AIO(pidfile),
     .help = "holds the master's pid, locked while it runs"},
    {.name = "control",
     .type = SETTINGS_PATH,
     .dflt = "",
     .offset = AIO(control),
     .help = "the control socket; when empty, beside the pidfile or a "
             "per-configuration name"},
    {.name = "control_timeout",
     .type = SETTINGS_SECONDS,
     .dflt = "5",
     .min = 0.1,
     .max = 3600,
     .offset = AIO(control_timeout),
     .help = "a control client that leaves its replies unread this long is "
             "dropped"},
    {.name = "control_buffer",
     .type = SETTINGS_SIZE,
     .dflt = "65536",
     .min = 4096,
     .max = 1L << 30,
     .offset = AIO(control_buffer),
     .help = "reply bytes waiting for a control client past which it is not "
             "read until they drain below half"},
    {.name = "user",
     .type = SETTINGS_CUSTOM,
     .dflt = "",
     .set = set_user,
     .help = "the workers run as this user (a name or a uid)"},
    {.name = "group",
     .type = SETTINGS_CUSTOM,
     .dflt = "",
     .set = set_group,
     .help = "the workers run as this group (a name or a gid); the user's "
             "when empty"},
    {.name = "max_restarts",
     .type = SETTINGS_INT,
     .dflt = "5",
     .min = 0,
     .max = 1000000,
     .offset = AIO(max_restarts),
     .help = "crashes of a slot within restart_window after which it is "
             "left empty"},
    {.name = "restart_window",
     .type = SETTINGS_SECONDS,
     .dflt = "60",
     .min = 0,
     .max = 7 * DAY,
     .offset = AIO(restart_window),
     .help = "the window max_restarts counts crashes in"},
    {.name = "start_timeout",
     .type = SETTINGS_SECONDS,
     .dflt = "60",
     .min = 0,
     .max = DAY,
     .offset = AIO(start_timeout),
     .help = "the first start must serve by then, else aio run exits 70; "
             "0: no limit"},
    {.name = "max_connections",
     .type = SETTINGS_SIZE,
     .dflt = "10000",
     .min = 1,
     .max = 10000000,
     .offset = AIO(max_connections),
     .help = "open connections per worker"},
    {.name = "write_limit",
     .type = SETTINGS_SIZE,
     .dflt = "4194304",
     .min = 4096,
     .max = 1L << 30,
     .offset = AIO(write_limit),
     .help = "bytes queued per connection before a write is refused"},
    {.name = "rlimit_nofile",
     .type = SETTINGS_INT,
     .dflt = "",
     .min = 0,
     .max = 1 << 30,
     .offset = AIO(rlimit_nofile),
     .help = "at least this many open files (RLIMIT_NOFILE); empty: what "
             "the configuration needs"},
    {.name = "bus_buffer",
     .type = SETTINGS_SIZE,
     .dflt = "262144",
     .min = BUS_MAX_FRAME,
     .max = 1L << 30,
     .offset = AIO(bus_buffer),
     .help = "bytes of a worker's frames not yet written to the master"},
    {.name = "bus_queue",
     .type = SETTINGS_SIZE,
     .dflt = "4096",
     .min = 1,
     .max = 10000000,
     .offset = AIO(bus_queue),
     .help = "deliveries the master keeps for one worker until it "
             "acknowledges them"},
    {.name = "bus_queue_bytes",
     .type = SETTINGS_SIZE,
     .dflt = "4194304",
     .min = BUS_MAX_FRAME,
     .max = 1L << 30,
     .offset = AIO(bus_queue_bytes),
     .help = "the bytes of those deliveries"},
    {.name = "bus_journal",
     .type = SETTINGS_SIZE,
     .dflt = "4096",
     .min = 1,
     .max = 10000000,
     .offset = AIO(bus_journal),
     .help = "a worker's own signals not yet run"},
    {.name = "bus_journal_bytes",
     .type = SETTINGS_SIZE,
     .dflt = "4194304",
     .min = BUS_MAX_FRAME,
     .max = 1L << 30,
     .offset = AIO(bus_journal_bytes),
     .help = "the bytes of those signals' frames"},
    {.name = "max_requests",
     .type = SETTINGS_INT,
     .dflt = "0",
     .min = 0,
     .max = 1 << 30,
     .offset = AIO(max_requests),
     .help = "a worker that served this many requests (connections, for a "
             "protocol that does not count requests) is recycled; 0: never"},
    {.name = "max_requests_jitter",
     .type = SETTINGS_INT,
     .dflt = "0",
     .min = 0,
     .max = 1 << 30,
     .offset = AIO(max_requests_jitter),
     .help = "each worker's max_requests is raised by a random 0 to this, so "
             "workers are not recycled together"},
    {.name = "max_lifetime",
     .type = SETTINGS_SECONDS,
     .dflt = "0",
     .min = 0,
     .max = 365 * DAY,
     .offset = AIO(max_lifetime),
     .help = "a worker that has served this long is recycled; 0: never"},
    {.name = "max_lifetime_jitter",
     .type = SETTINGS_SECONDS,
     .dflt = "0",
     .min = 0,
     .max = 365 * DAY,
     .offset = AIO(max_lifetime_jitter),
     .help = "each worker's max_lifetime is raised by a random 0 to this"},
    {.name = "max_memory",
     .type = SETTINGS_BYTES,
     .dflt = "0",
     .min = 0,
     .max = 1ull << 50,
     .offset = AIO(max_memory),
     .help = "a worker whose resident memory exceeds this is recycled (the "
             "master checks every second); 0: never"},
    {.name = "recycle_concurrency",
     .type = SETTINGS_INT,
     .dflt = "1",
     .min = 1,
     .max = SETTINGS_WORKERS_MAX,
     .offset = AIO(recycle_concurrency),
     .help = "slots whose worker is being recycled at once, at most"},
    {.name = "cpu_affinity",
     .type = SETTINGS_ENUM,
     .dflt = "off",
     .names = cpu_affinities,
     .offset = AIO(cpu_affinity),
     .help = "auto pins worker slot k to the k-th CPU of the master's set"},
    {.name = "metrics",
     .type = SETTINGS_CUSTOM,
     .dflt = "",
     .set = set_metrics,
     .help = "ADDRESS:PORT or a unix socket path where the master serves "
             "Prometheus GET /metrics and GET /healthz; empty: off"},
    {.name = "cluster",
     .type = SETTINGS_CUSTOM,
     .dflt = "",
     .set = settings_set_cluster,
     .help = "redis://[user:password@]host[:port][/db] or unix:///path: this "
             "master is a node of that cluster; empty: a single host"},
    {.name = "node",
     .type = SETTINGS_CUSTOM,
     .dflt = "",
     .set = settings_set_node,
     .help = "this master's name in the cluster; the host name when empty"},
    {.name = "cluster_prefix",
     .type = SETTINGS_CUSTOM,
     .dflt = "aio",
     .set = settings_set_prefix,
     .help = "the prefix of every Redis key, so services can share one Redis"},
    {.name = "cluster_password_file",
     .type = SETTINGS_PATH,
     .dflt = "",
     .offset = AIO(cluster_password_file),
     .help = "the Redis password is its first line, not written in the file"},
    {.name = "cluster_fallback",
     .type = SETTINGS_ENUM,
     .dflt = "skip",
     .names = settings_fallbacks,
     .offset = AIO(cluster_fallback),
     .help = "what a scope = cluster schedule does while Redis is "
             "unreachable: skip or local"},
    {.name = "cluster_timeout",
     .type = SETTINGS_SECONDS,
     .dflt = "2",
     .min = 0.05,
     .max = 60,
     .offset = AIO(cluster_timeout),
     .help = "the deadline of a connect and of every reply from Redis"},
    {.name = "cluster_queue",
     .type = SETTINGS_SIZE,
     .dflt = "10000",
     .min = 1,
     .max = 10000000,
     .offset = AIO(cluster_queue),
     .help = "cluster signals kept while Redis is unreachable; past it the "
             "oldest are dropped"},
    {.name = "cluster_queue_bytes",
     .type = SETTINGS_SIZE,
     .dflt = "16777216",
     .min = BUS_MAX_FRAME,
     .max = 1L << 30,
     .offset = AIO(cluster_queue_bytes),
     .help = "the bytes of those signals"},
    {.name = "cluster_claim_timeout",
     .type = SETTINGS_SECONDS,
     .dflt = "30",
     .min = 0.1,
     .max = 86400,
     .offset = AIO(cluster_claim_timeout),
     .help = "a cluster signal unacknowledged this long (its node died) is "
             "run by another node"},
    {.name = "cluster_max_deliveries",
     .type = SETTINGS_INT,
     .dflt = "5",
     .min = 1,
     .max = 1000,
     .offset = AIO(cluster_max_deliveries),
     .help = "deliveries of a cluster signal before it goes to the "
             "dead-letter stream"},
    {.name = "cluster_stream_len",
     .type = SETTINGS_SIZE,
     .dflt = "100000",
     .min = 100,
     .max = 100000000,
     .offset = AIO(cluster_stream_len),
     .help = "each cluster signal stream is trimmed to about this many "
             "entries (XADD MAXLEN ~)"},
};
#undef AIO

_Static_assert(UTIL_ARRAY_LEN(aio_keys) <= SETTINGS_MAX_KEYS, "too many rows");
const struct settings_keyset settings_aio_keyset = {
    .prefix = "aio",
    .keys = aio_keys,
    .n = UTIL_ARRAY_LEN(aio_keys),
    .check = settings_aio_check};
