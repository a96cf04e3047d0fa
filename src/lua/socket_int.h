/*
 * socket_int.h: what the cosocket binding (mod_socket.c) shares with its
 * Redis methods (socket_redis.c): the userdata and the steps of a parking
 * operation. Not for other files.
 */
#ifndef MW_SOCKET_INT_H
#define MW_SOCKET_INT_H

#include <lauxlib.h>
#include <lua.h>

#include "../net/sock.h"
#include "redis_wire.h"
#include "runtime.h"

/* The userdata. Owned by Lua (GC); __gc frees what ns owns. */
typedef struct sock {
    net_sock ns;             /* first: on_done gets &ns; the connection and its state */
    rt_fiber *busy;          /* the fiber waiting on this socket */
    uint64_t connect_ms, send_ms, read_ms;
    size_t sent;             /* the send's length, its result */
    int redis;               /* the operation waited for is socket_redis.c's: it pushes the results */
    redis_wire_limits limits; /* the Redis reply fast path's limits (all 0: none taken) */
    uint64_t tag;            /* SOCK_TAG: what sock_check looks for */
} sock;

#define SOCK_TAG 0x6d77736f636b3031ull /* "mwsock01" */

/* The socket at argument 1 of a method; raises for anything else. */
sock *sock_check(lua_State *L);

/* Raise if another fiber waits on s ("socket busy: WHAT while ...") or
 * L cannot yield; the calling fiber. */
rt_fiber *sock_acquire(lua_State *L, sock *s, const char *what);

/* Park f on s with its timer at timeout_ms (bounded by the record's
 * budget). The caller starts the operation afterwards, and yields. */
void sock_begin(sock *s, rt_fiber *f, uint64_t timeout_ms);

/* The operation failed to start after sock_begin: undo it, close, push
 * nil, err; returns 2. */
int sock_abort_now(lua_State *L, sock *s, const char *err);

/* Push err followed by " (host:port)" (or " (not connected)"). */
void sock_push_err(lua_State *L, const sock *s, const char *err);

/* Push nil, err with its where; returns 2. */
int sock_nil_err(lua_State *L, const sock *s, const char *err);

/* socket_redis.c: the methods, and the end of
 * one of their operations: push its results on co, return how many. */
extern const luaL_Reg socket_redis_methods[];
int socket_redis_done(lua_State *co, sock *s, int op, const char *err);

#endif
