/*
 * redis_source.c: records from a Redis Streams consumer group (contract in
 * redis_source.h; shared state in redis_int.h): the source's interface,
 * opening, tying it to its sinks, and closing. How it reads (entries,
 * claims, delivery counts, connections) is redis_read.c; how entries are
 * committed or acked is redis_commit.c.
 */
#define _GNU_SOURCE
#include "redis_source.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../net/redis_cluster.h"
#include "../util/list.h"
#include "../util/log.h"
#include "redis_int.h"
#include "redis_sink.h"

static const source_ops redis_source_ops;

/* ---- failing ---------------------------------------------------------------------- */

void rs_fail(rs_source *s, const char *fmt, ...)
{
    if (s->failed)
        return;
    s->failed = 1;
    int n = snprintf(s->err, sizeof s->err, "--input %s: ", s->name);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err + n, sizeof s->err - (size_t)n, fmt, ap);
    va_end(ap);
    rs_commit_flushed(s);
    if (s->base.on_ready)
        s->base.on_ready(s->base.ud);
}

/* ---- the interface ----------------------------------------------------------------- */

static int src_next(mw_source *b, source_record *out)
{
    rs_source *s = (rs_source *)b;
    if (s->failed)
        return SOURCE_ERROR;
    if (s->last) {
        free(s->last->data);
        s->last->data = NULL;
        s->last = NULL;
    }
    for (uint32_t k = 0; k < s->nparts; k++) {
        rs_part *p = &s->parts[(s->rr + k) % s->nparts];
        rs_entry *e = p->ready;
        if (!e || !e->deliveries)
            continue;
        s->rr = (s->rr + k + 1) % s->nparts;
        MW_QUEUE_UNLINK(p->ready, p->ready_tail, e, prev, next);
        p->nready--;
        e->state = RS_OUT;
        s->last = e;
        /* It takes a slot: the room the run set before this call is one
         * less now, and a claim or read started from a callback before
         * the next call must not count that slot as free. */
        if (b->room)
            b->room--;
        static char reason[160];
        *out = (source_record){ e->data, e->len, ++s->lineno, e->id, e->deliveries, NULL, (uint64_t)(uintptr_t)e };
        if (e->deliveries > s->u.max_deliveries) {
            snprintf(reason, sizeof reason, "entry %s was delivered %u times, more than max_deliveries=%u", e->id,
                     e->deliveries, s->u.max_deliveries);
            out->refuse = reason;
        } else if (e->len > s->max_line) {
            snprintf(reason, sizeof reason, "entry %s is %zu bytes, longer than the limit of %zu bytes", e->id,
                     e->len, s->max_line);
            out->refuse = reason;
        }
        return SOURCE_RECORD;
    }
    /* until=empty: every partition read to its end (the last ">" read
     * found nothing), its own pending entries re-read, a claim round that
     * found nothing, nothing asked. */
    int quiet = 1;
    for (uint32_t i = 0; i < s->nparts; i++) {
        const rs_part *p = &s->parts[i];
        quiet &= !p->pel && p->new_empty && !p->fetching && !p->nready && p->claim_clean && !p->claiming;
    }
    if (s->u.until_empty && quiet) {
        s->ended = 1;
        return SOURCE_END;
    }
    for (uint32_t i = 0; i < s->nparts; i++) {
        rs_part *p = &s->parts[i];
        rs_claim(p);
        rs_fetch(p);
    }
    return SOURCE_AGAIN;
}

static void src_strerror(const mw_source *b, char *buf, size_t len)
{
    snprintf(buf, len, "%s", ((const rs_source *)b)->err);
}

static source_pos src_position(const mw_source *b)
{
    return (source_pos){ 0, ((const rs_source *)b)->lineno };
}

static int src_seek(mw_source *b, source_pos pos)
{
    (void)b;
    return pos.offset == 0 && pos.line == 0 ? 0 : -1;
}

static void src_done(mw_source *b, uint64_t ticket)
{
    rs_source *s = (rs_source *)b;
    rs_commit_done(s, (rs_entry *)(uintptr_t)ticket);
}

/* The run ended cleanly and the sinks are flushed: ack what waits. */
static void src_commit(mw_source *b, source_pos pos)
{
    (void)pos;
    rs_source *s = (rs_source *)b;
    for (uint32_t i = 0; i < s->nparts; i++)
        rs_commit_kick(&s->parts[i]);
}

static void handle_closed(uv_handle_t *h)
{
    rs_source *s = h->data;
    if (--s->handles == 0)
        rs_source_unref(s);
}

