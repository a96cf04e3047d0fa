/*
 * faultpeer.c: a loopback TCP peer that misbehaves in the ways no real
 * server will on demand. Used by spec/http_spec.lua and spec/socket_spec.lua.
 *
 *   faultpeer MODE [ARGS]  listens on 127.0.0.1, an ephemeral port, printed
 *                      on stdout; serves every connection in MODE until killed.
 *
 * Modes (each waits for the end of the request headers first, except
 * close-at-once):
 *   garbage              a status line that is not HTTP
 *   reset-mid-body       headers promising 1000 bytes, 100 bytes, then RST
 *   close-after-headers  headers promising 100 bytes, then FIN
 *   close-delimited      a 200 with neither Content-Length nor chunks: its
 *                        body ("hello until close") ends with FIN
 *   silent               never answers
 *   close-at-once        closes as soon as it accepts
 *   echo-lines           echoes every byte back (a line protocol peer)
 *   drip                 answers "HTTP/1.1 200 OK" headers and a body one byte per 100 ms
 *   fail-twice           a real-looking service that is flaky: the first two
 *                        requests (over any connection) get 503, later ones 200
 *   keepalive-count      answers every request on a connection with 200 and
 *                        the body {"conn":C,"n":N} (C: the connection's number
 *                        in accept order, from 1; N: the request's number on
 *                        it, from 1), keeping the connection open even when
 *                        the request says "Connection: close"
 *   close-on-reuse       as keepalive-count for the first request on a
 *                        connection; a later request on the same connection
 *                        is read and the connection closed without a byte of
 *                        response (a keep-alive connection the server dropped
 *                        while the client held it in its pool)
 *   gather N             holds every request until N are held at once, then
 *                        answers them all (and any later one at once) 200 with
 *                        {"held":H,"open":O}: H requests held and O connections
 *                        open at the moment of release (a concurrency barrier:
 *                        any answer proves N requests were in flight together)
 *
 * Modes that answer as soon as the first bytes of a request arrive (so they
 * also serve line protocols such as RESP); TEXT, PREFIX and UNIT take the
 * escapes \r, \n, \\ and \xHH:
 *   once TEXT            sends TEXT, then keeps the connection open
 *   stream PREFIX UNIT   sends PREFIX, then UNIT repeated without end (endless
 *                        headers, an endless RESP array, endless nesting)
 *                        until the client closes (or after 64 MiB)
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const char *mode;
static char *text, *unit; /* once/stream arguments, unescaped */
static size_t text_len, unit_len;
static char *chunk;       /* stream: UNIT repeated to about 64 KiB */
static size_t chunk_len;
#define STREAM_MAX (64u * 1024 * 1024)
static int requests;
static int conns; /* connections accepted */
static uv_loop_t *loop;
static int gather_n;        /* gather: release when this many are held */
static int open_conns;      /* connections accepted and not yet closed */

typedef struct peer {
    uv_tcp_t tcp;
    struct peer *held_next; /* gather: the held list */
    uv_timer_t timer;
    char head[8192];
    size_t len;
    int answered;
    int dripped;
    int closing;
    int conn_no;  /* keepalive-count, close-on-reuse */
    int served;   /* requests answered on this connection */
    size_t streamed;
    uv_write_t sw;
} peer;

static void closed(uv_handle_t *h)
{
    peer *p = h->data;
    if (h == (uv_handle_t *)&p->tcp) {
        open_conns--;
        uv_close((uv_handle_t *)&p->timer, NULL);
    }
    else
        free(p);
}

static void written(uv_write_t *w, int status)
{
    (void)status;
    free(w->data);
    free(w);
}

static void say(peer *p, const char *s, size_t n)
{
    uv_write_t *w = malloc(sizeof *w);
    char *copy = malloc(n);
    memcpy(copy, s, n);
    w->data = copy;
    uv_buf_t b = uv_buf_init(copy, (unsigned)n);
    uv_write(w, (uv_stream_t *)&p->tcp, &b, 1, written);
}

static void stream_more(peer *p);

static void stream_written(uv_write_t *w, int status)
{
    peer *p = w->data;
    if (status != 0 || p->closing)
        return;
    stream_more(p);
}

