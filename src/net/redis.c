/* redis.c: the host's Redis connection (contract in redis.h). */
#include "redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/buf.h"
#include "conn.h"
#include "dial.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 5000
#define REPLY_TIMEOUT_MS 30000

typedef struct waiter {
    redis_reply_cb cb;
    void *ud;
} waiter;

struct redis_conn {
    uv_loop_t *loop;
    char *host, *password;   /* owned */
    int port;
    redis_state_cb on_state;
    void *ud;
    net_conn *conn;          /* owned; NULL while down */
    net_dial dial;
    uv_timer_t timer;        /* the back-off before dialling again; the connect
                              * timeout; while connected, the reply timeout */
    uint64_t reply_timeout_ms;
    int up, closing, dialling, authing;
    int broken;              /* a write failed inside a command: lost at the next turn */
    int answered;            /* a reply came on this connection (the back-off starts
                              * again from its least only then) */
    int asking;              /* ASKING before every command */
    uint64_t backoff_ms;
    mw_buf out;              /* commands not yet handed to the socket */
    int writing;
    /* the callbacks of commands sent, in order: a ring */
    waiter *w;
    size_t wcap, whead, wlen;
    resp_reader rd;
    char why[200];
};

static void dial_now(redis_conn *c);

static void free_conn(uv_handle_t *h)
{
    redis_conn *c = h->data;
    free(c->host);
    free(c->password);
    free(c->out.p);
    free(c->w);
    resp_free(&c->rd);
    free(c);
}

static int push_waiter(redis_conn *c, redis_reply_cb cb, void *ud)
{
    if (c->wlen == c->wcap) {
        size_t cap = c->wcap ? c->wcap * 2 : 64;
        waiter *w = malloc(cap * sizeof *w);
        if (!w)
            return -1;
        for (size_t i = 0; i < c->wlen; i++)
            w[i] = c->w[(c->whead + i) % c->wcap];
        free(c->w);
        c->w = w;
        c->wcap = cap;
        c->whead = 0;
    }
    c->w[(c->whead + c->wlen) % c->wcap] = (waiter){ cb, ud };
    c->wlen++;
    return 0;
}

static waiter pop_waiter(redis_conn *c)
{
    waiter w = c->w[c->whead];
    c->whead = (c->whead + 1) % c->wcap;
    c->wlen--;
    return w;
}

/* ---- losing and regaining the connection --------------------------------------- */

static void on_backoff(uv_timer_t *t)
{
    redis_conn *c = t->data;
    if (!c->closing && !c->conn && !c->dialling)
        dial_now(c);
}

/* The connection is gone: fail the waiting commands, tell the owner, dial
 * again after the back-off. */
