/*
 * config.c - the INI reader behind every aio command.
 *
 * inih does the tokenising; a reader function of our own feeds it lines so
 * that we know the line number of every entry, can tell a continuation line
 * from a repeated key, and can refuse what inih would silently accept or
 * split (overlong lines, NUL bytes, a '[' with no ']', a line that is neither
 * an entry nor a section). The config file is untrusted input: every problem
 * is reported as origin:line and nothing is half-applied.
 */
#include "config.h"
#include "config_int.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

struct parse_state {
  struct config *cfg;
  struct diag *d;
  const char *origin; /* borrowed from cfg->files */
  FILE *fp;
  const char *text; /* string source instead of fp */
  size_t pos;
  int lineno;
  int cont;      /* the line being parsed continues the previous entry */
  int has_prev;  /* an entry is open for continuation (inih's prev_name) */
  long last_sec; /* where that entry lives */
  long last_ent;
  int layer;
  int failed;
};

struct config *config_new(void) {
  struct config *cfg = calloc(1, sizeof(*cfg));
  return cfg;
}

void config_free(struct config *cfg) {
  if (cfg == NULL)
    return;
  for (size_t i = 0; i < cfg->n; i++) {
    struct config_section *s = &cfg->sections[i];
    for (size_t j = 0; j < s->n; j++) {
      free(s->entries[j].key);
      free(s->entries[j].value);
      free(s->entries[j].lines);
    }
    free(s->entries);
    free(s->name);
  }
  free(cfg->sections);
  strmap_close(&cfg->index);
  for (size_t i = 0; i < cfg->nfiles; i++)
    free(cfg->files[i]);
  free(cfg->files);
  free(cfg->path);
  free(cfg->dir);
  free(cfg);
}

void config_canonical_section(const char *name, char *out, size_t n) {
  /* inih hands over "[ aio ]" as " aio "; it is the [aio] the user meant. */
  while (*name == ' ' || *name == '\t')
    name++;
  size_t len = strlen(name);
  while (len > 0 && (name[len - 1] == ' ' || name[len - 1] == '\t'))
    len--;
  snprintf(out, n, "%.*s", (int)len, name);
  if (strchr(out, ':') == NULL) {
    char *slash = strchr(out, '/');
    if (slash)
      *slash = ':';
  }
}

struct config_section *config_section_find(const struct config *cfg,
                                           const char *name) {
  char canon[256];
  config_canonical_section(name, canon, sizeof(canon));
  size_t i = strmap_get(&cfg->index, 0, canon);
  return i == STRMAP_NONE ? NULL : &cfg->sections[i];
}

static struct config_section *section_get(struct config *cfg, const char *name,
                                          const char *file, int line) {
  struct config_section *s = config_section_find(cfg, name);
  if (s)
    return s;
  if (util_grow((void **)&cfg->sections, &cfg->cap, cfg->n + 1,
                sizeof(*cfg->sections)))
    return NULL;
  char canon[256];
  config_canonical_section(name, canon, sizeof(canon));
  s = &cfg->sections[cfg->n];
  memset(s, 0, sizeof(*s));
  s->name = strdup(canon);
  if (s->name == NULL || strmap_put(&cfg->index, 0, s->name, cfg->n)) {
    free(s->name);
    return NULL;
  }
  s->file = file;
  s->line = line;
  cfg->n++;
  return s;
}

/* The index namespace of s's keys. */
static size_t entry_ns(const struct config *cfg,
                       const struct config_section *s) {
  return (size_t)(s - cfg->sections) + 1;
}

struct config_entry *config_entry_find(const struct config *cfg,
                                       const struct config_section *s,
                                       const char *key) {
  size_t i = strmap_get(&cfg->index, entry_ns(cfg, s), key);
  return i == STRMAP_NONE ? NULL : &s->entries[i];
}

const struct config_section *config_section(const struct config *cfg,
                                            const char *name) {
  return config_section_find(cfg, name);
}

const struct config_entry *config_entry(const struct config *cfg,
                                        const char *section, const char *key) {
  const struct config_section *s = config_section_find(cfg, section);
  return s ? config_entry_find(cfg, s, key) : NULL;
}

int config_entry_line(const struct config_entry *e, size_t part) {
  if (e->nlines == 0)
    return e->line;
  return e->lines[part < e->nlines ? part : e->nlines - 1];
}

const char *config_get(const struct config *cfg, const char *section,
                       const char *key) {
  const struct config_entry *e = config_entry(cfg, section, key);
  return e ? e->value : NULL;
}

/* ---- the reader handed to inih ---------------------------------------- */

static int src_getc(struct parse_state *st) {
  if (st->fp)
    return getc(st->fp);
  if (st->text[st->pos] == '\0')
    return EOF;
  return (unsigned char)st->text[st->pos++];
}

