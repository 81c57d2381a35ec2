/*
 * log.c - line-oriented logging for master and workers. One write(2) per
 * line so lines from several processes sharing the file never interleave.
 * [aio] log_format = json writes each line as one JSON object instead.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_level_cur = AIO_LOG_INFO;
static int log_json;
static char log_role[32] = "aio";
static char log_role_name[24] = "aio";
static int log_slot = -1;
static int log_dest = STDERR_FILENO;
static char *log_path;

static const char *const log_names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *name) {
  for (int i = 0; i < 4; i++)
    if (strcasecmp(name, log_names[i]) == 0)
      return i;
  if (strcasecmp(name, "warning") == 0)
    return AIO_LOG_WARN;
  return -1;
}

void log_set_level(int level) { log_level_cur = level; }
int log_get_level(void) { return log_level_cur; }

int log_format_parse(const char *name) {
  if (strcasecmp(name, "text") == 0)
    return LOG_FORMAT_TEXT;
  if (strcasecmp(name, "json") == 0)
    return LOG_FORMAT_JSON;
  return -1;
}

void log_set_format(int format) { log_json = format == LOG_FORMAT_JSON; }

void log_set_role(const char *role, int slot) {
  snprintf(log_role_name, sizeof(log_role_name), "%s", role);
  log_slot = slot;
  if (slot >= 0)
    snprintf(log_role, sizeof(log_role), "%s %d", role, slot);
  else
    snprintf(log_role, sizeof(log_role), "%s", role);
}

static int log_open_path(const char *path) {
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  return fd < 0 ? -errno : fd;
}

int log_open(const char *path) {
  if (path == NULL || *path == '\0') {
    log_close();
    return 0;
  }
  int fd = log_open_path(path);
  if (fd < 0)
    return fd;
  log_close();
  log_dest = fd;
  log_path = strdup(path);
  return log_path ? 0 : -ENOMEM;
}

int log_reopen(void) {
  if (log_path == NULL)
    return 0;
  int fd = log_open_path(log_path);
  if (fd < 0)
    return fd;
  /* dup2 keeps the descriptor number, so children that inherited it follow. */
  if (dup2(fd, log_dest) < 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  close(fd);
  return 0;
}

int log_fd(void) { return log_dest; }

int log_off_stdio(void) {
  if (log_dest > STDERR_FILENO)
    return 0;
  int fd = fcntl(log_dest, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
  if (fd < 0)
    return -errno;
  log_dest = fd;
  return 0;
}

void log_close(void) {
  if (log_dest > STDERR_FILENO)
    close(log_dest);
  log_dest = STDERR_FILENO;
  free(log_path);
  log_path = NULL;
}

static void log_write_all(const char *line, size_t n) {
  ssize_t w;
  do
    w = write(log_dest, line, n);
  while (w < 0 && errno == EINTR);
}

/* s with every byte that is not part of valid UTF-8 replaced by '?', in
 * place: jansson takes only UTF-8, and a message may quote a peer's bytes. */
static void utf8_sanitize(char *s) {
  unsigned char *p = (unsigned char *)s;
  while (*p) {
    size_t len = *p < 0x80             ? 1
                 : (*p & 0xe0) == 0xc0 ? 2
                 : (*p & 0xf0) == 0xe0 ? 3
                 : (*p & 0xf8) == 0xf0 ? 4
                                       : 0;
    size_t i = 1;
    while (len && i < len && (p[i] & 0xc0) == 0x80)
      i++;
    if (len == 0 || i < len || (len == 2 && *p < 0xc2) ||
        (len == 4 && *p > 0xf4)) {
      *p++ = '?';
      continue;
    }
    p += len;
  }
}

/* Whom a line is from: this process, or a worker whose captured output
 * the master logs on its behalf (log_captured). */
struct log_who {
  const char *role;      /* "worker 3", for text lines */
  const char *role_name; /* "worker", for JSON */
  int slot;              /* < 0: none */
  int pid;
  const char *stream; /* "stdout"/"stderr" of a captured line, or NULL */
};

static struct log_who log_self(void) {
  return (struct log_who){log_role, log_role_name, log_slot, (int)getpid(),
                          NULL};
}

/* The fields a message carries, as members of o: never one o has. */
static void log_add_fields(json_t *o, const struct log_field *f, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (f[i].key == NULL || json_object_get(o, f[i].key))
      continue;
    json_t *v;
    if (f[i].str) {
      char buf[1024];
      snprintf(buf, sizeof(buf), "%s", f[i].str);
      utf8_sanitize(buf);
      v = json_string(buf);
    } else {
      v = json_integer((json_int_t)f[i].num);
    }
    json_object_set_new(o, f[i].key, v);
  }
}

/* One JSON object per line, every string escaped by jansson: time (RFC
 * 3339, UTC, milliseconds), level, role, slot (workers), pid, msg, the
 * stream of a captured line, the error text of log_warn, and the fields
 * the message carries. Falls back to the text line when out of memory. */
static int log_emit_json(int level, const struct timeval *tv,
                         const struct log_who *who, char *msg,
                         const char *suffix, const struct log_field *f,
                         size_t nf) {
  struct tm tm;
  char when[40];
  gmtime_r(&tv->tv_sec, &tm);
  size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(when + n, sizeof(when) - n, ".%03dZ", (int)(tv->tv_usec / 1000));
  utf8_sanitize(msg);
  json_t *o = json_pack("{s:s,s:s,s:s,s:i,s:s}", "time", when, "level",
                        log_names[level], "role", who->role_name, "pid",
                        who->pid, "msg", msg);
  if (o && who->slot >= 0)
    json_object_set_new(o, "slot", json_integer(who->slot));
  if (o && who->stream)
    json_object_set_new(o, "stream", json_string(who->stream));
  if (o && suffix)
    json_object_set_new(o, "error", json_string(suffix));
  if (o)
    log_add_fields(o, f, nf);
  char *line = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(o);
  if (line == NULL)
    return -1;
  size_t len = strlen(line);
  line[len] = '\n'; /* over the NUL: one write, no copy */
  log_write_all(line, len + 1);
  free(line);
  return 0;
}

