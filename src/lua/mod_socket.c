/*
 * mod_socket.c: moonwait.socket, the cosocket (a subset of OpenResty's
 * ngx.socket.tcp with the same names, arguments and results).
 *
 * Each operation tries to finish at once from what is buffered; only when
 * it must wait does it park the calling fiber (rt_park) with a cancel hook,
 * arm the fiber's timer with rt_wait_ms() (the smaller of the socket's
 * timeout and the record's remaining budget), and yield. The net_conn
 * callback or the timer pushes the results and wakes the fiber.
 *
 * Errors: misuse raises (bad arguments, a socket used by two coroutines at
 * once); runtime failures return nil, err with err from a fixed set:
 * "timeout", "closed", "connection refused", "connection reset",
 * "host not found", "no resolver", "buffer too large", "unread data",
 * "ssl handshake failed: ...", "certificate verify failed: ...".
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
 */
#define _GNU_SOURCE
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "../net/conn.h"
#include "../net/dns.h"
#include "../net/pool.h"
#include "../net/tls.h"
#include "modules.h"
#include "runtime.h"

#define SOCK_MT "moonwait.socket.tcp"
#define DEFAULT_TIMEOUT_MS 60000
#define DEFAULT_POOL_SIZE 30
#define DEFAULT_IDLE_MS 60000
#define DEFAULT_MAX_BUFFER (16u * 1024 * 1024)

enum { W_NONE, W_CONNECT, W_HANDSHAKE, W_SEND, W_RECV };
enum { P_LINE, P_ALL, P_COUNT, P_UNTIL };

typedef struct sock {
    net_conn *conn;          /* owned; NULL when closed */
    rt_fiber *busy;          /* the fiber waiting on this socket */
    int wait;                /* W_* */
    uint64_t connect_ms, send_ms, read_ms;
    size_t max_buffer;
    char *ca_file;           /* owned */
    char *host;              /* owned: last connect's host (the default SNI) */
    char *pool_key;          /* owned */
    size_t pool_size;
    dns_query *dnsq;
    dns_result addrs;
    size_t addr_ix;
    int port;
    int pattern;             /* P_* while receiving */
    size_t want;
    const char *delim;       /* P_UNTIL: pinned by the iterator's upvalue */
    size_t dlen;
    size_t sent;
} sock;

