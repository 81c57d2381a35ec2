/*
 * emit_wait.h - aio_emit_wait(): the record of one emit whose caller waits
 * for its once-per-emit listeners (worker/emit_wait.c). A worker (and the
 * loop of `aio test`) keeps its waits in one bounded list; the code that
 * runs listeners (listeners.c, testing.c) says how each ended, and the
 * caller's done_cb runs from the loop, on a later turn, exactly once.
 */
#ifndef AIO_WORKER_EMIT_WAIT_H
#define AIO_WORKER_EMIT_WAIT_H

#include <stddef.h>

#include "aio.h"

struct worker;
struct emit_wait;

/* The waits of w, on w's loop: call after uv_loop_init. 0 or -errno. */
int emit_wait_open(struct worker *w);
/* The worker stops: on its loop thread, after soon_close() (nothing can
 * hand a wait over any more) and before the loop's handles close. Every
 * wait still pending gets its done_cb now, with -ECANCELED for the
 * listeners that did not finish. */
void emit_wait_close(struct worker *w);
/* After the loop closed: the list's own memory. */
void emit_wait_free_all(struct worker *w);
/* Waits accepted whose done_cb has not run yet: a drain waits for them. */
size_t emit_wait_pending(const struct worker *w);

/* A new wait of w for signal, or NULL with *err: -EAGAIN when w has
 * [aio] bus_journal waits pending already (counted in the mark's
 * wait_refused), -ENOMEM. Safe from any thread. */
struct emit_wait *emit_wait_new(struct worker *w, const char *signal,
                                aio_emit_done_fn *cb, void *arg, int *err);
/* A wait never begun (the emit was refused): freed, done_cb not called.
 * Any thread. */
void emit_wait_drop(struct worker *w, struct emit_wait *ew);
/* One more listener to wait for (its "module.symbol", borrowed until the
 * worker exits); it counts as not run (-ECANCELED) until emit_wait_next. */
int emit_wait_add(struct emit_wait *ew, const char *listener);
/* Every once-per-emit listener of this worker from `first` on (the chain
 * of w's listener index, bus_index.h; BUS_INDEX_END: none). */
int emit_wait_add_chain(struct worker *w, struct emit_wait *ew, size_t first);
/* The next listener added (they run in the order they were added) ended
 * with status. */
void emit_wait_next(struct emit_wait *ew, int status);
/* Nothing more to wait for: done_cb runs on a later turn of w's loop with
 * status (0: the first failing listener's status, if any). Loop thread. */
void emit_wait_finish(struct worker *w, struct emit_wait *ew, int status);

#endif
