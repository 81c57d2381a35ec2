/*
 * strmap.h - an index from (number, string) to a number: the hash table
 * behind the configuration's section and key lookups, so that a file of
 * 100 000 sections or keys is read in linear time. The strings are
 * borrowed (the table stores pointers to them) and nothing is ever
 * removed, which is all the configuration needs.
 */
#ifndef AIO_COMMON_STRMAP_H
#define AIO_COMMON_STRMAP_H

#include <stddef.h>
#include <stdint.h>

#define STRMAP_NONE ((size_t)-1)

struct strmap_slot {
  const char *key; /* borrowed; NULL: an empty slot */
  uint64_t hash;
  size_t ns;
  size_t value;
};

struct strmap {
  struct strmap_slot *slots;
  size_t n, cap; /* cap: 0 or a power of two, at least twice n */
};

void strmap_init(struct strmap *m);
void strmap_close(struct strmap *m);
/* The value of (ns, key), or STRMAP_NONE. */
size_t strmap_get(const struct strmap *m, size_t ns, const char *key);
/* Map (ns, key) to value, replacing what it mapped to. key is borrowed:
 * it must stay valid and unchanged while m holds it. 0 or -ENOMEM. */
int strmap_put(struct strmap *m, size_t ns, const char *key, size_t value);

#endif
