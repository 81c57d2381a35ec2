/*
 * settings.c - turn the interpolated INI into typed settings, validating
 * every value where it is written (file:line) so nothing starts on a
 * configuration that is only half right.
 */
#define _GNU_SOURCE
#include "settings.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cron.h"
#include "log.h"
#include "util.h"

const char settings_builtin_defaults[] = "[aio]\n"
                                         "modules =\n"
                                         "module_path =\n"
                                         "workers = auto\n"
                                         "timeout = 30\n"
                                         "graceful_timeout = 30\n"
                                         "log_level = info\n"
                                         "log_file =\n"
                                         "log_format = text\n"
                                         "pidfile =\n"
                                         "control =\n"
                                         "control_timeout = 5\n"
                                         "user =\n"
                                         "group =\n"
                                         "max_restarts = 5\n"
                                         "restart_window = 60\n"
                                         "max_connections = 10000\n"
                                         "write_limit = 4194304\n"
                                         "rlimit_nofile =\n"
                                         /* metrics (load_metrics) */
                                         "metrics =\n";

static const char *const builtin_commands[] = {
    "run",    "config", "test",  "check", "reload", "stop",
    "status", "emit",   "scale", "help",  "version"};

int settings_is_builtin_command(const char *name) {
  for (size_t i = 0; i < UTIL_ARRAY_LEN(builtin_commands); i++)
    if (strcmp(name, builtin_commands[i]) == 0)
      return 1;
  return 0;
}

/* Edit distance, capped: enough to suggest "workers" for "worker". */
static size_t distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b), row[64];
  if (la >= 63 || lb >= 63)
    return 64;
  for (size_t j = 0; j <= lb; j++)
    row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best)
        best = up + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

/* The Python runner's README maps its own commands ("run =
 * aio.app.cmd.cmd_run", "test = aio.app.testing.cmd.cmd_test"): a file
 * copied from it must work, so such a line is ignored with a warning. */
static size_t builtin_command_warnings(const struct config *cfg,
                                       struct diag *warn) {
  const struct config_section *cmds = config_section(cfg, "aio:commands");
  size_t count = 0;
  for (size_t i = 0; cmds && i < cmds->n; i++) {
    const struct config_entry *e = &cmds->entries[i];
    if (!settings_is_builtin_command(e->key))
      continue;
    count++;
    diag_add(warn, e->file, e->line,
             "[aio:commands] '%s' is ignored: '%s' is a built-in command of "
             "aio and cannot be remapped",
             e->key, e->key);
  }
  return count;
}

size_t settings_unknown_keys(const struct config *cfg, struct diag *warn) {
  const struct config_section *aio = config_section(cfg, "aio");
  size_t count = builtin_command_warnings(cfg, warn);
  for (size_t i = 0; aio && i < aio->n; i++) {
    const struct config_entry *e = &aio->entries[i];
    /* The known keys are exactly those of the built-in layer. */
    const char *best = NULL;
    size_t best_d = 3, klen = strlen(e->key);
    int known = 0;
    for (const char *p = settings_builtin_defaults; *p && !known;) {
      p += strspn(p, "\n");
      size_t n = strcspn(p, " =\n");
      char key[64];
      if (n > 0 && n < sizeof(key) && p[0] != '[') {
        memcpy(key, p, n);
        key[n] = '\0';
        known = n == klen && memcmp(key, e->key, n) == 0;
        /* A prefix counts as close: "graceful" for "graceful_timeout". */
        size_t dd = klen >= 4 && strncmp(key, e->key, klen) == 0
                        ? 1
                        : distance(e->key, key);
        if (dd < best_d) {
          best_d = dd;
          best = strstr(settings_builtin_defaults, key);
        }
      }
      p += strcspn(p, "\n");
    }
    if (known)
      continue;
    count++;
    if (best)
      diag_add(warn, e->file, e->line,
               "unknown key '%s' in [aio] is ignored; did you mean '%.*s'?",
               e->key, (int)strcspn(best, " ="), best);
    else
      diag_add(warn, e->file, e->line, "unknown key '%s' in [aio] is ignored",
               e->key);
  }
  return count;
}

void settings_ref_close(struct ref *r) {
  free(r->text);
  free(r->module);
  free(r->symbol);
  memset(r, 0, sizeof(*r));
}

