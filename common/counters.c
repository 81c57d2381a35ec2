/*
 * counters.c - the shared mapping of a worker's counters (counters.h).
 */
#define _GNU_SOURCE
#include "counters.h"

#include <sys/mman.h>

const char *const ctr_names[CTR_NCOUNTERS] = {
#define CTR_NAME(e, s) s,
    CTR_SERVER_COUNTERS(CTR_NAME)
#undef CTR_NAME
};

struct ctr_server *ctr_self;

/* At least a page: a generation with no server still gets a mapping. */
static size_t region_size(size_t nservers) {
  return nservers ? nservers * sizeof(struct ctr_server) : 1;
}

struct ctr_server *ctr_region_new(size_t nservers) {
  void *r = mmap(NULL, region_size(nservers), PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return r == MAP_FAILED ? NULL : r;
}

void ctr_region_free(struct ctr_server *r, size_t nservers) {
  if (r)
    munmap(r, region_size(nservers));
}

void ctr_region_dontfork(struct ctr_server *r, size_t nservers) {
  madvise(r, region_size(nservers), MADV_DONTFORK);
}
