/*
 * redis_sink.c: output lines as Redis Streams entries (contract in
 * redis_sink.h): one XADD per line, the line (without its newline) in
 * `field`, approximate MAXLEN when `maxlen` is given.
 *
 * Two modes, chosen by io_bind once the source is open:
 *  - paired with a Redis Streams source on the same node: the lines are
 *    staged with the source (rs_stage), which commits each entry's lines
 *    with its ack atomically (redis_commit.c); this sink only counts.
 *  - alone: its own connection; XADDs are pipelined, a line is written
 *    when its XADD is answered. Lines whose answers were lost with the
 *    connection are sent again after it is back: at-least-once.
 */
#define _GNU_SOURCE
#include "redis_sink.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/log.h"
#include "redis_int.h"
#include "redis_source.h"

typedef struct rk_sink {
    mw_sink base;           /* first member: the interface */
    uv_loop_t *loop;
    redis_url u;
    char *name;             /* without the password */
    char *key;
    int which;              /* 0: output, 1: dead letter (paired) */
    rs_source *paired;      /* a reference, or NULL */
    /* alone */
    redis_conn *conn;
    int up;
    mw_buf pending;         /* lines accepted, not yet answered (from `sent_from`) */
    size_t sent;            /* bytes of `pending` sent on the current connection */
    size_t inflight;        /* XADDs out */
    uint64_t accepted, written;
    int err;
    char errmsg[400];
    void (*flush_done)(void *ud);
    uv_timer_t flush_timer;  /* alone: the flush gives up when no XADD is answered */
    int timer_ready;
    void (*on_closed)(mw_sink *k);
    int closing;
    char run_id[48];        /* the server's (redis_probe.c) */
} rk_sink;

static const sink_ops redis_sink_ops;

/* ---- alone ------------------------------------------------------------------------ */

static void send_lines(rk_sink *k);

static void fail_sink(rk_sink *k, const char *fmt, const char *what)
{
    if (k->err)
        return;
    k->err = UV_EPROTO;
    snprintf(k->errmsg, sizeof k->errmsg, fmt, what);
    if (k->base.on_error)
        k->base.on_error(k->base.ud);
}

static void maybe_flushed(rk_sink *k)
{
    if (k->flush_done && (k->written == k->accepted || k->err)) {
        void (*done)(void *) = k->flush_done;
        k->flush_done = NULL;
        if (k->timer_ready)
            uv_timer_stop(&k->flush_timer);
        done(k->base.ud);
    }
}

/* The end of the run waits for the XADDs of what it wrote, not for ever:
 * RS_FLUSH_WAIT_MS without an answer fails the flush (a Redis source's
 * entries whose lines were not written stay pending for a claim). */
static void on_flush_timeout(uv_timer_t *t)
{
    rk_sink *k = t->data;
    if (!k->flush_done || k->err)
        return;
    char what[80];
    snprintf(what, sizeof what, "%d ms at the end%s", RS_FLUSH_WAIT_MS, k->up ? "" : " (the connection is down)");
    fail_sink(k, "no answer to an XADD for %s; the lines not written are not in the stream", what);
    mw_log(MW_LOG_ERROR, "%s %s: %s", k->which ? "--dead-letter" : "--output", k->name, k->errmsg);
    maybe_flushed(k);
}

static void on_flush_timeout(uv_timer_t *t);

static void added(void *ud, const resp_reader *r, const char *d, const char *err)
{
    rk_sink *k = ud;
    if (err)
        return; /* the state callback sends them again */
    k->inflight--;
    if (k->flush_done && k->timer_ready) /* (an answer, even LOADING: the server is there) */
        uv_timer_start(&k->flush_timer, on_flush_timeout, RS_FLUSH_WAIT_MS, 0);
    if (r->nodes[0].type == RESP_ERROR) {
        char buf[300];
        redis_str(r, d, 0, buf, sizeof buf);
        if (!strncmp(buf, "LOADING", 7) || !strncmp(buf, "BUSY", 4) || !strncmp(buf, "MASTERDOWN", 10)) {
            /* A server restarting (loading its data), busy, or a replica
             * without its master: transient. Reconnect after the back-off
             * and send what was not answered again (at least once). */
            redis_conn_reset(k->conn, buf);
            return;
        }
        fail_sink(k, "XADD: %s", buf);
        maybe_flushed(k);
        return;
    }
    /* The first line pending is written. */
    const char *nl = memchr(k->pending.p, '\n', k->pending.len);
    size_t n = nl ? (size_t)(nl - k->pending.p) + 1 : k->pending.len;
    memmove(k->pending.p, k->pending.p + n, k->pending.len - n);
    k->pending.len -= n;
    k->sent -= n;
    k->written += n;
    if (k->base.on_written)
        k->base.on_written(k->base.ud);
    maybe_flushed(k);
}

