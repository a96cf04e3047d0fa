/*
 * check.c: `moonwait check SCRIPT [PIPELINE]` (contract in check.h): the
 * pipeline file read as a run reads it (its keys, values and the rules
 * that span them), then the script loaded check by check (script_vet) in
 * a VM of its own, on a loop of its own, under the CPU budget, then what
 * a run would say about the two together (a retry strategy without a
 * predicate, batch settings without batch_invoke). Prints one line per
 * check on stdout.
 */
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../lua/guard.h"
#include "../lua/script.h"
#include "../util/log.h"
#include "config.h"

typedef struct tally {
    int passed, failed, warned;
} tally;

/* One check's line: "  ok    what", "  FAIL  what: detail" (a detail's
 * further lines, such as a traceback, indented under it). */
static void report(void *ud, script_vet_status st, const char *check, const char *detail)
{
    tally *t = ud;
    static const char *const word[] = { "ok", "FAIL", "warn" };
    if (st == SCRIPT_VET_OK)
        t->passed++;
    else if (st == SCRIPT_VET_FAIL)
        t->failed++;
    else
        t->warned++;
    printf("  %-5s %s", word[st], check ? check : "?");
    if (detail) {
        fputs(": ", stdout);
        for (const char *p = detail; *p; p++) {
            putchar(*p);
            if (*p == '\n' && p[1])
                fputs("        ", stdout);
        }
    }
    putchar('\n');
}

static void check_closed(void *ud)
{
    (void)ud;
}

/* The pipeline file as `run PIPELINE --script SCRIPT` reads it into *c
 * (SCRIPT replaces the file's own script key). */
static void check_pipeline(config *c, const char *script_path, const char *pipeline, tally *t)
{
    char *argv[] = { "run", (char *)pipeline, "--script", (char *)script_path, NULL };
    char *err = NULL, what[512];
    snprintf(what, sizeof what, "%s: its keys and values are valid", pipeline);
    if (config_parse_run(c, 4, argv, &err) != 0)
        report(t, SCRIPT_VET_FAIL, what, err ? err : "out of memory");
    else
        report(t, SCRIPT_VET_OK, what, NULL);
    free(err);
}

/* What a run of the two together says about them. */
static void check_together(const config *c, const script *sc, tally *t)
{
    const op_retry_policy *policy = config_retry(c, &sc->retry);
    if (policy && policy->backoff != RETRY_NONE) {
        const char *unused = config_retry_unused(policy, sc->on_result_ref != LUA_NOREF || sc->on_error_ref != LUA_NOREF);
        report(t, unused ? SCRIPT_VET_WARN : SCRIPT_VET_OK, "its retry strategy has a retry predicate", unused);
    }
    if ((c->batch.has_size || c->batch.has_wait || c->batch.has_key) && !script_batches(sc))
        report(t, SCRIPT_VET_FAIL, "batch settings apply to it",
               "batch settings (--batch-size, --batch-wait, --batch-key or the pipeline key 'batch') are set, but "
               "the script has no batch_invoke(records, ctxs)");
}

int check_script(const char *path, const char *pipeline, const char *lua_dir)
{
    tally t = { 0, 0, 0 };
    config c;
    config_defaults(&c);
    printf("moonwait check %s%s%s\n", path, pipeline ? " " : "", pipeline ? pipeline : "");
    if (pipeline)
        check_pipeline(&c, path, pipeline, &t);
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* Loading runs the script's main chunk: a budget (the pipeline's, else
     * the run's default) keeps a spinning one from hanging `check`. */
    int grc = guard_start(&loop, c.cpu_budget_ms ? c.cpu_budget_ms : 1000);
    if (grc != 0)
        mw_warn("the CPU budget is off: %s", uv_strerror(grc));
    script sc;
    if (script_vet(&sc, &loop, path, lua_dir, report, &t) == 0)
        check_together(&c, &sc, &t);
    if (script_is_open(&sc))
        script_close(&sc, check_closed, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    script_cache_free_all();
    script_limit_free_all();
    script_metrics_free_all();
    guard_stop();
    uv_loop_close(&loop);
    config_free(&c);
    if (t.failed) {
        printf("%s: FAILED: %d of %d checks failed\n", path, t.failed, t.passed + t.failed);
        return 2;
    }
    printf("%s: ok (%d checks passed%s", path, t.passed, t.warned ? ", " : ")\n");
    if (t.warned)
        printf("%d warning%s)\n", t.warned, t.warned > 1 ? "s" : "");
    return 0;
}