static void close_now(rs_source *s)
{
    s->handles_closing = 1;
    for (uint32_t i = 0; i < s->nparts; i++) {
        redis_conn_close(s->parts[i].rd);
        redis_conn_close(s->parts[i].cmd);
        s->parts[i].rd = s->parts[i].cmd = NULL;
    }
    uv_close((uv_handle_t *)&s->claim_timer, handle_closed);
    uv_close((uv_handle_t *)&s->tick, handle_closed);
}

#define CLOSE_WAIT_MS 5000

/* Does anything wait for the tick: acks waiting for the sinks to write,
 * a commit that could not be built (out of memory), the end's flush (it
 * gives up after RS_FLUSH_WAIT_MS), the close? */
static int tick_needed(const rs_source *s)
{
    if (s->closing || ((s->flush_done[0] || s->flush_done[1]) && !rs_commit_idle(s)))
        return 1;
    for (uint32_t i = 0; i < s->nparts; i++) {
        const rs_part *p = &s->parts[i];
        if (p->acks || (p->staged.nunits && !p->out_busy))
            return 1;
    }
    return 0;
}

static void on_tick(uv_timer_t *t)
{
    rs_source *s = t->data;
    if (s->handles_closing)
        return;
    for (uint32_t i = 0; i < s->nparts; i++)
        rs_commit_kick(&s->parts[i]);
    /* The run's end waits for the commits of what it completed, not for
     * ever: a server away (or silent) that long fails the flush, and the
     * entries stay pending for a claim. */
    if ((s->flush_done[0] || s->flush_done[1]) && !s->sink_failed && !rs_commit_idle(s) &&
        uv_now(s->loop) >= s->flush_by) {
        int down = 0;
        for (uint32_t i = 0; i < s->nparts; i++)
            down |= !s->parts[i].cmd_up;
        snprintf(s->sink_err, sizeof s->sink_err, "no answer to a commit for %d ms at the end%s; the entries not "
                 "committed stay pending for a claim", RS_FLUSH_WAIT_MS, down ? " (the connection is down)" : "");
        s->sink_failed = 1;
        /* (said here too: after a signal the run reports only the signal) */
        mw_log(MW_LOG_ERROR, "--input %s: %s", s->name, s->sink_err);
        if (s->out && s->out->on_error)
            s->out->on_error(s->out->ud);
        rs_commit_flushed(s);
        return;
    }
    /* Closing waits for the acks and commits in flight (or 5 s). */
    if (s->closing && (rs_commit_idle(s) || s->failed || s->sink_failed || uv_now(s->loop) >= s->close_by))
        close_now(s);
    else if (!tick_needed(s))
        uv_timer_stop(&s->tick); /* (an idle consumer does not wake up) */
}

void rs_tick(rs_source *s)
{
    if (!s->handles_closing && !uv_is_active((uv_handle_t *)&s->tick) && tick_needed(s))
        uv_timer_start(&s->tick, on_tick, 5, 5);
}

static void src_close(mw_source *b, void (*on_closed)(mw_source *s))
{
    rs_source *s = (rs_source *)b;
    if (s->closing)
        return;
    s->closing = 1;
    s->on_closed = on_closed;
    if (s->lost_ownership)
        mw_log(MW_LOG_WARN, "--input %s: %" PRIu64 " entries were claimed by another consumer while they ran "
                        "here (they idled past claim_idle_ms=%" PRIu64 "); their outputs here were dropped, the "
                        "other consumer's count",
                s->name, s->lost_ownership, s->u.claim_idle_ms);
    if (s->already_acked)
        mw_log(MW_LOG_WARN, "--input %s: %" PRIu64 " entries were acked already when their commit ran (sent "
                        "again after a lost reply, or claimed and committed by another consumer); their outputs "
                        "here were dropped",
                s->name, s->already_acked);
    /* Unpaired: ack what the sinks wrote; the rest stays pending for a
     * claim. The sinks close after this: forget them. */
    for (uint32_t i = 0; i < s->nparts; i++) {
        rs_part *p = &s->parts[i];
        for (rs_entry *e = p->acks, *nx; e; e = nx) {
            nx = e->next;
            if ((s->out && sink_written(s->out) < e->out_pos) || (s->dlq && sink_written(s->dlq) < e->dlq_pos)) {
                MW_QUEUE_UNLINK(p->acks, p->acks_tail, e, prev, next);
                rs_entry_free(p, e);
            }
        }
    }
    if (!s->paired)
        s->out = s->dlq = NULL;
    s->close_by = uv_now(s->loop) + CLOSE_WAIT_MS;
    uv_ref((uv_handle_t *)&s->tick);
    uv_timer_start(&s->tick, on_tick, 5, 5);
    on_tick(&s->tick);
}

