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

/* ctx.defer(fn) (defer.c). */
int defer_ctx(lua_State *L);

/* Log levels for moonwait.log and the host's own messages. */
enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };
extern int mod_log_level;

#endif
