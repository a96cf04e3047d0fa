/*
 * redis_wire.h: moonwait.redis's fast path on the wire, RESP2 between Lua
 * values and bytes, with no socket (src/lua/socket_redis.c drives it):
 *
 *   - a command's bytes from plain Lua arguments (strings, integral
 *     numbers), as lua/moonwait/redis.lua's serialize() writes them;
 *   - one whole reply, already buffered, pushed as the Lua value that
 *     redis.lua's own reader (read_value) would return for the same bytes.
 *
 * Either may decline, and then redis.lua does the work itself, as before:
 * an argument of another type (its conversions and its error), a command
 * longer than the caller's buffer; a reply that is not all buffered yet,
 * an error reply (its text names the command), an integer past 15 digits
 * (read_value's int64 cdata), anything malformed or over a limit (read_value
 * alone says what is wrong, so its messages stay the only ones). Nothing is
 * consumed then. The limits are counted as read_value counts them (a line's
 * bytes as its length without one CR, plus 2). spec/c/test_redis_wire.c and
 * spec/fuzz/fuzz_resp.c compare the two readers.
 * Public names: redis_wire_*.
 */
#ifndef MW_REDIS_WIRE_H
#define MW_REDIS_WIRE_H

#include <lua.h>
#include <stddef.h>

/* A connection's reply limits (redis.connect's max_reply_bytes,
 * max_elements, max_depth). All 0: every reply declined. */
typedef struct redis_wire_limits {
    size_t max_bytes;
    size_t max_elements;
    size_t max_depth;
} redis_wire_limits;

/* The command of the Lua values at stack indexes first..last of L, written
 * to out (cap bytes). Returns its length, or 0 when an argument is neither
 * a string nor an integral number within +-2^53, or it does not fit.
 * Raises nothing. */
size_t redis_wire_command(lua_State *L, int first, int last, char *out, size_t cap);

/* The reply at d[0..n): push its value on L and return the bytes it took
 * (> 0); or push nothing and return 0 (declined, see above). Raises only
 * for memory, as lua_push* do. */
size_t redis_wire_reply(lua_State *L, const char *d, size_t n, const redis_wire_limits *lim);

#endif
