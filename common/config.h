/*
 * config.h - the INI configuration: parsing (through inih) with file:line on
 * every entry, layering (built-in < module defaults < user file), the
 * `section/NAME` spelling folded into `section:NAME`, and ${section:key}
 * interpolation.
 */
#ifndef AIO_COMMON_CONFIG_H
#define AIO_COMMON_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "diag.h"
#include "strmap.h"

/* inih's line buffer (INI_MAX_LINE in Debian's build): longer lines are
 * refused with a message rather than silently split. */
#define CONFIG_MAX_LINE 200
/* The longest value, whether continued over lines or interpolated: far
 * beyond any real one (a path, a port, a list of modules), small enough
 * that no value costs the master more than this. Past it, FILE:LINE of
 * the key and exit 78. */
#define CONFIG_MAX_VALUE (64 * 1024)
/* What interpolation may add to one configuration in all, over every
 * value: 256 values at the cap. A fixed bound rather than a multiple of
 * the file's size, so that what a file may cost the master does not
 * depend on its padding; real files substitute a few bytes per ${...}. */
#define CONFIG_MAX_EXPANSION (16 * 1024 * 1024)
/* The largest configuration file read. Real ones are kilobytes; what a
 * file costs in memory is about 25 times its size at worst (the shortest
 * distinct keys: 260 bytes each), so this bounds a file at ~200 MB while
 * leaving room for 100 000 sections. */
#define CONFIG_MAX_FILE (8 * 1024 * 1024)

struct config_entry {
  char *key;
  char *value;      /* raw, then interpolated by config_interpolate() */
  size_t vlen;      /* strlen(value) */
  size_t vcap;      /* bytes allocated for value */
  const char *file; /* borrowed from config->files */
  int line;
  int layer;  /* which parse call set it */
  int state;  /* interpolation: 0 raw, 1 in progress, 2 done */
  int *lines; /* the line of each '\n'-separated part of the value (a value
               * continued over indented lines has one part per line) */
  size_t nlines, lcap;
};

struct config_section {
  char *name; /* canonical spelling, e.g. "server:web" */
  const char *file;
  int line;
  struct config_entry *entries;
  size_t n, cap;
};

/* Sections and their entries are arrays in the order they were first
 * written (the order `aio config` prints), with an index beside them for
 * lookups: a section by name (namespace 0), a key by section index + 1 and
 * name. */
struct config {
  struct config_section *sections;
  size_t n, cap;
  struct strmap index;
  char **files; /* every origin name parsed, owned */
  size_t nfiles;
  char *path; /* the user's file, or NULL */
  char *dir;  /* its directory ("." when none) */
  int layers;
};

/* Returns new (config_free), or NULL on out of memory. */
struct config *config_new(void);
void config_free(struct config *cfg);

/* Layer a file or a text over what is there. Every problem goes to `d`
 * with origin:line. Returns 0 or -1 (problems in d). The first parse_file
 * call also records cfg->path and cfg->dir. */
int config_parse_file(struct config *cfg, const char *path, struct diag *d);
int config_parse_string(struct config *cfg, const char *text,
                        const char *origin, struct diag *d);
/* Resolve ${key}, ${section:key} and $$ in every value. 0 or -1. */
int config_interpolate(struct config *cfg, struct diag *d);

/* Borrowed lookups (NULL when absent). Section names accept both spellings. */
const struct config_section *config_section(const struct config *cfg,
                                            const char *name);
const struct config_entry *config_entry(const struct config *cfg,
                                        const char *section, const char *key);
const char *config_get(const struct config *cfg, const char *section,
                       const char *key);

/* The line where part `part` (counting from 0) of a continued value was
 * written; the last known line when the value has fewer parts. */
int config_entry_line(const struct config_entry *e, size_t part);

/* Fold "schedule/x" into "schedule:x" and trim surrounding blanks. Writes
 * into out (size n). */
void config_canonical_section(const char *name, char *out, size_t n);

/* Write the configuration as INI (multi-line values as continuation lines). */
void config_dump(const struct config *cfg, FILE *out);
/* Print one section's keys, or one value. 0, or -1 when absent. */
int config_dump_section(const struct config *cfg, const char *section,
                        FILE *out);

/* The search order when no -c is given: aio.conf, etc/aio.conf,
 * /etc/aio.conf. Returns a new path, or NULL after adding a message that
 * lists the places looked at. */
char *config_search(struct diag *d);

/* A check of the file as config_write_value() would leave it, written at
 * tmp in the directory of path's target (relative names resolve the
 * same); problems go to d named after path. 0, or -1 to refuse. */
typedef int (*config_check_fn)(const char *tmp, const char *path, void *arg,
                               struct diag *d);

/* Set SECTION:KEY = VALUE in the file at `path` in place, keeping comments
 * and layout (config_write.c): through a symlink to its target, keeping
 * its mode and owner, under an exclusive flock(2) of the file held across
 * the read-modify-write. Refused, with the file untouched: a file the
 * caller may not write, or with no write permission at all (even for
 * root); a result that does not parse or would not read VALUE back; a
 * result `check` (may be NULL) refuses. 0 or -1 with a message in d. */
int config_write_value(const char *path, const char *section, const char *key,
                       const char *value, config_check_fn check, void *arg,
                       struct diag *d);

#endif
