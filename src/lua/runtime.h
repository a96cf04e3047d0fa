/*
 * runtime.h: one Lua VM and its coroutine scheduler on the libuv loop.
 *
 * A fiber is a pooled Lua thread that runs one host call at a time
 * (async_invoke for one record, open, close). Any C function can park the
 * running fiber on a libuv request (the cosocket pattern of
 * lua-nginx-module): find it with rt_current(), record a cancel hook with
 * rt_park(), `return lua_yield(L, 0)`; later, from the libuv callback, push
 * the results on f->co and call rt_wake(). Woken fibers wait in a ready
 * queue drained by a uv_check handle (with a uv_idle handle keeping poll
 * from blocking meanwhile), so a fiber that yields in a loop never starves
 * I/O, and uv_run is never re-entered.
 *
 * Lifetimes: each fiber's thread is anchored by one registry ref, released
 * once, when the fiber is discarded or the runtime closes. A fiber that
 * finished normally returns to the pool. An abandoned fiber (its record
 * timed out) is never resumed again: its cancel hook runs, its thread is
 * unref'd, and its struct is freed in its timer's close callback.
 *
 * The clock: the runtime's only clock is its loop's cached uv_now (whole
 * ms), the same reading the operator uses as its clock (op.h, cb.now), so a
 * fiber's deadline_ms is the operator entry's deadline as it is. Seconds
 * since the epoch (time.now(), ctx.deadline) are derived from it for
 * display only (rt_now, rt_wall_secs), never read back.
 */
#ifndef MW_RUNTIME_H
#define MW_RUNTIME_H

#include <lua.h>
#include <stdint.h>
#include <uv.h>

#include "timers.h"

typedef struct rt rt;
typedef struct rt_fiber rt_fiber;

/* Outcome of a fiber run, passed to its done callback. */
enum {
    RT_OK = 0,           /* returned; its results are on f->co */
    RT_ERROR = 1,        /* raised; message with traceback in f->err */
    RT_ROGUE_YIELD = 2,  /* yielded outside a host primitive */
};

typedef void (*rt_cancel_fn)(rt_fiber *f);
typedef void (*rt_done_fn)(void *ud, rt_fiber *f, int status);

/* How a fiber's run ended, for its end hooks. */
typedef enum {
    RT_END_RETURNED = 0, /* async_invoke (or the child's function) returned */
    RT_END_RAISED,       /* it raised (or yielded outside a primitive) */
    RT_END_ABANDONED,    /* discarded mid-run: timeout, kill, reload drain, close */
} rt_end;

/* An end hook: a C callback that runs once when the run of the fiber it
 * is on ends, however it ends, after the fiber's children were cancelled;
 * hooks run last-added first. The struct is the caller's (embedded in
 * whatever needs the cleanup) and is off the fiber when fn runs, so fn may
 * free it. fn must not resume fibers or yield; it may wake them (rt_wake)
 * and call Lua functions that do not wait (rt_current() is NULL meanwhile,
 * so every moonwait I/O call raises). */
typedef struct rt_hook rt_hook;
struct rt_hook {
    rt_hook *next, *prev;
    void (*fn)(rt_hook *h, rt_fiber *f, rt_end how);
};

typedef enum {
    RT_FIBER_IDLE = 0, /* in the pool */
    RT_FIBER_RUNNING,
    RT_FIBER_PARKED,   /* waiting on a libuv request */
    RT_FIBER_READY,    /* woken, in the ready queue */
    RT_FIBER_DONE,     /* finished; owner has not released it yet */
} rt_fiber_state;

