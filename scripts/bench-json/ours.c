/*
 * ours.c: the C side of bench-json. Compiled as C (src/util/buf.h is not
 * C++) against moonwait's own src/json (every .c) and the codec (src/lua/codec.h),
 * unchanged. Each *_pass function loops over every line itself, so the
 * timed region holds no call across the C/C++ boundary per record.
 */
#define _GNU_SOURCE
#include "ours.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json/json.h" /* moonwait's src/ (the build passes -I<src>) */
#include "lua/codec.h"

static json_tape tape;

/* (a) json_parse to the tape: the whole of what moonwait's parser does. */
int ours_pass(const char *base, const bline *lines, size_t n, uint64_t *chk)
{
    char err[256];
    uint64_t c = 0;
    for (size_t i = 0; i < n; i++) {
        if (json_parse(&tape, base + lines[i].off, lines[i].len, JSON_TOP_OBJECT, err, sizeof err) != 0) {
            fprintf(stderr, "ours: line %zu: %s\n", i + 1, err);
            return -1;
        }
        c += tape.n;
    }
    *chk += c;
    return 0;
}

/* Fingerprint of one record from the tape, for cross-checking the parsers. */
int ours_fingerprint(const char *text, size_t len, fingerprint *fp)
{
    char err[256];
    memset(fp, 0, sizeof *fp);
    if (json_parse(&tape, text, len, JSON_TOP_OBJECT, err, sizeof err) != 0)
        return -1;
    /* Mark the keys (anchor is the caller's slot; this tape is ours), then
     * walk the tape in document order. */
    for (uint32_t i = 0; i < tape.n; i++) {
        const json_node *x = &tape.nodes[i];
        if (x->type == JSON_OBJECT) {
            uint32_t k = i + 1;
            for (uint32_t m = 0; m < x->n; m++) {
                tape.nodes[k].anchor = 1;
                k = tape.nodes[k + 1].end;
            }
        }
    }
    for (uint32_t i = 0; i < tape.n; i++) {
        json_node *x = &tape.nodes[i];
        if (x->anchor) { /* a key */
            x->anchor = 0;
            fp_key(fp, x->off);
            continue;
        }
        switch (x->type) {
        case JSON_NUMBER:
            if (x->flags & JSON_I64)
                fp_int(fp, (uint64_t)x->v.i);
            else if (x->flags & JSON_U64)
                fp_int(fp, x->v.u);
            else if (x->flags & JSON_INT)
                fp_int(fp, (uint64_t)(int64_t)x->v.d);
            else
                fp_dbl(fp, x->v.d);
            fp_span(fp, x->off, x->len);
            break;
        case JSON_STRING:
        case JSON_TRUE:
        case JSON_FALSE:
        case JSON_NULL:
            fp_scalar(fp, x->type == JSON_STRING ? 's' : x->type == JSON_NULL ? 'n' : 'b');
            fp_span(fp, x->off, x->len);
            break;
        default:
            fp_container(fp, x->type == JSON_OBJECT ? 'o' : 'a');
            break;
        }
    }
    return 0;
}

int ours_check(const char *text, size_t len, char *err, size_t errlen)
{
    return json_parse(&tape, text, len, JSON_TOP_OBJECT, err, errlen);
}

/* What the tape holds for member "a" of the last ours_check. */
void ours_describe_a(const char *text, size_t len, char *out, size_t outlen)
{
    (void)len;
    int i = json_member(&tape, text, 0, "a", 1);
    if (i < 0) {
        snprintf(out, outlen, "no a");
        return;
    }
    const json_node *x = &tape.nodes[i];
    if (x->type == JSON_NUMBER) {
        if (x->flags & JSON_I64)
            snprintf(out, outlen, "int64 %lld", (long long)x->v.i);
        else if (x->flags & JSON_U64)
            snprintf(out, outlen, "uint64 %llu", (unsigned long long)x->v.u);
        else
            snprintf(out, outlen, "%s %.17g", (x->flags & JSON_INT) ? "integer" : "double", x->v.d);
    } else if (x->type == JSON_STRING) {
        snprintf(out, outlen, "string, %u raw bytes", x->len);
    } else {
        snprintf(out, outlen, "type %d", x->type);
    }
    if (i >= 0 && tape.nodes[i - 1].flags & JSON_DUP)
        snprintf(out + strlen(out), outlen - strlen(out), "; key marked JSON_DUP");
}

