/*
 * bus_scan.c - check a bus frame and find its top-level members without
 * building a json_t tree: the master routes an emit by copying the text of
 * its data into the deliver frame, and a worker parses only the data of a
 * deliver. It accepts exactly what bus_decode() (jansson's json_loadb with
 * JSON_REJECT_DUPLICATES) accepts: RFC 8259 JSON, valid UTF-8, no "\u0000",
 * no lone surrogates, integers that fit a json_int_t, reals that do not
 * overflow, nesting up to jansson's 2048, no duplicate key in any object.
 * What it cannot settle without decoding (a key with an escape, an escaped
 * "t" or "signal") it hands back with -EAGAIN, for bus_decode() to judge.
 * tests/unit/test_bus_scan.c holds it to jansson's verdict.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"

struct key {
  uint64_t hash;
  const char *p;
  size_t n;
};

/* Keys held without a malloc: a bus frame rarely has more open at once. */
#define SCAN_LOCAL_KEYS 32

struct scan {
  const char *p, *end;
  int depth;
  struct key *keys; /* of the objects open now, innermost last */
  size_t nkeys, cap;
  struct key local[SCAN_LOCAL_KEYS]; /* keys, until there are more */
};

/* Scan results: 0, or one of these (negated errno values for callers). */
#define BAD (-EBADMSG)
#define SLOW (-EAGAIN)

