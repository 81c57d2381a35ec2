/*
 * prom_util.h - reading aio's /metrics in the e2e suites: a GET on the
 * endpoint, a scrape checked by Debian's prometheus_client parser
 * (prom_parse.py), and sums of the parser's samples.
 */
#ifndef AIO_TESTS_PROM_UTIL_H
#define AIO_TESTS_PROM_UTIL_H

/* GET path on the metrics port: the HTTP status, the whole answer in
 * *out (new). */
int prom_get(int port, const char *path, char **out, int timeout_ms);
/* Scrape port, check the body with the real parser (its files in dir),
 * and return the parser's samples (new), one per line:
 * name{labels} value. */
char *prom_scrape(int port, const char *dir);
/* The sum of the samples called name whose labels contain every filter
 * (`server="web"`; NULL-terminated), or -1 when there is none. */
double prom_sum(const char *parsed, const char *name, ...);

#endif