/* The text line's head: "2026-12-01 21:59:33.123 info  [worker 3 1234] ".
 * Returns its length (< n). */
static size_t log_head(char *line, size_t n, const struct timeval *tv,
                       int level, const struct log_who *who) {
  struct tm tm;
  localtime_r(&tv->tv_sec, &tm);
  size_t len = strftime(line, n, "%Y-%m-%d %H:%M:%S", &tm);
  int m = snprintf(line + len, n - len, ".%03d %-5s [%s %d] ",
                   (int)(tv->tv_usec / 1000), log_names[level], who->role,
                   who->pid);
  len += m > 0 ? (size_t)m : 0;
  return len < n ? len : n - 1;
}

/* Ends the text line of n bytes in line (cap bytes) and writes it. */
static void log_end_line(char *line, size_t n, size_t cap) {
  if (n >= cap - 1)
    n = cap - 2;
  line[n++] = '\n';
  log_write_all(line, n);
}

/* The message of the last error line, for a process that must say why it
 * ends where its log may not be seen (aio run -d's waiting parent). */
static char log_last[512];

const char *log_last_error(void) { return log_last; }

static void log_emit(int level, const char *suffix, const struct log_field *f,
                     size_t nf, const char *fmt, va_list ap) {
  char line[2048];
  struct timeval tv;
  struct log_who who = log_self();
  gettimeofday(&tv, NULL);
  if (level == AIO_LOG_ERROR) {
    va_list copy;
    va_copy(copy, ap);
    vsnprintf(log_last, sizeof(log_last), fmt, copy);
    va_end(copy);
  }
  if (log_json) {
    va_list copy;
    va_copy(copy, ap);
    vsnprintf(line, sizeof(line), fmt, copy);
    va_end(copy);
    if (log_emit_json(level, &tv, &who, line, suffix, f, nf) == 0)
      return;
  }
  size_t n = log_head(line, sizeof(line), &tv, level, &who);
  int m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
  if (m > 0)
    n += (size_t)m;
  if (suffix && n < sizeof(line))
    n += (size_t)snprintf(line + n, sizeof(line) - n, ": %s", suffix);
  log_end_line(line, n, sizeof(line));
}

void log_captured(int level, int slot, int pid, const char *stream,
                  const char *text, size_t len) {
  if (level < log_level_cur)
    return;
  /* The head, the stream's name and a line of LOG_CAPTURED_MAX bytes. */
  char line[LOG_CAPTURED_MAX + 256], msg[LOG_CAPTURED_MAX + 1], role[32];
  struct timeval tv;
  if (len > LOG_CAPTURED_MAX)
    len = LOG_CAPTURED_MAX;
  /* A NUL would end the message early in JSON, and a line is text. */
  for (size_t i = 0; i < len; i++)
    msg[i] = text[i] ? text[i] : '?';
  msg[len] = '\0';
  snprintf(role, sizeof(role), "worker %d", slot);
  struct log_who who = {role, "worker", slot, pid, stream};
  gettimeofday(&tv, NULL);
  if (log_json && log_emit_json(level, &tv, &who, msg, NULL, NULL, 0) == 0)
    return;
  size_t n = log_head(line, sizeof(line), &tv, level, &who);
  n += (size_t)snprintf(line + n, sizeof(line) - n, "%s: %s", stream, msg);
  log_end_line(line, n, sizeof(line));
}

static void log_vfields(int level, const struct log_field *f, size_t nf,
                        const char *fmt, va_list ap) {
  if (level < log_level_cur)
    return;
  if (level > AIO_LOG_ERROR)
    level = AIO_LOG_ERROR;
  if (level < 0)
    level = AIO_LOG_DEBUG;
  log_emit(level, NULL, f, nf, fmt, ap);
}

void log_vwrite(int level, const char *fmt, va_list ap) {
  log_vfields(level, NULL, 0, fmt, ap);
}

void log_fields(int level, const struct log_field *f, size_t n, const char *fmt,
                ...) {
  va_list ap;
  va_start(ap, fmt);
  log_vfields(level, f, n, fmt, ap);
  va_end(ap);
}

#define LOG_FN(name, level)                                                    \
  void name(const char *fmt, ...) {                                            \
    va_list ap;                                                                \
    va_start(ap, fmt);                                                         \
    log_vwrite(level, fmt, ap);                                                \
    va_end(ap);                                                                \
  }
LOG_FN(log_debug, AIO_LOG_DEBUG)
LOG_FN(log_info, AIO_LOG_INFO)
LOG_FN(log_warnx, AIO_LOG_WARN)
LOG_FN(log_error, AIO_LOG_ERROR)

void log_warn(const char *fmt, ...) {
  int saved = errno;
  if (AIO_LOG_WARN < log_level_cur)
    return;
  va_list ap;
  va_start(ap, fmt);
  log_emit(AIO_LOG_WARN, strerror(saved), NULL, 0, fmt, ap);
  va_end(ap);
}

void aio_log(int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_vwrite(level, fmt, ap);
  va_end(ap);
}
