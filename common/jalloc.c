/*
 * jalloc.c - see jalloc.h.
 *
 * A signal's data is a handful of small jansson blocks (an object, its
 * bucket array, a pair per member, a value per integer), made in aio_emit()'s
 * caller and freed after its listeners ran. On the routed path a window
 * of them is alive at once (a worker keeps the data of its broadcast
 * emits until the master's deliver names them), more than glibc's
 * per-thread cache holds (7 a size), so most of them went through
 * malloc's slower bins: a fifth of a routed message's cost in the worker
 * (docs/benchmarks.md). Here the freed small blocks wait in a cache of
 * the thread that freed them, by size, and the next of that size is
 * taken back from it.
 *
 * Every block is one malloc() made, so free() of one (a json_dumps()
 * result freed with free(), as jansson's manual says) is right too: the
 * cache only delays the free() of the blocks it is given. Bounded: at
 * most CACHE_PER_CLASS blocks of each size and CACHE_BYTES in all per
 * thread; the rest is freed at once; a thread's cache is freed when the
 * thread ends, or by jalloc_trim().
 */
#define _GNU_SOURCE
#include "jalloc.h"

#include <jansson.h>
#include <stdlib.h>

#if defined(__SANITIZE_ADDRESS__)
#define JALLOC_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define JALLOC_ASAN 1
#endif
#endif
#if defined(__GLIBC__) && !defined(JALLOC_ASAN)
#define JALLOC_ON 1
#else
#define JALLOC_ON 0
#endif

#if JALLOC_ON
#include <malloc.h>
#include <pthread.h>

/* Size classes as glibc's chunks have them on 64 bits: a block's usable
 * size is 16k + 8 bytes (k >= 1), 24 to 264. */
#define CLASSES 17
#define CACHE_PER_CLASS 4096
#define CACHE_BYTES (1024 * 1024)

struct cache {
  size_t bytes;
  unsigned n[CLASSES], cap[CLASSES];
  void **blk[CLASSES]; /* grown by doubling, to CACHE_PER_CLASS */
};

static _Thread_local struct cache *tc;
static _Thread_local int tc_dead; /* the thread ends: no new cache */
static pthread_key_t tc_key;
static pthread_once_t tc_once = PTHREAD_ONCE_INIT;

/* The cached blocks back to malloc; with all, the arrays too. */
static void cache_empty(struct cache *c, int all) {
  for (unsigned k = 0; k < CLASSES; k++) {
    for (unsigned i = 0; i < c->n[k]; i++)
      free(c->blk[k][i]);
    c->n[k] = 0;
    if (all) {
      free(c->blk[k]);
      c->blk[k] = NULL;
      c->cap[k] = 0;
    }
  }
  c->bytes = 0;
}

static void on_thread_end(void *arg) {
  tc_dead = 1;
  tc = NULL;
  cache_empty(arg, 1);
  free(arg);
}

static void key_make(void) { pthread_key_create(&tc_key, on_thread_end); }

/* The class of a request of n bytes (its usable size), or 0: not cached. */
static unsigned class_of_request(size_t n) {
  unsigned k = n <= 24 ? 1 : (unsigned)((n + 7) / 16);
  return k < CLASSES ? k : 0;
}

void *jalloc_malloc(size_t n) {
  struct cache *c = tc;
  unsigned k = class_of_request(n);
  if (c && k && c->n[k]) {
    c->bytes -= 16 * k + 8;
    return c->blk[k][--c->n[k]];
  }
  /* malloc rounds n up to the class's usable size itself: a block made
   * here is of class k when it comes back. */
  return malloc(n);
}

static struct cache *cache_here(void) {
  if (tc || tc_dead)
    return tc;
  pthread_once(&tc_once, key_make);
  struct cache *c = calloc(1, sizeof(*c));
  if (c && pthread_setspecific(tc_key, c) != 0) {
    free(c);
    c = NULL;
  }
  return tc = c;
}

void jalloc_free(void *p) {
  if (p == NULL)
    return;
  size_t u = malloc_usable_size(p);
  unsigned k = (unsigned)((u - 8) / 16);
  struct cache *c =
      (u - 8) % 16 == 0 && k >= 1 && k < CLASSES ? cache_here() : NULL;
  if (c && c->n[k] == c->cap[k] && c->cap[k] < CACHE_PER_CLASS &&
      c->bytes + u <= CACHE_BYTES) {
    unsigned cap = c->cap[k] ? c->cap[k] * 2 : 64;
    void **nb = realloc(c->blk[k], cap * sizeof(*nb));
    if (nb) {
      c->blk[k] = nb;
      c->cap[k] = cap;
    }
  }
  if (c && c->n[k] < c->cap[k] && c->bytes + u <= CACHE_BYTES) {
    c->blk[k][c->n[k]++] = p;
    c->bytes += u;
    return;
  }
  free(p);
}

void jalloc_install(void) { json_set_alloc_funcs(jalloc_malloc, jalloc_free); }

void jalloc_trim(void) {
  if (tc && tc->bytes)
    cache_empty(tc, 1);
}

size_t jalloc_cached(void) { return tc ? tc->bytes : 0; }
#else
void *jalloc_malloc(size_t n) { return malloc(n); }
void jalloc_free(void *p) { free(p); }
void jalloc_install(void) {}
void jalloc_trim(void) {}
size_t jalloc_cached(void) { return 0; }
#endif

int jalloc_on(void) { return JALLOC_ON; }
