/*
 * test_codec.c: the record codec's byte-determinism (src/lua/codec.h) on a
 * real LuaJIT state: an untouched record encodes to its exact input bytes;
 * an edited one keeps the spellings and key order of what was not
 * touched, with added keys after, sorted; the same input and edit give the
 * same bytes every time; 64-bit integers stay exact; [] and {} keep their
 * shape. Records are edited by Lua chunks, as a script would.
 */
#include "../../src/lua/codec.h"

#include <lauxlib.h>
#include <lualib.h>

#include "test.h"

static lua_State *L;
static codec C;

/* A VM as a script gets it, as far as the codec is concerned: ffi for
 * the 64-bit helpers, and the globals an edit uses (array_mt, null). */
static void setup(void)
{
    L = luaL_newstate();
    ASSERT(L != NULL);
    luaL_openlibs(L);
    ASSERT_INT_EQ(codec_init(&C, L), 0);
    codec_push_array_mt(&C, L);
    lua_setglobal(L, "array_mt");
    lua_pushlightuserdata(L, NULL);
    lua_setglobal(L, "null");
}

static void teardown(void)
{
    lua_close(L);
    codec_close(&C); /* after the VM, as vm.c does */
}

/* Registry refs in use: integer keys whose value is not a number
 * (luaL_unref leaves the free list's next index, a number, in a slot). */
static int live_refs(void)
{
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, LUA_REGISTRYINDEX)) {
        if (lua_type(L, -2) == LUA_TNUMBER && lua_tonumber(L, -2) >= 1 && lua_type(L, -1) != LUA_TNUMBER)
            n++;
        lua_pop(L, 1);
    }
    return n;
}

/* Run `edit` (a chunk; the record is `...`) on the value at idx. */
static void run_edit(int idx, const char *edit)
{
    if (luaL_loadstring(L, edit) != 0)
        FAILF("edit does not compile: %s", lua_tostring(L, -1));
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 0, 0) != 0)
        FAILF("edit failed: %s", lua_tostring(L, -1));
}

/* Decode `line` as a record, apply `edit` (NULL: none), encode it with its
 * doc. Returns the bytes (malloc'd, NUL-terminated), or NULL with err set
 * when encoding fails. The doc is freed; the stack is as it was. */
static char *recode(const char *line, const char *edit, char *err, size_t errlen)
{
    int top = lua_gettop(L);
    if (codec_parse(&C, line, strlen(line), err, errlen) != 0)
        FAILF("parse: %s", err);
    codec_doc *d = codec_build(&C, L);
    ASSERT(d != NULL);
    ASSERT_INT_EQ(lua_gettop(L), top + 1);
    if (edit)
        run_edit(top + 1, edit);
    mw_buf b = { NULL, 0, 0 };
    int rc = codec_encode(&C, L, top + 1, d, &b, err, errlen);
    ASSERT_INT_EQ(lua_gettop(L), top + 1);
    lua_settop(L, top);
    codec_doc_free(&C, d);
    if (rc != 0) {
        free(b.p);
        return NULL;
    }
    ASSERT_INT_EQ(mw_buf_add(&b, "", 1), 0);
    return b.p;
}

static void expect(const char *line, const char *edit, const char *want)
{
    char err[256];
    char *got = recode(line, edit, err, sizeof err);
    if (!got)
        FAILF("encode of %s failed: %s", line, err);
    ASSERT_STR_EQ(got, want);
    free(got);
}

/* Decode any JSON text without a doc, apply edit, encode without a doc. */
static void expect_plain(const char *text, const char *edit, const char *want)
{
    char err[256];
    if (codec_decode(&C, L, text, strlen(text), err, sizeof err) != 0)
        FAILF("decode: %s", err);
    if (edit)
        run_edit(lua_gettop(L), edit);
    mw_buf b = { NULL, 0, 0 };
    if (codec_encode(&C, L, -1, NULL, &b, err, sizeof err) != 0)
        FAILF("encode: %s", err);
    lua_pop(L, 1);
    ASSERT_INT_EQ(mw_buf_add(&b, "", 1), 0);
    ASSERT_STR_EQ(b.p, want);
    free(b.p);
}

#define ODD_LINE                                                                          \
    " { \"b\" : 1.50 , \"a\":[1e2, \"x\\u0041\\/\", {} ,[ ] ,-0], \"c\":{\"z\":null,\"y\":true}," \
    " \"d\": \"caf\\u00e9\" }  "

/* Whitespace, number spellings, escapes, key order: all kept. */
static void test_untouched_record_is_its_exact_line(void)
{
    setup();
    expect(ODD_LINE, NULL, ODD_LINE);
    expect("{}", NULL, "{}");
    /* Reading fields changes nothing. */
    expect(ODD_LINE, "local r = ...; local _ = r.a[1], r.c.z, r.d, #r.a", ODD_LINE);
    teardown();
}

