/*
 * fuzz_redis.c: libFuzzer target for the host's plain-C Redis pieces (no
 * libuv, no Lua): the RESP2 reply reader (src/net/resp.c), the cluster
 * helpers (src/net/redis_cluster.c: key slots, CLUSTER SLOTS, MOVED/ASK)
 * and the Redis Streams URLs (src/io/redis_url.c).
 *
 * Input: the first byte chooses the mode; bits 1-7 of it are a seed.
 *
 * Replies ([0] even), 5 bytes of parameters, then the server's bytes:
 *   [0] bits 1-7: seed of the random split
 *   [1] max_bytes = 16 + [1] * 16 (16..4080), or 64 MiB when 255
 *   [2] max_elements = 1 + [2] (1..255), or 2^20 when 255
 *   [3] max_depth = 1 + [3] % 8
 *   [4] the host buffer given to redis_redirect_parse: 1 + [4] bytes
 * The bytes are read as a pipeline of replies (resp_feed on the growing
 * prefix of each reply, resp_next_reply after each, at most 1024 replies),
 * as the host's connection feeds them: in one piece, in random pieces and
 * one byte at a time (inputs up to 1 KiB). Checks:
 *  - the same results (DONE replies, then one MORE or BAD with the same
 *    message), the same `used` and the same tapes (memcmp of the nodes)
 *    whatever the split;
 *  - a DONE reply: within the limits (used <= max_bytes, array elements
 *    <= max_elements, nesting <= max_depth); every node of a known type;
 *    strings inside the reply's bytes (a bulk followed by CRLF, a status
 *    or error after its '+'/'-', no LF inside); each array's `end` is
 *    where its n children's subtrees end, the root's is the tape's length;
 *  - each DONE reply through redis_slots_parse (asked host "asked"): on
 *    success one range per element, with the reply's slots, host (the
 *    asked one for "" or "?") and port; hosts non-empty and NUL-terminated,
 *    lo <= hi < 16384, ports 1..65535, redis_slots_find(lo) gives a
 *    range that holds lo, redis_slots_find(hi + 1) one that holds it or
 *    NULL when none does;
 *  - each error in a reply, NUL-terminated, through redis_redirect_parse:
 *    a redirection has the MOVED/ASK it starts with, a non-empty host
 *    NUL-terminated within its buffer, a port 1..65535, a slot < 16384.
 *
 * URLs ([0] odd), 1 byte of parameters, then the URL (no NUL byte):
 *   [0] bits 1-7: where the key-slot case below splits the bytes
 *   [1] the error buffer: 2 + [1] bytes (2..256), or 512 when 255
 * redis_url_parse as a source and as a sink. Accepted: nhosts 1..16 (1
 * without cluster), hosts non-empty, ports 1..65535, a password non-empty
 * if any, stream and field non-empty, start set, a source has a group,
 * partitions set iff cluster (1..1024), a cluster stream without braces;
 * redis_url_key(u, 0) (and the last partition's) holds the stream name and,
 * in a cluster, has the slot of "i"; the URL is a redis_url_is name; a
 * URL accepted in both roles names the same node in both
 * (redis_url_same_node, both ways); written back canonically (every value
 * %-escaped, every parameter given) it parses as the same URL. Refused:
 * the message is non-empty and NUL-terminated inside its buffer (an
 * exact-size heap block, so ASan sees a write past it), and u is left
 * empty.
 *
 * Both modes: redis_key_slot of the raw bytes is < 16384, and for a key
 * built from them, X{TAG}Y (X without '{', TAG non-empty without '}'), it
 * equals the slot of TAG.
 *
 * A failed check prints what and aborts (libFuzzer keeps the input).
 */
#include "../../src/io/redis_url.h"
#include "../../src/net/redis_cluster.h"
#include "../../src/net/resp.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "fuzz_redis: %s:%d: check failed: %s\n  ", __FILE__, __LINE__, \
                    #cond);                                                                \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

#define MAX_REPLIES 1024

static uint32_t rng(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 16;
}

/* What one read of the pipeline gave: the DONE replies (their `used` and
 * tapes, the nodes of all of them in one array), then the last result. */
typedef struct outcome {
    size_t nreplies;
    size_t used[MAX_REPLIES];
    size_t first[MAX_REPLIES + 1]; /* reply i's nodes: nodes[first[i] .. first[i+1]) */
    resp_node *nodes;
    size_t nnodes, cap;
    int last;       /* RESP_MORE or RESP_BAD (or RESP_DONE: MAX_REPLIES read) */
    char err[160];
} outcome;

