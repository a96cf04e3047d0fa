/*
 * socket_redis.c: the cosocket's methods for moonwait.redis's fast path
 * (lua/moonwait/redis.lua calls them; they are not an API). A command and
 * its reply in one call, with no Lua string for the request and none for
 * the reply's lines, on the wire format of redis_wire.c. Whatever that
 * declines, redis.lua does as before with send and receive, from where the
 * fast path left off: nothing of a declined reply is consumed.
 *
 * The reply is waited for as receive("*l") waits for a reply's first line
 * (the same timer, NET_RECV_REPLY: a line, or the end, which it leaves for
 * redis.lua's receive to find), so a reply that arrives whole -- almost
 * every reply -- is read here, and any other is read by redis.lua exactly
 * as before.
 *
 * Stack effects (_redis and _redis_reply may yield):
 *   sock:_redis_connect(host, port, pool, pool_size) -> 1 | false
 *       1: aimed at host:port with an idle connection of the pool (as
 *       connect with { pool =, pool_size = } would be); false: none, or
 *       an argument connect would check: call sock:connect.
 *   sock:_redis(name, ...) -> reply | false | true | nil [, err]
 *       false: an argument is not plain (nothing was sent: serialize and
 *       send it); true: sent, the reply not read (call _redis_reply);
 *       nil: sent, the reply is for redis.lua's reader (nothing of it
 *       consumed); nil, err: the send failed, or the wait for the reply
 *       timed out (err as send's and receive's; on a timeout what was
 *       buffered is dropped, as receive drops it).
 *   sock:_redis_reply() -> reply | nil [, err]   (the same, for a reply)
 *   sock:_redis_limits(max_bytes, max_elements, max_depth): the reply
 *       limits, and max_buffer = max_bytes + 16 (one bulk must fit; a
 *       longer line is a bad reply), as redis.connect sets them.
 */
#include <lauxlib.h>
#include <string.h>

#include "../net/conn.h"
#include "redis_wire.h"
#include "socket_int.h"

/* The longest request built here (on the C stack); a longer one goes
 * through redis.lua's serialize and send. */
#define REQ_MAX 1024

/* The reply that starts in s's buffer (a line of it is there): push it
 * and note its length in rx.used, or push nil (redis.lua reads it; used 0). */
static void push_reply(lua_State *L, sock *s)
{
    size_t used = redis_wire_reply(L, s->ns.rx.data, s->ns.rx.len, &s->limits);
    if (!used)
        lua_pushnil(L);
    s->ns.rx.used = used;
}

/* The reply's first line: read it now, or park f until it is buffered
 * (f NULL: not acquired yet). */
static int reply(lua_State *L, sock *s, rt_fiber *f)
{
    if (!s->ns.conn) {
        lua_pushnil(L); /* (redis.lua's receive says it) */
        return 1;
    }
    s->ns.rx.kind = NET_RECV_REPLY;
    if (net_recv_match(&s->ns.rx, s->ns.conn) == NET_RECV_DATA) {
        push_reply(L, s);
        net_sock_taken(&s->ns, NET_RECV_DATA);
        return 1;
    }
    if (!f)
        f = sock_acquire(L, s, "receive");
    sock_begin(s, f, s->read_ms);
    s->redis = 1;
    if (net_sock_receive(&s->ns) != 0)
        return sock_abort_now(L, s, "closed");
    return rt_yield(L, f);
}

static int l_redis(lua_State *L)
{
    sock *s = sock_check(L);
    char req[REQ_MAX];
    size_t len = redis_wire_command(L, 2, lua_gettop(L), req, sizeof req);
    if (!len) {
        lua_pushboolean(L, 0);
        return 1;
    }
    /* from here, as send and then receive */
    if (!s->ns.conn)
        return sock_nil_err(L, s, "closed");
    rt_fiber *f = sock_acquire(L, s, "send");
    s->sent = len;
    int rc = net_sock_send(&s->ns, req, len);
    if (rc != 0) {
        net_sock_abort(&s->ns);
        return sock_nil_err(L, s, net_strerror(rc));
    }
    if (s->ns.op != NET_SOCK_IDLE) {
        /* the kernel did not take it all: wait, then true */
        sock_begin(s, f, s->send_ms);
        s->redis = 1;
        return rt_yield(L, f);
    }
    return reply(L, s, f);
}

static int l_redis_reply(lua_State *L)
{
    sock *s = sock_check(L);
    if (s->busy)
        luaL_error(L, "socket busy: receive while another coroutine is waiting on this socket");
    return reply(L, s, NULL);
}

/* An integral number from lo to hi at idx, into *v; 0 if it is not one. */
static int int_arg(lua_State *L, int idx, lua_Number lo, lua_Number hi, lua_Integer *v)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        return 0;
    lua_Number x = lua_tonumber(L, idx);
    if (!(x >= lo && x <= hi) || (lua_Number)(lua_Integer)x != x)
        return 0;
    *v = (lua_Integer)x;
    return 1;
}

/* A string without NUL at idx, or NULL. */
static const char *cstring_arg(lua_State *L, int idx)
{
    size_t n;
    if (lua_type(L, idx) != LUA_TSTRING)
        return NULL;
    const char *p = lua_tolstring(L, idx, &n);
    return memchr(p, '\0', n) ? NULL : p;
}

static int l_redis_connect(lua_State *L)
{
    sock *s = sock_check(L);
    lua_Integer port, size;
    const char *host = cstring_arg(L, 2), *pool = cstring_arg(L, 4);
    if (host && pool && !s->busy && int_arg(L, 3, 1, 65535, &port) && int_arg(L, 5, 1, 9007199254740992.0, &size)
        && net_sock_target(&s->ns, host, (int)port, pool, (size_t)size)) {
        lua_pushinteger(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0); /* (sock:connect does it, or says why not) */
    return 1;
}

/* A limit from a Lua number >= 1 (redis.connect checked it); an enormous
 * one is as good as 2^62. */
static size_t limit_arg(lua_State *L, int idx)
{
    lua_Number x = luaL_checknumber(L, idx);
    if (!(x >= 1))
        luaL_argerror(L, idx, "a limit of 1 or more expected");
    return x >= 4611686018427387904.0 ? (size_t)1 << 62 : (size_t)x;
}

static int l_redis_limits(lua_State *L)
{
    sock *s = sock_check(L);
    s->limits.max_bytes = limit_arg(L, 2);
    s->limits.max_elements = limit_arg(L, 3);
    s->limits.max_depth = limit_arg(L, 4);
    net_sock_set_max_buffer(&s->ns, s->limits.max_bytes + 16);
    return 0;
}

int socket_redis_done(lua_State *co, sock *s, int op, const char *err)
{
    if (err) {
        /* (receive's partial data is not wanted: redis.lua drops it) */
        return sock_nil_err(co, s, err);
    }
    if (op == NET_SOCK_SEND) {
        lua_pushboolean(co, 1);
        return 1;
    }
    /* NET_SOCK_RECV: a line is buffered; net/sock.c consumes rx.used */
    push_reply(co, s);
    return 1;
}

const luaL_Reg socket_redis_methods[] = {
    { "_redis_connect", l_redis_connect },
    { "_redis", l_redis },
    { "_redis_reply", l_redis_reply },
    { "_redis_limits", l_redis_limits },
    { NULL, NULL },
};
