/*
 * settings_rows.h - what the tables of settings_table.c ([aio]) and
 * settings_sections.c ([server:NAME], [schedule:NAME]) share, and the
 * setters of [aio]'s cluster rows (settings_cluster.c).
 */
#ifndef AIO_COMMON_SETTINGS_ROWS_H
#define AIO_COMMON_SETTINGS_ROWS_H

#include "settings_keys.h"

#define DAY 86400.0

/* A value was written for key (not empty). */
int settings_given(const struct settings_ctx *c, const char *key);
/* cluster_fallback's names, indexed by enum cluster_fallback. */
extern const char *const settings_fallbacks[];

/* settings_cluster.c: [aio] cluster, node and cluster_prefix (setters of
 * their rows), and after the rows, cluster_password_file. */
void settings_set_cluster(struct settings_ctx *c, const struct settings_key *k,
                          void *base, const char *v);
void settings_set_node(struct settings_ctx *c, const struct settings_key *k,
                       void *base, const char *v);
void settings_set_prefix(struct settings_ctx *c, const struct settings_key *k,
                         void *base, const char *v);
void settings_aio_check(struct settings_ctx *c, void *base);

#endif
