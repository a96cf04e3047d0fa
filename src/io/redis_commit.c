/*
 * redis_commit.c: an entry's outputs and its ack (see redis_int.h,
 * "Commits"): atomic and fenced when the sinks are paired with the source,
 * acks after the sinks wrote otherwise.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/list.h"
#include "redis_int.h"

/* Most units per commit call (the next call takes the rest). The bytes
 * are bounded by the run: it stops reading while 4 MiB wait to be
 * committed. MOONWAIT_COMMIT_UNITS changes it, for the benchmark that
 * prices batching (1: a call per entry). */
#define BATCH_UNITS 512
#define ACK_IDS 512

static size_t batch_units(void)
{
    static size_t n;
    if (!n) {
        const char *e = getenv("MOONWAIT_COMMIT_UNITS");
        long v = e ? strtol(e, NULL, 10) : 0;
        n = v > 0 && v <= 100000 ? (size_t)v : BATCH_UNITS;
    }
    return n;
}

/*
 * The commit. KEYS: the input stream, the output stream, the dead-letter
 * stream. ARGV: group, consumer, output field, output maxlen ("0": none),
 * dead-letter field, its maxlen; then per unit: entry id ("" for outputs of
 * no entry), the number of output lines, of dead-letter lines, the lines.
 * Returns per unit: 1 committed; skipped because its entry is no longer
 * pending for this consumer: 0 when it is pending on another (claimed: its
 * outputs are theirs to add), 2 when it is pending on none (acked already:
 * by an earlier call whose reply was lost, or by the consumer that claimed
 * it).
 */
static const char COMMIT_LUA[] =
    "local function add(key, field, maxlen, v)\n"
    "  if maxlen == '0' then return redis.call('XADD', key, '*', field, v) end\n"
    "  return redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', field, v)\n"
    "end\n"
    "local res, i, n = {}, 7, #ARGV\n"
    "while i <= n do\n"
    "  local id, no, nd = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])\n"
    "  i = i + 3\n"
    "  local own = id == '' or #redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2]) > 0\n"
    "  if own then\n"
    "    for j = i, i + no - 1 do add(KEYS[2], ARGV[3], ARGV[4], ARGV[j]) end\n"
    "    for j = i + no, i + no + nd - 1 do add(KEYS[3], ARGV[5], ARGV[6], ARGV[j]) end\n"
    "    if id ~= '' then redis.call('XACK', KEYS[1], ARGV[1], id) end\n"
    "  end\n"
    "  res[#res + 1] = own and 1 or (#redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1) > 0 and 0 or 2)\n"
    "  i = i + no + nd\n"
    "end\n"
    "return res\n";

/* ---- batches ---------------------------------------------------------------------- */

/* Room for `want` elements of `size` bytes in *p (capacity *cap). */
static int grow(void **p, size_t *cap, size_t want, size_t size)
{
    if (want <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < want)
        c *= 2;
    void *x = realloc(*p, c * size);
    if (!x)
        return -1;
    *p = x;
    *cap = c;
    return 0;
}

static int grow_units(rs_batch *b, size_t want)
{
    size_t c1 = b->cap_units, c2 = b->cap_units, c3 = b->cap_units;
    if (grow((void **)&b->entries, &c1, want, sizeof *b->entries) || grow((void **)&b->ustart, &c2, want, sizeof *b->ustart) ||
        grow((void **)&b->ubytes, &c3, want, sizeof *b->ubytes))
        return -1;
    b->cap_units = c1 < c2 ? (c1 < c3 ? c1 : c3) : (c2 < c3 ? c2 : c3);
    return 0;
}

static int batch_arg(rs_batch *b, const char *s, size_t n)
{
    if (grow((void **)&b->lens, &b->cap_args, b->nargs + 1, sizeof *b->lens) || mw_buf_add(&b->args, s, n))
        return -1;
    b->lens[b->nargs++] = n;
    return 0;
}

/* A unit starts at the next argument. */
static int batch_unit(rs_batch *b, rs_entry *e, uint64_t bytes)
{
    if (grow_units(b, b->nunits + 1))
        return -1;
    b->entries[b->nunits] = e;
    b->ustart[b->nunits] = b->nargs;
    b->ubytes[b->nunits++] = bytes;
    b->bytes += bytes;
    return 0;
}

