/*
 * config_write.c - `aio config -s`: set one value in a configuration file
 * in place, keeping its comments and layout, the way an operator's editor
 * would write it: through a symlink to its target, keeping the file's mode
 * and owner, refusing a file that is not writable, under a lock so that
 * concurrent writers take turns and no update is lost, and only when the
 * file as it would be passes the caller's check. Nothing is written
 * otherwise.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

static int line_is_header(const char *line, char *name, size_t n) {
  while (*line == ' ' || *line == '\t')
    line++;
  if (*line != '[')
    return 0;
  const char *end = strchr(line, ']');
  if (end == NULL)
    return 0;
  char raw[256];
  size_t len = (size_t)(end - line - 1);
  if (len >= sizeof(raw))
    len = sizeof(raw) - 1;
  memcpy(raw, line + 1, len);
  raw[len] = '\0';
  config_canonical_section(raw, name, n);
  return 1;
}

/* What the reader (classify() and inih) makes of a line, given whether an
 * entry is open for continuation: an indented line continues that entry,
 * whatever it looks like, and blank lines and comments do not close it. */
enum wline { W_BLANK, W_CONT, W_HEADER, W_ENTRY };

static enum wline line_kind(const char *line, int open) {
  const char *p = line;
  while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
    p++;
  if (*p == '\0' || *p == ';' || *p == '#')
    return W_BLANK;
  if (p > line && open)
    return W_CONT;
  return *p == '[' ? W_HEADER : W_ENTRY;
}

/* For a W_ENTRY line (which may be indented when no entry is open). */
static int line_has_key(const char *line, const char *key) {
  line += strspn(line, " \t\r");
  size_t klen = strlen(key);
  if (strncmp(line, key, klen) != 0)
    return 0;
  const char *p = line + klen;
  while (*p == ' ' || *p == '\t')
    p++;
  return *p == '=' || *p == ':';
}

/* Copy the line at p (up to and including '\n') into line, bounded. */
static size_t next_line(const char *p, char *line, size_t n) {
  const char *nl = strchr(p, '\n');
  size_t llen = nl ? (size_t)(nl - p + 1) : strlen(p);
  size_t cl = llen < n - 1 ? llen : n - 1;
  memcpy(line, p, cl);
  line[cl] = '\0';
  return llen;
}

/* Past the continuation lines of the entry that ended before p; blank
 * lines and comments go with them only when a continuation follows. */
static const char *skip_value(const char *p, char *line, size_t n) {
  for (const char *q = p; *q;) {
    size_t llen = next_line(q, line, n);
    enum wline k = line_kind(line, 1);
    q += llen;
    if (k == W_CONT)
      p = q;
    else if (k != W_BLANK)
      break;
  }
  return p;
}

/* Would an entry inserted at p take the next line as its continuation? */
static int continues_at(const char *p, char *line, size_t n) {
  while (*p) {
    p += next_line(p, line, n);
    enum wline k = line_kind(line, 1);
    if (k != W_BLANK)
      return k == W_CONT;
  }
  return 0;
}

/* text with [canon] key set to value: a new string (free), or NULL when
 * out of memory. section is the spelling used for a new header. */
static char *splice_value(const char *text, const char *section,
                          const char *canon, const char *key,
                          const char *value) {
  char name[256], line[4096];
  /* The new entry as text, continuation lines indented. */
  struct util_buf entry = {0};
  util_buf_printf(&entry, "%s = ", key);
  for (const char *v = value; *v; v++) {
    util_buf_add(&entry, v, 1);
    if (*v == '\n')
      util_buf_add(&entry, "    ", 4);
  }
  util_buf_add(&entry, "\n", 1);

  struct util_buf out = {0};
  const char *p = text;
  int in_section = 0, done = 0, open = 0;
  size_t insert_off = (size_t)-1; /* after the section's last non-blank line */
  while (*p) {
    size_t llen = next_line(p, line, sizeof(line));
    enum wline kind = line_kind(line, open);
    if (kind == W_HEADER) {
      in_section =
          line_is_header(line, name, sizeof(name)) && strcmp(name, canon) == 0;
      open = 0;
    } else if (kind == W_ENTRY) {
      open = 1;
    }
    if (kind == W_ENTRY && in_section && !done && line_has_key(line, key)) {
      util_buf_add(&out, entry.data, entry.len);
      p = skip_value(p + llen, line, sizeof(line));
      done = 1;
      continue;
    }
    util_buf_add(&out, p, llen);
    if (in_section && line[strspn(line, " \t\r\n")] != '\0')
      insert_off = out.len;
    p += llen;
  }
  if (!done) {
    struct util_buf spliced = {0};
    /* A section with no entry yet, followed by an indented line: our entry
     * would swallow that line, so the section is opened again at the end. */
    if (insert_off != (size_t)-1 && !out.failed &&
        continues_at(out.data + insert_off, line, sizeof(line)))
      insert_off = (size_t)-1;
    if (insert_off != (size_t)-1) {
      util_buf_add(&spliced, out.data, insert_off);
      if (insert_off > 0 && out.data[insert_off - 1] != '\n')
        util_buf_add(&spliced, "\n", 1);
      util_buf_add(&spliced, entry.data, entry.len);
      util_buf_add(&spliced, out.data + insert_off, out.len - insert_off);
    } else {
      util_buf_add(&spliced, out.data, out.len);
      if (out.len && out.data[out.len - 1] != '\n')
        util_buf_add(&spliced, "\n", 1);
      util_buf_printf(&spliced, "%s[%s]\n", out.len ? "\n" : "", section);
      util_buf_add(&spliced, entry.data, entry.len);
    }
    free(out.data);
    out = spliced;
  }
  int failed = out.failed || entry.failed;
  free(entry.data);
  if (failed) {
    free(out.data);
    return NULL;
  }
  return out.data;
}

