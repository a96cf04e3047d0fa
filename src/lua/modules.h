/*
 * modules.h: the host modules a script can require. Each is registered in
 * package.preload by vm.c and opened on first require.
 *
 *   moonwait        version, null, and the submodules below
 *   moonwait.time   sleep(seconds) (yields the fiber), now()
 *   moonwait.json   the host's strict, exact JSON codec (mod_json.c)
 *   moonwait.log    debug/info/warn/error(...) to stderr, with file:line
 *   moonwait.socket the cosocket (mod_socket.c)
 *   moonwait.http   the HTTP client (mod_http.c)
 *   moonwait.redis  a Redis client in Lua (lua/moonwait/redis.lua)
 *   moonwait.thread spawn, wait, kill, all (lua/moonwait/thread.lua on
 *                   moonwait._thread, mod_thread.c)
 *   moonwait.cache  a shared single-flight cache (lua/moonwait/cache.lua on
 *                   moonwait._cache, mod_cache.c on cache_*.c)
 *   moonwait.limit  rate limiters: new{name=, rps=, burst=}, lim:take([n])
 *                   (mod_limit.c on util/tbucket.c)
 *   moonwait.metrics counter/gauge/histogram(name, help, labels[, buckets])
 *                   (mod_metrics.c on util/metrics.c)
 *
 *   moonwait._test  (`moonwait test` only) attempts in root fibers with a
 *                   deadline, calls outside any fiber (mod_test.c)
 *
 * And ctx.defer (defer.c), which vm.c's ctx metatable hands out.
 */
#ifndef MW_MODULES_H
#define MW_MODULES_H

#include <lua.h>

int mod_time_open(lua_State *L);
int mod_json_open(lua_State *L);
int mod_log_open(lua_State *L);
int mod_socket_open(lua_State *L);
int mod_http_open(lua_State *L);
int mod_thread_open(lua_State *L);
int mod_cache_open(lua_State *L);
int mod_limit_open(lua_State *L);
int mod_metrics_open(lua_State *L);

/* moonwait._test (mod_test.c): preloaded only while script_testing is set
 * (`moonwait test`), never in a run. */
int mod_test_open(lua_State *L);
extern int script_testing;

/* ctx.defer(fn) (defer.c). */
int defer_ctx(lua_State *L);

/* moonwait.log's levels are util/log.h's (MW_LOG_DEBUG ... MW_LOG_ERROR);
 * MOONWAIT_LOG_LEVEL sets one threshold for it and the host's messages. */

#endif