static void batch_reset(rs_batch *b)
{
    b->args.len = b->nargs = b->nunits = 0;
    b->bytes = 0;
}

/* Move src's first k units to dst (empty). 0, or -1 (out of memory: src
 * unchanged). */
static int batch_take(rs_batch *dst, rs_batch *src, size_t k)
{
    size_t args = k < src->nunits ? src->ustart[k] : src->nargs;
    size_t bytes = 0;
    for (size_t i = 0; i < args; i++)
        bytes += src->lens[i];
    if (mw_buf_reserve(&dst->args, bytes) || grow((void **)&dst->lens, &dst->cap_args, args, sizeof *dst->lens) ||
        grow_units(dst, k))
        return -1;
    memcpy(dst->args.p, src->args.p, bytes);
    dst->args.len = bytes;
    memcpy(dst->lens, src->lens, args * sizeof *dst->lens);
    dst->nargs = args;
    memcpy(dst->entries, src->entries, k * sizeof *dst->entries);
    memcpy(dst->ustart, src->ustart, k * sizeof *dst->ustart);
    memcpy(dst->ubytes, src->ubytes, k * sizeof *dst->ubytes);
    dst->nunits = k;
    dst->bytes = 0;
    for (size_t u = 0; u < k; u++)
        dst->bytes += src->ubytes[u];
    /* the rest to the front */
    memmove(src->args.p, src->args.p + bytes, src->args.len - bytes);
    src->args.len -= bytes;
    memmove(src->lens, src->lens + args, (src->nargs - args) * sizeof *src->lens);
    src->nargs -= args;
    for (size_t u = k; u < src->nunits; u++) {
        src->entries[u - k] = src->entries[u];
        src->ustart[u - k] = src->ustart[u] - args;
        src->ubytes[u - k] = src->ubytes[u];
    }
    src->nunits -= k;
    src->bytes -= dst->bytes;
    return 0;
}

static void batch_free(rs_batch *b)
{
    free(b->args.p);
    free(b->lens);
    free(b->entries);
    free(b->ustart);
    free(b->ubytes);
    memset(b, 0, sizeof *b);
}

/* Lines ("...\n" each) of buf as arguments (without their newlines). The
 * number of lines, or -1. */
static long add_lines(rs_batch *b, const mw_buf *buf)
{
    long n = 0;
    for (size_t i = 0; i < buf->len;) {
        const char *nl = memchr(buf->p + i, '\n', buf->len - i);
        size_t end = nl ? (size_t)(nl - buf->p) : buf->len;
        if (batch_arg(b, buf->p + i, end - i) != 0)
            return -1;
        n++;
        i = end + 1;
    }
    return n;
}

static size_t count_lines(const mw_buf *buf)
{
    size_t n = 0;
    for (size_t i = 0; i < buf->len; i++)
        n += buf->p[i] == '\n';
    if (buf->len && buf->p[buf->len - 1] != '\n')
        n++;
    return n;
}

/* A unit for entry e (NULL: none) with the lines staged since the last. */
static int stage_unit(rs_part *p, rs_entry *e, const mw_buf *out, const mw_buf *dlq)
{
    rs_batch *b = &p->staged;
    char num[24];
    const char *id = e ? e->id : "";
    int rc = batch_unit(b, e, out->len + dlq->len) | batch_arg(b, id, strlen(id));
    rc |= batch_arg(b, num, (size_t)snprintf(num, sizeof num, "%zu", count_lines(out)));
    rc |= batch_arg(b, num, (size_t)snprintf(num, sizeof num, "%zu", count_lines(dlq)));
    if (rc || add_lines(b, out) < 0 || add_lines(b, dlq) < 0)
        return -1;
    return 0;
}

/* ---- paired: the commit call -------------------------------------------------------- */

static void send_batch(rs_part *p);

