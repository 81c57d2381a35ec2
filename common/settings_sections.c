/*
 * settings_sections.c - the rows of the sections aio owns besides [aio]
 * (settings_table.c says how a row works): [server:NAME] (struct
 * server_conf) and [schedule:NAME] (struct schedule_conf), their setters
 * and each section's checks across keys.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cron.h"
#include "log.h"
#include "settings_keys.h"
#include "settings_rows.h"
#include "util.h"

/* ---- [server:NAME] ------------------------------------------------------ */

static void set_protocol(struct settings_ctx *c, const struct settings_key *k,
                         void *base, const char *v) {
  struct server_conf *sv = base;
  (void)k;
  if (*v)
    settings_ctx_ref(c, &sv->handler, v);
}

static void set_factory(struct settings_ctx *c, const struct settings_key *k,
                        void *base, const char *v) {
  struct server_conf *sv = base;
  struct ref fac;
  if (*v == '\0')
    return;
  if (settings_ctx_ref(c, &fac, v))
    return;
  if (sv->handler.text) {
    settings_fail(c, k->name, "a server has a protocol or a factory, not both");
    settings_ref_close(&fac);
  } else {
    sv->handler = fac;
    sv->is_factory = 1;
  }
}

static void set_address(struct settings_ctx *c, const struct settings_key *k,
                        void *base, const char *v) {
  struct server_conf *sv = base;
  unsigned char buf[16];
  const char *a = strcmp(v, "*") == 0 ? "" : v;
  if (*a && inet_pton(AF_INET, a, buf) != 1 && inet_pton(AF_INET6, a, buf) != 1)
    settings_fail(c, k->name, "'%s' is not an IPv4 or IPv6 address", v);
  else if ((sv->address = strdup(a)) == NULL)
    settings_fail(c, k->name, "out of memory");
}

static void server_check(struct settings_ctx *c, void *base) {
  struct server_conf *sv = base;
  /* A UDP server has no connections to time out: a timeout written there
   * would be ignored in silence. A factory's server has them once it
   * hands the socket to a protocol (aio_server_serve). */
  static const char *const timeouts[] = {"idle_timeout", "send_timeout",
                                         "header_timeout"};
  for (size_t i = 0; i < UTIL_ARRAY_LEN(timeouts); i++)
    if (settings_given(c, timeouts[i]) && sv->type == SERVER_UDP)
      settings_fail(c, timeouts[i],
                    "a udp server has no connections of aio's to time out");
  if (!settings_given(c, "protocol") && !settings_given(c, "factory")) {
    diag_add(c->d, c->sec->file, c->sec->line,
             "[%s] needs 'protocol = module.symbol' or 'factory = "
             "module.symbol'",
             c->secname);
    c->failed = 1;
  }
  /* No type, or tcp, with a path: a unix server. */
  if (sv->type == SERVER_TCP && sv->path)
    sv->type = SERVER_UNIX;
  if (sv->type == SERVER_UNIX) {
    if (sv->path == NULL)
      settings_fail(c, "path", "a unix server needs 'path = /some/socket'");
    else if (strlen(sv->path) >= 108)
      settings_fail(c, "path", "longer than a unix socket path may be (%s)",
                    "107 bytes");
    if (settings_value(c, "port"))
      settings_fail(c, "port", "a unix server has a path, not a port");
    free(sv->address);
    sv->address = NULL;
  } else {
    if (sv->path)
      settings_fail(c, "path", "'path' is for unix servers; this one is %s",
                    sv->type == SERVER_UDP ? "udp" : "tcp");
    if (!settings_given(c, "port")) {
      diag_add(c->d, c->sec->file, c->sec->line, "[%s] needs a 'port'",
               c->secname);
      c->failed = 1;
    }
  }
}

/* In the order of enum server_type. */
static const char *const server_types[] = {"tcp", "udp", "unix", NULL};
_Static_assert(SERVER_TCP == 0 && SERVER_UDP == 1 && SERVER_UNIX == 2 &&
                   sizeof(enum server_type) == sizeof(int),
               "server_types[] is indexed by enum server_type");

