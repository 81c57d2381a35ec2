/*
 * twinmod.c - a module that declares the AIO_MODULE name of another
 * (testmod): loaded beside it, the loader must refuse the second name.
 */
#include <aio.h>

AIO_MODULE(.name = "testmod", .description = "claims testmod's name");
