/*
 * settings.c - turn the interpolated INI into typed settings, validating
 * every value where it is written (file:line) so nothing starts on a
 * configuration that is only half right. The keys of [aio], [server:NAME]
 * and [schedule:NAME] are rows of settings_table.c; this file walks the
 * sections, reads [listen:NAME] and [aio:commands] (whose keys are names
 * the user chooses), and checks what spans sections (two servers on one
 * address), in time linear in the file.
 */
#define _GNU_SOURCE
#include "settings.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "settings_keys.h"
#include "strmap.h"
#include "util.h"

static const char *const builtin_commands[] = {
    "run",    "config", "test",  "check", "reload", "stop",
    "status", "emit",   "scale", "help",  "version"};

int settings_is_builtin_command(const char *name) {
  for (size_t i = 0; i < UTIL_ARRAY_LEN(builtin_commands); i++)
    if (strcmp(name, builtin_commands[i]) == 0)
      return 1;
  return 0;
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
  size_t count = builtin_command_warnings(cfg, warn);
  return count + settings_keys_warn_unknown(cfg, warn);
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

/* ---- sections ------------------------------------------------------------ */

/* What settings_load() keeps while it reads: the capacity of each array
 * (grown by doubling, not by one per section) and the indexes that keep
 * the checks across sections linear in their number. */
struct loading {
  struct settings_ctx c;
  size_t servers_cap, schedules_cap, listeners_cap, commands_cap;
  /* A server's address (namespace: type and port) or unix path to its
   * index; for listeners, a signal's name (namespace 0) to its number, then
   * a function (namespace 1 + that number) to a listener. Keys borrowed
   * from s. */
  struct strmap addresses, listeners;
  size_t nsignals;
};

/* One line of a [listen:NAME] entry: "module.fn", "module.fn broadcast",
 * and either with "cluster" after it (docs/cluster.md). */
static void add_listener(struct settings *s, struct loading *ld,
                         const struct config_entry *e, int line, char **w,
                         int n) {
  struct settings_ctx *c = &ld->c;
  int cluster = n >= 2 && strcmp(w[n - 1], "cluster") == 0;
  int broadcast = n - cluster == 2 && strcmp(w[1], "broadcast") == 0;
  if (n - cluster != 1 && !broadcast) {
    diag_add(c->d, e->file, line,
             "[%s] %s: expected 'module.function', "
             "'module.function broadcast', either with 'cluster' after it, "
             "one per line",
             c->secname, e->key);
    c->failed = 1;
    return;
  }
  if (cluster && s->cluster == NULL) {
    diag_add(&s->warnings, e->file, line,
             "[%s] %s: 'cluster', but [aio] cluster is not set: it listens "
             "on this host only",
             c->secname, e->key);
    cluster = 0;
  }
  /* As the Python runner's set of listeners: one function runs once per
   * signal, however often it is named. */
  size_t sig = strmap_get(&ld->listeners, 0, e->key);
  size_t at = sig == STRMAP_NONE ? STRMAP_NONE
                                 : strmap_get(&ld->listeners, 1 + sig, w[0]);
  if (at != STRMAP_NONE) {
    const struct listener_conf *o = &s->listeners[at];
    diag_add(&s->warnings, e->file, line,
             "[%s] %s: %s is already a listener of '%s' (%s:%d); it runs "
             "once, as named there",
             c->secname, e->key, w[0], e->key, o->fn.file ? o->fn.file : "?",
             o->fn.line);
    return;
  }
  if (util_grow((void **)&s->listeners, &ld->listeners_cap, s->nlisteners + 1,
                sizeof(*s->listeners)))
    goto oom;
  struct listener_conf *l = &s->listeners[s->nlisteners];
  memset(l, 0, sizeof(*l));
  if (settings_parse_ref(&l->fn, w[0], e->file, line, c->d)) {
    c->failed = 1;
    return;
  }
  l->signal = strdup(e->key);
  l->broadcast = broadcast;
  l->cluster = cluster;
  if (l->signal == NULL) {
    settings_ref_close(&l->fn);
    goto oom;
  }
  s->nlisteners++;
  if (sig == STRMAP_NONE) {
    sig = ld->nsignals++;
    if (strmap_put(&ld->listeners, 0, l->signal, sig))
      goto oom;
  }
  if (strmap_put(&ld->listeners, 1 + sig, l->fn.text, s->nlisteners - 1))
    goto oom;
  return;
oom:
  diag_add(c->d, e->file, line, "out of memory");
  c->failed = 1;
}

static void load_listen(struct settings *s, struct loading *ld) {
  const struct config_section *sec = ld->c.sec;
  for (size_t i = 0; i < sec->n; i++) {
    const struct config_entry *e = &sec->entries[i];
    const char *p = e->value;
    for (size_t part = 0; *p; part++) {
      char **w;
      int n = settings_next_line_words(&p, &w);
      if (n > 0)
        add_listener(s, ld, e, config_entry_line(e, part), w, n);
      util_strv_free(w, n > 0 ? (size_t)n : 0);
    }
  }
}

static void load_commands(struct settings *s, struct loading *ld) {
  const struct config_section *sec = ld->c.sec;
  for (size_t i = 0; i < sec->n; i++) {
    const struct config_entry *e = &sec->entries[i];
    if (settings_is_builtin_command(e->key))
      continue; /* ignored, with a warning (settings_unknown_keys) */
    if (util_grow((void **)&s->commands, &ld->commands_cap, s->ncommands + 1,
                  sizeof(*s->commands)))
      return;
    struct command_conf *c = &s->commands[s->ncommands];
    memset(c, 0, sizeof(*c));
    if (settings_parse_ref(&c->fn, e->value, e->file, e->line, ld->c.d)) {
      ld->c.failed = 1;
      continue;
    }
    c->name = strdup(e->key);
    s->ncommands++;
  }
}

/* A [server:NAME] or [schedule:NAME]: one more element of *arr (*n of
 * them, *cap allocated), of ks's struct, read by ks's rows. */
static void load_named(struct loading *ld, const struct settings_keyset *ks,
                       void **arr, size_t *n, size_t *cap, const char *name) {
  const struct config_section *sec = ld->c.sec;
  if (util_grow(arr, cap, *n + 1, ks->size)) {
    diag_add(ld->c.d, sec->file, sec->line, "out of memory");
    return;
  }
  char *el = (char *)*arr + (*n)++ * ks->size;
  memset(el, 0, ks->size);
  *(char **)(el + ks->name_at) = strdup(name);
  *(const char **)(el + ks->file_at) = sec->file;
  *(int *)(el + ks->line_at) = sec->line;
  settings_keys_apply(&ld->c, ks, el);
}

/* Two servers on one address would fight over the same port: each is
 * looked up among the addresses before it, so the check is linear in the
 * number of servers. Port 0 asks for any free port, so it never clashes. */
static void check_addresses(struct settings *s, struct loading *ld) {
  for (size_t i = 0; i < s->nservers; i++) {
    const struct server_conf *a = &s->servers[i];
    const char *key = a->type == SERVER_UNIX ? a->path : a->address;
    if (key == NULL || (a->type != SERVER_UNIX && a->port == 0))
      continue;
    size_t ns =
        a->type == SERVER_UNIX
            ? 0
            : (size_t)(a->type == SERVER_UDP ? 2 : 1) * 65536 + (size_t)a->port;
    size_t j = strmap_get(&ld->addresses, ns, key);
    if (j != STRMAP_NONE)
      diag_add(ld->c.d, a->file, a->line,
               "[server:%s] uses the same address as [server:%s] (line %d)",
               a->name, s->servers[j].name, s->servers[j].line);
    else if (strmap_put(&ld->addresses, ns, key, i))
      diag_add(ld->c.d, a->file, a->line, "out of memory");
  }
}

int settings_load(struct settings *s, const struct config *cfg,
                  struct diag *d) {
  memset(s, 0, sizeof(*s));
  size_t before = d->n;
  s->config_dir = strdup(cfg->dir ? cfg->dir : ".");
  struct loading ld = {.c = {.cfg = cfg, .s = s, .d = d, .secname = "aio"}};
  strmap_init(&ld.addresses);
  strmap_init(&ld.listeners);
  /* Even without an [aio] section: its rows' defaults apply. */
  ld.c.sec = config_section(cfg, "aio");
  settings_keys_apply(&ld.c, &settings_aio_keyset, s);
  for (size_t i = 0; i < cfg->n; i++) {
    const struct config_section *sec = &cfg->sections[i];
    ld.c.sec = sec;
    ld.c.secname = sec->name;
    ld.c.failed = 0; /* "needs a protocol" is about this section only */
    const struct settings_keyset *ks = settings_keyset_of(sec->name);
    if (ks && ks->size) {
      size_t plen = strlen(ks->prefix);
      if (sec->name[plen] == '\0') {
        /* "[server:] has no server name" */
        diag_add(d, sec->file, sec->line, "[%s] has no %.*s name", sec->name,
                 (int)plen - 1, ks->prefix);
      } else if (ks == &settings_server_keyset) {
        load_named(&ld, ks, (void **)&s->servers, &s->nservers, &ld.servers_cap,
                   sec->name + plen);
      } else {
        load_named(&ld, ks, (void **)&s->schedules, &s->nschedules,
                   &ld.schedules_cap, sec->name + plen);
      }
    } else if (strncmp(sec->name, "listen:", 7) == 0) {
      load_listen(s, &ld);
    } else if (strcmp(sec->name, "aio:commands") == 0) {
      load_commands(s, &ld);
    }
  }
  check_addresses(s, &ld);
  strmap_close(&ld.addresses);
  strmap_close(&ld.listeners);
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
  free(s->user);
  free(s->group);
  free(s->metrics);
  free(s->cluster);
  redis_url_close(&s->redis);
  free(s->node);
  free(s->cluster_prefix);
  free(s->cluster_password_file);
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

/* ---- [aio] metrics: the endpoint's address --------------------------------
 */

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