static sock *check_sock(lua_State *L)
{
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

/* ---- waiting ---------------------------------------------------------------- */

static void end_wait(sock *s)
{
    rt_fiber *f = s->busy;
    if (f)
        uv_timer_stop(&f->timer);
    s->busy = NULL;
    s->wait = W_NONE;
}

static void close_conn(sock *s)
{
    if (s->conn) {
        net_conn_close(s->conn);
        s->conn = NULL;
    }
}

/* Wake the waiting fiber with `n` values it already has on its stack. */
static void finish(sock *s, int n)
{
    rt_fiber *f = s->busy;
    end_wait(s);
    rt_wake(f, n);
}

static void finish_err(sock *s, const char *err, int close_it)
{
    lua_State *co = s->busy->co;
    if (close_it)
        close_conn(s);
    lua_pushnil(co);
    lua_pushstring(co, err);
    finish(s, 2);
}

/* The record timed out (or the run ended) while this socket was busy. */
static void on_cancel(rt_fiber *f)
{
    sock *s = f->wait;
    uv_timer_stop(&f->timer);
    if (s->dnsq) {
        dns_cancel(s->dnsq);
        s->dnsq = NULL;
    }
    /* Half-used: never pooled. */
    close_conn(s);
    s->busy = NULL;
    s->wait = W_NONE;
}

static void on_timer(uv_timer_t *t);

/* Park f on s. The caller starts the operation afterwards, and yields. */
static void begin(sock *s, rt_fiber *f, int what, uint64_t timeout_ms)
{
    s->busy = f;
    s->wait = what;
    rt_park(f, on_cancel, s);
    uint64_t ms = rt_wait_ms(f, timeout_ms);
    if (ms)
        uv_timer_start(&f->timer, on_timer, ms, 0);
}

/* The operation failed to start: undo begin(), return nil, err now. */
static int abort_now(lua_State *L, sock *s, const char *err, int close_it)
{
    rt_fiber *f = s->busy;
    end_wait(s);
    rt_unpark(f);
    if (close_it)
        close_conn(s);
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

static rt_fiber *acquire(lua_State *L, sock *s, const char *what)
{
    if (s->busy)
        luaL_error(L, "socket busy: %s while another coroutine is waiting on this socket", what);
    return rt_check_yieldable(L, what);
}

/* ---- receive ----------------------------------------------------------------- */

/* Try to complete the pending receive from the buffer. Pushes results on
 * L and returns their count, or 0 if more data is needed. */
static int try_receive(lua_State *L, sock *s)
{
    net_conn *c = s->conn;
    size_t have = net_conn_buffered(c);
    const char *d = net_conn_data(c);
    switch (s->pattern) {
    case P_LINE: {
        const char *nl = have ? memchr(d, '\n', have) : NULL;
        if (nl) {
            size_t l = (size_t)(nl - d);
            lua_pushlstring(L, d, l > 0 && d[l - 1] == '\r' ? l - 1 : l);
            net_conn_consume(c, l + 1);
            return 1;
        }
        break;
    }
    case P_COUNT:
        if (have >= s->want) {
            lua_pushlstring(L, d, s->want);
            net_conn_consume(c, s->want);
            return 1;
        }
        break;
    case P_UNTIL: {
        const char *m = s->dlen && have >= s->dlen ? memmem(d, have, s->delim, s->dlen) : NULL;
        if (m) {
            size_t l = (size_t)(m - d);
            lua_pushlstring(L, d, l);
            net_conn_consume(c, l + s->dlen);
            return 1;
        }
        break;
    }
    case P_ALL:
        if (c->eof) {
            lua_pushlstring(L, d, have);
            net_conn_consume(c, have);
            return 1;
        }
        break;
    }
    if (c->eof || c->rerr) {
        /* Nothing more will come: what is there is a partial result. */
        const char *err = c->rerr ? net_strerror(c->rerr) : "closed";
        if (c->rerr == UV_EPROTO && c->tls_err[0])
            err = c->tls_err;
        lua_pushnil(L);
        lua_pushstring(L, err);
        lua_pushlstring(L, d, have);
        net_conn_consume(c, have);
        close_conn(s);
        return 3;
    }
    return 0;
}

static void on_readable(net_conn *c, void *ud)
{
    sock *s = ud;
    (void)c;
    if (!s->busy || s->wait != W_RECV)
        return;
    int n = try_receive(s->busy->co, s);
    if (n) {
        if (s->conn)
            net_conn_read_stop(s->conn);
        finish(s, n);
    }
}

static int do_receive(lua_State *L, sock *s)
{
    if (!s->conn) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        lua_pushliteral(L, "");
        return 3;
    }
    int n = try_receive(L, s);
    if (n)
        return n;
    rt_fiber *f = acquire(L, s, "receive");
    begin(s, f, W_RECV, s->read_ms);
    if (net_conn_read_start(s->conn, on_readable, s) != 0)
        return abort_now(L, s, "closed", 1);
    return rt_yield(L, f);
}

static int l_receive(lua_State *L)
{
    sock *s = check_sock(L);
    if (s->busy)
        luaL_error(L, "socket busy: receive while another coroutine is waiting on this socket");
    if (lua_isnoneornil(L, 2)) {
        s->pattern = P_LINE;
    } else if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Number n = lua_tonumber(L, 2);
        if (n < 0 || n != (lua_Number)(size_t)n)
            return luaL_argerror(L, 2, "a non-negative integer byte count expected");
        if (n == 0) {
            lua_pushliteral(L, "");
            return 1;
        }
        if ((size_t)n > s->max_buffer)
            return luaL_argerror(L, 2, "byte count larger than the socket's max_buffer");
        s->pattern = P_COUNT;
        s->want = (size_t)n;
    } else {
        size_t pl;
        const char *p = luaL_checklstring(L, 2, &pl);
        if (STR_IS(p, pl, "*l") || STR_IS(p, pl, "*L"))
            s->pattern = P_LINE;
        else if (STR_IS(p, pl, "*a"))
            s->pattern = P_ALL;
        else
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
    size_t dlen;
    s->delim = lua_tolstring(L, lua_upvalueindex(2), &dlen);
    s->dlen = dlen;
    s->pattern = P_UNTIL;
    /* The delimiter stays alive across a yield: this closure, which holds
     * it as an upvalue, is on the waiting coroutine's stack. */
    return do_receive(L, s);
}

static int l_receiveuntil(lua_State *L)
{
    check_sock(L);
    size_t n;
    luaL_checklstring(L, 2, &n);
    if (n == 0)
        return luaL_argerror(L, 2, "the delimiter must not be empty");
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, l_until_iter, 2);
    return 1;
}

