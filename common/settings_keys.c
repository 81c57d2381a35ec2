/*
 * settings_keys.c - how a row of the key tables (settings_table.c) is
 * read: one parser per type with the messages every key of that type
 * shares, the default that stands in for an absent or empty value, the
 * built-in layer made from the [aio] rows, and the warning for a key no
 * row names, with the row it most likely meant.
 */
#define _GNU_SOURCE
#include "settings_keys.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

const struct settings_key *settings_key_find(const struct settings_keyset *ks,
                                             const char *name) {
  for (size_t i = 0; i < ks->n; i++)
    if (strcmp(ks->keys[i].name, name) == 0)
      return &ks->keys[i];
  return NULL;
}

const struct settings_keyset *settings_keyset_of(const char *section) {
  static const struct settings_keyset *const all[] = {
      &settings_aio_keyset, &settings_server_keyset, &settings_schedule_keyset};
  for (size_t i = 0; i < UTIL_ARRAY_LEN(all); i++) {
    const char *p = all[i]->prefix;
    size_t n = strlen(p);
    /* "server:" owns "server:NAME"; "aio" owns "aio" only. */
    if (p[n - 1] == ':' ? strncmp(section, p, n) == 0 : strcmp(section, p) == 0)
      return all[i];
  }
  return NULL;
}

const struct config_entry *settings_entry(const struct settings_ctx *c,
                                          const char *key) {
  if (c->sec == NULL)
    return NULL;
  const struct settings_key *k = c->ks ? settings_key_find(c->ks, key) : NULL;
  if (k)
    return c->by_row[k - c->ks->keys];
  return config_entry(c->cfg, c->sec->name, key);
}

const char *settings_value(const struct settings_ctx *c, const char *key) {
  const struct config_entry *e = settings_entry(c, key);
  return e ? e->value : NULL;
}

void settings_fail(struct settings_ctx *c, const char *key, const char *fmt,
                   ...) {
  const struct config_entry *e = settings_entry(c, key);
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (e)
    diag_add(c->d, e->file, e->line, "[%s] %s: %s", c->secname, key, msg);
  else if (c->sec)
    diag_add(c->d, c->sec->file, c->sec->line, "[%s] %s: %s", c->secname, key,
             msg);
  else
    diag_add(c->d, "<built-in>", 0, "[%s] %s: %s", c->secname, key, msg);
  c->failed = 1;
}

