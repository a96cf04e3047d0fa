/*
 * fuzz_json.c: libFuzzer target for the strict JSON layer (src/json), no Lua.
 *
 * On arbitrary bytes:
 *  - json_parse with and without JSON_TOP_OBJECT; the two agree (a record
 *    is accepted exactly when the text is accepted and its root is an
 *    object) and give the same tape;
 *  - an accepted text's tape is checked node by node: spans inside the
 *    input and inside their parent, in order, separated only by whitespace
 *    and the right ',' or ':'; `end` and `n` match the children; depths;
 *    flags only where they belong; the tape's counters; JSON_ESCAPED iff a
 *    backslash; json_unescape gives valid UTF-8 (json_utf8_valid and an
 *    independent decoder here agree); numbers: the grammar, JSON_INT /
 *    JSON_I64 / JSON_U64 exactly when the integer fits, with the exact
 *    value, other numbers bit-equal to strtod; JSON_DUP exactly on later
 *    repeats of a decoded name, the first one's `n` naming the last
 *    repeat's value, the `dups` count; json_member finds the last one;
 *  - a refused text's message names a byte inside the input;
 *  - json_put_bytes of the input is valid UTF-8 and a JSON string literal
 *    that json_parse accepts and that unescapes to the input (its Latin-1
 *    reading for bytes that are not UTF-8, *lossy set exactly then);
 *    json_put_string agrees on valid UTF-8 and refuses the rest (-2);
 *  - json_utf8_valid agrees with the decoder here on the input;
 *  - json_fmt_double / i64 / u64 on the input's first 8 bytes.
 * A failed check prints what and aborts (libFuzzer keeps the input).
 */
#include "../../src/json/json.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "fuzz_json: %s:%d: check failed: %s\n  ", __FILE__, __LINE__, \
                    #cond);                                                           \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
            abort();                                                                  \
        }                                                                             \
    } while (0)

#define TWO53 9007199254740992.0

/* An independent UTF-8 check: decode, then refuse overlong forms,
 * surrogates and code points above U+10FFFF. Returns the length of the
 * valid sequence at s[0] (1 for ASCII), or 0. */
