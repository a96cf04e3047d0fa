/*
 * cache_flight.c: moonwait.cache's single flight (cache_int.h): one load
 * per key at a time, the records that wait for it, and the hand-off when
 * its loader is gone. Called by mod_cache.c (get, take, store, fail); runs
 * on the runtime's end hooks and parking (rt_hook_add, rt_park, rt_wake).
 * Of Lua it only pushes a woken waiter's results on its own thread, as
 * every parking primitive does.
 *
 * A get that misses in a fiber either becomes the key's loader (the
 * flight's `loader`, with an end hook on its fiber) or parks as a waiter on
 * the flight, in arrival order. The loader's result is stored and handed to
 * every waiter as bytes (a refcounted blob; each waiter decodes its own
 * copy in its own VM once it runs: take). When the loader's fiber ends
 * without a result (its record timed out, was cancelled, its generation
 * closed, or it raised past get's pcall), the end hook hands the load to
 * the first waiter (it wakes and runs its own loader), or ends the flight
 * when none waits. A waiter handed the load that ends before it runs passes
 * it on the same way. So a waiter never waits on a fiber that is gone.
 * Waiters may be fibers of any VM: nothing here holds a Lua reference, only
 * fibers' C pointers, and every fiber leaves the flight (cancel hook, end
 * hook) before its VM closes.
 */
#include <stdlib.h>
#include <string.h>

#include "cache_int.h"

void cache_flight_unref(blob *b)
{
    if (b && --b->refs == 0)
        free(b);
}

/* ---- flights ----------------------------------------------------------------- */

flight *cache_flight_find(store *s, const char *key, size_t klen)
{
    if (!s->nflights)
        return NULL;
    lru_item it;
    flight *fl;
    if (!lru_peek(s->flights, key, klen, 0, &it))
        return NULL;
    memcpy(&fl, it.val, sizeof fl);
    return fl;
}

static void loader_ended(rt_hook *h, rt_fiber *f, rt_end how);

flight *cache_flight_new(store *s, const char *key, size_t klen, rt_fiber *f)
{
    flight *fl = calloc(1, sizeof *fl + klen);
    if (!fl)
        return NULL;
    if (lru_set(s->flights, key, klen, &fl, sizeof fl, 0, 0) != 0) {
        free(fl);
        return NULL;
    }
    fl->s = s;
    fl->klen = klen;
    memcpy(fl->key, key, klen);
    fl->loader = f;
    fl->hook.fn = loader_ended;
    rt_hook_add(f, &fl->hook);
    s->nflights++;
    return fl;
}

/* The flight is over: off the map and the loader's fiber, freed (and its
 * store with it when that was waiting for its last flight). Its waiters
 * must be gone already. */
static void flight_end(flight *fl)
{
    store *s = fl->s;
    if (fl->loader)
        rt_hook_remove(fl->loader, &fl->hook);
    lru_delete(s->flights, fl->key, fl->klen);
    s->nflights--;
    free(fl);
    if (s->orphan && !s->nflights)
        cache_store_free(s);
}

/* Wake w (taken off its queue) with false, WAITED: it takes its outcome
 * when it runs. */
static void wake_waiter(waiter *w)
{
    rt_timer_stop(&w->f->timer);
    lua_pushboolean(w->f->co, 0);
    lua_pushinteger(w->f->co, ST_WAITED);
    rt_wake(w->f, 2);
}

static waiter *dequeue(flight *fl)
{
    waiter *w = fl->head;
    if (!w)
        return NULL;
    fl->head = w->next;
    if (fl->head)
        fl->head->prev = NULL;
    else
        fl->tail = NULL;
    w->next = w->prev = NULL;
    fl->s->waiting--;
    return w;
}

static void unqueue(flight *fl, waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        fl->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        fl->tail = w->prev;
    w->next = w->prev = NULL;
    fl->s->waiting--;
}

void cache_flight_hand_off(flight *fl)
{
    if (fl->loader) {
        rt_hook_remove(fl->loader, &fl->hook);
        fl->loader = NULL;
    }
    waiter *w = dequeue(fl);
    if (!w) {
        flight_end(fl);
        return;
    }
    fl->s->handoffs++;
    fl->heir = w;
    w->state = W_HANDOFF;
    wake_waiter(w);
}

