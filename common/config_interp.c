/*
 * config_interp.c - ${section:key} interpolation over a parsed
 * configuration (config.h, config_interpolate), as Python's
 * ExtendedInterpolation does it, bounded in depth and in what it
 * produces; config.c parses.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "config_int.h"
#include "util.h"

/* Python's ExtendedInterpolation allows 10 levels; a chain deeper than this
 * is either a mistake or hostile, and recursion must stay bounded. */
#define INTERP_MAX_DEPTH 32

/* One config_interpolate() run. Each value is expanded once and kept
 * (memoized), so the work is linear in what is produced, and what is
 * produced is capped as it grows: a value at CONFIG_MAX_VALUE, all
 * substitutions together at CONFIG_MAX_EXPANSION. A bomb (each key twice
 * the next) is refused after at most 128 KiB of work instead of the
 * gigabytes it asks for. */
struct interp {
  struct config *cfg;
  struct diag *d;
  size_t total; /* bytes substituted for references so far */
  int over;     /* the total was refused: stop */
};

static int interp_entry(struct interp *ip, struct config_section *sec,
                        struct config_entry *e, int depth);

/* Add len bytes to the value of e being built in out. A reference's
 * bytes count towards the total. 0 or -1 (reported). */
static int interp_add(struct interp *ip, const struct config_section *sec,
                      const struct config_entry *e, struct util_buf *out,
                      const char *data, size_t len, int is_ref) {
  if (out->len + len > CONFIG_MAX_VALUE) {
    diag_add(ip->d, e->file, e->line,
             "[%s] %s: the interpolated value would be longer than 64 KiB "
             "(%d bytes, the limit of one value)",
             sec->name, e->key, CONFIG_MAX_VALUE);
    return -1;
  }
  if (is_ref && ip->total + len > CONFIG_MAX_EXPANSION) {
    diag_add(ip->d, e->file, e->line,
             "[%s] %s: interpolation would produce more than 16 MiB (%d "
             "bytes, the limit of all values together)",
             sec->name, e->key, CONFIG_MAX_EXPANSION);
    ip->over = 1;
    return -1;
  }
  if (util_buf_add(out, data, len)) {
    diag_add(ip->d, e->file, e->line, "[%s] %s: out of memory", sec->name,
             e->key);
    return -1;
  }
  if (is_ref)
    ip->total += len;
  return 0;
}

static int interp_ref(struct interp *ip, struct config_section *sec,
                      struct config_entry *e, const char *ref,
                      struct util_buf *out, int depth) {
  char secname[256];
  const char *key = ref;
  struct config_section *ts = sec;
  const char *colon = strrchr(ref, ':');
  if (colon) {
    size_t len = (size_t)(colon - ref);
    if (len == 0 || len >= sizeof(secname)) {
      diag_add(ip->d, e->file, e->line, "bad reference ${%s} in [%s] %s", ref,
               sec->name, e->key);
      return -1;
    }
    memcpy(secname, ref, len);
    secname[len] = '\0';
    key = colon + 1;
    ts = config_section_find(ip->cfg, secname);
  }
  struct config_entry *te = ts ? config_entry_find(ip->cfg, ts, key) : NULL;
  if (te == NULL) {
    diag_add(ip->d, e->file, e->line,
             "[%s] %s refers to ${%s}, but there is no key '%s' in [%s]",
             sec->name, e->key, ref, key, colon ? secname : sec->name);
    return -1;
  }
  if (te->state == 1) {
    diag_add(ip->d, e->file, e->line,
             "[%s] %s: interpolation cycle through ${%s}", sec->name, e->key,
             ref);
    return -1;
  }
  if (depth >= INTERP_MAX_DEPTH) {
    diag_add(ip->d, e->file, e->line,
             "[%s] %s: references nested more than %d deep", sec->name, e->key,
             INTERP_MAX_DEPTH);
    return -1;
  }
  if (interp_entry(ip, ts, te, depth + 1))
    return -1;
  return interp_add(ip, sec, e, out, te->value, te->vlen, 1);
}

static int interp_entry(struct interp *ip, struct config_section *sec,
                        struct config_entry *e, int depth) {
  if (e->state == 2)
    return 0;
  if (e->state == 3)
    return -1; /* already reported */
  if (strchr(e->value, '$') == NULL) {
    e->state = 2;
    return 0;
  }
  e->state = 1;
  struct util_buf out = {0};
  const char *p = e->value;
  int rc = 0;
  while (*p && rc == 0) {
    const char *dollar = strchr(p, '$');
    if (dollar == NULL) {
      rc = interp_add(ip, sec, e, &out, p, strlen(p), 0);
      break;
    }
    rc = interp_add(ip, sec, e, &out, p, (size_t)(dollar - p), 0);
    if (rc)
      break;
    if (dollar[1] == '$') {
      rc = interp_add(ip, sec, e, &out, "$", 1, 0);
      p = dollar + 2;
    } else if (dollar[1] == '{') {
      const char *end = strchr(dollar + 2, '}');
      if (end == NULL) {
        diag_add(ip->d, e->file, e->line, "[%s] %s: '${' has no closing '}'",
                 sec->name, e->key);
        rc = -1;
        break;
      }
      char ref[512];
      size_t len = (size_t)(end - dollar - 2);
      if (len == 0 || len >= sizeof(ref)) {
        diag_add(ip->d, e->file, e->line, "[%s] %s: bad reference", sec->name,
                 e->key);
        rc = -1;
        break;
      }
      memcpy(ref, dollar + 2, len);
      ref[len] = '\0';
      rc = interp_ref(ip, sec, e, ref, &out, depth);
      p = end + 1;
    } else {
      diag_add(ip->d, e->file, e->line,
               "[%s] %s: '$' must be followed by '{' or '$' (write $$ for a "
               "literal $)",
               sec->name, e->key);
      rc = -1;
    }
  }
  if (rc == 0 && interp_add(ip, sec, e, &out, "", 0, 0) == 0) {
    free(e->value);
    e->value = out.data;
    e->vlen = out.len;
    e->vcap = out.cap;
    e->state = 2;
    return 0;
  }
  free(out.data);
  e->state = 3;
  return -1;
}

int config_interpolate(struct config *cfg, struct diag *d) {
  struct interp ip = {.cfg = cfg, .d = d};
  int rc = 0;
  for (size_t i = 0; i < cfg->n && !ip.over; i++) {
    struct config_section *s = &cfg->sections[i];
    for (size_t j = 0; j < s->n && !ip.over; j++)
      if (interp_entry(&ip, s, &s->entries[j], 0))
        rc = -1;
  }
  return rc;
}