static void committed(void *ud, const resp_reader *r, const char *d, const char *err)
{
    rs_part *p = ud;
    rs_source *s = p->src;
    p->out_busy = 0;
    if (err)
        return; /* sent again when the connection is back: the fence makes that safe */
    if (s->flush_done[0] || s->flush_done[1]) /* (an answer, even LOADING: the server is there) */
        s->flush_by = uv_now(s->loop) + RS_FLUSH_WAIT_MS;
    if (r->nodes[0].type != RESP_ARRAY || r->nodes[0].n != p->out.nunits) {
        char buf[300] = "unexpected reply";
        if (r->nodes[0].type == RESP_ERROR)
            redis_str(r, d, 0, buf, sizeof buf);
        if (r->nodes[0].type == RESP_ERROR && rs_redirected(p, buf))
            return; /* sent again from the partition's new connection */
        if (r->nodes[0].type == RESP_ERROR && !strncmp(buf, "NOGROUP", 7)) {
            rs_group_gone(p);
            return;
        }
        snprintf(s->sink_err, sizeof s->sink_err, "commit to %s: %s", p->out_key, buf);
        s->sink_failed = 1;
        if (s->out && s->out->on_error)
            s->out->on_error(s->out->ud);
        return;
    }
    for (size_t i = 0; i < p->out.nunits; i++) {
        rs_entry *e = p->out.entries[i];
        if (r->nodes[1 + i].type == RESP_INT && r->nodes[1 + i].i == 0)
            s->lost_ownership++;
        else if (r->nodes[1 + i].type == RESP_INT && r->nodes[1 + i].i == 2)
            s->already_acked++;
        if (e)
            rs_entry_free(p, e);
    }
    s->committed_bytes += p->out.bytes;
    batch_reset(&p->out);
    if (s->out && s->out->on_written)
        s->out->on_written(s->out->ud);
    send_batch(p);
    rs_commit_flushed(s);
}

static void send_batch(rs_part *p)
{
    rs_source *s = p->src;
    if (p->out_busy || !p->cmd_up || s->sink_failed)
        return;
    if (!p->out.nunits) {
        if (!p->staged.nunits)
            return;
        size_t k = p->staged.nunits < batch_units() ? p->staged.nunits : batch_units();
        if (batch_take(&p->out, &p->staged, k) != 0) {
            rs_tick(s); /* the tick tries again */
            return;
        }
    }
    /* EVAL script 3 in out dlq group consumer ofield omax dfield dmax units... */
    size_t n = 12 + p->out.nargs;
    const char **argv = malloc(n * sizeof *argv);
    size_t *lens = malloc(n * sizeof *lens);
    if (!argv || !lens) {
        free(argv);
        free(lens);
        rs_tick(s); /* the tick tries again */
        return;
    }
    char omax[24], dmax[24];
    snprintf(omax, sizeof omax, "%" PRIu64, s->out_maxlen);
    snprintf(dmax, sizeof dmax, "%" PRIu64, s->dlq_maxlen);
    const char *head[] = { "EVAL", COMMIT_LUA, "3", p->key, p->out_key, p->dlq_key ? p->dlq_key : p->out_key,
                           s->u.group, s->consumer, s->out_field, omax, s->dlq_field ? s->dlq_field : "data", dmax };
    for (size_t i = 0; i < 12; i++) {
        argv[i] = head[i];
        lens[i] = strlen(head[i]);
    }
    size_t off = 0;
    for (size_t i = 0; i < p->out.nargs; i++) {
        argv[12 + i] = p->out.args.p + off;
        lens[12 + i] = p->out.lens[i];
        off += p->out.lens[i];
    }
    if (redis_command(p->cmd, (int)n, argv, lens, committed, p) == 0)
        p->out_busy = 1;
    free(argv);
    free(lens);
}

/* ---- unpaired: acks after the sinks wrote ---------------------------------------------- */

/* The ids of the XACK out go back to the front of the queue, to be sent
 * again (XACK is idempotent). */
static void acks_again(rs_part *p)
{
    for (size_t i = p->nacking; i-- > 0;) { /* (in their order, before the rest) */
        rs_entry *e = p->acking[i];
        e->prev = NULL;
        e->next = p->acks;
        if (p->acks)
            p->acks->prev = e;
        else
            p->acks_tail = e;
        p->acks = e;
    }
    p->nacking = 0;
}

static void acked(void *ud, const resp_reader *r, const char *d, const char *err)
{
    rs_part *p = ud;
    (void)d;
    if (err) {
        acks_again(p); /* sent when the connection is back */
        return;
    }
    if (r->nodes[0].type == RESP_ERROR) {
        char buf[300];
        redis_str(r, d, 0, buf, sizeof buf);
        if (rs_redirected(p, buf)) {
            /* (LOADING, TRYAGAIN, CLUSTERDOWN: the connection is reset
             * with nothing else to send them again; they were stuck out,
             * and no ack was ever sent again) */
            acks_again(p);
            return;
        }
        if (!strncmp(buf, "NOGROUP", 7))
            rs_group_gone(p);
        else
            rs_fail(p->src, "XACK: %s", buf);
        return;
    }
    for (size_t i = 0; i < p->nacking; i++)
        rs_entry_free(p, p->acking[i]);
    p->nacking = 0;
    rs_commit_kick(p);
    /* (acked entries no longer count against the room: read on) */
    if (p->src->base.on_ready && !p->src->closing)
        p->src->base.on_ready(p->src->base.ud);
}