int settings_parse_ref(struct ref *r, const char *text, const char *file,
                       int line, struct diag *d) {
  memset(r, 0, sizeof(*r));
  r->file = file;
  r->line = line;
  const char *dot = strrchr(text, '.');
  if (dot == NULL || dot == text || dot[1] == '\0' ||
      strpbrk(text, " \t\n/") != NULL) {
    diag_add(d, file, line,
             "'%s' is not a module.symbol reference (e.g. aio.echo)", text);
    return -1;
  }
  r->text = strdup(text);
  r->module = strndup(text, (size_t)(dot - text));
  r->symbol = strdup(dot + 1);
  if (!r->text || !r->module || !r->symbol) {
    settings_ref_close(r);
    diag_add(d, file, line, "out of memory");
    return -1;
  }
  return 0;
}

/* ---- helpers over the config ------------------------------------------- */

struct reader {
  const struct config *cfg;
  const struct config_section *sec;
  struct diag *d;
  int failed;
};

static const struct config_entry *rd_entry(struct reader *r, const char *key) {
  for (size_t i = 0; i < r->sec->n; i++)
    if (strcmp(r->sec->entries[i].key, key) == 0)
      return &r->sec->entries[i];
  return NULL;
}

static const char *rd_str(struct reader *r, const char *key) {
  const struct config_entry *e = rd_entry(r, key);
  return e ? e->value : NULL;
}

static char *rd_dup(struct reader *r, const char *key) {
  const char *v = rd_str(r, key);
  return (v && *v) ? strdup(v) : NULL;
}

static void rd_fail(struct reader *r, const char *key, const char *fmt,
                    const char *what) {
  const struct config_entry *e = rd_entry(r, key);
  char msg[512];
  snprintf(msg, sizeof(msg), fmt, what);
  if (e)
    diag_add(r->d, e->file, e->line, "[%s] %s: %s", r->sec->name, key, msg);
  else
    diag_add(r->d, r->sec->file, r->sec->line, "[%s] %s: %s", r->sec->name, key,
             msg);
  r->failed = 1;
}

static long rd_long(struct reader *r, const char *key, long min, long max,
                    long dflt) {
  const char *v = rd_str(r, key);
  long out;
  if (v == NULL || *v == '\0')
    return dflt;
  if (util_parse_long(v, min, max, &out)) {
    char what[128];
    snprintf(what, sizeof(what), "%ld and %ld", min, max);
    rd_fail(r, key, "expected a whole number between %s", what);
    return dflt;
  }
  return out;
}

static double rd_double(struct reader *r, const char *key, double min,
                        double max, double dflt) {
  const char *v = rd_str(r, key);
  double out;
  if (v == NULL || *v == '\0')
    return dflt;
  if (util_parse_double(v, min, max, &out)) {
    char what[128];
    snprintf(what, sizeof(what), "%g and %g", min, max);
    rd_fail(r, key, "expected a number of seconds between %s", what);
    return dflt;
  }
  return out;
}

static int rd_bool(struct reader *r, const char *key, int dflt) {
  const char *v = rd_str(r, key);
  if (v == NULL || *v == '\0')
    return dflt;
  static const char *const yes[] = {"1", "yes", "true", "on"};
  static const char *const no[] = {"0", "no", "false", "off"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(v, yes[i]) == 0)
      return 1;
    if (strcasecmp(v, no[i]) == 0)
      return 0;
  }
  rd_fail(r, key, "expected yes/no, true/false, on/off or 1/0%s", "");
  return dflt;
}

static int rd_ref(struct reader *r, const char *key, struct ref *out) {
  const struct config_entry *e = rd_entry(r, key);
  if (e == NULL || *e->value == '\0')
    return 0;
  if (settings_parse_ref(out, e->value, e->file, e->line, r->d)) {
    r->failed = 1;
    return 0;
  }
  return 1;
}

static int rd_words(struct reader *r, const char *key, char ***v, size_t *n) {
  const char *s = rd_str(r, key);
  *v = NULL;
  *n = 0;
  if (s == NULL)
    return 0;
  int c = util_split_words(s, v);
  if (c < 0) {
    rd_fail(r, key, "out of memory%s", "");
    return -1;
  }
  *n = (size_t)c;
  return 0;
}

/* Split the next line of a (continued) value at *p into words, as
 * util_split_words, and advance *p past it. */
