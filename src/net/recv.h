/*
 * recv.h: the cosocket's receive patterns, matched against what a
 * connection has buffered, in plain C (no Lua): a line (up to LF, a CR
 * before it dropped), a byte count, everything until the peer closes, or
 * the bytes before a delimiter. src/lua/mod_socket.c (receive,
 * receiveuntil) sets the pattern, matches after each arrival, and pushes
 * what was found. Public names: net_recv_*.
 */
#ifndef MW_RECV_H
#define MW_RECV_H

#include <stddef.h>

#include "conn.h"

/* NET_RECV_REPLY waits as NET_RECV_LINE does (a line, or the end) but
 * never ends: its result is everything buffered, with `used` 0 (the
 * caller, moonwait.redis's reply fast path, sets what it took), and at
 * the end the next receive finds the end again (EOF and errors stay). */
enum { NET_RECV_LINE, NET_RECV_ALL, NET_RECV_COUNT, NET_RECV_UNTIL, NET_RECV_REPLY };

/* What net_recv_match found. */
enum {
    NET_RECV_MORE = 0,   /* not yet: wait for more bytes */
    NET_RECV_DATA,       /* the pattern's result */
    NET_RECV_END         /* nothing more will come (EOF, a read error) and the
                          * pattern is not met: the result is the partial data */
};

typedef struct net_recv {
    /* the pattern, set by the caller */
    int kind;            /* NET_RECV_LINE .. NET_RECV_REPLY */
    size_t want;         /* COUNT: the byte count */
    const char *delim;   /* UNTIL: the delimiter (the caller's, kept alive while receiving) */
    size_t dlen;
    /* the last match's result */
    const char *data;    /* in the connection's buffer: copy it before consuming */
    size_t len;
    size_t used;         /* bytes to consume once the result is copied */
    const char *err;     /* NET_RECV_END: why ("closed", "connection reset", a TLS reason) */
} net_recv;

/* "*l" or "*L" (a line) or "*a" (everything) into p->kind. 0, or -1 for
 * any other pattern string. */
int net_recv_pattern(net_recv *p, const char *s, size_t n);

/* Everything c has buffered as the result (partial data). */
void net_recv_rest(net_recv *p, const net_conn *c);

/* Match p against c's buffered bytes; NET_RECV_MORE, _DATA or _END with
 * p->data, len, used and err set. Consumes nothing. */
int net_recv_match(net_recv *p, const net_conn *c);

#endif
