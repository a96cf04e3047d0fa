/*
 * mod_socket.c: moonwait.socket, the cosocket (a subset of OpenResty's
 * ngx.socket.tcp with the same names, arguments and results): the Lua
 * binding of net/sock.c, which owns the connection and its operations.
 *
 * Each operation tries to finish at once from what is buffered; only when
 * it must wait does it park the calling fiber (rt_park) with a cancel hook,
 * arm the fiber's timer with rt_wait_ms() (the smaller of the socket's
 * timeout and the record's remaining budget), and yield. net/sock.c's
 * callback (on_done) or the timer pushes the results and wakes the fiber.
 *
 * Errors: misuse raises (bad arguments, a socket used by two coroutines at
 * once); runtime failures return nil, err with err from a fixed set:
 * "timeout", "closed", "connection refused", "connection reset",
 * "host not found", "no resolver", "buffer too large", "unread data",
 * "ssl handshake failed: ...", "certificate verify failed: ...",
 * followed by " (host:port)", the last connect's target (net/where.h:
 * "[::1]:6379" for IPv6), or " (not connected)" before any connect:
 * "closed (127.0.0.1:6379)". The leading words stay as they are, for
 * err:find("^timeout"). push_err is the one place that adds it.
 * A read timeout leaves the socket usable; every other error closes it.
 *
 * Stack effects (Lua-visible):
 *   socket.tcp() -> sock
 *   sock:connect(host, port [, opts]) -> 1 | nil, err          may yield
 *   sock:sslhandshake([reused, server_name, verify]) -> true | nil, err   yields
 *   sock:send(data) -> bytes | nil, err                        yields
 *   sock:receive([pattern]) -> data | nil, err, partial        may yield
 *   sock:receiveuntil(delim) -> iterator(); iterator() like receive
 *   sock:settimeout(ms), sock:settimeouts(c, s, r)
 *   sock:setoption(name, value) -> true  ("max_buffer", "ca_file")
 *   sock:setkeepalive([idle_ms [, pool_size]]) -> 1 | nil, err
 *   sock:getreusedtimes() -> n | nil, err
 *   sock:close() -> 1 | nil, err
 * (socket_redis.c adds moonwait.redis's internal _redis methods.)
 */
#define _GNU_SOURCE
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "../net/pool.h"
#include "../net/sock.h"
#include "../net/tls.h"
#include "../net/where.h"
#include "modules.h"
#include "runtime.h"
#include "socket_int.h"

#define SOCK_MT "moonwait.socket.tcp"
#define DEFAULT_TIMEOUT_MS 60000
#define DEFAULT_POOL_SIZE 30
#define DEFAULT_IDLE_MS 60000
#define DEFAULT_MAX_BUFFER (16u * 1024 * 1024)

/* A userdata of our size with our tag is a socket: two API calls, where
 * comparing its metatable with the methods' upvalue 1 took four (~180
 * instructions, three calls per Redis GET) and luaL_checkudata's registry
 * lookup by name a string hash more. Only C writes a userdata's bytes, so
 * nothing else carries the tag; anything else gets luaL_checkudata's
 * check and error. */
sock *sock_check(lua_State *L)
{
    sock *p = lua_touserdata(L, 1);
    if (p && lua_objlen(L, 1) == sizeof *p && p->tag == SOCK_TAG)
        return p;
    return luaL_checkudata(L, 1, SOCK_MT);
}

/* A string argument that C uses as a C string (a host name, a pool name, a
 * file path): a NUL inside would silently cut it, so it raises. */
static const char *check_cstring(lua_State *L, int idx, const char *what)
{
    size_t n;
    const char *s = luaL_checklstring(L, idx, &n);
    if (memchr(s, '\0', n))
        luaL_error(L, "bad argument #%d (%s contains a NUL byte)", idx > 0 ? idx - 1 : 1, what);
    return s;
}

/* s equals the literal lit, bytes and length. */
#define STR_IS(s, n, lit) ((n) == sizeof(lit) - 1 && memcmp((s), (lit), (n)) == 0)

/* Push err followed by where s is aimed: " (host:port)", or
 * " (not connected)" before its first connect. */
void sock_push_err(lua_State *L, const sock *s, const char *err)
{
    char where[NET_WHERE_MAX] = "not connected";
    if (s->ns.host)
        net_where_peer(where, sizeof where, s->ns.host, s->ns.port);
    lua_pushfstring(L, "%s (%s)", err, where);
}

