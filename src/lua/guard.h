/*
 * guard.h: the CPU budget of script code, and the second SIGINT/SIGTERM.
 *
 * Every call from the host into Lua (a fiber's resume, a protected call)
 * is an *entry*: guard_enter/guard_leave around it. A watchdog thread
 * samples the loop thread's CPU clock; when one entry has run for the
 * budget without returning or yielding, it sends the loop thread SIGURG,
 * whose handler sets a count hook (lua_sethook is async-signal-safe in
 * LuaJIT) that raises "exceeded the CPU budget of N ms without yielding"
 * inside the running code, and keeps raising until the entry ends (so a
 * pcall in the script cannot swallow it).
 *
 * LuaJIT's compiled traces never check hooks. To make them exit, the
 * profiler (luaJIT_profile_start, line mode, 10 ms of CPU) runs on one VM:
 * its traces then test a flag at each source line they cover, and each
 * profiler tick sends a running trace back to the interpreter, where the
 * hook fires. The profiler can serve one VM at a time: the newest open one
 * (the current generation). Compiled loops in an older generation's VM
 * (draining after a hot reload) are not interrupted.
 *
 * Everything here runs on the loop thread except the watchdog.
 */
#ifndef MW_GUARD_H
#define MW_GUARD_H

#include <lua.h>
#include <stdint.h>
#include <uv.h>

/* Start the budget (0 = off: no thread, no profiler, no hooks) for the
 * loop of the calling thread. Returns 0 or a negative errno. */
int guard_start(uv_loop_t *loop, uint64_t budget_ms);

/* Stop the watchdog. */
void guard_stop(void);

/* A VM was opened / is about to be closed (rt_init, rt_close). The newest
 * open VM gets the profiler. No-ops while the budget is off. */
void guard_vm_add(lua_State *L);
void guard_vm_remove(lua_State *L);

typedef struct guard_mark {
    uint64_t id;
    lua_State *L;
} guard_mark;

/* Around each call into Lua; L is the thread being run. Entries nest. */
void guard_enter(lua_State *L, guard_mark *saved);

/* Returns 1 when the entry that ends ran out of its budget (its error is
 * the budget's, whatever the script made of it). */
int guard_leave(const guard_mark *saved);

/* "exceeded the CPU budget of N ms without yielding" */
const char *guard_message(void);

/* After libuv's SIGINT/SIGTERM handlers are installed: the first signal
 * still goes to libuv; the second ends the process at once, even while a
 * script keeps the loop busy, with exit status `code`, or 128 + the signal
 * number when code is 0. */
void guard_second_signal(int code);

#endif
