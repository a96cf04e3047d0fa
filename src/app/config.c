/*
 * config.c: settings from the pipeline file and flags (contract in config.h).
 *
 * One table of settings drives both sources, so a flag and its pipeline
 * key cannot drift apart: each entry names the flag, the key, and the
 * parser that validates a value and stores it.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <lauxlib.h>

#include "../lua/retry_table.h"
#include <lualib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef int (*setter)(config *c, const char *v, char *why, size_t whylen);

static int parse_u64(const char *v, uint64_t max, uint64_t *out)
{
    if (!v || !*v || *v == '-' || *v == '+')
        return -1;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || *end || n > max)
        return -1;
    *out = n;
    return 0;
}

static int set_str(char **dst, const char *v, char *why, size_t whylen)
{
    if (!*v) {
        snprintf(why, whylen, "expected a non-empty string");
        return -1;
    }
    free(*dst);
    *dst = strdup(v);
    return 0;
}

static int s_script(config *c, const char *v, char *w, size_t n) { return set_str(&c->script, v, w, n); }
static int s_input(config *c, const char *v, char *w, size_t n) { return set_str(&c->input, v, w, n); }
static int s_output(config *c, const char *v, char *w, size_t n) { return set_str(&c->output, v, w, n); }
static int s_event(config *c, const char *v, char *w, size_t n)
{
    if (*v == '.' || v[strlen(v) - 1] == '.' || strstr(v, "..")) {
        snprintf(w, n, "expected a field name or a dotted path like 'a.b', got '%s'", v);
        return -1;
    }
    return set_str(&c->event_time, v, w, n);
}

static int s_mode(config *c, const char *v, char *w, size_t n)
{
    if (strcmp(v, "ordered") == 0)
        c->mode = OP_ORDERED;
    else if (strcmp(v, "unordered") == 0)
        c->mode = OP_UNORDERED;
    else {
        snprintf(w, n, "expected 'ordered' or 'unordered', got '%s'", v);
        return -1;
    }
    return 0;
}

static int s_capacity(config *c, const char *v, char *w, size_t n)
{
    uint64_t x;
    if (parse_u64(v, 10000000, &x) != 0 || x == 0) {
        snprintf(w, n, "expected an integer from 1 to 10000000, got '%s'", v);
        return -1;
    }
    c->capacity = (size_t)x;
    return 0;
}

static int parse_ms(const char *v, uint64_t max, uint64_t *out, char *w, size_t n, const char *extra)
{
    if (parse_u64(v, max, out) != 0) {
        snprintf(w, n, "expected milliseconds as a non-negative integer%s, got '%s'", extra, v);
        return -1;
    }
    return 0;
}

static int s_timeout(config *c, const char *v, char *w, size_t n)
{
    return parse_ms(v, (uint64_t)1 << 40, &c->timeout_ms, w, n, " (0 = no timeout)");
}

static int s_cpu_budget(config *c, const char *v, char *w, size_t n)
{
    return parse_ms(v, 24 * 3600 * 1000, &c->cpu_budget_ms, w, n, " (0 = off)");
}

static int s_ooo(config *c, const char *v, char *w, size_t n)
{
    uint64_t x;
    if (parse_ms(v, (uint64_t)1 << 50, &x, w, n, "") != 0)
        return -1;
    c->max_ooo_ms = (int64_t)x;
    c->has_max_ooo = 1;
    return 0;
}

static int parse_bool(const char *v, int *out, char *w, size_t n)
{
    if (strcmp(v, "true") == 0)
        *out = 1;
    else if (strcmp(v, "false") == 0)
        *out = 0;
    else {
        snprintf(w, n, "expected true or false, got '%s'", v);
        return -1;
    }
    return 0;
}

static int s_stats(config *c, const char *v, char *w, size_t n)
{
    return parse_bool(v, &c->stats, w, n);
}

static int s_maxline(config *c, const char *v, char *w, size_t n)
{
    uint64_t x;
    if (parse_u64(v, (uint64_t)1 << 32, &x) != 0 || x < 16) {
        snprintf(w, n, "expected a byte count from 16 to 4294967296, got '%s'", v);
        return -1;
    }
    c->max_line = (size_t)x;
    return 0;
}

static int s_retry(config *c, const char *v, char *w, size_t n)
{
    return op_retry_parse(v, &c->retry, w, n);
}

static int s_on_error(config *c, const char *v, char *w, size_t n)
{
    if (strcmp(v, "fail") == 0)
        c->on_error = ON_ERROR_FAIL;
    else if (strcmp(v, "skip") == 0)
        c->on_error = ON_ERROR_SKIP;
    else if (strcmp(v, "dead-letter") == 0)
        c->on_error = ON_ERROR_DEAD_LETTER;
    else {
        snprintf(w, n, "expected 'fail', 'skip' or 'dead-letter', got '%s'", v);
        return -1;
    }
    return 0;
}

static int s_dead_letter(config *c, const char *v, char *w, size_t n) { return set_str(&c->dead_letter, v, w, n); }
static int s_tag_gen(config *c, const char *v, char *w, size_t n) { return set_str(&c->tag_generation, v, w, n); }

static int s_watch(config *c, const char *v, char *w, size_t n)
{
    return parse_bool(v, &c->watch, w, n);
}

static int parse_positive_ms(const char *v, uint64_t *out, char *w, size_t n)
{
    if (parse_ms(v, (uint64_t)1 << 40, out, w, n, "") != 0)
        return -1;
    if (*out == 0) {
        snprintf(w, n, "expected a positive number of milliseconds");
        return -1;
    }
    return 0;
}

static int s_open_timeout(config *c, const char *v, char *w, size_t n)
{
    return parse_positive_ms(v, &c->reload_open_timeout_ms, w, n);
}

static int s_ckpt_dir(config *c, const char *v, char *w, size_t n) { return set_str(&c->checkpoint_dir, v, w, n); }

static int s_ckpt_interval(config *c, const char *v, char *w, size_t n)
{
    return parse_positive_ms(v, &c->checkpoint_interval_ms, w, n);
}

/* T_RETRY: the flag's string form, or (pipeline only) a table.
 * T_CKPT: (pipeline only) checkpoint = { dir = "...", interval_ms = N }. */
