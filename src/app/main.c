/*
 * main.c: the command line. Dispatches `run`, `check`, --help, --version,
 * and finds the shipped Lua modules (lua/) relative to the executable.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "../json/json.h"
#include "../lua/modules.h"
#include "../util/log.h"
#include "config.h"
#include "check.h"
#include "run.h"

static const char usage[] =
    "usage:\n"
    "  moonwait run [PIPELINE.lua] [--script FILE] [--input FILE|-|URL] [--output FILE|-|URL]\n"
    "               [--mode ordered|unordered|keyed --key FIELD] [--capacity N|MIN..MAX] [--timeout MS]\n"
    "               [--event-time FIELD --max-out-of-orderness MS] [--stats] [--log-format text|json]\n"
    "               [--retry none|fixed:ATTEMPTS:DELAY_MS|exponential:ATTEMPTS:INITIAL_MS:MAX_MS:MULTIPLIER[:full]]\n"
    "               [--on-error fail|skip|dead-letter] [--dead-letter FILE]\n"
    "               [--watch] [--tag-generation FIELD] [--reload-open-timeout MS]\n"
    "               [--checkpoint-dir DIR] [--checkpoint-interval MS]\n"
    "               [--max-line-bytes N] [--cpu-budget MS] [--rate-limit RPS[:BURST]]\n"
    "               [--batch-size N] [--batch-wait MS] [--batch-key FIELD]\n"
    "  moonwait check SCRIPT.lua\n"
    "  moonwait --help | --version\n"
    "\n"
    "Streams JSON lines from --input through async_invoke(record, ctx) of a Lua\n"
    "script, at most --capacity records in flight, and writes the results to\n"
    "--output. Defaults: stdin, stdout, ordered, capacity 100, timeout 10000 ms\n"
    "(0 = none). A pipeline file returns a table of the same settings (script,\n"
    "input, output, mode, key, capacity, timeout_ms, event_time,\n"
    "max_out_of_orderness_ms, stats, max_line_bytes, retry, on_error,\n"
    "dead_letter, watch, tag_generation, reload_open_timeout_ms, checkpoint,\n"
    "checkpoint_interval_ms, cpu_budget_ms, rate_limit, batch); flags\n"
    "override it. --cpu-budget: CPU ms script code may run without yielding\n"
    "(default 1000, 0 = off). --mode keyed --key FIELD (pipeline: mode, key):\n"
    "records with the same value of FIELD ('a.b' for nested) leave in input\n"
    "order, others overtake them; watermarks are barriers.\n"
    "--capacity MIN..MAX (capacity = { min =, max =, adaptive = true }):\n"
    "adaptive capacity, the limit moves with latency and overloads (HTTP\n"
    "429/503, timeouts, ctx.overloaded()); --stats shows it as limit=N\n"
    "(README.md, \"Adaptive capacity\").\n"
    "--rate-limit RPS[:BURST] (rate_limit = { rps =, burst = }): at most RPS\n"
    "record attempts started per second, BURST at once (each record of a batch\n"
    "takes one; to limit calls, see moonwait.limit); intake pauses for a token\n"
    "(README.md, \"Rate limits\").\n"
    "\n"
    "Batching: a script with batch_invoke(records, ctxs) gets up to --batch-size N\n"
    "records (100) per call, waiting at most --batch-wait MS (5) for a batch to\n"
    "fill; --batch-key FIELD batches only records with the same value (pipeline:\n"
    "batch = { max_size =, max_wait_ms =, key = }). README.md, \"Batching\".\n"
    "\n"
    "Redis Streams: --input 'redis://[:PASSWORD@]HOST:PORT?stream=KEY&group=GROUP'\n"
    "reads a consumer group (several processes share it); --output and\n"
    "--dead-letter 'redis://HOST:PORT?stream=KEY' add entries; exactly once when\n"
    "they are on the input's server. A cluster:\n"
    "'redis+cluster://H:P,H:P?stream=KEY&partitions=P&group=GROUP'.\n"
    "Parameters: README.md, \"Redis Streams\".\n"
    "\n"
    "Exit status: 0 input ended and everything was emitted; 1 the run failed;\n"
    "2 bad usage or a script that does not load; 130/143 SIGINT/SIGTERM (a second\n"
    "one, or the first with --checkpoint-dir); 141 the output's reader went away.\n"
    "Environment: MOONWAIT_LUA_DIR (shipped Lua modules), MOONWAIT_LOG_LEVEL\n"
    "(debug|info|warn|error), MOONWAIT_LOG_FORMAT (text|json; --log-format wins).\n";

static int file_exists(const char *path)
{
    return access(path, R_OK) == 0;
}

/* The shipped lua/ directory: $MOONWAIT_LUA_DIR, else <exe>/../lua (the
 * build tree), else <exe>/../share/moonwait/lua (an install). */
