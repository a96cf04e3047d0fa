/*
 * redis_read.c: a Redis Streams source's reading (shared state in
 * redis_int.h; the source's interface, opening and closing are in
 * redis_source.c).
 *
 * Per partition: after each (re)connect, first this consumer's own pending
 * entries (XREADGROUP ... STREAMS key 0, paged), whose replies may have
 * been lost with the connection, then new ones (">"), never more than the
 * run has room for, counting what is already fetched, asked for or being
 * committed. Every claim_idle_ms (and at the start, after the own pending
 * entries) entries idle that long on any consumer are claimed (XAUTOCLAIM).
 * Entries whose delivery count the read does not give (re-read or claimed)
 * get it from XPENDING before they are handed out. The partition's two
 * connections, their states and the cluster's redirections are here too.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../json/json.h"
#include "../net/redis_cluster.h"
#include "../util/list.h"
#include "redis_int.h"

#define BLOCK_UNTIL_EMPTY_MS 50
#define FETCH_MAX 1000

/* ---- the id table ---------------------------------------------------------------- */

static size_t hash_id(const char *id)
{
    size_t h = 1469598103934665603ull;
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211ull;
    return h;
}

static rs_entry *find(const rs_part *p, const char *id)
{
    if (!p->tcap)
        return NULL;
    for (rs_entry *e = p->table[hash_id(id) & (p->tcap - 1)]; e; e = e->hnext)
        if (!strcmp(e->id, id))
            return e;
    return NULL;
}

static int insert(rs_part *p, rs_entry *e)
{
    if (p->tlen + 1 > p->tcap / 2) {
        size_t cap = p->tcap ? p->tcap * 2 : 64;
        rs_entry **t = calloc(cap, sizeof *t);
        if (!t)
            return -1;
        for (size_t i = 0; i < p->tcap; i++)
            for (rs_entry *x = p->table[i], *nx; x; x = nx) {
                nx = x->hnext;
                size_t b = hash_id(x->id) & (cap - 1);
                x->hnext = t[b];
                t[b] = x;
            }
        free(p->table);
        p->table = t;
        p->tcap = cap;
    }
    size_t b = hash_id(e->id) & (p->tcap - 1);
    e->hnext = p->table[b];
    p->table[b] = e;
    p->tlen++;
    return 0;
}

void rs_entry_free(rs_part *p, rs_entry *e)
{
    if (e->state == RS_COMMITTING)
        p->ncommitting--;
    rs_entry **pp = &p->table[hash_id(e->id) & (p->tcap - 1)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp) {
        *pp = e->hnext;
        p->tlen--;
    }
    if (p->src->last == e)
        p->src->last = NULL;
    free(e->data);
    free(e);
}

/* ---- entries from replies ---------------------------------------------------------- */

/* The record of an entry's field/value array at node f: the `field` value
 * as it is, or an object of all the pairs (strings). */
static int entry_record(rs_source *s, const resp_reader *r, const char *d, uint32_t f, rs_entry *e)
{
    const resp_node *arr = &r->nodes[f];
    const char *field = s->u.field;
    size_t flen = strlen(field);
    uint32_t x = f + 1;
    for (uint32_t i = 0; i + 1 < arr->n; i += 2) {
        const resp_node *k = &r->nodes[x], *v = &r->nodes[x + 1];
        if (k->type == RESP_BULK && v->type == RESP_BULK && k->n == flen && !memcmp(resp_str(k, d), field, flen)) {
            e->data = malloc(v->n + 1);
            if (!e->data)
                return -1;
            memcpy(e->data, resp_str(v, d), v->n);
            e->data[v->n] = 0;
            e->len = v->n;
            return 0;
        }
        x += 2;
    }
    mw_buf b = { 0 };
    int lossy, rc = mw_buf_add(&b, "{", 1);
    x = f + 1;
    for (uint32_t i = 0; i + 1 < arr->n; i += 2, x += 2) {
        const resp_node *k = &r->nodes[x], *v = &r->nodes[x + 1];
        if (k->type != RESP_BULK || v->type != RESP_BULK)
            continue;
        if (b.len > 1)
            rc |= mw_buf_add(&b, ",", 1);
        rc |= json_put_bytes(&b, resp_str(k, d), k->n, &lossy);
        rc |= mw_buf_add(&b, ":", 1);
        rc |= json_put_bytes(&b, resp_str(v, d), v->n, &lossy);
    }
    rc |= mw_buf_add(&b, "}", 2); /* (and a NUL) */
    if (rc) {
        free(b.p);
        return -1;
    }
    e->data = b.p;
    e->len = b.len - 1;
    return 0;
}

