/*
 * check.c: `moonwait check SCRIPT` (contract in check.h): load the script
 * into a VM of its own, on a loop of its own, under the CPU budget, and
 * close it.
 */
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#include "../lua/guard.h"
#include "../lua/script.h"

static void check_closed(void *ud)
{
    (void)ud;
}

int check_script(const char *path, const char *lua_dir)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* Loading runs the script's main chunk: the run's default budget keeps
     * a spinning one from hanging `check` too. */
    int grc = guard_start(&loop, 1000);
    if (grc != 0)
        fprintf(stderr, "moonwait: warning: the CPU budget is off: %s\n", uv_strerror(grc));
    script sc;
    char *err = NULL;
    int code = 0;
    if (script_load(&sc, &loop, path, lua_dir, &err) != 0) {
        fprintf(stderr, "%s\n", err);
        free(err);
        code = 2;
        if (script_is_open(&sc))
            script_close(&sc, check_closed, NULL);
    } else {
        printf("%s: ok\n", path);
        script_close(&sc, check_closed, NULL);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    script_cache_free_all();
    script_limit_free_all();
    script_metrics_free_all();
    guard_stop();
    uv_loop_close(&loop);
    return code;
}
