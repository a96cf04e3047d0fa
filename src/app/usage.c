/*
 * usage.c: --help, `moonwait help NAME` and the man page (contract in
 * usage.h). Every setting comes from the option table through options_at;
 * nothing here names a setting's value or text, so a row appended to the
 * table is listed (under the last group) with no change here.
 */
#define _GNU_SOURCE
#include "usage.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/log.h"
#include "options.h"

/* ---- the static parts: commands, exit statuses, environment ------------------ */

typedef struct {
    const char *term, *text;
} entry;

static const entry commands[] = {
    { "run [PIPELINE.lua] [--FLAG VALUE]...",
      "Streams JSON lines from --input through the script's async_invoke(record, ctx), at most --capacity "
      "records in flight, and writes the results to --output. A pipeline file is Lua that returns a table of "
      "settings by their pipeline keys (paths in it are relative to it); flags override it. A flag is "
      "--flag VALUE or --flag=VALUE." },
    { "check SCRIPT.lua [PIPELINE.lua]",
      "Checks a script without reading input and prints each check: it compiles, its main chunk runs within "
      "the CPU budget and writes no global, it returns a module table with async_invoke or batch_invoke, no "
      "function of it writes an undeclared global (one that reads a global nothing sets is a warning), its hooks "
      "are functions, M.retry and M.batch are valid, and "
      "a retry strategy has a predicate; with a pipeline file, its keys and values too. Exit 0 when every "
      "check passes, 2 otherwise." },
    { "test SPEC.lua [SPEC.lua ...]",
      "Runs a script's unit tests: spec files (describe/it) that load the script through moonwait.test with "
      "fake moonwait.http and moonwait.redis answers, in the same VM, runtime and fibers as a run. Exit 0 "
      "when every test passed, 1 when one failed (or a spec did not load), 2 for bad usage. README.md, "
      "\"Testing a script\"." },
    { "help [FLAG|KEY|COMMAND]",
      "Explains one setting, named by its flag (with or without --), its pipeline key or a field of one "
      "(batch.max_wait_ms), one environment variable, or one command; "
      "alone, this text. help --man prints the man page (roff)." },
    { "--help | --version", "Prints this text, or the version." },
};

static const entry statuses[] = {
    { "0", "The input ended and everything was emitted (check: every check passed)." },
    { "1", "The run failed: a record failed with --on-error fail, a malformed line, an output that could not "
           "be written, a checkpoint that could not be written, or a first SIGINT or SIGTERM stopped the input "
           "(what was in flight was finished first)." },
    { "2", "Bad usage, a script that does not load (or a check that failed), an input or output that cannot "
           "be opened, a checkpoint that cannot be restored from." },
    { "130, 143", "SIGINT, SIGTERM: with --checkpoint-dir, the checkpoint was written (run the same command "
                  "to continue); with a Redis Streams input, reading stopped and the records in flight were "
                  "finished and committed; otherwise a second signal ended the process at once." },
    { "141", "The output's reader went away (a broken pipe)." },
};

static const entry environment[] = {
    { "MOONWAIT_LUA_DIR", "Where the shipped Lua modules (moonwait/*.lua) are; by default next to the "
                          "binary (../lua, ../share/moonwait/lua)." },
    { "MOONWAIT_LOG_LEVEL", "debug, info, warn or error: the lowest level written, by moonwait.log and by "
                            "moonwait's own messages alike (the error that ends a run and --stats lines are "
                            "always written). Default: info." },
    { "MOONWAIT_LOG_FORMAT", "text or json: how messages are written when neither --log-format nor the "
                             "pipeline's log_format says. Default: text." },
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const char summary[] = "streams JSON lines through a bounded asynchronous operator; a Lua script "
                              "handles each record";

/* ---- the groups --------------------------------------------------------------- */

static const char *const g_io[] = { "script", "input", "output", "max-line-bytes", NULL };
static const char *const g_order[] = { "mode", "key", "capacity", "event-time", "max-out-of-orderness",
                                       "rate-limit", "workers", NULL };
static const char *const g_fail[] = { "timeout", "retry", "on-error", "dead-letter", "cpu-budget", NULL };
static const char *const g_batch[] = { "batch-size", "batch-wait", "batch-key", NULL };
static const char *const g_reload[] = { "watch", "tag-generation", "reload-open-timeout", NULL };
static const char *const g_ckpt[] = { "checkpoint-dir", "checkpoint-interval", NULL };
/* Last: also every row appended to the table that no group lists. */
static const char *const g_other[] = { "stats", "log-format", "metrics", NULL };

const usage_group usage_groups[] = {
    { "Input and output", g_io },
    { "Order and concurrency", g_order },
    { "Time limits, retries, failures", g_fail },
    { "Batching", g_batch },
    { "Hot reload", g_reload },
    { "Checkpoints", g_ckpt },
    { "Observing the run, other settings", g_other }, /* last: also every flag no group lists */
    { NULL, NULL },
};

static int listed_in(const usage_group *g, const char *flag)
{
    for (const char *const *f = g->flags; *f; f++)
        if (strcmp(*f, flag) == 0)
            return 1;
    return 0;
}

/* Whether option o is shown under group g. */
int usage_in_group(const usage_group *g, const option *o)
{
    if (listed_in(g, o->flag))
        return 1;
    if (g[1].title) /* not the last group */
        return 0;
    for (const usage_group *h = usage_groups; h->title; h++)
        if (listed_in(h, o->flag))
            return 0;
    return 1;
}

/* ---- plain text --------------------------------------------------------------- */

/* text wrapped at 80 columns, each line indented by `indent`. */
static void wrap(FILE *f, int indent, const char *text)
{
    const int width = 80;
    const char *p = text;
    while (*p) {
        while (*p == ' ')
            p++;
        int room = width - indent, n = 0, cut = 0;
        while (p[n] && n < room) {
            if (p[n] == ' ')
                cut = n;
            n++;
        }
        if (!p[n] || !cut)
            cut = n;
        if (p[n] && !cut) /* one word longer than the line */
            while (p[cut] && p[cut] != ' ')
                cut++;
        int shown = cut;
        while (shown > 0 && p[shown - 1] == ' ')
            shown--;
        fprintf(f, "%*s%.*s\n", indent, "", shown, p);
        p += cut;
    }
}

static void print_entries(FILE *f, const entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "  %s\n", e[i].term);
        wrap(f, 6, e[i].text);
    }
}

