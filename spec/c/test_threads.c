/*
 * test_threads.c: several uv loops with their own Lua VMs in several
 * threads at once (what --workers N does), below src/app: each thread loads
 * a real script (script_load_gen on its own loop) and runs many records
 * concurrently through script_parse/script_invoke, using moonwait.time,
 * moonwait.metrics, a named moonwait.limit shared by all threads,
 * moonwait.log and a named moonwait.cache. Then the CPU budget on a thread
 * other than the main one (interpreted and JIT-compiled spins, two threads
 * spinning at once), the last resort for a C call that never returns, and
 * the second SIGINT while a worker spins. Run normally and under TSan
 * (`make check-tsan`).
 */
#define _GNU_SOURCE
#include "../../src/lua/guard.h"
#include "../../src/lua/script.h"
#include "../../src/util/log.h"

#include <fcntl.h>
#include <lauxlib.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>

#include "test.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#ifndef MW_TEST_LUA_DIR
#define MW_TEST_LUA_DIR "lua"
#endif

#define MAX_THREADS 4

/* A temp file holding `code`; the path is malloc'd. */
static char *write_script(const char *code)
{
    char *path = strdup("/tmp/mw_test_threads_XXXXXX.lua");
    int fd = mkstemps(path, 4);
    ASSERT(fd >= 0);
    ASSERT(write(fd, code, strlen(code)) == (ssize_t)strlen(code));
    close(fd);
    return path;
}

/* Wait for child `pid` at most `secs` seconds (then kill it and fail):
 * its exit status. */
