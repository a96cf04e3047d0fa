/*
 * parse.c: the tape builder of the strict RFC 8259 parser (json.h): reads
 * one JSON text into a tape, token by token, with an explicit stack of open
 * containers; owns the parser's error messages. Strings, numbers and
 * repeated keys are read by string.c, number.c and keys.c (lex.h).
 *
 * Strict means: whatever is not RFC 8259 is refused with the byte where it
 * went wrong, never repaired. No byte-order mark, no NUL byte, no control
 * character inside a string, no invalid UTF-8 (overlong forms, UTF-16
 * surrogates, code points above U+10FFFF), no lone surrogate escapes, no
 * leading zeros, no '+', hex, NaN or Infinity, no trailing commas, nothing
 * after the value, nesting at most JSON_MAX_DEPTH deep, and no number that
 * overflows a double.
 *
 * The parser is iterative, so a hostile depth costs a bounded C stack. It
 * allocates only to grow the tape (and, for objects with escaped keys, a
 * scratch buffer to compare names).
 */
#include "lex.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int json_fail(json_parser *p, size_t at, const char *fmt, const char *arg)
{
    char what[256];
    snprintf(what, sizeof what, fmt, arg);
    snprintf(p->err, p->errlen, "malformed JSON at byte %zu: %s", at + 1, what);
    return -1;
}

/* Describe the byte at `at` for an "unexpected" message. */
static int fail_byte(json_parser *p, size_t at, const char *expected)
{
    char what[220];
    if (at >= p->len) {
        snprintf(what, sizeof what, "the line ends where %s was expected", expected);
        return json_fail(p, p->len ? p->len - 1 : 0, "%s", what);
    }
    unsigned char c = p->s[at];
    if (c == 0)
        snprintf(what, sizeof what, "a NUL byte where %s was expected", expected);
    else if (c < 0x20 || c == 0x7f)
        snprintf(what, sizeof what, "control character 0x%02x where %s was expected", c, expected);
    else if (c >= 0x80)
        snprintf(what, sizeof what, "byte 0x%02x where %s was expected", c, expected);
    else
        snprintf(what, sizeof what, "'%c' where %s was expected", c, expected);
    return json_fail(p, at, "%s", what);
}

