/*
 * main.c: the command line. Dispatches `run`, `check`, `help`, --help,
 * --version (the texts: usage.c), and finds the shipped Lua modules (lua/)
 * relative to the executable.
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
#include "spectest.h"
#include "usage.h"
#include "../util/log.h"
#include "../util/str.h"

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
    if (argc < 2 || argc > 3 || argv[1][0] == '-' || (argc == 3 && argv[2][0] == '-')) {
        mw_log(MW_LOG_ERROR, "usage: moonwait check SCRIPT.lua [PIPELINE.lua] (see moonwait help check)");
        return 2;
    }
    return check_script(argv[1], argc == 3 ? argv[2] : NULL, lua_dir);
}

/* moonwait help [NAME | --man] */
static int cmd_help(int argc, char **argv)
{
    if (argc == 1) {
        usage_print_help(stdout);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "--man") == 0) {
        usage_print_man(stdout);
        return 0;
    }
    if (argc == 2)
        return usage_explain(stdout, argv[1]);
    mw_log(MW_LOG_ERROR, "usage: moonwait help [FLAG|KEY|COMMAND] or moonwait help --man");
    return 2;
}

/* An unknown command, with the nearest one when it is near. */
static void unknown_command(const char *cmd)
{
    static const char *const names[] = { "run", "check", "test", "help" };
    const char *near = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !near; i++)
        if (mw_str_distance(cmd, strlen(cmd), names[i], strlen(names[i])) <= 1)
            near = names[i];
    if (near)
        mw_log(MW_LOG_ERROR, "unknown command '%s' (did you mean '%s'? see moonwait --help)", cmd, near);
    else
        mw_log(MW_LOG_ERROR, "unknown command '%s' (see moonwait --help)", cmd);
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
        usage_print_help(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage_print_help(stdout);
        return 0;
    }
    if (strcmp(cmd, "help") == 0)
        return cmd_help(argc - 1, argv + 1);
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
    } else if (strcmp(cmd, "test") == 0) {
        code = spectest_main(argc - 1, argv + 1, lua_dir);
    } else if (strcmp(cmd, "run") == 0) {
        for (int i = 2; i < argc; i++)
            if (strcmp(argv[i], "--help") == 0) {
                usage_print_help(stdout);
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
        unknown_command(cmd);
        code = 2;
    }
    free(lua_dir);
    return code;
}
