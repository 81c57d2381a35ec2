/* bus.c - framing and message names for the master/worker channel. */
#include "bus.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const bus_names[BUS_TYPE_COUNT] = {
    [BUS_NONE] = "none",
#define BUS_NAME(e, s) [BUS_##e] = s,
    BUS_MESSAGES(BUS_NAME)
#undef BUS_NAME
};

const char *bus_type_name(enum bus_type t) {
  return (t > BUS_NONE && t < BUS_TYPE_COUNT) ? bus_names[t] : "none";
}

enum bus_type bus_type_parse(const char *name) {
  for (int t = BUS_NONE + 1; t < BUS_TYPE_COUNT; t++)
    if (strcmp(bus_names[t], name) == 0)
      return (enum bus_type)t;
  return BUS_NONE;
}

json_t *bus_decode(const char *data, size_t len, enum bus_type *t, int *err) {
  json_error_t jerr;
  /* JSON_REJECT_DUPLICATES: a frame that says two things is not trusted. */
  json_t *msg = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
  if (msg == NULL || !json_is_object(msg)) {
    json_decref(msg);
    *err = -EBADMSG;
    return NULL;
  }
  const char *name = json_string_value(json_object_get(msg, "t"));
  if (name == NULL) {
    json_decref(msg);
    *err = -EBADMSG;
    return NULL;
  }
  *t = bus_type_parse(name);
  if (*t == BUS_NONE) {
    json_decref(msg);
    *err = -EPROTO;
    return NULL;
  }
  *err = 0;
  return msg;
}

int bus_reader_feed(struct bus_reader *r, const char *data, size_t len,
                    bus_frame_cb cb, void *arg) {
  while (len > 0) {
    const char *nl = memchr(data, '\n', len);
    size_t take = nl ? (size_t)(nl - data) : len;
    if (r->len + take + 1 > BUS_MAX_FRAME)
      return -EMSGSIZE;
    const char *frame = data;
    size_t flen = take;
    if (r->len > 0 || nl == NULL) {
      /* Only a frame split across reads is copied. */
      if (r->len + take > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + take)
          cap *= 2;
        char *p = realloc(r->buf, cap);
        if (p == NULL)
          return -ENOMEM;
        r->buf = p;
        r->cap = cap;
      }
      memcpy(r->buf + r->len, data, take);
      r->len += take;
      frame = r->buf;
      flen = r->len;
    }
    if (nl == NULL)
      return 0;
    data += take + 1;
    len -= take + 1;
    if (flen == 0) {
      r->len = 0;
      continue; /* blank line: tolerated keep-alive */
    }
    enum bus_type t;
    int err;
    json_t *msg = bus_decode(frame, flen, &t, &err);
    r->len = 0;
    if (msg == NULL)
      return err;
    int rc = cb(arg, t, msg);
    json_decref(msg);
    if (rc)
      return rc;
  }
  return 0;
}

void bus_reader_close(struct bus_reader *r) {
  free(r->buf);
  memset(r, 0, sizeof(*r));
}

json_t *bus_msg(enum bus_type t) {
  return json_pack("{s:s}", "t", bus_type_name(t));
}

char *bus_encode(const json_t *msg, size_t *len) {
  char *s = json_dumps(msg, JSON_COMPACT);
  if (s == NULL)
    return NULL;
  size_t n = strlen(s);
  if (n + 1 > BUS_MAX_FRAME) {
    free(s);
    return NULL;
  }
  /* json_dumps escapes control characters, so the only newline is ours. */
  char *line = realloc(s, n + 2);
  if (line == NULL) {
    free(s);
    return NULL;
  }
  line[n] = '\n';
  line[n + 1] = '\0';
  *len = n + 1;
  return line;
}
