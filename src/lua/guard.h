/*
 * guard.h: the CPU budget of script code, and the second SIGINT/SIGTERM.
 *
 * Every call from the host into Lua (a fiber's resume, a protected call)
 * is an *entry*: guard_enter/guard_leave around it. Any number of loop
 * threads may run VMs (--workers N): each registers itself (guard_start on
 * the main thread, guard_thread_start on the others) and has its own entry
 * state. One watchdog thread samples the CPU clock of every registered
 * thread; when one entry has run for the budget without returning or
 * yielding, the watchdog sets a count hook on that entry's VM (lua_sethook
 * only stores a few fields of the VM's global state, so LuaJIT allows it
 * from another thread or a signal handler) that raises "exceeded the CPU
 * budget of N ms without yielding" inside the running code, and keeps
 * raising until the entry ends (so a pcall in the script cannot swallow it).
 *
 * LuaJIT's compiled traces never check hooks. Every VM is opened with the
 * profiler's line mode set (luaJIT_profile_start "l" while a hidden idle VM
 * holds the one process-wide profiler), so its traces test the profiler's
 * flag at each source line. When an entry runs over, the watchdog points
 * the profiler at that VM and raises SIGPROF on itself: LuaJIT's handler
 * sets the flag, the trace returns to the interpreter, the hook fires. The
 * profiler can point at one VM at a time: two VMs spinning in compiled code
 * on two threads are stopped one after the other. The thread whose entry
 * ended gives it back (guard_leave).
 *
 * A last resort: an entry still running budget + max(budget, 3 s) of CPU
 * after it started (one C call that never returns) ends the process with
 * status 1 and a message saying a script ran over its CPU budget and could
 * not be stopped: the run fails rather than hangs.
 *
 * guard_enter/leave, guard_vm_add/remove run on the thread that owns the
 * VM; the watchdog runs on its own thread.
 */
#ifndef MW_GUARD_H
#define MW_GUARD_H

#include <lua.h>
#include <stdint.h>
#include <uv.h>

/* Start the budget (0 = off: no thread, no profiler, no hooks) and register
 * the calling thread (the main loop's). Before any other thread calls
 * guard_thread_start. Returns 0 or a negative errno. (loop: unused, kept
 * for the callers.) */
int guard_start(uv_loop_t *loop, uint64_t budget_ms);

/* Stop the watchdog (after every other thread called guard_thread_stop)
 * and unregister the calling thread. */
void guard_stop(void);

/* Register the calling thread (worker `worker`'s loop thread, 1..N-1: the
 * number the last resort's message names), before its first VM: its
 * entries get the budget. No-op while the budget is off or when the thread
 * is registered already. 0 or a negative errno. A thread that opens a VM
 * without it is registered then (guard_vm_add, numbered in order), and
 * unregistered when it exits. */
int guard_thread_start(int worker);

/* Unregister the calling thread, after its last VM closed. */
void guard_thread_stop(void);

/* A VM (its main state) was opened / is about to be closed (rt_init,
 * rt_close), on the thread that runs it. No-ops while the budget is off. */
void guard_vm_add(lua_State *L);
void guard_vm_remove(lua_State *L);

typedef struct guard_mark {
    uint64_t id;
    lua_State *vm;
} guard_mark;

/* Around each call into Lua; vm is the main state of the VM being run (the
 * one given to guard_vm_add). Entries nest. */
void guard_enter(lua_State *vm, guard_mark *saved);

/* Returns 1 when the entry that ends ran out of its budget (its error is
 * the budget's, whatever the script made of it). */
int guard_leave(const guard_mark *saved);

/* "exceeded the CPU budget of N ms without yielding" */
const char *guard_message(void);

/* After libuv's SIGINT/SIGTERM handlers are installed: the first signal
 * still goes to libuv; the second ends the process at once, even while a
 * script keeps a loop busy (on whichever thread the signal lands), with
 * exit status `code`, or 128 + the signal number when code is 0. */
void guard_second_signal(int code);

#endif