/* "--flag ARG" (or "--flag" for a bare flag) into buf. */
static const char *flag_form(const option *o, char *buf, size_t n)
{
    snprintf(buf, n, "--%s%s%s", o->flag, o->arg ? " " : "", o->arg ? o->arg : "");
    return buf;
}

void usage_print_help(FILE *f)
{
    fprintf(f, "moonwait %s: %s.\n\nusage:\n", MW_VERSION, summary);
    for (size_t i = 0; i < COUNT(commands); i++)
        fprintf(f, "  moonwait %s\n", commands[i].term);
    fputs("\ncommands:\n", f);
    print_entries(f, commands, COUNT(commands));
    fputs("\nsettings of run (a flag and its value, then its pipeline key):\n", f);
    for (const usage_group *g = usage_groups; g->title; g++) {
        fprintf(f, "\n %s:\n", g->title);
        const option *o;
        for (size_t i = 0; (o = options_at(i)) != NULL; i++) {
            if (!usage_in_group(g, o))
                continue;
            char form[128];
            flag_form(o, form, sizeof form);
            int pad = 44 - (int)strlen(form);
            if (o->key)
                fprintf(f, "  %s%*s %s\n", form, pad > 0 ? pad : 0, "", o->key);
            else
                fprintf(f, "  %s\n", form);
            wrap(f, 6, o->help ? o->help : "");
        }
    }
    fputs("\nexit status:\n", f);
    print_entries(f, statuses, COUNT(statuses));
    fputs("\nenvironment:\n", f);
    print_entries(f, environment, COUNT(environment));
    fputs("\nMore: moonwait help FLAG, man moonwait, and README.md.\n", f);
}

/* ---- one setting -------------------------------------------------------------- */

/* Does text mention word (not as part of a longer name)? */
static int mentions(const char *text, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = text; (p = strstr(p, word)) != NULL; p++) {
        int before = p > text && (isalnum((unsigned char)p[-1]) || p[-1] == '_' || p[-1] == '.');
        int after = isalnum((unsigned char)p[n]) || p[n] == '_';
        if (!before && !after)
            return 1;
    }
    return 0;
}

/* A field of a table-valued key, as the README's table writes it
 * (batch.max_wait_ms, checkpoint.dir): the setting whose help names that
 * field, else the setting of the table's key. */
static const option *find_field(const char *name)
{
    const char *dot = strchr(name, '.');
    if (!dot || dot == name || !dot[1])
        return NULL;
    const option *o;
    for (size_t i = 0; (o = options_at(i)) != NULL; i++)
        if (o->help && mentions(o->help, name))
            return o;
    char table[64];
    if ((size_t)(dot - name) >= sizeof table)
        return NULL;
    snprintf(table, sizeof table, "%.*s", (int)(dot - name), name);
    o = options_by_key(table);
    return o && (o->type == OPTION_CKPT || o->type == OPTION_CAPACITY || o->type == OPTION_RATE ||
                 o->type == OPTION_BATCH || o->type == OPTION_RETRY)
               ? o
               : NULL;
}

static const option *find(const char *name)
{
    const char *n = strncmp(name, "--", 2) == 0 ? name + 2 : name;
    const option *o = options_by_flag(n, strlen(n));
    if (!o)
        o = options_by_key(n);
    return o ? o : find_field(n);
}