/* ---- Lua: lua-cjson and our codec in one LuaJIT state ------------------- */

struct lua_bench {
    lua_State *L;
    codec c;
    int lines_ref, cjson_loop_ref;
    size_t n;
};

static const char cjson_loop[] =
    "local decode = require('cjson').decode\n"
    "return function(lines, n)\n"
    "  for i = 1, n do local t = decode(lines[i]) end\n"
    "end\n";

lua_bench *lua_bench_new(const char *base, const bline *lines, size_t n)
{
    lua_bench *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->L = luaL_newstate();
    if (!b->L) {
        fprintf(stderr, "lua: cannot create a state (out of memory?)\n");
        free(b);
        return NULL;
    }
    luaL_openlibs(b->L);
    if (codec_init(&b->c, b->L) != 0) {
        fprintf(stderr, "lua: codec_init failed\n");
        return NULL;
    }
    lua_State *L = b->L;
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushlstring(L, base + lines[i].off, lines[i].len);
        lua_rawseti(L, -2, (int)i + 1);
    }
    b->lines_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (luaL_loadstring(L, cjson_loop) != 0 || lua_pcall(L, 0, 1, 0) != 0) {
        fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
        return NULL;
    }
    b->cjson_loop_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    b->n = n;
    lua_gc(L, LUA_GCCOLLECT, 0);
    return b;
}

void lua_bench_gc(lua_bench *b)
{
    lua_gc(b->L, LUA_GCCOLLECT, 0);
}

/* (c) cjson.decode(lines[i]) for every line, from a JIT-compiled Lua loop. */
int lua_bench_cjson(lua_bench *b)
{
    lua_State *L = b->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->cjson_loop_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->lines_ref);
    lua_pushinteger(L, (lua_Integer)b->n);
    if (lua_pcall(L, 2, 0, 0) != 0) {
        fprintf(stderr, "cjson: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

/* (c') our parser + the codec's Lua tables (what moonwait does per record):
 * codec_parse, codec_build (pushes the table), pop it, free the doc. */
int lua_bench_codec(lua_bench *b, const char *base, const bline *lines, size_t n)
{
    lua_State *L = b->L;
    char err[256];
    for (size_t i = 0; i < n; i++) {
        if (codec_parse(&b->c, base + lines[i].off, lines[i].len, err, sizeof err) != 0) {
            fprintf(stderr, "codec: line %zu: %s\n", i + 1, err);
            return -1;
        }
        codec_doc *d = codec_build(&b->c, L);
        if (!d) {
            fprintf(stderr, "codec: out of memory\n");
            return -1;
        }
        lua_pop(L, 1);
        codec_doc_free(&b->c, d);
    }
    return 0;
}

/* Strictness probe: does cjson.decode accept text? 1 yes, 0 no (msg). */
int lua_bench_cjson_accepts(lua_bench *b, const char *text, size_t len, char *msg, size_t msglen)
{
    lua_State *L = b->L;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "decode");
    lua_remove(L, -2);
    lua_pushlstring(L, text, len);
    int ok = lua_pcall(L, 1, 1, 0) == 0;
    if (!ok)
        snprintf(msg, msglen, "%s", lua_tostring(L, -1));
    else if (lua_istable(L, -1)) {
        /* What did it make of member "a"? */
        lua_getfield(L, -1, "a");
        const char *s = luaL_typename(L, -1);
        if (lua_type(L, -1) == LUA_TNUMBER)
            snprintf(msg, msglen, "a = %.17g", lua_tonumber(L, -1));
        else if (lua_type(L, -1) == LUA_TSTRING) {
            size_t l;
            const char *v = lua_tolstring(L, -1, &l);
            snprintf(msg, msglen, "a = string of %zu bytes%s", l, memchr(v, 0, l) ? " (holds a NUL)" : "");
        } else
            snprintf(msg, msglen, "a = %s", s);
        lua_pop(L, 1);
    } else
        snprintf(msg, msglen, "%s", luaL_typename(L, -1));
    lua_pop(L, 1);
    return ok;
}

void lua_bench_free(lua_bench *b)
{
    if (!b)
        return;
    codec_close(&b->c);
    lua_close(b->L);
    free(b);
}
