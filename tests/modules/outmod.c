#define _GNU_SOURCE
/*
 * outmod.c - fixtures for captured worker output (tests/e2e/test_output.c):
 * an init that prints on stdout and stderr, and protocols that print a
 * word (and a last line with no newline), write a line of N bytes, or flood
 * stdout with N MiB from a thread of their own while the worker serves on.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <aio.h>

static int outmod_init(void) {
  printf("outmod init on stdout\n");
  fprintf(stderr, "outmod init on stderr\n");
  return 0;
}

/* "WORD\n": "said WORD" on stdout, "warned WORD" on stderr; "last:WORD\n":
 * "tail WORD" on stdout with no newline, which only the worker's exit
 * flushes. Answers "ok PID\n". */
static void say_data(aio_conn_t *c, const char *data, size_t len) {
  char word[64], out[64];
  snprintf(word, sizeof(word), "%.*s", (int)(len < 63 ? len : 63), data);
  word[strcspn(word, "\r\n")] = '\0';
  if (strncmp(word, "last:", 5) == 0) {
    printf("tail %s", word + 5);
  } else {
    printf("said %s\n", word);
    fprintf(stderr, "warned %s\n", word);
  }
  int n = snprintf(out, sizeof(out), "ok %d\n", (int)getpid());
  aio_write(c, out, (size_t)n);
}
AIO_PROTOCOL(say, .data_received = say_data);

/* "N\n": one line of N bytes ('L' then as many 'x'), then "after long".
 * Answers "ok\n". */
static void longline_data(aio_conn_t *c, const char *data, size_t len) {
  char num[32];
  snprintf(num, sizeof(num), "%.*s", (int)(len < 31 ? len : 31), data);
  long n = strtol(num, NULL, 10);
  if (n < 1 || n > 64L * 1024 * 1024)
    return;
  char *line = malloc((size_t)n + 1);
  if (line == NULL)
    return;
  memset(line, 'x', (size_t)n);
  line[0] = 'L';
  line[n] = '\n';
  fwrite(line, 1, (size_t)n + 1, stdout);
  free(line);
  printf("after long\n");
  aio_write(c, "ok\n", 3);
}
AIO_PROTOCOL(longline, .data_received = longline_data);

/* N MiB of 1 KiB lines ("flood " and x's) on fd 1, then "flood done" on
 * stderr. */
static void *flood_thread(void *arg) {
  long mib = (long)(intptr_t)arg;
  static char chunk[64 * 1024];
  for (size_t i = 0; i < sizeof(chunk); i += 1024) {
    memset(chunk + i, 'x', 1023);
    memcpy(chunk + i, "flood ", 6);
    chunk[i + 1023] = '\n';
  }
  for (long i = 0; i < mib * 16; i++) {
    size_t off = 0;
    while (off < sizeof(chunk)) {
      ssize_t w = write(STDOUT_FILENO, chunk + off, sizeof(chunk) - off);
      if (w <= 0)
        return NULL;
      off += (size_t)w;
    }
  }
  fprintf(stderr, "flood done\n");
  return NULL;
}

/* "N\n": flood N MiB from a thread; answers "started\n" at once. */
static void flood_data(aio_conn_t *c, const char *data, size_t len) {
  char num[32];
  snprintf(num, sizeof(num), "%.*s", (int)(len < 31 ? len : 31), data);
  long mib = strtol(num, NULL, 10);
  pthread_t t;
  if (mib < 1 || mib > 1024 ||
      pthread_create(&t, NULL, flood_thread, (void *)(intptr_t)mib) != 0)
    return;
  pthread_detach(t);
  aio_write(c, "started\n", 8);
}
AIO_PROTOCOL(flood, .data_received = flood_data);

AIO_MODULE(.name = "outmod", .description = "captured output fixtures",
           .init = outmod_init);