void cache_flight_done(flight *fl, const void *bytes, size_t len, int negative)
{
    blob *b = NULL;
    if (fl->head) {
        b = malloc(sizeof *b + len);
        if (!b) { /* out of memory: the next in line loads for itself */
            cache_flight_hand_off(fl);
            return;
        }
        b->refs = 1;
        b->negative = negative;
        b->len = len;
        if (len)
            memcpy(b->bytes, bytes, len);
    }
    waiter *w;
    while ((w = dequeue(fl))) {
        w->fl = NULL;
        w->state = W_RESULT;
        w->res = b;
        b->refs++;
        wake_waiter(w);
    }
    cache_flight_unref(b);
    flight_end(fl);
}

/* The loader's fiber ended (end hook) before the load stored or failed. */
static void loader_ended(rt_hook *h, rt_fiber *f, rt_end how)
{
    (void)f;
    (void)how;
    flight *fl = (flight *)h;
    fl->s->abandoned++;
    fl->loader = NULL; /* (the hook is off the fiber already) */
    cache_flight_hand_off(fl);
}

/* ---- waiters ----------------------------------------------------------------- */

/* A parked waiter leaves its flight's queue (it waits no more). */
static void waiter_leave(waiter *w)
{
    rt_timer_stop(&w->f->timer);
    if (w->state == W_PARKED) {
        unqueue(w->fl, w);
        w->fl = NULL;
        w->state = W_GONE;
    }
}

/* The waiting fiber was discarded while parked (rt_fiber_discard runs
 * this, then the end hooks: waiter_ended frees w). */
static void waiter_cancel(rt_fiber *f)
{
    waiter_leave(f->wait);
}

/* The waiting fiber's run ended before it took its outcome (discarded
 * while parked or after being woken, or it raised in between). */
static void waiter_ended(rt_hook *h, rt_fiber *f, rt_end how)
{
    (void)how;
    (void)f;
    waiter *w = (waiter *)h;
    waiter_leave(w); /* (only when still parked; the cancel hook did it already) */
    if (w->state == W_RESULT)
        cache_flight_unref(w->res);
    if (w->state == W_HANDOFF) {
        flight *fl = w->fl;
        fl->heir = NULL;
        cache_flight_hand_off(fl);
    }
    free(w);
}

/* The fiber's deadline came while it waited (after the record's own
 * timeout, which normally abandons it first: see rt_wait_ms). */
static void waiter_timeout(rt_timer *t)
{
    rt_fiber *f = t->data;
    waiter *w = f->wait;
    unqueue(w->fl, w);
    rt_hook_remove(f, &w->hook);
    free(w);
    lua_pushboolean(f->co, 1);
    lua_pushnil(f->co);
    lua_pushliteral(f->co, "timeout");
    rt_wake(f, 3);
}

int cache_flight_wait(flight *fl, rt_fiber *f)
{
    waiter *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    w->f = f;
    w->fl = fl;
    w->state = W_PARKED;
    w->hook.fn = waiter_ended;
    w->prev = fl->tail;
    if (fl->tail)
        fl->tail->next = w;
    else
        fl->head = w;
    fl->tail = w;
    fl->s->waiters++;
    fl->s->waiting++;
    rt_hook_add(f, &w->hook);
    uint64_t ms = rt_wait_ms(f, 0);
    if (ms)
        rt_timer_start(&f->timer, waiter_timeout, ms);
    rt_park(f, waiter_cancel, w);
    return 0;
}

int cache_flight_take(rt_fiber *f, blob **res)
{
    waiter *w = NULL;
    for (rt_hook *k = f ? f->hooks : NULL; k && !w; k = k->next)
        if (k->fn == waiter_ended)
            w = (waiter *)k;
    if (!w)
        return -1;
    rt_hook_remove(f, &w->hook);
    if (w->state == W_HANDOFF) {
        flight *fl = w->fl;
        free(w);
        fl->heir = NULL;
        fl->loader = f;
        rt_hook_add(f, &fl->hook);
        fl->s->loads++;
        return 0;
    }
    *res = w->res;
    free(w);
    return 1;
}