static void skip_ws(struct scan *s) {
  while (s->p < s->end &&
         (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
    s->p++;
}

static int hex4(const char *p, const char *end, unsigned *v) {
  if (end - p < 4)
    return -1;
  *v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                 : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                 : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                        : 16;
    if (d == 16)
      return -1;
    *v = *v << 4 | d;
  }
  return 0;
}

/* One UTF-8 sequence at p (first byte >= 0x80), as jansson's
 * utf8_check_first/full judge it. Its length, or 0. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end) {
  unsigned c = *p, n, cp;
  if (c >= 0xc2 && c <= 0xdf)
    n = 2, cp = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef)
    n = 3, cp = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4)
    n = 4, cp = c & 0x07;
  else
    return 0;
  if ((size_t)(end - p) < n)
    return 0;
  for (unsigned i = 1; i < n; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    cp = cp << 6 | (p[i] & 0x3f);
  }
  if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ||
      (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000))
    return 0;
  return n;
}

/* Does any byte of the 8 at p need a look: a control, '"', '\\', or one
 * >= 0x80 (UTF-8)? The usual SWAR tests for a byte below n or equal to c;
 * they may report a byte that needs none, never miss one. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
static int word_special(const char *p) {
  uint64_t x;
  memcpy(&x, p, 8);
  uint64_t q = x ^ (ONES * '"'), b = x ^ (ONES * '\\');
  uint64_t below20 = (x - ONES * 0x20) & ~x;
  uint64_t zq = (q - ONES) & ~q, zb = (b - ONES) & ~b;
  return ((below20 | zq | zb) & HIGHS) != 0 || (x & HIGHS) != 0;
}

/* A string at s->p (on its quote). body and n: the bytes between the
 * quotes; esc: whether there is an escape among them. */
static int scan_string(struct scan *s, const char **body, size_t *n, int *esc) {
  const char *p = s->p + 1, *end = s->end;
  *esc = 0;
  while (p < end) {
    /* Plain ASCII eight bytes at a time, then byte by byte up to the
     * byte that needs a look. */
    while (end - p >= 8 && !word_special(p))
      p += 8;
    while (p < end && (unsigned char)*p >= 0x20 && (unsigned char)*p < 0x80 &&
           *p != '"' && *p != '\\')
      p++;
    if (p >= end)
      break;
    unsigned char c = (unsigned char)*p;
    if (c == '"') {
      *body = s->p + 1;
      *n = (size_t)(p - *body);
      s->p = p + 1;
      return 0;
    }
    if (c < 0x20)
      return BAD;
    if (c >= 0x80) {
      size_t k = utf8_seq((const unsigned char *)p, (const unsigned char *)end);
      if (k == 0)
        return BAD;
      p += k;
      continue;
    }
    p++;
    if (c != '\\')
      continue;
    *esc = 1;
    if (p >= end)
      return BAD;
    c = (unsigned char)*p++;
    if (strchr("\"\\/bfnrt", c) != NULL && c != '\0')
      continue;
    unsigned v, v2;
    if (c != 'u' || hex4(p, end, &v))
      return BAD;
    p += 4;
    if (v == 0 || (v >= 0xdc00 && v <= 0xdfff))
      return BAD; /* \u0000 needs JSON_ALLOW_NUL; a lone low surrogate */
    if (v >= 0xd800 && v <= 0xdbff) {
      if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, end, &v2) ||
          v2 < 0xdc00 || v2 > 0xdfff)
        return BAD;
      p += 6;
    }
  }
  return BAD; /* unterminated */
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int scan_number(struct scan *s) {
  const char *p = s->p, *end = s->end, *start = p;
  int real = 0;
  if (p < end && *p == '-')
    p++;
  if (p < end && *p == '0') {
    p++;
    if (p < end && is_digit(*p))
      return BAD;
  } else if (p < end && is_digit(*p)) {
    while (p < end && is_digit(*p))
      p++;
  } else {
    return BAD;
  }
  if (p < end && *p == '.') {
    real = 1;
    if (++p >= end || !is_digit(*p))
      return BAD;
    while (p < end && is_digit(*p))
      p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    real = 1;
    p++;
    if (p < end && (*p == '+' || *p == '-'))
      p++;
    if (p >= end || !is_digit(*p))
      return BAD;
    while (p < end && is_digit(*p))
      p++;
  }
  /* The same range checks as jansson: strtoll, and strtod overflow. Up
   * to 18 digits no integer overflows, and a real without an exponent
   * needs over 300 to. */
  size_t n = (size_t)(p - start);
  s->p = p;
  if ((!real && n <= 18) ||
      (real && n < 300 && !memchr(start, 'e', n) && !memchr(start, 'E', n)))
    return 0;
  char local[64], *text = n < sizeof(local) ? local : malloc(n + 1);
  if (text == NULL)
    return -ENOMEM;
  memcpy(text, start, n);
  text[n] = '\0';
  int rc = 0;
  errno = 0;
  if (!real) {
    strtoll(text, NULL, 10);
    if (errno == ERANGE)
      rc = BAD;
  } else {
    double d = strtod(text, NULL);
    if ((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE)
      rc = BAD;
  }
  if (text != local)
    free(text);
  return rc;
}

static int scan_literal(struct scan *s, const char *word, size_t n) {
  if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
    return BAD;
  s->p += n;
  return 0;
}

static uint64_t fnv1a(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
  return h;
}

static int key_cmp(const void *a, const void *b) {
  const struct key *x = a, *y = b;
  if (x->hash != y->hash)
    return x->hash < y->hash ? -1 : 1;
  if (x->n != y->n)
    return x->n < y->n ? -1 : 1;
  return memcmp(x->p, y->p, x->n);
}

/* Are two of the keys from `from` on equal? (Unescaped keys only, so raw
 * bytes compare as jansson's decoded ones.) Hashes are made only for the
 * sort, which only large objects need. */
static int has_duplicate(struct key *k, size_t n) {
  if (n < 2)
    return 0;
  if (n <= 8) {
    for (size_t i = 0; i < n; i++)
      for (size_t j = i + 1; j < n; j++)
        if (k[i].n == k[j].n && memcmp(k[i].p, k[j].p, k[i].n) == 0)
          return 1;
    return 0;
  }
  for (size_t i = 0; i < n; i++)
    k[i].hash = fnv1a(k[i].p, k[i].n);
  qsort(k, n, sizeof(*k), key_cmp); /* this object's keys are not used again */
  for (size_t i = 1; i < n; i++)
    if (key_cmp(&k[i - 1], &k[i]) == 0)
      return 1;
  return 0;
}

static int scan_value(struct scan *s, struct bus_frame *top);

/* After a member or element: 1 for ',' (another follows), 0 for the
 * closing bracket, BAD for anything else. */
static int next_or_close(struct scan *s, char close) {
  skip_ws(s);
  if (s->p < s->end && (*s->p == ',' || *s->p == close))
    return *s->p++ == ',';
  return BAD;
}

/* At an opening bracket: is the container empty? (Then it is consumed.) */
static int empty(struct scan *s, char close) {
  s->p++;
  skip_ws(s);
  if (s->p < s->end && *s->p == close) {
    s->p++;
    return 1;
  }
  return 0;
}

static int scan_array(struct scan *s) {
  if (empty(s, ']'))
    return 0;
  int more;
  do {
    skip_ws(s);
    int rc = scan_value(s, NULL);
    if (rc)
      return rc;
  } while ((more = next_or_close(s, ']')) == 1);
  return more;
}

static void note_member(struct bus_frame *f, const char *key, size_t n,
                        const char *v, size_t vn) {
  struct bus_span sp = {v, vn};
  if (n > 9) /* "listeners", the longest */
    return;
#define MEMBER(name)                                                           \
  if (n == sizeof(#name) - 1 && memcmp(key, #name, n) == 0)                    \
    f->name = sp;
  MEMBER(t)
  MEMBER(signal)
  MEMBER(data)
  MEMBER(id)
  MEMBER(seq)
  MEMBER(listeners)
  MEMBER(keep)
  MEMBER(n)
  MEMBER(count)
#undef MEMBER
}

/* top: the frame, when this is the top-level object. */
static int scan_object(struct scan *s, struct bus_frame *top) {
  size_t first = s->nkeys;
  if (empty(s, '}'))
    return 0;
  for (int more = 1; more;) {
    skip_ws(s);
    if (s->p >= s->end || *s->p != '"')
      return BAD;
    const char *key;
    size_t n;
    int esc, rc = scan_string(s, &key, &n, &esc);
    if (rc)
      return rc;
    if (esc)
      return SLOW; /* only decoding can tell "a" from "\u0061" */
    if (s->nkeys == s->cap) {
      size_t cap = s->cap * 2;
      struct key *k = s->keys == s->local ? malloc(cap * sizeof(*k))
                                          : realloc(s->keys, cap * sizeof(*k));
      if (k == NULL)
        return -ENOMEM;
      if (s->keys == s->local)
        memcpy(k, s->local, sizeof(s->local));
      s->keys = k;
      s->cap = cap;
    }
    s->keys[s->nkeys++] = (struct key){0, key, n};
    skip_ws(s);
    if (s->p >= s->end || *s->p != ':')
      return BAD;
    s->p++;
    skip_ws(s);
    const char *v = s->p;
    if ((rc = scan_value(s, NULL)) != 0)
      return rc;
    if (top)
      note_member(top, key, n, v, (size_t)(s->p - v));
    if ((more = next_or_close(s, '}')) < 0)
      return more;
  }
  int dup = has_duplicate(s->keys + first, s->nkeys - first);
  s->nkeys = first;
  return dup ? BAD : 0;
}

static int scan_value(struct scan *s, struct bus_frame *top) {
  if (s->p >= s->end)
    return BAD;
  const char *body;
  size_t n;
  int esc, rc;
  /* jansson counts every value, scalars too: the top-level object is at
   * depth 1, its members at 2. */
  if (s->depth >= BUS_JSON_MAX_DEPTH)
    return BAD;
  switch (*s->p) {
  case '{':
  case '[':
    s->depth++;
    rc = *s->p == '{' ? scan_object(s, top) : scan_array(s);
    s->depth--;
    return rc;
  case '"':
    return scan_string(s, &body, &n, &esc);
  case 't':
    return scan_literal(s, "true", 4);
  case 'f':
    return scan_literal(s, "false", 5);
  case 'n':
    return scan_literal(s, "null", 4);
  default:
    return scan_number(s);
  }
}

/* A string member's bytes without its quotes, if it has no escape. */
static int plain_string(struct bus_span *sp) {
  if (sp->p == NULL || sp->n < 2 || sp->p[0] != '"' ||
      memchr(sp->p, '\\', sp->n) != NULL)
    return -1;
  sp->p++;
  sp->n -= 2;
  return 0;
}

static void scan_init(struct scan *s, const char *data, size_t len) {
  s->p = data;
  s->end = data + len;
  s->depth = 0;
  s->keys = s->local;
  s->nkeys = 0;
  s->cap = SCAN_LOCAL_KEYS;
  skip_ws(s);
}

/* After the value (rc its verdict): only white space may follow. */
static int scan_end(struct scan *s, int rc) {
  skip_ws(s);
  if (rc == 0 && s->p != s->end)
    rc = BAD; /* "end of file expected" */
  if (s->keys != s->local)
    free(s->keys);
  return rc;
}

int bus_scan(const char *data, size_t len, struct bus_frame *f) {
  memset(f, 0, sizeof(*f));
  struct scan s;
  scan_init(&s, data, len);
  int rc = BAD;
  if (s.p < s.end && (*s.p == '{' || *s.p == '['))
    rc = scan_value(&s, *s.p == '{' ? f : NULL);
  if ((rc = scan_end(&s, rc)) != 0)
    return rc;
  if (f->t.p == NULL || f->t.p[0] != '"')
    return BAD; /* not an object, no "t", or "t" not a string */
  if (plain_string(&f->t))
    return SLOW;
  if (f->signal.p && f->signal.p[0] != '"')
    f->signal.p = NULL; /* not a string: as absent */
  else if (f->signal.p && plain_string(&f->signal))
    return SLOW;
  f->type = bus_type_parsen(f->t.p, f->t.n);
  return f->type == BUS_NONE ? -EPROTO : 0;
}

int bus_scan_member(const char *data, size_t len, size_t *used) {
  struct scan s;
  scan_init(&s, data, 0); /* no white space skipped */
  s.end = data + len;
  s.depth = 1; /* inside the frame's object, as bus_scan() counts */
  int rc = scan_value(&s, NULL);
  if (s.keys != s.local)
    free(s.keys);
  *used = (size_t)(s.p - data);
  return rc;
}

int bus_scan_value(const char *data, size_t len) {
  struct scan s;
  scan_init(&s, data, len);
  return scan_end(&s, scan_value(&s, NULL));
}

int bus_span_int(const struct bus_span *sp, json_int_t *v) {
  char num[24], *end;
  if (sp->p == NULL || sp->n == 0 || sp->n >= sizeof(num))
    return -1;
  if (sp->n <= 18 && (sp->n == 1 || sp->p[0] != '0')) {
    /* Plain digits, as the ids and seqs of the hot frames are: no
     * overflow is possible, so no strtoll. */
    long long x = 0;
    size_t i = 0;
    while (i < sp->n && is_digit(sp->p[i]))
      x = x * 10 + (sp->p[i++] - '0');
    if (i == sp->n) {
      *v = (json_int_t)x;
      return 0;
    }
  }
  memcpy(num, sp->p, sp->n);
  num[sp->n] = '\0';
  errno = 0;
  long long x = strtoll(num, &end, 10);
  if (*end != '\0' || errno != 0)
    return -1; /* a real (1.0, 1e3), or not a number */
  *v = (json_int_t)x;
  return 0;
}
