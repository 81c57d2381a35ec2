/*
 * bus_json.c - JSON values written straight into a bus_out: strings,
 * integers (8 digits at a time), any value (the emit frame's data), and
 * the copy of a value that bus_out_json() accepted. See bus.h.
 */
#include "bus.h"

#include <errno.h>
#include <string.h>

static int out_char(struct bus_out *o, char c) { return bus_out_raw(o, &c, 1); }

/* Is s valid UTF-8 (no overlong forms, surrogates, or past U+10FFFF)? */
static int utf8_valid(const unsigned char *s) {
  while (*s) {
    unsigned c = *s++, n, min, cp;
    if (c < 0x80)
      continue;
    if (c >= 0xc2 && c <= 0xdf)
      n = 1, min = 0x80, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
      n = 2, min = 0x800, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
      n = 3, min = 0x10000, cp = c & 0x07;
    else
      return 0;
    for (unsigned i = 0; i < n; i++, s++) {
      if ((*s & 0xc0) != 0x80)
        return 0;
      cp = (cp << 6) | (*s & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
  }
  return 1;
}

/* Bytes a JSON string cannot hold as they are: controls, DEL, '"', '\\';
 * and bytes >= 0x80, which need the UTF-8 check. */
static int plain_byte(unsigned char c) {
  return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

int bus_out_str(struct bus_out *o, const char *s) {
  static const char hex[] = "0123456789abcdef";
  size_t i = 0; /* one pass: the plain bytes, up to the NUL or not */
  while (plain_byte((unsigned char)s[i]))
    i++;
  size_t n = s[i] == '\0' ? i : i + strlen(s + i);
  if (i == n) { /* the common case: printable ASCII, copied as it is */
    if (o->cap - o->len < n + 2 && bus_out_reserve(o, n + 2))
      return -ENOMEM;
    char *p = o->buf + o->len;
    *p++ = '"';
    memcpy(p, s, n);
    p[n] = '"';
    o->len += n + 2;
    return 0;
  }
  if (!utf8_valid((const unsigned char *)s + i))
    return -EINVAL;
  if (bus_out_reserve(o, 2 + 6 * n))
    return -ENOMEM;
  char *p = o->buf + o->len;
  *p++ = '"';
  memcpy(p, s, i);
  p += i;
  for (const unsigned char *c = (const unsigned char *)s + i; *c; c++) {
    if (*c == '"' || *c == '\\') {
      *p++ = '\\';
      *p++ = (char)*c;
    } else if (*c < 0x20 || *c == 0x7f) {
      *p++ = '\\';
      *p++ = 'u';
      *p++ = '0';
      *p++ = '0';
      *p++ = hex[*c >> 4];
      *p++ = hex[*c & 15];
    } else {
      *p++ = (char)*c;
    }
  }
  *p++ = '"';
  o->len = (size_t)(p - o->buf);
  return 0;
}

/* "00" to "99": integers are written two digits at a time. */
static const char digit_pairs[] = "00010203040506070809"
                                  "10111213141516171819"
                                  "20212223242526272829"
                                  "30313233343536373839"
                                  "40414243444546474849"
                                  "50515253545556575859"
                                  "60616263646566676869"
                                  "70717273747576777879"
                                  "80818283848586878889"
                                  "90919293949596979899";

/* 10^k, k = 0..19: the digit count of u from its bit length. */
static const unsigned long long pow10s[] = {1ULL,
                                            10ULL,
                                            100ULL,
                                            1000ULL,
                                            10000ULL,
                                            100000ULL,
                                            1000000ULL,
                                            10000000ULL,
                                            100000000ULL,
                                            1000000000ULL,
                                            10000000000ULL,
                                            100000000000ULL,
                                            1000000000000ULL,
                                            10000000000000ULL,
                                            100000000000000ULL,
                                            1000000000000000ULL,
                                            10000000000000000ULL,
                                            100000000000000000ULL,
                                            1000000000000000000ULL,
                                            10000000000000000000ULL};

static size_t u64_digits(unsigned long long u) {
  u |= 1; /* as many digits, and 0 has one */
  /* floor(log10(2^bits)) by 1233/4096; one compare corrects it. */
  unsigned t = (unsigned)(64 - __builtin_clzll(u)) * 1233 >> 12;
  return t + (u >= pow10s[t]);
}

/* The last 8 digits of a value below 10^8, ending at end: 32-bit
 * arithmetic, two digits at a time. */
static void put8(char *end, unsigned r) {
  unsigned hi = r / 10000, lo = r % 10000;
  memcpy(end - 2, digit_pairs + (lo % 100) * 2, 2);
  memcpy(end - 4, digit_pairs + (lo / 100) * 2, 2);
  memcpy(end - 6, digit_pairs + (hi % 100) * 2, 2);
  memcpy(end - 8, digit_pairs + (hi / 100) * 2, 2);
}

int bus_out_int(struct bus_out *o, long long v) {
  unsigned long long u =
      v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
  size_t digits = u64_digits(u), n = digits + (size_t)(v < 0);
  if (o->cap - o->len < n && bus_out_reserve(o, n))
    return -ENOMEM;
  /* Written in place, from the last digits back: 8 at a time while more
   * than 8 are left, then the rest below 10^8 in 32 bits. */
  char *p = o->buf + o->len + n;
  while (u >= 100000000) {
    unsigned long long q = u / 100000000;
    put8(p, (unsigned)(u - q * 100000000));
    p -= 8;
    u = q;
  }
  unsigned r = (unsigned)u;
  while (r >= 100) {
    p -= 2;
    memcpy(p, digit_pairs + (r % 100) * 2, 2);
    r /= 100;
  }
  if (r >= 10) {
    p -= 2;
    memcpy(p, digit_pairs + r * 2, 2);
  } else {
    *--p = (char)('0' + r);
  }
  if (v < 0)
    *--p = '-';
  o->len += n;
  return 0;
}

/* What the master's check accepts is nested at most this deep (jansson's
 * limit); deeper, or a cycle, is refused here rather than at the master. */
#define OUT_MAX_DEPTH 2040

static int out_value(struct bus_out *o, const json_t *v, int depth) {
  int err = 0;
  size_t i;
  const char *key;
  json_t *m;
  if (depth > OUT_MAX_DEPTH)
    return -EINVAL;
  switch (json_typeof(v)) {
  case JSON_OBJECT:
    err = out_char(o, '{');
    i = 0;
    json_object_foreach((json_t *)v, key, m) {
      if (!err && i++ > 0)
        err = out_char(o, ',');
      if (!err)
        err = bus_out_str(o, key);
      if (!err)
        err = out_char(o, ':');
      if (!err)
        err = out_value(o, m, depth + 1);
    }
    return err ? err : out_char(o, '}');
  case JSON_ARRAY:
    err = out_char(o, '[');
    json_array_foreach(v, i, m) {
      if (!err && i > 0)
        err = out_char(o, ',');
      if (!err)
        err = out_value(o, m, depth + 1);
    }
    return err ? err : out_char(o, ']');
  case JSON_STRING:
    /* Length-counted: a string holding NUL is not sent as its prefix. */
    if (memchr(json_string_value(v), '\0', json_string_length(v)))
      return -EINVAL;
    return bus_out_str(o, json_string_value(v));
  case JSON_INTEGER:
    return bus_out_int(o, (long long)json_integer_value(v));
  case JSON_TRUE:
    return bus_out_raw(o, "true", 4);
  case JSON_FALSE:
    return bus_out_raw(o, "false", 5);
  case JSON_NULL:
    return bus_out_raw(o, "null", 4);
  default: /* reals: jansson's formatting */
    return json_dump_callback(v, bus_out_append, o,
                              JSON_COMPACT | JSON_ENCODE_ANY)
               ? -ENOMEM
               : 0;
  }
}

int bus_out_json(struct bus_out *o, const json_t *v) {
  return v ? out_value(o, v, 1) : bus_out_raw(o, "null", 4);
}

json_t *bus_json_copy(const json_t *v) {
  size_t i;
  const char *key;
  json_t *m, *c, *out;
  switch (json_typeof(v)) {
  case JSON_OBJECT:
    if ((out = json_object()) == NULL)
      return NULL;
    json_object_foreach((json_t *)v, key, m) {
      if ((c = bus_json_copy(m)) == NULL ||
          json_object_set_new_nocheck(out, key, c) != 0) {
        json_decref(out);
        return NULL;
      }
    }
    return out;
  case JSON_ARRAY:
    if ((out = json_array()) == NULL)
      return NULL;
    json_array_foreach(v, i, m) {
      if ((c = bus_json_copy(m)) == NULL || json_array_append_new(out, c)) {
        json_decref(out);
        return NULL;
      }
    }
    return out;
  case JSON_STRING:
    return json_stringn_nocheck(json_string_value(v), json_string_length(v));
  case JSON_INTEGER:
    return json_integer(json_integer_value(v));
  case JSON_REAL:
    return json_real(json_real_value(v));
  default: /* true, false, null: jansson's singletons */
    return (json_t *)v;
  }
}