static inline void skip_ws(json_parser *p)
{
    while (p->i < p->len) {
        unsigned char c = p->s[p->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->i++;
    }
}

/* A new node at p->i, at the current depth. NULL when out of memory. */
static json_node *add(json_parser *p, int type)
{
    json_tape *t = p->t;
    if (t->n == t->cap) {
        /* From 16 (768 bytes): a record's tape stays with it while it is
         * in flight, so 64 nodes (3 KiB) for a typical record of ~20 made
         * the tape most of the memory per in-flight record. Tapes are
         * reused, so each grows once. */
        uint32_t cap = t->cap ? t->cap * 2 : 16;
        json_node *n = realloc(t->nodes, (size_t)cap * sizeof *n);
        if (!n) {
            snprintf(p->err, p->errlen, "out of memory parsing JSON");
            return NULL;
        }
        t->nodes = n;
        t->cap = cap;
    }
    json_node *x = &t->nodes[t->n++];
    x->type = (uint8_t)type;
    x->flags = 0;
    x->depth = (uint16_t)p->depth;
    x->off = (uint32_t)p->i;
    x->len = 0;
    x->n = 0;
    x->end = t->n;
    x->anchor = 0;
    x->v.u = 0;
    x->user = NULL;
    return x;
}

static int literal(json_parser *p, json_node *x, const char *word, size_t n)
{
    if (p->len - p->i < n || memcmp(p->s + p->i, word, n) != 0)
        return json_fail(p, p->i, "%s", "invalid literal (JSON has true, false and null; not NaN or Infinity)");
    p->i += n;
    x->len = (uint32_t)n;
    if (p->i < p->len) {
        unsigned char c = p->s[p->i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')
            return json_fail(p, x->off, "%s", "invalid literal (JSON has true, false and null; not NaN or Infinity)");
    }
    return 0;
}

/* What the parser expects next. */
enum { S_VALUE, S_KEY, S_AFTER_VALUE, S_END, S_ERROR };

/* Close the innermost open container at p->i (its closing byte read). */
static int close_container(json_parser *p)
{
    uint32_t idx = p->stack[--p->depth];
    json_node *x = &p->t->nodes[idx];
    x->end = p->t->n;
    x->len = (uint32_t)(p->i - x->off);
    if (x->type == JSON_OBJECT && json_mark_duplicates(p, idx))
        return S_ERROR;
    return S_AFTER_VALUE;
}

/* '{' or '[' at p->i. */
static int open_container(json_parser *p, unsigned char c)
{
    json_tape *t = p->t;
    if (p->depth >= JSON_MAX_DEPTH)
        return json_fail(p, p->i, "nesting deeper than %s levels", "1000"), S_ERROR;
    if (!add(p, c == '{' ? JSON_OBJECT : JSON_ARRAY))
        return S_ERROR;
    t->containers++;
    p->stack[p->depth++] = t->n - 1;
    if (p->depth > t->max_depth)
        t->max_depth = p->depth;
    p->i++;
    skip_ws(p);
    if (p->i < p->len && p->s[p->i] == (c == '{' ? '}' : ']')) {
        p->i++;
        return close_container(p);
    }
    return c == '{' ? S_KEY : S_VALUE;
}

/* A value at p->i (after whitespace). */
static int value(json_parser *p)
{
    json_tape *t = p->t;
    skip_ws(p);
    if (p->i >= p->len)
        return fail_byte(p, p->i, "a value"), S_ERROR;
    if (p->depth > 0 && t->nodes[p->stack[p->depth - 1]].type == JSON_ARRAY)
        t->nodes[p->stack[p->depth - 1]].n++;
    unsigned char c = p->s[p->i];
    json_node *x;
    switch (c) {
    case '{':
    case '[':
        return open_container(p, c);
    case '"':
        if (!(x = add(p, JSON_STRING)) || json_lex_string(p, x))
            return S_ERROR;
        if (x->flags & JSON_ESCAPED)
            t->escaped++;
        return S_AFTER_VALUE;
    case 't':
        return !(x = add(p, JSON_TRUE)) || literal(p, x, "true", 4) ? S_ERROR : S_AFTER_VALUE;
    case 'f':
        return !(x = add(p, JSON_FALSE)) || literal(p, x, "false", 5) ? S_ERROR : S_AFTER_VALUE;
    case 'n':
        return !(x = add(p, JSON_NULL)) || literal(p, x, "null", 4) ? S_ERROR : S_AFTER_VALUE;
    case '+':
        return json_fail(p, p->i, "%s", "invalid number: a leading '+' is not allowed"), S_ERROR;
    case '.':
        return json_fail(p, p->i, "%s", "invalid number: a digit must come before '.'"), S_ERROR;
    case 'N':
    case 'I':
        json_fail(p, p->i, "%s", "invalid literal (JSON has true, false and null; not NaN or Infinity)");
        return S_ERROR;
    default:
        if (c == '-' || (c >= '0' && c <= '9'))
            return !(x = add(p, JSON_NUMBER)) || json_lex_number(p, x) ? S_ERROR : S_AFTER_VALUE;
        return fail_byte(p, p->i, "a value"), S_ERROR;
    }
}

/* An object key and its ':' at p->i (after whitespace). */
static int key(json_parser *p)
{
    json_tape *t = p->t;
    skip_ws(p);
    if (p->i >= p->len || p->s[p->i] != '"')
        return fail_byte(p, p->i, "a string key"), S_ERROR;
    json_node *k = add(p, JSON_STRING);
    if (!k || json_lex_string(p, k))
        return S_ERROR;
    if (k->flags & JSON_ESCAPED)
        t->escaped++;
    t->keys++;
    t->nodes[p->stack[p->depth - 1]].n++;
    skip_ws(p);
    if (p->i >= p->len || p->s[p->i] != ':')
        return fail_byte(p, p->i, "':'"), S_ERROR;
    p->i++;
    return S_VALUE;
}

/* After a value: ',' or the innermost container's end, or the end of the
 * text at depth 0. */
static int after_value(json_parser *p)
{
    if (p->depth == 0)
        return S_END;
    skip_ws(p);
    int obj = p->t->nodes[p->stack[p->depth - 1]].type == JSON_OBJECT;
    if (p->i < p->len && p->s[p->i] == ',') {
        p->i++;
        return obj ? S_KEY : S_VALUE;
    }
    if (p->i < p->len && p->s[p->i] == (obj ? '}' : ']')) {
        p->i++;
        return close_container(p);
    }
    return fail_byte(p, p->i, obj ? "',' or '}'" : "',' or ']'"), S_ERROR;
}

/* What may come first: no byte-order mark; an object for a record. */
static int start(json_parser *p, int opts)
{
    if (p->len >= UINT32_MAX)
        return json_fail(p, 0, "%s", "a JSON text of 4 GiB or more is not supported");
    if (p->len >= 3 && memcmp(p->s, "\xef\xbb\xbf", 3) == 0)
        return json_fail(p, 0, "%s", "a byte-order mark (U+FEFF) at the start");
    skip_ws(p);
    if (p->i >= p->len)
        return fail_byte(p, p->i, (opts & JSON_TOP_OBJECT) ? "a JSON object" : "a JSON value");
    if ((opts & JSON_TOP_OBJECT) && p->s[p->i] != '{') {
        unsigned char c = p->s[p->i];
        if (c == '[' || c == '"' || c == '-' || (c >= '0' && c <= '9') || c == 't' || c == 'f' || c == 'n')
            return json_fail(p, p->i, "%s", "a record must be a JSON object ({...})");
        return fail_byte(p, p->i, "a JSON object");
    }
    return 0;
}

int json_parse(json_tape *t, const char *text, size_t len, int opts, char *err, size_t errlen)
{
    json_parser ps, *p = &ps;
    p->s = (const unsigned char *)text;
    p->len = len;
    p->i = 0;
    p->t = t;
    p->err = err;
    p->errlen = errlen;
    p->depth = 0;
    t->n = 0;
    t->max_depth = t->escaped = t->bigints = t->containers = t->keys = t->dups = 0;
    if (start(p, opts))
        return -1;
    int s = S_VALUE;
    while (s != S_END) {
        switch (s) {
        case S_VALUE: s = value(p); break;
        case S_KEY: s = key(p); break;
        case S_AFTER_VALUE: s = after_value(p); break;
        default: return -1;
        }
    }
    skip_ws(p);
    if (p->i < len)
        return fail_byte(p, p->i, "the end of the line (one JSON value per line)");
    return 0;
}

int json_tape_copy(json_tape *dst, const json_tape *src)
{
    if (dst->cap < src->n) {
        json_node *v = realloc(dst->nodes, (size_t)src->n * sizeof *v);
        if (!v)
            return -1;
        dst->nodes = v;
        dst->cap = src->n;
    }
    if (src->n)
        memcpy(dst->nodes, src->nodes, (size_t)src->n * sizeof *src->nodes);
    dst->n = src->n;
    dst->max_depth = src->max_depth;
    dst->escaped = src->escaped;
    dst->bigints = src->bigints;
    dst->containers = src->containers;
    dst->keys = src->keys;
    dst->dups = src->dups;
    return 0;
}

void json_tape_free(json_tape *t)
{
    free(t->nodes);
    t->nodes = NULL;
    t->n = t->cap = 0;
}
