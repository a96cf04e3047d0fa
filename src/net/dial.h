/*
 * dial.h: connect to host:port, trying the addresses of the name in turn
 * (the next one when an address refuses or cannot be reached). Names are
 * resolved by dns.c, without blocking the loop. No Lua here: the HTTP
 * client (http.c) and the cosocket (src/lua/mod_socket.c) dial with it.
 *
 * Ownership: the connection is always the holder's. The dial creates each
 * attempt in the holder's pointer *slot (so the holder sees a connection
 * in progress, and closes it itself to give up), and when an attempt
 * fails it closes it and sets *slot to NULL. The dial owns only its DNS
 * query and the addresses it tries, released when the answer comes (the
 * query), when the dial ends (the addresses) or by net_dial_cancel, which
 * a holder that gives up (or is freed) while dialing must call.
 */
#ifndef MW_DIAL_H
#define MW_DIAL_H

#include <stddef.h>
#include <uv.h>

#include "conn.h"
#include "dns.h"

/* The end of a dial: err NULL, *slot is connected; or the fixed error
 * string ("connection refused", "host not found", "out of memory", ...),
 * *slot is NULL. */
typedef void (*net_dial_cb)(void *ud, const char *err);

typedef struct net_dial {
    uv_loop_t *loop;
    net_conn **slot;      /* the holder's connection pointer */
    size_t max_buffer;    /* for the connections it creates; the holder may change it */
    net_dial_cb cb;
    void *ud;
    dns_query *dnsq;      /* while the name is being resolved */
    dns_result *addrs;    /* owned: the name's addresses, while dialing (1 KiB: not
                           * embedded, so a cosocket or request is small) */
    size_t ix;            /* the one being tried */
} net_dial;

/* Set up d for a holder; nothing starts. */
void net_dial_init(net_dial *d, uv_loop_t *loop, net_conn **slot, size_t max_buffer,
                   net_dial_cb cb, void *ud);

/* Resolve host and connect to port. Returns 0: cb runs exactly once, later
 * or before this returns. Returns a negative uv error when the name cannot
 * be resolved (nothing started, cb never runs); with cached_only, also
 * UV_EAGAIN when the name is not answered at once (numeric or cached). */
int net_dial_start(net_dial *d, const char *host, int port, int cached_only);

/* Stop resolving: cb never runs for a pending query. A connection attempt
 * in *slot is the holder's to close. */
void net_dial_cancel(net_dial *d);

#endif