/* ---- send ---------------------------------------------------------------------- */

static void on_sent(net_conn *c, int status, void *ud)
{
    sock *s = ud;
    (void)c;
    if (!s->busy || s->wait != W_SEND)
        return;
    if (status != 0) {
        finish_err(s, net_strerror(status), 1);
        return;
    }
    lua_pushinteger(s->busy->co, (lua_Integer)s->sent);
    finish(s, 1);
}

static int l_send(lua_State *L)
{
    sock *s = check_sock(L);
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
    if (!s->conn) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    rt_fiber *f = acquire(L, s, "send");
    s->sent = len;
    begin(s, f, W_SEND, s->send_ms);
    int rc = net_conn_write(s->conn, data, len, on_sent, s);
    if (rc != 0)
        return abort_now(L, s, net_strerror(rc), 1);
    return rt_yield(L, f);
}

/* ---- connect -------------------------------------------------------------------- */

static void try_connect(sock *s);

static void on_connected(net_conn *c, int status, void *ud)
{
    sock *s = ud;
    (void)c;
    if (!s->busy || s->wait != W_CONNECT)
        return;
    if (status == 0) {
        lua_pushinteger(s->busy->co, 1);
        finish(s, 1);
        return;
    }
    close_conn(s);
    if (++s->addr_ix < s->addrs.n && (status == UV_ECONNREFUSED || status == UV_EHOSTUNREACH ||
                                      status == UV_ENETUNREACH || status == UV_EADDRNOTAVAIL)) {
        try_connect(s); /* the next address of the name */
        return;
    }
    finish_err(s, net_strerror(status), 0);
}

static void try_connect(sock *s)
{
    s->conn = net_conn_new(s->busy->rt->loop, s->max_buffer);
    if (!s->conn) {
        finish_err(s, "out of memory", 0);
        return;
    }
    int rc = net_conn_connect(s->conn, (struct sockaddr *)&s->addrs.addrs[s->addr_ix], on_connected, s);
    if (rc != 0) {
        close_conn(s);
        finish_err(s, net_strerror(rc), 0);
    }
}

static void on_resolved(void *ud, int status, const dns_result *res)
{
    sock *s = ud;
    s->dnsq = NULL;
    if (!s->busy || s->wait != W_CONNECT)
        return;
    if (status != 0) {
        finish_err(s, net_strerror(status), 0);
        return;
    }
    s->addrs = *res;
    s->addr_ix = 0;
    try_connect(s);
}

static int l_connect(lua_State *L)
{
    sock *s = check_sock(L);
    const char *host = check_cstring(L, 2, "the host");
    lua_Integer port = luaL_checkinteger(L, 3);
    if (port < 1 || port > 65535)
        return luaL_argerror(L, 3, "port must be from 1 to 65535");
    const char *pool = NULL;
    lua_Integer pool_size = 0;
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        lua_getfield(L, 4, "pool");
        if (!lua_isnil(L, -1))
            pool = check_cstring(L, -1, "the pool name");
        lua_getfield(L, 4, "pool_size");
        if (!lua_isnil(L, -1)) {
            pool_size = luaL_checkinteger(L, -1);
            if (pool_size < 1)
                return luaL_argerror(L, 4, "pool_size must be positive");
        }
        lua_pop(L, 2);
    }
    if (s->busy)
        luaL_error(L, "socket busy: connect while another coroutine is waiting on this socket");
    close_conn(s);
    free(s->host);
    s->host = strdup(host);
    free(s->pool_key);
    if (pool)
        s->pool_key = strdup(pool);
    else if (asprintf(&s->pool_key, "%s:%d", host, (int)port) < 0)
        s->pool_key = NULL;
    if (pool_size)
        s->pool_size = (size_t)pool_size;
    s->port = (int)port;
    net_conn *c = s->pool_key ? net_pool_get(s->pool_key) : NULL;
    if (c) {
        c->max_buffer = s->max_buffer; /* this socket's, not its last user's */
        s->conn = c;
        lua_pushinteger(L, 1);
        return 1;
    }
    rt_fiber *f = acquire(L, s, "connect");
    begin(s, f, W_CONNECT, s->connect_ms);
    dns_result now;
    int rc = dns_resolve(f->rt->loop, host, (int)port, &now, on_resolved, s, &s->dnsq);
    if (rc < 0)
        return abort_now(L, s, net_strerror(rc), 0);
    if (rc == 1) {
        s->addrs = now;
        s->addr_ix = 0;
        try_connect(s);
    }
    return rt_yield(L, f);
}

