/* conn.c: a TCP (+TLS) connection on libuv (contract in conn.h). */
#define _GNU_SOURCE
#include "conn.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tls.h"

#define CIPHER_CHUNK (64 * 1024)

typedef struct wchunk {
    uv_write_t req;
    net_conn *c;
    size_t len;
    char data[];
} wchunk;

static void free_conn(net_conn *c)
{
    free(c->rbuf);
    free(c->cbuf);
    free(c->pool_key);
    if (c->ssl)
        SSL_free(c->ssl);
    free(c);
}

static void handle_closed(uv_handle_t *h)
{
    net_conn *c = h->data;
    if (--c->handles == 0)
        free_conn(c);
}

net_conn *net_conn_new(uv_loop_t *loop, size_t max_buffer)
{
    net_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = loop;
    c->max_buffer = max_buffer;
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->timer);
    c->tcp.data = c->timer.data = c->creq.data = c;
    c->handles = 2;
    return c;
}

void net_conn_close(net_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->on_read = NULL;
    c->wcb = NULL;
    c->ccb = NULL;
    c->hcb = NULL;
    uv_close((uv_handle_t *)&c->tcp, handle_closed);
    uv_close((uv_handle_t *)&c->timer, handle_closed);
}

const char *net_strerror(int e)
{
    switch (e) {
    case UV_ECONNREFUSED: return "connection refused";
    case UV_ECONNRESET: return "connection reset";
    case UV_EOF:
    case UV_EPIPE:
    case UV_ECANCELED: return "closed";
    case UV_ETIMEDOUT: return "timeout";
    case UV_ENOBUFS: return "buffer too large";
    case UV_EHOSTUNREACH: return "host unreachable";
    case UV_ENETUNREACH: return "network unreachable";
    case UV_EADDRNOTAVAIL: return "address not available";
    case UV_EAI_NONAME:
    case UV_EAI_NODATA: return "host not found";
    case UV_EAI_AGAIN:
    case UV_EAI_FAIL: return "no resolver";
    case UV_EPROTO: return "ssl handshake failed";
    default: return uv_strerror(e);
    }
}

const char *net_conn_error(const net_conn *c)
{
    if (c->rerr == UV_EPROTO && c->tls_err[0])
        return c->tls_err;
    return c->rerr ? net_strerror(c->rerr) : "closed";
}

const char *net_conn_tls_failure(const net_conn *c, char *buf, size_t len)
{
    if (strncmp(c->tls_err, "certificate verify failed", 25) == 0)
        snprintf(buf, len, "%s", c->tls_err);
    else
        snprintf(buf, len, "ssl handshake failed: %s", c->tls_err);
    return buf;
}

/* ---- connect ------------------------------------------------------------ */

static void connected(uv_connect_t *req, int status)
{
    net_conn *c = req->data;
    net_cb cb = c->ccb;
    c->ccb = NULL;
    if (c->closing)
        return;
    if (status == 0) {
        c->connected = 1;
        uv_tcp_nodelay(&c->tcp, 1);
    }
    if (cb)
        cb(c, status, c->cud);
}

int net_conn_connect(net_conn *c, const struct sockaddr *addr, net_cb cb, void *ud)
{
    c->ccb = cb;
    c->cud = ud;
    int rc = uv_tcp_connect(&c->creq, &c->tcp, addr, connected);
    if (rc != 0)
        c->ccb = NULL;
    return rc;
}

/* ---- write ---------------------------------------------------------------- */

static void chunk_written(uv_write_t *req, int status)
{
    wchunk *w = req->data;
    net_conn *c = w->c;
    free(w);
    if (c->closing)
        return;
    if (status < 0 && !c->werr)
        c->werr = status;
    if (c->wpending > 0 && --c->wpending == 0 && c->wcb) {
        net_cb cb = c->wcb;
        c->wcb = NULL;
        int err = c->werr;
        c->werr = 0;
        cb(c, err, c->wud);
    }
}