static int next_line_words(const char **p, char ***w) {
  size_t len = strcspn(*p, "\n");
  char *one = strndup(*p, len);
  *w = NULL;
  int n = one ? util_split_words(one, w) : -ENOMEM;
  free(one);
  *p += len;
  if (**p == '\n')
    (*p)++;
  return n;
}

/* ---- sections ------------------------------------------------------------ */

/* [aio] modules, remembering the line of each name so that the loader can
 * point at the one it cannot load. */
static void load_modules(struct settings *s, struct reader *r) {
  const struct config_entry *e = rd_entry(r, "modules");
  size_t cap = 0, lcap = 0;
  if (e == NULL)
    return;
  s->modules_file = e->file;
  const char *p = e->value;
  for (size_t part = 0; *p; part++) {
    char **w;
    int n = next_line_words(&p, &w);
    int line = config_entry_line(e, part);
    for (int i = 0; i < n; i++) {
      if (strchr(w[i], '/')) {
        diag_add(r->d, e->file, line,
                 "[%s] modules: module names have no '/' (put directories "
                 "in module_path): '%s'",
                 r->sec->name, w[i]);
        r->failed = 1;
        free(w[i]);
      } else if (util_grow((void **)&s->modules, &cap, s->nmodules + 1,
                           sizeof(*s->modules)) ||
                 util_grow((void **)&s->module_lines, &lcap, s->nmodules + 1,
                           sizeof(*s->module_lines))) {
        rd_fail(r, "modules", "out of memory%s", "");
        free(w[i]);
      } else {
        s->modules[s->nmodules] = w[i];
        s->module_lines[s->nmodules++] = line;
      }
    }
    if (n < 0)
      rd_fail(r, "modules", "out of memory%s", "");
    free(w);
  }
}

/* [aio] user / group: looked up now, so a typo is a config error and not
 * a worker that cannot start. */
static void resolve_user(struct settings *s, struct reader *r) {
  s->uid = getuid();
  s->gid = getgid();
  if (s->user) {
    struct passwd *pw = getpwnam(s->user);
    long id;
    if (pw) {
      s->uid = pw->pw_uid;
      s->gid = pw->pw_gid;
    } else if (util_parse_long(s->user, 0, 1L << 30, &id) == 0) {
      s->uid = (uid_t)id;
    } else {
      rd_fail(r, "user", "no such user '%s'", s->user);
      s->ids_unknown = 1;
    }
    s->drop_privileges = 1;
  }
  if (s->group) {
    struct group *gr = getgrnam(s->group);
    long id;
    if (gr)
      s->gid = gr->gr_gid;
    else if (util_parse_long(s->group, 0, 1L << 30, &id) == 0)
      s->gid = (gid_t)id;
    else {
      rd_fail(r, "group", "no such group '%s'", s->group);
      s->ids_unknown = 1;
    }
    s->drop_privileges = 1;
  }
}

/* ---- [aio] metrics ------------------------------------------------------ */

int settings_parse_endpoint(const char *text, struct settings_endpoint *out) {
  memset(out, 0, sizeof(*out));
  size_t n = strlen(text);
  if (text[0] == '/') {
    if (n >= sizeof(out->path))
      return -1;
    memcpy(out->path, text, n + 1);
    out->unix_path = 1;
    return 0;
  }
  const char *colon = strrchr(text, ':');
  if (colon == NULL || colon == text)
    return -1;
  long port;
  if (util_parse_long(colon + 1, 1, 65535, &port))
    return -1;
  out->port = (int)port;
  const char *host = text;
  size_t hl = (size_t)(colon - text);
  if (host[0] == '[') { /* [::1]:9464 */
    if (hl < 3 || host[hl - 1] != ']')
      return -1;
    host++;
    hl -= 2;
    out->ipv6 = 1;
  }
  if (hl >= sizeof(out->host))
    return -1;
  memcpy(out->host, host, hl);
  out->host[hl] = '\0';
  if (!out->ipv6 && strcmp(out->host, "localhost") == 0)
    strcpy(out->host, "127.0.0.1");
  unsigned char addr[16];
  return inet_pton(out->ipv6 ? AF_INET6 : AF_INET, out->host, addr) == 1 ? 0
                                                                         : -1;
}

/* [aio] metrics: where the master serves /metrics and /healthz. Checked
 * here so that a typo is a FILE:LINE error, not a master that cannot
 * bind. */