enum { T_STRING, T_PATH, T_INT, T_BOOL, T_RETRY, T_CKPT };

typedef struct setting {
    const char *flag;  /* without "--" */
    const char *key;   /* pipeline key */
    int type;
    setter set;
} setting;

static const setting settings[] = {
    { "script", "script", T_PATH, s_script },
    { "input", "input", T_PATH, s_input },
    { "output", "output", T_PATH, s_output },
    { "mode", "mode", T_STRING, s_mode },
    { "capacity", "capacity", T_INT, s_capacity },
    { "timeout", "timeout_ms", T_INT, s_timeout },
    { "event-time", "event_time", T_STRING, s_event },
    { "max-out-of-orderness", "max_out_of_orderness_ms", T_INT, s_ooo },
    { "stats", "stats", T_BOOL, s_stats },
    { "max-line-bytes", "max_line_bytes", T_INT, s_maxline },
    { "retry", "retry", T_RETRY, s_retry },
    { "on-error", "on_error", T_STRING, s_on_error },
    { "dead-letter", "dead_letter", T_PATH, s_dead_letter },
    { "watch", "watch", T_BOOL, s_watch },
    { "tag-generation", "tag_generation", T_STRING, s_tag_gen },
    { "reload-open-timeout", "reload_open_timeout_ms", T_INT, s_open_timeout },
    { "checkpoint-dir", "checkpoint", T_CKPT, s_ckpt_dir },
    { "checkpoint-interval", "checkpoint_interval_ms", T_INT, s_ckpt_interval },
    { "cpu-budget", "cpu_budget_ms", T_INT, s_cpu_budget },
};
#define NSETTINGS (sizeof settings / sizeof settings[0])

void config_defaults(config *c)
{
    memset(c, 0, sizeof *c);
    c->input = strdup("-");
    c->output = strdup("-");
    c->mode = OP_ORDERED;
    c->capacity = 100;
    c->timeout_ms = 10000;
    c->max_line = 16 * 1024 * 1024;
    c->reload_open_timeout_ms = 10000;
    c->checkpoint_interval_ms = 1000;
    c->cpu_budget_ms = 1000;
}

void config_free(config *c)
{
    free(c->pipeline);
    free(c->script);
    free(c->input);
    free(c->output);
    free(c->event_time);
    free(c->dead_letter);
    free(c->tag_generation);
    free(c->checkpoint_dir);
    memset(c, 0, sizeof *c);
}

static char *errf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *m = NULL;
    if (vasprintf(&m, fmt, ap) < 0)
        m = NULL;
    va_end(ap);
    return m;
}

/* A path from the pipeline file is relative to the file's directory. */
static char *resolve(const char *pipeline, const char *v)
{
    if (strcmp(v, "-") == 0 || v[0] == '/')
        return strdup(v);
    const char *slash = strrchr(pipeline, '/');
    if (!slash)
        return strdup(v);
    return errf("%.*s/%s", (int)(slash - pipeline), pipeline, v);
}

