/*
 * test_json.c: the strict JSON parser and writer (src/json), without Lua.
 */
#include "../../src/json/json.h"
#include "test.h"

static int parse(json_tape *t, const char *s, char *err)
{
    return json_parse(t, s, strlen(s), JSON_TOP_OBJECT, err, 256);
}

static void t_int64_edges(void)
{
    json_tape t = { 0 };
    char err[256];
    ASSERT_INT_EQ(parse(&t, "{\"a\":9223372036854775807,\"b\":-9223372036854775808,\"c\":18446744073709551615,"
                            "\"d\":9007199254740993,\"e\":9007199254740992}", err), 0);
    ASSERT(t.nodes[2].flags & JSON_I64);
    ASSERT_INT_EQ(t.nodes[2].v.i, INT64_MAX);
    ASSERT(t.nodes[4].flags & JSON_I64);
    ASSERT(t.nodes[4].v.i == INT64_MIN);
    ASSERT(t.nodes[6].flags & JSON_U64);
    ASSERT_UINT_EQ(t.nodes[6].v.u, UINT64_MAX);
    ASSERT(t.nodes[8].flags & JSON_I64);
    ASSERT_INT_EQ(t.nodes[8].v.i, 9007199254740993LL);
    ASSERT(t.nodes[10].flags & JSON_INT);
    json_tape_free(&t);
}

static void t_rejects_leading_zero(void)
{
    json_tape t = { 0 };
    char err[256];
    ASSERT_INT_EQ(parse(&t, "{\"a\":01}", err), -1);
    ASSERT_STR_EQ(err, "malformed JSON at byte 6: invalid number: leading zero");
    json_tape_free(&t);
}

TEST_MAIN("json", T(t_int64_edges), T(t_rejects_leading_zero))