static int wait_child(pid_t pid, int secs)
{
    for (int i = 0; i < secs * 100; i++) {
        int st = 0;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return st;
        struct timespec ts = { 0, 10 * 1000000 };
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    FAILF("the child still ran after %d s", secs);
    return -1;
}

/* ---- one worker: a loop, a VM, records ------------------------------------------------ */

typedef struct worker {
    int id;
    const char *path;
    int nrecords;
    const char *(*line_of)(struct worker *w, int i, char *buf, size_t n); /* the i-th input line */
    pthread_barrier_t *before_stats; /* all workers wait here before the stats record */
    int with_stats;
    int use_guard;                   /* guard_thread_start on this thread */
    /* results */
    int ok, failed, budget_errors;
    char last_err[512];
    char stats[512];                 /* the stats record's output */
    int pending;
    uv_loop_t loop;
    script sc;
    rt_fiber **slots;
    char **lines;
} worker;

static void record_done(void *ud, struct task *t, script_result *r)
{
    worker *w = ud;
    int i = (int)(intptr_t)t;
    w->pending--;
    if (r->ok) {
        w->ok++;
        if (i == w->nrecords && w->with_stats && r->out)
            snprintf(w->stats, sizeof w->stats, "%.*s", (int)r->len, r->out);
    } else {
        w->failed++;
        snprintf(w->last_err, sizeof w->last_err, "%s", r->err ? r->err : "?");
        if (r->err && strstr(r->err, "exceeded the CPU budget of"))
            w->budget_errors++;
    }
    free(r->out);
    r->out = NULL;
    w->slots[i] = NULL; /* (the script layer keeps its fibers: as task.c does) */
}

static void closed(void *ud)
{
    (void)ud;
}

static void invoke(worker *w, int i)
{
    char buf[256];
    const char *line = w->line_of(w, i, buf, sizeof buf);
    w->lines[i] = strdup(line);
    script_parsed p;
    script_rec *rec = NULL;
    char err[256];
    ASSERT_INT_EQ(script_parse(&w->sc, w->lines[i], strlen(w->lines[i]), &p, &rec, err, sizeof err), 0);
    ASSERT(rec != NULL);
    script_call call = { 0 };
    call.task = (struct task *)(intptr_t)i;
    call.fiber_slot = &w->slots[i];
    call.seq = (uint64_t)i;
    call.line = (uint64_t)i;
    call.attempt = 1;
    w->pending++;
    script_invoke(&w->sc, rec, &call);
}

static void *run_worker(void *arg)
{
    worker *w = arg;
    if (w->use_guard)
        ASSERT_INT_EQ(guard_thread_start(w->id), 0);
    ASSERT_INT_EQ(uv_loop_init(&w->loop), 0);
    char *err = NULL;
    if (script_load_gen(&w->sc, &w->loop, w->path, MW_TEST_LUA_DIR, 1, 0, &err) != 0)
        FAILF("worker %d: script_load_gen: %s", w->id, err ? err : "?");
    script_on_done(&w->sc, record_done, w);
    w->slots = calloc((size_t)w->nrecords + 1, sizeof *w->slots);
    w->lines = calloc((size_t)w->nrecords + 1, sizeof *w->lines);
    int last = w->with_stats ? w->nrecords - 1 : w->nrecords;
    for (int i = 1; i <= last; i++)
        invoke(w, i);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(w->pending, 0);
    if (w->with_stats) {
        /* Every worker's takes are done: the shared limiter has them all. */
        pthread_barrier_wait(w->before_stats);
        invoke(w, w->nrecords);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        ASSERT_INT_EQ(w->pending, 0);
    }
    script_close(&w->sc, closed, NULL);
    script_thread_free();
    uv_run(&w->loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(uv_loop_close(&w->loop), 0);
    for (int i = 0; i <= w->nrecords; i++)
        free(w->lines[i]);
    free(w->lines);
    free(w->slots);
    if (w->use_guard)
        guard_thread_stop();
    return NULL;
}

/* Worker 0 runs on the calling (main) thread, the others on threads of
 * their own, all at once. */
static void run_workers(worker *ws, int n)
{
    pthread_t th[MAX_THREADS];
    for (int i = 1; i < n; i++)
        ASSERT_INT_EQ(pthread_create(&th[i], NULL, run_worker, &ws[i]), 0);
    run_worker(&ws[0]);
    for (int i = 1; i < n; i++)
        pthread_join(th[i], NULL);
}

/* ---- many records on 4 threads -------------------------------------------------------- */

#define PER_WORKER 150
#define RPS 3000

static const char *busy_line(worker *w, int i, char *buf, size_t n)
{
    if (i == w->nrecords)
        snprintf(buf, n, "{\"stats\":true,\"w\":\"%d\"}", w->id);
    else
        snprintf(buf, n, "{\"n\":%d,\"w\":\"%d\"}", i, w->id);
    return buf;
}

static const char busy_script[] =
    "local time = require 'moonwait.time'\n"
    "local metrics = require 'moonwait.metrics'\n"
    "local limit = require 'moonwait.limit'\n"
    "local log = require 'moonwait.log'\n"
    "local cache = require 'moonwait.cache'\n"
    "local hits = metrics.counter('t_records_total', 'records by worker', { 'worker' })\n"
    "local slept = metrics.histogram('t_sleep_seconds', 'sleeps', nil, { 0.001, 0.01 })\n"
    "local inflight = metrics.gauge('t_inflight', 'records in flight')\n"
    "local lim = limit.new{ name = 'shared', rps = 3000, burst = 1 }\n"
    "local c = cache.new{ name = 'c', size = 100 }\n"
    "local loads = 0\n"
    "local M = {}\n"
    "function M.async_invoke(rec, ctx)\n"
    "  if rec.stats then\n"
    "    local s = lim:stats()\n"
    "    return { { taken = s.taken, loads = loads } }\n"
    "  end\n"
    "  inflight:inc()\n"
    "  time.sleep(0.001 * (rec.n % 3))\n"
    "  assert(lim:take())\n"
    "  hits:inc(1, { rec.w })\n"
    "  slept:observe(0.001 * (rec.n % 3))\n"
    "  local v = c:get(rec.n % 10, function(k) loads = loads + 1; time.sleep(0.002); return { k = k } end)\n"
    "  if rec.n % 10 == 0 then log.info('worker ', rec.w, ' record ', rec.n) end\n"
    "  inflight:dec()\n"
    "  return { { n = rec.n, k = v.k } }\n"
    "end\n"
    "return M\n";

static void test_workers_share_limiter_and_metrics(void)
{
    /* Every line on stderr to a file, to check none is torn. */
    char logpath[] = "/tmp/mw_test_threads_log_XXXXXX";
    int lfd = mkstemp(logpath);
    ASSERT(lfd >= 0);
    fflush(stderr);
    int saved_err = dup(2);
    dup2(lfd, 2);
    mw_log_status("status line"); /* every line then redraws it: a shared buffer */
    ASSERT_INT_EQ(guard_start(NULL, 1000), 0);
    char *path = write_script(busy_script);
    worker ws[MAX_THREADS];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, MAX_THREADS);
    memset(ws, 0, sizeof ws);
    for (int i = 0; i < MAX_THREADS; i++) {
        ws[i].id = i;
        ws[i].path = path;
        ws[i].nrecords = PER_WORKER + 1;
        ws[i].line_of = busy_line;
        ws[i].before_stats = &bar;
        ws[i].with_stats = 1;
        ws[i].use_guard = i > 0;
    }
    uint64_t t0 = uv_hrtime();
    run_workers(ws, MAX_THREADS);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    mw_log_status(NULL);
    fflush(stderr);
    dup2(saved_err, 2);
    for (int i = 0; i < MAX_THREADS; i++) {
        if (ws[i].failed)
            FAILF("worker %d: %d failed: %s", i, ws[i].failed, ws[i].last_err);
        ASSERT_INT_EQ(ws[i].ok, PER_WORKER + 1);
        /* The named limiter is one for the process: every thread's bucket
         * counts every thread's takes. */
        char want[64];
        snprintf(want, sizeof want, "\"taken\":%d", MAX_THREADS * PER_WORKER);
        if (!strstr(ws[i].stats, want))
            FAILF("worker %d: stats %s, wanted %s", i, ws[i].stats, want);
        /* The named cache is per thread: each loads its 10 keys. */
        if (!strstr(ws[i].stats, "\"loads\":10"))
            FAILF("worker %d: stats %s, wanted 10 loads", i, ws[i].stats);
    }
    /* 600 tokens at 3000/s with a burst of 1: not before 0.199 s (a lower
     * bound: per-thread buckets would take a quarter of it). */
    if (secs < (MAX_THREADS * PER_WORKER - 1) / (double)RPS - 0.001)
        FAILF("%d takes of a 3000 rps limiter across threads took only %.3f s", MAX_THREADS * PER_WORKER, secs);
    /* The metrics registry is one: each worker's series, the sum in the
     * histogram's count. */
    mw_buf out = { 0 };
    ASSERT_INT_EQ(script_metrics_render(&out), 0);
    ASSERT_INT_EQ(mw_buf_add(&out, "", 1), 0);
    for (int i = 0; i < MAX_THREADS; i++) {
        char want[64];
        snprintf(want, sizeof want, "t_records_total{worker=\"%d\"} %d\n", i, PER_WORKER);
        if (!strstr(out.p, want))
            FAILF("no '%s' in\n%s", want, out.p);
    }
    char want[64];
    snprintf(want, sizeof want, "t_sleep_seconds_count %d\n", MAX_THREADS * PER_WORKER);
    if (!strstr(out.p, want) || !strstr(out.p, "t_inflight 0\n"))
        FAILF("no '%s' or t_inflight 0 in\n%s", want, out.p);
    free(out.p);
    script_metrics_free_all();
    script_limit_free_all();
    guard_stop();
    /* Every line whole: no two threads' bytes in one line. */
    FILE *f = fopen(logpath, "r");
    ASSERT(f != NULL);
    char line[1024];
    int lines = 0;
    while (fgets(line, sizeof line, f)) {
        /* (the status line is redrawn after each line, and erased by
         * "\r\033[K" before the next) */
        char *p = line;
        for (;;) {
            if (strncmp(p, "\r\033[K", 4) == 0)
                p += 4;
            else if (strncmp(p, "moonwait: status line", 21) == 0)
                p += 21;
            else
                break;
        }
        if (!*p)
            continue;
        if (strncmp(p, "moonwait: [info] ", 17) != 0 || !strstr(p, " record ") || p[strlen(p) - 1] != '\n')
            FAILF("a torn log line: '%s'", p);
        lines++;
    }
    fclose(f);
    unlink(logpath);
    ASSERT_INT_EQ(lines, MAX_THREADS * PER_WORKER / 10);
    unlink(path);
    free(path);
#if defined(__SANITIZE_ADDRESS__)
    /* The workers have exited: what they kept per thread and did not free
     * (script_thread_free) is unreachable now. */
    ASSERT_INT_EQ(__lsan_do_recoverable_leak_check(), 0);
#endif
}

/* ---- the HTTP client's per-host series from several threads ------------------------- */

static void *http_observer(void *arg)
{
    int id = (int)(intptr_t)arg;
    char host[32];
    for (int i = 0; i < 1000; i++) {
        /* two hosts per thread, one shared by all (the even i, a tenth of
         * them 503): the per-thread last-host cache switches between them */
        snprintf(host, sizeof host, i % 2 ? "h%d" : "shared", id);
        script_metrics_http(host, 80, i % 10 ? 200 : 503, 0.001);
    }
    return NULL;
}

static void test_http_series_from_several_threads(void)
{
    for (int round = 0; round < 2; round++) {
        /* (the second round: a new registry; no thread keeps the old one's
         * series in its last-host cache) */
        script_metrics_enable(1);
        pthread_t th[MAX_THREADS];
        for (int i = 0; i < MAX_THREADS; i++)
            ASSERT_INT_EQ(pthread_create(&th[i], NULL, http_observer, (void *)(intptr_t)i), 0);
        http_observer((void *)(intptr_t)MAX_THREADS);
        for (int i = 0; i < MAX_THREADS; i++)
            pthread_join(th[i], NULL);
        mw_buf out = { 0 };
        ASSERT_INT_EQ(script_metrics_render(&out), 0);
        ASSERT_INT_EQ(mw_buf_add(&out, "", 1), 0);
        const char *want[] = {
            "moonwait_http_client_requests_total{host=\"shared:80\",code=\"2xx\"} 2000\n",
            "moonwait_http_client_requests_total{host=\"shared:80\",code=\"5xx\"} 500\n",
            "moonwait_http_client_requests_total{host=\"h3:80\",code=\"2xx\"} 500\n",
            "moonwait_http_client_request_duration_seconds_count{host=\"h0:80\"} 500\n",
        };
        for (size_t i = 0; i < sizeof want / sizeof *want; i++)
            if (!strstr(out.p, want[i]))
                FAILF("round %d: no '%s' in\n%s", round, want[i], out.p);
        free(out.p);
        script_metrics_free_all();
    }
}

/* ---- the CPU budget on a worker thread ----------------------------------------------- */

static const char spin_script[] =
    "local M = {}\n"
    "local function interpreted() while true do end end\n"
    "jit.off(interpreted)\n"
    "function M.async_invoke(rec, ctx)\n"
    "  if rec.spin == 'jit' then\n"
    "    local x = 0\n"
    "    while true do x = x + 1 end\n"
    "  elseif rec.spin == 'interp' then\n"
    "    interpreted()\n"
    "  elseif rec.spin == 'pcall' then\n"
    "    for i = 1, 1e9 do pcall(function() while true do end end) end\n"
    "  end\n"
    "  return { { n = rec.n } }\n"
    "end\n"
    "return M\n";

static const char *spin_line(worker *w, int i, char *buf, size_t n)
{
    static const char *const kinds[] = { "jit", "interp", "pcall" };
    if (i <= 3)
        snprintf(buf, n, "{\"n\":%d,\"spin\":\"%s\",\"w\":%d}", i, kinds[(i - 1 + w->id) % 3], w->id);
    else
        snprintf(buf, n, "{\"n\":%d,\"w\":%d}", i, w->id);
    return buf;
}

/* A spinning record on a worker thread ends with the budget's error, the
 * records after it run; with the main thread spinning at the same time
 * (two VMs in compiled loops: the profiler serves one, then the other). */
static void test_budget_stops_spins_on_worker_threads(void)
{
    alarm(60); /* a spin nobody stops fails the test rather than hanging it */
    ASSERT_INT_EQ(guard_start(NULL, 100), 0);
    char *path = write_script(spin_script);
    worker ws[3];
    memset(ws, 0, sizeof ws);
    for (int i = 0; i < 3; i++) {
        ws[i].id = i;
        ws[i].path = path;
        ws[i].nrecords = 6;
        ws[i].line_of = spin_line;
        ws[i].use_guard = i == 1; /* worker 2 is registered by its first VM */
    }
    run_workers(ws, 3);
    guard_stop();
    for (int i = 0; i < 3; i++) {
        if (ws[i].budget_errors != 3 || ws[i].ok != 3)
            FAILF("worker %d: %d ok, %d over budget (last error: %s)", i, ws[i].ok, ws[i].budget_errors,
                  ws[i].last_err);
        if (!strstr(ws[i].last_err, "exceeded the CPU budget of 100 ms without yielding"))
            FAILF("worker %d: %s", i, ws[i].last_err);
    }
    script_limit_free_all();
    script_metrics_free_all();
    unlink(path);
    free(path);
}

/* ---- what the budget cannot stop ---------------------------------------------------- */

static const char cspin_script[] =
    "local M = {}\n"
    "function M.async_invoke(rec, ctx)\n"
    "  -- one C call that does not return for a long time: a pattern that\n"
    "  -- backtracks exponentially\n"
    "  local s = string.rep('a', 60)\n"
    "  string.find(s, '.-.-.-.-.-.-.-.-.-.-.-.-b')\n"
    "  return { { n = rec.n } }\n"
    "end\n"
    "return M\n";

static const char *plain_line(worker *w, int i, char *buf, size_t n)
{
    snprintf(buf, n, "{\"n\":%d,\"w\":%d}", i, w->id);
    return buf;
}

/* Forks: the child runs a record stuck in one C call on a worker thread;
 * the guard ends it with status 1 and says why, instead of hanging. */
static void test_last_resort_ends_a_run_a_c_call_holds(void)
{
    char errpath[] = "/tmp/mw_test_threads_err_XXXXXX";
    int efd = mkstemp(errpath);
    ASSERT(efd >= 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(efd, 2);
        guard_start(NULL, 50);
        char *path = write_script(cspin_script);
        worker ws[2];
        memset(ws, 0, sizeof ws);
        for (int i = 0; i < 2; i++) {
            ws[i].id = i;
            ws[i].path = path;
            ws[i].nrecords = i; /* the main thread: no record; worker 1: one */
            ws[i].line_of = plain_line;
            ws[i].use_guard = i > 0;
        }
        run_workers(ws, 2);
        _exit(0); /* (not reached: the guard exits first) */
    }
    int st = wait_child(pid, 60);
    char msg[2048] = "";
    ssize_t n = pread(efd, msg, sizeof msg - 1, 0);
    msg[n > 0 ? n : 0] = 0;
    close(efd);
    unlink(errpath);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 1)
        FAILF("the child ended with %d, wanted exit 1; stderr: %s", st, msg);
    if (!strstr(msg, "a script on worker thread 1 exceeded the CPU budget of 50 ms without yielding and could "
                     "not be stopped"))
        FAILF("stderr: %s", msg);
}