static outcome O[3];

static void keep(outcome *o, const resp_reader *r, size_t used)
{
    if (o->nnodes + r->len > o->cap) {
        size_t ncap = o->cap ? o->cap : 64;
        while (ncap < o->nnodes + r->len)
            ncap *= 2;
        o->nodes = realloc(o->nodes, ncap * sizeof *o->nodes);
        CHECK(o->nodes, "out of memory");
        o->cap = ncap;
    }
    memcpy(o->nodes + o->nnodes, r->nodes, r->len * sizeof *r->nodes);
    o->nnodes += r->len;
    o->used[o->nreplies++] = used;
    o->first[o->nreplies] = o->nnodes;
}

/* The checks on one DONE reply: d[0..used) are its bytes. */
static void check_tape(const resp_reader *r, const char *d, size_t used)
{
    CHECK(r->len >= 1, "an empty tape");
    CHECK(used >= 3 || (used == 2 && d[1] == '\n'), "a reply of %zu bytes", used); /* "+\n" at least */
    CHECK(used <= r->max_bytes, "used %zu, max_bytes %zu", used, r->max_bytes);
    CHECK(r->depth == 0, "DONE with %zu arrays open", r->depth);
    size_t elements = 0, maxdepth = 0;
    /* the open arrays while walking (ends of their subtrees) */
    uint32_t ends[16];
    size_t depth = 0;
    for (uint32_t i = 0; i < r->len; i++) {
        while (depth > 0 && ends[depth - 1] == i)
            depth--;
        CHECK(depth == 0 || ends[depth - 1] > i, "node %u past its array's end", i);
        const resp_node *x = &r->nodes[i];
        switch (x->type) {
        case RESP_STATUS:
        case RESP_ERROR:
            CHECK(x->off >= 1 && x->off + x->n <= used, "node %u: [%zu, +%u) outside %zu bytes", i, x->off, x->n,
                  used);
            CHECK(d[x->off - 1] == (x->type == RESP_STATUS ? '+' : '-'), "node %u: after '%c'", i, d[x->off - 1]);
            CHECK(!memchr(d + x->off, '\n', x->n), "node %u: a LF inside a line", i);
            CHECK(x->off + x->n < used && (d[x->off + x->n] == '\n' || d[x->off + x->n] == '\r'),
                  "node %u: not at the end of its line", i);
            break;
        case RESP_BULK:
            CHECK(x->off >= 3 && x->off + x->n + 2 <= used, "node %u: [%zu, +%u) outside %zu bytes", i, x->off,
                  x->n, used);
            CHECK(d[x->off - 1] == '\n', "node %u: not after its line", i);
            CHECK(d[x->off + x->n] == '\r' && d[x->off + x->n + 1] == '\n', "node %u: no CRLF after the bulk", i);
            break;
        case RESP_INT:
        case RESP_NIL:
            break;
        case RESP_ARRAY: {
            elements += x->n;
            CHECK(x->end > i && x->end <= r->len, "node %u: end %u, %zu nodes", i, x->end, r->len);
            /* its n children's subtrees end at `end` (each child's end
             * was checked before, or is checked when we get to it, and
             * nesting is checked by the walk) */
            uint32_t c = i + 1;
            for (uint32_t k = 0; k < x->n; k++) {
                CHECK(c < r->len, "node %u: child %u at %u past the tape (%zu)", i, k, c, r->len);
                CHECK(r->nodes[c].type != RESP_ARRAY || r->nodes[c].end > c, "node %u: bad end", c);
                c = resp_skip(r, c);
            }
            CHECK(c == x->end, "node %u: %u children end at %u, end says %u", i, x->n, c, x->end);
            if (x->n > 0) {
                CHECK(depth < sizeof ends / sizeof ends[0], "depth %zu", depth);
                ends[depth++] = x->end;
                if (depth > maxdepth)
                    maxdepth = depth;
            } else if (depth + 1 > maxdepth) {
                maxdepth = depth + 1;
            }
            break;
        }
        default:
            CHECK(0, "node %u: type %d", i, x->type);
        }
    }
    CHECK(resp_skip(r, 0) == r->len, "the root ends at %u, the tape has %zu nodes", resp_skip(r, 0), r->len);
    CHECK(elements <= r->max_elements && elements == r->elements, "%zu elements (counted %zu), max_elements %zu",
          elements, r->elements, r->max_elements);
    CHECK(maxdepth <= r->max_depth, "arrays nested %zu deep, max_depth %zu", maxdepth, r->max_depth);
}

