/*
 * generation.h - one configuration and the listening sockets that serve it.
 * A reload builds a new generation beside the old one; sockets whose
 * address did not change are shared (dup) so their accept queues survive,
 * and each generation closes its own descriptors when its last worker is
 * gone.
 */
#ifndef AIO_SUPERVISOR_GENERATION_H
#define AIO_SUPERVISOR_GENERATION_H

#include "master.h"

/* Take the passed fds from the environment (once, at start). */
void activation_init(struct activation *a);
void activation_close(struct activation *a);
/* Add a socket handed over by the image an upgrade replaced (steals fd):
 * for server name, slot (-1: the one socket of a shared server). 0 or
 * -ENOMEM. */
int activation_add(struct activation *a, int fd, const char *name, int slot,
                   int handed);
/* Close the handed sockets (the generation holds dups). */
void activation_drop_handed(struct activation *a);

/* Returns new; steals app (its memory is moved in). NULL on no memory. */
struct generation *generation_new(struct app *app, unsigned id);
/* Close what g owns; unix socket paths are unlinked unless `keep` (the
 * generation that replaced g) still serves them. */
void generation_free(struct generation *g, const struct generation *keep);
/* Make sure slot has its sockets: shared with `from` where the address is
 * unchanged, taken from socket activation, or bound. 0, or a negative errno
 * after logging what failed. */
int generation_bind_slot(struct generation *g, size_t slot,
                         const struct generation *from,
                         const struct activation *act);
void generation_close_slot(struct generation *g, size_t slot);

#endif
