/*
 * family.c: the runtime's families (contract in runtime.h): a fiber's
 * children (moonwait.spawn) and its end hooks, and the end of a run, which
 * ends both. Split from runtime.c, which schedules fibers and calls
 * rt_end_run when a run returns, raises or is discarded.
 */
#include <stdio.h>

#include "../util/list.h"
#include "../util/log.h"
#include "modules.h"
#include "runtime.h"
#include "runtime_int.h"

rt_fiber *rt_fiber_spawn(rt_fiber *parent)
{
    rt_fiber *k = rt_fiber_get(parent->rt);
    if (!k)
        return NULL;
    k->parent = parent;
    k->deadline_ms = parent->deadline_ms;
    k->seq = parent->seq;
    k->task = parent->task;
    MW_LIST_PUSH(parent->kids, k, kid_prev, kid_next);
    return k;
}

void rt_fiber_start_later(rt_fiber *f, int nargs, rt_done_fn done, void *ud)
{
    f->done = done;
    f->done_ud = ud;
    rt_wake(f, nargs);
}

void rt_kid_unlink(rt_fiber *k)
{
    if (k->parent)
        MW_LIST_UNLINK(k->parent->kids, k, kid_prev, kid_next);
    k->parent = NULL;
    k->kid_waited = 0;
}

/* A child that finished and was never waited on goes with its parent's run;
 * an error nobody saw is still worth a line (lua-nginx-module logs a user
 * thread's error the same way). */
static void kid_drop_done(rt_fiber *k)
{
    if (k->status == RT_OK) {
        rt_fiber_release(k);
        return;
    }
    mw_log_ctx at = { .seq = k->seq, .generation = k->rt->generation, .script = 1 };
    mw_logx(MW_LOG_WARN, &at, "a spawned function failed and was never waited on: %s", k->err ? k->err : "?");
    rt_fiber_discard(k);
}

/* Once per run, however it ends: cancel the children (structured
 * concurrency: none outlives the run that spawned it), then the end hooks,
 * newest first. Nothing here may wait, so rt_current() is NULL meanwhile.
 *
 * The family goes deepest first, without recursion: a script may nest
 * children as deep as it likes (a recursive function that spawns itself),
 * and discarding a child that still had children of its own would recurse
 * once per level (rt_fiber_discard -> end_run -> rt_fiber_discard ...):
 * 100,000 levels overflowed the C stack. So each step takes a member with
 * no children left (a leaf: its own end_run recurses no further), then
 * goes on from that member's parent (not from f again: descending from f
 * at every step made a 100,000-deep family cost 5e9 steps, 100 s). Every
 * child still ends, once, before its parent's end hooks. */
void rt_end_run(rt_fiber *f, rt_end how)
{
    if (f->ended)
        return;
    f->ended = 1;
    rt *r = f->rt;
    rt_fiber *outer = r->running;
    r->running = NULL;
    rt_fiber *k = f->kids;
    while (k) {
        while (k->kids) /* (a finished child has none) */
            k = k->kids;
        rt_fiber *up = k->parent;
        rt_kid_unlink(k);
        if (k->slot && *k->slot == k)
            *k->slot = NULL;
        k->slot = NULL;
        if (k->state == RT_FIBER_DONE)
            kid_drop_done(k);
        else
            rt_fiber_discard(k);
        /* On with its parent (into its next child, or itself once it has
         * none left); from the top when that is f, or left the family. */
        k = up != f && up->parent ? up : f->kids;
    }
    while (f->hooks) {
        rt_hook *h = f->hooks;
        MW_LIST_UNLINK(f->hooks, h, prev, next);
        h->fn(h, f, how); /* (may free h) */
    }
    r->running = outer;
}

void rt_hook_add(rt_fiber *f, rt_hook *h)
{
    MW_LIST_PUSH(f->hooks, h, prev, next);
}

void rt_hook_remove(rt_fiber *f, rt_hook *h)
{
    MW_LIST_UNLINK(f->hooks, h, prev, next);
}

rt_fiber *rt_root(rt_fiber *f)
{
    while (f->parent)
        f = f->parent;
    return f;
}

