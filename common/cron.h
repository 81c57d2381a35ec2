/* cron.h - five-field cron expressions (minute hour day-of-month month
 * day-of-week), minute resolution, local time, as in crontab(5): '*', lists,
 * ranges, steps; day-of-month and day-of-week are ORed when both are set. */
#ifndef AIO_COMMON_CRON_H
#define AIO_COMMON_CRON_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct cron {
  uint64_t minute; /* bit i: minute i */
  uint32_t hour;
  uint32_t dom;   /* bits 1..31 */
  uint16_t month; /* bits 1..12 */
  uint8_t dow;    /* bits 0..6, Sunday 0 (7 folds into 0) */
  int dom_star, dow_star;
};

/* 0, or -1 with a message in err. */
int cron_parse(struct cron *c, const char *expr, char *err, size_t errlen);
/* The first matching minute strictly after `after` (seconds since the
 * epoch), or -1 when none within four years. */
time_t cron_next(const struct cron *c, time_t after);

#endif
