/*
 * fuzz_codec.c: libFuzzer target for the record codec (src/lua/codec.h) on
 * a real LuaJIT state (luaL_openlibs: the codec's helpers need ffi).
 *
 * On arbitrary bytes:
 *  - any value codec_decode accepts: encode without a doc (sorted keys)
 *    -> decode -> encode gives the same bytes;
 *  - a record (codec_parse accepts it; then codec_decode must too):
 *    codec_build, then codec_encode with the doc gives exactly the input
 *    bytes (the line, or the root object without the whitespace around
 *    it) when the record has no duplicate names (with
 *    duplicates: one object without them); a second encode gives the same;
 *    the built value and the doc's output encode (sorted, no doc) as the
 *    decoded value does;
 *  - then the record is touched (its first member moved to a new key
 *    "~fuzz", or "~fuzz" = true on an empty one; the second member's
 *    value changed (see touch()); two tables built as a
 *    script would: an array holding that value, an object with a number
 *    key): the doc's output is valid JSON whose value is the touched
 *    table's;
 *  - every doc is freed; LeakSanitizer sees the rest (lua_close at exit).
 * Calls are made outside lua_pcall, as src/lua/record.c makes them: a Lua
 * error in the codec is a panic here, and the panic handler aborts.
 */
#include "../../src/lua/codec.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...)                                                                \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "fuzz_codec: %s:%d: check failed: %s\n  ", __FILE__, __LINE__, \
                    #cond);                                                             \
            fprintf(stderr, __VA_ARGS__);                                               \
            fputc('\n', stderr);                                                        \
            abort();                                                                    \
        }                                                                               \
    } while (0)

static lua_State *L;
static codec C;
static mw_buf sorted, bytes, again, other, name, name2;
static json_tape check_tape;

static int on_panic(lua_State *l)
{
    fprintf(stderr, "fuzz_codec: Lua panic (an error outside lua_pcall): %s\n", lua_tostring(l, -1));
    abort();
}

static void finish(void)
{
    if (!L)
        return;
    lua_close(L);
    codec_close(&C); /* after the VM, as vm.c does */
    L = NULL;
    json_tape_free(&check_tape);
    free(sorted.p);
    free(bytes.p);
    free(again.p);
    free(other.p);
    free(name.p);
    free(name2.p);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "fuzz_codec: luaL_newstate failed\n");
        abort();
    }
    lua_atpanic(L, on_panic);
    luaL_openlibs(L);
    if (codec_init(&C, L) != 0) {
        fprintf(stderr, "fuzz_codec: codec_init failed\n");
        abort();
    }
    atexit(finish);
    return 0;
}

/* Encode the value at idx into b (reset first); it must work. */
static void encode(int idx, codec_doc *doc, mw_buf *b, const char *what)
{
    char err[256] = "";
    b->len = 0;
    int rc = codec_encode(&C, L, idx, doc, b, err, sizeof err);
    CHECK(rc == 0, "%s: codec_encode failed: %s", what, err);
}

/* Decode b (our own output) and push the value; it must work. */
static void decode(const mw_buf *b, const char *what)
{
    char err[256] = "";
    int rc = codec_decode(&C, L, b->p ? b->p : "", b->len, err, sizeof err);
    CHECK(rc == 0, "%s: codec_decode refused '%.*s': %s", what, (int)(b->len > 300 ? 300 : b->len),
          b->p ? b->p : "", err);
}

static int same(const mw_buf *a, const char *p, size_t n)
{
    return a->len == n && (n == 0 || memcmp(a->p, p, n) == 0);
}

/* Change the value at idx the way a script might: a number +1, a string
 * longer, a boolean flipped, null or an int64 to 0.5; an array gets an
 * element in front (the others move), an object a member. Replaces the value at idx (or changes the
 * table in place). */
static void touch(int idx)
{
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        lua_pushnumber(L, lua_tonumber(L, idx) + 1);
        break;
    case LUA_TSTRING:
        lua_pushvalue(L, idx);
        lua_pushliteral(L, "~");
        lua_concat(L, 2);
        break;
    case LUA_TBOOLEAN:
        lua_pushboolean(L, !lua_toboolean(L, idx));
        break;
    case LUA_TTABLE:
        if (lua_objlen(L, idx) > 0 || (lua_getmetatable(L, idx) && (lua_pop(L, 1), 1))) {
            /* table.insert(t, 1, "~"): every element moves up one. */
            for (int i = (int)lua_objlen(L, idx); i >= 1; i--) {
                lua_rawgeti(L, idx, i);
                lua_rawseti(L, idx, i + 1);
            }
            lua_pushliteral(L, "~");
            lua_rawseti(L, idx, 1);
        } else {
            lua_pushliteral(L, "~");
            lua_pushinteger(L, 7);
            lua_rawset(L, idx);
        }
        return;
    default: /* null (lightuserdata), int64/uint64 cdata */
        lua_pushnumber(L, 0.5);
        break;
    }
    lua_replace(L, idx);
}