static int load_pipeline(config *c, const char *path, char **err)
{
    lua_State *L = luaL_newstate();
    if (!L) {
        *err = strdup("out of memory");
        return -1;
    }
    luaL_openlibs(L);
    int rc = -1;
    if (luaL_loadfile(L, path) != 0 || lua_pcall(L, 0, 1, 0) != 0) {
        *err = errf("%s", lua_tostring(L, -1));
        goto out;
    }
    if (!lua_istable(L, -1)) {
        *err = errf("%s: a pipeline file must return a table of settings, got %s", path,
                    luaL_typename(L, -1));
        goto out;
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            *err = errf("%s: settings must be named (key = value), found a %s key", path,
                        luaL_typename(L, -2));
            goto out;
        }
        const char *key = lua_tostring(L, -2);
        const setting *s = NULL;
        for (size_t i = 0; i < NSETTINGS; i++)
            if (strcmp(settings[i].key, key) == 0)
                s = &settings[i];
        if (!s) {
            char known[512] = "";
            for (size_t i = 0; i < NSETTINGS; i++) {
                strcat(known, i ? ", " : "");
                strcat(known, settings[i].key);
            }
            *err = errf("%s: unknown key '%s' (known keys: %s)", path, key, known);
            goto out;
        }
        char val[64];
        const char *v = NULL;
        int t = lua_type(L, -1);
        if (s->type == T_RETRY && t == LUA_TTABLE) {
            char why[256];
            if (retry_table_parse(L, -1, &c->retry, why, sizeof why) != 0) {
                *err = errf("%s: key 'retry': %s", path, why);
                goto out;
            }
            lua_pop(L, 1);
            continue;
        }
        if (s->type == T_CKPT && t == LUA_TTABLE) {
            int tb = lua_gettop(L);
            lua_pushnil(L);
            while (lua_next(L, tb)) {
                const char *k2 = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
                char why[256] = "";
                int bad = 0;
                if (strcmp(k2, "dir") == 0 && lua_type(L, -1) == LUA_TSTRING) {
                    char *r = resolve(path, lua_tostring(L, -1));
                    bad = s_ckpt_dir(c, r, why, sizeof why);
                    free(r);
                } else if (strcmp(k2, "interval_ms") == 0 && lua_type(L, -1) == LUA_TNUMBER) {
                    snprintf(val, sizeof val, "%lld", (long long)lua_tonumber(L, -1));
                    bad = s_ckpt_interval(c, val, why, sizeof why);
                } else {
                    snprintf(why, sizeof why, "expected { dir = \"DIR\", interval_ms = N }, got key '%s'", k2);
                    bad = 1;
                }
                if (bad) {
                    *err = errf("%s: key 'checkpoint': %s", path, why);
                    goto out;
                }
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
            continue;
        }
        if ((s->type == T_STRING || s->type == T_PATH || s->type == T_RETRY) && t == LUA_TSTRING)
            v = lua_tostring(L, -1);
        else if (s->type == T_BOOL && t == LUA_TBOOLEAN)
            v = lua_toboolean(L, -1) ? "true" : "false";
        else if (s->type == T_INT && t == LUA_TNUMBER) {
            double d = lua_tonumber(L, -1);
            if (d == (double)(long long)d)
                snprintf(val, sizeof val, "%lld", (long long)d);
            else
                snprintf(val, sizeof val, "%g", d);
            v = val;
        }
        if (!v) {
            static const char *const want[] = { "a string", "a path string", "an integer", "a boolean",
                                                "a retry table or string", "a table { dir =, interval_ms = }" };
            *err = errf("%s: key '%s': expected %s, got %s", path, key, want[s->type], luaL_typename(L, -1));
            goto out;
        }
        char *resolved = s->type == T_PATH ? resolve(path, v) : NULL;
        char why[256];
        if (s->set(c, resolved ? resolved : v, why, sizeof why) != 0) {
            *err = errf("%s: key '%s': %s", path, key, why);
            free(resolved);
            goto out;
        }
        free(resolved);
        lua_pop(L, 1);
    }
    rc = 0;
out:
    lua_close(L);
    return rc;
}

