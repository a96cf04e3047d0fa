/*
 * redis.h: the host's own Redis connection, on the event loop, in C (the
 * Redis Streams source and sink in src/io; scripts have their own client,
 * lua/moonwait/redis.lua, on the cosocket). No Lua here.
 *
 * One TCP connection that stays up: commands are pipelined (each is
 * appended to an output buffer; one write at a time carries everything
 * queued since the last), replies come back in order and each goes to its
 * command's callback. AUTH runs first when a password is given.
 *
 * When the connection is lost (the server restarted, a network blip, a
 * reply the reader refuses), every command still waiting gets its callback
 * with an error (it may or may not have run: the caller's commands must be
 * safe to repeat), the owner hears REDIS_DOWN, and the connection dials
 * again after a back-off (100 ms doubling to 5 s) until it is up
 * (REDIS_UP) or closed. A command sent while it is down fails at once.
 *
 * Ownership: the owner creates it with redis_conn_new and ends it with
 * redis_conn_close (any time, also from a callback): no callback runs after
 * that, waiting commands are dropped without their callbacks, and the
 * memory goes when libuv has closed the handles.
 */
#ifndef MW_REDIS_H
#define MW_REDIS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "resp.h"

typedef struct redis_conn redis_conn;

/* A reply: nodes r->nodes[0..r->len) of the reply whose bytes start at d
 * (valid during the call); or err (a fixed or connection-owned string):
 * there is no reply. */
typedef void (*redis_reply_cb)(void *ud, const resp_reader *r, const char *d, const char *err);

enum { REDIS_DOWN = 0, REDIS_UP = 1 };

/* The connection went up or down; err says why it is down (valid during
 * the call). */
typedef void (*redis_state_cb)(void *ud, int state, const char *err);

/* A connection to host:port (password may be NULL), dialling at once.
 * max_reply bounds one reply's bytes. NULL when out of memory. */
redis_conn *redis_conn_new(uv_loop_t *loop, const char *host, int port, const char *password,
                           size_t max_reply, redis_state_cb on_state, void *ud);

/* Queue a command (argv[i] of lens[i] bytes, copied). 0, or -1 when the
 * connection is not up (cb does not run). */
int redis_command(redis_conn *c, int argc, const char *const *argv, const size_t *lens, redis_reply_cb cb,
                  void *ud);

/* As redis_command, with NUL-terminated arguments. */
int redis_commandv(redis_conn *c, redis_reply_cb cb, void *ud, int argc, const char *const *argv);

int redis_conn_up(const redis_conn *c);
/* Commands whose replies have not come. */
size_t redis_conn_waiting(const redis_conn *c);
/* Drop the connection now, as if it had been lost (for a reply that says
 * the caller and the server are out of step). */
void redis_conn_reset(redis_conn *c, const char *why);

/* Drop the connection (as lost) when a command waits longer than ms for
 * its reply, counted from the previous reply: a server that takes
 * commands and never answers. Default 30 s; a blocking command's owner
 * sets more than it blocks. */
void redis_conn_set_reply_timeout(redis_conn *c, uint64_t ms);

/* Prefix every command with ASKING (a cluster slot being migrated to
 * this node: Redis Cluster's ASK redirection). */
void redis_conn_set_asking(redis_conn *c, int on);

void redis_conn_close(redis_conn *c);

/* Append one command in RESP to b. 0, or -1 when out of memory. */
struct mw_buf;
int redis_format(struct mw_buf *b, int argc, const char *const *argv, const size_t *lens);

/* Reply helpers. The bytes of node x as a NUL-terminated copy in buf
 * (truncated to len-1), or "" when x is not a string. */
const char *redis_str(const resp_reader *r, const char *d, uint32_t x, char *buf, size_t len);

#endif
