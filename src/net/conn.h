/*
 * conn.h: one TCP connection, optionally TLS, for the cosocket, the HTTP
 * client and the pool. No Lua here: the Lua modules (src/lua/mod_socket.c,
 * mod_http.c) drive it and park their fibers on its callbacks.
 *
 * Reading: plaintext accumulates in rbuf[rstart, rend) while reading is on
 * (TLS is decrypted on arrival); the consumer inspects it from its on_read
 * callback and calls net_conn_consume(). At most max_buffer bytes are held:
 * beyond that reading stops with UV_ENOBUFS ("buffer too large").
 * Writing: net_conn_write copies the data (TLS: encrypts it) so the caller's
 * buffer is free at once; cb runs when the kernel has taken all of it.
 *
 * Lifetime: created by net_conn_new, owned by whoever holds it (a socket, an
 * HTTP request, or the pool). net_conn_close() may be called at any time,
 * including from a callback; no callback runs after it, and the memory is
 * freed when libuv has closed the handles.
 */
#ifndef MW_CONN_H
#define MW_CONN_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct net_conn net_conn;
typedef void (*net_cb)(net_conn *c, int status, void *ud);
typedef void (*net_read_cb)(net_conn *c, void *ud);

struct net_conn {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    uv_timer_t timer;        /* the pool's idle timer */
    uv_connect_t creq;
    int handles;             /* open handles; freed when 0 after close */
    int closing;
    int connected;
    /* read side */
    char *rbuf;              /* owned */
    size_t rcap, rstart, rend, max_buffer;
    int eof;
    int rerr;                /* sticky read error (uv code) */
    int reading;
    net_read_cb on_read;
    void *read_ud;
    /* the caller's write in flight */
    net_cb wcb;
    void *wud;
    int wpending;            /* uv writes still queued (ours and TLS's) */
    int werr;
    /* connect */
    net_cb ccb;
    void *cud;
    /* TLS */
    SSL *ssl;                /* owned; NULL for plain TCP */
    int tls_ready;
    net_cb hcb;
    void *hud;
    char *cbuf;              /* ciphertext read buffer (owned) */
    char tls_err[256];
    /* pool bookkeeping (pool.c) */
    char *pool_key;          /* owned */
    net_conn *pool_next;
    uint64_t reuses;
    uint64_t idle_deadline;  /* uv_now when it has been idle too long; 0: never */
    void *pool;
};

net_conn *net_conn_new(uv_loop_t *loop, size_t max_buffer);

/* Connect; cb(c, 0 or uv error). */
int net_conn_connect(net_conn *c, const struct sockaddr *addr, net_cb cb, void *ud);

/* Start a TLS client handshake on a connected conn. sni may be NULL.
 * verify: check the chain against ctx's CAs and the name (or IP) against
 * sni. cb(c, 0) or cb(c, UV_EPROTO) with the reason in c->tls_err. */
int net_conn_tls_start(net_conn *c, SSL_CTX *ctx, const char *sni, int verify, net_cb cb, void *ud);

/* Send len bytes (copied). One write at a time per conn. */
int net_conn_write(net_conn *c, const char *data, size_t len, net_cb cb, void *ud);

/* Deliver arrivals to on_read until net_conn_read_stop. */
int net_conn_read_start(net_conn *c, net_read_cb on_read, void *ud);
void net_conn_read_stop(net_conn *c);

/* Stop delivering to on_read but keep reading into the buffer (bounded by
 * max_buffer; a plaintext connection whose buffer fills stops reading
 * without an error until the next net_conn_read_start): for handing a
 * connection between owners (request, pool) and between a cosocket's
 * receives without an epoll_ctl each way. */
void net_conn_read_detach(net_conn *c);

/* Bytes buffered and not consumed. */
static inline size_t net_conn_buffered(const net_conn *c) { return c->rend - c->rstart; }
static inline const char *net_conn_data(const net_conn *c) { return c->rbuf ? c->rbuf + c->rstart : ""; }
void net_conn_consume(net_conn *c, size_t n);

void net_conn_close(net_conn *c);

/* Why reading ended, as a fixed string: the TLS reason for a TLS error,
 * net_strerror(rerr) for another, "closed" at EOF. */
const char *net_conn_error(const net_conn *c);

/* A failed handshake's message, written into buf (len bytes) and
 * returned: "certificate verify failed: <why>" as it is, any other
 * "ssl handshake failed: <why>". */
const char *net_conn_tls_failure(const net_conn *c, char *buf, size_t len);

/* The fixed error strings scripts see ("connection refused", "closed",
 * "timeout", "buffer too large", ...) for a uv error code. */
const char *net_strerror(int uv_err);

#endif
