/*
 * keys.c: object member names: marking repeated keys while parsing
 * (JSON_DUP; part of the parser, lex.h) and looking a member up by name
 * (json_member). Names are compared decoded, so "a" and "\u0061" are the
 * same key.
 */
#include "lex.h"

#include <stdlib.h>
#include <string.h>

/* The name of key node k for comparison: raw bytes inside the quotes, or
 * its decoded form appended to scratch (then *off says where). */
typedef struct keyname {
    const char *s;
    size_t n, off;
    int decoded;
    uint32_t pos;
} keyname;

static int key_eq(const keyname *a, const keyname *b)
{
    return a->n == b->n && memcmp(a->s, b->s, a->n) == 0;
}

static int key_cmp(const void *x, const void *y)
{
    const keyname *a = x, *b = y;
    size_t n = a->n < b->n ? a->n : b->n;
    int c = memcmp(a->s, b->s, n);
    if (c)
        return c;
    if (a->n != b->n)
        return a->n < b->n ? -1 : 1;
    return a->pos < b->pos ? -1 : a->pos > b->pos;
}

/* Mark `dup` a repeat of the earlier key `first`, which keeps its position
 * and gets the index of the value kept (the last repeat's). */
static void mark(json_parser *p, const keyname *first, const keyname *dup)
{
    json_node *nodes = p->t->nodes;
    nodes[dup->pos].flags |= JSON_DUP;
    nodes[first->pos].n = dup->pos + 1;
    p->t->dups++;
}

/* The names of the n members of object `obj` into k; escaped ones are
 * decoded into scratch. 0 or -1 (out of memory). */
static int collect(json_parser *p, uint32_t obj, uint32_t n, keyname *k, mw_buf *scratch)
{
    json_node *nodes = p->t->nodes;
    mw_buf one = { NULL, 0, 0 };
    uint32_t idx = obj + 1;
    for (uint32_t m = 0; m < n; m++) {
        json_node *key = &nodes[idx];
        k[m].pos = idx;
        k[m].decoded = (key->flags & JSON_ESCAPED) != 0;
        if (k[m].decoded) {
            if (json_unescape((const char *)p->s, key, &one) || mw_buf_add(scratch, one.p, one.len)) {
                free(one.p);
                return json_fail(p, key->off, "%s", "out of memory parsing JSON");
            }
            k[m].off = scratch->len - one.len;
            k[m].n = one.len;
        } else {
            k[m].s = (const char *)p->s + key->off + 1;
            k[m].n = key->len - 2;
        }
        idx = nodes[idx + 1].end;
    }
    free(one.p);
    for (uint32_t m = 0; m < n; m++)
        if (k[m].decoded)
            k[m].s = scratch->p + k[m].off;
    return 0;
}

/* Up to 32 names: most objects have no duplicate, and a 64-bit filter on
 * (length, first byte, last byte) proves it without comparing pairs. */
static void find_few(json_parser *p, keyname *k, uint32_t n)
{
    uint64_t seen = 0;
    int maybe = 0;
    for (uint32_t m = 0; m < n && !maybe; m++) {
        unsigned h = (unsigned)k[m].n * 31u;
        if (k[m].n)
            h += (unsigned char)k[m].s[0] * 7u + (unsigned char)k[m].s[k[m].n - 1];
        uint64_t bit = 1ULL << (h & 63);
        maybe = (seen & bit) != 0;
        seen |= bit;
    }
    for (uint32_t j = 1; maybe && j < n; j++)
        for (uint32_t i = 0; i < j; i++)
            if (key_eq(&k[i], &k[j])) {
                mark(p, &k[i], &k[j]);
                break;
            }
}

/* More names: sorted by (name, position), repeats are neighbours. */
static void find_many(json_parser *p, keyname *k, uint32_t n)
{
    qsort(k, n, sizeof *k, key_cmp);
    uint32_t first = 0;
    for (uint32_t j = 1; j < n; j++) {
        if (key_eq(&k[j - 1], &k[j]))
            mark(p, &k[first], &k[j]);
        else
            first = j;
    }
}

/* Nonzero when the n names of object `obj` may hold a repeat: an escaped
 * name, more than 32, or two names alike in find_few's filter. The usual
 * object (a few plain names, all different) is proven free of repeats here
 * without collecting its names. */
static int may_repeat(const json_parser *p, uint32_t obj, uint32_t n)
{
    if (n > 32)
        return 1;
    const json_node *nodes = p->t->nodes;
    const unsigned char *text = p->s;
    uint64_t seen = 0;
    uint32_t idx = obj + 1;
    for (uint32_t m = 0; m < n; m++, idx = nodes[idx + 1].end) {
        const json_node *key = &nodes[idx];
        if (key->flags & JSON_ESCAPED)
            return 1;
        size_t len = key->len - 2;
        unsigned h = (unsigned)len * 31u;
        if (len)
            h += text[key->off + 1] * 7u + text[key->off + len];
        uint64_t bit = 1ULL << (h & 63);
        if (seen & bit)
            return 1;
        seen |= bit;
    }
    return 0;
}

int json_mark_duplicates(json_parser *p, uint32_t obj)
{
    uint32_t n = p->t->nodes[obj].n;
    if (n < 2 || !may_repeat(p, obj, n))
        return 0;
    keyname small[32], *k = n <= 32 ? small : malloc((size_t)n * sizeof *k);
    if (!k)
        return json_fail(p, p->t->nodes[obj].off, "%s", "out of memory parsing JSON");
    mw_buf scratch = { NULL, 0, 0 };
    int rc = collect(p, obj, n, k, &scratch);
    if (rc == 0 && n <= 32)
        find_few(p, k, n);
    else if (rc == 0)
        find_many(p, k, n);
    free(scratch.p);
    if (k != small)
        free(k);
    return rc;
}

int json_member(const json_tape *t, const char *text, uint32_t obj, const char *name, size_t n)
{
    const json_node *nodes = t->nodes;
    if (obj >= t->n || nodes[obj].type != JSON_OBJECT)
        return -1;
    uint32_t k = obj + 1;
    int found = -1;
    mw_buf tmp = { NULL, 0, 0 };
    for (uint32_t m = 0; m < nodes[obj].n; m++, k = nodes[k + 1].end) {
        const json_node *key = &nodes[k];
        const char *s = text + key->off + 1;
        size_t len = key->len - 2;
        if (key->flags & JSON_ESCAPED) {
            if (json_unescape(text, key, &tmp))
                continue;
            s = tmp.p;
            len = tmp.len;
        }
        if (len == n && memcmp(s, name, n) == 0)
            found = (int)(k + 1); /* the last one wins, as when decoded */
    }
    free(tmp.p);
    return found;
}