#define SHOW(b) (int)((b)->len > 300 ? 300 : (b)->len), (b)->p

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    char err[256];
    lua_settop(L, 0);

    /* Any value: sorted encode -> decode -> encode is stable. */
    int any = codec_decode(&C, L, text, size, err, sizeof err);
    if (any != 0) {
        CHECK(codec_parse(&C, text, size, err, sizeof err) != 0,
              "codec_parse accepted a record that codec_decode refused");
        return 0;
    }
    encode(1, NULL, &sorted, "the decoded value, without a doc");
    decode(&sorted, "the sorted encoding");
    encode(2, NULL, &again, "the decoded sorted encoding");
    CHECK(same(&again, sorted.p, sorted.len), "decode -> encode -> decode -> encode changed the bytes:\n  '%.*s'\n  '%.*s'",
          SHOW(&sorted), SHOW(&again));
    lua_settop(L, 0);
    /* codec_parse's tape stays pending until codec_build: nothing else
     * (codec_decode borrows it) may run in between. */
    if (codec_parse(&C, text, size, err, sizeof err) != 0)
        return 0;

    /* A record: untouched, it comes back as its exact bytes. */
    const json_tape *t = codec_pending(&C);
    const json_node *root = &t->nodes[0];
    CHECK(root->type == JSON_OBJECT, "codec_parse accepted a root of type %d", root->type);
    const char *root_text = text + root->off;
    size_t root_len = root->len;
    int dups = 0;
    for (uint32_t i = 0; i < t->n; i++)
        if (t->nodes[i].flags & JSON_DUP)
            dups = 1;
    int has_first = root->n > 0, has_second = root->n > 1;
    if (has_first)
        CHECK(json_unescape(text, &t->nodes[1], &name) == 0, "out of memory");
    if (has_second)
        CHECK(json_unescape(text, &t->nodes[t->nodes[2].end], &name2) == 0, "out of memory");

    codec_doc *doc = codec_build(&C, L);
    CHECK(doc != NULL, "codec_build failed");
    CHECK(lua_gettop(L) == 1 && lua_type(L, 1) == LUA_TTABLE, "codec_build left %d values, the first a %s",
          lua_gettop(L), luaL_typename(L, 1));

    encode(1, doc, &bytes, "the untouched record, with its doc");
    if (!dups) {
        /* Its exact bytes: the whole line, or the object without the
         * whitespace around it. */
        CHECK(same(&bytes, text, size) || same(&bytes, root_text, root_len),
              "the untouched record did not come back as its bytes:\n  in:  '%.*s'\n  out: '%.*s'",
              (int)(size > 300 ? 300 : size), text, SHOW(&bytes));
    } else {
        /* Duplicate names are written once: one object, no duplicates. */
        CHECK(json_parse(&check_tape, bytes.p, bytes.len, JSON_TOP_OBJECT, err, sizeof err) == 0,
              "the doc's output is not a record: %s: '%.*s'", err, SHOW(&bytes));
        for (uint32_t i = 0; i < check_tape.n; i++)
            CHECK(!(check_tape.nodes[i].flags & JSON_DUP), "the doc's output repeats a name: '%.*s'", SHOW(&bytes));
    }
    encode(1, doc, &again, "the untouched record, with its doc, again");
    CHECK(same(&again, bytes.p, bytes.len), "two encodes with the doc differ:\n  '%.*s'\n  '%.*s'", SHOW(&bytes),
          SHOW(&again));
    encode(1, NULL, &other, "the built record, without its doc");
    CHECK(same(&other, sorted.p, sorted.len), "codec_build and codec_decode values encode differently:\n  '%.*s'\n  '%.*s'",
          SHOW(&sorted), SHOW(&other));
    decode(&bytes, "the doc's output");
    encode(2, NULL, &other, "the doc's output decoded");
    CHECK(same(&other, sorted.p, sorted.len), "the doc's output is another value:\n  '%.*s'\n  '%.*s'",
          SHOW(&sorted), SHOW(&other));
    lua_settop(L, 1);

    /* Touched: move the first member to "~fuzz" (or add "~fuzz" = true). */
    lua_pushliteral(L, "~fuzz");
    if (has_first) {
        lua_pushlstring(L, name.p ? name.p : "", name.len);
        lua_rawget(L, 1);
        lua_pushlstring(L, name.p ? name.p : "", name.len);
        lua_pushnil(L);
        lua_rawset(L, 1);
    } else {
        lua_pushboolean(L, 1);
    }
    lua_rawset(L, 1);
    /* ... the second member's value changed in place ... */
    if (has_second) {
        lua_pushlstring(L, name2.p ? name2.p : "", name2.len);
        lua_pushvalue(L, -1);
        lua_rawget(L, 1);
        touch(lua_gettop(L));
        lua_rawset(L, 1);
    }
    /* ... and tables a script builds: {1.5, r} (an array) and {[2.5] = 1}
     * (an object with a number key). */
    lua_pushliteral(L, "~fuzz built");
    lua_createtable(L, 2, 0);
    lua_pushnumber(L, 1.5);
    lua_rawseti(L, -2, 1);
    lua_pushliteral(L, "~fuzz");
    lua_rawget(L, 1);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 0);
    }
    lua_rawseti(L, -2, 2);
    lua_rawset(L, 1);
    lua_pushliteral(L, "~fuzz keys");
    lua_createtable(L, 0, 1);
    lua_pushnumber(L, 2.5);
    lua_pushnumber(L, 1);
    lua_rawset(L, -3);
    lua_rawset(L, 1);
    encode(1, doc, &bytes, "the touched record, with its doc");
    encode(1, NULL, &sorted, "the touched record, without its doc");
    decode(&bytes, "the touched record's output");
    encode(2, NULL, &other, "the touched record's output decoded");
    CHECK(same(&other, sorted.p, sorted.len), "the touched record's output is another value:\n  doc:    '%.*s'\n  want:   '%.*s'\n  got:    '%.*s'",
          SHOW(&bytes), SHOW(&sorted), SHOW(&other));

    codec_doc_free(&C, doc);
    lua_settop(L, 0);
    return 0;
}
