/*
 * record.c: a record's way into a script's VM (contract in script.h): parse
 * an input line with the codec, recognise a watermark line, read the
 * event-time field and keyed mode's key field off the tape (no Lua for
 * any of them; one field-path reader serves both), then build the record
 * and hand out its doc, which anchors the decoded table, as the caller's
 * script_rec (for script_invoke in invoke.c, or script_rec_free).
 *
 * Called by src/app for every input line, and again for each retry.
 */
#include "script.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/siphash.h"

/* ---- field paths ("a.b.c") -------------------------------------------- */

/* (contract in script_int.h; also batch.c's --batch-key) */
char **script_path_split(const char *field)
{
    size_t n = 1;
    for (const char *p = field; *p; p++)
        n += *p == '.';
    char **path = calloc(n + 1, sizeof *path);
    char *copy = strdup(field), *save = NULL;
    size_t i = 0;
    if (path && copy)
        for (char *tok = strtok_r(copy, ".", &save); tok && i < n; tok = strtok_r(NULL, ".", &save)) {
            if (!(path[i] = strdup(tok)))
                break;
            i++;
        }
    free(copy);
    if (i != n || i == 0) {
        script_path_free(path);
        return NULL;
    }
    return path;
}

void script_path_free(char **path)
{
    for (char **k = path; k && *k; k++)
        free(*k);
    free(path);
}

/* The node at `path` in the parsed tape, or -1 when a part is missing (or
 * a parent is not an object). */
static int path_node(char **path, const json_tape *t, const char *text)
{
    int node = 0;
    for (char **k = path; *k && node >= 0; k++)
        node = t->nodes[node].type == JSON_OBJECT ? json_member(t, text, (uint32_t)node, *k, strlen(*k)) : -1;
    return node;
}

/* The path written back as "a.b.c" (cut to fit), for messages. */
static void path_name(char **path, char *out, size_t n)
{
    out[0] = 0;
    for (char **k = path; *k; k++) {
        if (k != path)
            strncat(out, ".", n - strlen(out) - 1);
        strncat(out, *k, n - strlen(out) - 1);
    }
}

int script_set_event_time(script *sc, const char *field)
{
    return (sc->ts_path = script_path_split(field)) ? 0 : -1;
}

/* The event-time field's value in the parsed tape: 0 with *ms, or -1. */
static int read_event_time(script *sc, const json_tape *t, const char *text, int64_t *ms)
{
    int node = path_node(sc->ts_path, t, text);
    if (node < 0)
        return -1;
    const json_node *x = &t->nodes[node];
    if (x->type != JSON_NUMBER || (x->flags & (JSON_I64 | JSON_U64)) || !isfinite(x->v.d) ||
        fabs(x->v.d) >= 9.0e15)
        return -1;
    *ms = (int64_t)floor(x->v.d);
    return 0;
}

/* ---- keyed mode's key ------------------------------------------------------ */

int script_set_key(script *sc, const char *field, uint64_t seed)
{
    sc->key_k0 = mw_splitmix64(seed);
    sc->key_k1 = mw_splitmix64(sc->key_k0 ^ seed);
    return (sc->key_path = script_path_split(field)) ? 0 : -1;
}

/* The hash of one canonical key: a type tag (folded into the SipHash key,
 * so "1" the string and 1 the number differ) and its bytes. Never
 * SCRIPT_NO_KEY. */
static uint64_t key_hash(const script *sc, int tag, const void *p, size_t n)
{
    uint64_t h = mw_siphash13(sc->key_k0 + (uint64_t)tag, sc->key_k1, p, n);
    return h == SCRIPT_NO_KEY ? 1 : h;
}

static uint64_t key_int(const script *sc, int tag, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i)); /* the same bytes on every host */
    return key_hash(sc, tag, b, 8);
}

/* A number by its value: integers exactly (up to 64 bits, whatever their
 * spelling: 1, 1.0 and 1e0 are one key; -0 is 0), other numbers by their
 * double. */
static uint64_t key_number(const script *sc, const json_node *x)
{
    if (x->flags & JSON_I64)
        return key_int(sc, 'i', (uint64_t)x->v.i);
    if (x->flags & JSON_U64)
        return x->v.u > INT64_MAX ? key_int(sc, 'u', x->v.u) : key_int(sc, 'i', x->v.u);
    double d = x->v.d;
    if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0)
        return key_int(sc, 'i', (uint64_t)(int64_t)d);
    if (d == floor(d) && d >= 9223372036854775808.0 && d < 18446744073709551616.0)
        return key_int(sc, 'u', (uint64_t)d);
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    return key_int(sc, 'd', bits);
}

/* The key field's canonical key in the parsed tape: 0 with *key
 * (SCRIPT_NO_KEY when the field is missing or null), or -1 with err for an
 * object or an array. A string is its decoded text ("\u0061" is "a"). */