/* Once the record changed, its containers are written compactly, but
 * every untouched value keeps its spelling and every key its place. */
static void test_edited_record_keeps_untouched_spellings_and_order(void)
{
    setup();
    expect(ODD_LINE, "local r = ...; r.c.y = false",
           "{\"b\":1.50,\"a\":[1e2,\"x\\u0041\\/\",{},[],-0],\"c\":{\"z\":null,\"y\":false},\"d\":\"caf\\u00e9\"}");
    /* A removed key goes; a changed value is encoded afresh. */
    expect(ODD_LINE, "local r = ...; r.b = nil; r.d = 'tea'",
           "{\"a\":[1e2,\"x\\u0041\\/\",{},[],-0],\"c\":{\"z\":null,\"y\":true},\"d\":\"tea\"}");
    /* Only removed (nothing else changed, at any depth): the untouched-record
     * check must see the missing key. */
    expect("{\"a\":1,\"b\":2,\"c\":{\"x\":1,\"y\":2}}", "local r = ...; r.b = nil",
           "{\"a\":1,\"c\":{\"x\":1,\"y\":2}}");
    expect("{\"a\":1,\"c\":{\"x\":1,\"y\":2}}", "local r = ...; r.c.y = nil", "{\"a\":1,\"c\":{\"x\":1}}");
    /* An element moved by table.insert/remove keeps its spelling. */
    expect("{\"a\":[1.50,\"\\u0041\",2]}", "local r = ...; table.insert(r.a, 1, 0)",
           "{\"a\":[0,1.50,\"\\u0041\",2]}");
    expect("{\"a\":[1.50,\"\\u0041\",2]}", "local r = ...; table.remove(r.a, 1)", "{\"a\":[\"\\u0041\",2]}");
    /* A repeated key: written once, at its first place, with its last value. */
    expect("{\"a\":1,\"b\":2,\"a\":3}", NULL, "{\"a\":3,\"b\":2}");
    teardown();
}

static void test_added_keys_come_after_sorted(void)
{
    setup();
    expect("{\"z\":1,\"a\":2}", "local r = ...; r.m = 3; r.b = 4; r['0'] = 5; r.B = 6",
           "{\"z\":1,\"a\":2,\"0\":5,\"B\":6,\"b\":4,\"m\":3}");
    /* ... also when every original key was removed, and in nested tables. */
    expect("{\"z\":1,\"o\":{\"y\":1}}", "local r = ...; r.z = nil; r.o = nil; r.k = {q = 1, p = {2}}",
           "{\"k\":{\"p\":[2],\"q\":1}}");
    expect("{\"o\":{\"y\":1}}", "local r = ...; r.o.x = 1", "{\"o\":{\"y\":1,\"x\":1}}");
    teardown();
}

/* The bytes depend on the input and the edit only, not on the VM's
 * history (table addresses, hash order, interning). */
static void test_same_input_gives_same_bytes_every_time(void)
{
    setup();
    const char *line = "{\"k9\":1,\"k1\":[1,2],\"k5\":{\"x\":1.0}}";
    const char *edit = "local r = ...; r.new = {c = 1, a = 2, b = {z = 1, y = 2}}; r.k5.w = 'v'";
    char err[256];
    char *first = recode(line, edit, err, sizeof err);
    ASSERT(first != NULL);
    for (int i = 0; i < 20; i++) {
        /* Churn the heap and the string table between runs. */
        ASSERT_INT_EQ(luaL_dostring(L, "local t = {} for i = 1, 2000 do t['k' .. i] = {i} end"), 0);
        lua_gc(L, LUA_GCCOLLECT, 0);
        char *again = recode(line, edit, err, sizeof err);
        ASSERT(again != NULL);
        ASSERT_STR_EQ(again, first);
        free(again);
    }
    char *untouched = recode(line, NULL, err, sizeof err);
    ASSERT_STR_EQ(untouched, line);
    free(untouched);
    free(first);
    /* One doc, encoded twice: the same bytes. */
    ASSERT_INT_EQ(codec_parse(&C, line, strlen(line), err, sizeof err), 0);
    codec_doc *d = codec_build(&C, L);
    run_edit(lua_gettop(L), edit);
    mw_buf a = { NULL, 0, 0 }, b = { NULL, 0, 0 };
    ASSERT_INT_EQ(codec_encode(&C, L, -1, d, &a, err, sizeof err), 0);
    ASSERT_INT_EQ(codec_encode(&C, L, -1, d, &b, err, sizeof err), 0);
    ASSERT_UINT_EQ(a.len, b.len);
    ASSERT(memcmp(a.p, b.p, a.len) == 0);
    free(a.p);
    free(b.p);
    lua_pop(L, 1);
    codec_doc_free(&C, d);
    /* Without a doc: keys sorted, whatever order they were set in. */
    expect_plain("{\"b\":1,\"a\":[1,2,{}],\"c\":{\"y\":1,\"x\":[]}}", NULL,
                 "{\"a\":[1,2,{}],\"b\":1,\"c\":{\"x\":[],\"y\":1}}");
    expect_plain("{}", "local t = ...; for i = 30, 1, -1 do t['k' .. i] = i end; for i = 1, 29 do t['k' .. i] = nil end",
                 "{\"k30\":30}");
    teardown();
}

