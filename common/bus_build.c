/*
 * bus_build.c - the json_t tree of a value bus_scan() has checked
 * (bus_span_json): the worker builds a deliver's data from its text
 * without jansson's parser for the shapes a bus frame mostly carries
 * (plain strings, short integers); escaped strings, long numbers and
 * anything it cannot allocate go to json_loadb. Moved out of bus_scan.c.
 */
#include <stdlib.h>

#include "bus.h"

static void skip_ws_p(const char **p, const char *end) {
  while (*p < end && (**p == ' ' || **p == '\t' || **p == '\n' || **p == '\r'))
    (*p)++;
}

/* A string's body, if it has no escape (else -1: left to jansson). */
static int plain_body(const char **p, const char *end, const char **body,
                      size_t *n) {
  const char *q = *p + 1;
  while (q < end && *q != '"' && *q != '\\')
    q++;
  if (q >= end || *q != '"')
    return -1;
  *body = *p + 1;
  *n = (size_t)(q - *body);
  *p = q + 1;
  return 0;
}

static json_t *build(const char **p, const char *end, int depth) {
  skip_ws_p(p, end);
  if (*p >= end || depth > BUS_JSON_MAX_DEPTH)
    return NULL;
  const char *body;
  size_t n;
  json_t *v = NULL;
  switch (**p) {
  case '{':
    v = json_object();
    (*p)++;
    for (skip_ws_p(p, end); v && *p < end && **p != '}';) {
      if (plain_body(p, end, &body, &n))
        goto fail;
      skip_ws_p(p, end);
      (*p)++; /* ':' */
      json_t *m = build(p, end, depth + 1);
      if (m == NULL || json_object_setn_new_nocheck(v, body, n, m))
        goto fail;
      skip_ws_p(p, end);
      if (*p < end && **p == ',')
        (*p)++;
      skip_ws_p(p, end);
    }
    break;
  case '[':
    v = json_array();
    (*p)++;
    for (skip_ws_p(p, end); v && *p < end && **p != ']';) {
      json_t *m = build(p, end, depth + 1);
      if (m == NULL || json_array_append_new(v, m))
        goto fail;
      skip_ws_p(p, end);
      if (*p < end && **p == ',')
        (*p)++;
      skip_ws_p(p, end);
    }
    break;
  case '"':
    if (plain_body(p, end, &body, &n))
      return NULL;
    return json_stringn_nocheck(body, n); /* bus_scan checked its UTF-8 */
  case 't':
    *p += 4;
    return json_true();
  case 'f':
    *p += 5;
    return json_false();
  case 'n':
    *p += 4;
    return json_null();
  default: {
    /* Up to 18 digits, an integer is read here; the rest by strto*. */
    const char *q = *p + (**p == '-');
    unsigned long long u = 0;
    int digits = 0;
    while (q < end && *q >= '0' && *q <= '9' && digits < 18) {
      u = u * 10 + (unsigned long long)(*q++ - '0');
      digits++;
    }
    if (digits > 0 && (q >= end || (*q != '.' && *q != 'e' && *q != 'E' &&
                                    (*q < '0' || *q > '9')))) {
      json_int_t x = (json_int_t)u;
      v = json_integer(**p == '-' ? -x : x);
      *p = q;
      return v;
    }
    char num[400], *e;
    size_t k = 0;
    int real = 0;
    while (*p + k < end && k < sizeof(num) - 1) {
      char c = (*p)[k];
      if (!((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' ||
            c == 'e' || c == 'E'))
        break;
      real |= c == '.' || c == 'e' || c == 'E';
      num[k++] = c;
    }
    num[k] = '\0';
    if (k == 0 || k == sizeof(num) - 1)
      return NULL;
    *p += k;
    return real ? json_real(strtod(num, &e))
                : json_integer((json_int_t)strtoll(num, &e, 10));
  }
  }
  if (v == NULL || *p >= end)
    goto fail;
  (*p)++; /* the closing bracket */
  return v;
fail:
  json_decref(v);
  return NULL;
}

json_t *bus_span_json(const struct bus_span *sp) {
  if (sp->p == NULL)
    return json_null();
  const char *p = sp->p;
  json_t *v = build(&p, sp->p + sp->n, 1);
  /* What the quick builder leaves (escaped strings, long numbers), and
   * anything it could not allocate, jansson decodes. */
  return v ? v : json_loadb(sp->p, sp->n, JSON_DECODE_ANY, NULL);
}