/* ---- TLS ---------------------------------------------------------------------------- */

static void on_handshake(net_conn *c, int status, void *ud)
{
    sock *s = ud;
    if (!s->busy || s->wait != W_HANDSHAKE)
        return;
    if (status != 0) {
        char msg[320];
        if (strncmp(c->tls_err, "certificate verify failed", 25) == 0)
            snprintf(msg, sizeof msg, "%s", c->tls_err);
        else
            snprintf(msg, sizeof msg, "ssl handshake failed: %s", c->tls_err);
        finish_err(s, msg, 1);
        return;
    }
    lua_pushboolean(s->busy->co, 1);
    finish(s, 1);
}

static int l_sslhandshake(lua_State *L)
{
    sock *s = check_sock(L);
    /* arg 2, reused_session: session resumption is not supported; a
     * fresh handshake is always made, and true is returned. */
    const char *sni = lua_isnoneornil(L, 3) ? s->host : check_cstring(L, 3, "the server name");
    int verify = lua_toboolean(L, 4);
    if (!s->conn) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    if (s->conn->ssl)
        luaL_error(L, "sslhandshake: the connection is already using TLS");
    char err[256];
    SSL_CTX *ctx = tls_client_ctx(s->ca_file, err, sizeof err);
    if (!ctx) {
        lua_pushnil(L);
        lua_pushfstring(L, "ssl handshake failed: %s", err);
        return 2;
    }
    rt_fiber *f = acquire(L, s, "sslhandshake");
    begin(s, f, W_HANDSHAKE, s->connect_ms);
    int rc = net_conn_tls_start(s->conn, ctx, sni, verify, on_handshake, s);
    if (rc != 0)
        return abort_now(L, s, "ssl handshake failed", 1);
    return rt_yield(L, f);
}

/* ---- timer ------------------------------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    rt_fiber *f = t->data;
    sock *s = f->wait;
    if (!s || s->busy != f)
        return;
    if (s->wait == W_RECV) {
        /* A read timeout leaves the socket usable; what came is partial. */
        lua_State *co = f->co;
        net_conn_read_stop(s->conn);
        size_t have = net_conn_buffered(s->conn);
        lua_pushnil(co);
        lua_pushliteral(co, "timeout");
        lua_pushlstring(co, net_conn_data(s->conn), have);
        net_conn_consume(s->conn, have);
        finish(s, 3);
        return;
    }
    if (s->dnsq) {
        dns_cancel(s->dnsq);
        s->dnsq = NULL;
    }
    finish_err(s, "timeout", 1);
}

/* ---- the rest ------------------------------------------------------------------------- */

static int l_settimeout(lua_State *L)
{
    sock *s = check_sock(L);
    lua_Integer ms = luaL_checkinteger(L, 2);
    if (ms < 0)
        return luaL_argerror(L, 2, "timeout must be >= 0 ms");
    s->connect_ms = s->send_ms = s->read_ms = (uint64_t)ms;
    return 0;
}