static void lose(redis_conn *c, const char *why)
{
    int was_up = c->up;
    snprintf(c->why, sizeof c->why, "%s", why);
    if (c->conn) {
        net_conn_close(c->conn);
        c->conn = NULL;
    }
    net_dial_cancel(&c->dial);
    int answered = c->answered;
    c->dialling = c->authing = c->up = c->writing = c->broken = c->answered = 0;
    c->out.len = 0;
    resp_next_reply(&c->rd);
    uv_timer_stop(&c->timer);
    /* (a callback may close c: c->closing then drops the rest silently) */
    while (c->wlen && !c->closing) {
        waiter w = pop_waiter(c);
        if (w.cb)
            w.cb(w.ud, NULL, NULL, c->why);
    }
    if (c->closing)
        return;
    if (c->on_state)
        c->on_state(c->ud, REDIS_DOWN, c->why);
    if (c->closing)
        return;
    /* A server that takes the connection and drops it before answering
     * (at maxclients, say) is dialled ever more slowly, not 10 times a
     * second. */
    if (was_up && answered)
        c->backoff_ms = BACKOFF_MIN_MS;
    uv_timer_start(&c->timer, on_backoff, c->backoff_ms, 0);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

void redis_conn_reset(redis_conn *c, const char *why)
{
    if (!c->closing)
        lose(c, why);
}

/* ---- the reply timeout: a server that takes commands and never answers ---------- */

static void on_reply_timeout(uv_timer_t *t)
{
    redis_conn *c = t->data;
    char why[80];
    snprintf(why, sizeof why, "no reply within %llu ms", (unsigned long long)c->reply_timeout_ms);
    lose(c, why);
}

/* Waiting for a reply: the clock runs from the last reply (or the first
 * command sent while idle). */
static void arm_reply_timer(redis_conn *c)
{
    if (c->broken)
        return; /* (the timer is lose()'s) */
    if (c->wlen && c->conn)
        uv_timer_start(&c->timer, on_reply_timeout, c->reply_timeout_ms, 0);
    else if (c->conn)
        uv_timer_stop(&c->timer);
}

void redis_conn_set_reply_timeout(redis_conn *c, uint64_t ms)
{
    c->reply_timeout_ms = ms;
}

/* ---- writing -------------------------------------------------------------------- */

static void flush_out(redis_conn *c);

static void written(net_conn *nc, int status, void *ud)
{
    (void)nc;
    redis_conn *c = ud;
    c->writing = 0;
    if (status != 0) {
        lose(c, net_strerror(status));
        return;
    }
    flush_out(c);
}

/* A write failed at once (the peer had reset the connection): lose it now,
 * outside the command that found out. */
static void on_broken(uv_timer_t *t)
{
    redis_conn *c = t->data;
    char why[sizeof c->why];
    snprintf(why, sizeof why, "%s", c->why);
    lose(c, why);
}

static void flush_out(redis_conn *c)
{
    if (c->writing || !c->conn || !c->out.len || c->broken)
        return;
    /* net_conn_write copies: the buffer is ours again at once. Its
     * callback may run before it returns. */
    size_t n = c->out.len;
    c->out.len = 0;
    c->writing = 1;
    int rc = net_conn_write(c->conn, c->out.p, n, written, c);
    if (rc != 0) {
        /* Not lose() here: flush_out runs inside redis_command, whose
         * caller counts the command as sent once it returns 0; its
         * callback (failed by lose) must not run before that. */
        c->writing = 0;
        c->broken = 1;
        snprintf(c->why, sizeof c->why, "%s", net_strerror(rc));
        uv_timer_start(&c->timer, on_broken, 0, 0);
    }
}

int redis_format(mw_buf *b, int argc, const char *const *argv, const size_t *lens)
{
    char hdr[32];
    int rc = mw_buf_add(b, hdr, (size_t)snprintf(hdr, sizeof hdr, "*%d\r\n", argc));
    for (int i = 0; i < argc && rc == 0; i++) {
        rc |= mw_buf_add(b, hdr, (size_t)snprintf(hdr, sizeof hdr, "$%zu\r\n", lens[i]));
        rc |= mw_buf_add(b, argv[i], lens[i]);
        rc |= mw_buf_add(b, "\r\n", 2);
    }
    return rc;
}

static int send_command(redis_conn *c, int argc, const char *const *argv, const size_t *lens, redis_reply_cb cb,
                        void *ud)
{
    size_t before = c->out.len, waiting = c->wlen;
    static const char *const asking[] = { "ASKING" };
    static const size_t asking_len[] = { 6 };
    if ((c->asking && (redis_format(&c->out, 1, asking, asking_len) != 0 || push_waiter(c, NULL, NULL) != 0)) ||
        redis_format(&c->out, argc, argv, lens) != 0 || push_waiter(c, cb, ud) != 0) {
        c->out.len = before;
        c->wlen = waiting;
        return -1;
    }
    if (!waiting)
        arm_reply_timer(c);
    flush_out(c);
    return 0;
}

int redis_command(redis_conn *c, int argc, const char *const *argv, const size_t *lens, redis_reply_cb cb,
                  void *ud)
{
    if (!c->up || c->closing)
        return -1;
    return send_command(c, argc, argv, lens, cb, ud);
}

int redis_commandv(redis_conn *c, redis_reply_cb cb, void *ud, int argc, const char *const *argv)
{
    size_t few[32] = { 0 };
    size_t *lens = argc <= 32 ? few : malloc((size_t)argc * sizeof *lens);
    if (!lens)
        return -1;
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    int rc = redis_command(c, argc, argv, lens, cb, ud);
    if (lens != few)
        free(lens);
    return rc;
}

/* ---- reading -------------------------------------------------------------------- */

static void on_read(net_conn *nc, void *ud)
{
    redis_conn *c = ud;
    while (!c->closing && c->conn == nc) {
        size_t n = net_conn_buffered(nc), used = 0;
        if (n) {
            int rc = resp_feed(&c->rd, net_conn_data(nc), n, &used);
            if (rc == RESP_BAD) {
                char why[200];
                snprintf(why, sizeof why, "bad reply: %s", c->rd.err);
                lose(c, why);
                return;
            }
            if (rc == RESP_DONE) {
                /* Redis at maxclients says so to a new connection and
                 * closes it: a connection failure (dial again later), not
                 * the answer to the first command sent. */
                static const char full[] = "ERR max number of clients reached";
                const resp_node *top = &c->rd.nodes[0];
                if (top->type == RESP_ERROR && top->n >= sizeof full - 1 &&
                    !memcmp(resp_str(top, net_conn_data(nc)), full, sizeof full - 1)) {
                    lose(c, full);
                    return;
                }
                c->answered = 1;
                if (!c->wlen) {
                    lose(c, "bad reply: a reply that no command asked for");
                    return;
                }
                waiter w = pop_waiter(c);
                if (w.cb)
                    w.cb(w.ud, &c->rd, net_conn_data(nc), NULL);
                /* (the callback may have closed or reset c) */
                if (c->closing || c->conn != nc)
                    return;
                net_conn_consume(nc, used);
                resp_next_reply(&c->rd);
                arm_reply_timer(c);
                continue;
            }
        }
        if (nc->eof || nc->rerr)
            lose(c, net_conn_error(nc));
        return;
    }
}

/* ---- connecting ----------------------------------------------------------------- */

static void auth_done(void *ud, const resp_reader *r, const char *d, const char *err)
{
    redis_conn *c = ud;
    if (err)
        return; /* lose() is on its way */
    c->authing = 0;
    if (r->nodes[0].type == RESP_ERROR) {
        char buf[200];
        char why[240];
        snprintf(why, sizeof why, "AUTH: %s", redis_str(r, d, 0, buf, sizeof buf));
        /* Stay down; the next dial may find the password changed back. */
        lose(c, why);
        return;
    }
    c->up = 1;
    if (c->on_state)
        c->on_state(c->ud, REDIS_UP, NULL);
}

static void on_connect_timeout(uv_timer_t *t)
{
    redis_conn *c = t->data;
    lose(c, "connect timeout");
}

static void dialled(void *ud, const char *err)
{
    redis_conn *c = ud;
    c->dialling = 0;
    if (err) {
        lose(c, err);
        return;
    }
    uv_timer_stop(&c->timer);
    if (net_conn_read_start(c->conn, on_read, c) != 0) {
        lose(c, "cannot read");
        return;
    }
    if (c->password) {
        const char *argv[] = { "AUTH", c->password };
        size_t lens[] = { 4, strlen(c->password) };
        c->authing = 1;
        if (send_command(c, 2, argv, lens, auth_done, c) != 0)
            lose(c, "out of memory");
        return;
    }
    c->up = 1;
    if (c->on_state)
        c->on_state(c->ud, REDIS_UP, NULL);
}

static void dial_now(redis_conn *c)
{
    c->dialling = 1;
    uv_timer_start(&c->timer, on_connect_timeout, CONNECT_TIMEOUT_MS, 0);
    int rc = net_dial_start(&c->dial, c->host, c->port, 0);
    if (rc != 0) {
        c->dialling = 0;
        lose(c, net_strerror(rc));
    }
}

redis_conn *redis_conn_new(uv_loop_t *loop, const char *host, int port, const char *password,
                           size_t max_reply, redis_state_cb on_state, void *ud)
{
    redis_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = loop;
    c->host = strdup(host);
    c->password = password ? strdup(password) : NULL;
    if (!c->host || (password && !c->password)) {
        free(c->host);
        free(c->password);
        free(c);
        return NULL;
    }
    c->port = port;
    c->on_state = on_state;
    c->ud = ud;
    c->backoff_ms = BACKOFF_MIN_MS;
    c->reply_timeout_ms = REPLY_TIMEOUT_MS;
    resp_init(&c->rd, max_reply, 1u << 24, 16);
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    /* Replies are read from the connection's buffer in place; the reader's
     * own byte limit refuses a reply beyond max_reply first. */
    net_dial_init(&c->dial, loop, &c->conn, max_reply + 4096, dialled, c);
    dial_now(c);
    return c;
}

void redis_conn_set_asking(redis_conn *c, int on)
{
    c->asking = on;
}

int redis_conn_up(const redis_conn *c)
{
    return c->up;
}

size_t redis_conn_waiting(const redis_conn *c)
{
    return c->wlen;
}

void redis_conn_close(redis_conn *c)
{
    if (!c || c->closing)
        return;
    c->closing = 1;
    net_dial_cancel(&c->dial);
    if (c->conn) {
        net_conn_close(c->conn);
        c->conn = NULL;
    }
    uv_close((uv_handle_t *)&c->timer, free_conn);
}

const char *redis_str(const resp_reader *r, const char *d, uint32_t x, char *buf, size_t len)
{
    const resp_node *n = &r->nodes[x];
    if (n->type != RESP_STATUS && n->type != RESP_ERROR && n->type != RESP_BULK) {
        buf[0] = 0;
        return buf;
    }
    size_t k = n->n < len - 1 ? n->n : len - 1;
    memcpy(buf, resp_str(n, d), k);
    buf[k] = 0;
    return buf;
}
