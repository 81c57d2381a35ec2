/* proctitle.c - see proctitle.h. */
#define _GNU_SOURCE
#include "proctitle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

extern char **environ;

static char **env_copy;   /* the environment, moved: what environ was */
static char **env_owned;  /* every string of it, also those unsetenv()
                             takes out of environ later (freed at exit) */
static char *title_start; /* argv[0] */
static size_t title_room; /* bytes from argv[0] to the end of the last
                             contiguous argv/environ string */

/* At exit, last of the atexit handlers (registered first): the moved
 * environment is given back, so a leak checker sees every block freed. */
static void free_env(void) {
  if (environ == env_copy)
    environ = NULL;
  for (size_t i = 0; env_owned[i]; i++)
    free(env_owned[i]);
  free(env_owned);
  free(env_copy);
  env_owned = env_copy = NULL;
}

void proctitle_init(int argc, char **argv) {
  if (argc < 1 || argv == NULL || argv[0] == NULL)
    return;
  /* The strings the kernel laid out are contiguous: argv's, then
   * environ's. Take all of them that follow one another. */
  char *end = argv[0] + strlen(argv[0]) + 1;
  for (int i = 1; i < argc && argv[i] == end; i++)
    end = argv[i] + strlen(argv[i]) + 1;
  size_t n = 0;
  while (environ && environ[n])
    n++;
  char **copy = calloc(n + 1, sizeof(*copy));
  char **owned = calloc(n + 1, sizeof(*owned));
  if (copy == NULL || owned == NULL) {
    free(copy);
    free(owned);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    if (environ[i] == end)
      end = environ[i] + strlen(environ[i]) + 1;
    copy[i] = owned[i] = strdup(environ[i]);
    if (copy[i] == NULL) {
      while (i-- > 0)
        free(copy[i]);
      free(copy);
      free(owned);
      return;
    }
  }
  env_owned = owned;
  env_copy = copy;
  environ = copy;
  atexit(free_env);
  /* argv[1..] now point into memory the title may overwrite: nobody may
   * read them after this (main parses its options first). */
  title_start = argv[0];
  title_room = (size_t)(end - argv[0]);
}

void proctitle_set(const char *fmt, ...) {
  char title[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(title, sizeof(title), fmt, ap);
  va_end(ap);
  /* comm: "aio: worker 1" fits in 15 bytes, the rest is cut. */
  prctl(PR_SET_NAME, (unsigned long)title, 0, 0, 0);
  if (title_start == NULL || title_room < 2)
    return;
  size_t len = strlen(title);
  if (len > title_room - 1)
    len = title_room - 1;
  memcpy(title_start, title, len);
  /* The rest zeroed, so ps shows no remnant of the arguments. */
  memset(title_start + len, 0, title_room - len);
}