struct rt_fiber {
    rt *rt;
    lua_State *co;          /* the thread (owned through co_ref) */
    int co_ref;             /* registry ref anchoring co */
    rt_fiber_state state;
    int nresume;            /* values pushed on co for the next resume */
    rt_cancel_fn cancel;    /* while parked: undoes the wait */
    void *wait;             /* while parked (or ready and held): the primitive's own state */
    void (*held)(rt_fiber *f, int resumed); /* while ready: see rt_wake_held */
    rt_timer timer;         /* sleep and I/O timeouts (data = the fiber), in the
                             * rt's heap (timers.h); also frees the struct a
                             * loop iteration after it is destroyed */
    uint64_t deadline_ms;   /* the record's deadline on the loop's clock (uv_now,
                             * which is the operator's clock); 0 = none */
    void *task;             /* owner's pointer (the record being run) */
    uint64_t seq;           /* record seq for log lines, 0 if none */
    rt_done_fn done;        /* called when the run ends */
    void *done_ud;
    void (*abandoned)(void *done_ud); /* called instead of done when discarded mid-run */
    void *attach;           /* owner's data that lives as long as this run (the
                             * decoded record); attach_free(f) runs once when the
                             * fiber is released or discarded, not after rt_close */
    void (*attach_free)(rt_fiber *f);
    char *err;              /* RT_ERROR/RT_ROGUE_YIELD message with traceback (owned) */
    char *errmsg;           /* the same without the traceback (owned) */
    rt_fiber *ready_next, *ready_prev;
    uint64_t ready_pass;    /* rt.pass when it was queued */
    rt_fiber **slot;        /* the owner's pointer to this fiber, or NULL: set to
                             * NULL when rt_close abandons the fiber */
    rt_fiber *all_next, *all_prev; /* every fiber not yet freed (rt.all) */
    /* Structured concurrency (moonwait.spawn): a child shares its parent's
     * deadline, seq and task, and never outlives the parent's run. */
    rt_fiber *parent;       /* the fiber that spawned this one, or NULL */
    rt_fiber *kids;         /* children running, ready, or done and not yet waited */
    rt_fiber *kid_next, *kid_prev;
    int kid_waited;         /* while the parent waits on this child: its 1-based
                             * position in the wait's arguments; else 0. Valid only
                             * while kid_wait_serial == parent->wait_serial */
    uint64_t kid_wait_serial;
    uint64_t wait_serial;   /* as a parent: bumped when a wait starts or ends, which
                             * makes every child's mark stale at once */
    int status;             /* once DONE: RT_OK, RT_ERROR or RT_ROGUE_YIELD */
    int ended;              /* this run's children and hooks are gone */
    rt_hook *hooks;         /* end hooks, newest first */
    uint32_t overloads;     /* as a root: overload signals its family gave in
                             * this run (an HTTP 429/503, ctx.overloaded());
                             * read by the owner when the run ends */
};

struct rt {
    uv_loop_t *loop;
    lua_State *L;           /* main thread; owned, closed by rt_close */
    uv_check_t check;       /* drains the ready queue */
    uv_idle_t idle;         /* active while the ready queue is non-empty */
    rt_timers timers;       /* every fiber's timer, one libuv timer for all */
    rt_fiber *ready_head, *ready_tail;
    rt_fiber *running;      /* fiber inside lua_resume, or NULL */
    uint64_t pass;          /* ready-queue drains so far */
    rt_fiber **pool;        /* idle fibers */
    size_t pool_len, pool_cap;
    size_t live;            /* fibers not yet freed */
    size_t dying;           /* of those, dropped and waiting for their timer to close */
    rt_fiber *all;          /* every fiber not yet freed, to abandon at rt_close */
    int closing;
    double epoch0;          /* wall clock seconds at loop ms 0 (display only) */
    void (*on_closed)(void *ud); /* called once every handle has closed */
    void *closed_ud;
    int handles_open;
    int generation;         /* the script generation this VM runs, for log
                             * lines (moonwait.log's "generation"); 0 = none */
    int worker;             /* --workers N > 1: the worker this VM runs on, for
                             * log lines (script_set_worker); 0 = none */
};

/* Create the VM with the standard libraries. Returns 0 or a negative
 * errno-style code. Host modules are added by the caller (vm.c). */
int rt_init(rt *r, uv_loop_t *loop);

/* Close the VM and the handles. Fibers still parked or ready are abandoned
 * first, as rt_fiber_discard does (their owner hears of it through
 * `abandoned`, their cancel hooks run while the VM is still open, their
 * `slot` is cleared, their timers close), so on_closed always comes. The
 * struct may be freed once on_closed(ud) has been called (or after the
 * loop has run the close callbacks). */
void rt_close(rt *r, void (*on_closed)(void *ud), void *ud);

/* Seconds since the epoch on the loop's cached clock (ms resolution). */
double rt_now(const rt *r);

/* The moment `loop_ms` (a uv_now reading, e.g. a deadline) in the same
 * seconds as rt_now: for display (ctx.deadline), never for comparisons. */
double rt_wall_secs(const rt *r, uint64_t loop_ms);

/* The rt of a VM (stored in its registry by rt_init). */
rt *rt_of(lua_State *L);

/* Take an idle fiber (or make one). NULL on out of memory. */
rt_fiber *rt_fiber_get(rt *r);

/* Run f: the function and `nargs` arguments are already on f->co. Resumes
 * now; `done` is called when the run ends (possibly before this returns). */
void rt_fiber_start(rt_fiber *f, int nargs, rt_done_fn done, void *ud);

/* A child of `parent` (the running fiber) for moonwait.spawn: it inherits
 * the deadline, seq and task. Push the function and its `nargs` arguments on
 * the child's co, then rt_fiber_start_later. NULL on out of memory. */
rt_fiber *rt_fiber_spawn(rt_fiber *parent);