/* inih's find_chars_or_comment(): the first of `chars`, an inline ';'
 * comment (one that follows a blank), or the end of the line. classify()
 * must split a line exactly where inih will. */
static const char *scan_to(const char *s, const char *chars) {
  int was_space = 0;
  while (*s && strchr(chars, *s) == NULL && !(was_space && *s == ';')) {
    was_space = isspace((unsigned char)*s);
    s++;
  }
  return s;
}

/* A section header "[name]": -1 when it is reported and must not reach
 * inih. */
static int classify_header(struct parse_state *st, char *p) {
  char *end = (char *)scan_to(p + 1, "]");
  if (*end != ']') {
    diag_add(st->d, st->origin, st->lineno,
             "section header has no closing ']'");
    return -1;
  }
  if (p + 1 + strspn(p + 1, " \t") == end) {
    diag_add(st->d, st->origin, st->lineno, "empty section name");
    return -1;
  }
  char *after = end + 1 + strspn(end + 1, " \t\r\n");
  if (*after != '\0' && *after != ';' && *after != '#') {
    /* inih would drop the text silently ("[web] port = 80"). Say so, and
     * still enter the section so that its entries are not misfiled. */
    diag_add(st->d, st->origin, st->lineno,
             "unexpected text after ']': a [section] header stands alone on "
             "its line");
    end[1] = '\0';
  }
  *end = '\0';
  struct config_section *s =
      section_get(st->cfg, p + 1, st->origin, st->lineno);
  *end = ']';
  if (s == NULL) {
    diag_add(st->d, st->origin, st->lineno, "out of memory");
    return -1;
  }
  st->has_prev = 0; /* inih forgets the previous key at a header */
  return 0;
}

/* Classify the physical line the way inih will, so the handler knows what
 * it is looking at, and catch what inih would mis-parse or reject with no
 * more than a line number. Returns 0 when the line should be handed to
 * inih, -1 when it was reported and must be replaced by an empty line. */
/* has_prev mirrors inih's prev_name: set by an entry inih parsed, cleared
 * by a header inih parsed, untouched by lines replaced with blanks. */
static int classify(struct parse_state *st, char *line) {
  char *p = line;
  if (st->lineno == 1 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
    p += 3; /* a UTF-8 byte order mark, which inih skips too */
  while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
    p++;
  st->cont = 0;
  if (*p == '\0' || *p == ';' || *p == '#')
    return 0;
  if (p > line && st->has_prev) {
    st->cont = 1;
    return 0;
  }
  if (*p == '[')
    return classify_header(st, p);
  const char *sep = scan_to(p, "=:");
  if (*sep != '=' && *sep != ':') {
    diag_add(st->d, st->origin, st->lineno,
             "expected 'key = value', a [section] or a comment");
    return -1;
  }
  if (sep == p) {
    diag_add(st->d, st->origin, st->lineno, "entry has an empty key");
    return -1;
  }
  return 0;
}

/* Returns the first control character in the line (other than tab and the
 * line's own CR LF), or 0. Such bytes are binary junk in a text file, and
 * echoing them in a message could drive the operator's terminal. */
static int control_char(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '\t' || c == '\n' ||
        (c == '\r' && (i + 1 == n || s[i + 1] == '\n')))
      continue;
    if (c < 0x20 || c == 0x7f)
      return c;
  }
  return 0;
}

static char *reader(char *str, int num, void *stream) {
  struct parse_state *st = stream;
  int c = EOF, n = 0, too_long = 0, nul = 0;
  while (n < num - 1) {
    c = src_getc(st);
    if (c == EOF)
      break;
    if (c == '\0') {
      nul = 1;
      c = ' ';
    }
    str[n++] = (char)c;
    if (c == '\n')
      break;
  }
  if (n == 0 && c == EOF)
    return NULL;
  str[n] = '\0';
  st->lineno++;
  if (n == num - 1 && str[n - 1] != '\n') {
    /* The line fills the buffer: it fits when its newline (or the end of
     * the input) comes next. Otherwise eat the rest of the physical line:
     * it is one line too long, not two lines. */
    c = src_getc(st);
    if (c != EOF && c != '\n') {
      too_long = 1;
      do
        nul |= c == '\0';
      while ((c = src_getc(st)) != EOF && c != '\n');
    }
  }
  int ctl = control_char(str, (size_t)n);
  if (nul) {
    diag_add(st->d, st->origin, st->lineno, "line contains a NUL byte");
  } else if (too_long) {
    diag_add(st->d, st->origin, st->lineno,
             "line is longer than %d characters; split a long value over "
             "indented continuation lines",
             CONFIG_MAX_LINE - 1);
  } else if (ctl) {
    diag_add(st->d, st->origin, st->lineno,
             "line contains the control character 0x%02x (binary data?)", ctl);
  } else if (classify(st, str) == 0) {
    return str;
  }
  /* Reported: inih sees an empty line, which also keeps its count of lines
   * in step with ours. */
  strcpy(str, "\n");
  return str;
}