int usage_explain(FILE *f, const char *name)
{
    for (size_t i = 0; i < COUNT(commands); i++) {
        size_t n = strcspn(commands[i].term, " ");
        if (strlen(name) == n && strncmp(name, commands[i].term, n) == 0) {
            fprintf(f, "moonwait %s\n", commands[i].term);
            wrap(f, 2, commands[i].text);
            return 0;
        }
    }
    /* The environment variables --help lists: asked for by name too. */
    for (size_t i = 0; i < COUNT(environment); i++)
        if (strcmp(name, environment[i].term) == 0) {
            fprintf(f, "%s (environment)\n", environment[i].term);
            wrap(f, 2, environment[i].text);
            return 0;
        }
    const option *o = find(name);
    if (!o) {
        const char *n = strncmp(name, "--", 2) == 0 ? name + 2 : name;
        const char *near = options_suggest_flag(n, strlen(n));
        if (near)
            mw_log(MW_LOG_ERROR, "unknown setting '%s' (did you mean '--%s'? see moonwait --help)", name, near);
        else
            mw_log(MW_LOG_ERROR, "unknown setting '%s' (see moonwait --help)", name);
        return 2;
    }
    char form[128];
    fprintf(f, "%s\n", flag_form(o, form, sizeof form));
    if (o->key)
        fprintf(f, "  pipeline key: %s (%s)\n", o->key, options_want(o->type));
    else
        fputs("  pipeline key: none of its own (the help says where it goes)\n", f);
    /* The help's "Default: X." on a line of its own. */
    const char *help = o->help ? o->help : "";
    const char *def = strstr(help, "Default: ");
    if (def) {
        size_t dl = strlen(def + 9);
        if (dl && def[9 + dl - 1] == '.')
            dl--;
        fprintf(f, "  default: %.*s\n", (int)dl, def + 9);
    }
    fputc('\n', f);
    if (def) {
        char *body = strndup(help, (size_t)(def - help));
        wrap(f, 2, body ? body : help);
        free(body);
    } else {
        wrap(f, 2, help);
    }
    return 0;
}

/* ---- the man page ------------------------------------------------------------- */

/* s as roff text: backslashes and hyphens escaped (a '-' is a minus sign,
 * so flags copy and paste), a leading '.' or '\'' kept from being a
 * request. */
static void roff(FILE *f, const char *s)
{
    if (*s == '.' || *s == '\'')
        fputs("\\&", f);
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\e", f);
        else if (*s == '-')
            fputs("\\-", f);
        else
            fputc(*s, f);
    }
}

static void man_entries(FILE *f, const entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fputs(".TP\n.B ", f);
        roff(f, e[i].term);
        fputc('\n', f);
        roff(f, e[i].text);
        fputc('\n', f);
    }
}

void usage_print_man(FILE *f)
{
    fprintf(f, ".TH MOONWAIT 1 \"\" \"moonwait %s\" \"User Commands\"\n", MW_VERSION);
    /* No hyphenation, ragged right: flags and Lua names stay whole. */
    fputs(".nh\n.ad l\n.SH NAME\nmoonwait \\- ", f);
    roff(f, summary);
    fputs("\n.SH SYNOPSIS\n", f);
    for (size_t i = 0; i < COUNT(commands); i++) {
        fputs(".B moonwait\n", f);
        roff(f, commands[i].term);
        fputs("\n.br\n", f);
    }
    fputs(".SH DESCRIPTION\n", f);
    roff(f, "moonwait gives a stream of JSON lines the semantics of Apache Flink's Async I/O operator: a bounded "
            "number of records in flight, per-record timeouts covering retries, ordered or unordered output with "
            "watermarks as barriers, and exactly-once checkpoints. The per-record work is a Lua function that "
            "reads sequentially; each wait parks its coroutine on one event loop.");
    fputs("\n.SH COMMANDS\n", f);
    man_entries(f, commands, COUNT(commands));
    fputs(".SH OPTIONS\n", f);
    roff(f, "The settings of run. Each is a flag and, in a pipeline file, a key; flags override the file.");
    fputc('\n', f);
    for (const usage_group *g = usage_groups; g->title; g++) {
        fputs(".SS ", f);
        roff(f, g->title);
        fputc('\n', f);
        const option *o;
        for (size_t i = 0; (o = options_at(i)) != NULL; i++) {
            if (!usage_in_group(g, o))
                continue;
            fputs(".TP\n", f);
            if (o->arg) {
                fputs(".BI \"", f);
                roff(f, "--");
                roff(f, o->flag);
                fputs(" \" \"", f);
                roff(f, o->arg);
                fputs("\"\n", f);
            } else {
                fputs(".B ", f);
                roff(f, "--");
                roff(f, o->flag);
                fputc('\n', f);
            }
            roff(f, o->help ? o->help : "");
            fputc('\n', f);
            if (o->key) {
                fputs(".br\nPipeline key: \\fB", f);
                roff(f, o->key);
                fputs("\\fR (", f);
                roff(f, options_want(o->type));
                fputs(").\n", f);
            }
        }
    }
    fputs(".SH EXIT STATUS\n", f);
    man_entries(f, statuses, COUNT(statuses));
    fputs(".SH ENVIRONMENT\n", f);
    man_entries(f, environment, COUNT(environment));
    fputs(".SH SEE ALSO\n", f);
    roff(f, "README.md in the source tree (every feature with examples); moonwait help FLAG.");
    fputc('\n', f);
}
