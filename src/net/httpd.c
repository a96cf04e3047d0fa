/*
 * httpd.c: the metrics endpoint's HTTP/1.1 server (contract in httpd.h).
 *
 * A connection owns its TCP handle, its timer, its input buffer (bytes
 * read but not yet parsed: what follows a request while its response is
 * written) and its response bytes; all are freed when both handles have
 * closed. The server owns the listener and the list of connections, and
 * is freed when the listener and the last connection have closed.
 */
#include "httpd.h"

#include <llhttp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct conn conn;

struct httpd {
    uv_loop_t *loop;
    uv_tcp_t listener;
    httpd_handler handler;
    void *ud;
    conn *conns;              /* open connections (doubly linked) */
    size_t nconns;
    int closing;
    int listener_open;        /* until its close callback */
    mw_buf body;              /* the handler's body, reused */
    void (*closed)(void *ud);
    void *closed_ud;
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    httpd *srv;
    conn *prev, *next;
    llhttp_t parser;
    char in[HTTPD_IN_BYTES];  /* read, not parsed yet */
    size_t in_len;
    size_t req_bytes;         /* this request's bytes so far: line, headers, body */
    int nheaders;
    char url[HTTPD_MAX_REQUEST + 1];
    size_t url_len;
    int refuse;               /* a cap was passed: 431 */
    int reading, writing, closing, open_handles;
    int close_after;          /* close once the response is written */
    mw_buf out;               /* the response being written */
    uv_write_t wr;
};

/* The parser's callbacks: filled once for the process (pthread_once: any
 * thread may start a server), only read after. */
static llhttp_settings_t settings;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

static void server_maybe_freed(httpd *s)
{
    if (!s->closing || s->listener_open || s->nconns)
        return;
    void (*closed)(void *) = s->closed;
    void *ud = s->closed_ud;
    free(s->body.p);
    free(s);
    if (closed)
        closed(ud);
}

/* ---- a connection's end --------------------------------------------------------- */

static void conn_handle_closed(uv_handle_t *h)
{
    conn *c = h->data;
    if (--c->open_handles)
        return;
    httpd *s = c->srv;
    free(c->out.p);
    free(c);
    s->nconns--;
    server_maybe_freed(s);
}

/* Close c (from any callback; nothing of c runs after this but the close
 * callbacks, and a pending write's, cancelled). */
static void conn_close(conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void on_timeout(uv_timer_t *t)
{
    conn_close(t->data);
}

/* ---- parsing ---------------------------------------------------------------- */

/* Count n more bytes of the request against the cap. */
static int charge(conn *c, size_t n)
{
    c->req_bytes += n;
    if (c->req_bytes > HTTPD_MAX_REQUEST) {
        c->refuse = 1;
        return -1;
    }
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    conn *c = p->data;
    c->req_bytes = c->url_len = 0;
    c->url[0] = 0;
    c->nheaders = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    conn *c = p->data;
    if (charge(c, n))
        return -1;
    memcpy(c->url + c->url_len, at, n); /* (url_len + n <= req_bytes <= the cap) */
    c->url_len += n;
    /* Ended here: the buffer still holds the connection's previous URL,
     * and a shorter one must not be read with that one's tail. */
    c->url[c->url_len] = 0;
    return 0;
}

static int on_bytes(llhttp_t *p, const char *at, size_t n)
{
    (void)at;
    return charge(p->data, n);
}

static int on_header_field_complete(llhttp_t *p)
{
    conn *c = p->data;
    if (++c->nheaders > HTTPD_MAX_HEADERS) {
        c->refuse = 1;
        return -1;
    }
    return 0;
}

/* A request is complete: stop here, answer it, then parse what follows. */
static int on_message_complete(llhttp_t *p)
{
    (void)p;
    return HPE_PAUSED;
}

/* ---- answering ------------------------------------------------------------ */

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return status < 300 ? "OK" : status < 500 ? "Bad Request" : "Internal Server Error";
    }
}

static void process(conn *c);

static void on_written(uv_write_t *w, int status)
{
    conn *c = w->data;
    c->writing = 0;
    c->out.len = 0;
    if (status < 0 || c->closing) {
        conn_close(c);
        return;
    }
    if (c->close_after) {
        conn_close(c);
        return;
    }
    /* The response is out: the next request has a fresh time limit. */
    uv_timer_start(&c->timer, on_timeout, HTTPD_TIMEOUT_MS, 0);
    process(c);
}

/* Write the response to the request just parsed (or the error `status`
 * for a request that is refused; the connection closes after it). */
