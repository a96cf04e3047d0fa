/*
 * route.c: failure routing and dead-letter lines (contract in route.h).
 */
#define _GNU_SOURCE
#include "route.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../json/json.h"
#include "config.h"

void route_init(route *r, op *o, int on_error)
{
    memset(r, 0, sizeof *r);
    r->op = o;
    r->on_error = on_error;
}

/* A frame in one of the shipped modules (lua/moonwait/NAME.lua): an error
 * that passed through one (a cache loader's, re-raised by c:get) is shown
 * at the script's frame below it. Matched on the file name's end, since Lua
 * shortens a long path from the left ("...lua/moonwait/cache.lua:43: ..."). */
static int shipped_frame(const char *l, size_t n)
{
    static const char *const mods[] = { "cache", "host", "redis", "retry", "thread" };
    const char *colon = memchr(l, ':', n);
    if (!colon)
        return 0;
    size_t fn = (size_t)(colon - l);
    for (size_t i = 0; i < sizeof mods / sizeof mods[0]; i++) {
        char tail[32];
        int tn = snprintf(tail, sizeof tail, "moonwait/%s.lua", mods[i]);
        if (fn >= (size_t)tn && memcmp(colon - tn, tail, (size_t)tn) == 0 &&
            (fn == (size_t)tn || colon[-tn - 1] == '/' || colon[-tn - 1] == '.'))
            return 1;
    }
    return 0;
}

/* "msg\nstack traceback:\n\t[C]: ...\n\tscript.lua:3: in function 'f'" ->
 * "msg (at script.lua:3: in function 'f')": the first frame in Lua code
 * outside the shipped modules (else the first in Lua code). */
static char *with_first_frame(const char *err)
{
    const char *tb = strstr(err, "\nstack traceback:\n");
    if (!tb)
        return strdup(err);
    const char *first = NULL;
    size_t first_n = 0;
    for (const char *l = tb + 18; *l; ) {
        while (*l == '\n' || *l == '\t')
            l++;
        if (!*l)
            break;
        const char *end = strchr(l, '\n');
        size_t n = end ? (size_t)(end - l) : strlen(l);
        if (strncmp(l, "[C]:", 4) != 0) {
            if (!first) {
                first = l;
                first_n = n;
            }
            if (!shipped_frame(l, n)) {
                first = l;
                first_n = n;
                break;
            }
        }
        l += n;
    }
    if (!first)
        return strndup(err, (size_t)(tb - err));
    char *m = NULL;
    if (asprintf(&m, "%.*s (at %.*s)", (int)(tb - err), err, (int)first_n, first) < 0)
        m = NULL;
    return m;
}

/* Standard base64 of s[0..n). 0 or -1. */
static int put_base64(mw_buf *b, const unsigned char *s, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0) | (i + 2 < n ? s[i + 2] : 0);
        char q[4] = { tab[v >> 18], tab[v >> 12 & 63], i + 1 < n ? tab[v >> 6 & 63] : '=', i + 2 < n ? tab[v & 63] : '=' };
        if (mw_buf_add(b, q, 4))
            return -1;
    }
    return 0;
}

/* How a dead letter says the record ended. */
typedef struct dl_outcome {
    const char *err;
    uint32_t attempts;
    uint64_t elapsed_ms;
    int timed_out;
} dl_outcome;

/* One dead-letter line (malloc'd, newline-terminated), always valid JSON.
 * The raw input line is embedded as JSON under "record" when it parsed,
 * else as a string under "raw" (bytes that are not UTF-8 written as
 * \u0080-\u00ff, with the exact bytes in "raw_base64" then). */
