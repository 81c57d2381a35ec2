/*
 * bus_index.h - which listeners a configuration has for a signal, by kind:
 * made once from the settings, and read by both ends of the bus (the
 * worker at every aio_emit(), the master at every emit it routes).
 *
 * A listener's kind says where it runs: once per emit on the emitting
 * worker, or broadcast on every worker. The kinds are a list, not a flag,
 * so that another kind (cluster listeners, say) is one more row here and
 * one more case in bus_listener_kind().
 */
#ifndef AIO_COMMON_BUS_INDEX_H
#define AIO_COMMON_BUS_INDEX_H

#include <stddef.h>

#include "settings.h"
#include "strmap.h"

enum bus_kind {
  BUS_KIND_ONCE,      /* once per emit, on the emitting worker */
  BUS_KIND_BROADCAST, /* on every worker, through the master */
  /* A cluster listener (docs/cluster.md): the master hands the emit to
   * Redis; never run on the emitting worker because of the emit. */
  BUS_KIND_CLUSTER,           /* once per emit, on one worker of one node */
  BUS_KIND_CLUSTER_BROADCAST, /* on every worker of every node */
  BUS_KIND_COUNT
};

/* Does a kind run on every worker (a slot's successor gets it)? */
static inline int bus_kind_broadcast(enum bus_kind k) {
  return k == BUS_KIND_BROADCAST || k == BUS_KIND_CLUSTER_BROADCAST;
}

/* A signal's kinds, as a set: BUS_KIND_BIT(k) for each kind it has. */
#define BUS_KIND_BIT(k) (1u << (k))

/* No listener (bus_index_first, bus_index_next). */
#define BUS_INDEX_END ((size_t)-1)

struct bus_index_sig {
  unsigned kinds;               /* BUS_KIND_BIT()s */
  size_t first[BUS_KIND_COUNT]; /* its first listener of each kind */
};

struct bus_index {
  struct strmap map; /* signal name (borrowed from the settings) -> sig[] */
  struct bus_index_sig *sig;
  size_t *next; /* per listener: the next one of its signal and kind */
  size_t nlisteners;
};

/* The kind of one configured listener. */
enum bus_kind bus_listener_kind(const struct listener_conf *l);

/* Index s's listeners; ix borrows s's strings, so s must outlive it.
 * 0 or -ENOMEM (ix is then empty, and safe to close). */
int bus_index_build(struct bus_index *ix, const struct settings *s);
void bus_index_close(struct bus_index *ix);

/* What ix has for signal, or NULL when it has no listener for it. */
const struct bus_index_sig *bus_index_get(const struct bus_index *ix,
                                          const char *signal);

/* The kinds of listener ix has for signal (0: none). */
static inline unsigned bus_index_kinds(const struct bus_index *ix,
                                       const char *signal) {
  const struct bus_index_sig *e = bus_index_get(ix, signal);
  return e ? e->kinds : 0;
}

/* The listeners of one signal and kind, in configuration order:
 * k = e->first[kind]; k != BUS_INDEX_END; k = bus_index_next(ix, k). */
static inline size_t bus_index_next(const struct bus_index *ix, size_t k) {
  return ix->next[k];
}

#endif
