/*
 * config.c: the run settings (contract in config.h): defaults, the
 * command line and its precedence over the pipeline file, the checks that
 * span several settings, and the check that no two files clash. Each
 * setting's flag, key and validation are in the option table (options.c);
 * the pipeline file is read by pipefile.c.
 *
 * Precedence: a flag over the pipeline file over the defaults. The retry
 * strategy has a third source, the script's M.retry, which the host uses
 * only when neither a flag nor the file set one (config_retry).
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../io/io.h"
#include "../util/str.h"
#include "options.h"
#include "pipefile.h"

void config_defaults(config *c)
{
    memset(c, 0, sizeof *c);
    c->input = strdup("-");
    c->output = strdup("-");
    c->mode = OP_ORDERED;
    c->capacity = 100;
    c->workers = 1;
    c->timeout_ms = 10000;
    c->max_line = 16 * 1024 * 1024;
    c->reload_open_timeout_ms = 10000;
    c->checkpoint_interval_ms = 1000;
    c->cpu_budget_ms = 1000;
}

void config_free(config *c)
{
    char **owned[] = { &c->pipeline, &c->script, &c->input, &c->output,
                       &c->event_time, &c->dead_letter, &c->tag_generation, &c->checkpoint_dir, &c->key,
                       &c->metrics, &c->metrics_host };
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++)
        free(*owned[i]);
    batch_opts_free(&c->batch);
    memset(c, 0, sizeof *c);
}

/* The setting of argument a ("--name" or "--name=value"): *eq is set to the
 * '=' or NULL. NULL with *err set for an unknown flag. */
static const option *flag_of(const char *a, const char **eq, char **err)
{
    const char *name = a + 2;
    *eq = strchr(name, '=');
    size_t nlen = *eq ? (size_t)(*eq - name) : strlen(name);
    const option *s = options_by_flag(name, nlen);
    if (!s) {
        const char *near = options_suggest_flag(name, nlen);
        *err = near ? mw_str_fmt("unknown option '--%.*s' (did you mean '--%s'? see moonwait --help)", (int)nlen,
                                 name, near)
                    : mw_str_fmt("unknown option '--%.*s' (see moonwait --help)", (int)nlen, name);
    }
    return s;
}

/* First pass: check every flag is known and find the pipeline file (the
 * one positional argument; "-" counts as one). 0 with *pipeline (or NULL),
 * or -1. */
static int find_pipeline(int argc, char **argv, const char **pipeline, char **err)
{
    *pipeline = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *eq;
        if (strncmp(a, "--", 2) == 0) {
            const option *s = flag_of(a, &eq, err);
            if (!s)
                return -1;
            if (!eq && s->type != OPTION_BOOL)
                i++;
            continue;
        }
        if (strcmp(a, "-") == 0 || a[0] != '-') {
            if (*pipeline) {
                *err = mw_str_fmt("unexpected argument '%s' (only one pipeline file may be given)", a);
                return -1;
            }
            *pipeline = a;
            continue;
        }
        *err = mw_str_fmt("unknown option '%s' (see moonwait --help)", a);
        return -1;
    }
    return 0;
}

/* Second pass: every flag, over what the pipeline file set. */
static int apply_flags(config *c, int argc, char **argv, char **err)
{
    option_setter key_setter = options_by_flag("key", 3)->set, mode_setter = options_by_flag("mode", 4)->set,
                  dl_setter = options_by_flag("dead-letter", 11)->set,
                  on_error_setter = options_by_flag("on-error", 8)->set;
    int given = 0; /* bits: --key, --mode, --dead-letter, --on-error */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *eq, *v;
        if (strncmp(a, "--", 2) != 0)
            continue;
        const option *s = flag_of(a, &eq, err);
        if (!s)
            return -1;
        if (s->type == OPTION_BOOL)
            v = eq ? eq + 1 : "true";
        else if (eq)
            v = eq + 1;
        else if (i + 1 < argc)
            v = argv[++i];
        else {
            *err = mw_str_fmt("option '--%s' needs a value", s->flag);
            return -1;
        }
        char why[256];
        if (s->set(c, v, why, sizeof why) != 0) {
            *err = mw_str_fmt("option '--%s': %s", s->flag, why);
            return -1;
        }
        given |= s->set == key_setter ? 1 : s->set == mode_setter ? 2 : s->set == dl_setter ? 4
                 : s->set == on_error_setter ? 8 : 0;
    }
    /* A flag that overrides the pipeline file's mode (or on_error) takes the
     * file's key (dead_letter) with it: that setting belonged to the mode
     * the flag replaced, and refusing the pair would make the file's keyed
     * pipeline impossible to run unordered from the command line. */
    if ((given & 2) && !(given & 1) && c->mode != OP_KEYED && c->key) {
        free(c->key);
        c->key = NULL;
    }
    if ((given & 8) && !(given & 4) && c->on_error != ON_ERROR_DEAD_LETTER && c->dead_letter) {
        free(c->dead_letter);
        c->dead_letter = NULL;
    }
    return 0;
}

