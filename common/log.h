/*
 * log.h - the one logging family: every line carries time, level, role
 * (`master`, `worker 3`), pid and message. As in OpenBSD's log.c, log_warn
 * appends strerror(errno) and log_warnx does not.
 */
#ifndef AIO_COMMON_LOG_H
#define AIO_COMMON_LOG_H

#include <stdarg.h>
#include <stddef.h>

#include "aio.h"

#define LOG_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* Levels are the public AIO_LOG_* values. */
int log_level_parse(const char *name); /* -1 when unknown */
void log_set_level(int level);
enum { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON };
int log_format_parse(const char *name); /* -1 when unknown */
void log_set_format(int format);
int log_get_level(void);
/* role is copied; slot < 0 means no slot ("master"). */
void log_set_role(const char *role, int slot);
/* Open (append) `path` as the log destination, or stderr when NULL.
 * Returns 0 or a negative errno. */
int log_open(const char *path);
/* Reopen the current file (SIGUSR1, logrotate). */
int log_reopen(void);
int log_fd(void);
void log_close(void);

/* Use a descriptor of its own for the log when it is stdout or stderr
 * (no log_file), so that a worker can give fds 1 and 2 to its captured
 * output and still log as before. 0 or -errno. */
int log_off_stdio(void);

/* The longest line of a worker's captured output that log_captured()
 * writes; output.c cuts longer ones here. */
#define LOG_CAPTURED_MAX 4096
/* Log len bytes (a line without its newline, cut at LOG_CAPTURED_MAX) that
 * worker `slot`, process pid, wrote to stream ("stdout" or "stderr"): as
 * that worker's line, at level, with the stream in front ("stdout: ...")
 * or, in JSON, as "stream". */
void log_captured(int level, int slot, int pid, const char *stream,
                  const char *text, size_t len);

/* A field a message carries ("server", "signal", "schedule", "run"...):
 * with log_format = json a member of the line's object (escaped by
 * jansson; a key the line has already, such as "msg", is skipped); the
 * text line is the message alone, which names them. */
struct log_field {
  const char *key;
  const char *str; /* NULL: the number */
  long long num;
};
#define LOG_STR(k, v) ((struct log_field){(k), (v), 0})
#define LOG_INT(k, v) ((struct log_field){(k), NULL, (long long)(v)})
/* LOG_FIELDS(LOG_STR("server", name), LOG_INT("run", n)): the array and
 * its length, for log_fields. */
#define LOG_FIELDS(...)                                                        \
  (const struct log_field[]){__VA_ARGS__},                                     \
      sizeof((const struct log_field[]){__VA_ARGS__}) /                        \
          sizeof(struct log_field)
/* log_* at level with fields f[0..n). */
void log_fields(int level, const struct log_field *f, size_t n, const char *fmt,
                ...) LOG_PRINTF(4, 5);

void log_vwrite(int level, const char *fmt, va_list ap);
void log_debug(const char *fmt, ...) LOG_PRINTF(1, 2);
void log_info(const char *fmt, ...) LOG_PRINTF(1, 2);
void log_warn(const char *fmt, ...) LOG_PRINTF(1, 2);
void log_warnx(const char *fmt, ...) LOG_PRINTF(1, 2);
void log_error(const char *fmt, ...) LOG_PRINTF(1, 2);
/* The message of this process's last error line, "" when none. Borrowed:
 * valid until the next one. */
const char *log_last_error(void);

#endif