/* Room for one more entry in s. Most sections hold a handful of keys, so
 * the first allocation is for one (util_grow's four would be most of the
 * memory of a file of many small sections). 0 or -ENOMEM. */
static int section_grow(struct config_section *s) {
  if (s->n < s->cap)
    return 0;
  size_t cap = s->cap ? s->cap * 2 : 1;
  struct config_entry *e = realloc(s->entries, cap * sizeof(*e));
  if (e == NULL)
    return -ENOMEM;
  s->entries = e;
  s->cap = cap;
  return 0;
}

/* Record the line of a new part of e's value. 0 or -ENOMEM. */
static int entry_add_line(struct config_entry *e, int line) {
  if (util_grow((void **)&e->lines, &e->lcap, e->nlines + 1, sizeof(*e->lines)))
    return -ENOMEM;
  e->lines[e->nlines++] = line;
  return 0;
}

/* Replace e's value with a copy of value. 0 or -ENOMEM. */
static int entry_set_value(struct config_entry *e, const char *value) {
  size_t len = strlen(value);
  char *v = strdup(value);
  if (v == NULL)
    return -ENOMEM;
  free(e->value);
  e->value = v;
  e->vlen = len;
  e->vcap = len + 1;
  return 0;
}

/* A continuation line: append "\n" and part to e's value, growing it
 * geometrically, so that a value continued over many lines costs linear
 * time and not a copy of the whole value per line. 0, -ENOMEM, or -EFBIG
 * past CONFIG_MAX_VALUE (e unchanged). */
static int entry_append(struct config_entry *e, const char *part) {
  size_t len = strlen(part);
  if (e->vlen + 1 + len > CONFIG_MAX_VALUE)
    return -EFBIG;
  if (e->vlen + 1 + len + 1 > e->vcap) {
    size_t cap = e->vcap * 2;
    while (cap < e->vlen + 1 + len + 1)
      cap *= 2;
    char *v = realloc(e->value, cap);
    if (v == NULL)
      return -ENOMEM;
    e->value = v;
    e->vcap = cap;
  }
  e->value[e->vlen++] = '\n';
  memcpy(e->value + e->vlen, part, len + 1);
  e->vlen += len;
  return 0;
}

/* A continuation line of the entry the parse left open. 1 to go on, 0
 * (out of memory) to stop inih. */
static int handle_continuation(struct parse_state *st, const char *value) {
  if (!st->has_prev || st->last_sec < 0)
    return 1; /* continues an entry that was refused */
  struct config_section *s = &st->cfg->sections[st->last_sec];
  struct config_entry *e = &s->entries[st->last_ent];
  if (*e->value == '\0') {
    /* "key =" then the value on the next lines: part 0 is here. */
    if (entry_set_value(e, value))
      return 0;
    e->lines[e->nlines - 1] = st->lineno;
    return 1;
  }
  int rc = entry_append(e, value);
  if (rc == -EFBIG) {
    diag_add(st->d, e->file, e->line,
             "[%s] %s: the value is longer than 64 KiB (%d bytes, the limit "
             "of one value) at line %d",
             s->name, e->key, CONFIG_MAX_VALUE, st->lineno);
    st->last_sec = -1; /* its further lines are dropped, not reported */
    return 1;
  }
  return rc == 0 && entry_add_line(e, st->lineno) == 0;
}

static int handler(void *user, const char *section, const char *name,
                   const char *value) {
  struct parse_state *st = user;
  struct config *cfg = st->cfg;
  if (st->cont)
    return handle_continuation(st, value);
  /* Until told otherwise, indented lines after this one continue an entry
   * that is not kept. */
  st->has_prev = 1;
  st->last_sec = -1;
  if (*section == '\0') {
    diag_add(st->d, st->origin, st->lineno, "'%s' is outside any [section]",
             name);
    return 1;
  }
  struct config_section *s = section_get(cfg, section, st->origin, st->lineno);
  if (s == NULL)
    return 0;
  struct config_entry *e = config_entry_find(cfg, s, name);
  if (e && e->layer == st->layer) {
    diag_add(st->d, st->origin, st->lineno,
             "duplicate key '%s' in [%s] (first set at line %d)", name, s->name,
             e->line);
    return 1;
  }
  if (e == NULL) {
    if (section_grow(s))
      return 0;
    e = &s->entries[s->n];
    memset(e, 0, sizeof(*e));
    e->key = strdup(name);
    if (e->key == NULL ||
        strmap_put(&cfg->index, entry_ns(cfg, s), e->key, s->n)) {
      free(e->key);
      return 0;
    }
    s->n++;
  }
  if (entry_set_value(e, value))
    return 0;
  e->file = st->origin;
  e->line = st->lineno;
  e->layer = st->layer;
  e->nlines = 0; /* a higher layer replaces the value and its lines */
  if (entry_add_line(e, st->lineno))
    return 0;
  st->last_sec = s - cfg->sections;
  st->last_ent = e - s->entries;
  return 1;
}