static void check_slots(const resp_reader *r, const char *d)
{
    redis_slots m;
    if (redis_slots_parse(&m, r, d, "asked") != 0) {
        CHECK(m.r == NULL && m.n == 0, "a refused reply left %zu ranges", m.n);
        return;
    }
    CHECK(r->nodes[0].type == RESP_ARRAY && m.n == r->nodes[0].n, "%zu ranges from a reply of %u elements", m.n,
          r->nodes[0].n);
    uint32_t x = 1;
    for (size_t i = 0; i < m.n; i++, x = resp_skip(r, x)) {
        const redis_slot_range *s = &m.r[i];
        /* [lo, hi, [host, port, ...], ...]: what the reply says */
        const resp_node *h = &r->nodes[x + 4];
        char want[256];
        snprintf(want, sizeof want, "%.*s", (int)h->n, resp_str(h, d));
        if (!want[0] || !strcmp(want, "?"))
            snprintf(want, sizeof want, "asked");
        CHECK(r->nodes[x].type == RESP_ARRAY && s->lo == r->nodes[x + 1].i && s->hi == r->nodes[x + 2].i &&
                  s->port == r->nodes[x + 5].i && !strcmp(s->host, want),
              "range %zu: %u..%u %s:%d, the reply says %lld..%lld %s:%lld", i, s->lo, s->hi, s->host, s->port,
              (long long)r->nodes[x + 1].i, (long long)r->nodes[x + 2].i, want, (long long)r->nodes[x + 5].i);
        size_t hl = strnlen(s->host, sizeof s->host);
        CHECK(hl > 0 && hl < sizeof s->host, "range %zu: a host of %zu bytes", i, hl);
        CHECK(s->lo <= s->hi && s->hi < REDIS_SLOTS, "range %zu: slots %u..%u", i, s->lo, s->hi);
        CHECK(s->port >= 1 && s->port <= 65535, "range %zu: port %d", i, s->port);
        const redis_slot_range *f = redis_slots_find(&m, s->lo);
        CHECK(f && f->lo <= s->lo && s->lo <= f->hi, "slot %u (range %zu, %u..%u): found %s", s->lo, i, s->lo,
              s->hi, f ? "a range without it" : "nothing");
        /* the slot after the range: found in a range that holds it, or in none */
        uint16_t next = (uint16_t)((s->hi + 1) % REDIS_SLOTS);
        f = redis_slots_find(&m, next);
        CHECK(!f || (f->lo <= next && next <= f->hi), "slot %u: found %u..%u", next, f->lo, f->hi);
        for (size_t j = 0; !f && j < m.n; j++)
            CHECK(!(m.r[j].lo <= next && next <= m.r[j].hi), "slot %u: not found, range %zu holds it", next, j);
    }
    redis_slots_free(&m);
}

static void check_redirects(const resp_reader *r, const char *d, size_t hostlen)
{
    for (uint32_t i = 0; i < r->len; i++) {
        const resp_node *x = &r->nodes[i];
        if (x->type != RESP_ERROR)
            continue;
        char *err = malloc(x->n + 1);
        char *host = malloc(hostlen);
        CHECK(err && host, "out of memory");
        memcpy(err, resp_str(x, d), x->n);
        err[x->n] = 0;
        memset(host, 'Z', hostlen);
        int ask = -1, port = -1;
        uint16_t slot = 0xffff;
        if (redis_redirect_parse(err, &ask, &slot, host, hostlen, &port) == 1) {
            CHECK(ask == (strncmp(err, "ASK ", 4) == 0) && (ask || strncmp(err, "MOVED ", 6) == 0),
                  "ask %d for '%s'", ask, err);
            size_t hl = strnlen(host, hostlen);
            /* (empty: Redis 7's "MOVED 3999 :6380", the host asked) */
            CHECK(hl < hostlen, "a host of %zu bytes (buffer %zu) from '%s'", hl, hostlen, err);
            CHECK(port >= 1 && port <= 65535, "port %d from '%s'", port, err);
            CHECK(slot < REDIS_SLOTS, "slot %u from '%s'", slot, err);
        }
        free(err);
        free(host);
    }
}

/* Read the pipeline p[0..n). mode 0: one piece; 1: random pieces; 2: one
 * byte each. */