#define SERVER(f) offsetof(struct server_conf, f)
static const struct settings_key server_keys[] = {
    {.name = "protocol",
     .type = SETTINGS_CUSTOM,
     .dflt = "",
     .set = set_protocol,
     .help = "the AIO_PROTOCOL served (module.symbol)"},
    {.name = "factory",
     .type = SETTINGS_CUSTOM,
     .dflt = "",
     .set = set_factory,
     .help = "or the AIO_FACTORY that is handed the server's socket"},
    {.name = "type",
     .type = SETTINGS_ENUM,
     .dflt = "",
     .names = server_types,
     .offset = SERVER(type),
     .help = "tcp, udp or unix; unix when path is set, else tcp"},
    {.name = "address",
     .type = SETTINGS_CUSTOM,
     .dflt = "",
     .set = set_address,
     .help = "the IPv4 or IPv6 address bound; all interfaces when empty or *"},
    {.name = "port",
     .type = SETTINGS_INT,
     .dflt = "",
     .min = 0,
     .max = 65535,
     .offset = SERVER(port),
     .help = "the port bound (0: any free one); required but for unix"},
    {.name = "path",
     .type = SETTINGS_PATH,
     .dflt = "",
     .offset = SERVER(path),
     .help = "a unix server's socket, relative to the file's directory"},
    {.name = "backlog",
     .type = SETTINGS_INT,
     .dflt = "511",
     .min = 1,
     .max = 65535,
     .offset = SERVER(backlog),
     .help = "the listen(2) queue of each worker's socket"},
    {.name = "idle_timeout",
     .type = SETTINGS_SECONDS,
     .dflt = "60",
     .min = 0,
     .max = 7 * DAY,
     .offset = SERVER(idle_timeout),
     .help = "a connection with no byte either way this long is closed; 0: "
             "never"},
    {.name = "send_timeout",
     .type = SETTINGS_SECONDS,
     .dflt = "60",
     .min = 0,
     .max = 7 * DAY,
     .offset = SERVER(send_timeout),
     .help = "a connection whose peer takes none of its output this long is "
             "reset; 0: never"},
    {.name = "header_timeout",
     .type = SETTINGS_SECONDS,
     .dflt = "10",
     .min = 0,
     .max = 7 * DAY,
     .offset = SERVER(header_timeout),
     .help = "aio.hello: a request head not complete by then is answered "
             "408; 0: never"},
};

_Static_assert(UTIL_ARRAY_LEN(server_keys) <= SETTINGS_MAX_KEYS,
               "too many rows");
const struct settings_keyset settings_server_keyset = {
    .prefix = "server:",
    .keys = server_keys,
    .n = UTIL_ARRAY_LEN(server_keys),
    .check = server_check,
    .size = sizeof(struct server_conf),
    .name_at = SERVER(name),
    .file_at = SERVER(file),
    .line_at = SERVER(line)};
#undef SERVER

/* ---- [schedule:NAME] ---------------------------------------------------- */

static void set_cron(struct settings_ctx *c, const struct settings_key *k,
                     void *base, const char *v) {
  struct schedule_conf *sc = base;
  struct cron cr;
  char err[128];
  if (*v == '\0')
    return;
  if ((sc->cron = strdup(v)) == NULL)
    settings_fail(c, k->name, "out of memory");
  else if (cron_parse(&cr, v, err, sizeof(err)))
    settings_fail(c, k->name, "%s", err);
  else if (cron_next(&cr, time(NULL)) == (time_t)-1)
    settings_fail(c, k->name,
                  "'%s' never matches a date (a day its months do not have?)",
                  v);
}

/* host 0, cluster 1: struct schedule_conf's cluster. */
static const char *const scopes[] = {"host", "cluster", NULL};

static void set_schedule_fallback(struct settings_ctx *c,
                                  const struct settings_key *k, void *base,
                                  const char *v) {
  struct schedule_conf *sc = base;
  sc->fallback = c->s->cluster_fallback;
  if (*v == '\0')
    return;
  for (int i = 0; settings_fallbacks[i]; i++)
    if (strcasecmp(v, settings_fallbacks[i]) == 0) {
      sc->fallback = i;
      return;
    }
  settings_fail(c, k->name, "expected skip or local, not '%s'", v);
}