/* ---- the second signal -------------------------------------------------------------- */

static atomic_int first_signals;

static void first_handler(int sig)
{
    (void)sig;
    atomic_fetch_add(&first_signals, 1);
}

static const char forever_script[] =
    "local M = {}\n"
    "function M.async_invoke(rec, ctx) while true do end end\n"
    "return M\n";

/* Without a budget a worker spins for good; SIGINT once goes to the
 * previous handler (libuv's, in a run), twice exits 130 at once, whichever
 * thread takes it. */
static void test_second_sigint_exits_while_a_worker_spins(void)
{
    int pfd[2];
    ASSERT_INT_EQ(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int dn = open("/dev/null", O_WRONLY); /* ("second SIGINT: exiting at once") */
        dup2(dn, 2);
        signal(SIGINT, first_handler);
        guard_second_signal(0);
        char *path = write_script(forever_script);
        worker w;
        memset(&w, 0, sizeof w);
        w.id = 1;
        w.path = path;
        w.nrecords = 1;
        w.line_of = plain_line;
        pthread_t th;
        pthread_create(&th, NULL, run_worker, &w);
        ASSERT(write(pfd[1], "x", 1) == 1);
        for (;;)
            pause();
    }
    char c;
    ASSERT(read(pfd[0], &c, 1) == 1);
    struct timespec ts = { 0, 200 * 1000000 }; /* the worker is spinning by then */
    nanosleep(&ts, NULL);
    kill(pid, SIGINT);
    nanosleep(&ts, NULL);
    int st = 0;
    ASSERT_INT_EQ(waitpid(pid, &st, WNOHANG), 0); /* the first one does not end it */
    kill(pid, SIGINT);
    st = wait_child(pid, 10);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 130)
        FAILF("the child ended with status %d, wanted exit 130", st);
}

TEST_MAIN("threads", { "test_workers_share_limiter_and_metrics", test_workers_share_limiter_and_metrics },
          { "test_http_series_from_several_threads", test_http_series_from_several_threads },
          { "test_budget_stops_spins_on_worker_threads", test_budget_stops_spins_on_worker_threads },
          { "test_last_resort_ends_a_run_a_c_call_holds", test_last_resort_ends_a_run_a_c_call_holds },
          { "test_second_sigint_exits_while_a_worker_spins", test_second_sigint_exits_while_a_worker_spins })
