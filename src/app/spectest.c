/*
 * spectest.c: `moonwait test SPEC.lua...` (contract in spectest.h): run a
 * user's spec files in the real VM, runtime, codec and fibers a run uses.
 * Each spec gets a VM of its own, made like a run's script VM (the host
 * modules, strict globals, the CPU budget) plus moonwait._test; the VM's
 * script is the shipped runner (lua/moonwait/test_main.lua), whose open
 * hook loads the spec through lua/moonwait/test.lua (describe/it, assert,
 * the fake moonwait.http and moonwait.redis) and reports on stdout.
 *
 * The logic of a spec's run is in Lua; here only the loop, the VM's life
 * and the exit status: 0 every test passed, 1 a test failed or a spec did
 * not load, 2 bad usage.
 */
#define _GNU_SOURCE
#include "spectest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "../lua/guard.h"
#include "../lua/modules.h"
#include "../lua/script.h"
#include "../util/log.h"

typedef struct spec_run {
    int done;   /* the runner's open ended */
    int failed; /* a test failed, or the spec did not load */
} spec_run;

static void vm_closed(void *ud)
{
    (void)ud;
}

static void runner_done(void *ud, script_result *r)
{
    spec_run *s = ud;
    s->done = 1;
    s->failed = !r->ok;
    /* The runner reported its failures itself and returned nil, "";
     * anything else is the runner's own error (a bug, a budget). */
    if (!r->ok && r->err && r->err[0])
        mw_log(MW_LOG_ERROR, "test: %s", r->err);
}

static int run_one(const char *spec, const char *lua_dir)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* The run's default budget: a spinning script fails its test rather
     * than hanging the command. */
    int grc = guard_start(&loop, 1000);
    if (grc != 0)
        mw_log(MW_LOG_WARN, "warning: the CPU budget is off: %s", uv_strerror(grc));
    char *runner = NULL;
    if (asprintf(&runner, "%s/moonwait/test_main.lua", lua_dir) < 0)
        runner = NULL;
    /* The runner reads the spec's path from its environment (it has no
     * other input: it is loaded as a script). */
    setenv("MOONWAIT_TEST_SPEC", spec, 1);
    script_testing = 1;
    script sc;
    char *err = NULL;
    spec_run s = { 0, 1 };
    rt_fiber *hook = NULL;
    if (!runner || script_load(&sc, &loop, runner, lua_dir, &err) != 0) {
        mw_log(MW_LOG_ERROR, "test: cannot start the test runner: %s", err ? err : "out of memory");
        free(err);
        if (runner && script_is_open(&sc))
            script_close(&sc, vm_closed, NULL);
    } else {
        if (script_run_hook(&sc, "open", &hook, runner_done, &s) == 0)
            uv_run(&loop, UV_RUN_DEFAULT);
        if (!s.done)
            mw_log(MW_LOG_ERROR, "test: %s: the spec's run ended before it finished", spec);
        script_close(&sc, vm_closed, NULL);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    script_cache_free_all();
    script_limit_free_all();
    guard_stop();
    uv_loop_close(&loop);
    free(runner);
    return s.failed;
}

int spectest_main(int argc, char **argv, const char *lua_dir)
{
    if (argc < 2) {
        mw_log(MW_LOG_ERROR, "usage: moonwait test SPEC.lua [SPEC.lua ...]");
        return 2;
    }
    for (int i = 1; i < argc; i++)
        if (argv[i][0] == '-' || access(argv[i], R_OK) != 0) {
            mw_log(MW_LOG_ERROR, "test: %s: %s", argv[i],
                   argv[i][0] == '-' ? "unknown option (usage: moonwait test SPEC.lua [SPEC.lua ...])"
                                     : "cannot read the spec file");
            return 2;
        }
    int failed = 0;
    for (int i = 1; i < argc; i++)
        if (run_one(argv[i], lua_dir)) {
            failed++;
            argv[failed] = argv[i]; /* the failed ones, in order, for the total */
        }
    /* With several files (a glob in CI), one last line says whether all
     * passed without scrolling back through each file's own line. */
    if (argc > 2) {
        printf("%d spec files: %d passed, %d failed", argc - 1, argc - 1 - failed, failed);
        for (int i = 1; i <= failed; i++)
            printf("%s%s", i == 1 ? " (" : ", ", argv[i]);
        printf("%s\n", failed ? ")" : "");
    }
    fflush(stdout);
    return failed ? 1 : 0;
}