static void load_metrics(struct settings *s, struct reader *r) {
  s->metrics = rd_dup(r, "metrics");
  /* A path (it has a '/') is relative to the configuration's directory,
   * as every other path of the file. */
  if (s->metrics && s->metrics[0] != '/' && strchr(s->metrics, '/')) {
    char *abs =
        util_asprintf("%s/%s", s->config_dir ? s->config_dir : ".", s->metrics);
    if (abs == NULL) {
      rd_fail(r, "metrics", "out of memory%s", "");
      return;
    }
    free(s->metrics);
    s->metrics = abs;
  }
  struct settings_endpoint ep;
  if (s->metrics && settings_parse_endpoint(s->metrics, &ep))
    rd_fail(r, "metrics",
            "expected ADDRESS:PORT (127.0.0.1:9464, [::1]:9464) or a unix "
            "socket path (with a '/'), not '%s'",
            s->metrics);
}

static void load_aio(struct settings *s, struct reader *r) {
  const char *w = rd_str(r, "workers");
  if (w == NULL || *w == '\0' || strcasecmp(w, "auto") == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    s->workers = n > 0 ? (int)n : 1;
  } else {
    s->workers = (int)rd_long(r, "workers", 0, 1024, 1);
  }
  s->timeout = rd_double(r, "timeout", 0, 86400, 30);
  s->graceful_timeout = rd_double(r, "graceful_timeout", 0, 86400, 30);
  s->log_file = rd_dup(r, "log_file");
  const char *lv = rd_str(r, "log_level");
  s->log_level = AIO_LOG_INFO;
  if (lv && *lv) {
    s->log_level = log_level_parse(lv);
    if (s->log_level < 0) {
      rd_fail(r, "log_level", "expected debug, info, warn or error%s", "");
      s->log_level = AIO_LOG_INFO;
    }
  }
  const char *lf = rd_str(r, "log_format");
  s->log_format = LOG_FORMAT_TEXT;
  if (lf && *lf) {
    s->log_format = log_format_parse(lf);
    if (s->log_format < 0) {
      rd_fail(r, "log_format", "expected text or json%s", "");
      s->log_format = LOG_FORMAT_TEXT;
    }
  }
  load_modules(s, r);
  rd_words(r, "module_path", &s->module_path, &s->npath);
  s->pidfile = rd_dup(r, "pidfile");
  s->control = rd_dup(r, "control");
  s->control_timeout = rd_double(r, "control_timeout", 0.1, 3600, 5);
  s->user = rd_dup(r, "user");
  s->group = rd_dup(r, "group");
  resolve_user(s, r);
  s->max_restarts = (int)rd_long(r, "max_restarts", 0, 1000000, 5);
  s->restart_window = rd_double(r, "restart_window", 0, 86400 * 7, 60);
  s->max_connections =
      (size_t)rd_long(r, "max_connections", 1, 10000000, 10000);
  s->write_limit =
      (size_t)rd_long(r, "write_limit", 4096, 1L << 30, 4 * 1024 * 1024);
  s->rlimit_nofile = rd_long(r, "rlimit_nofile", 0, 1L << 30, 0);
  load_metrics(s, r);
}

/* The timeouts of a stream server: what closes connections that hold a
 * worker's descriptors and memory without doing anything. A UDP or a
 * factory server has no connections of the runner's to time out, so a
 * timeout written there would be ignored in silence: refused instead. */
static void load_timeouts(struct server_conf *sv, struct reader *r) {
  static const struct {
    const char *key;
    size_t offset;
    double dflt;
  } keys[] = {
      {"idle_timeout", offsetof(struct server_conf, idle_timeout),
       SETTINGS_IDLE_TIMEOUT},
      {"send_timeout", offsetof(struct server_conf, send_timeout),
       SETTINGS_SEND_TIMEOUT},
      {"header_timeout", offsetof(struct server_conf, header_timeout),
       SETTINGS_HEADER_TIMEOUT},
  };
  for (size_t i = 0; i < UTIL_ARRAY_LEN(keys); i++) {
    double *v = (double *)((char *)sv + keys[i].offset);
    *v = rd_double(r, keys[i].key, 0, 604800, keys[i].dflt);
    const char *text = rd_str(r, keys[i].key);
    if (text && *text && (sv->type == SERVER_UDP || sv->is_factory))
      rd_fail(r, keys[i].key, "%s has no connections of aio's to time out",
              sv->is_factory ? "a server with a factory" : "a udp server");
  }
}