static void send_lines(rk_sink *k)
{
    if (!k->up || k->err)
        return;
    char maxlen[24];
    snprintf(maxlen, sizeof maxlen, "%" PRIu64, k->u.maxlen);
    while (k->sent < k->pending.len) {
        const char *line = k->pending.p + k->sent;
        const char *nl = memchr(line, '\n', k->pending.len - k->sent);
        if (!nl)
            break; /* (a line is whole once it has its newline) */
        size_t n = (size_t)(nl - line);
        const char *argv[] = { "XADD", k->key, "MAXLEN", "~", maxlen, "*", k->u.field, line };
        size_t lens[] = { 4, strlen(k->key), 6, 1, strlen(maxlen), 1, strlen(k->u.field), n };
        int rc = k->u.maxlen ? redis_command(k->conn, 8, argv, lens, added, k)
                             : redis_command(k->conn, 5, (const char *[]){ "XADD", k->key, "*", k->u.field, line },
                                             (size_t[]){ 4, strlen(k->key), 1, strlen(k->u.field), n }, added, k);
        if (rc != 0)
            return;
        k->inflight++;
        k->sent += n + 1;
    }
}

static void conn_state(void *ud, int state, const char *why)
{
    rk_sink *k = ud;
    k->up = state == REDIS_UP;
    if (!k->up) {
        if (!k->closing)
            mw_log(MW_LOG_WARN, "%s %s: connection lost (%s); reconnecting",
                    k->which ? "--dead-letter" : "--output", k->name, why);
        k->sent = 0;
        k->inflight = 0;
        return;
    }
    send_lines(k);
}

/* ---- the interface ---------------------------------------------------------------- */

static void sk_write(mw_sink *b, const char *data, size_t len)
{
    rk_sink *k = (rk_sink *)b;
    if (k->paired) {
        rs_stage(k->paired, k->which, data, len);
        return;
    }
    if (k->err)
        return;
    if (mw_buf_add(&k->pending, data, len) != 0) {
        fail_sink(k, "%s", "out of memory");
        return;
    }
    k->accepted += len;
    send_lines(k);
}

static void sk_write_owned(mw_sink *b, char *data, size_t len)
{
    sk_write(b, data, len);
    free(data);
}

static size_t sk_backlog(const mw_sink *b)
{
    const rk_sink *k = (const rk_sink *)b;
    if (k->paired)
        return (size_t)(k->paired->accepted_bytes - k->paired->committed_bytes);
    return (size_t)(k->accepted - k->written);
}

static void sk_flush(mw_sink *b, void (*done)(void *ud))
{
    rk_sink *k = (rk_sink *)b;
    if (k->paired) {
        k->paired->flush_done[k->which] = done;
        rs_source *s = k->paired;
        s->flush_by = uv_now(k->loop) + RS_FLUSH_WAIT_MS;
        rs_tick(s); /* (the wait is timed by the tick) */
        rs_commit_flushed(s); /* (may close k and s: the last use) */
        return;
    }
    k->flush_done = done;
    if (k->timer_ready && k->written != k->accepted && !k->err)
        uv_timer_start(&k->flush_timer, on_flush_timeout, RS_FLUSH_WAIT_MS, 0);
    maybe_flushed(k);
}

static uint64_t sk_position(const mw_sink *b)
{
    const rk_sink *k = (const rk_sink *)b;
    return k->paired ? k->paired->accepted_bytes : k->accepted;
}

static uint64_t sk_written(const mw_sink *b)
{
    const rk_sink *k = (const rk_sink *)b;
    return k->paired ? k->paired->committed_bytes : k->written;
}

static int sk_sync(mw_sink *b)
{
    (void)b;
    return 0; /* durability is the server's (appendfsync) */
}

static int sk_error(const mw_sink *b)
{
    const rk_sink *k = (const rk_sink *)b;
    if (k->paired)
        return k->paired->sink_failed ? UV_EPROTO : 0;
    return k->err;
}

static void sk_strerror(const mw_sink *b, char *buf, size_t len)
{
    const rk_sink *k = (const rk_sink *)b;
    snprintf(buf, len, "%s", k->paired ? k->paired->sink_err : k->errmsg);
}