/* One chunk at a time, the next when the kernel took it: the peer's memory
 * stays bounded however slowly the client reads. */
static void stream_more(peer *p)
{
    if (p->streamed >= STREAM_MAX)
        return;
    p->streamed += chunk_len;
    p->sw.data = p;
    uv_buf_t b = uv_buf_init(chunk, (unsigned)chunk_len);
    if (uv_write(&p->sw, (uv_stream_t *)&p->tcp, &b, 1, stream_written) != 0)
        p->streamed = STREAM_MAX;
}

static void drip(uv_timer_t *t)
{
    peer *p = t->data;
    if (p->dripped++ >= 20) {
        uv_timer_stop(t);
        return;
    }
    say(p, "x", 1);
}

/* gather: the held requests, and whether the barrier has opened */
static peer *held_head;
static int held, released, release_held, release_open;

static void gather_reply(peer *p)
{
    char body[64], r[160];
    int bl = snprintf(body, sizeof body, "{\"held\":%d,\"open\":%d}", release_held, release_open);
    int n = snprintf(r, sizeof r, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", bl, body);
    say(p, r, (size_t)n);
    p->answered = 0; /* keep-alive */
    p->len = 0;
}

static void answer(peer *p)
{
    p->answered = 1;
    if (strcmp(mode, "gather") == 0) {
        if (released) {
            gather_reply(p);
            return;
        }
        p->held_next = held_head;
        held_head = p;
        if (++held < gather_n)
            return;
        released = 1;
        release_held = held;
        release_open = open_conns;
        for (peer *q = held_head; q; q = q->held_next)
            if (!q->closing)
                gather_reply(q);
        held_head = NULL;
        return;
    }
    if (strcmp(mode, "once") == 0) {
        say(p, text, text_len);
    } else if (strcmp(mode, "stream") == 0) {
        say(p, text, text_len);
        stream_more(p);
    } else if (strcmp(mode, "garbage") == 0) {
        const char *g = "SPLAT 999 what is this\r\n\r\n";
        say(p, g, strlen(g));
    } else if (strcmp(mode, "reset-mid-body") == 0) {
        const char *h = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
        char body[100];
        memset(body, 'b', sizeof body);
        say(p, h, strlen(h));
        say(p, body, sizeof body);
        uv_tcp_close_reset(&p->tcp, closed);
    } else if (strcmp(mode, "close-after-headers") == 0) {
        const char *h = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
        say(p, h, strlen(h));
        uv_close((uv_handle_t *)&p->tcp, closed);
    } else if (strcmp(mode, "close-delimited") == 0) {
        const char *r = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello until close";
        say(p, r, strlen(r));
        uv_close((uv_handle_t *)&p->tcp, closed);
    } else if (strcmp(mode, "fail-twice") == 0) {
        const char *r = ++requests <= 2
            ? "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 13\r\n\r\n{\"busy\":true}"
            : "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";
        say(p, r, strlen(r));
        p->answered = 0; /* keep-alive: answer the next request too */
        p->len = 0;
    } else if (strcmp(mode, "keepalive-count") == 0 || strcmp(mode, "close-on-reuse") == 0) {
        p->len = 0;
        if (p->served > 0 && strcmp(mode, "close-on-reuse") == 0) {
            p->closing = 1;
            uv_close((uv_handle_t *)&p->tcp, closed);
            return;
        }
        char body[64], r[192];
        int bl = snprintf(body, sizeof body, "{\"conn\":%d,\"n\":%d}", p->conn_no, ++p->served);
        int n = snprintf(r, sizeof r,
                         "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                         bl, body);
        say(p, r, (size_t)n);
        p->answered = 0; /* keep-alive: answer (or drop) the next request too */
    } else if (strcmp(mode, "drip") == 0) {
        const char *h = "HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n";
        say(p, h, strlen(h));
        uv_timer_start(&p->timer, drip, 100, 100);
    }
    /* silent: nothing */
}

static void alloc_cb(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    (void)s;
    peer *p = h->data;
    if (p->len >= sizeof p->head)
        p->len = 0;
    *b = uv_buf_init(p->head + p->len, (unsigned)(sizeof p->head - p->len));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    peer *p = s->data;
    (void)b;
    if (n < 0) {
        if (p->answered && !released && strcmp(mode, "gather") == 0) {
            /* a held request gave up: it no longer counts */
            for (peer **q = &held_head; *q; q = &(*q)->held_next)
                if (*q == p) {
                    *q = p->held_next;
                    held--;
                    break;
                }
        }
        p->closing = 1;
        if (!uv_is_closing((uv_handle_t *)s))
            uv_close((uv_handle_t *)s, closed);
        return;
    }
    if (text) {
        p->len = 0; /* the request's bytes do not matter */
        if (!p->answered && n > 0)
            answer(p);
        return;
    }
    if (strcmp(mode, "echo-lines") == 0) {
        say(p, p->head + p->len, (size_t)n);
        return;
    }
    p->len += (size_t)n;
    if (!p->answered && memmem(p->head, p->len, "\r\n\r\n", 4))
        answer(p);
}

static void on_conn(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    peer *p = calloc(1, sizeof *p);
    open_conns++;
    uv_tcp_init(loop, &p->tcp);
    uv_timer_init(loop, &p->timer);
    p->tcp.data = p->timer.data = p;
    p->conn_no = ++conns;
    if (uv_accept(server, (uv_stream_t *)&p->tcp) != 0) {
        uv_close((uv_handle_t *)&p->tcp, closed);
        return;
    }
    if (strcmp(mode, "close-at-once") == 0) {
        uv_close((uv_handle_t *)&p->tcp, closed);
        return;
    }
    uv_read_start((uv_stream_t *)&p->tcp, alloc_cb, read_cb);
}

/* Decode \r, \n, \\ and \xHH in place; returns the length. */
static size_t unescape(char *s)
{
    char *o = s;
    for (const char *i = s; *i; i++) {
        if (*i != '\\' || !i[1]) {
            *o++ = *i;
            continue;
        }
        i++;
        if (*i == 'r')
            *o++ = '\r';
        else if (*i == 'n')
            *o++ = '\n';
        else if (*i == 'x' && i[1] && i[2]) {
            char hex[3] = { i[1], i[2], 0 };
            *o++ = (char)strtol(hex, NULL, 16);
            i += 2;
        } else
            *o++ = *i;
    }
    return (size_t)(o - s);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: faultpeer MODE [ARGS]\n");
        return 2;
    }
    mode = argv[1];
    if (strcmp(mode, "once") == 0 || strcmp(mode, "stream") == 0) {
        int want = strcmp(mode, "once") == 0 ? 3 : 4;
        if (argc != want) {
            fprintf(stderr, "usage: faultpeer once TEXT | faultpeer stream PREFIX UNIT\n");
            return 2;
        }
        text = argv[2];
        text_len = unescape(text);
        if (want == 4) {
            unit = argv[3];
            unit_len = unescape(unit);
            if (unit_len == 0) {
                fprintf(stderr, "faultpeer: empty UNIT\n");
                return 2;
            }
            size_t reps = 65536 / unit_len + 1;
            chunk_len = reps * unit_len;
            chunk = malloc(chunk_len);
            for (size_t i = 0; i < reps; i++)
                memcpy(chunk + i * unit_len, unit, unit_len);
        }
    } else if (strcmp(mode, "gather") == 0) {
        if (argc != 3 || (gather_n = atoi(argv[2])) < 1) {
            fprintf(stderr, "usage: faultpeer gather N\n");
            return 2;
        }
    } else if (argc != 2) {
        fprintf(stderr, "usage: faultpeer MODE\n");
        return 2;
    }
    loop = uv_default_loop();
    uv_tcp_t server;
    uv_tcp_init(loop, &server);
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    if (uv_tcp_bind(&server, (struct sockaddr *)&addr, 0) != 0 ||
        uv_listen((uv_stream_t *)&server, 4096, on_conn) != 0) {
        fprintf(stderr, "faultpeer: cannot listen\n");
        return 1;
    }
    struct sockaddr_in got;
    int len = sizeof got;
    uv_tcp_getsockname(&server, (struct sockaddr *)&got, &len);
    printf("%d\n", ntohs(got.sin_port));
    fflush(stdout);
    return uv_run(loop, UV_RUN_DEFAULT);
}