static int send_raw(net_conn *c, const char *data, size_t len)
{
    /* Try the kernel first: a request usually fits in the socket buffer,
     * and uv_try_write neither copies nor touches the epoll interest set
     * (a queued uv_write costs an epoll_ctl per write). */
    if (c->wpending == 0) {
        uv_buf_t b0 = uv_buf_init((char *)data, (unsigned)len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b0, 1);
        if (n >= 0 && (size_t)n == len)
            return 0;
        if (n < 0 && n != UV_EAGAIN)
            return n;
        if (n > 0) {
            data += n;
            len -= (size_t)n;
        }
    }
    wchunk *w = malloc(sizeof *w + len);
    if (!w)
        return UV_ENOMEM;
    w->c = c;
    w->len = len;
    w->req.data = w;
    memcpy(w->data, data, len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, chunk_written);
    if (rc != 0) {
        free(w);
        return rc;
    }
    /* Every queued chunk, ours or a TLS flight, holds later writes back,
     * so bytes stay in order; the caller's cb runs when the queue is
     * empty. */
    c->wpending++;
    return 0;
}

/* Send whatever OpenSSL has produced. */
static int flush_tls(net_conn *c)
{
    BIO *wbio = SSL_get_wbio(c->ssl);
    char buf[16 * 1024];
    int n;
    while ((n = BIO_read(wbio, buf, sizeof buf)) > 0) {
        int rc = send_raw(c, buf, (size_t)n);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int net_conn_write(net_conn *c, const char *data, size_t len, net_cb cb, void *ud)
{
    if (c->closing)
        return UV_ECANCELED;
    c->wcb = cb;
    c->wud = ud;
    c->werr = 0;
    int rc;
    if (c->ssl) {
        rc = 0;
        if (len > 0 && SSL_write(c->ssl, data, (int)len) <= 0) {
            tls_last_error(c->tls_err, sizeof c->tls_err);
            rc = UV_EPROTO;
        }
        if (rc == 0)
            rc = flush_tls(c);
    } else {
        rc = len ? send_raw(c, data, len) : 0;
    }
    if (rc != 0 || c->wpending == 0) {
        c->wcb = NULL;
        if (rc == 0 && cb)
            cb(c, 0, ud); /* nothing to send */
    }
    return rc;
}

/* ---- read ------------------------------------------------------------------- */

/* Room for at least `want` more bytes after rend, within max_buffer. */
static char *room(net_conn *c, size_t want, size_t *got)
{
    if (c->rstart > 0 && c->rstart == c->rend)
        c->rstart = c->rend = 0;
    size_t held = c->rend - c->rstart;
    if (held >= c->max_buffer) {
        *got = 0;
        return NULL;
    }
    if (c->rcap - c->rend < want && c->rstart > 0) {
        memmove(c->rbuf, c->rbuf + c->rstart, held);
        c->rstart = 0;
        c->rend = held;
    }
    if (c->rcap - c->rend < want) {
        size_t cap = c->rcap ? c->rcap : 16 * 1024;
        while (cap - c->rend < want)
            cap *= 2;
        char *b = realloc(c->rbuf, cap);
        if (!b) {
            *got = 0;
            return NULL;
        }
        c->rbuf = b;
        c->rcap = cap;
    }
    size_t limit = c->max_buffer - held;
    *got = c->rcap - c->rend < limit ? c->rcap - c->rend : limit;
    return c->rbuf + c->rend;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    net_conn *c = h->data;
    (void)suggested;
    if (c->ssl) {
        if (!c->cbuf)
            c->cbuf = malloc(CIPHER_CHUNK);
        *buf = uv_buf_init(c->cbuf, c->cbuf ? CIPHER_CHUNK : 0);
        return;
    }
    size_t got;
    char *p = room(c, 16 * 1024, &got);
    *buf = uv_buf_init(p, (unsigned)got);
}

static void notify(net_conn *c)
{
    if (c->on_read)
        c->on_read(c, c->read_ud);
}

static void handshake_step(net_conn *c);

/* Move decrypted bytes into rbuf. */
static void tls_drain(net_conn *c)
{
    for (;;) {
        size_t got;
        char *p = room(c, 16 * 1024, &got);
        if (!p || got == 0) {
            c->rerr = UV_ENOBUFS;
            return;
        }
        int n = SSL_read(c->ssl, p, (int)got);
        if (n > 0) {
            c->rend += (size_t)n;
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ)
            return;
        if (e == SSL_ERROR_ZERO_RETURN) {
            c->eof = 1;
            return;
        }
        tls_last_error(c->tls_err, sizeof c->tls_err);
        c->rerr = UV_EPROTO;
        return;
    }
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    net_conn *c = s->data;
    if (c->closing)
        return;
    if (n == 0)
        return;
    if (n == UV_ENOBUFS || (n > 0 && !c->ssl && buf->base == NULL)) {
        uv_read_stop(s);
        c->reading = 0;
        /* Detached (nobody waits for a pattern): the buffer is full, so
         * stop reading until a consumer takes bytes and starts again; the
         * peer is held back by TCP. Only a consumer whose pattern cannot
         * fit gets "buffer too large". */
        if (!c->on_read)
            return;
        c->rerr = UV_ENOBUFS;
        notify(c);
        return;
    }
    if (n < 0) {
        if (n == UV_EOF)
            c->eof = 1;
        else
            c->rerr = (int)n;
        uv_read_stop(s);
        c->reading = 0;
        if (c->hcb) {
            net_cb cb = c->hcb;
            c->hcb = NULL;
            snprintf(c->tls_err, sizeof c->tls_err, "the peer closed the connection during the handshake");
            cb(c, UV_EPROTO, c->hud);
            return;
        }
        notify(c);
        return;
    }
    if (!c->ssl) {
        c->rend += (size_t)n;
        notify(c);
        return;
    }
    BIO_write(SSL_get_rbio(c->ssl), buf->base, (int)n);
    if (!c->tls_ready) {
        handshake_step(c);
        return;
    }
    tls_drain(c);
    flush_tls(c); /* e.g. key updates */
    if (c->rerr) {
        uv_read_stop(s);
        c->reading = 0;
    }
    notify(c);
}

int net_conn_read_start(net_conn *c, net_read_cb on_read, void *ud)
{
    c->on_read = on_read;
    c->read_ud = ud;
    if (c->reading || c->eof || c->rerr || c->closing)
        return 0;
    int rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    if (rc == 0)
        c->reading = 1;
    return rc;
}

void net_conn_read_stop(net_conn *c)
{
    c->on_read = NULL;
    /* During a TLS handshake the conn keeps reading for itself. */
    if (c->reading && !c->hcb) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

void net_conn_read_detach(net_conn *c)
{
    c->on_read = NULL;
}

void net_conn_consume(net_conn *c, size_t n)
{
    c->rstart += n;
    if (c->rstart >= c->rend)
        c->rstart = c->rend = 0;
}

/* ---- TLS handshake ----------------------------------------------------------- */

static void handshake_done(net_conn *c, int status)
{
    net_cb cb = c->hcb;
    c->hcb = NULL;
    if (!c->on_read && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
    if (cb)
        cb(c, status, c->hud);
}

static void handshake_step(net_conn *c)
{
    int r = SSL_do_handshake(c->ssl);
    if (flush_tls(c) != 0) {
        snprintf(c->tls_err, sizeof c->tls_err, "write failed during the handshake");
        handshake_done(c, UV_EPROTO);
        return;
    }
    if (r == 1) {
        c->tls_ready = 1;
        tls_drain(c); /* data that came with the last handshake flight */
        handshake_done(c, 0);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return;
    long vr = SSL_get_verify_result(c->ssl);
    if (vr != X509_V_OK)
        snprintf(c->tls_err, sizeof c->tls_err, "certificate verify failed: %s",
                 X509_verify_cert_error_string(vr));
    else
        tls_last_error(c->tls_err, sizeof c->tls_err);
    handshake_done(c, UV_EPROTO);
}

int net_conn_tls_start(net_conn *c, SSL_CTX *ctx, const char *sni, int verify, net_cb cb, void *ud)
{
    c->ssl = SSL_new(ctx);
    if (!c->ssl) {
        tls_last_error(c->tls_err, sizeof c->tls_err);
        return UV_EPROTO;
    }
    SSL_set_bio(c->ssl, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
    SSL_set_connect_state(c->ssl);
    struct in6_addr tmp;
    int is_ip = sni && (inet_pton(AF_INET, sni, &tmp) == 1 || inet_pton(AF_INET6, sni, &tmp) == 1);
    if (sni && !is_ip)
        SSL_set_tlsext_host_name(c->ssl, sni);
    if (verify) {
        SSL_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
        if (sni) {
            X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
            if (is_ip)
                X509_VERIFY_PARAM_set1_ip_asc(param, sni);
            else
                SSL_set1_host(c->ssl, sni);
        }
    } else {
        SSL_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
    }
    c->hcb = cb;
    c->hud = ud;
    if (!c->reading) {
        int rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
        if (rc != 0) {
            c->hcb = NULL;
            return rc;
        }
        c->reading = 1;
    }
    handshake_step(c);
    return 0;
}
