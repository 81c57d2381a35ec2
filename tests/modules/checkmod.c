/*
 * checkmod.c - a module that checks its own configuration with the check
 * hook (API 2.1): [checkmod] colour is red, green or blue, and level a
 * whole number from 1 to 10 (default 5, from the module's defaults).
 */
#include <stdlib.h>
#include <string.h>

#include <aio.h>

static int check(void) {
  int problems = 0;
  const char *colour = aio_config_get("checkmod", "colour");
  if (colour == NULL) {
    aio_check_error("checkmod", "colour", "is required");
    problems++;
  } else if (strcmp(colour, "red") && strcmp(colour, "green") &&
             strcmp(colour, "blue")) {
    aio_check_error("checkmod", "colour",
                    "'%s' is not a colour (red, green or blue)", colour);
    problems++;
  }
  const char *level = aio_config_get("checkmod", "level");
  char *end = NULL;
  long v = level ? strtol(level, &end, 10) : 0;
  if (level == NULL || *level == '\0' || *end != '\0' || v < 1 || v > 10) {
    aio_check_error("checkmod", "level",
                    "'%s' is not a whole number from 1 "
                    "to 10",
                    level ? level : "");
    problems++;
  }
  return problems;
}

static void on_data(aio_conn_t *conn, const char *data, size_t len) {
  aio_write(conn, data, len);
}
AIO_PROTOCOL(echo_checked, .data_received = on_data);

AIO_MODULE(.name = "checkmod", .description = "checks its own keys",
           .defaults = "[checkmod]\nlevel = 5\n", .check = check);
