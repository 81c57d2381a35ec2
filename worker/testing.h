/*
 * testing.h - the harness behind aio_test_serve(), aio_test_stop() and
 * aio_test_exchange() (worker/testing.c), and what aio_emit() and
 * aio_config_get() do outside a worker while `aio test` runs the suites.
 */
#ifndef AIO_WORKER_TESTING_H
#define AIO_WORKER_TESTING_H

#include <jansson.h>

struct app;
struct loader;

/* `aio test` hands over the configuration and the loader the suites run
 * with, both borrowed until testing_detach(). 0, or -1 when a listener does
 * not resolve (logged). */
int testing_attach(struct app *app, struct loader *l);
/* Stops every test server, then forgets the configuration. */
void testing_detach(void);
/* The attached configuration (borrowed), or NULL outside `aio test`. */
const struct app *testing_app(void);
/* aio_emit() in a test: run the listeners the configuration attaches to
 * `signal` at once, in the calling thread, with `data` after the same JSON
 * round trip the bus would give it (not stolen). 0; -EINVAL outside
 * `aio test`; -EMSGSIZE when data is too large for the bus; -ELOOP when
 * listeners emit into each other too deep. */
int testing_emit(const char *signal, json_t *data);

#endif