/* Integers beyond 2^53 are exact both ways: untouched, moved, and
 * computed (int64_t/uint64_t cdata). */
static void test_big_integers_stay_exact(void)
{
    setup();
    const char *line = "{\"a\":9007199254740993,\"b\":-9223372036854775808,\"c\":18446744073709551615,"
                       "\"d\":12345678901234567890,\"e\":9007199254740992}";
    expect(line, NULL, line);
    expect(line, "local r = ...; r.x = r.a; r.a = r.a + 1",
           "{\"a\":9007199254740994,\"b\":-9223372036854775808,\"c\":18446744073709551615,"
           "\"d\":12345678901234567890,\"e\":9007199254740992,\"x\":9007199254740993}");
    expect_plain("[9007199254740993,18446744073709551615]", NULL, "[9007199254740993,18446744073709551615]");
    /* Other cdata is refused, saying what it is. */
    char err[256];
    char *got = recode("{}", "local r = ...; r.p = require('ffi').new('int[1]')", err, sizeof err);
    ASSERT(got == NULL);
    ASSERT_STR_EQ(err, "cannot encode a cdata value as JSON (only int64_t and uint64_t)");
    teardown();
}

/* An empty array stays [] and an empty object {}; tables the script
 * builds are arrays when they carry array_mt or have keys exactly 1..n. */
static void test_arrays_and_objects_keep_their_shape(void)
{
    setup();
    expect("{\"a\":[],\"o\":{}}", "local r = ...; r.n = 1", "{\"a\":[],\"o\":{},\"n\":1}");
    expect("{}", "local r = ...; r.e = {}; r.f = setmetatable({}, array_mt); r.s = {1, 2}",
           "{\"e\":{},\"f\":[],\"s\":[1,2]}");
    /* Reshaped by the script: an array without array_mt and with no
     * elements is an object; an object given array_mt is an array. */
    expect("{\"a\":[],\"o\":{}}", "local r = ...; setmetatable(r.a, nil); setmetatable(r.o, array_mt)",
           "{\"a\":{},\"o\":[]}");
    /* A decoded array emptied keeps its brackets. */
    expect("{\"a\":[1,2]}", "local r = ...; r.a[2] = nil; r.a[1] = nil", "{\"a\":[]}");
    char err[256];
    char *got = recode("{}", "local r = ...; r.h = setmetatable({1, nil, 3}, array_mt)", err, sizeof err);
    ASSERT(got == NULL);
    ASSERT_STR_EQ(err, "cannot encode a JSON array that has holes or keys other than 1..n");
    teardown();
}

/* A freed doc drops its anchors' registry ref and is recycled. */
static void test_docs_release_their_refs(void)
{
    setup();
    int before = live_refs();
    char err[256];
    const char *line = "{\"a\":{\"b\":[1,\"\\n\"]}}";
    ASSERT_INT_EQ(codec_parse(&C, line, strlen(line), err, sizeof err), 0);
    codec_doc *d = codec_build(&C, L);
    ASSERT_INT_EQ(live_refs(), before + 1);
    ASSERT(C.live == d);
    lua_pop(L, 1);
    codec_doc_free(&C, d);
    ASSERT_INT_EQ(live_refs(), before);
    ASSERT(C.live == NULL && C.free_docs == d);
    for (int i = 0; i < 100; i++) {
        char *out = recode(line, "local r = ...; r.a.c = 1", err, sizeof err);
        ASSERT(out != NULL);
        free(out);
    }
    ASSERT_INT_EQ(live_refs(), before);
    ASSERT(C.live == NULL && C.free_docs == d);
    teardown();
}

TEST_MAIN("codec", T(test_untouched_record_is_its_exact_line),
          T(test_edited_record_keeps_untouched_spellings_and_order), T(test_added_keys_come_after_sorted),
          T(test_same_input_gives_same_bytes_every_time), T(test_big_integers_stay_exact),
          T(test_arrays_and_objects_keep_their_shape), T(test_docs_release_their_refs))
