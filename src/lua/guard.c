/*
 * guard.c: the CPU budget and the second signal (contract in guard.h).
 *
 * Per loop thread (a guard_thread, found through the thread-local `self`):
 *   cur_id, cur_vm  the entry running on it (0 = none) and its VM; written
 *                   by that thread, read by the watchdog
 *   expired_id      the entry the watchdog found over budget; read by the
 *                   thread (the hook, guard_leave)
 *   prof            the profiler points at one of its VMs (the watchdog
 *                   sets it; the thread gives the profiler back)
 *   next_id         that thread only; seen, since: the watchdog only
 * Process-wide: the list of threads, the watchdog's state and every hook
 * update of ours under wd_mu (a VM is removed under it too, so the
 * watchdog never touches a closed VM); LuaJIT's profiler (one static state in LuaJIT) under prof_mu, taken
 * after wd_mu when both are; budget_ms and the message are set before any
 * other thread registers.
 */
#define _GNU_SOURCE
#include "guard.h"

#include <errno.h>
#include <lauxlib.h>
#include <luajit.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../util/log.h"

/* The idle VM's profiler interval: 1e6 s, so its timer never fires. The
 * profiler's flag is set by the watchdog (SIGPROF raised on itself), not by
 * the timer. */
#define HOLD_MODE "i1000000000"
/* The last resort: an entry this long past its budget (at least) ends the
 * process. */
#define GIVE_UP_MIN_NS 3000000000ull

typedef struct guard_thread {
    _Atomic uint64_t cur_id;
    _Atomic(lua_State *) cur_vm;
    _Atomic uint64_t expired_id;
    atomic_int prof;
    uint64_t next_id;
    pthread_t thread;
    clockid_t cpu;
    int index;                 /* 0: the first registered (the main loop's) */
    uint64_t seen, since;      /* the watchdog's sampling */
    struct guard_thread *next; /* on `threads`, under wd_mu */
} guard_thread;

static _Atomic uint64_t budget_ms;
static char message[96];

static _Thread_local guard_thread *self;
static pthread_key_t self_key; /* unregisters a thread that exits registered */
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static pthread_mutex_t wd_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wd_cv;
static guard_thread *threads;  /* under wd_mu */
static int nthreads_made;      /* under wd_mu: the next index */
static pthread_t wd_thread;
static int wd_running, wd_stop; /* under wd_mu (wd_running: guard_start/stop's thread) */

static pthread_mutex_t prof_mu = PTHREAD_MUTEX_INITIALIZER;
static lua_State *holder;      /* the idle VM that holds the profiler; under prof_mu */
static guard_thread *prof_owner; /* whose VM the profiler points at, or NULL */
static lua_State *prof_vm;

const char *guard_message(void)
{
    return message;
}

static uint64_t budget(void)
{
    return atomic_load_explicit(&budget_ms, memory_order_relaxed);
}

/* ---- the hook ------------------------------------------------------------------ */

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    guard_thread *t = self;
    uint64_t id = t ? atomic_load_explicit(&t->cur_id, memory_order_relaxed) : 0;
    if (id && atomic_load_explicit(&t->expired_id, memory_order_relaxed) == id) {
        /* Stays set (count 1): raised again at the next instruction after
         * any pcall that caught it, until the entry ends. */
        luaL_where(L, 0); /* "file:line: " of the code that was running */
        lua_pushstring(L, message);
        lua_concat(L, 2);
        lua_error(L);
    }
    /* A stale one: its entry had ended. Under wd_mu, as every other hook
     * update of ours: two threads rewriting one VM's dispatch table at
     * once could leave it half hooked. */
    pthread_mutex_lock(&wd_mu);
    lua_sethook(L, NULL, 0, 0);
    pthread_mutex_unlock(&wd_mu);
}

/* LuaJIT's profiler callback: nothing to record. Its ticks matter only
 * because they make compiled traces return to the interpreter. */
static void prof_cb(void *data, lua_State *L, int samples, int vmstate)
{
    (void)data;
    (void)L;
    (void)samples;
    (void)vmstate;
}

/* ---- the profiler (prof_mu held) ----------------------------------------------------- */

/* Give the profiler back to the idle VM. On the owner's thread (stopping
 * flushes its VM's traces), or when its VM is closing. `reopen`: set the
 * VM's line mode again (stopping cleared it). */