static void respond(conn *c, int status)
{
    httpd *s = c->srv;
    int method = llhttp_get_method(&c->parser);
    int head = status == 0 && method == HTTP_HEAD;
    httpd_response res = { 200, "text/plain; charset=utf-8", &s->body };
    s->body.len = 0;
    int close = status != 0 || !llhttp_should_keep_alive(&c->parser);
    if (status) {
        res.status = status;
        mw_buf_add(&s->body, reason(status), strlen(reason(status)));
        mw_buf_add(&s->body, "\n", 1);
    } else if (method != HTTP_GET && method != HTTP_HEAD) {
        res.status = 405;
        mw_buf_add(&s->body, "Method Not Allowed\n", 19);
    } else {
        size_t n = strcspn(c->url, "?#");
        c->url[n] = 0;
        s->handler(s->ud, c->url, &res);
    }
    char hd[320];
    int hl = snprintf(hd, sizeof hd,
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n", res.status,
                      reason(res.status), res.content_type ? res.content_type : "text/plain", s->body.len,
                      res.status == 405 ? "Allow: GET, HEAD\r\n" : "", close ? "Connection: close\r\n" : "");
    c->out.len = 0;
    if (mw_buf_add(&c->out, hd, (size_t)hl) != 0 || (!head && mw_buf_add(&c->out, s->body.p, s->body.len) != 0)) {
        conn_close(c);
        return;
    }
    c->close_after = close;
    uv_buf_t b = uv_buf_init(c->out.p, (unsigned)c->out.len);
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        conn_close(c);
        return;
    }
    c->writing = 1;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)hint;
    conn *c = h->data;
    *b = uv_buf_init(c->in + c->in_len, (unsigned)(sizeof c->in - c->in_len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    conn *c = st->data;
    if (n < 0) {
        conn_close(c);
        return;
    }
    c->in_len += (size_t)n;
    process(c);
}

/* Parse what is buffered, one request at a time; read more only while no
 * response is being written and there is room. */
static void process(conn *c)
{
    if (!c->writing && !c->closing && c->in_len) {
        llhttp_errno_t e = llhttp_execute(&c->parser, c->in, c->in_len);
        if (e == HPE_OK) {
            c->in_len = 0;
        } else if (e == HPE_PAUSED) {
            size_t used = (size_t)(llhttp_get_error_pos(&c->parser) - c->in);
            memmove(c->in, c->in + used, c->in_len - used);
            c->in_len -= used;
            llhttp_resume(&c->parser);
            respond(c, 0);
        } else {
            respond(c, c->refuse ? 431 : 400);
        }
    }
    if (c->closing)
        return;
    int want = !c->writing && c->in_len < sizeof c->in;
    if (want && !c->reading)
        c->reading = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0;
    else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

/* ---- the listener ---------------------------------------------------------- */

static void refused_closed(uv_handle_t *h)
{
    free(h);
}

static void on_connection(uv_stream_t *l, int status)
{
    httpd *s = l->data;
    if (status < 0 || s->closing)
        return;
    if (s->nconns >= HTTPD_MAX_CONNS) {
        /* Past the cap: take it off the backlog and close it at once. */
        uv_tcp_t *t = malloc(sizeof *t);
        if (!t)
            return;
        uv_tcp_init(s->loop, t);
        uv_accept(l, (uv_stream_t *)t);
        uv_close((uv_handle_t *)t, refused_closed);
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    s->nconns++;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    uv_unref((uv_handle_t *)&c->tcp);
    uv_unref((uv_handle_t *)&c->timer);
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    uv_timer_start(&c->timer, on_timeout, HTTPD_TIMEOUT_MS, 0);
    process(c);
}

static void listener_closed(uv_handle_t *h)
{
    httpd *s = h->data;
    s->listener_open = 0;
    server_maybe_freed(s);
}

static void settings_init(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_header_field = on_bytes;
    settings.on_header_value = on_bytes;
    settings.on_body = on_bytes;
    settings.on_header_field_complete = on_header_field_complete;
    settings.on_message_complete = on_message_complete;
}

int httpd_start(httpd **out, uv_loop_t *loop, const char *host, int port, httpd_handler h, void *ud,
                int *bound_port)
{
    struct sockaddr_storage sa;
    *out = NULL;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&sa) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&sa) != 0)
        return UV_EINVAL;
    pthread_once(&settings_once, settings_init);
    httpd *s = calloc(1, sizeof *s);
    if (!s)
        return UV_ENOMEM;
    s->loop = loop;
    s->handler = h;
    s->ud = ud;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    s->listener_open = 1;
    int rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, 64, on_connection);
    if (rc == 0) {
        struct sockaddr_storage got;
        int len = sizeof got;
        rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len);
        if (rc == 0 && bound_port)
            *bound_port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                                          : ((struct sockaddr_in *)&got)->sin_port);
    }
    if (rc != 0) {
        httpd_close(s, NULL, NULL);
        return rc;
    }
    uv_unref((uv_handle_t *)&s->listener);
    *out = s;
    return 0;
}

void httpd_close(httpd *s, void (*closed)(void *ud), void *ud)
{
    if (!s || s->closing)
        return;
    s->closing = 1;
    s->closed = closed;
    s->closed_ud = ud;
    while (s->conns)
        conn_close(s->conns);
    uv_close((uv_handle_t *)&s->listener, listener_closed);
}

size_t httpd_connections(const httpd *s)
{
    return s ? s->nconns : 0;
}
