/*
 * bus_agree.h - holding bus_scan() to jansson's verdict (bus_agree.c).
 */
#ifndef AIO_TESTS_BUS_AGREE_H
#define AIO_TESTS_BUS_AGREE_H

#include <stddef.h>

/* NULL when bus_scan() and bus_decode() agree on the frame buf[0, len)
 * (verdict, type, and every member bus_scan finds), or bus_scan() left it
 * to bus_decode() (-EAGAIN); else what differs, in a static buffer. */
const char *bus_scan_disagrees(const char *buf, size_t len);

#endif
