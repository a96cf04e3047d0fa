/*
 * lvalue.h: one Lua value as compact bytes and back, to carry a value out
 * of one VM and into another (moonwait.cache keeps its values this way, so
 * every generation gets its own copy).
 *
 * What survives the round trip exactly: nil, booleans, numbers (the 8
 * bytes of the double: -0, infinities, NaN), strings (any bytes),
 * moonwait.null, int64_t/uint64_t cdata (as the codec makes them), and
 * tables of those, nested, with string, number or boolean keys; a table
 * carrying the codec's array metatable (a JSON array) gets the receiving
 * VM's array metatable. A table is copied wherever it appears: one table
 * reached twice becomes two equal tables.
 *
 * Refused, with the path of the value in the message
 * ("value.a[2]: a function cannot be cached"): functions, userdata, light
 * userdata other than moonwait.null, threads, other cdata, tables with any
 * other metatable, keys of other types, a table inside itself (a cycle),
 * and nesting deeper than LVAL_MAX_DEPTH.
 *
 * The bytes are for this process only (native byte order). Used by
 * cache_value.c.
 */
#ifndef MW_LVALUE_H
#define MW_LVALUE_H

#include <lua.h>
#include <stddef.h>

#include "../util/buf.h"

/* Deepest nesting of tables accepted: as deep as a decoded record can be. */
#define LVAL_MAX_DEPTH 1000

/* Append the bytes of the value at idx of L to b. `root` names the value
 * in error messages ("value", "err"). 0, or -1 with the message in err
 * (b may then hold part of the value: the caller resets its length). Runs
 * no Lua code of the script's (raw access only). */
int lval_encode(lua_State *L, int idx, const char *root, mw_buf *b, char *err, size_t errlen);

/* Push the value encoded in p[0..n) (bytes from lval_encode) on L: fresh
 * tables every time. Raises a Lua error when out of memory (or if the
 * bytes are not lval_encode's). Pushes one value. */
void lval_push(lua_State *L, const void *p, size_t n);

#endif
