/* diag.c - the problem list behind every configuration and loader error. */
#include "diag.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void diag_init(struct diag *d) { memset(d, 0, sizeof(*d)); }

void diag_close(struct diag *d) {
  for (size_t i = 0; i < d->n; i++)
    free(d->msgs[i]);
  free(d->msgs);
  memset(d, 0, sizeof(*d));
}

void diag_add_raw(struct diag *d, const char *msg) {
  if (d->n == d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 8;
    char **m = realloc(d->msgs, cap * sizeof(*m));
    if (m == NULL)
      return; /* out of memory: the caller still fails on what it has */
    d->msgs = m;
    d->cap = cap;
  }
  char *copy = strdup(msg);
  if (copy)
    d->msgs[d->n++] = copy;
}

void diag_add(struct diag *d, const char *file, int line, const char *fmt,
              ...) {
  char buf[1024];
  size_t n = 0;
  if (file && line > 0)
    n = (size_t)snprintf(buf, sizeof(buf), "%s:%d: ", file, line);
  else if (file)
    n = (size_t)snprintf(buf, sizeof(buf), "%s: ", file);
  if (n < sizeof(buf)) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
    va_end(ap);
  }
  diag_add_raw(d, buf);
}

void diag_print(const struct diag *d, FILE *out) {
  for (size_t i = 0; i < d->n; i++)
    fprintf(out, "%s\n", d->msgs[i]);
}
