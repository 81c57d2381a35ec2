/*
 * fuzz_ctl.c - the control-socket request decoder on hostile bytes (what
 * any local client of the master's control socket could send).
 *
 * ctl_decode must never crash, must accept only requests whose fields it
 * checked, and what it accepted must decode the same after a round trip
 * through its own JSON text.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

static void check_fields(const struct ctl_req *r) {
  switch (r->cmd) {
  case CTL_EMIT:
    if (r->signal == NULL || *r->signal == '\0' || strlen(r->signal) > 256)
      abort();
    break;
  case CTL_SCALE:
    if (r->workers < 1 || r->workers > 1024)
      abort();
    break;
  case CTL_STOP:
    if (r->now != 0 && r->now != 1)
      abort();
    break;
  case CTL_STATUS:
  case CTL_RELOAD:
    break;
  default:
    abort(); /* CTL_NONE or out of range: never "accepted" */
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct ctl_req req;
  char err[256];
  err[0] = '\0';
  if (ctl_decode((const char *)data, size, &req, err, sizeof(err)) != 0) {
    /* Refused: with a message, and nothing left to free. */
    if (err[0] == '\0' || req.msg != NULL)
      abort();
    return 0;
  }
  if (size > CTL_MAX_REQUEST)
    abort();
  check_fields(&req);
  char *text = json_dumps(req.msg, JSON_COMPACT);
  if (text == NULL)
    abort();
  struct ctl_req again;
  if (ctl_decode(text, strlen(text), &again, err, sizeof(err)) != 0 ||
      again.cmd != req.cmd || again.now != req.now ||
      again.workers != req.workers ||
      (req.signal && strcmp(again.signal, req.signal) != 0) ||
      ((req.data || again.data) && !json_equal(again.data, req.data))) {
    fprintf(stderr, "control request changed in a round trip: %s\n", text);
    abort();
  }
  ctl_req_close(&again);
  ctl_req_close(&req);
  free(text);
  return 0;
}