void rs_source_unref(rs_source *s)
{
    if (--s->refs > 0)
        return;
    if (s->on_closed)
        s->on_closed(&s->base);
    for (uint32_t i = 0; i < s->nparts; i++) {
        rs_part *p = &s->parts[i];
        for (size_t k = 0; k < p->tcap; k++)
            for (rs_entry *e = p->table[k], *nx; e; e = nx) {
                nx = e->hnext;
                free(e->data);
                free(e);
            }
        free(p->table);
        rs_commit_free(p);
        free(p->key);
        free(p->out_key);
        free(p->dlq_key);
    }
    free(s->parts);
    free(s->staged_out.p);
    free(s->staged_dlq.p);
    redis_url_free(&s->u);
    redis_url_free(&s->out_u);
    redis_url_free(&s->dlq_u);
    free(s->name);
    free(s->consumer);
    free(s->out_field);
    free(s->dlq_field);
    free(s);
}

static const source_ops redis_source_ops = {
    .kind = "redis", .next = src_next, .strerror = src_strerror, .position = src_position,
    .seek = src_seek, .commit = src_commit, .done = src_done, .close = src_close,
    .lag = rs_lag,
};

/* ---- binding ------------------------------------------------------------------------ */

int redis_source_is(const mw_source *s)
{
    return s && s->ops == &redis_source_ops;
}

/* Is sink k a stream on the source's server (by its run_id, so
 * "localhost" and "127.0.0.1" are one; a cluster by its partitions)? */
static int same_server(const rs_source *s, const mw_sink *k)
{
    if (!redis_sink_is(k))
        return 0;
    const char *rid = redis_sink_run_id(k);
    const redis_url *ku = redis_sink_url(k);
    if (s->u.cluster != ku->cluster || s->u.partitions != ku->partitions)
        return 0;
    /* (a cluster: the master of partition 0's slot, the same for the
     * input's and a paired output's partition 0 in one cluster) */
    if (s->run_id[0] && rid[0])
        return strcmp(s->run_id, rid) == 0;
    return redis_url_same_node(&s->u, ku);
}

/* A sink writing into the stream it reads: every output would be read
 * again, for ever. (config.c refuses the same URL before anything opens;
 * this finds the same server under another name, by its run_id.) */
static int loops(const rs_source *s, const mw_sink *k)
{
    return same_server(s, k) && strcmp(redis_sink_url(k)->stream, s->u.stream) == 0;
}

int redis_source_bind(mw_source *b, mw_sink *out, mw_sink *dlq, char **err)
{
    rs_source *s = (rs_source *)b;
    s->out = out;
    s->dlq = dlq;
    if (loops(s, out) || (dlq && loops(s, dlq))) {
        if (asprintf(err, "%s %s: the stream --input reads (every output would be read again)",
                     loops(s, out) ? "--output" : "--dead-letter", s->u.stream) < 0)
            *err = NULL;
        return -1;
    }
    const char *why = NULL;
    if (same_server(s, out) && (!dlq || same_server(s, dlq))) {
        s->paired = 1;
        const redis_url *ou = redis_sink_url(out), *du = dlq ? redis_sink_url(dlq) : NULL;
        s->out_field = strdup(ou->field);
        s->out_maxlen = ou->maxlen;
        s->dlq_field = strdup(du ? du->field : "data");
        if (!s->out_field || !s->dlq_field)
            return asprintf(err, "--input %s: out of memory", s->name) < 0 ? -1 : -1;
        s->dlq_maxlen = du ? du->maxlen : 0;
        for (uint32_t i = 0; i < s->nparts; i++) {
            rs_part *p = &s->parts[i];
            p->out_key = redis_url_key(ou, i);
            p->dlq_key = du ? redis_url_key(du, i) : NULL;
            if (!p->out_key || (du && !p->dlq_key))
                return asprintf(err, "--input %s: out of memory", s->name) < 0 ? -1 : -1;
        }
        redis_sink_pair(out, 0, s);
        if (dlq)
            redis_sink_pair(dlq, 1, s);
    } else {
        /* At-least-once: acked after the sinks wrote. */
        if (redis_sink_is(out) && redis_sink_start(out, 0, err) != 0)
            return -1;
        if (dlq && redis_sink_is(dlq) && redis_sink_start(dlq, 1, err) != 0)
            return -1;
        why = !redis_sink_is(out)   ? "--output is not a Redis stream"
              : !same_server(s, out) ? "--output is on another server"
              : !redis_sink_is(dlq)  ? "--dead-letter is not a Redis stream"
                                     : "--dead-letter is on another server";
    }
    /* Say which guarantee holds: it depends on where the outputs go. */
    if (why)
        mw_log(MW_LOG_INFO, "--input %s: consumer %s; at least once (%s: an entry is acked after its outputs "
                        "are written, and one may be written twice after a crash)",
                s->name, s->consumer, why);
    else
        mw_log(MW_LOG_INFO, "--input %s: consumer %s; exactly once (an entry's outputs and its ack are "
                        "committed together)",
                s->name, s->consumer);
    return 0;
}

