/* util.h - small helpers both master and workers use: growable arrays and
 * buffers, file reads and atomic writes, fd flags, the monotonic clock. */
#ifndef AIO_COMMON_UTIL_H
#define AIO_COMMON_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define UTIL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Make *arr hold at least `need` elements of `size`. 0 or -ENOMEM. */
int util_grow(void **arr, size_t *cap, size_t need, size_t size);

/* Returns new (free), or NULL on out of memory. */
char *util_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Returns new: the directory part of path ("." when none). */
char *util_dirname(const char *path);

/* A growable byte buffer. A failed allocation sets `failed` and later adds
 * are ignored, so a sequence of adds needs one check at the end. */
struct util_buf {
  char *data;
  size_t len, cap;
  int failed;
};
int util_buf_add(struct util_buf *b, const void *data, size_t len);
int util_buf_printf(struct util_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Drop the first n bytes. */
void util_buf_consume(struct util_buf *b, size_t n);

/* Returns new NUL-terminated contents (free), or NULL with errno set;
 * EFBIG when larger than max. */
char *util_read_file(const char *path, size_t max, size_t *len);
/* The same from an open fd, read to its end (the fd stays open). */
char *util_read_fd(int fd, size_t max, size_t *len);
/* A file being replaced: the new contents go to a temporary file beside
 * the target, which takes its place on commit (rename), so a reader sees
 * the old file or the new one, never half of either. */
struct util_atomic {
  int fd;       /* the temporary file, -1 when closed */
  char *tmp;    /* its path (new) */
  char *target; /* the file it replaces, symlinks resolved (new) */
};
/* Start replacing path. A symlink stays one: the file it leads to is
 * replaced (the temporary file is made in that file's directory). A file
 * that exists keeps its mode, owner and group: -EPERM when they cannot be
 * kept (another user's file, as non-root). Nothing is left behind on
 * error. 0 or -errno. */
int util_atomic_open(struct util_atomic *a, const char *path);
/* Append len bytes. 0 or -errno. */
int util_atomic_write(struct util_atomic *a, const void *data, size_t len);
/* fsync, rename over the target, fsync its directory; a is closed either
 * way. 0 or -errno. */
int util_atomic_commit(struct util_atomic *a);
/* Remove the temporary file and close a. No-op on a closed one. */
void util_atomic_abort(struct util_atomic *a);
/* The whole of the above with data. 0 or -errno. */
int util_write_file_atomic(const char *path, const void *data, size_t len);

int util_set_cloexec(int fd, int on);
int util_set_nonblock(int fd, int on);

/* Monotonic clock. */
uint64_t util_now_ns(void);
static inline uint64_t util_now_ms(void) { return util_now_ns() / 1000000u; }

/* Parse a whole string as a number in [min, max]. 0 or -1. */
int util_parse_long(const char *s, long min, long max, long *out);
int util_parse_double(const char *s, double min, double max, double *out);
/* "yes/no, true/false, on/off, 1/0" (any case): 0 with *out set, or -1. */
int util_parse_bool(const char *s, int *out);
/* Seconds, fractions allowed, with an optional unit: ms, s, m, h, d
 * ("250ms", "1.5", "2m"). 0 with *out in seconds, or -1. */
int util_parse_duration(const char *s, double *out);
/* Bytes, with an optional binary unit K, M, G, T (also KB/KiB and the
 * like, any case): "4096", "64K", "256M". 0, or -1 (bad or overflow). */
int util_parse_size(const char *s, unsigned long long *out);

/* Split s on whitespace and commas into a new array of new strings;
 * returns the count or -ENOMEM. util_strv_free frees. */
int util_split_words(const char *s, char ***out);
void util_strv_free(char **v, size_t n);

#endif
