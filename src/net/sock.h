/*
 * sock.h: the cosocket's connection and its operations, in plain C (no
 * Lua): connect (an idle pooled connection, or dial.c), the TLS
 * handshake, send, receive by pattern (recv.c), keep-alive into the pool.
 * One operation at a time, ending in one callback. src/lua/mod_socket.c
 * is its Lua binding: it checks arguments, parks the calling fiber while
 * an operation runs (its timer bounds it: net_sock_timeout), and pushes
 * the results. Public names: net_sock_*.
 *
 * Errors close the connection (a failed connection is never reused),
 * except a receive's timeout: the socket stays usable. They are the fixed
 * words of net_strerror() and the TLS reasons; the binding adds where
 * (host and port, below) when it hands them to Lua.
 *
 * Ownership: the net_sock is its holder's (embedded in the Lua userdata);
 * it owns its connection (until pooled), the strings below and its dial.
 * net_sock_free releases them.
 */
#ifndef MW_SOCK_H
#define MW_SOCK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "conn.h"
#include "dial.h"
#include "recv.h"

enum { NET_SOCK_IDLE, NET_SOCK_CONNECT, NET_SOCK_HANDSHAKE, NET_SOCK_SEND, NET_SOCK_RECV };

typedef struct net_sock net_sock;

/* The end of operation op (NET_SOCK_*), once: err NULL, or the fixed
 * error string (valid during the call). A receive's result (on an error:
 * the partial data) is s->rx.data, rx.len, valid during the call. The
 * callback must not free s. */
typedef void (*net_sock_cb)(net_sock *s, int op, const char *err);

struct net_sock {
    net_conn *conn;       /* owned; NULL when closed */
    size_t max_buffer;    /* the most a connection buffers unread */
    char *ca_file;        /* owned: CAs for TLS, or NULL (the system's) */
    char *host;           /* owned: the last connect's host (the default SNI) */
    int port;             /* the last connect's port (host:port names errors) */
    char *pool_key;       /* owned: "host:port" or the caller's pool name */
    size_t pool_size;     /* idle connections kept for pool_key */
    net_dial dial;        /* connects into conn */
    net_recv rx;          /* the receive's pattern and result */
    int op;               /* NET_SOCK_*: the operation in progress */
    net_sock_cb cb;
};

void net_sock_init(net_sock *s, size_t max_buffer, size_t pool_size, net_sock_cb cb);

/* Aim s at host:port: close its connection, keep host, port, the pool key
 * (pool, or "host:port" when NULL) and pool_size (unless 0). 1 if an idle
 * pooled connection was taken (connected at once: no operation needed). */
int net_sock_target(net_sock *s, const char *host, int port, const char *pool, size_t pool_size);

/* Start an operation. 0: the callback comes (maybe before this returns);
 * else a negative uv error and nothing started (the caller aborts). */
int net_sock_connect(net_sock *s, uv_loop_t *loop, const char *host, int port);
int net_sock_handshake(net_sock *s, SSL_CTX *ctx, const char *sni, int verify);
int net_sock_send(net_sock *s, const char *data, size_t len); /* data copied */
/* s->rx holds the pattern; net_recv_match found NET_RECV_MORE. */
int net_sock_receive(net_sock *s);

/* A receive's result was copied: consume it (m: what net_recv_match
 * said); NET_RECV_END also closes the connection. */
void net_sock_taken(net_sock *s, int m);

/* The operation's time is up: it ends through the callback with
 * "timeout". A receive keeps the connection (the partial data is what
 * was buffered); the others close it. */
void net_sock_timeout(net_sock *s);

/* Stop the operation without a callback and close the connection (a
 * record abandoned, an operation that could not start). */
void net_sock_abort(net_sock *s);

/* Hand the connection to the pool under pool_key. NULL, or why not
 * ("closed", "unread data"; the connection is closed then). */
const char *net_sock_keepalive(net_sock *s, uint64_t idle_ms, size_t size);

void net_sock_set_max_buffer(net_sock *s, size_t n);
void net_sock_set_ca_file(net_sock *s, const char *path);   /* copied */

void net_sock_close(net_sock *s);

/* Abort, close, free the strings (the holder's __gc). */
void net_sock_free(net_sock *s);

#endif
