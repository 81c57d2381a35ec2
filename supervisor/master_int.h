/*
 * master_int.h - what master.c (slots, spawned, exited, scaling) shares
 * with master_live.c (ready, alive, the tick), and nothing else calls.
 */
#ifndef AIO_SUPERVISOR_MASTER_INT_H
#define AIO_SUPERVISOR_MASTER_INT_H

#include "master.h"

/* master.c: bind slot s's sockets and spawn its worker; on failure the
 * slot backs off (counted, logged). 0 or -errno. */
int slot_start(struct master *m, struct slot *s);
/* The first generation cannot become ready: stop what was started, exit
 * 70. */
void master_start_failed(struct master *m, const char *why);
/* A worker serves again after none did (p): the slots given up on
 * meanwhile get a fresh start too. */
void master_served_again(struct master *m, struct wproc *p);

/* master_live.c: while STARTING, once every wanted slot's worker is
 * ready: SERVING, and say so (--ready-fd, -d's parent, READY=1,
 * aio-started). */
void master_announce_ready(struct master *m);

#endif