static int read_key(script *sc, const json_tape *t, const char *text, uint64_t *key, char *err, size_t errlen)
{
    int node = path_node(sc->key_path, t, text);
    const json_node *x = node >= 0 ? &t->nodes[node] : NULL;
    if (!x || x->type == JSON_NULL) {
        *key = SCRIPT_NO_KEY;
        return 0;
    }
    switch (x->type) {
    case JSON_TRUE:
    case JSON_FALSE:
        *key = key_hash(sc, x->type == JSON_TRUE ? 't' : 'f', "", 0);
        return 0;
    case JSON_NUMBER:
        *key = key_number(sc, x);
        return 0;
    case JSON_STRING:
        if (!(x->flags & JSON_ESCAPED)) {
            *key = key_hash(sc, 's', text + x->off + 1, x->len - 2);
            return 0;
        }
        mw_buf b = { 0 };
        if (json_unescape(text, x, &b) != 0) {
            free(b.p);
            snprintf(err, errlen, "out of memory reading the key field");
            return -1;
        }
        *key = key_hash(sc, 's', b.p, b.len);
        free(b.p);
        return 0;
    default: {
        char field[256];
        path_name(sc->key_path, field, sizeof field);
        snprintf(err, errlen, "key field '%s' is an %s; a key must be a string, a number, a boolean or null", field,
                 x->type == JSON_OBJECT ? "object" : "array");
        return -1;
    }
    }
}

int script_key(script *sc, const char *line, size_t len, uint64_t *key)
{
    *key = SCRIPT_NO_KEY;
    if (!sc->key_path)
        return 0;
    json_tape t = { 0 };
    char err[256];
    int rc = json_parse(&t, line, len, JSON_TOP_OBJECT, err, sizeof err) == 0 ? read_key(sc, &t, line, key, err, sizeof err)
                                                                             : -1;
    json_tape_free(&t);
    return rc;
}

/* A watermark line (the root has "$watermark"): 1 with p filled, -1 with
 * err when it is not exactly {"$watermark": N}, 0 for a record. */
static int read_watermark(const json_tape *t, const char *line, script_parsed *p, char *err, size_t errlen)
{
    int wm = json_member(t, line, 0, "$watermark", 10);
    if (wm < 0)
        return 0;
    const json_node *x = &t->nodes[wm];
    if (t->nodes[0].n != 1 || x->type != JSON_NUMBER || (x->flags & (JSON_I64 | JSON_U64)) ||
        x->v.d != floor(x->v.d) || fabs(x->v.d) > 9.0e15) {
        snprintf(err, errlen, "a watermark line must be exactly {\"$watermark\": N} with N an integer (ms)");
        return -1;
    }
    p->is_watermark = 1;
    p->watermark = (int64_t)x->v.d;
    return 1;
}

/* Build the parsed tape's record: its doc holds the decoded table, and
 * nothing stays on the stack. */
static script_rec *build(script *sc)
{
    codec_doc *d = codec_build(&sc->codec, sc->rt.L);
    lua_pop(sc->rt.L, 1);
    return d;
}

int script_classify(script *sc, const char *line, size_t len, script_parsed *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    if (codec_parse(&sc->codec, line, len, err, errlen) != 0)
        return -1;
    const json_tape *t = codec_pending(&sc->codec);
    int wm = read_watermark(t, line, p, err, errlen);
    if (wm != 0)
        return wm > 0 ? 0 : -1;
    if (sc->ts_path) {
        if (read_event_time(sc, t, line, &p->ts) != 0) {
            char field[256];
            path_name(sc->ts_path, field, sizeof field);
            snprintf(err, errlen, "event-time field '%s' is missing or not a number (ms)", field);
            return -1;
        }
        p->has_ts = 1;
    }
    if (sc->key_path && read_key(sc, t, line, &p->key, err, errlen) != 0)
        return -1;
    return 0;
}

script_rec *script_build(script *sc)
{
    return build(sc);
}

int script_parse(script *sc, const char *line, size_t len, script_parsed *p, script_rec **rec, char *err,
                 size_t errlen)
{
    *rec = NULL;
    if (script_classify(sc, line, len, p, err, errlen) != 0)
        return -1;
    if (!p->is_watermark)
        *rec = build(sc); /* the tape classify left pending */
    return 0;
}

int script_reparse(script *sc, const char *line, size_t len, script_rec **rec)
{
    char err[256];
    *rec = NULL;
    if (codec_parse(&sc->codec, line, len, err, sizeof err) != 0)
        return -1;
    *rec = build(sc);
    return 0;
}

/* One allocation: the tape's nodes follow it (a record sent to another
 * worker costs one malloc here, not two). */
struct script_tape {
    json_tape t;
    json_node nodes[];
};

script_tape *script_tape_keep(const script *sc)
{
    const json_tape *src = codec_pending(&sc->codec);
    script_tape *tp = malloc(sizeof *tp + (size_t)src->n * sizeof *src->nodes);
    if (!tp)
        return NULL;
    tp->t = (json_tape){ .nodes = tp->nodes, .cap = src->n };
    json_tape_copy(&tp->t, src); /* (fits: nothing to grow, cannot fail) */
    return tp;
}

void script_tape_free(script_tape *tp)
{
    free(tp); /* (its nodes with it) */
}

int script_rebuild(script *sc, const char *line, size_t len, const script_tape *tp, script_rec **rec)
{
    *rec = NULL;
    if (codec_adopt(&sc->codec, line, len, &tp->t) != 0)
        return -1;
    *rec = build(sc);
    return 0;
}

void script_rec_free(script *sc, script_rec *rec)
{
    codec_doc_free(&sc->codec, rec);
}
