/*
 * counters.h - what a worker counts, in memory its master reads without
 * asking it: one mapping per worker process (MAP_SHARED, made by the master
 * before the fork, like the bus mark), a block of counters per server of
 * the worker's generation, in the order of that generation's servers.
 *
 * Only the worker writes, with relaxed 64-bit atomic stores (a plain mov on
 * x86-64 and arm64: no locked instruction on the hot path); the master
 * reads with relaxed loads, so a value it reads is one the worker wrote,
 * never half of one. A read may be a moment behind: the master adds the
 * final values of a worker that exited into totals of its own, so what it
 * reports never goes backwards (supervisor/metrics.c).
 */
#ifndef AIO_COMMON_COUNTERS_H
#define AIO_COMMON_COUNTERS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* X(enum, name in aio status --json). Every one only grows. */
#define CTR_SERVER_COUNTERS(X)                                                 \
  X(CTR_ACCEPTED, "accepted")           /* connections taken and served */     \
  X(CTR_CLOSED, "closed")               /* of them, ended (open = the rest) */ \
  X(CTR_REFUSED, "refused")             /* closed at once: max_connections */  \
  X(CTR_ACCEPT_PAUSED, "accept_paused") /* accept(2) ran out (EMFILE...) */    \
  X(CTR_IDLE_TIMEOUT, "idle_timeout")   /* closed by idle_timeout */           \
  X(CTR_SEND_TIMEOUT, "send_timeout")   /* reset by send_timeout */            \
  X(CTR_DEADLINE, "deadline")           /* header_timeout, or a deadline */    \
  X(CTR_BYTES_READ, "bytes_read")       /* from peers (datagrams too) */       \
  X(CTR_BYTES_WRITTEN, "bytes_written") /* taken by the kernel for peers */    \
  X(CTR_REQUESTS, "requests") /* aio_conn_request_done(): protocols that       \
                                 count requests (aio.hello) */

enum ctr_index {
#define CTR_ENUM(e, s) e,
  CTR_SERVER_COUNTERS(CTR_ENUM)
#undef CTR_ENUM
      CTR_NCOUNTERS
};

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit counters are lock-free");

struct ctr_server {
  _Atomic uint64_t v[CTR_NCOUNTERS];
};

/* The names of the counters, by enum ctr_index. */
extern const char *const ctr_names[CTR_NCOUNTERS];

/* Master: a zeroed region of nservers blocks, or NULL when mmap fails.
 * Its size is the master's to remember: nothing in the mapping, which the
 * worker can write, says it. */
struct ctr_server *ctr_region_new(size_t nservers);
void ctr_region_free(struct ctr_server *r, size_t nservers);
/* Not inherited by processes forked later (madvise MADV_DONTFORK). */
void ctr_region_dontfork(struct ctr_server *r, size_t nservers);

/* The worker process's own region, set in the child after the fork (NULL
 * elsewhere: an aio_test_serve() worker counts into memory of its own). */
extern struct ctr_server *ctr_self;

/* Worker, the only writer: add n. */
static inline void ctr_add(struct ctr_server *s, enum ctr_index i, uint64_t n) {
  uint64_t v = atomic_load_explicit(&s->v[i], memory_order_relaxed);
  atomic_store_explicit(&s->v[i], v + n, memory_order_relaxed);
}

static inline uint64_t ctr_get(const struct ctr_server *s, enum ctr_index i) {
  return atomic_load_explicit(&((struct ctr_server *)s)->v[i],
                              memory_order_relaxed);
}

#endif