static void prof_release(int reopen)
{
    lua_State *vm = prof_vm;
    luaJIT_profile_stop(vm);
    atomic_store_explicit(&prof_owner->prof, 0, memory_order_relaxed);
    prof_owner = NULL;
    prof_vm = NULL;
    luaJIT_profile_start(holder, HOLD_MODE, prof_cb, NULL);
    if (reopen)
        luaJIT_profile_start(vm, "l", prof_cb, NULL); /* (refused: the holder has it; the mode stays) */
}

/* ---- entries ------------------------------------------------------------------ */

void guard_enter(lua_State *vm, guard_mark *saved)
{
    guard_thread *t = self;
    if (!t) {
        saved->id = 0;
        saved->vm = NULL;
        return;
    }
    saved->id = atomic_load_explicit(&t->cur_id, memory_order_relaxed);
    saved->vm = atomic_load_explicit(&t->cur_vm, memory_order_relaxed);
    atomic_store_explicit(&t->cur_id, 0, memory_order_relaxed);
    atomic_store_explicit(&t->cur_vm, vm, memory_order_relaxed);
    /* (release: the watchdog that reads this id reads this vm, or a newer one) */
    atomic_store_explicit(&t->cur_id, ++t->next_id, memory_order_release);
}

int guard_leave(const guard_mark *saved)
{
    guard_thread *t = self;
    if (!t)
        return 0;
    uint64_t id = atomic_load_explicit(&t->cur_id, memory_order_relaxed);
    /* seq_cst, with the load of prof below: pairs with the watchdog's
     * store of prof and load of cur_id (see point_profiler), so either it
     * sees this entry ended or this sees the profiler it points here. */
    atomic_store(&t->cur_id, 0);
    int over = id && atomic_load_explicit(&t->expired_id, memory_order_relaxed) == id;
    lua_State *vm = atomic_load_explicit(&t->cur_vm, memory_order_relaxed);
    if (over && vm) {
        pthread_mutex_lock(&wd_mu); /* (see budget_hook) */
        lua_sethook(vm, NULL, 0, 0);
        pthread_mutex_unlock(&wd_mu);
    }
    if (atomic_load(&t->prof)) {
        pthread_mutex_lock(&prof_mu);
        if (prof_owner == t)
            prof_release(1);
        pthread_mutex_unlock(&prof_mu);
    }
    atomic_store_explicit(&t->cur_vm, saved->vm, memory_order_relaxed);
    atomic_store_explicit(&t->cur_id, saved->id, memory_order_release);
    return over;
}

/* ---- the watchdog ------------------------------------------------------------- */

