/*
 * gcpace.c: the collector's pause of a record VM (rt_gc_; runtime.h).
 *
 * LuaJIT's default pause (200: collect when the heap has doubled) makes
 * the collector mark the live heap once and sweep twice its size for every
 * live heap's worth allocated. A record VM allocates ~1 KB a record and
 * keeps every in-flight record live, so at capacity 10,000 a fifth of the
 * CPU went to the collector (gc_sweep, propagatemark, lj_alloc_free). Here
 * the pause lets garbage pile up to max(the live heap, GC_ROOM) before a
 * cycle: a small heap (a few MB) gets pause 1000 (the work per allocated
 * byte falls from ~3 units to ~1.2), a heap beyond GC_ROOM keeps the
 * default. So the memory given for it is bounded: at most GC_ROOM more
 * than the default's peak, whatever the capacity.
 *
 * The live heap is estimated as the least LUA_GCCOUNT seen over a window
 * of records (the heap is smallest just after a sweep). A script that sets
 * its own pause (collectgarbage("setpause", n)) keeps it: seen as a pause
 * that is not the one set here, it stops the pacing for that VM.
 */
#include "runtime.h"

/* Garbage allowed before a cycle when the live heap is smaller (KB). */
#ifndef GC_ROOM_KB
#define GC_ROOM_KB (32 * 1024)
#endif
#define GC_PAUSE_MIN 200 /* LuaJIT's default */
#define GC_PAUSE_MAX 1000
/* Sample the heap every 256 fibers; set the pause every 16 samples. */
#define GC_SAMPLE_MASK 255u
#define GC_SAMPLES 16u

static int pause_for(int live_kb)
{
    if (live_kb < 1)
        live_kb = 1;
    long p = 100 + 100L * (live_kb > GC_ROOM_KB ? live_kb : GC_ROOM_KB) / live_kb;
    return p < GC_PAUSE_MIN ? GC_PAUSE_MIN : p > GC_PAUSE_MAX ? GC_PAUSE_MAX : (int)p;
}

void rt_gc_init(rt *r)
{
    r->gc_pause = pause_for(lua_gc(r->L, LUA_GCCOUNT, 0));
    lua_gc(r->L, LUA_GCSETPAUSE, r->gc_pause);
    r->gc_min_kb = -1;
}

void rt_gc_tick(rt *r)
{
    if (!r->gc_pause || (++r->gc_tick & GC_SAMPLE_MASK))
        return;
    int kb = lua_gc(r->L, LUA_GCCOUNT, 0);
    if (r->gc_min_kb < 0 || kb < r->gc_min_kb)
        r->gc_min_kb = kb;
    if ((r->gc_tick / (GC_SAMPLE_MASK + 1)) % GC_SAMPLES)
        return;
    int want = pause_for(r->gc_min_kb);
    r->gc_min_kb = -1;
    int was = lua_gc(r->L, LUA_GCSETPAUSE, want);
    if (was != r->gc_pause) { /* the script's own: leave it */
        lua_gc(r->L, LUA_GCSETPAUSE, was);
        r->gc_pause = 0;
        return;
    }
    r->gc_pause = want;
}
