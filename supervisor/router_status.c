/*
 * router_status.c - what `aio status` shows of the bus's bookkeeping: a
 * worker's delivery queue, journal, ring and refusals, and the backlogs
 * waiting for a worker. It only reads what router.c writes. Moved out of
 * router.c.
 */
#include <jansson.h>

#include "bus.h"
#include "master.h"

json_t *router_proc_status(const struct wproc *p) {
  json_int_t pending = (json_int_t)p->route.npending, ring = 0;
  json_int_t journal = (json_int_t)p->route.journal.n;
  /* The worker moves the counters as it goes: a snapshot in which head
   * did not move while tail was read. */
  for (int tries = 0; p->mark && tries < 100; tries++) {
    uint64_t head = p->mark->ring_head, tail = p->mark->ring_tail;
    if (p->mark->ring_head == head && tail - head <= BUS_RING_SIZE) {
      ring = (json_int_t)(tail - head);
      break;
    }
    ring = -1;
  }
  return json_pack(
      "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:I,s:I,s:I,s:I}", "deliveries",
      (json_int_t)p->route.sent, "deliver_frames", (json_int_t)p->route.frames,
      "pending", pending, "pending_bytes", (json_int_t)p->route.pending_bytes,
      "journal", journal, "journal_bytes",
      (json_int_t)(p->route.journal.len - p->route.journal.head), "ring_bytes",
      ring, "full", p->route.full, "refused",
      (json_int_t)(p->mark ? p->mark->refused : 0), "dropped",
      (json_int_t)p->route.dropped, "soon_refused",
      (json_int_t)(p->mark ? p->mark->soon_refused : 0), "wait_refused",
      (json_int_t)(p->mark ? p->mark->wait_refused : 0));
}

size_t router_backlog(const struct master *m) {
  size_t n = json_array_size(m->route.backlog);
  for (size_t i = 0; i < m->nslots && i < m->slots_cap; i++)
    n += json_array_size(m->slots[i].route.backlog);
  return n;
}