/* nil, err: a runtime failure. */
int sock_nil_err(lua_State *L, const sock *s, const char *err)
{
    lua_pushnil(L);
    sock_push_err(L, s, err);
    return 2;
}

/* ---- waiting ---------------------------------------------------------------- */

static void end_wait(sock *s)
{
    rt_fiber *f = s->busy;
    if (f)
        rt_timer_stop(&f->timer);
    s->busy = NULL;
}

/* The fiber woken by finish() runs (resumed), or is discarded before it
 * could (killed by its parent, its record timed out, the VM closes) while
 * it sat in the ready queue with its results. Those results were taken off
 * the connection (a reply's line consumed from the buffer, a request sent
 * whose reply nobody will read): the conversation is half done, so the
 * connection is closed, as on_cancel closes it mid-wait. Until then the
 * socket stays busy: no other coroutine may use, pool or close it while
 * the result of its last operation has not reached the script. Without
 * this, a parent that killed a child in that window and then called
 * setkeepalive pooled the connection with a reply still coming, and the
 * next borrower read it as the answer to its own command. */
static void on_held(rt_fiber *f, int resumed)
{
    sock *s = f->wait; /* (alive: on f's stack, which is still anchored) */
    s->busy = NULL;
    if (!resumed)
        net_sock_abort(&s->ns);
}

/* Wake the waiting fiber with `n` values it already has on its stack. */
static void finish(sock *s, int n)
{
    rt_fiber *f = s->busy;
    rt_timer_stop(&f->timer);
    rt_wake_held(f, n, on_held, s);
}

/* net/sock.c's callback: push the operation's results and wake the fiber. */
static void on_done(net_sock *ns, int op, const char *err)
{
    sock *s = (sock *)ns;
    if (!s->busy)
        return;
    lua_State *co = s->busy->co;
    int n = 0;
    if (s->redis) {
        s->redis = 0;
        finish(s, socket_redis_done(co, s, op, err));
        return;
    }
    if (err) {
        lua_pushnil(co);
        sock_push_err(co, s, err);
        n = 2;
    }
    if (op == NET_SOCK_RECV) {
        lua_pushlstring(co, ns->rx.data, ns->rx.len); /* data, or partial data */
        n++;
    } else if (!err) {
        if (op == NET_SOCK_SEND)
            lua_pushinteger(co, (lua_Integer)s->sent);
        else if (op == NET_SOCK_HANDSHAKE)
            lua_pushboolean(co, 1);
        else
            lua_pushinteger(co, 1);
        n = 1;
    }
    finish(s, n);
}

/* The record timed out (or the run ended) while this socket was busy. */
static void on_cancel(rt_fiber *f)
{
    sock *s = f->wait;
    rt_timer_stop(&f->timer);
    /* Half-used: never pooled. */
    net_sock_abort(&s->ns);
    s->busy = NULL;
}

static void on_timer(rt_timer *t)
{
    rt_fiber *f = t->data;
    sock *s = f->wait;
    if (!s || s->busy != f)
        return;
    net_sock_timeout(&s->ns); /* calls on_done */
}

/* Park f on s. The caller starts the operation afterwards, and yields. */
void sock_begin(sock *s, rt_fiber *f, uint64_t timeout_ms)
{
    s->busy = f;
    s->redis = 0; /* (socket_redis.c sets it after this) */
    rt_park(f, on_cancel, s);
    uint64_t ms = rt_wait_ms(f, timeout_ms);
    if (ms)
        rt_timer_start(&f->timer, on_timer, ms);
}

/* The operation failed to start: undo sock_begin(), close, return nil, err now. */
int sock_abort_now(lua_State *L, sock *s, const char *err)
{
    rt_fiber *f = s->busy;
    end_wait(s);
    rt_unpark(f);
    net_sock_abort(&s->ns);
    return sock_nil_err(L, s, err);
}

rt_fiber *sock_acquire(lua_State *L, sock *s, const char *what)
{
    if (s->busy)
        luaL_error(L, "socket busy: %s while another coroutine is waiting on this socket", what);
    return rt_check_yieldable(L, what);
}

/* ---- receive ----------------------------------------------------------------- */

