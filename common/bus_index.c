/* bus_index.c - see bus_index.h. */
#include "bus_index.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum bus_kind bus_listener_kind(const struct listener_conf *l) {
  if (l->cluster)
    return l->broadcast ? BUS_KIND_CLUSTER_BROADCAST : BUS_KIND_CLUSTER;
  return l->broadcast ? BUS_KIND_BROADCAST : BUS_KIND_ONCE;
}

int bus_index_build(struct bus_index *ix, const struct settings *s) {
  size_t n = s->nlisteners;
  memset(ix, 0, sizeof(*ix));
  strmap_init(&ix->map);
  /* At most one entry per listener; calloc(0) may return NULL. */
  ix->sig = malloc((n + 1) * sizeof(*ix->sig));
  ix->next = malloc((n + 1) * sizeof(*ix->next));
  /* last[e][kind]: the last listener so far of entry e and that kind. */
  size_t(*last)[BUS_KIND_COUNT] = malloc((n + 1) * sizeof(*last));
  int err = ix->sig && ix->next && last ? 0 : -ENOMEM;
  size_t nsig = 0;
  for (size_t i = 0; i < n && !err; i++) {
    const struct listener_conf *l = &s->listeners[i];
    enum bus_kind kind = bus_listener_kind(l);
    size_t e = strmap_get(&ix->map, 0, l->signal);
    if (e == STRMAP_NONE) {
      e = nsig++;
      ix->sig[e].kinds = 0;
      for (int k = 0; k < BUS_KIND_COUNT; k++)
        ix->sig[e].first[k] = last[e][k] = BUS_INDEX_END;
      if ((err = strmap_put(&ix->map, 0, l->signal, e)))
        break;
    }
    ix->next[i] = BUS_INDEX_END;
    if (ix->sig[e].first[kind] == BUS_INDEX_END)
      ix->sig[e].first[kind] = i;
    else
      ix->next[last[e][kind]] = i;
    last[e][kind] = i;
    ix->sig[e].kinds |= BUS_KIND_BIT(kind);
  }
  free(last);
  if (err) {
    bus_index_close(ix);
    return err;
  }
  ix->nlisteners = n;
  return 0;
}

void bus_index_close(struct bus_index *ix) {
  strmap_close(&ix->map);
  free(ix->sig);
  free(ix->next);
  memset(ix, 0, sizeof(*ix));
}

const struct bus_index_sig *bus_index_get(const struct bus_index *ix,
                                          const char *signal) {
  if (ix->sig == NULL)
    return NULL;
  size_t e = strmap_get(&ix->map, 0, signal);
  return e == STRMAP_NONE ? NULL : &ix->sig[e];
}
