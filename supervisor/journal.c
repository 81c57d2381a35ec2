/*
 * journal.c - a worker's own emits that it runs itself, kept in the master
 * until it says they finished (router.c): records back to back in one
 * buffer, the oldest first, given back when a burst is over.
 */
#include "journal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int journal_add(struct journal *j, uint64_t seq, const char *frame,
                size_t len) {
  size_t need = JREC_SIZE(len);
  if (j->head == j->len)
    j->head = j->len = 0;
  if (j->len + need > j->cap && j->head > 0) {
    /* Slide the live records down before growing. */
    memmove(j->buf, j->buf + j->head, j->len - j->head);
    j->len -= j->head;
    j->head = 0;
  }
  if (j->len + need > j->cap) {
    size_t cap = j->cap ? j->cap : 64 * 1024;
    while (cap < j->len + need)
      cap *= 2;
    char *nb = realloc(j->buf, cap);
    if (nb == NULL)
      return -ENOMEM;
    j->buf = nb;
    j->cap = cap;
  }
  struct jrec r = {.seq = seq, .len = (uint32_t)len};
  memcpy(j->buf + j->len, &r, sizeof(r));
  memcpy(j->buf + j->len + sizeof(r), frame, len);
  j->len += need;
  j->n++;
  return 0;
}

/* An emptied journal that a burst grew gives its buffer back. */
void journal_shrink(struct journal *j) {
  if (j->head == j->len && j->cap > BUS_OUT_KEEP) {
    free(j->buf);
    memset(j, 0, sizeof(*j));
  }
}

/* The oldest record, or NULL when the journal is empty; *frame its text. */
const struct jrec *journal_first(const struct journal *j, const char **frame) {
  if (j->head == j->len)
    return NULL;
  const struct jrec *r = (const struct jrec *)(j->buf + j->head);
  *frame = j->buf + j->head + sizeof(*r);
  return r;
}

void journal_pop(struct journal *j) {
  const struct jrec *r = (const struct jrec *)(j->buf + j->head);
  j->head += JREC_SIZE(r->len);
  j->n--;
}

/* The worker finished every emit up to seq: forget them. */
void journal_ack(struct journal *j, uint64_t seq) {
  const char *frame;
  const struct jrec *r;
  while ((r = journal_first(j, &frame)) && r->seq <= seq)
    journal_pop(j);
  if (j->head > 0 && j->head == j->len)
    j->head = j->len = 0;
  journal_shrink(j);
}

void journal_free(struct journal *j) {
  free(j->buf);
  memset(j, 0, sizeof(*j));
}
