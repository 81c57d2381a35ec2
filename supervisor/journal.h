/*
 * journal.h - the journal of a worker's own emits (struct journal, in
 * master.h): records are a struct jrec followed by the frame, 8-byte
 * aligned.
 */
#ifndef AIO_SUPERVISOR_JOURNAL_H
#define AIO_SUPERVISOR_JOURNAL_H

#include "master.h"

struct jrec {
  uint64_t seq;
  uint32_t len; /* of the frame that follows */
  uint32_t pad;
};

#define JREC_SIZE(n) ((sizeof(struct jrec) + (n) + 7) & ~(size_t)7)

/* Keep frame, emit seq. 0 or -ENOMEM. */
int journal_add(struct journal *j, uint64_t seq, const char *frame, size_t len);
/* An emptied journal that a burst grew gives its buffer back. */
void journal_shrink(struct journal *j);
/* The oldest record, or NULL when the journal is empty; *frame its text. */
const struct jrec *journal_first(const struct journal *j, const char **frame);
void journal_pop(struct journal *j);
/* The worker finished every emit up to seq: forget them. */
void journal_ack(struct journal *j, uint64_t seq);
void journal_free(struct journal *j);

#endif
