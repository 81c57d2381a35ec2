/*
 * proctitle.h - what `ps` and `top` show for an aio process
 * ("aio: master (generation 3) /etc/aio.conf", "aio: worker 1 (generation
 * 3)"), as nginx and PostgreSQL do: the title is written over the memory
 * of argv (and of the environment, moved out of the way first), and the
 * thread name (comm, 15 bytes) is set with prctl.
 */
#ifndef AIO_COMMON_PROCTITLE_H
#define AIO_COMMON_PROCTITLE_H

/* Once, in main, before anything reads environ through a saved pointer:
 * copies the environment to the heap so its memory can hold the title. */
void proctitle_init(int argc, char **argv);
/* Sets the title (cut to what fits). A no-op before proctitle_init. */
void proctitle_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