/* Entries of the array at node `list` ([[id, [f, v, ...] or nil], ...]) into
 * p's ready queue, skipping those already known. Entries without fields
 * (deleted from the stream while pending) are acked and dropped.
 * `deliveries`: 1 for new entries, 0 when XPENDING must tell. The last id
 * seen goes to last_id. Returns how many were queued, or -1. */
static long take_entries(rs_part *p, const resp_reader *r, const char *d, uint32_t list, uint32_t deliveries,
                         char *last_id, rs_entry **first_new)
{
    rs_source *s = p->src;
    const resp_node *arr = &r->nodes[list];
    if (arr->type != RESP_ARRAY)
        return arr->type == RESP_NIL ? 0 : -1;
    long n = 0;
    uint32_t x = list + 1;
    for (uint32_t i = 0; i < arr->n; i++, x = resp_skip(r, x)) {
        const resp_node *ent = &r->nodes[x];
        if (ent->type != RESP_ARRAY || ent->n != 2 || r->nodes[x + 1].type != RESP_BULK ||
            r->nodes[x + 1].n >= sizeof ((rs_entry *)0)->id)
            return -1;
        char id[48];
        redis_str(r, d, x + 1, id, sizeof id);
        if (last_id)
            strcpy(last_id, id);
        uint32_t f = x + 2;
        if (find(p, id))
            continue; /* in the run already, or being committed */
        if (r->nodes[f].type != RESP_ARRAY) {
            /* deleted from the stream (XTRIM, XDEL) while pending: nothing to do */
            const char *argv[] = { "XACK", p->key, s->u.group, id };
            redis_commandv(p->cmd, NULL, NULL, 4, argv);
            continue;
        }
        rs_entry *e = calloc(1, sizeof *e);
        if (!e)
            return -1;
        strcpy(e->id, id);
        e->part = p;
        e->deliveries = deliveries;
        if (entry_record(s, r, d, f, e) != 0 || insert(p, e) != 0) {
            free(e->data);
            free(e);
            return -1;
        }
        MW_QUEUE_APPEND(p->ready, p->ready_tail, e, prev, next);
        p->nready++;
        if (!*first_new)
            *first_new = e;
        n++;
    }
    return n;
}

/* ---- delivery counts ---------------------------------------------------------------- */

/* Stream ids compare as two numbers, "ms-seq". */
static int id_cmp(const char *a, const char *b)
{
    unsigned long long am = strtoull(a, NULL, 10), bm = strtoull(b, NULL, 10);
    if (am != bm)
        return am < bm ? -1 : 1;
    const char *ad = strchr(a, '-'), *bd = strchr(b, '-');
    unsigned long long as = ad ? strtoull(ad + 1, NULL, 10) : 0, bs = bd ? strtoull(bd + 1, NULL, 10) : 0;
    return as < bs ? -1 : as > bs;
}

/* The XPENDING asked by ask_counts (replies come in order: the oldest one
 * out). An entry it lists gets its delivery count. One it does not list
 * is no longer pending for this consumer: its reply raced a commit of
 * ours on the other connection (a re-read of our own pending entries
 * answered before the commit that acked one of them, handled after), or
 * another consumer took it: it is dropped, not run again. Without a reply
 * (the connection went), the entries run with a count of 1: the commit's
 * check still keeps their outputs once. */
static void got_counts(void *ud, const resp_reader *r, const char *d, const char *err)
{
    rs_part *p = ud;
    uint64_t batch = ++p->counts_answered;
    int listed_ok = !err && r->nodes[0].type == RESP_ARRAY;
    if (listed_ok) {
        uint32_t x = 1;
        for (uint32_t i = 0; i < r->nodes[0].n; i++, x = resp_skip(r, x)) {
            if (r->nodes[x].type != RESP_ARRAY || r->nodes[x].n < 4)
                continue;
            char id[48];
            redis_str(r, d, x + 1, id, sizeof id);
            rs_entry *e = find(p, id);
            uint32_t c = x + 4;
            if (e && e->state == RS_READY && e->counting == batch && r->nodes[c].type == RESP_INT &&
                r->nodes[c].i > 0)
                e->deliveries = (uint32_t)r->nodes[c].i;
        }
    }
    for (rs_entry *e = p->ready, *nx; e; e = nx) {
        nx = e->next;
        if (e->counting != batch || e->deliveries)
            continue;
        if (listed_ok) {
            MW_QUEUE_UNLINK(p->ready, p->ready_tail, e, prev, next);
            p->nready--;
            rs_entry_free(p, e);
        } else {
            e->deliveries = 1;
        }
    }
    if (p->src->base.on_ready && !p->src->closing)
        p->src->base.on_ready(p->src->base.ud);
}

