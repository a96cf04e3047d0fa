/*
 * guard.c: the CPU budget and the second signal (contract in guard.h).
 *
 * Shared between the loop thread, its signal handlers and the watchdog:
 *   cur_id    the entry running on the loop thread (0 = none); written by
 *             the loop thread, read by the watchdog and the handler
 *   kill_id   the entry the watchdog found over budget
 *   cur_L, expired_id: loop thread and its handlers only (same thread, so
 *             signal fences order them)
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
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../util/log.h"

#define NUDGE_SIGNAL SIGURG /* ignored by default; libuv does not use it */
#define MAX_VMS 16

static uint64_t budget_ms;
static _Atomic uint64_t cur_id;
static _Atomic uint64_t kill_id;
static lua_State *volatile cur_L;
static volatile uint64_t expired_id;
static uint64_t next_id;
static char message[96];

static pthread_t loop_thread, wd_thread;
static clockid_t loop_cpu;
static pthread_mutex_t wd_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wd_cv;
static int wd_running, wd_stop;

static lua_State *vms[MAX_VMS];
static int nvms;
static lua_State *prof_L;

static uv_work_t warm_req;

const char *guard_message(void)
{
    return message;
}

/* ---- the hook and the nudge ------------------------------------------------ */

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    uint64_t id = atomic_load_explicit(&cur_id, memory_order_relaxed);
    if (id && expired_id == id) {
        /* Stays set (count 1): raised again at the next instruction after
         * any pcall that caught it, until the entry ends. */
        luaL_where(L, 0); /* "file:line: " of the code that was running */
        lua_pushstring(L, message);
        lua_concat(L, 2);
        lua_error(L);
    }
    lua_sethook(L, NULL, 0, 0); /* a stale nudge */
}

static void on_nudge(int sig)
{
    (void)sig;
    int saved = errno;
    uint64_t id = atomic_load_explicit(&cur_id, memory_order_relaxed);
    if (id && id == atomic_load_explicit(&kill_id, memory_order_relaxed) && cur_L) {
        expired_id = id;
        lua_sethook(cur_L, budget_hook, LUA_MASKCOUNT, 1);
    }
    errno = saved;
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

/* ---- entries ------------------------------------------------------------------ */

void guard_enter(lua_State *L, guard_mark *saved)
{
    saved->id = atomic_load_explicit(&cur_id, memory_order_relaxed);
    saved->L = cur_L;
    if (!budget_ms)
        return;
    atomic_store_explicit(&cur_id, 0, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    cur_L = L;
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&cur_id, ++next_id, memory_order_relaxed);
}

int guard_leave(const guard_mark *saved)
{
    if (!budget_ms)
        return 0;
    uint64_t id = atomic_load_explicit(&cur_id, memory_order_relaxed);
    atomic_store_explicit(&cur_id, 0, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    int over = id && expired_id == id;
    if (over) {
        expired_id = 0;
        lua_sethook(cur_L, NULL, 0, 0);
    }
    cur_L = saved->L;
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&cur_id, saved->id, memory_order_relaxed);
    return over;
}

/* ---- the watchdog ------------------------------------------------------------- */

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(loop_cpu, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *watchdog(void *arg)
{
    (void)arg;
    /* Sampled: an entry is first seen within one tick of its start, so it
     * is stopped after between budget and budget + tick of CPU time. */
    uint64_t tick_ms = budget_ms / 4;
    if (tick_ms < 5)
        tick_ms = 5;
    if (tick_ms > 100)
        tick_ms = 100;
    uint64_t seen = 0, since = 0;
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
        uint64_t id = atomic_load_explicit(&cur_id, memory_order_relaxed);
        if (!id) {
            seen = 0;
            continue;
        }
        uint64_t now = cpu_ns();
        if (id != seen) {
            seen = id;
            since = now;
            continue;
        }
        if (now - since >= budget_ms * 1000000u) {
            /* Again at every tick until the entry ends: a nudge that lands
             * while LuaJIT updates its hook mask may be lost. */
            atomic_store_explicit(&kill_id, id, memory_order_relaxed);
            pthread_kill(loop_thread, NUDGE_SIGNAL);
        }
    }
    pthread_mutex_unlock(&wd_mu);
    return NULL;
}

static void warm_work(uv_work_t *req)
{
    (void)req;
}

static void warm_done(uv_work_t *req, int status)
{
    (void)req;
    (void)status;
}

int guard_start(uv_loop_t *loop, uint64_t ms)
{
    budget_ms = ms;
    snprintf(message, sizeof message, "exceeded the CPU budget of %llu ms without yielding",
             (unsigned long long)ms);
    if (!ms)
        return 0;
    loop_thread = pthread_self();
    int rc = pthread_getcpuclockid(loop_thread, &loop_cpu);
    if (rc != 0)
        return -rc;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_nudge;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGPROF); /* one hook-mask update at a time */
    if (sigaction(NUDGE_SIGNAL, &sa, NULL) != 0)
        return -errno;
    /* What LuaJIT's profiler restores when it stops: a SIGPROF still on
     * its way then (valgrind delivers them late) must not end the process. */
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPROF, &sa, NULL);
    /* The nudge and the profiler's SIGPROF belong to the loop thread: the
     * watchdog and libuv's thread pool (started here, so its threads
     * inherit the mask) block them. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, NUDGE_SIGNAL);
    sigaddset(&block, SIGPROF);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    uv_queue_work(loop, &warm_req, warm_work, warm_done);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&wd_cv, &ca);
    pthread_condattr_destroy(&ca);
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
    if (prof_L) {
        luaJIT_profile_stop(prof_L);
        prof_L = NULL;
    }
    budget_ms = 0;
}

/* ---- the profiler's VM ---------------------------------------------------------- */

static void profile(lua_State *L)
{
    if (prof_L == L)
        return;
    if (prof_L)
        luaJIT_profile_stop(prof_L);
    prof_L = L;
    if (!L)
        return;
    /* Line mode: compiled code checks the profiler's flag at every source
     * line change, so even `while true do end` leaves its trace. */
    char mode[16];
    snprintf(mode, sizeof mode, "li%d", budget_ms < 40 ? (int)(budget_ms / 4) + 1 : 10);
    luaJIT_profile_start(L, mode, prof_cb, NULL);
}

void guard_vm_add(lua_State *L)
{
    if (!budget_ms || nvms == MAX_VMS)
        return;
    vms[nvms++] = L;
    profile(L);
}

void guard_vm_remove(lua_State *L)
{
    if (!budget_ms)
        return;
    for (int i = 0; i < nvms; i++)
        if (vms[i] == L) {
            memmove(vms + i, vms + i + 1, (size_t)(nvms - i - 1) * sizeof *vms);
            nvms--;
            break;
        }
    if (prof_L == L)
        profile(nvms ? vms[nvms - 1] : NULL);
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
