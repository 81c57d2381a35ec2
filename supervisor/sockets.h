/* sockets.h - the master's listening sockets: one SO_REUSEPORT socket per
 * [server:NAME] and worker slot (one shared socket for a unix path), bound
 * before any worker exists so a bad address fails the start cleanly. */
#ifndef AIO_SUPERVISOR_SOCKETS_H
#define AIO_SUPERVISOR_SOCKETS_H

#include "settings.h"

/* Bind the socket for server sc and one slot. *port is the port to use (0
 * picks one, written back so every slot binds the same). Returns the fd or
 * a negative errno; msg gets a description of what failed. */
int sockets_bind(const struct server_conf *sc, int *port, char *msg,
                 size_t msglen);
/* Does fd (a bound socket) still serve the address sc names? */
int sockets_same_address(const struct server_conf *a,
                         const struct server_conf *b);
/* A printable address "127.0.0.1:8080", "[::1]:80" or "unix:/path". */
void sockets_describe(const struct server_conf *sc, int port, char *out,
                      size_t n);

#endif
