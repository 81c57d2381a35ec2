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

/* NULL when the codec's decoder (common/bus_codec.c), checked and
 * trusted, reads the frame buf[0, len) as jansson does (verdict, type and
 * members of emit, deliver and delivered), and what it read is encoded and
 * read back unchanged; else what differs, in a static buffer. */
const char *bus_codec_disagrees(const char *buf, size_t len);

#endif