/* Push a receive's result (m: NET_RECV_DATA or _END) and consume it. */
static int push_received(lua_State *L, sock *s, int m)
{
    if (m == NET_RECV_END) {
        lua_pushnil(L);
        sock_push_err(L, s, s->ns.rx.err);
    }
    lua_pushlstring(L, s->ns.rx.data, s->ns.rx.len);
    net_sock_taken(&s->ns, m);
    return m == NET_RECV_DATA ? 1 : 3;
}

static int do_receive(lua_State *L, sock *s)
{
    if (!s->ns.conn) {
        sock_nil_err(L, s, "closed");
        lua_pushliteral(L, "");
        return 3;
    }
    int m = net_recv_match(&s->ns.rx, s->ns.conn);
    if (m != NET_RECV_MORE)
        return push_received(L, s, m);
    rt_fiber *f = sock_acquire(L, s, "receive");
    sock_begin(s, f, s->read_ms);
    if (net_sock_receive(&s->ns) != 0)
        return sock_abort_now(L, s, "closed");
    return rt_yield(L, f);
}

static int l_receive(lua_State *L)
{
    sock *s = sock_check(L);
    if (s->busy)
        luaL_error(L, "socket busy: receive while another coroutine is waiting on this socket");
    if (lua_isnoneornil(L, 2)) {
        s->ns.rx.kind = NET_RECV_LINE;
    } else if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Number n = lua_tonumber(L, 2);
        if (n < 0 || n != (lua_Number)(size_t)n)
            return luaL_argerror(L, 2, "a non-negative integer byte count expected");
        if (n == 0) {
            lua_pushliteral(L, "");
            return 1;
        }
        if ((size_t)n > s->ns.max_buffer)
            return luaL_argerror(L, 2, "byte count larger than the socket's max_buffer");
        s->ns.rx.kind = NET_RECV_COUNT;
        s->ns.rx.want = (size_t)n;
    } else {
        size_t pl;
        const char *p = luaL_checklstring(L, 2, &pl);
        if (net_recv_pattern(&s->ns.rx, p, pl) != 0)
            return luaL_argerror(L, 2, "pattern must be \"*l\", \"*a\" or a byte count");
    }
    return do_receive(L, s);
}

static int l_until_iter(lua_State *L)
{
    sock *s = luaL_checkudata(L, lua_upvalueindex(1), SOCK_MT);
    if (s->busy)
        luaL_error(L, "socket busy: receiveuntil iterator while another coroutine is waiting on this socket");
    if (!lua_isnoneornil(L, 1))
        return luaL_argerror(L, 1, "the size argument of OpenResty's iterator is not supported");
    /* The delimiter stays alive across a yield: this closure, which holds
     * it as an upvalue, is on the waiting coroutine's stack. */
    s->ns.rx.delim = lua_tolstring(L, lua_upvalueindex(2), &s->ns.rx.dlen);
    s->ns.rx.kind = NET_RECV_UNTIL;
    return do_receive(L, s);
}

static int l_receiveuntil(lua_State *L)
{
    sock_check(L);
    size_t n;
    luaL_checklstring(L, 2, &n);
    if (n == 0)
        return luaL_argerror(L, 2, "the delimiter must not be empty");
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, l_until_iter, 2);
    return 1;
}

/* ---- send, connect, TLS ------------------------------------------------------------ */

static int l_send(lua_State *L)
{
    sock *s = sock_check(L);
    size_t len;
    const char *data;
    if (lua_type(L, 2) == LUA_TTABLE) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        size_t n = lua_objlen(L, 2);
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, 2, (int)i);
            if (!lua_isstring(L, -1))
                luaL_error(L, "bad argument #1 to 'send' (element %d is a %s, not a string)",
                           (int)i, luaL_typename(L, -1));
            luaL_addvalue(&b);
        }
        luaL_pushresult(&b);
        data = lua_tolstring(L, -1, &len);
    } else if (lua_isstring(L, 2)) {
        data = lua_tolstring(L, 2, &len);
    } else {
        return luaL_argerror(L, 2, "a string or an array of strings expected");
    }
    if (!s->ns.conn)
        return sock_nil_err(L, s, "closed");
    rt_fiber *f = sock_acquire(L, s, "send");
    s->sent = len;
    /* Sent before parking: a request usually fits the socket buffer, and
     * then it is done at once (on_done sees no waiter and ignores it)
     * without the fiber's timer or a trip through the ready queue. */
    int rc = net_sock_send(&s->ns, data, len);
    if (rc != 0) {
        net_sock_abort(&s->ns);
        return sock_nil_err(L, s, net_strerror(rc));
    }
    if (s->ns.op == NET_SOCK_IDLE) {
        lua_pushinteger(L, (lua_Integer)len);
        return 1;
    }
    sock_begin(s, f, s->send_ms); /* (its callback comes from the loop, later) */
    return rt_yield(L, f);
}

