/*
 * settings_rows.h - what the tables of settings_table.c ([aio]) and
 * settings_sections.c ([server:NAME], [schedule:NAME]) share.
 */
#ifndef AIO_COMMON_SETTINGS_ROWS_H
#define AIO_COMMON_SETTINGS_ROWS_H

#include "settings_keys.h"

#define DAY 86400.0

/* A value was written for key (not empty). */
int settings_given(const struct settings_ctx *c, const char *key);
/* cluster_fallback's names, indexed by enum cluster_fallback. */
extern const char *const settings_fallbacks[];

#endif