static int l_settimeouts(lua_State *L)
{
    sock *s = check_sock(L);
    lua_Integer c = luaL_checkinteger(L, 2), w = luaL_checkinteger(L, 3), r = luaL_checkinteger(L, 4);
    if (c < 0 || w < 0 || r < 0)
        return luaL_error(L, "bad argument to 'settimeouts' (timeouts must be >= 0 ms)");
    s->connect_ms = (uint64_t)c;
    s->send_ms = (uint64_t)w;
    s->read_ms = (uint64_t)r;
    return 0;
}

static int l_setoption(lua_State *L)
{
    sock *s = check_sock(L);
    size_t nl;
    const char *name = luaL_checklstring(L, 2, &nl);
    if (STR_IS(name, nl, "max_buffer")) {
        lua_Integer n = luaL_checkinteger(L, 3);
        if (n < 16)
            return luaL_argerror(L, 3, "max_buffer must be at least 16 bytes");
        s->max_buffer = (size_t)n;
        if (s->conn)
            s->conn->max_buffer = (size_t)n;
    } else if (STR_IS(name, nl, "ca_file")) {
        const char *path = check_cstring(L, 3, "the ca_file path");
        free(s->ca_file);
        s->ca_file = strdup(path);
    } else {
        return luaL_argerror(L, 2, "unknown option (known: max_buffer, ca_file)");
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_setkeepalive(lua_State *L)
{
    sock *s = check_sock(L);
    lua_Integer idle = luaL_optinteger(L, 2, DEFAULT_IDLE_MS);
    lua_Integer size = luaL_optinteger(L, 3, (lua_Integer)s->pool_size);
    if (idle < 0 || size < 1)
        return luaL_error(L, "bad argument to 'setkeepalive' (idle_ms >= 0, pool_size >= 1)");
    if (s->busy)
        luaL_error(L, "socket busy: setkeepalive while another coroutine is waiting on this socket");
    if (!s->conn) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    net_conn *c = s->conn;
    if (c->eof || c->rerr) {
        close_conn(s);
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    if (net_conn_buffered(c)) {
        close_conn(s);
        lua_pushnil(L);
        lua_pushliteral(L, "unread data");
        return 2;
    }
    s->conn = NULL;
    net_pool_put(c, s->pool_key, (uint64_t)idle, (size_t)size);
    lua_pushinteger(L, 1);
    return 1;
}

static int l_getreusedtimes(lua_State *L)
{
    sock *s = check_sock(L);
    if (!s->conn) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    lua_pushinteger(L, (lua_Integer)s->conn->reuses);
    return 1;
}

static int l_close(lua_State *L)
{
    sock *s = check_sock(L);
    if (s->busy)
        luaL_error(L, "socket busy: close while another coroutine is waiting on this socket");
    if (!s->conn) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    close_conn(s);
    lua_pushinteger(L, 1);
    return 1;
}

static int l_gc(lua_State *L)
{
    sock *s = lua_touserdata(L, 1);
    if (s->dnsq)
        dns_cancel(s->dnsq);
    close_conn(s);
    free(s->ca_file);
    free(s->host);
    free(s->pool_key);
    s->ca_file = s->host = s->pool_key = NULL;
    return 0;
}

static int l_tostring(lua_State *L)
{
    sock *s = check_sock(L);
    lua_pushfstring(L, "moonwait.socket.tcp (%s)", s->conn ? "connected" : "closed");
    return 1;
}

static int l_tcp(lua_State *L)
{
    sock *s = lua_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    s->connect_ms = s->send_ms = s->read_ms = DEFAULT_TIMEOUT_MS;
    s->max_buffer = DEFAULT_MAX_BUFFER;
    s->pool_size = DEFAULT_POOL_SIZE;
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
        { "connect", l_connect },         { "sslhandshake", l_sslhandshake },
        { "send", l_send },               { "receive", l_receive },
        { "receiveuntil", l_receiveuntil }, { "settimeout", l_settimeout },
        { "settimeouts", l_settimeouts }, { "setoption", l_setoption },
        { "setkeepalive", l_setkeepalive }, { "getreusedtimes", l_getreusedtimes },
        { "close", l_close },             { NULL, NULL },
    };
    if (luaL_newmetatable(L, SOCK_MT)) {
        lua_newtable(L);
        luaL_register(L, NULL, methods);
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