int settings_next_line_words(const char **p, char ***w) {
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

/* ---- one parser per type ------------------------------------------------ */

static void *field(void *base, size_t offset) { return (char *)base + offset; }

static int parse_whole(struct settings_ctx *c, const struct settings_key *k,
                       const char *v, long *out) {
  if (util_parse_long(v, (long)k->min, (long)k->max, out) == 0)
    return 0;
  settings_fail(c, k->name, "expected a whole number between %ld and %ld",
                (long)k->min, (long)k->max);
  return -1;
}

/* The duration syntax of the modules' own keys (aio_config_duration) too:
 * "30", "1.5", "250ms", "5m", "1h". */
static void parse_seconds(struct settings_ctx *c, const struct settings_key *k,
                          void *base, const char *v) {
  double out;
  if (util_parse_duration(v, &out) || out < k->min || out > k->max)
    settings_fail(c, k->name,
                  "expected a number of seconds between %g and %g (a unit "
                  "may follow: ms, s, m, h, d)",
                  k->min, k->max);
  else
    *(double *)field(base, k->offset) = out;
}

static void parse_bytes(struct settings_ctx *c, const struct settings_key *k,
                        void *base, const char *v) {
  unsigned long long out;
  if (util_parse_size(v, &out) || (double)out < k->min || (double)out > k->max)
    settings_fail(c, k->name,
                  "expected bytes between %.0f and %.0f (a unit may follow: "
                  "K, M, G, T)",
                  k->min, k->max);
  else
    *(size_t *)field(base, k->offset) = (size_t)out;
}

static void parse_bool(struct settings_ctx *c, const struct settings_key *k,
                       void *base, const char *v) {
  static const char *const yes[] = {"1", "yes", "true", "on"};
  static const char *const no[] = {"0", "no", "false", "off"};
  for (size_t i = 0; i < UTIL_ARRAY_LEN(yes); i++) {
    if (strcasecmp(v, yes[i]) == 0 || strcasecmp(v, no[i]) == 0) {
      *(int *)field(base, k->offset) = strcasecmp(v, yes[i]) == 0;
      return;
    }
  }
  settings_fail(c, k->name, "expected yes/no, true/false, on/off or 1/0");
}

/* Relative file names in the config are relative to its directory, so a
 * daemon (which runs in "/") and a reload find the same files. */
static char *path_new(const char *v, const char *dir) {
  if (v[0] == '/' || dir == NULL)
    return strdup(v);
  return util_asprintf("%s/%s", dir, v);
}

static void parse_string(struct settings_ctx *c, const struct settings_key *k,
                         void *base, const char *v) {
  char **out = field(base, k->offset);
  *out = k->type == SETTINGS_PATH ? path_new(v, c->s->config_dir) : strdup(v);
  if (*out == NULL)
    settings_fail(c, k->name, "out of memory");
}

static void parse_words(struct settings_ctx *c, const struct settings_key *k,
                        void *base, const char *v) {
  char ***out = field(base, k->offset);
  int n = util_split_words(v, out);
  if (n < 0) {
    *out = NULL;
    settings_fail(c, k->name, "out of memory");
    return;
  }
  *(size_t *)field(base, k->count) = (size_t)n;
}

int settings_ctx_ref(struct settings_ctx *c, struct ref *out, const char *v) {
  const char *file = c->e ? c->e->file : c->sec ? c->sec->file : "<built-in>";
  int line = c->e ? c->e->line : c->sec ? c->sec->line : 0;
  if (settings_parse_ref(out, v, file, line, c->d) == 0)
    return 0;
  c->failed = 1;
  return -1;
}

static void parse_ref(struct settings_ctx *c, const struct settings_key *k,
                      void *base, const char *v) {
  settings_ctx_ref(c, field(base, k->offset), v);
}

static void parse_enum(struct settings_ctx *c, const struct settings_key *k,
                       void *base, const char *v) {
  size_t n = 0;
  for (; k->names[n]; n++) {
    if (strcasecmp(v, k->names[n]) == 0) {
      *(int *)field(base, k->offset) = (int)n;
      return;
    }
  }
  /* "expected tcp, udp or unix, not 'sctp'" */
  struct util_buf b = {0};
  for (size_t i = 0; i < n; i++)
    util_buf_printf(&b, "%s%s",
                    i == 0       ? ""
                    : i + 1 == n ? " or "
                                 : ", ",
                    k->names[i]);
  settings_fail(c, k->name, "expected %s, not '%s'", b.failed ? "?" : b.data,
                v);
  free(b.data);
}

static void apply_row(struct settings_ctx *c, const struct settings_key *k,
                      void *base) {
  c->e = c->by_row[k - c->ks->keys];
  const char *v = c->e && *c->e->value ? c->e->value : k->dflt;
  long n;
  if (*v == '\0' && k->type != SETTINGS_CUSTOM)
    return; /* no value and no default: the field stays zero */
  switch (k->type) {
  case SETTINGS_INT:
    if (parse_whole(c, k, v, &n) == 0)
      *(int *)field(base, k->offset) = (int)n;
    break;
  case SETTINGS_SIZE:
    if (parse_whole(c, k, v, &n) == 0)
      *(size_t *)field(base, k->offset) = (size_t)n;
    break;
  case SETTINGS_SECONDS:
    parse_seconds(c, k, base, v);
    break;
  case SETTINGS_BYTES:
    parse_bytes(c, k, base, v);
    break;
  case SETTINGS_BOOL:
    parse_bool(c, k, base, v);
    break;
  case SETTINGS_STRING:
  case SETTINGS_PATH:
    parse_string(c, k, base, v);
    break;
  case SETTINGS_WORDS:
    parse_words(c, k, base, v);
    break;
  case SETTINGS_REF:
    parse_ref(c, k, base, v);
    break;
  case SETTINGS_ENUM:
    parse_enum(c, k, base, v);
    break;
  case SETTINGS_CUSTOM:
    k->set(c, k, base, v);
    break;
  }
}

void settings_keys_apply(struct settings_ctx *c,
                         const struct settings_keyset *ks, void *base) {
  /* One pass over the entries against the few rows: cheaper than a hash
   * lookup per row for the usual three or four keys of a section, and
   * linear for a section of many (unknown) keys. */
  c->ks = ks;
  memset(c->by_row, 0, sizeof(c->by_row));
  for (size_t i = 0; c->sec && i < c->sec->n; i++) {
    const struct settings_key *k =
        settings_key_find(ks, c->sec->entries[i].key);
    if (k)
      c->by_row[k - ks->keys] = &c->sec->entries[i];
  }
  for (size_t i = 0; i < ks->n; i++)
    apply_row(c, &ks->keys[i], base);
  c->e = NULL;
  if (ks->check)
    ks->check(c, base);
  c->ks = NULL;
}

/* ---- the built-in layer ------------------------------------------------- */

static char builtin_text[4096];

static void builtin_make(void) {
  const struct settings_keyset *ks = &settings_aio_keyset;
  size_t n = (size_t)snprintf(builtin_text, sizeof(builtin_text), "[aio]\n");
  for (size_t i = 0; i < ks->n && n < sizeof(builtin_text); i++) {
    const struct settings_key *k = &ks->keys[i];
    n += (size_t)snprintf(builtin_text + n, sizeof(builtin_text) - n,
                          "%s =%s%s\n", k->name, *k->dflt ? " " : "", k->dflt);
  }
  /* Too small for the table is a bug that test_config catches: the text
   * would end before the last row. */
}

const char *settings_builtin_defaults(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, builtin_make);
  return builtin_text;
}

