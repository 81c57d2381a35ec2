/*
 * badapi.c - a module built for an aio API that no longer exists: its
 * AIO_MODULE record is written by hand with api_version 0, as an old aio.h
 * would have produced. The loader must refuse it before calling anything.
 */
#include <aio.h>

static const aio_module_t badapi_def = {.name = "badapi"};

AIO_EXPORT extern const aio_decl_t aio__decl_aio_module;
const aio_decl_t aio__decl_aio_module = {AIO_DECL_MAGIC,          0,
                                         AIO_KIND_MODULE,         "aio_module",
                                         {.module = &badapi_def}, 0};
