/*
 * baddecl.c - a well-formed module whose symbol declarations are not: one
 * written by hand for API version 0, one whose magic is wrong, one that
 * names another symbol. It also ships .defaults, so the tests can see the
 * module layer between the built-in defaults and the user's file.
 */
#include <aio.h>

static void on_data(aio_conn_t *conn, const char *data, size_t len) {
  aio_write(conn, data, len);
}
static const aio_protocol_t proto = {.data_received = on_data};

#define BADDECL(sym, magic, version, name)                                     \
  AIO_EXPORT extern const aio_decl_t aio__decl_##sym;                          \
  const aio_decl_t aio__decl_##sym = {magic,                                   \
                                      version,                                 \
                                      AIO_KIND_PROTOCOL,                       \
                                      name,                                    \
                                      {.protocol = &proto},                    \
                                      (unsigned)sizeof(aio_protocol_t)}

BADDECL(stale, AIO_DECL_MAGIC, 0, "stale");
BADDECL(nomagic, 0x12345678u, AIO_API_VERSION, "nomagic");
BADDECL(misnamed, AIO_DECL_MAGIC, AIO_API_VERSION, "other");

/* A good one, so the module itself loads and resolves. */
AIO_PROTOCOL(good, .data_received = on_data);

AIO_MODULE(.name = "baddecl", .description = "mis-declared symbols",
           .defaults = "[aio]\n"
                       "timeout = 7\n"
                       "graceful_timeout = 9\n"
                       "[baddecl]\n"
                       "greeting = hello from the module\n");