static void read_pipeline(outcome *o, const uint8_t *data, size_t n, const size_t lim[3], size_t hostlen,
                          uint32_t seed, int mode)
{
    const char *p = (const char *)data;
    resp_reader r;
    resp_init(&r, lim[0], lim[1], lim[2]);
    o->nreplies = o->nnodes = 0;
    o->first[0] = 0;
    o->err[0] = 0;
    size_t start = 0;   /* the current reply's first byte */
    size_t arrived = 0; /* read from the "socket" so far */
    int rc = RESP_MORE;
    while (o->nreplies < MAX_REPLIES) {
        size_t used = SIZE_MAX;
        rc = resp_feed(&r, p + start, arrived - start, &used);
        if (rc == RESP_DONE) {
            CHECK(used <= arrived - start, "used %zu of %zu", used, arrived - start);
            check_tape(&r, p + start, used);
            if (mode == 0) {
                check_slots(&r, p + start);
                check_redirects(&r, p + start, hostlen);
            }
            keep(o, &r, used);
            start += used;
            resp_next_reply(&r);
            continue;
        }
        if (rc == RESP_BAD) {
            CHECK(r.err[0] && strnlen(r.err, sizeof r.err) < sizeof r.err, "a refusal without a message");
            snprintf(o->err, sizeof o->err, "%s", r.err);
            break;
        }
        CHECK(rc == RESP_MORE, "resp_feed returned %d", rc);
        CHECK(arrived - start <= r.max_bytes, "MORE with %zu bytes, max_bytes %zu", arrived - start, r.max_bytes);
        if (arrived == n)
            break;
        size_t piece = mode == 0 ? n : mode == 2 ? 1 : 1 + rng(&seed) % (rng(&seed) % 4 ? 8 : 256);
        if (piece > n - arrived)
            piece = n - arrived;
        arrived += piece;
    }
    o->last = rc;
    resp_free(&r);
}

static void same(const outcome *a, const outcome *b, const char *what)
{
    CHECK(a->nreplies == b->nreplies, "%s: %zu/%zu replies", what, a->nreplies, b->nreplies);
    CHECK(a->last == b->last, "%s: last result %d/%d after %zu replies", what, a->last, b->last, a->nreplies);
    CHECK(strcmp(a->err, b->err) == 0, "%s: '%s' / '%s'", what, a->err, b->err);
    for (size_t i = 0; i < a->nreplies; i++)
        CHECK(a->used[i] == b->used[i], "%s: reply %zu used %zu/%zu", what, i, a->used[i], b->used[i]);
    CHECK(a->nnodes == b->nnodes, "%s: %zu/%zu nodes", what, a->nnodes, b->nnodes);
    for (size_t i = 0; i <= a->nreplies; i++)
        CHECK(a->first[i] == b->first[i], "%s: reply %zu's tape at %zu/%zu", what, i, a->first[i], b->first[i]);
    CHECK(a->nnodes == 0 || memcmp(a->nodes, b->nodes, a->nnodes * sizeof *a->nodes) == 0, "%s: tapes differ",
          what);
}

static void replies(const uint8_t *data, size_t size)
{
    if (size < 5)
        return;
    uint32_t seed = data[0] >> 1;
    size_t lim[3] = { data[1] == 255 ? 64u * 1024 * 1024 : 16 + (size_t)data[1] * 16,
                      data[2] == 255 ? 1u << 20 : 1 + (size_t)data[2], 1 + (size_t)data[3] % 8 };
    size_t hostlen = 1 + (size_t)data[4];
    const uint8_t *p = data + 5;
    size_t n = size - 5;
    int modes = n <= 1024 ? 3 : 2;
    for (int m = 0; m < modes; m++)
        read_pipeline(&O[m], p, n, lim, hostlen, seed, m);
    same(&O[0], &O[1], "one piece vs random pieces");
    if (modes == 3)
        same(&O[0], &O[2], "one piece vs byte by byte");
}

static int has(const char *s, const char *sub)
{
    return strstr(s, sub) != NULL;
}

static void check_canonical(const redis_url *u, int role);

