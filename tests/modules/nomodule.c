/*
 * nomodule.c - a shared object with a declared protocol but no
 * AIO_MODULE(...): not an aio module, and the loader must say so. (The
 * protocol is not called `echo`: the aio binary exports the built-in
 * aio__decl_echo, and ASan reports a second definition as an ODR
 * violation.)
 */
#include <aio.h>

static void on_data(aio_conn_t *conn, const char *data, size_t len) {
  aio_write(conn, data, len);
}
AIO_PROTOCOL(proto, .data_received = on_data);
