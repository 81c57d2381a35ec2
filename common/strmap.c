/*
 * strmap.c - see strmap.h. Open addressing with linear probing, at most
 * half full. The hash is SipHash-1-3 under a key drawn at random once per
 * process: a configuration file is untrusted input, and with a fixed hash
 * a file of keys chosen to collide would bring back the quadratic lookups
 * this table exists to remove.
 */
#define _GNU_SOURCE
#include "strmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static uint64_t sip_k0, sip_k1;
static int sip_keyed;

static void sip_key(void) {
  uint64_t k[2];
  if (getrandom(k, sizeof(k), GRND_NONBLOCK) != (ssize_t)sizeof(k)) {
    /* No entropy yet (early boot): still different per process. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    k[0] = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    k[1] = (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&ts;
  }
  sip_k0 = k[0];
  sip_k1 = k[1];
  sip_keyed = 1;
}

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                               \
  do {                                                                         \
    v0 += v1;                                                                  \
    v1 = ROTL(v1, 13);                                                         \
    v1 ^= v0;                                                                  \
    v0 = ROTL(v0, 32);                                                         \
    v2 += v3;                                                                  \
    v3 = ROTL(v3, 16);                                                         \
    v3 ^= v2;                                                                  \
    v0 += v3;                                                                  \
    v3 = ROTL(v3, 21);                                                         \
    v3 ^= v0;                                                                  \
    v2 += v1;                                                                  \
    v1 = ROTL(v1, 17);                                                         \
    v1 ^= v2;                                                                  \
    v2 = ROTL(v2, 32);                                                         \
  } while (0)

/* SipHash-1-3 of the 8 bytes of ns followed by the bytes of key. */
static uint64_t sip_hash(size_t ns, const char *key) {
  if (!sip_keyed)
    sip_key();
  uint64_t v0 = sip_k0 ^ 0x736f6d6570736575ull;
  uint64_t v1 = sip_k1 ^ 0x646f72616e646f6dull;
  uint64_t v2 = sip_k0 ^ 0x6c7967656e657261ull;
  uint64_t v3 = sip_k1 ^ 0x7465646279746573ull;
  size_t len = strlen(key);
  uint64_t m = (uint64_t)ns;
  v3 ^= m;
  SIPROUND;
  v0 ^= m;
  const unsigned char *p = (const unsigned char *)key;
  size_t left = len;
  for (; left >= 8; left -= 8, p += 8) {
    memcpy(&m, p, 8);
    v3 ^= m;
    SIPROUND;
    v0 ^= m;
  }
  uint64_t b = (uint64_t)(len + 8) << 56;
  for (size_t i = 0; i < left; i++)
    b |= (uint64_t)p[i] << (8 * i);
  v3 ^= b;
  SIPROUND;
  v0 ^= b;
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

void strmap_init(struct strmap *m) { memset(m, 0, sizeof(*m)); }

void strmap_close(struct strmap *m) {
  free(m->slots);
  strmap_init(m);
}

/* The slot of (ns, key) or the empty slot where it would go. m->cap > 0. */
static struct strmap_slot *find(const struct strmap *m, uint64_t h, size_t ns,
                                const char *key) {
  size_t mask = m->cap - 1;
  for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
    struct strmap_slot *s = &m->slots[i];
    if (s->key == NULL ||
        (s->hash == h && s->ns == ns && strcmp(s->key, key) == 0))
      return s;
  }
}

size_t strmap_get(const struct strmap *m, size_t ns, const char *key) {
  if (m->n == 0)
    return STRMAP_NONE;
  const struct strmap_slot *s = find(m, sip_hash(ns, key), ns, key);
  return s->key ? s->value : STRMAP_NONE;
}

static int grow(struct strmap *m) {
  size_t cap = m->cap ? m->cap * 2 : 16;
  struct strmap_slot *slots = calloc(cap, sizeof(*slots));
  if (slots == NULL)
    return -ENOMEM;
  struct strmap old = *m;
  m->slots = slots;
  m->cap = cap;
  for (size_t i = 0; i < old.cap; i++)
    if (old.slots[i].key)
      *find(m, old.slots[i].hash, old.slots[i].ns, old.slots[i].key) =
          old.slots[i];
  free(old.slots);
  return 0;
}

int strmap_put(struct strmap *m, size_t ns, const char *key, size_t value) {
  if ((m->n + 1) * 2 > m->cap && grow(m))
    return -ENOMEM;
  uint64_t h = sip_hash(ns, key);
  struct strmap_slot *s = find(m, h, ns, key);
  if (s->key == NULL) {
    *s = (struct strmap_slot){.key = key, .hash = h, .ns = ns};
    m->n++;
  }
  s->value = value;
  return 0;
}