static void check_url(const redis_url *u, const char *s, int role)
{
    CHECK(redis_url_is(s), "accepted, not a redis URL: '%s'", s);
    CHECK(u->nhosts >= 1 && u->nhosts <= REDIS_URL_MAX_HOSTS && (u->cluster || u->nhosts == 1),
          "%zu hosts (cluster %d)", u->nhosts, u->cluster);
    for (size_t i = 0; i < u->nhosts; i++) {
        CHECK(u->hosts[i].host && u->hosts[i].host[0], "host %zu empty", i);
        CHECK(u->hosts[i].port >= 1 && u->hosts[i].port <= 65535, "host %zu: port %d", i, u->hosts[i].port);
    }
    CHECK(!u->password || u->password[0], "an empty password");
    CHECK(u->stream && u->stream[0], "no stream");
    CHECK(u->field && u->field[0], "no field");
    CHECK(u->start && u->start[0], "no start");
    CHECK(role == REDIS_URL_SINK || (u->group && u->group[0]), "a source without a group");
    CHECK(role == REDIS_URL_SOURCE || (!u->group && !u->consumer), "a sink with a group or consumer");
    CHECK(!u->consumer || u->consumer[0], "an empty consumer");
    CHECK(u->cluster ? u->partitions >= 1 && u->partitions <= REDIS_URL_MAX_PARTITIONS : u->partitions == 0,
          "partitions %u, cluster %d", u->partitions, u->cluster);
    CHECK(!u->cluster || (!strchr(u->stream, '{') && !strchr(u->stream, '}')), "a cluster stream '%s'", u->stream);
    uint32_t last = u->partitions ? u->partitions - 1 : 0;
    for (int k = 0; k < 2; k++) {
        uint32_t i = k ? last : 0;
        char *key = redis_url_key(u, i);
        CHECK(key && has(key, u->stream), "key %u: '%s' for stream '%s'", i, key ? key : "(null)", u->stream);
        if (u->cluster) {
            char tag[16];
            int tn = snprintf(tag, sizeof tag, "%u", i);
            CHECK(redis_key_slot(key, strlen(key)) == redis_key_slot(tag, (size_t)tn),
                  "partition %u's key '%s' is not in the slot of '%s'", i, key, tag);
        } else {
            CHECK(strcmp(key, u->stream) == 0, "key '%s' for stream '%s'", key, u->stream);
        }
        free(key);
    }
    CHECK(redis_url_same_node(u, u), "not the same node as itself: '%s'", s);
    check_canonical(u, role);
}

/* A growing string for the canonical URL. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void put(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        CHECK(b->p, "out of memory");
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void puts_(sbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* s with every byte but [A-Za-z0-9] %-escaped */
static void put_escaped(sbuf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char e[4];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            put(b, (const char *)&c, 1);
        else
            put(b, e, (size_t)snprintf(e, sizeof e, "%%%02X", c));
    }
}

static void put_param(sbuf *b, const char *k, const char *v)
{
    put(b, "&", 1);
    puts_(b, k);
    put(b, "=", 1);
    put_escaped(b, v);
}

static void put_num(sbuf *b, const char *k, uint64_t x)
{
    char v[24];
    snprintf(v, sizeof v, "%llu", (unsigned long long)x);
    put_param(b, k, v);
}

static int same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The URL u was parsed from, written canonically (every value %-escaped,
 * every parameter given), parses as the same URL. */
