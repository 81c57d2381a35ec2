/*
 * settings_keys.h - the keys of the sections aio owns ([aio],
 * [server:NAME], [schedule:NAME]), one row each, as nginx's ngx_command_t:
 * name, type, default, range, where the value goes, help. The parser, the
 * built-in default layer, the list of known keys and the "did you mean"
 * hints all read the rows (settings_keys.c); settings.c only adds the
 * checks that span keys (a protocol or a factory, a port unless unix).
 */
#ifndef AIO_COMMON_SETTINGS_KEYS_H
#define AIO_COMMON_SETTINGS_KEYS_H

#include <stddef.h>

#include "config.h"
#include "diag.h"
#include "settings.h"

enum settings_type {
  SETTINGS_INT,     /* int: a whole number in [min, max] */
  SETTINGS_SIZE,    /* size_t: a whole number in [min, max] */
  SETTINGS_SECONDS, /* double: seconds in [min, max], with an optional unit
                       (250ms, 30s, 5m, 1h, 1d) */
  SETTINGS_BYTES,   /* size_t: bytes in [min, max], with an optional binary
                       unit (64K, 256M, 2G) */
  SETTINGS_BOOL,    /* int 0/1: yes/no, true/false, on/off, 1/0 */
  SETTINGS_STRING,  /* char *, new; NULL when empty */
  SETTINGS_PATH,    /* as STRING, relative to the config's directory */
  SETTINGS_WORDS,   /* char **, new; its size_t count at .count */
  SETTINGS_REF,     /* struct ref: module.symbol */
  SETTINGS_ENUM,    /* int: the index of the value in .names */
  SETTINGS_CUSTOM,  /* .set does it all, even for an empty value */
};

/* The most rows one section may have (settings_table.c checks). */
#define SETTINGS_MAX_KEYS 64

struct settings_keyset;

/* What a row's setter works with while one section is read. */
struct settings_ctx {
  const struct config *cfg;
  const struct config_section *sec; /* NULL: [aio] is not in the file */
  const char *secname;              /* "aio", "server:web", ... */
  const struct config_entry *e;     /* the row's entry, or NULL */
  /* While settings_keys_apply() runs: the entry of each row of ks (NULL
   * when absent), found in one pass over the section's entries. */
  const struct settings_keyset *ks;
  const struct config_entry *by_row[SETTINGS_MAX_KEYS];
  struct settings *s;
  struct diag *d;
  int failed; /* something in this section was refused */
};

struct settings_key;
/* Store value (the entry's, or the row's default when it is empty; never
 * NULL) into the section's struct at base; refusals through
 * settings_fail(). */
typedef void settings_set_fn(struct settings_ctx *c,
                             const struct settings_key *k, void *base,
                             const char *value);

struct settings_key {
  const char *name;
  enum settings_type type;
  const char *dflt;         /* as written in a file; "" for none */
  double min, max;          /* INT, SIZE, SECONDS */
  const char *const *names; /* ENUM: the values, NULL-terminated */
  size_t offset;            /* of the field in the section's struct */
  size_t count;             /* WORDS: offset of the size_t count */
  settings_set_fn *set;     /* CUSTOM */
  const char *help;         /* one line; docs/operations.md says the same */
};

/* The keys of one kind of section. */
struct settings_keyset {
  const char *prefix; /* "aio", or "server:" for every [server:NAME] */
  const struct settings_key *keys;
  size_t n;
  /* After the rows: what spans keys (a server needs a protocol or a
   * factory, ...). May be NULL. */
  void (*check)(struct settings_ctx *c, void *base);
  /* A named section ([server:NAME]): the size of its struct and where
   * its name (new), file (borrowed) and line go. 0 for [aio]. */
  size_t size, name_at, file_at, line_at;
};

extern const struct settings_keyset settings_aio_keyset;
extern const struct settings_keyset settings_server_keyset;
extern const struct settings_keyset settings_schedule_keyset;

/* The keyset of a section, or NULL where aio does not own the keys
 * ([listen:NAME] keys are signal names, [aio:commands] command names,
 * [NAME] a module's). Borrowed, static. */
const struct settings_keyset *settings_keyset_of(const char *section);

/* The row named name, or NULL. Borrowed, static. */
const struct settings_key *settings_key_find(const struct settings_keyset *ks,
                                             const char *name);

/* Run every row of ks, in order, over c->sec into base, then ks->check. */
void settings_keys_apply(struct settings_ctx *c,
                         const struct settings_keyset *ks, void *base);

/* The entry of key in c's section, or NULL. Borrowed. */
const struct config_entry *settings_entry(const struct settings_ctx *c,
                                          const char *key);
/* The value of key in c's section: NULL when absent. Borrowed. */
const char *settings_value(const struct settings_ctx *c, const char *key);

/* Parse v as module.symbol into out (new strings), at the row's entry
 * (c->e) for messages. 0, or -1 with the section marked failed. */
int settings_ctx_ref(struct settings_ctx *c, struct ref *out, const char *v);

/* "FILE:LINE: [SECTION] KEY: message" at key's entry (at the section when
 * the key is absent); marks the section failed. */
void settings_fail(struct settings_ctx *c, const char *key, const char *fmt,
                   ...) __attribute__((format(printf, 3, 4)));

/* The unknown keys of every section that has a keyset, as
 * settings_unknown_keys() says. Returns the count. */
size_t settings_keys_warn_unknown(const struct config *cfg, struct diag *warn);

/* Split the next line of a (continued) value at *p into words, as
 * util_split_words (new; a count, or -ENOMEM), and advance *p past it. */
int settings_next_line_words(const char **p, char ***w);

#endif
