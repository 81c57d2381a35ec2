/*
 * bus_agree.c - is bus_scan() (the master's check of a frame, without a
 * tree) of the same opinion as bus_decode() (jansson)? Shared by the unit
 * test and the bus fuzz target.
 */
#include "bus_agree.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bus.h"

const char *bus_scan_disagrees(const char *buf, size_t len) {
  static char why[256];
  struct bus_frame f;
  int rs = bus_scan(buf, len, &f);
  if (rs == -EAGAIN)
    return NULL;
  enum bus_type t = BUS_NONE;
  int rd = 0;
  json_t *msg = bus_decode(buf, len, &t, &rd);
  if (rs != rd) {
    snprintf(why, sizeof(why), "bus_scan %d, bus_decode %d", rs, rd);
    json_decref(msg);
    return why;
  }
  if (msg == NULL)
    return NULL;
  const char *bad = NULL;
  if (f.type != t)
    bad = "type";
  const json_t *sig = json_object_get(msg, "signal");
  if (json_is_string(sig) != (f.signal.p != NULL) ||
      (f.signal.p &&
       (json_string_length(sig) != f.signal.n ||
        memcmp(json_string_value(sig), f.signal.p, f.signal.n) != 0)))
    bad = "signal";
  static const char *const keys[] = {"data", "id", "seq", "listeners"};
  const struct bus_span *spans[] = {&f.data, &f.id, &f.seq, &f.listeners};
  for (size_t i = 0; i < 4 && !bad; i++) {
    json_t *want = json_object_get(msg, keys[i]);
    if ((want == NULL) != (spans[i]->p == NULL)) {
      bad = keys[i];
      break;
    }
    if (want == NULL)
      continue;
    json_t *got = json_loadb(spans[i]->p, spans[i]->n, JSON_DECODE_ANY, NULL);
    json_t *built = bus_span_json(spans[i]);
    if (!json_equal(got, want) || !json_equal(built, want))
      bad = keys[i];
    json_decref(got);
    json_decref(built);
  }
  json_decref(msg);
  if (bad)
    snprintf(why, sizeof(why), "member %s differs", bad);
  return bad ? why : NULL;
}
