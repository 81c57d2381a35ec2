/*
 * diag.h - a list of user-facing problems ("FILE:LINE: message"), so a
 * configuration check can report every problem rather than the first.
 */
#ifndef AIO_COMMON_DIAG_H
#define AIO_COMMON_DIAG_H

#include <stddef.h>
#include <stdio.h>

struct diag {
  char **msgs;
  size_t n, cap;
};

void diag_init(struct diag *d);
void diag_close(struct diag *d);
/* file may be NULL (no location); line <= 0 prints FILE: only. */
void diag_add(struct diag *d, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Appends a copy of an already formatted message. */
void diag_add_raw(struct diag *d, const char *msg);
void diag_print(const struct diag *d, FILE *out);
static inline int diag_failed(const struct diag *d) { return d->n > 0; }

#endif
