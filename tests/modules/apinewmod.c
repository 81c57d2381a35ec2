/*
 * apinewmod.c - a module built against an aio.h from the future (API
 * 2.99, generated from include/aio.h by tests/modules/CMakeLists.txt with
 * a member more in aio_module_t and aio_protocol_t): this aio must refuse
 * it, saying it is newer, before reading past what it knows.
 */
#include <aio.h>

#if AIO_API_MINOR != 99
#error "apinewmod must be built against the generated API 2.99 aio.h"
#endif

static void on_data(aio_conn_t *conn, const char *data, size_t len) {
  aio_write(conn, data, len);
}
static void on_future(aio_conn_t *conn) { (void)conn; }
AIO_PROTOCOL(proto, .data_received = on_data, .from_the_future = on_future);

AIO_MODULE(.name = "apinewmod", .description = "built against API 2.99");