static int l_connect(lua_State *L)
{
    sock *s = sock_check(L);
    const char *host = check_cstring(L, 2, "the host");
    lua_Integer port = luaL_checkinteger(L, 3);
    if (port < 1 || port > 65535)
        return luaL_argerror(L, 3, "port must be from 1 to 65535");
    const char *pool = NULL;
    lua_Integer pool_size = 0;
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        /* (the names are upvalues: lua_getfield makes its key string
         * again -- hashed, interned -- ~240 instructions a field) */
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_gettable(L, 4);
        if (!lua_isnil(L, -1))
            pool = check_cstring(L, -1, "the pool name");
        lua_pushvalue(L, lua_upvalueindex(2));
        lua_gettable(L, 4);
        if (!lua_isnil(L, -1)) {
            pool_size = luaL_checkinteger(L, -1);
            if (pool_size < 1)
                return luaL_argerror(L, 4, "pool_size must be positive");
        }
        lua_pop(L, 2);
    }
    if (s->busy)
        luaL_error(L, "socket busy: connect while another coroutine is waiting on this socket");
    if (net_sock_target(&s->ns, host, (int)port, pool, (size_t)pool_size)) {
        lua_pushinteger(L, 1); /* an idle pooled connection */
        return 1;
    }
    rt_fiber *f = sock_acquire(L, s, "connect");
    sock_begin(s, f, s->connect_ms);
    int rc = net_sock_connect(&s->ns, f->rt->loop, host, (int)port);
    if (rc < 0)
        return sock_abort_now(L, s, net_strerror(rc));
    return rt_yield(L, f);
}

static int l_sslhandshake(lua_State *L)
{
    sock *s = sock_check(L);
    /* arg 2, reused_session: session resumption is not supported; a
     * fresh handshake is always made, and true is returned. */
    const char *sni = lua_isnoneornil(L, 3) ? s->ns.host : check_cstring(L, 3, "the server name");
    int verify = lua_toboolean(L, 4);
    if (!s->ns.conn)
        return sock_nil_err(L, s, "closed");
    if (s->ns.conn->ssl)
        luaL_error(L, "sslhandshake: the connection is already using TLS");
    char err[256];
    SSL_CTX *ctx = tls_client_ctx(s->ns.ca_file, err, sizeof err);
    if (!ctx) {
        lua_pushfstring(L, "ssl handshake failed: %s", err);
        return sock_nil_err(L, s, lua_tostring(L, -1));
    }
    rt_fiber *f = sock_acquire(L, s, "sslhandshake");
    sock_begin(s, f, s->connect_ms);
    if (net_sock_handshake(&s->ns, ctx, sni, verify) != 0)
        return sock_abort_now(L, s, "ssl handshake failed");
    return rt_yield(L, f);
}

/* ---- the rest ------------------------------------------------------------------------- */

static int l_settimeout(lua_State *L)
{
    sock *s = sock_check(L);
    uint64_t ms;
    luaL_checknumber(L, 2);
    if (rt_lua_ms(L, 2, &ms) != 0)
        return luaL_argerror(L, 2, "timeout must be >= 0 ms");
    s->connect_ms = s->send_ms = s->read_ms = ms;
    return 0;
}

static int l_settimeouts(lua_State *L)
{
    sock *s = sock_check(L);
    uint64_t c, w, r;
    luaL_checknumber(L, 2);
    luaL_checknumber(L, 3);
    luaL_checknumber(L, 4);
    if (rt_lua_ms(L, 2, &c) != 0 || rt_lua_ms(L, 3, &w) != 0 || rt_lua_ms(L, 4, &r) != 0)
        return luaL_error(L, "bad argument to 'settimeouts' (timeouts must be >= 0 ms)");
    s->connect_ms = c;
    s->send_ms = w;
    s->read_ms = r;
    return 0;
}

