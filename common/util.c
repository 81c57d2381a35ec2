/* util.c - see util.h. */
#define _GNU_SOURCE
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int util_grow(void **arr, size_t *cap, size_t need, size_t size) {
  if (need <= *cap)
    return 0;
  size_t n = *cap ? *cap : 4;
  while (n < need)
    n *= 2;
  void *p = realloc(*arr, n * size);
  if (p == NULL)
    return -ENOMEM;
  *arr = p;
  *cap = n;
  return 0;
}

char *util_asprintf(const char *fmt, ...) {
  va_list ap;
  char *s = NULL;
  va_start(ap, fmt);
  int n = vasprintf(&s, fmt, ap);
  va_end(ap);
  return n < 0 ? NULL : s;
}

char *util_dirname(const char *path) {
  const char *slash = strrchr(path, '/');
  if (slash == NULL)
    return strdup(".");
  if (slash == path)
    return strdup("/");
  return strndup(path, (size_t)(slash - path));
}

int util_buf_add(struct util_buf *b, const void *data, size_t len) {
  if (b->failed)
    return -ENOMEM;
  if (b->len + len + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + len + 1)
      cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL) {
      b->failed = 1;
      return -ENOMEM;
    }
    b->data = p;
    b->cap = cap;
  }
  if (len)
    memcpy(b->data + b->len, data, len);
  b->len += len;
  b->data[b->len] = '\0';
  return 0;
}

int util_buf_printf(struct util_buf *b, const char *fmt, ...) {
  char small[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof(small), fmt, ap);
  va_end(ap);
  if (n < 0)
    return -EINVAL;
  if ((size_t)n < sizeof(small))
    return util_buf_add(b, small, (size_t)n);
  char *big = malloc((size_t)n + 1);
  if (big == NULL) {
    b->failed = 1;
    return -ENOMEM;
  }
  va_start(ap, fmt);
  vsnprintf(big, (size_t)n + 1, fmt, ap);
  va_end(ap);
  int rc = util_buf_add(b, big, (size_t)n);
  free(big);
  return rc;
}

void util_buf_consume(struct util_buf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
  } else {
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
  }
  if (b->data)
    b->data[b->len] = '\0';
}

char *util_read_fd(int fd, size_t max, size_t *len) {
  struct util_buf b = {0};
  char chunk[8192];
  for (;;) {
    ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      free(b.data);
      errno = e;
      return NULL;
    }
    if (n == 0)
      break;
    if (b.len + (size_t)n > max) {
      free(b.data);
      errno = EFBIG;
      return NULL;
    }
    util_buf_add(&b, chunk, (size_t)n);
  }
  if (util_buf_add(&b, "", 0) || b.failed) {
    free(b.data);
    errno = ENOMEM;
    return NULL;
  }
  if (len)
    *len = b.len;
  return b.data;
}

char *util_read_file(const char *path, size_t max, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return NULL;
  char *data = util_read_fd(fd, max, len);
  int e = errno;
  close(fd);
  errno = e;
  return data;
}

static void atomic_close(struct util_atomic *a) {
  if (a->fd >= 0)
    close(a->fd);
  free(a->tmp);
  free(a->target);
  memset(a, 0, sizeof(*a));
  a->fd = -1;
}

int util_atomic_open(struct util_atomic *a, const char *path) {
  memset(a, 0, sizeof(*a));
  a->fd = -1;
  struct stat sb;
  int exists = 1;
  /* Write through a symlink to what it names; replacing the link itself
   * with a regular file would cut it off from its target. */
  a->target = realpath(path, NULL);
  if (a->target == NULL) {
    if (errno != ENOENT)
      return -errno;
    exists = 0;
    a->target = strdup(path);
  }
  char *dir = a->target ? util_dirname(a->target) : NULL;
  const char *base = a->target ? strrchr(a->target, '/') : NULL;
  base = base ? base + 1 : a->target;
  a->tmp = dir ? util_asprintf("%s/.%s.XXXXXX", dir, base) : NULL;
  free(dir);
  int err = -ENOMEM;
  if (a->tmp == NULL)
    goto fail;
  if (exists && stat(a->target, &sb) < 0) {
    err = -errno;
    goto fail;
  }
  a->fd = mkostemp(a->tmp, O_CLOEXEC);
  if (a->fd < 0) {
    err = -errno;
    free(a->tmp);
    a->tmp = NULL;
    goto fail;
  }
  if (exists) {
    /* Owner first: fchown may clear set-id bits that fchmod then sets. */
    if ((sb.st_uid != geteuid() || sb.st_gid != getegid()) &&
        fchown(a->fd, sb.st_uid, sb.st_gid) < 0) {
      err = -errno;
      goto fail;
    }
    if (fchmod(a->fd, sb.st_mode & 07777) < 0) {
      err = -errno;
      goto fail;
    }
  }
  return 0;
fail:
  util_atomic_abort(a);
  return err;
}