int config_parse_run(config *c, int argc, char **argv, char **err)
{
    *err = NULL;
    /* First pass: find the pipeline file (the one positional argument). */
    const char *pipeline = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) == 0) {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
            const setting *s = NULL;
            for (size_t k = 0; k < NSETTINGS; k++)
                if (strlen(settings[k].flag) == nlen && strncmp(settings[k].flag, name, nlen) == 0)
                    s = &settings[k];
            if (!s) {
                *err = errf("unknown option '--%.*s' (see moonwait --help)", (int)nlen, name);
                return -1;
            }
            if (!eq && s->type != T_BOOL)
                i++;
            continue;
        }
        if (strcmp(a, "-") == 0 || a[0] != '-') {
            if (pipeline) {
                *err = errf("unexpected argument '%s' (only one pipeline file may be given)", a);
                return -1;
            }
            pipeline = a;
            continue;
        }
        *err = errf("unknown option '%s' (see moonwait --help)", a);
        return -1;
    }
    if (pipeline) {
        c->pipeline = strdup(pipeline);
        if (load_pipeline(c, pipeline, err) != 0)
            return -1;
    }
    /* Second pass: flags override the pipeline. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0)
            continue;
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const setting *s = NULL;
        for (size_t k = 0; k < NSETTINGS; k++)
            if (strlen(settings[k].flag) == nlen && strncmp(settings[k].flag, name, nlen) == 0)
                s = &settings[k];
        if (!s) {
            *err = errf("unknown option '--%.*s' (see moonwait --help)", (int)nlen, name);
            return -1;
        }
        const char *v;
        if (s->type == T_BOOL)
            v = eq ? eq + 1 : "true";
        else if (eq)
            v = eq + 1;
        else if (i + 1 < argc)
            v = argv[++i];
        else {
            *err = errf("option '--%s' needs a value", s->flag);
            return -1;
        }
        char why[256];
        if (s->set(c, v, why, sizeof why) != 0) {
            *err = errf("option '--%s': %s", s->flag, why);
            return -1;
        }
    }
    if (!c->script) {
        *err = strdup("no script: pass --script FILE or set 'script' in the pipeline file");
        return -1;
    }
    if (c->on_error == ON_ERROR_DEAD_LETTER && !c->dead_letter) {
        *err = strdup("option '--on-error dead-letter' needs '--dead-letter FILE' (pipeline key: dead_letter)");
        return -1;
    }
    if (c->dead_letter && c->on_error != ON_ERROR_DEAD_LETTER) {
        *err = strdup("option '--dead-letter' is only used with '--on-error dead-letter'");
        return -1;
    }
    if (c->has_max_ooo && !c->event_time) {
        *err = strdup("option '--max-out-of-orderness' needs '--event-time FIELD' "
                      "(pipeline keys: max_out_of_orderness_ms, event_time)");
        return -1;
    }
    return 0;
}

/* Where `path` would be created: its directory resolved, then its name
 * (malloc'd), or NULL. For two outputs that do not exist yet. */
static char *would_create(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    char *real = dir ? realpath(dir, NULL) : NULL;
    char *out = NULL;
    if (real && asprintf(&out, "%s/%s", real, slash ? slash + 1 : path) < 0)
        out = NULL;
    free(dir);
    free(real);
    return out;
}

int config_check_files(const config *c, char **err)
{
    struct {
        const char *flag, *path;
        int fd;
        struct stat st;
        int exists;   /* an existing regular file: compared by device and inode */
        char *create; /* an output that does not exist yet: where it would be */
    } f[3] = {
        { "--input", c->input, 0, { 0 }, 0, NULL },
        { "--output", c->output, 1, { 0 }, 0, NULL },
        { "--dead-letter", c->dead_letter, -1, { 0 }, 0, NULL },
    };
    for (int i = 0; i < 3; i++) {
        if (!f[i].path)
            continue;
        int std = strcmp(f[i].path, "-") == 0;
        int rc = std ? (f[i].fd >= 0 ? fstat(f[i].fd, &f[i].st) : -1) : stat(f[i].path, &f[i].st);
        /* Devices (/dev/null for two outputs) and pipes are not truncated. */
        f[i].exists = rc == 0 && S_ISREG(f[i].st.st_mode);
        if (rc != 0 && errno == ENOENT && i > 0 && !std)
            f[i].create = would_create(f[i].path);
    }
    int rc = 0;
    for (int i = 0; i < 3 && !rc; i++)
        for (int j = i + 1; j < 3 && !rc; j++) {
            int same = f[i].exists && f[j].exists ? f[i].st.st_dev == f[j].st.st_dev && f[i].st.st_ino == f[j].st.st_ino
                                                  : f[i].create && f[j].create && strcmp(f[i].create, f[j].create) == 0;
            if (!same)
                continue;
            const char *what = i == 0 ? "writing it would destroy the input being read"
                                      : "both would write to it and tear each other's lines";
            *err = errf("%s %s and %s %s are the same file: %s; give them different files", f[i].flag,
                        strcmp(f[i].path, "-") == 0 ? "- (stdin)" : f[i].path, f[j].flag,
                        strcmp(f[j].path, "-") == 0 ? "- (stdout)" : f[j].path, what);
            rc = -1;
        }
    for (int i = 0; i < 3; i++)
        free(f[i].create);
    return rc;
}
