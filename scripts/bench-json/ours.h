/*
 * ours.h: what bench.cpp (C++) and ours.c (C, moonwait's parser and codec)
 * share: the array of lines and a per-record fingerprint used to check that
 * every parser saw the same values, keys and byte spans.
 */
#ifndef BENCH_JSON_OURS_H
#define BENCH_JSON_OURS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One line of the in-memory input: base + off, len bytes (no newline). */
typedef struct bline {
    size_t off;
    uint32_t len;
} bline;

/* Sequence hashes of one record. `seq` covers value types, integer values,
 * double bits and key positions in document order (any parser can give
 * it); `spans` covers the byte offset/length of every scalar and the
 * offset of every key (only parsers that expose raw positions). */
typedef struct fingerprint {
    uint64_t seq, spans;
    uint64_t values, keys, ints, doubles;
} fingerprint;

static inline uint64_t fp_mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h * 0xff51afd7ed558ccdULL;
}
static inline void fp_key(fingerprint *f, size_t off)
{
    f->keys++;
    f->seq = fp_mix(f->seq, 'k');
    f->spans = fp_mix(f->spans, off);
}
static inline void fp_int(fingerprint *f, uint64_t v)
{
    f->values++;
    f->ints++;
    f->seq = fp_mix(fp_mix(f->seq, 'i'), v);
}
static inline void fp_dbl(fingerprint *f, double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    f->values++;
    f->doubles++;
    f->seq = fp_mix(fp_mix(f->seq, 'd'), u);
}
static inline void fp_scalar(fingerprint *f, int type)
{
    f->values++;
    f->seq = fp_mix(f->seq, (uint64_t)type);
}
static inline void fp_container(fingerprint *f, int type)
{
    f->values++;
    f->seq = fp_mix(f->seq, (uint64_t)type);
}
static inline void fp_span(fingerprint *f, size_t off, size_t len)
{
    f->spans = fp_mix(fp_mix(f->spans, off), len);
}

int ours_pass(const char *base, const bline *lines, size_t n, uint64_t *chk);
int ours_fingerprint(const char *text, size_t len, fingerprint *fp);
int ours_check(const char *text, size_t len, char *err, size_t errlen);
void ours_describe_a(const char *text, size_t len, char *out, size_t outlen);

typedef struct lua_bench lua_bench;
lua_bench *lua_bench_new(const char *base, const bline *lines, size_t n);
void lua_bench_gc(lua_bench *b);
int lua_bench_cjson(lua_bench *b);
int lua_bench_codec(lua_bench *b, const char *base, const bline *lines, size_t n);
int lua_bench_cjson_accepts(lua_bench *b, const char *text, size_t len, char *msg, size_t msglen);
void lua_bench_free(lua_bench *b);

#ifdef __cplusplus
}
#endif

#endif