static int l_setoption(lua_State *L)
{
    sock *s = sock_check(L);
    size_t nl;
    const char *name = luaL_checklstring(L, 2, &nl);
    if (STR_IS(name, nl, "max_buffer")) {
        lua_Integer n = luaL_checkinteger(L, 3);
        if (n < 16)
            return luaL_argerror(L, 3, "max_buffer must be at least 16 bytes");
        net_sock_set_max_buffer(&s->ns, (size_t)n);
    } else if (STR_IS(name, nl, "ca_file")) {
        net_sock_set_ca_file(&s->ns, check_cstring(L, 3, "the ca_file path"));
    } else {
        return luaL_argerror(L, 2, "unknown option (known: max_buffer, ca_file)");
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_setkeepalive(lua_State *L)
{
    sock *s = sock_check(L);
    lua_Integer idle = luaL_optinteger(L, 2, DEFAULT_IDLE_MS);
    lua_Integer size = luaL_optinteger(L, 3, (lua_Integer)s->ns.pool_size);
    if (idle < 0 || size < 1)
        return luaL_error(L, "bad argument to 'setkeepalive' (idle_ms >= 0, pool_size >= 1)");
    if (s->busy)
        luaL_error(L, "socket busy: setkeepalive while another coroutine is waiting on this socket");
    if (!s->ns.conn)
        return sock_nil_err(L, s, "closed");
    const char *why = net_sock_keepalive(&s->ns, (uint64_t)idle, (size_t)size);
    if (why)
        return sock_nil_err(L, s, why);
    lua_pushinteger(L, 1);
    return 1;
}

static int l_getreusedtimes(lua_State *L)
{
    sock *s = sock_check(L);
    if (!s->ns.conn)
        return sock_nil_err(L, s, "closed");
    lua_pushinteger(L, (lua_Integer)s->ns.conn->reuses);
    return 1;
}

static int l_close(lua_State *L)
{
    sock *s = sock_check(L);
    if (s->busy)
        luaL_error(L, "socket busy: close while another coroutine is waiting on this socket");
    if (!s->ns.conn)
        return sock_nil_err(L, s, "closed");
    net_sock_close(&s->ns);
    lua_pushinteger(L, 1);
    return 1;
}

static int l_gc(lua_State *L)
{
    sock *s = lua_touserdata(L, 1);
    net_sock_free(&s->ns);
    return 0;
}

static int l_tostring(lua_State *L)
{
    sock *s = sock_check(L);
    lua_pushfstring(L, "moonwait.socket.tcp (%s)", s->ns.conn ? "connected" : "closed");
    return 1;
}

static int l_tcp(lua_State *L)
{
    sock *s = lua_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    net_sock_init(&s->ns, DEFAULT_MAX_BUFFER, DEFAULT_POOL_SIZE, on_done);
    s->tag = SOCK_TAG;
    s->connect_ms = s->send_ms = s->read_ms = DEFAULT_TIMEOUT_MS;
    luaL_getmetatable(L, SOCK_MT);
    lua_setmetatable(L, -2);
    return 1;
}
/* socket.pool_count([key]) -> idle connections in the pool (for tests and
 * diagnostics). */
static int l_pool_count(lua_State *L)
{
    const char *key = lua_isnoneornil(L, 1) ? NULL : check_cstring(L, 1, "the pool name");
    lua_pushinteger(L, (lua_Integer)net_pool_count(key));
    return 1;
}

int mod_socket_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "sslhandshake", l_sslhandshake },
        { "send", l_send },               { "receive", l_receive },
        { "receiveuntil", l_receiveuntil }, { "settimeout", l_settimeout },
        { "settimeouts", l_settimeouts }, { "setoption", l_setoption },
        { "setkeepalive", l_setkeepalive }, { "getreusedtimes", l_getreusedtimes },
        { "close", l_close },             { NULL, NULL },
    };
    if (luaL_newmetatable(L, SOCK_MT)) {
        lua_newtable(L);
        luaL_openlib(L, NULL, methods, 0);
        luaL_openlib(L, NULL, socket_redis_methods, 0);
        lua_pushliteral(L, "pool");
        lua_pushliteral(L, "pool_size");
        lua_pushcclosure(L, l_connect, 2); /* upvalues: its option names */
        lua_setfield(L, -2, "connect");
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = { { "tcp", l_tcp }, { "pool_count", l_pool_count }, { NULL, NULL } };
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    return 1;
}