/* ---- opening ------------------------------------------------------------------------- */

char *rs_public_name(const char *url)
{
    /* redis://:secret@host... -> redis://:***@host... A password whose
     * @ ? / or % were not %-escaped still goes: everything up to the last
     * @ is hidden (too much, when a parameter holds an @, rather than a
     * piece of the password). */
    const char *at = strrchr(url, '@');
    const char *colon = strstr(url, "://");
    char *out = NULL;
    if (at && colon && colon[3] == ':') {
        if (asprintf(&out, "%.*s:***%s", (int)(colon + 3 - url), url, at) < 0)
            out = NULL;
    } else {
        out = strdup(url);
    }
    return out;
}

int redis_source_open(mw_source **out, uv_loop_t *loop, const char *url, size_t max_line, char **err)
{
    rs_source *s = calloc(1, sizeof *s);
    *out = NULL;
    char msg[400];
    if (!s || !(s->name = rs_public_name(url))) {
        free(s);
        return asprintf(err, "--input: out of memory") < 0 ? UV_ENOMEM : UV_ENOMEM;
    }
    if (redis_url_parse(&s->u, url, REDIS_URL_SOURCE, msg, sizeof msg) != 0 ||
        rs_probe(&s->u, REDIS_URL_SOURCE, s->run_id, msg, sizeof msg) != 0) {
        if (asprintf(err, "--input %s: %s", s->name, msg) < 0)
            *err = NULL;
        redis_url_free(&s->u);
        free(s->name);
        free(s);
        return UV_EINVAL;
    }
    s->base.ops = &redis_source_ops;
    s->loop = loop;
    s->max_line = max_line;
    /* The source's own reference goes when its handles have closed (after
     * source_close); each paired sink holds one more. */
    s->refs = 1;
    uv_timer_init(loop, &s->claim_timer);
    uv_timer_init(loop, &s->tick);
    s->claim_timer.data = s->tick.data = s;
    s->handles = 2;
    *out = &s->base;
    if (s->u.consumer) {
        s->consumer = strdup(s->u.consumer);
    } else {
        char host[256] = "moonwait";
        gethostname(host, sizeof host - 1);
        if (asprintf(&s->consumer, "%s-%d", host, (int)getpid()) < 0)
            s->consumer = NULL;
    }
    s->nparts = s->u.cluster ? s->u.partitions : 1;
    s->parts = calloc(s->nparts, sizeof *s->parts);
    if (!s->consumer || !s->parts) {
        s->nparts = 0;
        if (asprintf(err, "--input %s: out of memory", s->name) < 0)
            *err = NULL;
        return UV_ENOMEM;
    }
    redis_slots slots = { 0 };
    if (s->u.cluster && rs_probe_slots(&s->u, &slots, msg, sizeof msg) != 0) {
        if (asprintf(err, "--input %s: %s", s->name, msg) < 0)
            *err = NULL;
        return UV_EINVAL;
    }
    for (uint32_t i = 0; i < s->nparts; i++) {
        rs_part *p = &s->parts[i];
        p->src = s;
        p->ix = i;
        strcpy(p->claim_cursor, "0-0");
        p->claim_due = 1; /* a round at the start */
        p->lag = p->pending = -1; /* (not polled yet) */
        p->key = redis_url_key(&s->u, i);
        const redis_slot_range *node = p->key && s->u.cluster
                                           ? redis_slots_find(&slots, redis_key_slot(p->key, strlen(p->key)))
                                           : NULL;
        snprintf(p->host, sizeof p->host, "%s", node ? node->host : s->u.hosts[0].host);
        p->port = node ? node->port : s->u.hosts[0].port;
        if (!p->key || rs_part_connect(p) != 0) {
            if (asprintf(err, "--input %s: out of memory", s->name) < 0)
                *err = NULL;
            redis_slots_free(&slots);
            return UV_ENOMEM;
        }
    }
    redis_slots_free(&slots);
    uv_timer_start(&s->claim_timer, rs_on_claim_timer, s->u.claim_idle_ms, s->u.claim_idle_ms);
    uv_unref((uv_handle_t *)&s->tick); /* (started when something waits for it: rs_tick) */
    uv_unref((uv_handle_t *)&s->claim_timer);
    return 0;
}