static char *find_lua_dir(void)
{
    const char *env = getenv("MOONWAIT_LUA_DIR");
    if (env && *env)
        return strdup(env);
    char exe[4096];
    size_t len = sizeof exe;
    if (uv_exepath(exe, &len) == 0) {
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            static const char *const rel[] = { "/../lua", "/../share/moonwait/lua" };
            for (size_t i = 0; i < 2; i++) {
                char *dir = NULL, *probe = NULL;
                if (asprintf(&dir, "%s%s", exe, rel[i]) < 0)
                    continue;
                if (asprintf(&probe, "%s/moonwait/host.lua", dir) >= 0 && file_exists(probe)) {
                    free(probe);
                    return dir;
                }
                free(probe);
                free(dir);
            }
        }
    }
    return strdup(MW_LUA_DIR);
}

/* The log's settings from the environment, before anything is said:
 * MOONWAIT_LOG_FORMAT (text|json; --log-format and the pipeline's
 * log_format override it) and MOONWAIT_LOG_LEVEL (one threshold for
 * moonwait.log and the host's messages). Unset or empty: text, info. A bad
 * value: 0 after saying which variable and what it expected (in text, as
 * the format is not known), else 1. */
static int log_from_env(void)
{
    mw_log_set_json_writer(json_logline);
    const char *f = getenv("MOONWAIT_LOG_FORMAT");
    mw_log_format fmt;
    if (f && *f) {
        if (mw_log_parse_format(f, &fmt) != 0) {
            mw_log(MW_LOG_ERROR, "MOONWAIT_LOG_FORMAT: expected 'text' or 'json', got '%s'", f);
            return 0;
        }
        mw_log_set_format(fmt);
    }
    const char *l = getenv("MOONWAIT_LOG_LEVEL");
    mw_log_level lvl;
    if (l && *l) {
        if (mw_log_parse_level(l, &lvl) != 0) {
            mw_log(MW_LOG_ERROR, "MOONWAIT_LOG_LEVEL: expected 'debug', 'info', 'warn' or 'error', got '%s'", l);
            return 0;
        }
        mw_log_set_level(lvl);
    }
    return 1;
}

static int cmd_check(int argc, char **argv, const char *lua_dir)
{
    if (argc != 2 || argv[1][0] == '-') {
        mw_log(MW_LOG_ERROR, "usage: moonwait check SCRIPT.lua");
        return 2;
    }
    return check_script(argv[1], lua_dir);
}

/* A standard descriptor the caller closed (`moonwait ... >&-`) is opened
 * on /dev/null: otherwise the first file or socket opened takes its number,
 * and libuv, which refuses to close fds 0-2, aborts. closed[fd] says which;
 * a run that reads or writes through one of them is refused. */
static void reserve_std_fds(int closed[3])
{
    for (int fd = 0; fd < 3; fd++) {
        closed[fd] = fcntl(fd, F_GETFD) == -1 && errno == EBADF;
        if (closed[fd]) {
            int nfd = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
            if (nfd >= 0 && nfd != fd) /* the lower ones are open: cannot happen */
                close(nfd);
        }
    }
}

/* The run needs stdin or stdout that the caller closed: refuse (exit 2). */
static const char *closed_std_use(const config *c, const int closed[3])
{
    if (closed[0] && strcmp(c->input, "-") == 0)
        return "--input -: stdin is closed";
    if (closed[1] && strcmp(c->output, "-") == 0)
        return "--output -: stdout is closed";
    if (closed[1] && c->dead_letter && strcmp(c->dead_letter, "-") == 0)
        return "--dead-letter -: stdout is closed";
    return NULL;
}

int main(int argc, char **argv)
{
    int closed[3];
    reserve_std_fds(closed);
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("moonwait %s (LuaJIT, libuv %s)\n", MW_VERSION, uv_version_string());
        return 0;
    }
    if (!log_from_env())
        return 2;
    char *lua_dir = find_lua_dir();
    int code;
    if (strcmp(cmd, "check") == 0) {
        code = cmd_check(argc - 1, argv + 1, lua_dir);
    } else if (strcmp(cmd, "run") == 0) {
        for (int i = 2; i < argc; i++)
            if (strcmp(argv[i], "--help") == 0) {
                fputs(usage, stdout);
                free(lua_dir);
                return 0;
            }
        config c;
        config_defaults(&c);
        char *err = NULL;
        const char *std_err = NULL;
        if (config_parse_run(&c, argc - 1, argv + 1, &err) != 0 || config_check_files(&c, &err) != 0) {
            mw_log(MW_LOG_ERROR, "%s", err ? err : "bad arguments");
            free(err);
            code = 2;
        } else if ((std_err = closed_std_use(&c, closed)) != NULL) {
            mw_log(MW_LOG_ERROR, "%s", std_err);
            code = 2;
        } else {
            if (c.log_format)
                mw_log_set_format((mw_log_format)(c.log_format - 1));
            code = run_pipeline(&c, lua_dir);
        }
        config_free(&c);
    } else {
        mw_log(MW_LOG_ERROR, "unknown command '%s'", cmd);
        if (mw_log_get_format() == MW_LOG_TEXT)
            fputs(usage, stderr); /* the usage text: not a log line */
        code = 2;
    }
    free(lua_dir);
    return code;
}
