/*
 * worker_int.h - what the files of one worker process share and nothing
 * else may call: the lifecycle (worker.c), the bus to the master
 * (worker_bus.c), listeners and the own-signal queue (listeners.c),
 * aio_emit() and the kept emits (emit.c), job runs (jobs.c) and the
 * aio_call_soon() queue (call_soon.c). The public side is worker.h.
 */
#ifndef AIO_WORKER_WORKER_INT_H
#define AIO_WORKER_WORKER_INT_H

#include "worker.h"

/* How long a worker waits for room on its bus before it runs a listener or
 * a job; past it the frames stay queued and the user code runs anyway. */
#define BUS_SYNC_FLUSH_MS 2000

/* ---- worker.c: the lifecycle ---- */

/* Stop the loop; the process exits with code. Once. */
void worker_finish(struct worker *w, int code);
/* Ends a drain once nothing holds the worker any more. */
void worker_drain_check(struct worker *w);
/* A frame from the master that is not a deliver (stop, run, reopen,
 * status): 0, or -EPROTO for one a worker does not take. */
int worker_on_frame(void *arg, enum bus_type t, json_t *msg);

/* ---- worker_bus.c: the pipe to the master ---- */

/* Open the bus on bus_fd and start reading it. 0, or -1 (logged). */
int worker_bus_start(struct worker *w, int bus_fd);
/* Write what is queued, waiting up to timeout_ms for room. */
void worker_bus_flush(struct worker *w, int timeout_ms);
/* A frame was added to w->out (urgent: more than an acknowledgement). */
void worker_bus_queued(struct worker *w, int urgent);
/* Queue the acknowledgement of what finished, if anything did. */
void worker_send_ack(struct worker *w);
/* Go on with the frames a paused read held back (after a signal's done). */
void worker_bus_resume(struct worker *w);
/* The mark of which user callback runs (kind BUS_CB_*, index), and its
 * end; a listener's start reads the slice's clock when it can. */
void worker_cb_enter(struct worker *w, uint32_t kind, size_t index);
void worker_cb_leave(struct worker *w);
void worker_cb_enter_listener(struct worker *w, size_t k);
/* A turn's slice of user code: begins now; has it been spent? */
void worker_slice_begin(struct worker *w);
int worker_slice_spent(struct worker *w);

/* ---- listeners.c: deliveries and own signals run here ---- */

/* Run the listeners ks[0..nk) of one delivery (the next one). */
void worker_deliver(struct worker *w, const char *name, json_t *data,
                    const json_int_t *ks, size_t nk);
/* ---- worker_bus.c ---- */
/* Forget the rest of a run of ref delivers cut short (w->rest). */
void worker_rest_clear(struct worker *w);
/* Queue own emit seq (data stolen) for its listeners from first on. */
int worker_local_push(struct worker *w, uint64_t seq, size_t first,
                      json_t *data, uint64_t ring_end, size_t bytes,
                      struct emit_wait *wait);
/* After the loop closed: the own emits not run, the kept ones, the index. */
void worker_local_free(struct worker *w);
/* Give back the own-signal queues a burst grew, once empty (loop idle). */
void worker_queues_trim(struct worker *w);
/* Room for one more entry of size bytes in (*buf)[*head, *len). 0 or
 * -ENOMEM. */
int worker_queue_room(void **buf, size_t *head, size_t *len, size_t *cap,
                      size_t size);

/* ---- emit.c: aio_emit() and the emits kept for broadcast listeners ---- */

/* The data kept for own emit seq (borrowed until worker_kept_pop), or
 * NULL; and the oldest kept one let go; and all of them. */
json_t *worker_kept_find(struct worker *w, uint64_t seq);
void worker_kept_pop(struct worker *w);
void worker_kept_free(struct worker *w);
/* The emits of a module's init, sent right after the ready frame; or
 * released, when the worker never got ready. */
void worker_early_send(struct worker *w);
void worker_early_free(struct worker *w);

/* ---- jobs.c: the scheduler's runs ---- */

/* A run frame from the master: call the job. */
void worker_job_run(struct worker *w, json_t *msg);
/* After the loop closed: the runs still in hand. */
void worker_jobs_free(struct worker *w);

/* ---- call_soon.c: the aio_call_soon() queue ---- */

/* Is this process a worker whose loop takes calls? */
int worker_soon_here(void);
/* The worker whose loop takes calls (borrowed), or NULL. */
struct worker *worker_soon_target(void);

#endif