static int valid_address(const char *a) {
  unsigned char buf[16];
  return *a == '\0' || inet_pton(AF_INET, a, buf) == 1 ||
         inet_pton(AF_INET6, a, buf) == 1;
}

static void load_server(struct settings *s, struct reader *r,
                        const char *name) {
  if (util_grow((void **)&s->servers, &(size_t){s->nservers}, s->nservers + 1,
                sizeof(*s->servers)))
    return;
  struct server_conf *sv = &s->servers[s->nservers++];
  memset(sv, 0, sizeof(*sv));
  sv->name = strdup(name);
  sv->file = r->sec->file;
  sv->line = r->sec->line;
  int has_proto = rd_ref(r, "protocol", &sv->handler);
  struct ref fac = {0};
  int has_fac = rd_ref(r, "factory", &fac);
  if (has_proto && has_fac) {
    rd_fail(r, "factory", "a server has a protocol or a factory, not both%s",
            "");
    settings_ref_close(&fac);
  } else if (has_fac) {
    sv->handler = fac;
    sv->is_factory = 1;
  } else if (!has_proto && !r->failed) {
    diag_add(r->d, r->sec->file, r->sec->line,
             "[%s] needs 'protocol = module.symbol' or 'factory = "
             "module.symbol'",
             r->sec->name);
    r->failed = 1;
  }
  const char *type = rd_str(r, "type");
  sv->path = rd_dup(r, "path");
  if (type == NULL || *type == '\0' || strcasecmp(type, "tcp") == 0)
    sv->type = sv->path ? SERVER_UNIX : SERVER_TCP;
  else if (strcasecmp(type, "udp") == 0)
    sv->type = SERVER_UDP;
  else if (strcasecmp(type, "unix") == 0)
    sv->type = SERVER_UNIX;
  else
    rd_fail(r, "type", "expected tcp, udp or unix, not '%s'", type);
  if (sv->type == SERVER_UNIX) {
    if (sv->path == NULL) {
      rd_fail(r, "path", "a unix server needs 'path = /some/socket'%s", "");
    } else if (strlen(sv->path) >= 108) {
      rd_fail(r, "path", "longer than a unix socket path may be (%s)",
              "107 bytes");
    }
    if (rd_str(r, "port"))
      rd_fail(r, "port", "a unix server has a path, not a port%s", "");
  } else {
    if (sv->path)
      rd_fail(r, "path", "'path' is for unix servers; this one is %s",
              sv->type == SERVER_UDP ? "udp" : "tcp");
    const char *p = rd_str(r, "port");
    if (p == NULL || *p == '\0') {
      diag_add(r->d, r->sec->file, r->sec->line, "[%s] needs a 'port'",
               r->sec->name);
      r->failed = 1;
    } else {
      sv->port = (int)rd_long(r, "port", 0, 65535, 0);
    }
    const char *a = rd_str(r, "address");
    if (a && (strcmp(a, "*") == 0))
      a = "";
    sv->address = strdup(a ? a : "");
    if (a && !valid_address(a))
      rd_fail(r, "address", "'%s' is not an IPv4 or IPv6 address", a);
  }
  sv->backlog = (int)rd_long(r, "backlog", 1, 65535, 511);
  load_timeouts(sv, r);
}