static void check_canonical(const redis_url *u, int role)
{
    sbuf b = { 0 };
    puts_(&b, u->cluster ? "redis+cluster://" : "redis://");
    if (u->password) {
        put(&b, ":", 1);
        put_escaped(&b, u->password);
        put(&b, "@", 1);
    }
    for (size_t i = 0; i < u->nhosts; i++) {
        char port[16];
        if (i)
            put(&b, ",", 1);
        /* an IPv6 address (a ':' and no ']') goes in brackets: bare, its
         * leading ':' would read as :PASSWORD */
        const char *h = u->hosts[i].host;
        int br = h[0] == '[' || (strchr(h, ':') && !strchr(h, ']'));
        if (br)
            put(&b, "[", 1);
        puts_(&b, h);
        if (br)
            put(&b, "]", 1);
        put(&b, port, (size_t)snprintf(port, sizeof port, ":%d", u->hosts[i].port));
    }
    put(&b, "?", 1);
    put_param(&b, "stream", u->stream);
    put_param(&b, "field", u->field);
    if (u->partitions)
        put_num(&b, "partitions", u->partitions);
    if (role == REDIS_URL_SOURCE) {
        put_param(&b, "group", u->group);
        if (u->consumer)
            put_param(&b, "consumer", u->consumer);
        put_param(&b, "start", u->start);
        if (u->count)
            put_num(&b, "count", u->count);
        put_num(&b, "claim_idle_ms", u->claim_idle_ms);
        put_num(&b, "max_deliveries", u->max_deliveries);
        if (u->until_empty)
            put_param(&b, "until", "empty");
    } else if (u->maxlen) {
        put_num(&b, "maxlen", u->maxlen);
    }
    redis_url v;
    char err[512];
    int rc = redis_url_parse(&v, b.p, role, err, sizeof err);
    CHECK(rc == 0, "the canonical '%s' is refused: %s", b.p, err);
    int same = v.cluster == u->cluster && same_str(v.password, u->password) && v.nhosts == u->nhosts &&
               same_str(v.stream, u->stream) && same_str(v.field, u->field) && same_str(v.group, u->group) &&
               same_str(v.consumer, u->consumer) && v.count == u->count && v.claim_idle_ms == u->claim_idle_ms &&
               v.max_deliveries == u->max_deliveries && same_str(v.start, u->start) &&
               v.until_empty == u->until_empty && v.maxlen == u->maxlen && v.partitions == u->partitions;
    for (size_t i = 0; same && i < u->nhosts; i++)
        same = same_str(v.hosts[i].host, u->hosts[i].host) && v.hosts[i].port == u->hosts[i].port;
    CHECK(same, "the canonical '%s' parses as another URL", b.p);
    redis_url_free(&v);
    free(b.p);
}

static void check_refusal(const redis_url *u, const char *err, size_t errlen)
{
    size_t l = strnlen(err, errlen);
    CHECK(l > 0 && l < errlen, "a message of %zu bytes (buffer %zu)", l, errlen);
    static const redis_url empty;
    CHECK(memcmp(u, &empty, sizeof *u) == 0, "a refused URL left fields set");
}

static void urls(const uint8_t *data, size_t size)
{
    if (size < 2)
        return;
    size_t errlen = data[1] == 255 ? 512 : 2 + (size_t)data[1];
    const char *p = (const char *)data + 2;
    size_t n = size - 2;
    if (memchr(p, 0, n))
        return;
    char *s = malloc(n + 1);
    char *err = malloc(errlen);
    CHECK(s && err, "out of memory");
    memcpy(s, p, n);
    s[n] = 0;
    redis_url u[2];
    int ok[2];
    for (int role = 0; role < 2; role++) {
        memset(err, 'Z', errlen);
        ok[role] = redis_url_parse(&u[role], s, role, err, errlen) == 0;
        if (ok[role])
            check_url(&u[role], s, role);
        else
            check_refusal(&u[role], err, errlen);
    }
    if (ok[0] && ok[1])
        CHECK(redis_url_same_node(&u[0], &u[1]) && redis_url_same_node(&u[1], &u[0]),
              "as a source and as a sink, not the same node: '%s'", s);
    for (int role = 0; role < 2; role++)
        if (ok[role])
            redis_url_free(&u[role]);
    free(s);
    free(err);
}

/* redis_key_slot on the raw bytes, and on X{TAG}Y built from them. */
static void key_slots(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    CHECK(redis_key_slot(p, size) < REDIS_SLOTS, "a slot past 16383");
    if (size < 2)
        return;
    /* X: the bytes before k, '{' made '('; TAG: from k, up to 64 bytes,
     * '}' made ')'; Y: the rest as it is. */
    size_t k = (data[0] >> 1) % size, tn = size - k < 64 ? size - k : 64;
    char *key = malloc(size + 2);
    CHECK(key, "out of memory");
    for (size_t i = 0; i < k; i++)
        key[i] = p[i] == '{' ? '(' : p[i];
    key[k] = '{';
    char *tag = key + k + 1;
    for (size_t i = 0; i < tn; i++)
        tag[i] = p[k + i] == '}' ? ')' : p[k + i];
    key[k + 1 + tn] = '}';
    memcpy(key + k + 2 + tn, p + k + tn, size - k - tn);
    uint16_t a = redis_key_slot(key, size + 2), b = redis_key_slot(tag, tn);
    CHECK(a == b, "slot %u for the key, %u for its tag (%zu bytes at %zu)", a, b, tn, k);
    free(key);
}

static void finish(void)
{
    for (int i = 0; i < 3; i++)
        free(O[i].nodes);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    atexit(finish);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1)
        urls(data, size);
    else
        replies(data, size);
    key_slots(data, size);
    return 0;
}