int util_atomic_write(struct util_atomic *a, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(a->fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int util_atomic_commit(struct util_atomic *a) {
  int err = 0;
  if (fsync(a->fd) < 0)
    err = -errno;
  if (close(a->fd) < 0 && err == 0)
    err = -errno;
  a->fd = -1;
  if (err == 0 && rename(a->tmp, a->target) < 0)
    err = -errno;
  if (err) {
    util_atomic_abort(a);
    return err;
  }
  /* The rename is durable once the directory is. */
  char *dir = util_dirname(a->target);
  int dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  free(dir);
  atomic_close(a);
  return 0;
}

void util_atomic_abort(struct util_atomic *a) {
  if (a->tmp)
    unlink(a->tmp);
  atomic_close(a);
}

int util_write_file_atomic(const char *path, const void *data, size_t len) {
  struct util_atomic a;
  int err = util_atomic_open(&a, path);
  if (err == 0)
    err = util_atomic_write(&a, data, len);
  if (err == 0)
    return util_atomic_commit(&a);
  util_atomic_abort(&a);
  return err;
}

/* Turn flag on or off in the flags fcntl reads with get and writes with
 * set. */
static int fd_flag(int fd, int get, int set, int flag, int on) {
  int flags = fcntl(fd, get);
  if (flags < 0)
    return -errno;
  flags = on ? flags | flag : flags & ~flag;
  return fcntl(fd, set, flags) < 0 ? -errno : 0;
}

int util_set_cloexec(int fd, int on) {
  return fd_flag(fd, F_GETFD, F_SETFD, FD_CLOEXEC, on);
}

int util_set_nonblock(int fd, int on) {
  return fd_flag(fd, F_GETFL, F_SETFL, O_NONBLOCK, on);
}

uint64_t util_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* s past its blanks (spaces and tabs). */
static const char *skip_blanks(const char *s) {
  while (*s == ' ' || *s == '\t')
    s++;
  return s;
}

int util_parse_long(const char *s, long min, long max, long *out) {
  char *end;
  s = skip_blanks(s);
  if (*s == '\0')
    return -1;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *skip_blanks(end) != '\0' || v < min || v > max)
    return -1;
  *out = v;
  return 0;
}

int util_parse_double(const char *s, double min, double max, double *out) {
  char *end;
  s = skip_blanks(s);
  if (*s == '\0')
    return -1;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *skip_blanks(end) != '\0' || !isfinite(v) || v < min || v > max)
    return -1;
  *out = v;
  return 0;
}

int util_split_words(const char *s, char ***out) {
  char **v = NULL;
  size_t n = 0, cap = 0;
  const char *p = s;
  for (;;) {
    p += strspn(p, " \t\r\n,");
    if (*p == '\0')
      break;
    size_t len = strcspn(p, " \t\r\n,");
    if (util_grow((void **)&v, &cap, n + 1, sizeof(*v)))
      goto fail;
    v[n] = strndup(p, len);
    if (v[n] == NULL)
      goto fail;
    n++;
    p += len;
  }
  *out = v;
  return (int)n;
fail:
  util_strv_free(v, n);
  return -ENOMEM;
}

void util_strv_free(char **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

int util_parse_bool(const char *s, int *out) {
  static const char *const yes[] = {"1", "yes", "true", "on"};
  static const char *const no[] = {"0", "no", "false", "off"};
  char word[8];
  s = skip_blanks(s);
  size_t n = strcspn(s, " \t");
  if (n == 0 || n >= sizeof(word) || *skip_blanks(s + n) != '\0')
    return -1;
  memcpy(word, s, n);
  word[n] = '\0';
  for (size_t i = 0; i < UTIL_ARRAY_LEN(yes); i++) {
    if (strcasecmp(word, yes[i]) == 0)
      return *out = 1, 0;
    if (strcasecmp(word, no[i]) == 0)
      return *out = 0, 0;
  }
  return -1;
}

/* The number at the start of s and where its unit starts (blanks
 * skipped), or -1. */
static int leading_number(const char *s, double *v, const char **unit) {
  char *end;
  s = skip_blanks(s);
  if (*s == '\0' || *s == '-' || *s == '+')
    return -1;
  errno = 0;
  *v = strtod(s, &end);
  if (errno || end == s || !isfinite(*v))
    return -1;
  *unit = skip_blanks(end);
  return 0;
}

/* The unit word (letters only) and what follows it must be all of s. */
static int unit_is(const char *unit, const char *name) {
  size_t n = strlen(name);
  return strncasecmp(unit, name, n) == 0 && *skip_blanks(unit + n) == '\0';
}

int util_parse_duration(const char *s, double *out) {
  static const struct {
    const char *name;
    double seconds;
  } units[] = {{"ms", 1e-3}, {"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}};
  double v;
  const char *unit;
  if (leading_number(s, &v, &unit))
    return -1;
  if (*unit == '\0')
    return *out = v, 0;
  for (size_t i = 0; i < UTIL_ARRAY_LEN(units); i++)
    if (unit_is(unit, units[i].name))
      return *out = v * units[i].seconds, 0;
  return -1;
}

int util_parse_size(const char *s, unsigned long long *out) {
  static const char letters[] = "kmgt";
  double v;
  const char *unit;
  if (leading_number(s, &v, &unit))
    return -1;
  int shift = 0;
  if (*unit != '\0') {
    const char *p = strchr(letters, tolower((unsigned char)*unit));
    if (p == NULL) {
      if (!unit_is(unit, "b"))
        return -1;
    } else {
      const char *rest = unit + 1;
      if (*skip_blanks(rest) != '\0' && !unit_is(rest, "b") &&
          !unit_is(rest, "ib"))
        return -1;
      shift = 10 * (int)(p - letters + 1);
    }
  }
  double bytes = ldexp(v, shift);
  if (bytes >= 0x1p64 || bytes != floor(bytes))
    return -1;
  *out = (unsigned long long)bytes;
  return 0;
}