static void load_schedule(struct settings *s, struct reader *r,
                          const char *name) {
  if (util_grow((void **)&s->schedules, &(size_t){s->nschedules},
                s->nschedules + 1, sizeof(*s->schedules)))
    return;
  struct schedule_conf *sc = &s->schedules[s->nschedules++];
  memset(sc, 0, sizeof(*sc));
  sc->name = strdup(name);
  sc->file = r->sec->file;
  sc->line = r->sec->line;
  if (!rd_ref(r, "func", &sc->func) && !r->failed) {
    diag_add(r->d, r->sec->file, r->sec->line,
             "[%s] needs 'func = module.symbol'", r->sec->name);
    r->failed = 1;
  }
  sc->has_cb = rd_ref(r, "cb", &sc->cb);
  sc->has_err = rd_ref(r, "err", &sc->err);
  const char *every = rd_str(r, "every");
  sc->cron = rd_dup(r, "cron");
  if (every && *every && sc->cron) {
    rd_fail(r, "cron", "a schedule has 'every' or 'cron', not both%s", "");
  } else if (sc->cron) {
    struct cron c;
    char err[128];
    if (cron_parse(&c, sc->cron, err, sizeof(err)))
      rd_fail(r, "cron", "%s", err);
    else if (cron_next(&c, time(NULL)) == (time_t)-1)
      rd_fail(r, "cron",
              "'%s' never matches a date (a day its months do not have?)",
              sc->cron);
  } else if (every && *every) {
    sc->every = rd_double(r, "every", 0.001, 86400 * 366, 1);
  } else {
    diag_add(r->d, r->sec->file, r->sec->line,
             "[%s] needs 'every = SECONDS' or 'cron = M H DOM MON DOW'",
             r->sec->name);
    r->failed = 1;
  }
  sc->offset = rd_double(r, "offset", 0, 86400 * 366, 0);
  sc->overlap = rd_bool(r, "overlap", 0);
}

/* One line of a [listen:NAME] entry: "module.fn" or "module.fn broadcast". */
static void add_listener(struct settings *s, struct reader *r,
                         const struct config_entry *e, int line, char **w,
                         int n) {
  int broadcast = n == 2 && strcmp(w[1], "broadcast") == 0;
  if (n != 1 && !broadcast) {
    diag_add(r->d, e->file, line,
             "[%s] %s: expected 'module.function' or "
             "'module.function broadcast', one per line",
             r->sec->name, e->key);
    r->failed = 1;
    return;
  }
  /* As the Python runner's set of listeners: one function runs once per
   * signal, however often it is named. */
  for (size_t i = 0; i < s->nlisteners; i++) {
    const struct listener_conf *o = &s->listeners[i];
    if (strcmp(o->signal, e->key) == 0 && strcmp(o->fn.text, w[0]) == 0) {
      diag_add(&s->warnings, e->file, line,
               "[%s] %s: %s is already a listener of '%s' (%s:%d); it runs "
               "once, as named there",
               r->sec->name, e->key, w[0], e->key,
               o->fn.file ? o->fn.file : "?", o->fn.line);
      return;
    }
  }
  if (util_grow((void **)&s->listeners, &(size_t){s->nlisteners},
                s->nlisteners + 1, sizeof(*s->listeners)))
    return;
  struct listener_conf *l = &s->listeners[s->nlisteners];
  memset(l, 0, sizeof(*l));
  if (settings_parse_ref(&l->fn, w[0], e->file, line, r->d)) {
    r->failed = 1;
    return;
  }
  l->signal = strdup(e->key);
  l->broadcast = broadcast;
  s->nlisteners++;
}

static void load_listen(struct settings *s, struct reader *r) {
  for (size_t i = 0; i < r->sec->n; i++) {
    const struct config_entry *e = &r->sec->entries[i];
    const char *p = e->value;
    for (size_t part = 0; *p; part++) {
      char **w;
      int n = next_line_words(&p, &w);
      if (n > 0)
        add_listener(s, r, e, config_entry_line(e, part), w, n);
      util_strv_free(w, n > 0 ? (size_t)n : 0);
    }
  }
}

static void load_commands(struct settings *s, struct reader *r) {
  for (size_t i = 0; i < r->sec->n; i++) {
    const struct config_entry *e = &r->sec->entries[i];
    if (settings_is_builtin_command(e->key))
      continue; /* ignored, with a warning (settings_unknown_keys) */
    if (util_grow((void **)&s->commands, &(size_t){s->ncommands},
                  s->ncommands + 1, sizeof(*s->commands)))
      return;
    struct command_conf *c = &s->commands[s->ncommands];
    memset(c, 0, sizeof(*c));
    if (settings_parse_ref(&c->fn, e->value, e->file, e->line, r->d)) {
      r->failed = 1;
      continue;
    }
    c->name = strdup(e->key);
    s->ncommands++;
  }
}

static int prefix(const char *name, const char *p, const char **rest) {
  size_t n = strlen(p);
  if (strncmp(name, p, n) != 0)
    return 0;
  *rest = name + n;
  return 1;
}

/* Relative file names in the config are relative to its directory, so a
 * daemon (which runs in "/") and a reload find the same files. */