/* Ask XPENDING for the delivery counts of the ready entries that have
 * none yet (re-read or claimed): the range from the least to the greatest
 * of their ids, for this consumer. */
static void ask_counts(rs_part *p)
{
    rs_source *s = p->src;
    const char *lo = NULL, *hi = NULL;
    for (rs_entry *e = p->ready; e; e = e->next) {
        if (e->deliveries || e->counting)
            continue;
        if (!lo || id_cmp(e->id, lo) < 0)
            lo = e->id;
        if (!hi || id_cmp(e->id, hi) > 0)
            hi = e->id;
    }
    if (!lo)
        return;
    uint64_t batch = ++p->counts_asked;
    for (rs_entry *e = p->ready; e; e = e->next)
        if (!e->deliveries && !e->counting)
            e->counting = batch;
    /* (every entry of ours in the range: those in the run too) */
    char count[24];
    snprintf(count, sizeof count, "%zu", p->tlen + 1);
    const char *argv[] = { "XPENDING", p->key, s->u.group, lo, hi, count, s->consumer };
    if (redis_commandv(p->cmd, got_counts, p, 7, argv) != 0)
        got_counts(p, NULL, NULL, "down"); /* (down: nothing else is out) */
}

/* ---- fetching ------------------------------------------------------------------------ */


static size_t held(const rs_source *s)
{
    size_t n = 0;
    for (uint32_t i = 0; i < s->nparts; i++)
        n += s->parts[i].nready + s->parts[i].requested + s->parts[i].claim_requested + s->parts[i].ncommitting;
    return n;
}


/* The group went away while the run read it (XGROUP DESTROY, FLUSHALL, a
 * server restarted without persistence). Making it again would read the
 * stream again from `start`, outputs and all: the run fails instead. */
void rs_group_gone(rs_part *p)
{
    rs_fail(p->src, "the group \"%s\" of stream \"%s\" is gone (XGROUP DESTROY, FLUSHALL, or a server restarted "
                    "without persistence); not making it again, which would read the stream again from start=%s",
            p->src->u.group, p->key, p->src->u.start);
}

/* A ">" read answered; `none`: it found nothing. With until=empty, a claim
 * round follows an empty read: the end needs both to find nothing. */
static void read_new(rs_part *p, int none)
{
    p->new_empty = none;
    if (none && p->src->u.until_empty) {
        p->claim_due = 1;
        p->claim_clean = 0;
    }
}

static void fetched(void *ud, const resp_reader *r, const char *d, const char *err)
{
    rs_part *p = ud;
    rs_source *s = p->src;
    p->fetching = 0;
    p->requested = 0;
    if (err || s->closing)
        return; /* the connection's state callback starts again */
    const resp_node *top = &r->nodes[0];
    if (top->type == RESP_ERROR) {
        rs_reply_error(p, r, d, "XREADGROUP");
        return;
    }
    rs_entry *first_new = NULL;
    long n = 0;
    if (top->type == RESP_ARRAY && top->n >= 1) {
        /* [[key, [entries]]] */
        uint32_t k = 1;
        if (r->nodes[k].type != RESP_ARRAY || r->nodes[k].n != 2) {
            rs_fail(s, "XREADGROUP: unexpected reply");
            return;
        }
        n = take_entries(p, r, d, k + 2, p->pel ? 0 : 1, p->pel ? p->pel_cursor : NULL, &first_new);
        if (n < 0) {
            rs_fail(s, "XREADGROUP: unexpected reply (or out of memory)");
            return;
        }
        int none = r->nodes[k + 2].type == RESP_ARRAY && r->nodes[k + 2].n == 0;
        if (p->pel) {
            p->pel = !none; /* (own pending entries all re-read) */
            if (!p->pel)
                rs_claim(p);
        } else {
            read_new(p, none);
        }
    } else if (top->type == RESP_NIL) {
        if (p->pel) {
            p->pel = 0;
            rs_claim(p);
        } else {
            read_new(p, 1);
        }
    } else {
        rs_fail(s, "XREADGROUP: unexpected reply");
        return;
    }
    if (first_new && !first_new->deliveries)
        ask_counts(p);
    else if (s->base.on_ready)
        s->base.on_ready(s->base.ud);
}

