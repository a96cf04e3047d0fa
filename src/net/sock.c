/* sock.c: the cosocket's connection and operations (contract in sock.h). */
#define _GNU_SOURCE
#include "sock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"

void net_sock_init(net_sock *s, size_t max_buffer, size_t pool_size, net_sock_cb cb)
{
    memset(s, 0, sizeof *s);
    s->max_buffer = max_buffer;
    s->pool_size = pool_size;
    s->cb = cb;
}

void net_sock_close(net_sock *s)
{
    if (s->conn) {
        net_conn_close(s->conn);
        s->conn = NULL;
    }
}

/* The operation ends: tell the holder. */
static void end_op(net_sock *s, const char *err)
{
    int op = s->op;
    s->op = NET_SOCK_IDLE;
    s->cb(s, op, err);
}

/* ---- the operations ----------------------------------------------------------- */

int net_sock_target(net_sock *s, const char *host, int port, const char *pool, size_t pool_size)
{
    net_sock_close(s);
    /* (a socket aimed again at the same host and pool -- moonwait.redis
     * reuses its cosockets -- keeps its copies) */
    if (!s->host || strcmp(s->host, host) != 0) {
        free(s->host);
        s->host = strdup(host);
    }
    s->port = port;
    if (!pool || !s->pool_key || strcmp(s->pool_key, pool) != 0) {
        free(s->pool_key);
        if (pool)
            s->pool_key = strdup(pool);
        else if (asprintf(&s->pool_key, "%s:%d", host, port) < 0)
            s->pool_key = NULL;
    }
    if (pool_size)
        s->pool_size = pool_size;
    net_conn *c = s->pool_key ? net_pool_get(s->pool_key) : NULL;
    if (!c)
        return 0;
    c->max_buffer = s->max_buffer; /* this socket's, not its last user's */
    s->conn = c;
    return 1;
}

static void on_dialed(void *ud, const char *err)
{
    net_sock *s = ud;
    if (s->op == NET_SOCK_CONNECT)
        end_op(s, err);
}

int net_sock_connect(net_sock *s, uv_loop_t *loop, const char *host, int port)
{
    s->op = NET_SOCK_CONNECT;
    net_dial_init(&s->dial, loop, &s->conn, s->max_buffer, on_dialed, s);
    int rc = net_dial_start(&s->dial, host, port, 0);
    if (rc < 0)
        s->op = NET_SOCK_IDLE;
    return rc;
}

static void on_handshake(net_conn *c, int status, void *ud)
{
    net_sock *s = ud;
    if (s->op != NET_SOCK_HANDSHAKE)
        return;
    if (status != 0) {
        char msg[320];
        net_conn_tls_failure(c, msg, sizeof msg);
        net_sock_close(s);
        end_op(s, msg);
        return;
    }
    end_op(s, NULL);
}

int net_sock_handshake(net_sock *s, SSL_CTX *ctx, const char *sni, int verify)
{
    s->op = NET_SOCK_HANDSHAKE;
    int rc = net_conn_tls_start(s->conn, ctx, sni, verify, on_handshake, s);
    if (rc != 0)
        s->op = NET_SOCK_IDLE;
    return rc;
}

static void on_sent(net_conn *c, int status, void *ud)
{
    net_sock *s = ud;
    (void)c;
    if (s->op != NET_SOCK_SEND)
        return;
    if (status != 0) {
        net_sock_close(s);
        end_op(s, net_strerror(status));
        return;
    }
    end_op(s, NULL);
}

int net_sock_send(net_sock *s, const char *data, size_t len)
{
    s->op = NET_SOCK_SEND;
    int rc = net_conn_write(s->conn, data, len, on_sent, s);
    if (rc != 0)
        s->op = NET_SOCK_IDLE;
    return rc;
}

static void on_readable(net_conn *c, void *ud)
{
    net_sock *s = ud;
    (void)c;
    if (s->op != NET_SOCK_RECV)
        return;
    int m = net_recv_match(&s->rx, s->conn);
    if (m == NET_RECV_MORE)
        return;
    /* Plaintext keeps reading between receives (uv_read_stop and the next
     * uv_read_start cost two epoll_ctl calls per reply); TLS stops, since
     * its decrypted bytes could not be held back once the buffer is full. */
    if (s->conn->ssl)
        net_conn_read_stop(s->conn);
    else
        net_conn_read_detach(s->conn);
    end_op(s, m == NET_RECV_END ? s->rx.err : NULL);
    net_sock_taken(s, m);
}

int net_sock_receive(net_sock *s)
{
    s->op = NET_SOCK_RECV;
    int rc = net_conn_read_start(s->conn, on_readable, s);
    if (rc != 0)
        s->op = NET_SOCK_IDLE;
    return rc;
}

void net_sock_taken(net_sock *s, int m)
{
    net_conn_consume(s->conn, s->rx.used);
    if (m == NET_RECV_END)
        net_sock_close(s);
}

void net_sock_timeout(net_sock *s)
{
    if (s->op == NET_SOCK_RECV) {
        /* A read timeout leaves the socket usable; what came is partial. */
        net_conn_read_stop(s->conn);
        net_recv_rest(&s->rx, s->conn);
        end_op(s, "timeout");
        net_conn_consume(s->conn, s->rx.used);
        return;
    }
    net_dial_cancel(&s->dial);
    net_sock_close(s);
    end_op(s, "timeout");
}

void net_sock_abort(net_sock *s)
{
    s->op = NET_SOCK_IDLE;
    net_dial_cancel(&s->dial);
    net_sock_close(s);
}

/* ---- the rest ----------------------------------------------------------------------- */

const char *net_sock_keepalive(net_sock *s, uint64_t idle_ms, size_t size)
{
    net_conn *c = s->conn;
    if (c->eof || c->rerr) {
        net_sock_close(s);
        return "closed";
    }
    if (net_conn_buffered(c)) {
        net_sock_close(s);
        return "unread data";
    }
    s->conn = NULL;
    net_pool_put(c, s->pool_key, idle_ms, size);
    return NULL;
}

void net_sock_set_max_buffer(net_sock *s, size_t n)
{
    s->max_buffer = s->dial.max_buffer = n;
    if (s->conn)
        s->conn->max_buffer = n;
}

void net_sock_set_ca_file(net_sock *s, const char *path)
{
    free(s->ca_file);
    s->ca_file = strdup(path);
}

void net_sock_free(net_sock *s)
{
    net_sock_abort(s);
    free(s->ca_file);
    free(s->host);
    free(s->pool_key);
    s->ca_file = s->host = s->pool_key = NULL;
}