static void absolutize(char **path, const char *dir) {
  if (*path == NULL || (*path)[0] == '/' || dir == NULL)
    return;
  char *abs = util_asprintf("%s/%s", dir, *path);
  if (abs) {
    free(*path);
    *path = abs;
  }
}

int settings_load(struct settings *s, const struct config *cfg,
                  struct diag *d) {
  memset(s, 0, sizeof(*s));
  size_t before = d->n;
  s->config_dir = strdup(cfg->dir ? cfg->dir : ".");
  struct reader r = {.cfg = cfg, .d = d};
  const struct config_section *aio = config_section(cfg, "aio");
  if (aio) {
    r.sec = aio;
    load_aio(s, &r);
  }
  for (size_t i = 0; i < cfg->n; i++) {
    const struct config_section *sec = &cfg->sections[i];
    const char *rest;
    r.sec = sec;
    r.failed = 0; /* "needs a protocol" is about this section only */
    if (prefix(sec->name, "server:", &rest)) {
      if (*rest == '\0') {
        diag_add(d, sec->file, sec->line, "[%s] has no server name", sec->name);
        continue;
      }
      load_server(s, &r, rest);
    } else if (prefix(sec->name, "schedule:", &rest)) {
      if (*rest == '\0') {
        diag_add(d, sec->file, sec->line, "[%s] has no schedule name",
                 sec->name);
        continue;
      }
      load_schedule(s, &r, rest);
    } else if (prefix(sec->name, "listen:", &rest)) {
      load_listen(s, &r);
    } else if (strcmp(sec->name, "aio:commands") == 0) {
      load_commands(s, &r);
    }
  }
  absolutize(&s->log_file, s->config_dir);
  absolutize(&s->pidfile, s->config_dir);
  absolutize(&s->control, s->config_dir);
  for (size_t i = 0; i < s->nservers; i++)
    absolutize(&s->servers[i].path, s->config_dir);
  /* Two servers on one address would fight over the same port. */
  for (size_t i = 0; i < s->nservers; i++)
    for (size_t j = 0; j < i; j++) {
      struct server_conf *a = &s->servers[i], *b = &s->servers[j];
      int same = a->type == SERVER_UNIX
                     ? (b->type == SERVER_UNIX && a->path && b->path &&
                        strcmp(a->path, b->path) == 0)
                     : (b->type != SERVER_UNIX &&
                        (a->type == SERVER_UDP) == (b->type == SERVER_UDP) &&
                        a->port && a->port == b->port && a->address &&
                        b->address && strcmp(a->address, b->address) == 0);
      if (same)
        diag_add(d, a->file, a->line,
                 "[server:%s] uses the same address as [server:%s] (line %d)",
                 a->name, b->name, b->line);
    }
  return d->n == before ? 0 : -1;
}

void settings_warnings(const struct settings *s, const struct config *cfg,
                       struct diag *warn) {
  settings_unknown_keys(cfg, warn);
  for (size_t i = 0; i < s->warnings.n; i++)
    diag_add_raw(warn, s->warnings.msgs[i]);
}

void settings_close(struct settings *s) {
  diag_close(&s->warnings);
  free(s->log_file);
  util_strv_free(s->modules, s->nmodules);
  free(s->module_lines);
  util_strv_free(s->module_path, s->npath);
  free(s->config_dir);
  free(s->pidfile);
  free(s->control);
  free(s->metrics);
  free(s->user);
  free(s->group);
  for (size_t i = 0; i < s->nservers; i++) {
    struct server_conf *sv = &s->servers[i];
    free(sv->name);
    settings_ref_close(&sv->handler);
    free(sv->address);
    free(sv->path);
  }
  free(s->servers);
  for (size_t i = 0; i < s->nschedules; i++) {
    struct schedule_conf *sc = &s->schedules[i];
    free(sc->name);
    free(sc->cron);
    settings_ref_close(&sc->func);
    settings_ref_close(&sc->cb);
    settings_ref_close(&sc->err);
  }
  free(s->schedules);
  for (size_t i = 0; i < s->nlisteners; i++) {
    free(s->listeners[i].signal);
    settings_ref_close(&s->listeners[i].fn);
  }
  free(s->listeners);
  for (size_t i = 0; i < s->ncommands; i++) {
    free(s->commands[i].name);
    settings_ref_close(&s->commands[i].fn);
  }
  free(s->commands);
  memset(s, 0, sizeof(*s));
}