static int written_up_to(const rs_source *s, const rs_entry *e)
{
    return (!s->out || sink_written(s->out) >= e->out_pos) && (!s->dlq || sink_written(s->dlq) >= e->dlq_pos);
}

static void send_acks(rs_part *p)
{
    rs_source *s = p->src;
    if (p->nacking || !p->cmd_up || !p->acks)
        return;
    if (!p->acking && !(p->acking = malloc(ACK_IDS * sizeof *p->acking)))
        return;
    const char *argv[3 + ACK_IDS] = { "XACK", p->key, s->u.group };
    int argc = 3;
    while (p->acks && p->nacking < ACK_IDS && written_up_to(s, p->acks)) {
        rs_entry *e = p->acks;
        MW_QUEUE_UNLINK(p->acks, p->acks_tail, e, prev, next);
        p->acking[p->nacking++] = e;
        argv[argc++] = e->id;
    }
    if (!p->nacking)
        return;
    if (redis_commandv(p->cmd, acked, p, argc, argv) != 0)
        acked(p, NULL, NULL, "down");
}

/* ---- what the source and sinks call ------------------------------------------------- */

void rs_commit_done(rs_source *s, rs_entry *e)
{
    if (e) {
        e->state = RS_COMMITTING;
        e->part->ncommitting++; /* (still ours until acked: it counts against the room) */
    }
    if (s->paired) {
        int rc = 0;
        if (e) {
            rc = stage_unit(e->part, e, &s->staged_out, &s->staged_dlq);
            send_batch(e->part);
        } else if (s->staged_out.len || s->staged_dlq.len) {
            /* Outputs of no record (a watermark): every partition's
             * output stream gets them. */
            for (uint32_t i = 0; i < s->nparts && !rc; i++) {
                rc = stage_unit(&s->parts[i], NULL, &s->staged_out, &s->staged_dlq);
                send_batch(&s->parts[i]);
            }
            if (!rc)
                s->accepted_bytes += (s->nparts - 1) * (s->staged_out.len + s->staged_dlq.len);
        }
        s->staged_out.len = s->staged_dlq.len = 0;
        if (rc) {
            snprintf(s->sink_err, sizeof s->sink_err, "out of memory");
            s->sink_failed = 1;
            if (s->out && s->out->on_error)
                s->out->on_error(s->out->ud);
        }
        return;
    }
    if (!e)
        return;
    e->out_pos = s->out ? sink_position(s->out) : 0;
    e->dlq_pos = s->dlq ? sink_position(s->dlq) : 0;
    MW_QUEUE_APPEND(e->part->acks, e->part->acks_tail, e, prev, next);
    send_acks(e->part);
    rs_tick(s);
}

void rs_commit_lost(rs_part *p)
{
    p->out_busy = 0; /* the batch stays: sent again, fenced */
    acks_again(p);
}

void rs_commit_kick(rs_part *p)
{
    if (p->src->paired)
        send_batch(p);
    else
        send_acks(p);
}

int rs_commit_idle(const rs_source *s)
{
    for (uint32_t i = 0; i < s->nparts; i++) {
        const rs_part *p = &s->parts[i];
        if (p->staged.nunits || p->out.nunits || p->acks || p->nacking)
            return 0;
    }
    return 1;
}

void rs_commit_flushed(rs_source *s)
{
    for (int k = 0; k < 2; k++) {
        void (*done)(void *ud) = s->flush_done[k];
        mw_sink *sink = k == 0 ? s->out : s->dlq;
        /* (a failed source commits no more: its flush ends too) */
        if (done && (rs_commit_idle(s) || s->sink_failed || s->failed)) {
            s->flush_done[k] = NULL;
            done(sink->ud);
        }
    }
}

void rs_commit_free(rs_part *p)
{
    batch_free(&p->staged);
    batch_free(&p->out);
    free(p->acking);
}