/* ---- unknown keys ------------------------------------------------------- */

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

/* The row key most likely meant: within two edits, or a row it is a
 * prefix of ("graceful" for "graceful_timeout"). NULL when none is. */
static const char *likely_key(const struct settings_keyset *ks,
                              const char *key) {
  const char *best = NULL;
  size_t best_d = 3, klen = strlen(key);
  for (size_t i = 0; i < ks->n; i++) {
    const char *name = ks->keys[i].name;
    size_t d =
        klen >= 4 && strncmp(name, key, klen) == 0 ? 1 : distance(key, name);
    if (d < best_d) {
      best_d = d;
      best = name;
    }
  }
  return best;
}

size_t settings_keys_warn_unknown(const struct config *cfg, struct diag *warn) {
  size_t count = 0;
  for (size_t s = 0; s < cfg->n; s++) {
    const struct config_section *sec = &cfg->sections[s];
    const struct settings_keyset *ks = settings_keyset_of(sec->name);
    /* A factory reads keys of its own in its server's section
     * (aio_config_get): only a likely typo of aio's is worth a word. */
    int factory = ks && strncmp(sec->name, "server:", 7) == 0 &&
                  config_get(cfg, sec->name, "factory") != NULL;
    for (size_t i = 0; ks && i < sec->n; i++) {
      const struct config_entry *e = &sec->entries[i];
      if (settings_key_find(ks, e->key))
        continue;
      const char *best = likely_key(ks, e->key);
      if (factory && best == NULL)
        continue;
      count++;
      if (best)
        diag_add(warn, e->file, e->line,
                 "unknown key '%s' in [%s] is ignored; did you mean '%s'?",
                 e->key, sec->name, best);
      else
        diag_add(warn, e->file, e->line, "unknown key '%s' in [%s] is ignored",
                 e->key, sec->name);
    }
  }
  return count;
}
