/*
 * mod_time.c: moonwait.time. sleep() is the first parking primitive and the
 * model for the others: check the caller can yield, arm the fiber's own
 * timer, park with a cancel hook, yield; the timer callback wakes it.
 */
#include <lauxlib.h>
#include <math.h>
#include <stdint.h>

#include "modules.h"
#include "runtime.h"

static void sleep_cancel(rt_fiber *f)
{
    rt_timer_stop(&f->timer);
}

static void sleep_done(rt_timer *t)
{
    rt_wake(t->data, 0);
}

/* time.sleep(seconds): yields the fiber for `seconds` (fractional; rounded
 * up to whole ms). sleep(0) yields once to let I/O run. Pushes nothing.
 * Raises on a bad argument or when called where it cannot yield. */
static int l_sleep(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    if (!(s >= 0) || isinf(s))
        return luaL_argerror(L, 1, "a finite, non-negative number of seconds expected");
    rt_fiber *f = rt_check_yieldable(L, "moonwait.time.sleep");
    /* Converting a double at or past 2^64 to an integer is undefined (x86
     * gave 0: sleep(1e308) returned at once): longer than any deadline is
     * the longest timer, which libuv clamps to never. */
    double msd = ceil(s * 1000.0);
    uint64_t ms = msd < 18446744073709551616.0 ? (uint64_t)msd : UINT64_MAX;
    if (ms == 0) {
        rt_park(f, NULL, NULL);
        rt_wake(f, 0);
    } else {
        rt_timer_start(&f->timer, sleep_done, ms);
        rt_park(f, sleep_cancel, NULL);
    }
    return lua_yield(L, 0);
}

/* time.now(): seconds since the epoch, ms resolution, cached per loop turn
 * (like ngx.now()). Pushes one number. */
static int l_now(lua_State *L)
{
    lua_pushnumber(L, rt_now(rt_of(L)));
    return 1;
}

int mod_time_open(lua_State *L)
{
    static const luaL_Reg fns[] = { { "sleep", l_sleep }, { "now", l_now }, { NULL, NULL } };
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    return 1;
}