/* The new text must parse, and give back exactly the value written: an
 * inline " ;" comment or blanks at either end would be cut off. 0 or -1
 * with the problems in d, named after path. */
static int reads_back(const char *text, const char *path, const char *section,
                      const char *key, const char *value, struct diag *d) {
  struct config *cfg = config_new();
  size_t before = d->n;
  if (cfg == NULL) {
    diag_add(d, path, 0, "out of memory");
    return -1;
  }
  if (config_parse_string(cfg, text, path, d) == 0) {
    const struct config_entry *e = config_entry(cfg, section, key);
    if (e == NULL || strcmp(e->value, value) != 0)
      diag_add(d, path, e ? e->line : 0,
               "[%s] %s: '%s' would read back as '%s' (an inline ' ;' comment "
               "or blanks at either end are not part of a value); not written",
               section, key, value, e ? e->value : "");
  }
  config_free(cfg);
  return d->n == before ? 0 : -1;
}

/* Open target and take its lock for the whole read-modify-write. A writer
 * that waited may find the file replaced (renamed over) by the one before
 * it: its lock is then on a file nobody reads any more, so it takes the
 * new one. Returns the fd (sb filled), or -errno. */
static int lock_target(const char *target, struct stat *sb) {
  for (int tries = 0; tries < 1000; tries++) {
    int fd = open(target, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      return -errno;
    int rc;
    while ((rc = flock(fd, LOCK_EX)) < 0 && errno == EINTR)
      ;
    struct stat now;
    if (rc < 0) {
      rc = -errno;
      close(fd);
      return rc;
    }
    if (fstat(fd, sb) == 0 && stat(target, &now) == 0 &&
        now.st_dev == sb->st_dev && now.st_ino == sb->st_ino)
      return fd;
    close(fd);
  }
  return -EAGAIN;
}

/* Refuse what an editor would not write in place. A file with no write
 * permission at all (0444) says someone meant it read-only: refused even
 * for root, who can chmod it first. 0 or -1 with a message. */
static int may_write(const char *path, const char *target,
                     const struct stat *sb, struct diag *d) {
  if ((sb->st_mode & 0222) == 0) {
    diag_add(d, path, 0,
             "is read-only (mode %04o); make it writable (chmod u+w) to "
             "change it",
             (unsigned)(sb->st_mode & 07777));
    return -1;
  }
  if (faccessat(AT_FDCWD, target, W_OK, AT_EACCESS) < 0) {
    diag_add(d, path, 0, "cannot write: %s", strerror(errno));
    return -1;
  }
  return 0;
}

/* Write text in place of target: a temporary file beside it with its mode
 * and owner, handed to check, then renamed over it. 0 or -1. */
static int replace(const char *path, const char *target, const char *text,
                   const struct stat *sb, config_check_fn check, void *arg,
                   struct diag *d) {
  struct util_atomic a;
  int err = util_atomic_open(&a, target);
  if (err == -EPERM) {
    diag_add(d, path, 0,
             "cannot keep its owner and group (%ld:%ld) in a rewritten file; "
             "run this as that user or as root",
             (long)sb->st_uid, (long)sb->st_gid);
    return -1;
  }
  if (err == 0)
    err = util_atomic_write(&a, text, strlen(text));
  if (err) {
    util_atomic_abort(&a);
    diag_add(d, path, 0, "cannot write: %s", strerror(-err));
    return -1;
  }
  if (check && check(a.tmp, path, arg, d)) {
    util_atomic_abort(&a);
    return -1;
  }
  err = util_atomic_commit(&a);
  if (err) {
    diag_add(d, path, 0, "cannot write: %s", strerror(-err));
    return -1;
  }
  return 0;
}

int config_write_value(const char *path, const char *section, const char *key,
                       const char *value, config_check_fn check, void *arg,
                       struct diag *d) {
  char canon[256];
  if (!*section || strpbrk(section, "[]\n") || strlen(section) >= 200) {
    diag_add(d, NULL, 0, "bad section name '%s'", section);
    return -1;
  }
  if (!*key || strpbrk(key, "=:[]\n;# \t")) {
    diag_add(d, NULL, 0, "bad key '%s'", key);
    return -1;
  }
  config_canonical_section(section, canon, sizeof(canon));

  char *target = realpath(path, NULL);
  if (target == NULL) {
    diag_add(d, path, 0, "cannot read: %s", strerror(errno));
    return -1;
  }
  struct stat sb;
  char *text = NULL, *out = NULL;
  int rc = -1;
  int fd = lock_target(target, &sb);
  if (fd < 0) {
    diag_add(d, path, 0, "cannot read: %s", strerror(-fd));
    goto done;
  }
  if (may_write(path, target, &sb, d))
    goto done;
  text = util_read_fd(fd, CONFIG_MAX_FILE, NULL);
  if (text == NULL) {
    diag_add(d, path, 0, "cannot read: %s", strerror(errno));
    goto done;
  }
  out = splice_value(text, section, canon, key, value);
  if (out == NULL) {
    diag_add(d, path, 0, "out of memory");
    goto done;
  }
  if (reads_back(out, path, section, key, value, d) == 0)
    rc = replace(path, target, out, &sb, check, arg, d);
done:
  if (fd >= 0)
    close(fd); /* and the lock with it */
  free(out);
  free(text);
  free(target);
  return rc;
}