static void free_sink(rk_sink *k)
{
    if (k->on_closed)
        k->on_closed(&k->base);
    redis_url_free(&k->u);
    free(k->name);
    free(k->key);
    free(k->pending.p);
    free(k);
}

static void timer_closed(uv_handle_t *h)
{
    free_sink(h->data);
}

static void sk_close(mw_sink *b, void (*on_closed)(mw_sink *k))
{
    rk_sink *k = (rk_sink *)b;
    if (k->closing)
        return;
    k->closing = 1;
    k->on_closed = on_closed;
    if (k->paired) {
        if (k->paired->out == b)
            k->paired->out = NULL;
        if (k->paired->dlq == b)
            k->paired->dlq = NULL;
        rs_source_unref(k->paired);
        k->paired = NULL;
    }
    redis_conn_close(k->conn);
    if (k->timer_ready)
        uv_close((uv_handle_t *)&k->flush_timer, timer_closed);
    else
        free_sink(k);
}

static const sink_ops redis_sink_ops = {
    .kind = "redis", .write = sk_write, .write_owned = sk_write_owned, .backlog = sk_backlog,
    .flush = sk_flush, .position = sk_position, .written = sk_written, .sync = sk_sync,
    .error = sk_error, .strerror = sk_strerror, .close = sk_close,
};

/* ---- opening and binding ---------------------------------------------------------- */

int redis_sink_open(mw_sink **out, uv_loop_t *loop, const char *url, uint64_t keep, char **err)
{
    rk_sink *k = calloc(1, sizeof *k);
    *out = NULL;
    char msg[400];
    if (!k || !(k->name = rs_public_name(url))) {
        free(k);
        if (asprintf(err, "out of memory") < 0)
            *err = NULL;
        return UV_ENOMEM;
    }
    const char *why = keep ? "a checkpoint cannot be restored into a Redis stream" : NULL;
    if (!why && (redis_url_parse(&k->u, url, REDIS_URL_SINK, msg, sizeof msg) != 0 ||
                 (rs_probe(&k->u, REDIS_URL_SINK, k->run_id, msg, sizeof msg) != 0)))
        why = msg;
    if (why) {
        if (asprintf(err, "%s: %s", k->name, why) < 0)
            *err = NULL;
        redis_url_free(&k->u);
        free(k->name);
        free(k);
        return UV_EINVAL;
    }
    k->base.ops = &redis_sink_ops;
    k->loop = loop;
    *out = &k->base;
    return 0;
}

int redis_sink_is(const mw_sink *k)
{
    return k && k->ops == &redis_sink_ops;
}

const redis_url *redis_sink_url(const mw_sink *k)
{
    return &((const rk_sink *)k)->u;
}

const char *redis_sink_run_id(const mw_sink *k)
{
    return ((const rk_sink *)k)->run_id;
}

int redis_sink_start(mw_sink *b, int which, char **err)
{
    rk_sink *k = (rk_sink *)b;
    k->which = which;
    if (k->u.cluster) {
        if (asprintf(err, "%s: a redis+cluster:// output must be in the input's cluster, with the same partitions "
                          "(output partition i is committed with input partition i)",
                     k->name) < 0)
            *err = NULL;
        return -1;
    }
    k->key = redis_url_key(&k->u, 0);
    k->conn = k->key ? redis_conn_new(k->loop, k->u.hosts[0].host, k->u.hosts[0].port, k->u.password, 1u << 20,
                                      conn_state, k)
                     : NULL;
    if (!k->conn) {
        if (asprintf(err, "%s: out of memory", k->name) < 0)
            *err = NULL;
        return -1;
    }
    uv_timer_init(k->loop, &k->flush_timer);
    k->flush_timer.data = k;
    k->timer_ready = 1;
    return 0;
}

void redis_sink_pair(mw_sink *b, int which, rs_source *s)
{
    rk_sink *k = (rk_sink *)b;
    k->which = which;
    k->paired = s;
    s->refs++;
}

void rs_stage(rs_source *s, int which, const char *data, size_t len)
{
    mw_buf *b = which ? &s->staged_dlq : &s->staged_out;
    if (s->sink_failed)
        return;
    if (mw_buf_add(b, data, len) != 0) {
        snprintf(s->sink_err, sizeof s->sink_err, "out of memory");
        s->sink_failed = 1;
        return;
    }
    s->accepted_bytes += len;
}
