/*
 * jalloc.h - jansson's allocator in aio's processes: malloc and free, with
 * a small per-thread cache of the freed blocks of jansson's small sizes.
 */
#ifndef AIO_JALLOC_H
#define AIO_JALLOC_H

#include <stddef.h>

/* Install it (json_set_alloc_funcs); at the start of main(). A no-op
 * where malloc_usable_size() is not glibc's, and under ASan (a cached
 * block would hide a use after free). */
void jalloc_install(void);
/* Give the calling thread's cached blocks back to malloc: the worker
 * calls it when its loop is about to sleep, after a burst. */
void jalloc_trim(void);
/* The same for aio's own small blocks that live as long as a signal (the
 * master's deliveries): malloc(), and free() through the cache. A block
 * of either may be given to free() as well. */
void *jalloc_malloc(size_t n);
void jalloc_free(void *p);
/* Bytes the calling thread's cache holds now (0 where it is off). */
size_t jalloc_cached(void);
/* Is the cache on in this build (glibc, no ASan)? */
int jalloc_on(void);

#endif
