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
/* Before the first socket of an address is bound: is somebody else there?
 * 0, or -EADDRINUSE with msg saying so. */
int sockets_probe(const struct server_conf *sc, int port, char *msg,
                  size_t msglen);
/* Does fd (a bound socket) still serve the address sc names? */
int sockets_same_address(const struct server_conf *a,
                         const struct server_conf *b);
/* net.ipv4.tcp_migrate_req: 1 when closing one SO_REUSEPORT listener hands
 * its queued connections to the others of the group instead of resetting
 * them (Linux 5.14+); 0, or -1 when the kernel does not have it. */
int sockets_migrate_req(void);
/* A printable address "127.0.0.1:8080", "[::1]:80" or "unix:/path". */
void sockets_describe(const struct server_conf *sc, int port, char *out,
                      size_t n);

#endif