static size_t ref_seq(const unsigned char *s, size_t n)
{
    static const uint32_t min[4] = { 0, 0x80, 0x800, 0x10000 };
    unsigned c = s[0];
    size_t k;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0)
        k = 1, cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0)
        k = 2, cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0)
        k = 3, cp = c & 0x07;
    else
        return 0;
    if (k >= n)
        return 0;
    for (size_t j = 1; j <= k; j++) {
        if ((s[j] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[j] & 0x3f);
    }
    if (cp < min[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return k + 1;
}

static int ref_utf8(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < n;) {
        size_t k = ref_seq(s + i, n - i);
        if (!k)
            return 0;
        i += k;
    }
    return 1;
}

/* a[0..an) == b[0..bn) (either may be NULL when empty). */
static int eq(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* text[a..b) is whitespace with exactly one `sep` in it (none if sep is 0). */
static int gap_ok(const char *text, uint32_t a, uint32_t b, char sep)
{
    int seen = 0;
    for (uint32_t i = a; i < b; i++) {
        if (is_ws((unsigned char)text[i]))
            continue;
        if (sep && text[i] == sep && !seen) {
            seen = 1;
            continue;
        }
        return 0;
    }
    return seen == (sep != 0);
}

static mw_buf ubuf, wbuf, kbuf;
static json_tape tape_any, tape_obj, tape_tmp;

/* json_put_string of s (valid UTF-8) parses back as one string with s in it. */
static void check_writer_roundtrip(const char *s, size_t n)
{
    char err[256];
    wbuf.len = 0;
    CHECK(json_put_string(&wbuf, s, n) == 0, "out of memory");
    CHECK(json_utf8_valid(wbuf.p, wbuf.len), "json_put_string wrote invalid UTF-8");
    CHECK(json_parse(&tape_tmp, wbuf.p, wbuf.len, 0, err, sizeof err) == 0, "json_put_string output refused: %s",
          err);
    CHECK(tape_tmp.n == 1 && tape_tmp.nodes[0].type == JSON_STRING && tape_tmp.nodes[0].off == 0 &&
              tape_tmp.nodes[0].len == wbuf.len,
          "json_put_string output is not one string literal");
    mw_buf back = { NULL, 0, 0 };
    CHECK(json_unescape(wbuf.p, &tape_tmp.nodes[0], &back) == 0, "out of memory");
    CHECK(eq(back.p, back.len, s, n), "json_put_string -> parse -> unescape changed the string");
    free(back.p);
}

static void check_number(const json_node *x, const char *text)
{
    const char *s = text + x->off;
    size_t n = x->len, i = 0;
    int neg = 0, is_int = 1;
    if (s[i] == '-')
        neg = 1, i++;
    CHECK(i < n && s[i] >= '0' && s[i] <= '9', "number span without a digit");
    size_t d0 = i;
    if (s[i] == '0')
        i++;
    else
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    size_t d1 = i;
    if (i < n && s[i] == '.') {
        is_int = 0;
        i++;
        CHECK(i < n && s[i] >= '0' && s[i] <= '9', "no digit after '.'");
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        is_int = 0;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        CHECK(i < n && s[i] >= '0' && s[i] <= '9', "no digit in the exponent");
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    CHECK(i == n, "number span '%.*s' is not exactly one RFC 8259 number", (int)n, s);

    int kind = x->flags & (JSON_INT | JSON_I64 | JSON_U64);
    CHECK(kind == 0 || kind == JSON_INT || kind == JSON_I64 || kind == JSON_U64, "several number kinds: %d", kind);

    /* Exact magnitude of an integer, if it fits uint64. */
    int fits = 0;
    uint64_t mag = 0;
    if (is_int) {
        fits = 1;
        for (size_t k = d0; k < d1; k++) {
            unsigned dg = (unsigned)(s[k] - '0');
            if (mag > (UINT64_MAX - dg) / 10) {
                fits = 0;
                break;
            }
            mag = mag * 10 + dg;
        }
    }
    if (is_int && fits && mag <= (uint64_t)TWO53) {
        CHECK(kind == JSON_INT, "'%.*s': integer <= 2^53 without JSON_INT (flags %d)", (int)n, s, x->flags);
        double want = neg ? -(double)mag : (double)mag;
        CHECK(memcmp(&want, &x->v.d, sizeof want) == 0, "'%.*s' read as %.17g", (int)n, s, x->v.d);
        CHECK(x->v.d == floor(x->v.d) && fabs(x->v.d) <= TWO53, "JSON_INT not integral");
        return;
    }
    if (is_int && fits && !neg && mag <= (uint64_t)INT64_MAX) {
        CHECK(kind == JSON_I64 && x->v.i == (int64_t)mag, "'%.*s': flags %d, v.i %" PRId64, (int)n, s, x->flags,
              x->v.i);
        return;
    }
    if (is_int && fits && neg && mag <= (uint64_t)INT64_MAX + 1) {
        int64_t want = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
        CHECK(kind == JSON_I64 && x->v.i == want, "'%.*s': flags %d, v.i %" PRId64, (int)n, s, x->flags, x->v.i);
        return;
    }
    if (is_int && fits && !neg) {
        CHECK(kind == JSON_U64 && x->v.u == mag, "'%.*s': flags %d, v.u %" PRIu64, (int)n, s, x->flags, x->v.u);
        return;
    }
    /* Everything else is a double, correctly rounded (as strtod does). */
    CHECK(kind == 0, "'%.*s': flags %d on a non-int64 number", (int)n, s, x->flags);
    char *tmp = malloc(n + 1);
    CHECK(tmp, "out of memory");
    memcpy(tmp, s, n);
    tmp[n] = 0;
    double want = strtod(tmp, NULL);
    free(tmp);
    CHECK(isfinite(x->v.d), "'%.*s' accepted as %g", (int)n, s, x->v.d);
    CHECK(memcmp(&want, &x->v.d, sizeof want) == 0, "'%.*s' read as %.17g, strtod says %.17g", (int)n, s, x->v.d,
          want);
}

/* JSON_DUP and json_member for object node o (n members). */
static void check_object_names(const json_tape *t, const char *text, uint32_t o)
{
    const json_node *nd = t->nodes;
    uint32_t n = nd[o].n;
    if (n > 256)
        return; /* quadratic below: bounded */
    uint32_t keyidx[256];
    size_t koff[257];
    kbuf.len = 0;
    uint32_t k = o + 1;
    for (uint32_t m = 0; m < n; m++) {
        keyidx[m] = k;
        koff[m] = kbuf.len;
        CHECK(json_unescape(text, &nd[k], &ubuf) == 0, "out of memory");
        CHECK(mw_buf_add(&kbuf, ubuf.p, ubuf.len) == 0, "out of memory");
        k = nd[k + 1].end;
    }
    koff[n] = kbuf.len;
    for (uint32_t m = 0; m < n; m++) {
        const char *name = kbuf.p + koff[m];
        size_t len = koff[m + 1] - koff[m];
        int earlier = 0;
        uint32_t last = m;
        for (uint32_t j = 0; j < n; j++) {
            if (!eq(kbuf.p + koff[j], koff[j + 1] - koff[j], name, len))
                continue;
            if (j < m)
                earlier = 1;
            last = j > last ? j : last;
        }
        int dup = (nd[keyidx[m]].flags & JSON_DUP) != 0;
        CHECK(dup == earlier, "member %u of object node %u: JSON_DUP %d, an earlier same name %d", m, o, dup, earlier);
        /* A first key repeated later: n is the last repeat's value. */
        uint32_t want_n = !earlier && last != m ? keyidx[last] + 1 : 0;
        CHECK(nd[keyidx[m]].n == want_n, "key node %u (member %u of node %u): n %u, want %u", keyidx[m], m, o,
              nd[keyidx[m]].n, want_n);
        int found = json_member(t, text, o, name, len);
        CHECK(found == (int)keyidx[last] + 1, "json_member of member %u of node %u: %d, want %u", m, o, found,
              keyidx[last] + 1);
    }
    CHECK(json_member(t, text, o, "\xff", 1) == -1, "json_member found a name that cannot be there");
}

static void check_tape(const json_tape *t, const char *text, size_t size)
{
    const json_node *nd = t->nodes;
    CHECK(t->n >= 1 && t->n <= t->cap, "tape n %u cap %u", t->n, t->cap);
    CHECK(nd[0].depth == 0 && nd[0].end == t->n, "root depth %u end %u n %u", nd[0].depth, nd[0].end, t->n);
    CHECK((size_t)nd[0].off + nd[0].len <= size, "root span outside the input");
    CHECK(gap_ok(text, 0, nd[0].off, 0) && gap_ok(text, nd[0].off + nd[0].len, (uint32_t)size, 0),
          "something other than whitespace around the root value");

    uint32_t containers = 0, keys = 0, escaped = 0, bigints = 0, max_depth = 0, children = 0, dups = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        const json_node *x = &nd[i];
        CHECK(x->len >= 1 && (size_t)x->off + x->len <= size, "node %u span %u+%u outside %zu bytes", i, x->off,
              x->len, size);
        const char *s = text + x->off;
        switch (x->type) {
        case JSON_NULL:
        case JSON_TRUE:
        case JSON_FALSE: {
            const char *w = x->type == JSON_NULL ? "null" : x->type == JSON_TRUE ? "true" : "false";
            CHECK(x->len == strlen(w) && memcmp(s, w, x->len) == 0, "node %u literal span '%.*s'", i, (int)x->len, s);
            CHECK(x->flags == 0, "node %u literal flags %d", i, x->flags);
            break;
        }
        case JSON_NUMBER:
            CHECK((x->flags & ~(JSON_INT | JSON_I64 | JSON_U64)) == 0, "node %u number flags %d", i, x->flags);
            if (x->flags & (JSON_I64 | JSON_U64))
                bigints++;
            check_number(x, text);
            break;
        case JSON_STRING: {
            CHECK(x->len >= 2 && s[0] == '"' && s[x->len - 1] == '"', "node %u string span '%.*s'", i, (int)x->len, s);
            CHECK((x->flags & ~(JSON_ESCAPED | JSON_DUP)) == 0, "node %u string flags %d", i, x->flags);
            int bs = memchr(s + 1, '\\', x->len - 2) != NULL;
            CHECK(bs == ((x->flags & JSON_ESCAPED) != 0), "node %u: backslash %d, JSON_ESCAPED %d", i, bs,
                  x->flags & JSON_ESCAPED);
            if (bs)
                escaped++;
            for (uint32_t k = 1; k + 1 < x->len; k++)
                CHECK((unsigned char)s[k] >= 0x20, "node %u: raw control byte 0x%02x in a string", i,
                      (unsigned char)s[k]);
            CHECK(json_utf8_valid(s + 1, x->len - 2) && ref_utf8(s + 1, x->len - 2),
                  "node %u: accepted a string with invalid UTF-8", i);
            CHECK(json_unescape(text, x, &ubuf) == 0, "out of memory");
            CHECK(json_utf8_valid(ubuf.p, ubuf.len), "node %u: json_unescape gave invalid UTF-8 (json_utf8_valid)", i);
            CHECK(ref_utf8(ubuf.p, ubuf.len), "node %u: json_unescape gave invalid UTF-8 (reference decoder)", i);
            if (!bs)
                CHECK(eq(ubuf.p, ubuf.len, s + 1, x->len - 2u),
                      "node %u: unescaping a string without escapes changed it", i);
            else
                CHECK(ubuf.len < x->len - 2u, "node %u: unescaped longer than its escapes", i);
            /* The writer gives it back. */
            check_writer_roundtrip(ubuf.p ? ubuf.p : "", ubuf.len);
            break;
        }
        case JSON_ARRAY:
        case JSON_OBJECT:
            break;
        default:
            CHECK(0, "node %u: type %d", i, x->type);
        }
        if (x->type != JSON_ARRAY && x->type != JSON_OBJECT) {
            /* n: 0, but a key's is checked with its object (see JSON_DUP). */
            CHECK(x->end == i + 1 && (x->n == 0 || (x->type == JSON_STRING && i > 0)), "scalar node %u: end %u n %u",
                  i, x->end, x->n);
            continue;
        }
        /* A container and its children. */
        int obj = x->type == JSON_OBJECT;
        containers++;
        if ((uint32_t)x->depth + 1 > max_depth)
            max_depth = x->depth + 1u;
        CHECK(x->flags == 0, "container node %u flags %d", i, x->flags);
        CHECK(x->end > i && x->end <= t->n, "container node %u: end %u of %u", i, x->end, t->n);
        CHECK(x->len >= 2 && s[0] == (obj ? '{' : '[') && s[x->len - 1] == (obj ? '}' : ']'),
              "container node %u span '%.*s'", i, (int)x->len, s);
        uint32_t j = i + 1, c = 0, pos = x->off + 1, close = x->off + x->len - 1;
        while (j < x->end) {
            const json_node *y = &nd[j];
            CHECK(y->depth == x->depth + 1, "node %u depth %u under node %u depth %u", j, y->depth, i, x->depth);
            CHECK(y->off >= pos && y->off + y->len <= close, "node %u span %u+%u outside its parent %u", j, y->off,
                  y->len, i);
            char sep = c == 0 ? 0 : (obj && (c & 1)) ? ':' : ',';
            CHECK(gap_ok(text, pos, y->off, sep), "node %u: bad bytes before it (want '%c')", j, sep ? sep : ' ');
            if (obj && !(c & 1)) {
                CHECK(y->type == JSON_STRING, "object node %u: member %u key is type %d", i, c / 2, y->type);
                if (y->flags & JSON_DUP)
                    dups++;
            } else {
                CHECK(!(y->flags & JSON_DUP), "node %u: JSON_DUP on a value", j);
                CHECK(y->type != JSON_STRING || y->n == 0, "string value node %u: n %u", j, y->n);
            }
            CHECK(y->end > j && y->end <= x->end, "node %u end %u beyond parent end %u", j, y->end, x->end);
            pos = y->off + y->len;
            j = y->end;
            c++;
        }
        CHECK(j == x->end, "node %u: children end at %u, end is %u", i, j, x->end);
        CHECK(gap_ok(text, pos, close, 0), "node %u: bad bytes before its closing bracket", i);
        CHECK(c == (obj ? 2 * x->n : x->n), "node %u: %u children for n %u", i, c, x->n);
        children += c;
        if (obj) {
            keys += x->n;
            check_object_names(t, text, i);
        }
    }
    CHECK(children == t->n - 1, "%u children + root for %u nodes", children, t->n);
    CHECK(t->containers == containers && t->keys == keys && t->escaped == escaped && t->bigints == bigints &&
              t->max_depth == max_depth && t->dups == dups,
          "counters: containers %u/%u keys %u/%u escaped %u/%u bigints %u/%u depth %u/%u dups %u/%u",
          t->containers, containers, t->keys, keys, t->escaped, escaped, t->bigints, bigints, t->max_depth,
          max_depth, t->dups, dups);
    CHECK(max_depth <= JSON_MAX_DEPTH, "depth %u", max_depth);
}

static void check_error(const char *err, size_t size)
{
    size_t at = 0;
    if (strncmp(err, "out of memory", 13) == 0)
        return;
    CHECK(sscanf(err, "malformed JSON at byte %zu:", &at) == 1, "message '%s'", err);
    CHECK(at >= 1 && at <= (size ? size : 1), "message '%s' names a byte outside %zu bytes", err, size);
}

static void same_tape(const json_tape *a, const json_tape *b)
{
    CHECK(a->n == b->n && a->containers == b->containers && a->keys == b->keys && a->escaped == b->escaped &&
              a->bigints == b->bigints && a->max_depth == b->max_depth && a->dups == b->dups,
          "the two parses disagree");
    for (uint32_t i = 0; i < a->n; i++) {
        const json_node *x = &a->nodes[i], *y = &b->nodes[i];
        CHECK(x->type == y->type && x->flags == y->flags && x->depth == y->depth && x->off == y->off &&
                  x->len == y->len && x->n == y->n && x->end == y->end && x->v.u == y->v.u,
              "node %u differs between the two parses", i);
    }
}

/* json_put_bytes / json_put_string on the raw input. */
static void check_put_bytes(const char *data, size_t size)
{
    char err[256];
    int lossy = -1;
    wbuf.len = 0;
    CHECK(json_put_bytes(&wbuf, data, size, &lossy) == 0, "out of memory");
    CHECK(json_utf8_valid(wbuf.p, wbuf.len) && ref_utf8(wbuf.p, wbuf.len), "json_put_bytes wrote invalid UTF-8");
    CHECK(json_parse(&tape_tmp, wbuf.p, wbuf.len, 0, err, sizeof err) == 0, "json_put_bytes output refused: %s", err);
    CHECK(tape_tmp.n == 1 && tape_tmp.nodes[0].type == JSON_STRING && tape_tmp.nodes[0].off == 0 &&
              tape_tmp.nodes[0].len == wbuf.len,
          "json_put_bytes output is not one string literal");
    CHECK(json_unescape(wbuf.p, &tape_tmp.nodes[0], &ubuf) == 0, "out of memory");

    /* What it must read back as: UTF-8 sequences as they are, any other
     * byte >= 0x80 as U+0080..U+00FF. */
    mw_buf want = { NULL, 0, 0 };
    int bad = 0;
    const unsigned char *s = (const unsigned char *)data;
    for (size_t i = 0; i < size;) {
        size_t k = ref_seq(s + i, size - i);
        if (k) {
            CHECK(mw_buf_add(&want, s + i, k) == 0, "out of memory");
            i += k;
        } else {
            char u[2] = { (char)(0xc0 | s[i] >> 6), (char)(0x80 | (s[i] & 0x3f)) };
            CHECK(mw_buf_add(&want, u, 2) == 0, "out of memory");
            bad = 1;
            i++;
        }
    }
    CHECK(lossy == bad, "json_put_bytes: lossy %d, invalid bytes %d", lossy, bad);
    CHECK(eq(ubuf.p, ubuf.len, want.p, want.len),
          "json_put_bytes output does not read back as the input (its Latin-1 reading where not UTF-8)");
    free(want.p);

    int valid = json_utf8_valid(data, size);
    CHECK(valid == ref_utf8(data, size), "json_utf8_valid says %d on the input, the reference decoder %d", valid,
          !valid);
    CHECK(valid == !bad, "json_utf8_valid %d but json_put_bytes lossy %d", valid, lossy);
    if (valid) {
        size_t bytes_len = wbuf.len;
        char *bytes_out = malloc(bytes_len ? bytes_len : 1);
        CHECK(bytes_out, "out of memory");
        memcpy(bytes_out, wbuf.p, bytes_len);
        check_writer_roundtrip(data, size);
        CHECK(eq(wbuf.p, wbuf.len, bytes_out, bytes_len),
              "json_put_string and json_put_bytes differ on valid UTF-8");
        free(bytes_out);
    } else {
        /* json_put_string refuses what is not UTF-8, appending nothing. */
        size_t before = wbuf.len;
        int rc = json_put_string(&wbuf, data, size);
        CHECK(rc == -2 && wbuf.len == before, "json_put_string on invalid UTF-8: %d, %zu bytes appended", rc,
              wbuf.len - before);
    }
}

/* Number formatting on the input's first 8 bytes. */
static void check_formatting(const uint8_t *data, size_t size)
{
    if (size < 8)
        return;
    char out[64], ref[64], err[256];
    uint64_t u;
    int64_t i;
    double d;
    memcpy(&u, data, 8);
    memcpy(&i, data, 8);
    memcpy(&d, data, 8);
    snprintf(ref, sizeof ref, "%" PRIu64, u);
    CHECK(json_fmt_u64(out, u) == (int)strlen(ref) && strcmp(out, ref) == 0, "json_fmt_u64: '%s' vs '%s'", out, ref);
    snprintf(ref, sizeof ref, "%" PRId64, i);
    CHECK(json_fmt_i64(out, i) == (int)strlen(ref) && strcmp(out, ref) == 0, "json_fmt_i64: '%s' vs '%s'", out, ref);
    int n = json_fmt_double(out, d);
    if (!isfinite(d)) {
        CHECK(n == -1, "json_fmt_double wrote a non-finite number");
        return;
    }
    CHECK(n > 0 && n < 32 && (size_t)n == strlen(out), "json_fmt_double returned %d for '%s'", n, out);
    CHECK(json_parse(&tape_tmp, out, (size_t)n, 0, err, sizeof err) == 0, "json_fmt_double(%a) = '%s' refused: %s",
          d, out, err);
    const json_node *x = &tape_tmp.nodes[0];
    CHECK(tape_tmp.n == 1 && x->type == JSON_NUMBER, "json_fmt_double(%a) = '%s' not one number", d, out);
    double back = (x->flags & JSON_I64) ? (double)x->v.i : (x->flags & JSON_U64) ? (double)x->v.u : x->v.d;
    if (x->flags & (JSON_I64 | JSON_U64))
        CHECK(back == d, "json_fmt_double(%a) = '%s' reads back as %a", d, out, back);
    else
        CHECK(memcmp(&back, &d, sizeof d) == 0, "json_fmt_double(%a) = '%s' reads back as %a", d, out, back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    char err[256];
    err[0] = 0;
    int any = json_parse(&tape_any, text, size, 0, err, sizeof err);
    CHECK(any == 0 || any == -1, "json_parse returned %d", any);
    if (any == 0)
        check_tape(&tape_any, text, size);
    else
        check_error(err, size);

    err[0] = 0;
    int rec = json_parse(&tape_obj, text, size, JSON_TOP_OBJECT, err, sizeof err);
    int want = any == 0 && tape_any.nodes[0].type == JSON_OBJECT ? 0 : -1;
    CHECK(rec == want, "JSON_TOP_OBJECT parse %d, plain parse %d (root type %d)", rec, any,
          any == 0 ? tape_any.nodes[0].type : 0);
    if (rec == 0)
        same_tape(&tape_any, &tape_obj);
    else
        check_error(err, size);

    check_put_bytes(text, size);
    check_formatting(data, size);

    /* Big tapes are not kept between inputs (they would hide leaks). */
    if (tape_any.cap > 4096)
        json_tape_free(&tape_any);
    if (tape_obj.cap > 4096)
        json_tape_free(&tape_obj);
    return 0;
}