static uint64_t cpu_ns(clockid_t c)
{
    struct timespec ts;
    if (clock_gettime(c, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The last resort (wd_mu held): the entry cannot be stopped. */
static void give_up(const guard_thread *t, uint64_t used_ns)
{
    char where[48] = "the main loop thread";
    if (t->index)
        snprintf(where, sizeof where, "worker thread %d", t->index);
    mw_log(MW_LOG_ERROR,
           "a script on %s %s and could not be stopped after %llu ms of CPU (one C call that does not return, "
           "or compiled code the profiler could not reach): exiting",
           where, message, (unsigned long long)(used_ns / 1000000u));
    _exit(1);
}

/* Point the profiler at vm, where t's entry `id` runs over (wd_mu and
 * prof_mu held). Only while that entry still runs: the thread gives the
 * profiler back when an entry ends (guard_leave), and once it has left
 * this one it might not end another for long, holding the profiler from
 * every other thread. So prof is set first, then cur_id read (both
 * seq_cst, against guard_leave's store of cur_id and load of prof): an
 * entry that ended is seen here, or its guard_leave sees prof and, once
 * prof_mu is free, gives back what this did. */
static void point_profiler(guard_thread *t, uint64_t id, lua_State *vm)
{
    atomic_store(&t->prof, 1);
    if (atomic_load(&t->cur_id) != id) {
        atomic_store(&t->prof, 0);
        return;
    }
    luaJIT_profile_stop(holder);
    /* No "l": that would flush the running VM's traces from here. */
    luaJIT_profile_start(vm, HOLD_MODE, prof_cb, NULL);
    prof_owner = t;
    prof_vm = vm;
}

/* One thread's sample (wd_mu held). */
static void check(guard_thread *t, uint64_t budget_ns)
{
    uint64_t id = atomic_load_explicit(&t->cur_id, memory_order_acquire);
    if (!id) {
        t->seen = 0;
        return;
    }
    uint64_t now = cpu_ns(t->cpu);
    if (id != t->seen) {
        /* Sampled: an entry is first seen within one tick of its start, so
         * it is stopped after between budget and budget + tick of CPU. */
        t->seen = id;
        t->since = now;
        return;
    }
    uint64_t used = now - t->since;
    if (used < budget_ns)
        return;
    uint64_t extra = budget_ns > GIVE_UP_MIN_NS ? budget_ns : GIVE_UP_MIN_NS;
    if (used >= budget_ns + extra)
        give_up(t, used);
    /* A VM is removed under wd_mu, which this thread holds: vm is open. If
     * the entry ended meanwhile, the hook finds its id stale and goes. */
    lua_State *vm = atomic_load_explicit(&t->cur_vm, memory_order_relaxed);
    if (!vm)
        return;
    atomic_store_explicit(&t->expired_id, id, memory_order_relaxed);
    /* Again at every tick until the entry ends: an update racing with one
     * the VM makes itself (LuaJIT's profiler hook on that thread) may be
     * lost, and each call rebuilds the whole dispatch table from the mask. */
    lua_sethook(vm, budget_hook, LUA_MASKCOUNT, 1);
    pthread_mutex_lock(&prof_mu);
    if (holder && !prof_owner)
        point_profiler(t, id, vm);
    if (prof_owner == t)
        pthread_kill(pthread_self(), SIGPROF); /* LuaJIT's handler sets the traces' flag */
    pthread_mutex_unlock(&prof_mu);
}

static void *watchdog(void *arg)
{
    (void)arg;
    uint64_t ms = budget();
    uint64_t tick_ms = ms / 4;
    if (tick_ms < 5)
        tick_ms = 5;
    if (tick_ms > 100)
        tick_ms = 100;
    pthread_mutex_lock(&wd_mu);
    while (!wd_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + tick_ms * 1000000u;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&wd_cv, &wd_mu, &ts);
        if (wd_stop)
            break;
        for (guard_thread *t = threads; t; t = t->next)
            check(t, ms * 1000000u);
    }
    pthread_mutex_unlock(&wd_mu);
    return NULL;
}

/* ---- threads ------------------------------------------------------------------ */

static void unregister(guard_thread *t)
{
    pthread_mutex_lock(&wd_mu);
    for (guard_thread **pp = &threads; *pp; pp = &(*pp)->next)
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    pthread_mutex_unlock(&wd_mu);
    pthread_mutex_lock(&prof_mu);
    if (prof_owner == t)
        prof_release(0); /* (its VMs are closed or closing) */
    pthread_mutex_unlock(&prof_mu);
    free(t);
}

/* A thread that exits still registered (it opened a VM without
 * guard_thread_start). */
static void at_thread_exit(void *p)
{
    if (self == p)
        self = NULL;
    unregister(p);
}

static void make_key(void)
{
    pthread_key_create(&self_key, at_thread_exit);
}

static int thread_start(int worker)
{
    if (!budget() || self)
        return 0;
    pthread_once(&key_once, make_key);
    guard_thread *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->thread = pthread_self();
    int rc = pthread_getcpuclockid(t->thread, &t->cpu);
    if (rc != 0) {
        free(t);
        return -rc;
    }
    pthread_mutex_lock(&wd_mu);
    t->index = worker >= 0 ? worker : nthreads_made;
    nthreads_made++;
    t->next = threads;
    threads = t;
    pthread_mutex_unlock(&wd_mu);
    self = t;
    pthread_setspecific(self_key, t);
    return 0;
}

int guard_thread_start(int worker)
{
    return thread_start(worker < 0 ? 0 : worker);
}

void guard_thread_stop(void)
{
    guard_thread *t = self;
    if (!t)
        return;
    self = NULL;
    pthread_setspecific(self_key, NULL);
    unregister(t);
}

int guard_start(uv_loop_t *loop, uint64_t ms)
{
    (void)loop;
    atomic_store(&budget_ms, ms);
    snprintf(message, sizeof message, "exceeded the CPU budget of %llu ms without yielding",
             (unsigned long long)ms);
    if (!ms)
        return 0;
    /* What LuaJIT's profiler restores when it stops: a SIGPROF still on
     * its way then (valgrind delivers them late) must not end the process. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPROF, &sa, NULL);
    pthread_mutex_lock(&prof_mu);
    holder = luaL_newstate();
    if (holder)
        luaJIT_profile_start(holder, HOLD_MODE, prof_cb, NULL);
    pthread_mutex_unlock(&prof_mu);
    if (!holder)
        return -ENOMEM;
    pthread_mutex_lock(&wd_mu);
    nthreads_made = 0;
    pthread_mutex_unlock(&wd_mu);
    int rc = thread_start(0);
    if (rc != 0)
        return rc;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&wd_cv, &ca);
    pthread_condattr_destroy(&ca);
    /* The watchdog takes no signal but the SIGPROF it raises on itself:
     * SIGINT and the rest go to the loop threads. */
    sigset_t block, old;
    sigfillset(&block);
    sigdelset(&block, SIGPROF);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    wd_stop = 0;
    rc = pthread_create(&wd_thread, NULL, watchdog, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return -rc;
    wd_running = 1;
    return 0;
}

void guard_stop(void)
{
    if (wd_running) {
        pthread_mutex_lock(&wd_mu);
        wd_stop = 1;
        pthread_cond_signal(&wd_cv);
        pthread_mutex_unlock(&wd_mu);
        pthread_join(wd_thread, NULL);
        pthread_cond_destroy(&wd_cv);
        wd_running = 0;
    }
    guard_thread_stop();
    pthread_mutex_lock(&prof_mu);
    if (holder) {
        if (prof_owner)
            prof_release(0);
        luaJIT_profile_stop(holder);
        lua_close(holder);
        holder = NULL;
    }
    pthread_mutex_unlock(&prof_mu);
    atomic_store(&budget_ms, 0);
}

/* ---- VMs -------------------------------------------------------------------------- */

void guard_vm_add(lua_State *L)
{
    if (!budget())
        return;
    if (!self)
        thread_start(-1); /* (numbered in order; at_thread_exit unregisters it) */
    /* Line mode: compiled code checks the profiler's flag at every source
     * line change, so even `while true do end` leaves its trace when the
     * profiler points here. The holder has the profiler: this only sets
     * the mode (and flushes this VM's traces: none yet). */
    pthread_mutex_lock(&prof_mu);
    if (holder)
        luaJIT_profile_start(L, "l", prof_cb, NULL);
    pthread_mutex_unlock(&prof_mu);
}

void guard_vm_remove(lua_State *L)
{
    if (!budget())
        return;
    /* Under wd_mu: the watchdog is not touching L, and will not (its
     * thread's cur_vm no longer names L once this returns). */
    pthread_mutex_lock(&wd_mu);
    pthread_mutex_lock(&prof_mu);
    if (prof_vm == L)
        prof_release(0);
    pthread_mutex_unlock(&prof_mu);
    guard_thread *t = self;
    if (t && atomic_load_explicit(&t->cur_vm, memory_order_relaxed) == L)
        atomic_store_explicit(&t->cur_vm, NULL, memory_order_relaxed);
    pthread_mutex_unlock(&wd_mu);
}

/* ---- the second signal ------------------------------------------------------------ */

static struct sigaction prev_int, prev_term;
static atomic_int stop_signals;
static int second_code; /* set before the handler is installed */

static void on_stop_signal(int sig, siginfo_t *si, void *uc)
{
    if (atomic_fetch_add(&stop_signals, 1) >= 1) {
        mw_log_from_signal(MW_LOG_WARN, sig == SIGINT ? "second SIGINT: exiting at once"
                                                      : "second SIGTERM: exiting at once");
        _exit(second_code ? second_code : 128 + sig);
    }
    const struct sigaction *p = sig == SIGINT ? &prev_int : &prev_term;
    if (p->sa_flags & SA_SIGINFO)
        p->sa_sigaction(sig, si, uc);
    else if (p->sa_handler != SIG_DFL && p->sa_handler != SIG_IGN)
        p->sa_handler(sig);
}

void guard_second_signal(int code)
{
    second_code = code;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_stop_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&sa.sa_mask); /* as libuv's own handler has */
    sigaction(SIGINT, &sa, &prev_int);
    sigaction(SIGTERM, &sa, &prev_term);
}