/* The rules that span settings, once every source is applied. */
static int check_combination(const config *c, char **err)
{
    const char *m = NULL;
    if (!c->script)
        m = "no script: pass --script FILE or set 'script' in the pipeline file";
    else if (c->on_error == ON_ERROR_DEAD_LETTER && !c->dead_letter)
        m = "option '--on-error dead-letter' needs '--dead-letter FILE' (pipeline key: dead_letter)";
    else if (c->dead_letter && c->on_error != ON_ERROR_DEAD_LETTER)
        m = "option '--dead-letter' is only used with '--on-error dead-letter'";
    else if (c->checkpoint_dir && (io_is_broker(c->input) || io_is_broker(c->output) ||
                                   (c->dead_letter && io_is_broker(c->dead_letter))))
        m = "option '--checkpoint-dir' does not apply to a Redis stream: the consumer group's pending entries "
            "are the checkpoint (an entry is acked once its outputs are committed); drop --checkpoint-dir";
    else if (c->has_max_ooo && !c->event_time)
        m = "option '--max-out-of-orderness' needs '--event-time FIELD' "
            "(pipeline keys: max_out_of_orderness_ms, event_time)";
    else if (c->mode == OP_KEYED && !c->key)
        m = "option '--mode keyed' needs '--key FIELD', the field whose value orders records "
            "(pipeline keys: mode, key)";
    else if (c->key && c->mode != OP_KEYED)
        m = "option '--key' is only used with '--mode keyed' (pipeline keys: key, mode)";
    if (!m)
        return 0;
    *err = strdup(m);
    return -1;
}

int config_parse_run(config *c, int argc, char **argv, char **err)
{
    *err = NULL;
    const char *pipeline;
    if (find_pipeline(argc, argv, &pipeline, err) != 0)
        return -1;
    if (pipeline) {
        c->pipeline = strdup(pipeline);
        if (pipefile_load(c, pipeline, err) != 0)
            return -1;
    }
    if (apply_flags(c, argc, argv, err) != 0)
        return -1;
    return check_combination(c, err);
}

const op_retry_policy *config_retry(const config *c, const op_retry_policy *script)
{
    if (c->retry.set)
        return &c->retry;
    if (script && script->set)
        return script;
    return NULL;
}

const char *config_retry_unused(const op_retry_policy *policy, int has_predicate)
{
    if (policy && policy->backoff != RETRY_NONE && !has_predicate)
        return "a retry strategy is set (--retry, the pipeline's retry or M.retry) but the script defines neither "
               "retry_on_error(err, ctx) nor retry_on_result(outputs, ctx): no attempt will be retried";
    return NULL;
}

void config_batch(const config *c, const batch_opts *script, uint32_t *max_size, uint64_t *max_wait_ms,
                  const char **key)
{
    static const batch_opts none = { 0 };
    if (!script)
        script = &none;
    *max_size = c->batch.has_size ? c->batch.max_size : script->has_size ? script->max_size : BATCH_DEFAULT_SIZE;
    *max_wait_ms = c->batch.has_wait     ? c->batch.max_wait_ms
                   : script->has_wait    ? script->max_wait_ms
                                         : BATCH_DEFAULT_WAIT_MS;
    *key = c->batch.has_key ? c->batch.key : script->has_key ? script->key : NULL;
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
    for (int j = 1; j < 3 && !rc; j++)
        if (io_same_stream(c->input, f[j].path)) {
            *err = mw_str_fmt("--input and %s name the same stream: what is written to it would be read again as "
                              "input, for ever; give %s another stream", f[j].flag, f[j].flag);
            rc = -1;
        }
    for (int i = 0; i < 3 && !rc; i++)
        for (int j = i + 1; j < 3 && !rc; j++) {
            int same = f[i].exists && f[j].exists ? f[i].st.st_dev == f[j].st.st_dev && f[i].st.st_ino == f[j].st.st_ino
                                                  : f[i].create && f[j].create && strcmp(f[i].create, f[j].create) == 0;
            if (!same)
                continue;
            const char *what = i == 0 ? "writing it would destroy the input being read"
                                      : "both would write to it and tear each other's lines";
            *err = mw_str_fmt("%s %s and %s %s are the same file: %s; give them different files", f[i].flag,
                        strcmp(f[i].path, "-") == 0 ? "- (stdin)" : f[i].path, f[j].flag,
                        strcmp(f[j].path, "-") == 0 ? "- (stdout)" : f[j].path, what);
            rc = -1;
        }
    for (int i = 0; i < 3; i++)
        free(f[i].create);
    return rc;
}
