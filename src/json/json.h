/*
 * json.h: the JSON text format in plain C (no Lua, no libuv).
 *
 * The parser: a strict RFC 8259 parser that turns one JSON text into a
 * tape: a flat array of nodes in document order, each with the byte span it
 * came from, so a writer can copy an untouched value back exactly as it
 * arrived. parse.c builds the tape; string.c (strings, UTF-8, unescaping),
 * number.c (numbers) and keys.c (repeated keys, member lookup) read the
 * tokens; lex.h is what they share, internal to src/json.
 * write.c: string escaping and number formatting for the writer side.
 *
 * Used by the Lua record codec (src/lua/codec.c) and by the host for dead
 * letters; fuzzed on its own (spec/fuzz/).
 */
#ifndef MW_JSON_H
#define MW_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "../util/buf.h"
#include "../util/log.h"

enum json_type {
    JSON_NULL = 1,
    JSON_FALSE,
    JSON_TRUE,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
};

/* Node flags. */
enum {
    JSON_ESCAPED = 1 << 0, /* string: has backslash escapes (decode before use) */
    JSON_DUP = 1 << 1,     /* object key: a later member with the same name follows
                            * it; that later one is marked here, and the earlier
                            * position is kept (JavaScript's rule: the first
                            * position, the last value) */
    JSON_INT = 1 << 2,     /* number: integer syntax, exact as a double (|v| <= 2^53) */
    JSON_I64 = 1 << 3,     /* number: integer beyond 2^53 that fits int64 (v.i) */
    JSON_U64 = 1 << 4,     /* number: integer above INT64_MAX that fits uint64 (v.u) */
};

/* One value (or object key) of the tape. Containers are followed by their
 * children: an object by key, value, key, value...; an array by its
 * elements. `end` skips the whole subtree. */
typedef struct json_node {
    uint8_t type;        /* enum json_type (a key is a JSON_STRING) */
    uint8_t flags;
    uint16_t depth;      /* 0 for the top-level value */
    uint32_t off, len;   /* the bytes it came from (strings include the quotes) */
    uint32_t n;          /* containers: members (objects) or elements (arrays);
                          * an object key repeated later (see JSON_DUP): the
                          * index of the last repeat's value, the one kept */
    uint32_t end;        /* index one past this node's subtree */
    uint32_t anchor;     /* free for the caller (the codec's anchor slot) */
    union {
        double d;        /* numbers without JSON_I64/JSON_U64 */
        int64_t i;
        uint64_t u;
    } v;
    const void *user;    /* free for the caller */
} json_node;

/* A growable tape, reused across documents to avoid allocation. */
typedef struct json_tape {
    json_node *nodes;
    uint32_t n, cap;
    uint32_t max_depth;  /* deepest nesting seen in the last parse */
    uint32_t escaped;    /* strings with escapes in the last parse */
    uint32_t bigints;    /* JSON_I64/JSON_U64 numbers in the last parse */
    uint32_t containers; /* objects and arrays in the last parse */
    uint32_t keys;       /* object keys in the last parse */
    uint32_t dups;       /* keys marked JSON_DUP in the last parse */
} json_tape;

/* Parse options. */
enum {
    JSON_TOP_OBJECT = 1 << 0, /* the text must be one object (a record) */
};

#define JSON_MAX_DEPTH 1000

/* Parse text[0..len) into t (reset first). The whole text must be one
 * JSON value with optional whitespace around it. Returns 0, or -1 with a
 * message naming the byte (1-based) and what is wrong in err. */
int json_parse(json_tape *t, const char *text, size_t len, int opts, char *err, size_t errlen);

/* The value node of member `name` (n bytes) of object node `obj`, or -1.
 * With duplicate names, the last one (the value a decoder keeps). */
int json_member(const json_tape *t, const char *text, uint32_t obj, const char *name, size_t n);

/* Free the tape's nodes. */
void json_tape_free(json_tape *t);

/* Make dst (a tape, or zeroed) what parsing src's text gave src: its
 * nodes and counts, growing dst's nodes if needed. 0, or -1 (out of
 * memory; dst unchanged). */
int json_tape_copy(json_tape *dst, const json_tape *src);

/* Decode the escapes of string node s (raw text `text`) into out (which is
 * reset). The result is valid UTF-8. Returns 0 or -1 (out of memory). */
int json_unescape(const char *text, const json_node *s, mw_buf *out);

/* Append s (n bytes) as a JSON string literal, quotes included. Control
 * characters, '"' and backslash are escaped; other bytes are copied. 0, -1
 * on out of memory, or -2 when s is not valid UTF-8 (nothing appended). */
int json_put_string(mw_buf *b, const char *s, size_t n);

/* Like json_put_string, for bytes that may not be UTF-8: a byte that does
 * not start a valid UTF-8 sequence is written as \u00XX (its Latin-1
 * reading). Returns 0 or -1; *lossy is set when that happened. */
int json_put_bytes(mw_buf *b, const char *s, size_t n, int *lossy);

/* Nonzero when s[0..n) is valid UTF-8 (no overlong forms, no surrogates,
 * nothing above U+10FFFF). */
int json_utf8_valid(const char *s, size_t n);

/* Format a finite double in the fewest digits that read back as the same
 * value; integers below 2^53 exactly, without exponent. Returns the length
 * written to out (at least 32 bytes), or -1 for NaN and infinities. */
int json_fmt_double(char *out, double d);

/* Format integers. Return the length written (out: at least 24 bytes). */
int json_fmt_i64(char *out, int64_t v);
int json_fmt_u64(char *out, uint64_t v);

/* ---- logline.c: the JSON form of a log line ---------------------------- */

/* Append r as one JSON object, no newline (an mw_log_json_fn, installed in
 * util/log.c by main.c): 0, or -1 when out of memory. */
int json_logline(mw_buf *b, const mw_log_rec *r);

/* unix_ms as RFC 3339 UTC with milliseconds ("2026-12-01T03:04:05.678Z")
 * into out: its length, or -1. */
int json_format_time(char out[32], int64_t unix_ms);

#endif