void rs_fetch(rs_part *p)
{
    rs_source *s = p->src;
    /* A claim round that is due goes first (claimed entries are older),
     * after this consumer's own pending entries. */
    if (p->fetching || (p->claim_due && !p->pel) || !p->rd_up || !p->group_ready || s->closing || s->failed || s->ended)
        return;
    if (s->u.until_empty && p->new_empty && p->claim_clean)
        return; /* this partition is done; the others may not be yet */
    size_t h = held(s);
    if (s->base.room <= h)
        return;
    /* Partitions share the room, so one blocking read cannot take it all. */
    size_t share = s->base.room / s->nparts ? s->base.room / s->nparts : 1;
    size_t want = s->base.room - h < share ? s->base.room - h : share;
    if (s->u.count && want > s->u.count)
        want = s->u.count;
    if (want > FETCH_MAX)
        want = FETCH_MAX;
    if (p->read_cap && want > p->read_cap)
        want = p->read_cap;
    char count[24], block[24];
    snprintf(count, sizeof count, "%zu", want);
    snprintf(block, sizeof block, "%d", s->u.until_empty ? BLOCK_UNTIL_EMPTY_MS : RS_BLOCK_MS);
    /* History reads (this consumer's pending entries) do not block. */
    const char *argv[11] = { "XREADGROUP", "GROUP", s->u.group, s->consumer, "COUNT", count };
    int argc = 6;
    if (!p->pel) {
        argv[argc++] = "BLOCK";
        argv[argc++] = block;
    }
    argv[argc++] = "STREAMS";
    argv[argc++] = p->key;
    argv[argc++] = p->pel ? p->pel_cursor : ">";
    int rc = redis_commandv(p->rd, fetched, p, argc, argv);
    if (rc == 0) {
        p->fetching = 1;
        p->requested = p->read_sent = want;
    }
}

/* ---- claims -------------------------------------------------------------------------- */

static void claimed(void *ud, const resp_reader *r, const char *d, const char *err)
{
    rs_part *p = ud;
    rs_source *s = p->src;
    p->claiming = 0;
    p->claim_requested = 0;
    if (err || s->closing)
        return;
    const resp_node *top = &r->nodes[0];
    if (top->type == RESP_ERROR) {
        rs_reply_error(p, r, d, "XAUTOCLAIM");
        return;
    }
    /* [next-cursor, [entries], [deleted ids]] */
    if (top->type != RESP_ARRAY || top->n < 2 || r->nodes[1].type != RESP_BULK) {
        rs_fail(s, "XAUTOCLAIM: unexpected reply");
        return;
    }
    redis_str(r, d, 1, p->claim_cursor, sizeof p->claim_cursor);
    rs_entry *first_new = NULL;
    long n = take_entries(p, r, d, 2, 0, NULL, &first_new);
    if (n < 0) {
        rs_fail(s, "XAUTOCLAIM: unexpected reply (or out of memory)");
        return;
    }
    p->claimed_once = 1;
    /* Another round at once while this one found entries or has more to
     * scan (until it finds nothing). */
    p->claim_due = n > 0 || strcmp(p->claim_cursor, "0-0") != 0;
    p->claim_clean = !p->claim_due;
    if (!(s->u.until_empty && p->new_empty && p->claim_clean))
        rs_fetch(p);
    if (first_new)
        ask_counts(p);
    else if (s->base.on_ready)
        s->base.on_ready(s->base.ud);
}

/* Claim entries idle longer than claim_idle_ms, as many as there is room. */
void rs_claim(rs_part *p)
{
    rs_source *s = p->src;
    /* (after the re-read of our own pending entries: claimed ones would be
     * read again, counting a delivery more) */
    if (!p->claim_due || p->claiming || p->pel || !p->cmd_up || !p->group_ready || s->closing || s->failed ||
        s->ended)
        return;
    size_t h = held(s);
    size_t share = s->base.room / s->nparts ? s->base.room / s->nparts : 1;
    size_t want = s->base.room > h ? s->base.room - h : 0;
    if (want > share)
        want = share;
    if (want > FETCH_MAX)
        want = FETCH_MAX;
    if (p->claim_cap && want > p->claim_cap)
        want = p->claim_cap;
    if (!want)
        return; /* when there is room (the reads wait meanwhile) */
    char idle[24], count[24];
    snprintf(idle, sizeof idle, "%" PRIu64, s->u.claim_idle_ms);
    snprintf(count, sizeof count, "%zu", want);
    const char *argv[] = { "XAUTOCLAIM", p->key, s->u.group, s->consumer, idle, p->claim_cursor, "COUNT", count };
    if (redis_commandv(p->cmd, claimed, p, 8, argv) == 0) {
        p->claiming = 1;
        p->claim_requested = p->claim_sent = want;
    }
}

void rs_on_claim_timer(uv_timer_t *t)
{
    rs_source *s = t->data;
    for (uint32_t i = 0; i < s->nparts; i++) {
        rs_part *p = &s->parts[i];
        p->claim_due = 1;
        rs_claim(p);
    }
}

