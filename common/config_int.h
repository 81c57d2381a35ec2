/*
 * config_int.h - what config.c (the parser) and config_interp.c (the
 * interpolation) share: finding a section and a key for writing.
 */
#ifndef AIO_COMMON_CONFIG_INT_H
#define AIO_COMMON_CONFIG_INT_H

#include "config.h"

/* The section called name (any spelling config_canonical_section folds),
 * or NULL; borrowed, valid until cfg changes. */
struct config_section *config_section_find(const struct config *cfg,
                                           const char *name);
/* Key of section s, or NULL; borrowed, as above. */
struct config_entry *config_entry_find(const struct config *cfg,
                                       const struct config_section *s,
                                       const char *key);

#endif