static char *dead_letter_line(const route_rec *rec, const dl_outcome *o, size_t *outlen)
{
    mw_buf b = { NULL, 0, 0 };
    char num[128];
    int rc = mw_buf_add(&b, num, (size_t)snprintf(num, sizeof num, "{\"line\":%" PRIu64, rec->lineno));
    if (rec->source_id) {
        rc |= mw_buf_add(&b, ",\"source_id\":", 13);
        rc |= json_put_string(&b, rec->source_id, strlen(rec->source_id));
        rc |= mw_buf_add(&b, num, (size_t)snprintf(num, sizeof num, ",\"deliveries\":%u", rec->deliveries));
    }
    if (!rec->malformed) {
        rc |= mw_buf_add(&b, ",\"record\":", 10);
        rc |= mw_buf_add(&b, rec->line, rec->len);
    } else {
        int lossy = 0;
        rc |= mw_buf_add(&b, ",\"raw\":", 7);
        rc |= json_put_bytes(&b, rec->line, rec->len, &lossy);
        if (lossy) {
            rc |= mw_buf_add(&b, ",\"raw_base64\":\"", 15);
            rc |= put_base64(&b, (const unsigned char *)rec->line, rec->len);
            rc |= mw_buf_add(&b, "\"", 1);
        }
    }
    char *msg = with_first_frame(o->err);
    const char *m = msg ? msg : o->err;
    rc |= mw_buf_add(&b, ",\"error\":", 9);
    int lossy_msg = 0;
    rc |= json_put_bytes(&b, m, strlen(m), &lossy_msg);
    free(msg);
    rc |= mw_buf_add(&b, num,
                     (size_t)snprintf(num, sizeof num, ",\"attempts\":%u,\"elapsed_ms\":%" PRIu64 ",\"timed_out\":%s}\n",
                                      o->attempts, o->elapsed_ms, o->timed_out ? "true" : "false"));
    if (rc) {
        free(b.p);
        return NULL;
    }
    *outlen = b.len;
    return b.p;
}

void route_failure(route *r, op_entry *e, const route_rec *rec, const char *err, uint64_t now)
{
    switch (r->on_error) {
    case ON_ERROR_FAIL:
        op_fail(r->op, e, err);
        break;
    case ON_ERROR_SKIP:
        r->skipped++;
        op_complete(r->op, e, NULL, 0);
        break;
    case ON_ERROR_DEAD_LETTER: {
        /* A malformed line was never invoked: no attempts, no time spent. */
        dl_outcome o = { err, 0, 0, 0 };
        if (!rec->malformed)
            o = (dl_outcome){ err, e->attempt, now - e->accepted_at + e->budget_prior_ms, e->timed_out };
        size_t len = 0;
        char *dl = dead_letter_line(rec, &o, &len);
        if (dl)
            op_complete_dead(r->op, e, dl, len);
        else
            op_fail(r->op, e, "out of memory writing the dead letter");
        break;
    }
    }
}

int route_malformed(route *r, const route_rec *rec, const char *err, void *udata, uint64_t now)
{
    char msg[600];
    op_entry *e;
    switch (r->on_error) {
    case ON_ERROR_FAIL:
        snprintf(msg, sizeof msg, "input line %" PRIu64 ": %s", rec->lineno, err);
        op_push_failed(r->op, rec->lineno, msg, NULL);
        return ROUTE_STOP;
    default:
        /* It takes a slot and leaves in its turn, so the dead-letter file
         * keeps pace with the output; the caller's record keeps the raw
         * line for checkpoints. A skipped one too: it counts as a record in
         * and out like any skipped record (records_in = records_out +
         * in_flight), and a stream's entry is acknowledged in its turn. */
        if (op_push_record(r->op, rec->lineno, 0, udata, &e) != 0)
            return ROUTE_NOROOM;
        r->malformed++;
        route_failure(r, e, rec, err, now);
        return ROUTE_QUEUED;
    }
}

char *route_fatal_message(const op_entry *e, int from_record)
{
    char *m = NULL;
    int rc;
    if (from_record && e->attempt > 1)
        rc = asprintf(&m, "input line %" PRIu64 " (record %" PRIu64 ") failed after %u attempts: %s", e->line,
                      e->seq, e->attempt, e->err);
    else if (from_record)
        rc = asprintf(&m, "input line %" PRIu64 " (record %" PRIu64 ") failed: %s", e->line, e->seq, e->err);
    else
        rc = asprintf(&m, "%s", e->err);
    return rc < 0 ? NULL : m;
}
