/*
 * api21mod.c - a module built against the aio.h of plugin API 2.1
 * (tests/data/api/2.1/aio.h), before aio_emit_wait() and the test loop:
 * every later aio of major 2 must load it, its 2.1 declarations (a check
 * hook, an async listener) intact.
 */
#include <aio.h>

#if AIO_API_MAJOR != 2 || AIO_API_MINOR != 1
#error "api21mod must be built against tests/data/api/2.1/aio.h"
#endif

static int later(const aio_signal_t *sig) {
  aio_signal_done(sig, 0);
  return AIO_PENDING;
}
AIO_LISTENER_ASYNC(later);

static int check(void) { return 0; }

AIO_MODULE(.name = "api21mod", .description = "built against API 2.1",
           .check = check);
