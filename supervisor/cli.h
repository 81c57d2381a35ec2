/* cli.h - the `aio` commands other than run, each in its own file. */
#ifndef AIO_SUPERVISOR_CLI_H
#define AIO_SUPERVISOR_CLI_H

#include <jansson.h>

/* sysexits(3) codes used by aio; docs/operations.md ("Exit statuses")
 * lists them. */
#define EXIT_USAGE 64       /* EX_USAGE: bad command line */
#define EXIT_DATAERR 65     /* EX_DATAERR: bad data given to a command */
#define EXIT_UNAVAILABLE 69 /* EX_UNAVAILABLE: no master, address in use */
#define EXIT_SOFTWARE 70    /* EX_SOFTWARE: internal error */
#define EXIT_OSERR 71       /* EX_OSERR: fork, socket, bind failed */
#define EXIT_CANTCREAT 73   /* EX_CANTCREAT: pidfile, log file */
#define EXIT_TEMPFAIL 75    /* EX_TEMPFAIL: reload refused, try again */
#define EXIT_NOPERM 77      /* EX_NOPERM: control socket of another user */
#define EXIT_CONFIG 78      /* EX_CONFIG: configuration error */

/* config_path may be NULL (search). Each returns an exit status. */
int cli_config(const char *config_path, int argc, char **argv);
int cli_test(const char *config_path, int argc, char **argv);
int cli_check(const char *config_path, int argc, char **argv);
/* reload, stop, status, emit, scale: argv[0] is the command. */
int cli_control(const char *config_path, int argc, char **argv);

/* How long `aio emit` (and aio_emit() in a mapped command) waits for the
 * master's answer. */
#define CLI_EMIT_TIMEOUT_MS 10000
/* aio_emit() in a mapped command: the request `aio emit` sends, to the
 * master of config_path, saying nothing. 0 (the master took it), or
 * -ENOTCONN (no master runs for that configuration), -EACCES (the control
 * socket is not our master's), -ETIMEDOUT (no answer), -EMSGSIZE (over
 * the control socket's request size), -EINVAL, -EPROTO. */
int cli_emit(const char *config_path, const char *signal, const json_t *data);

/* cli_status.c: `aio status` from the master's status reply r
 * (borrowed), and `aio status --cluster` (nodes: one line per node). */
void cli_print_status(json_t *r);
void cli_print_cluster(json_t *r, int nodes);

/* Resolve -c or the search order; prints the error. NULL on failure. */
char *cli_config_path(const char *given);

#endif