/* Queue f to start at the next pass of the ready queue (after the running
 * fiber yields), instead of resuming it now. */
void rt_fiber_start_later(rt_fiber *f, int nargs, rt_done_fn done, void *ud);

/* Take a child off its parent: what moonwait.wait and kill do with one that
 * is done (before releasing or discarding it). */
void rt_kid_unlink(rt_fiber *k);

/* End hooks (see rt_hook): add to the fiber whose run the cleanup belongs
 * to; remove when the cleanup is no longer needed. */
void rt_hook_add(rt_fiber *f, rt_hook *h);
void rt_hook_remove(rt_fiber *f, rt_hook *h);

/* The fiber at the root of f's family (the record's attempt, a predicate,
 * a hook): f itself when it has no parent. */
rt_fiber *rt_root(rt_fiber *f);

/* The service f's record talks to signalled an overload (an HTTP 429 or
 * 503, ctx.overloaded()): counted on f's root, whose owner reads it when
 * the run ends (adaptive capacity). */
void rt_overload(rt_fiber *f);

/* After RT_OK: the owner has taken the results; return f to the pool. */
void rt_fiber_release(rt_fiber *f);

/* After RT_ERROR/RT_ROGUE_YIELD, or to abandon a parked/ready fiber: never
 * resume it again, cancel its wait, drop its thread, free it. */
void rt_fiber_discard(rt_fiber *f);

/* The fiber whose coroutine is L and is running now, or NULL (L is the
 * main thread, or a user coroutine created inside the fiber). */
rt_fiber *rt_current(lua_State *L);

/* Like rt_current, but raises a clear Lua error naming `what` when L cannot
 * yield to the host: not a fiber's coroutine, or one called back from a C
 * function (lua_isyieldable), where the yield would fail after the wait
 * had started. */
rt_fiber *rt_check_yieldable(lua_State *L, const char *what);

/* Mark f parked on a request; `cancel` undoes it if f is abandoned.
 * The caller then does `return lua_yield(L, 0)`. */
void rt_park(rt_fiber *f, rt_cancel_fn cancel, void *wait);

/* Undo rt_park when the request could not even start (the caller then
 * returns its error to Lua instead of yielding). */
void rt_unpark(rt_fiber *f);

/* How long a wait with its own `timeout_ms` (0 = none) may last, bounded by
 * the fiber's deadline: the smaller of the two. When the deadline is the
 * bound, one extra ms makes the record's own timeout (which owns that
 * moment) fire first. Returns 0 for "no limit". */
uint64_t rt_wait_ms(const rt_fiber *f, uint64_t timeout_ms);

/* A call's own timeout from the Lua number at idx into *ms: an integer of
 * 0 or more as is; math.huge (what ctx.remaining_ms() gives a record
 * without a deadline, so `timeout_ms = ctx.remaining_ms()` works under
 * --timeout 0) or anything from 2^53 up is no limit of its own: 0, as
 * rt_wait_ms reads it. -1 for a negative number or NaN (the caller raises);
 * the caller has checked it is a number. */
int rt_lua_ms(lua_State *L, int idx, uint64_t *ms);

/* The last step of a parking primitive: `return rt_yield(L, f);`. If the
 * request already completed during the call (its callback ran
 * synchronously and woke f), return its results directly instead of
 * yielding; otherwise yield until rt_wake. */
int rt_yield(lua_State *L, rt_fiber *f);

/* Make a parked fiber runnable; `nres` values are already on f->co and
 * become the results of the yielding call. */
void rt_wake(rt_fiber *f, int nres);

/* rt_wake for a primitive whose results were taken off a shared object
 * (a socket's reply, the bytes it consumed, a request it sent): until f
 * runs again, the wait is held, f->wait stays `wait`, and exactly one
 * call of held(f, resumed) ends it: resumed = 1 just before f runs (the
 * results reach the script: release the object), resumed = 0 if f is
 * discarded first (killed, timed out, rt_close while it sat in the ready
 * queue: the results are lost, so the object is half-used; undo as a
 * cancel hook would). */
void rt_wake_held(rt_fiber *f, int nres, void (*held)(rt_fiber *f, int resumed), void *wait);

/* Convert the value at `idx` of L to a malloc'd string (errors of any type). */
char *rt_strdup_value(lua_State *L, int idx);

/* Push the standard traceback of `co` after `msg` on L; only msg when
 * msg is the one the script's host marked complete in itself (rt_untraced). */
void rt_push_traceback(lua_State *L, lua_State *co, const char *msg);

/* Whether `msg` is the error lua/moonwait/host.lua last marked as needing
 * no traceback (registry["moonwait.untraced"]: a missing module's one-line
 * message, which already names the script's file:line). */
int rt_untraced(lua_State *L, const char *msg);

#endif