static const char *config_add_origin(struct config *cfg, const char *origin) {
  char **f = realloc(cfg->files, (cfg->nfiles + 1) * sizeof(*f));
  if (f == NULL)
    return NULL;
  cfg->files = f;
  f[cfg->nfiles] = strdup(origin);
  return f[cfg->nfiles] ? f[cfg->nfiles++] : NULL;
}

static int config_parse(struct parse_state *st) {
  size_t before = st->d->n;
  st->layer = ++st->cfg->layers;
  int rc = ini_parse_stream(reader, st, handler, st);
  if (rc == -2) {
    diag_add(st->d, st->origin, 0, "out of memory");
    return -1;
  }
  if (rc > 0 && st->d->n == before)
    diag_add(st->d, st->origin, rc, "syntax error");
  return st->d->n == before ? 0 : -1;
}

int config_parse_string(struct config *cfg, const char *text,
                        const char *origin, struct diag *d) {
  struct parse_state st = {.cfg = cfg, .d = d, .text = text};
  st.origin = config_add_origin(cfg, origin);
  if (st.origin == NULL) {
    diag_add(d, origin, 0, "out of memory");
    return -1;
  }
  return config_parse(&st);
}

int config_parse_file(struct config *cfg, const char *path, struct diag *d) {
  struct parse_state st = {.cfg = cfg, .d = d};
  struct stat sb;
  st.fp = fopen(path, "re");
  if (st.fp == NULL) {
    diag_add(d, path, 0, "cannot open: %s", strerror(errno));
    return -1;
  }
  if (fstat(fileno(st.fp), &sb) == 0 && !S_ISREG(sb.st_mode)) {
    diag_add(d, path, 0, "not a regular file");
    fclose(st.fp);
    return -1;
  }
  if (sb.st_size > CONFIG_MAX_FILE) {
    diag_add(d, path, 0,
             "larger than 8 MiB (%lld bytes; %d is the limit of a "
             "configuration file)",
             (long long)sb.st_size, CONFIG_MAX_FILE);
    fclose(st.fp);
    return -1;
  }
  st.origin = config_add_origin(cfg, path);
  if (st.origin == NULL) {
    fclose(st.fp);
    diag_add(d, path, 0, "out of memory");
    return -1;
  }
  if (cfg->path == NULL) {
    cfg->path = strdup(path);
    cfg->dir = util_dirname(path);
  }
  int rc = config_parse(&st);
  if (ferror(st.fp)) {
    diag_add(d, path, st.lineno, "read error: %s", strerror(errno));
    rc = -1;
  }
  fclose(st.fp);
  return rc;
}

/* ---- output ------------------------------------------------------------ */

static void dump_value(const char *key, const char *value, FILE *out) {
  fprintf(out, *value ? "%s = " : "%s =", key);
  for (const char *p = value; *p; p++) {
    fputc(*p, out);
    if (*p == '\n')
      fputs("    ", out);
  }
  fputc('\n', out);
}

int config_dump_section(const struct config *cfg, const char *section,
                        FILE *out) {
  const struct config_section *s = config_section_find(cfg, section);
  if (s == NULL)
    return -1;
  for (size_t j = 0; j < s->n; j++)
    dump_value(s->entries[j].key, s->entries[j].value, out);
  return 0;
}

void config_dump(const struct config *cfg, FILE *out) {
  for (size_t i = 0; i < cfg->n; i++) {
    fprintf(out, "%s[%s]\n", i ? "\n" : "", cfg->sections[i].name);
    config_dump_section(cfg, cfg->sections[i].name, out);
  }
}

char *config_search(struct diag *d) {
  static const char *const places[] = {"aio.conf", "etc/aio.conf",
                                       "/etc/aio.conf"};
  for (size_t i = 0; i < sizeof(places) / sizeof(places[0]); i++)
    if (access(places[i], R_OK) == 0)
      return strdup(places[i]);
  diag_add(d, NULL, 0,
           "no configuration file found (looked for aio.conf, etc/aio.conf, "
           "/etc/aio.conf); give one with -c FILE");
  return NULL;
}