static void schedule_check(struct settings_ctx *c, void *base) {
  struct schedule_conf *sc = base;
  if (sc->cluster && c->s->cluster == NULL)
    diag_add(&c->s->warnings, c->sec->file, c->sec->line,
             "[%s] scope = cluster, but [aio] cluster is not set: it runs "
             "on this host, as scope = host",
             c->secname);
  if (!settings_given(c, "func")) {
    diag_add(c->d, c->sec->file, c->sec->line,
             "[%s] needs 'func = module.symbol'", c->secname);
    c->failed = 1;
  }
  sc->has_cb = sc->cb.text != NULL;
  sc->has_err = sc->err.text != NULL;
  if (settings_given(c, "every") && sc->cron) {
    settings_fail(c, "cron", "a schedule has 'every' or 'cron', not both");
  } else if (!settings_given(c, "every") && !sc->cron) {
    diag_add(c->d, c->sec->file, c->sec->line,
             "[%s] needs 'every = SECONDS' or 'cron = M H DOM MON DOW'",
             c->secname);
    c->failed = 1;
  }
}

#define SCHEDULE(f) offsetof(struct schedule_conf, f)
static const struct settings_key schedule_keys[] = {
    {.name = "func",
     .type = SETTINGS_REF,
     .dflt = "",
     .offset = SCHEDULE(func),
     .help = "the AIO_SCHEDULER run (module.symbol)"},
    {.name = "cb",
     .type = SETTINGS_REF,
     .dflt = "",
     .offset = SCHEDULE(cb),
     .help = "an AIO_SCHEDULER run after a run that succeeded"},
    {.name = "err",
     .type = SETTINGS_REF,
     .dflt = "",
     .offset = SCHEDULE(err),
     .help = "an AIO_SCHEDULER run after a run that failed or whose worker "
             "died"},
    {.name = "every",
     .type = SETTINGS_SECONDS,
     .dflt = "",
     .min = 0.001,
     .max = 366 * DAY,
     .offset = SCHEDULE(every),
     .help = "seconds between runs, fractions allowed; or cron"},
    {.name = "cron",
     .type = SETTINGS_CUSTOM,
     .dflt = "",
     .set = set_cron,
     .help = "M H DOM MON DOW: the minutes to run at, local time"},
    {.name = "offset",
     .type = SETTINGS_SECONDS,
     .dflt = "0",
     .min = 0,
     .max = 366 * DAY,
     .offset = SCHEDULE(offset),
     .help = "delays each run of an every schedule by this many seconds"},
    {.name = "overlap",
     .type = SETTINGS_BOOL,
     .dflt = "no",
     .offset = SCHEDULE(overlap),
     .help = "a run may start while the last one is still going"},
    {.name = "scope",
     .type = SETTINGS_ENUM,
     .dflt = "host",
     .names = scopes,
     .offset = SCHEDULE(cluster),
     .help = "host: a run on this host; cluster: one run per occurrence in "
             "the whole cluster"},
    {.name = "cluster_fallback",
     .type = SETTINGS_CUSTOM,
     .dflt = "",
     .set = set_schedule_fallback,
     .help = "for scope = cluster while Redis is unreachable: skip or local; "
             "[aio] cluster_fallback when empty"},
    {.name = "timeout",
     .type = SETTINGS_SECONDS,
     .dflt = "0",
     .min = 0,
     .max = 366 * DAY,
     .offset = SCHEDULE(timeout),
     .help = "a run (or its cb or err) that returned AIO_PENDING and has not "
             "finished after this many seconds fails, and err runs; 0: none"},
};

_Static_assert(UTIL_ARRAY_LEN(schedule_keys) <= SETTINGS_MAX_KEYS,
               "too many rows");
const struct settings_keyset settings_schedule_keyset = {
    .prefix = "schedule:",
    .keys = schedule_keys,
    .n = UTIL_ARRAY_LEN(schedule_keys),
    .check = schedule_check,
    .size = sizeof(struct schedule_conf),
    .name_at = SCHEDULE(name),
    .file_at = SCHEDULE(file),
    .line_at = SCHEDULE(line)};
#undef SCHEDULE
