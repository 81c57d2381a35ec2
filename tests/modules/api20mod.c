/*
 * api20mod.c - a module built against the aio.h of plugin API 2.0
 * (tests/data/api/2.0/aio.h), whose aio_module_t has no `check` member:
 * every later aio of major 2 must load it, reading what it lacks as NULL.
 */
#include <aio.h>

#if AIO_API_MAJOR != 2 || AIO_API_MINOR != 0
#error "api20mod must be built against tests/data/api/2.0/aio.h"
#endif

static void on_data(aio_conn_t *conn, const char *data, size_t len) {
  (void)data;
  (void)len;
  aio_write(conn, "api 2.0\n", 8);
}
AIO_PROTOCOL(old, .data_received = on_data);

AIO_MODULE(.name = "api20mod", .description = "built against API 2.0");
