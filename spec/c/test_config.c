/*
 * test_config.c: the run settings (src/app/config.c, options.c,
 * pipefile.c): defaults, every pipeline key and every flag taking effect,
 * the precedence flag > pipeline file > script (M.retry), both flag forms,
 * and errors that name the flag or key and the bad value.
 */
#define _GNU_SOURCE
#include "../../src/app/config.h"
#include "../../src/app/options.h"
#include "../../src/app/usage.h"
#include "../../src/util/str.h"
#include "test.h"

#include <stdarg.h>

static char dir[64];

/* Write a pipeline file with `body` into a fresh directory; its path. */
static const char *pipeline(const char *body)
{
    static char path[128];
    strcpy(dir, "/tmp/test_config.XXXXXX");
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/p.lua", dir);
    FILE *f = fopen(path, "w");
    ASSERT(f != NULL);
    fputs(body, f);
    fclose(f);
    return path;
}

/* config_parse_run on "run" and the NULL-terminated arguments. */
static int parse(config *c, char **err, ...)
{
    char *argv[64] = { (char *)"run" };
    int argc = 1;
    va_list ap;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)) != NULL;)
        argv[argc++] = a;
    va_end(ap);
    config_defaults(c);
    return config_parse_run(c, argc, argv, err);
}

/* The message of a refused command line. */
static char *refused(char *args0, ...)
{
    char *argv[64] = { (char *)"run", args0 };
    int argc = 2;
    va_list ap;
    va_start(ap, args0);
    for (char *a; (a = va_arg(ap, char *)) != NULL;)
        argv[argc++] = a;
    va_end(ap);
    config c;
    config_defaults(&c);
    char *err = NULL;
    if (config_parse_run(&c, argc, argv, &err) == 0)
        FAILF("accepted a command line starting '%s'", args0);
    ASSERT(err != NULL);
    config_free(&c);
    return err;
}

static void expect_refused_file(const char *body, const char *want_after_path)
{
    const char *p = pipeline(body);
    char *err = refused((char *)p, "--script", "s.lua", NULL);
    char want[512];
    snprintf(want, sizeof want, "%s: %s", p, want_after_path);
    ASSERT_STR_EQ(err, want);
    free(err);
}

static void test_defaults(void)
{
    config c;
    config_defaults(&c);
    ASSERT_STR_EQ(c.input, "-");
    ASSERT_STR_EQ(c.output, "-");
    ASSERT_INT_EQ(c.mode, OP_ORDERED);
    ASSERT_UINT_EQ(c.capacity, 100);
    ASSERT_UINT_EQ(c.timeout_ms, 10000);
    ASSERT_UINT_EQ(c.max_line, 16 * 1024 * 1024);
    ASSERT_UINT_EQ(c.reload_open_timeout_ms, 10000);
    ASSERT_UINT_EQ(c.checkpoint_interval_ms, 1000);
    ASSERT_UINT_EQ(c.cpu_budget_ms, 1000);
    ASSERT(!c.script && !c.pipeline && !c.event_time && !c.dead_letter && !c.checkpoint_dir);
    ASSERT(!c.stats && !c.watch && !c.has_max_ooo && !c.retry.set);
    ASSERT_INT_EQ(c.on_error, ON_ERROR_FAIL);
    config_free(&c);
}

/* Every key of the pipeline file sets its field; paths are relative to the
 * file's directory ("-" and absolute paths as they are). */
static void test_every_pipeline_key_takes_effect(void)
{
    const char *p = pipeline("return { script = 's.lua', input = 'in.jsonl', output = '/abs/out', mode = 'unordered',\n"
                             "  capacity = 7, timeout_ms = 250, event_time = 'a.ts', max_out_of_orderness_ms = 40,\n"
                             "  stats = true, max_line_bytes = 4096, on_error = 'dead-letter', dead_letter = 'dl',\n"
                             "  watch = true, tag_generation = 'gen', reload_open_timeout_ms = 77,\n"
                             "  checkpoint = { dir = 'ck', interval_ms = 500 }, cpu_budget_ms = 33,\n"
                             "  retry = { max_attempts = 4, backoff = 'exponential', initial_delay_ms = 5,\n"
                             "            max_delay_ms = 80, multiplier = 3, jitter = 'full' } }\n");
    config c;
    char *err = NULL, want[128];
    ASSERT_INT_EQ(parse(&c, &err, p, NULL), 0);
    ASSERT_STR_EQ(c.pipeline, p);
    snprintf(want, sizeof want, "%s/s.lua", dir);
    ASSERT_STR_EQ(c.script, want);
    snprintf(want, sizeof want, "%s/in.jsonl", dir);
    ASSERT_STR_EQ(c.input, want);
    ASSERT_STR_EQ(c.output, "/abs/out");
    ASSERT_INT_EQ(c.mode, OP_UNORDERED);
    ASSERT_UINT_EQ(c.capacity, 7);
    ASSERT_UINT_EQ(c.timeout_ms, 250);
    ASSERT_STR_EQ(c.event_time, "a.ts");
    ASSERT(c.has_max_ooo);
    ASSERT_INT_EQ(c.max_ooo_ms, 40);
    ASSERT_INT_EQ(c.stats, 1);
    ASSERT_UINT_EQ(c.max_line, 4096);
    ASSERT_INT_EQ(c.on_error, ON_ERROR_DEAD_LETTER);
    snprintf(want, sizeof want, "%s/dl", dir);
    ASSERT_STR_EQ(c.dead_letter, want);
    ASSERT_INT_EQ(c.watch, 1);
    ASSERT_STR_EQ(c.tag_generation, "gen");
    ASSERT_UINT_EQ(c.reload_open_timeout_ms, 77);
    snprintf(want, sizeof want, "%s/ck", dir);
    ASSERT_STR_EQ(c.checkpoint_dir, want);
    ASSERT_UINT_EQ(c.checkpoint_interval_ms, 500);
    ASSERT_UINT_EQ(c.cpu_budget_ms, 33);
    ASSERT(c.retry.set);
    ASSERT_INT_EQ(c.retry.backoff, RETRY_EXPONENTIAL);
    ASSERT_UINT_EQ(c.retry.max_attempts, 4);
    ASSERT_UINT_EQ(c.retry.initial_ms, 5);
    ASSERT_UINT_EQ(c.retry.max_ms, 80);
    ASSERT(c.retry.multiplier == 3.0);
    ASSERT_INT_EQ(c.retry.jitter_full, 1);
    config_free(&c);
}

/* The keys the test above cannot hold at once: checkpoint_interval_ms
 * (also set by the checkpoint table), and retry and booleans as strings. */
static void test_remaining_pipeline_forms_take_effect(void)
{
    const char *p = pipeline("return { script = '/s.lua', checkpoint_interval_ms = 1234, retry = 'fixed:3:20',\n"
                             "  stats = false, watch = false, input = '-', on_error = 'skip' }\n");
    config c;
    char *err = NULL;
    ASSERT_INT_EQ(parse(&c, &err, p, NULL), 0);
    ASSERT_STR_EQ(c.script, "/s.lua");
    ASSERT_STR_EQ(c.input, "-");
    ASSERT_UINT_EQ(c.checkpoint_interval_ms, 1234);
    ASSERT(c.retry.set);
    ASSERT_INT_EQ(c.retry.backoff, RETRY_FIXED);
    ASSERT_UINT_EQ(c.retry.max_attempts, 3);
    ASSERT_UINT_EQ(c.retry.delay_ms, 20);
    ASSERT_INT_EQ(c.stats, 0);
    ASSERT_INT_EQ(c.on_error, ON_ERROR_SKIP);
    ASSERT(!c.checkpoint_dir);
    config_free(&c);
}

/* Every flag sets its field, in both forms. */
static void test_every_flag_takes_effect(void)
{
    config c;
    char *err = NULL;
    ASSERT_INT_EQ(parse(&c, &err, "--script", "s.lua", "--input=in", "--output", "out", "--mode=unordered",
                        "--capacity", "3", "--timeout=90", "--event-time", "t", "--max-out-of-orderness=15",
                        "--stats", "--max-line-bytes=64", "--retry", "fixed:2:7", "--on-error=dead-letter",
                        "--dead-letter", "dl", "--watch=true", "--tag-generation", "g", "--reload-open-timeout=5",
                        "--checkpoint-dir", "ck", "--checkpoint-interval=9", "--cpu-budget", "0", NULL),
                  0);
    ASSERT(!c.pipeline);
    ASSERT_STR_EQ(c.script, "s.lua"); /* flags' paths are the caller's, unresolved */
    ASSERT_STR_EQ(c.input, "in");
    ASSERT_STR_EQ(c.output, "out");
    ASSERT_INT_EQ(c.mode, OP_UNORDERED);
    ASSERT_UINT_EQ(c.capacity, 3);
    ASSERT_UINT_EQ(c.timeout_ms, 90);
    ASSERT_STR_EQ(c.event_time, "t");
    ASSERT_INT_EQ(c.max_ooo_ms, 15);
    ASSERT_INT_EQ(c.stats, 1);
    ASSERT_UINT_EQ(c.max_line, 64);
    ASSERT_INT_EQ(c.retry.backoff, RETRY_FIXED);
    ASSERT_UINT_EQ(c.retry.max_attempts, 2);
    ASSERT_UINT_EQ(c.retry.delay_ms, 7);
    ASSERT_INT_EQ(c.on_error, ON_ERROR_DEAD_LETTER);
    ASSERT_STR_EQ(c.dead_letter, "dl");
    ASSERT_INT_EQ(c.watch, 1);
    ASSERT_STR_EQ(c.tag_generation, "g");
    ASSERT_UINT_EQ(c.reload_open_timeout_ms, 5);
    ASSERT_STR_EQ(c.checkpoint_dir, "ck");
    ASSERT_UINT_EQ(c.checkpoint_interval_ms, 9);
    ASSERT_UINT_EQ(c.cpu_budget_ms, 0);
    config_free(&c);
    /* A boolean flag takes a value only in the '=' form. */
    ASSERT_INT_EQ(parse(&c, &err, "--stats=false", "--watch", "--script", "s.lua", NULL), 0);
    ASSERT_INT_EQ(c.stats, 0);
    ASSERT_INT_EQ(c.watch, 1);
    config_free(&c);
}

/* A flag overrides the pipeline file, whatever their order on the command
 * line; what the flags leave alone keeps the file's value. */
static void test_flag_overrides_pipeline_file(void)
{
    const char *p = pipeline("return { script = '/s.lua', capacity = 5, mode = 'unordered', timeout_ms = 300,\n"
                             "  retry = 'fixed:2:5' }\n");
    config c;
    char *err = NULL;
    ASSERT_INT_EQ(parse(&c, &err, "--capacity", "9", p, "--timeout=0", "--script", "/t.lua", NULL), 0);
    ASSERT_UINT_EQ(c.capacity, 9);
    ASSERT_UINT_EQ(c.timeout_ms, 0);
    ASSERT_STR_EQ(c.script, "/t.lua");
    ASSERT_INT_EQ(c.mode, OP_UNORDERED);
    ASSERT_UINT_EQ(c.retry.max_attempts, 2);
    config_free(&c);
    ASSERT_INT_EQ(parse(&c, &err, p, "--retry", "none", NULL), 0);
    ASSERT(c.retry.set);
    ASSERT_INT_EQ(c.retry.backoff, RETRY_NONE);
    config_free(&c);
}

/* A flag that replaces the file's keyed mode takes the file's key with it
 * (and --on-error, the file's dead_letter); the flag pair is still refused. */
static void test_mode_flag_takes_the_files_key(void)
{
    const char *p = pipeline("return { script = '/s.lua', mode = 'keyed', key = 'user',\n"
                             "  on_error = 'dead-letter', dead_letter = '/tmp/dl.jsonl' }\n");
    config c;
    char *err = NULL;
    ASSERT_INT_EQ(parse(&c, &err, p, "--mode", "unordered", NULL), 0);
    ASSERT_INT_EQ(c.mode, OP_UNORDERED);
    ASSERT(c.key == NULL);
    ASSERT_STR_EQ(c.dead_letter, "/tmp/dl.jsonl");
    config_free(&c);
    ASSERT_INT_EQ(parse(&c, &err, p, "--on-error=skip", NULL), 0);
    ASSERT_INT_EQ(c.mode, OP_KEYED);
    ASSERT_STR_EQ(c.key, "user");
    ASSERT(c.dead_letter == NULL);
    config_free(&c);
    ASSERT_INT_EQ(parse(&c, &err, p, "--mode", "keyed", NULL), 0);
    ASSERT_STR_EQ(c.key, "user");
    config_free(&c);
    err = refused((char *)p, "--mode", "unordered", "--key", "user", NULL);
    ASSERT(strstr(err, "'--key' is only used with '--mode keyed'") != NULL);
    free(err);
    err = refused((char *)p, "--on-error", "fail", "--dead-letter", "/tmp/x", NULL);
    ASSERT(strstr(err, "'--dead-letter' is only used") != NULL);
    free(err);
}

/* The retry strategy: flag > pipeline file > the script's M.retry; a
 * "none" at a higher level overrides a strategy below it. */
static void test_retry_precedence_flag_pipeline_script(void)
{
    op_retry_policy script = { 1, RETRY_FIXED, 9, 1, 0, 0, 0, 0 };
    op_retry_policy unset = { 0, RETRY_NONE, 0, 0, 0, 0, 0, 0 };
    const char *p = pipeline("return { script = '/s.lua', retry = { max_attempts = 4, delay_ms = 6 } }\n");
    config c;
    char *err = NULL;
    ASSERT_INT_EQ(parse(&c, &err, p, "--retry", "fixed:2:3", NULL), 0);
    ASSERT(config_retry(&c, &script) == &c.retry);
    ASSERT_UINT_EQ(config_retry(&c, &script)->max_attempts, 2);
    config_free(&c);
    ASSERT_INT_EQ(parse(&c, &err, p, NULL), 0);
    ASSERT_UINT_EQ(config_retry(&c, &script)->max_attempts, 4);
    ASSERT_UINT_EQ(config_retry(&c, &script)->delay_ms, 6);
    config_free(&c);
    ASSERT_INT_EQ(parse(&c, &err, "--script", "s.lua", NULL), 0);
    ASSERT(config_retry(&c, &script) == &script);
    ASSERT(config_retry(&c, &unset) == NULL);
    ASSERT(config_retry(&c, NULL) == NULL);
    config_free(&c);
    ASSERT_INT_EQ(parse(&c, &err, "--script", "s.lua", "--retry=none", NULL), 0);
    ASSERT_INT_EQ(config_retry(&c, &script)->backoff, RETRY_NONE);
    config_free(&c);
}

/* A bad flag value: the flag and the value are named. */
static void test_bad_flag_values_are_named(void)
{
    static const struct {
        const char *flag, *value, *want;
    } cases[] = {
        { "--capacity", "0", "option '--capacity': expected an integer from 1 to 10000000, or MIN..MAX for adaptive capacity, got '0'" },
        { "--capacity", "-3", "option '--capacity': expected an integer from 1 to 10000000, or MIN..MAX for adaptive capacity, got '-3'" },
        { "--capacity", "0..10", "option '--capacity': adaptive capacity's min must be at least 1, got '0..10'" },
        { "--capacity", "10..2", "option '--capacity': adaptive capacity's min (10) is above its max (2)" },
        { "--capacity", "8..", "option '--capacity': expected MIN..MAX with integers from 1 to 10000000 (adaptive "
                               "capacity, e.g. 8..1000), got '8..'" },
        { "--capacity", "8..x", "option '--capacity': expected MIN..MAX with integers from 1 to 10000000 (adaptive "
                                "capacity, e.g. 8..1000), got '8..x'" },
        { "--capacity", "8...9", "option '--capacity': expected MIN..MAX with integers from 1 to 10000000 (adaptive "
                                 "capacity, e.g. 8..1000), got '8...9'" },
        { "--mode", "sorted", "option '--mode': expected 'ordered', 'unordered' or 'keyed', got 'sorted'" },
        { "--timeout", "1.5",
          "option '--timeout': expected milliseconds as a non-negative integer (0 = no timeout), got '1.5'" },
        { "--cpu-budget", "x", "option '--cpu-budget': expected milliseconds as a non-negative integer (0 = off), got 'x'" },
        { "--max-line-bytes", "15", "option '--max-line-bytes': expected a byte count from 16 to 4294967296, got '15'" },
        { "--stats=yes", NULL, "option '--stats': expected true or false, got 'yes'" },
        { "--on-error", "retry", "option '--on-error': expected 'fail', 'skip' or 'dead-letter', got 'retry'" },
        { "--event-time", "a..b", "option '--event-time': expected a field name or a dotted path like 'a.b', got 'a..b'" },
        { "--input", "", "option '--input': expected a non-empty string" },
        { "--key", "user.", "option '--key': expected a field name or a dotted path like 'a.b', got 'user.'" },
        { "--key", "", "option '--key': expected a non-empty string" },
        { "--reload-open-timeout", "0", "option '--reload-open-timeout': expected a positive number of milliseconds" },
        { "--checkpoint-interval", "0", "option '--checkpoint-interval': expected a positive number of milliseconds" },
        { "--retry", "fixed:0:5",
          "option '--retry': expected none, fixed:ATTEMPTS:DELAY_MS or "
          "exponential:ATTEMPTS:INITIAL_MS:MAX_MS:MULTIPLIER[:full], got 'fixed:0:5'" },
        { "--retry", "exponential:3:10:100:0.5", "option '--retry': MULTIPLIER must be a number >= 1, got '0.5'" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *err = cases[i].value ? refused((char *)cases[i].flag, (char *)cases[i].value, NULL)
                                   : refused((char *)cases[i].flag, NULL);
        ASSERT_STR_EQ(err, cases[i].want);
        free(err);
    }
}

/* Command-line mistakes that are not a value's. */
static void test_bad_command_lines_are_named(void)
{
    char *err = refused("--capacty", "3", NULL);
    ASSERT_STR_EQ(err, "unknown option '--capacty' (did you mean '--capacity'? see moonwait --help)");
    free(err);
    err = refused("--script=s.lua", "-x", NULL);
    ASSERT_STR_EQ(err, "unknown option '-x' (see moonwait --help)");
    free(err);
    err = refused("a.lua", "b.lua", NULL);
    ASSERT_STR_EQ(err, "unexpected argument 'b.lua' (only one pipeline file may be given)");
    free(err);
    err = refused("--script", "s.lua", "--timeout", NULL);
    ASSERT_STR_EQ(err, "option '--timeout' needs a value");
    free(err);
    err = refused("--capacity", "3", NULL);
    ASSERT_STR_EQ(err, "no script: pass --script FILE or set 'script' in the pipeline file");
    free(err);
    err = refused("--script", "s.lua", "--mode", "keyed", NULL);
    ASSERT_STR_EQ(err, "option '--mode keyed' needs '--key FIELD', the field whose value orders records "
                       "(pipeline keys: mode, key)");
    free(err);
    err = refused("--script", "s.lua", "--mode", "unordered", "--key", "id", NULL);
    ASSERT_STR_EQ(err, "option '--key' is only used with '--mode keyed' (pipeline keys: key, mode)");
    free(err);
    err = refused("--script", "s.lua", "--on-error", "dead-letter", NULL);
    ASSERT_STR_EQ(err, "option '--on-error dead-letter' needs '--dead-letter FILE' (pipeline key: dead_letter)");
    free(err);
    err = refused("--script", "s.lua", "--dead-letter", "dl", NULL);
    ASSERT_STR_EQ(err, "option '--dead-letter' is only used with '--on-error dead-letter'");
    free(err);
    err = refused("--script", "s.lua", "--max-out-of-orderness", "5", NULL);
    ASSERT_STR_EQ(err, "option '--max-out-of-orderness' needs '--event-time FIELD' "
                       "(pipeline keys: max_out_of_orderness_ms, event_time)");
    free(err);
}

/* Adaptive capacity: the flag's MIN..MAX, the pipeline's table, a flag
 * over the file either way. */
static void test_adaptive_capacity_flag_and_key(void)
{
    config c;
    char *err = NULL;
    ASSERT_INT_EQ(parse(&c, &err, "--script", "s.lua", "--capacity", "8..1000", NULL), 0);
    ASSERT(c.adaptive);
    ASSERT_UINT_EQ(c.cap_min, 8);
    ASSERT_UINT_EQ(c.cap_max, 1000);
    ASSERT_UINT_EQ(c.capacity, 8);
    config_free(&c);
    const char *p = pipeline("return { script = '/s.lua', capacity = { min = 4, max = 50, adaptive = true } }");
    ASSERT_INT_EQ(parse(&c, &err, p, NULL), 0);
    ASSERT(c.adaptive);
    ASSERT_UINT_EQ(c.cap_min, 4);
    ASSERT_UINT_EQ(c.cap_max, 50);
    config_free(&c);
    ASSERT_INT_EQ(parse(&c, &err, p, "--capacity", "7", NULL), 0);
    ASSERT(!c.adaptive);
    ASSERT_UINT_EQ(c.capacity, 7);
    config_free(&c);
    p = pipeline("return { script = '/s.lua', capacity = { max = 50, adaptive = true } }");
    ASSERT_INT_EQ(parse(&c, &err, p, NULL), 0);
    ASSERT_UINT_EQ(c.cap_min, 1); /* min defaults to 1 */
    config_free(&c);
    p = pipeline("return { script = '/s.lua', capacity = { min = 4, max = 50, adaptive = false } }");
    ASSERT_INT_EQ(parse(&c, &err, p, NULL), 0);
    ASSERT(!c.adaptive);
    ASSERT_UINT_EQ(c.capacity, 50);
    config_free(&c);
}

/* A bad pipeline file: the file, the key and the value are named. */
static void test_bad_pipeline_values_are_named(void)
{
    expect_refused_file("return { capacity = 0 }", "key 'capacity': expected an integer from 1 to 10000000, or MIN..MAX for adaptive capacity, got '0'");
    expect_refused_file("return { capacity = 2.5 }", "key 'capacity': expected an integer from 1 to 10000000, or MIN..MAX for adaptive capacity, got '2.5'");
    expect_refused_file("return { capacity = { min = 8, adaptive = true } }", "key 'capacity': adaptive capacity needs max");
    expect_refused_file("return { capacity = { min = 80, max = 8, adaptive = true } }",
                        "key 'capacity': adaptive capacity's min (80) is above its max (8)");
    expect_refused_file("return { capacity = { min = 0, max = 8, adaptive = true } }",
                        "key 'capacity': adaptive capacity's min must be at least 1, got '0..8'");
    expect_refused_file("return { capacity = { min = 2.5, max = 8, adaptive = true } }",
                        "key 'capacity': expected MIN..MAX with integers from 1 to 10000000 (adaptive capacity, e.g. "
                        "8..1000), got '2.5..8'");
    expect_refused_file("return { capacity = { min = 1, max = 8 } }",
                        "key 'capacity': a table is for adaptive capacity: say adaptive = true (or give a plain integer)");
    expect_refused_file("return { capacity = { max = 8, adaptive = 'yes' } }",
                        "key 'capacity': expected { min = N, max = N, adaptive = true }, got key 'adaptive' (a string)");
    expect_refused_file("return { capacity = { adaptive = false } }",
                        "key 'capacity': adaptive = false needs max (the fixed capacity)");
    expect_refused_file("return { stats = 'yes' }", "key 'stats': expected a boolean, got string");
    expect_refused_file("return { capacity = '3' }",
                        "key 'capacity': expected an integer or a table { min =, max =, adaptive = true }, got string");
    expect_refused_file("return { input = 3 }", "key 'input': expected a path string, got number");
    expect_refused_file("return { mode = 'x' }", "key 'mode': expected 'ordered', 'unordered' or 'keyed', got 'x'");
    expect_refused_file("return { retry = 3 }", "key 'retry': expected a retry table or string, got number");
    expect_refused_file("return { retry = { max_attempts = 0 } }", "key 'retry': retry.max_attempts must be an integer >= 1");
    expect_refused_file("return { checkpoint = { every = 1 } }",
                        "key 'checkpoint': expected { dir = \"DIR\", interval_ms = N }, got key 'every'");
    expect_refused_file("return { checkpoint = { interval_ms = 0 } }",
                        "key 'checkpoint': expected a positive number of milliseconds");
    expect_refused_file("return { checkpoint = 'ck' }", "key 'checkpoint': expected a table { dir =, interval_ms = }, got string");
    expect_refused_file("return { 1 }", "settings must be named (key = value), found a number key");
    expect_refused_file("return 5", "a pipeline file must return a table of settings, got number");
    expect_refused_file("return { colour = 'red' }",
                        "unknown key 'colour' (known keys: script, input, output, mode, capacity, timeout_ms, "
                        "event_time, max_out_of_orderness_ms, stats, max_line_bytes, retry, on_error, dead_letter, "
                        "watch, tag_generation, reload_open_timeout_ms, checkpoint, checkpoint_interval_ms, "
                        "cpu_budget_ms, key, rate_limit, batch, log_format, metrics, workers)");
    /* Lua's own message for a file that does not load names the file. */
    const char *p = pipeline("return {");
    char *err = refused((char *)p, NULL);
    ASSERT(strncmp(err, p, strlen(p)) == 0);
    free(err);
}

/* Two of input, output and dead-letter naming one file are refused. */
static void test_clashing_files_are_refused(void)
{
    const char *p = pipeline("return {}");
    config c;
    config_defaults(&c);
    free(c.input);
    free(c.output);
    c.input = strdup(p);
    c.output = strdup(p);
    char *err = NULL;
    ASSERT_INT_EQ(config_check_files(&c, &err), -1);
    char want[512];
    snprintf(want, sizeof want,
             "--input %s and --output %s are the same file: writing it would destroy the input being read; "
             "give them different files", p, p);
    ASSERT_STR_EQ(err, want);
    free(err);
    free(c.output);
    c.output = strdup("-");
    ASSERT_INT_EQ(config_check_files(&c, &err), 0);
    config_free(&c);
}

static void test_rate_limit_forms_and_errors(void)
{
    config c;
    char *err = NULL;
    ASSERT_INT_EQ(parse(&c, &err, "--script", "s.lua", "--rate-limit", "0.5", NULL), 0);
    ASSERT(c.rate_rps == 0.5 && c.rate_burst == 1);
    config_free(&c);
    ASSERT_INT_EQ(parse(&c, &err, "--script", "s.lua", "--rate-limit=2500", NULL), 0);
    ASSERT(c.rate_rps == 2500 && c.rate_burst == 25); /* 10 ms worth */
    config_free(&c);
    ASSERT_INT_EQ(parse(&c, &err, "--script", "s.lua", "--rate-limit", "50:5", NULL), 0);
    ASSERT(c.rate_rps == 50 && c.rate_burst == 5);
    config_free(&c);
    const char *p = pipeline("return { script = 's.lua', rate_limit = { rps = 40, burst = 4 } }");
    ASSERT_INT_EQ(parse(&c, &err, p, NULL), 0);
    ASSERT(c.rate_rps == 40 && c.rate_burst == 4);
    config_free(&c);
    p = pipeline("return { script = 's.lua', rate_limit = '20:3' }");
    ASSERT_INT_EQ(parse(&c, &err, p, NULL), 0);
    ASSERT(c.rate_rps == 20 && c.rate_burst == 3);
    config_free(&c);
    p = pipeline("return { script = 's.lua', rate_limit = { rps = 0.25 } }");
    ASSERT_INT_EQ(parse(&c, &err, p, NULL), 0);
    ASSERT(c.rate_rps == 0.25 && c.rate_burst == 1);
    config_free(&c);
    p = pipeline("return { script = 's.lua', rate_limit = 7.5 }");
    ASSERT_INT_EQ(parse(&c, &err, p, NULL), 0);
    ASSERT(c.rate_rps == 7.5 && c.rate_burst == 1);
    config_free(&c);
    /* The flag wins over the file. */
    p = pipeline("return { script = 's.lua', rate_limit = { rps = 40 } }");
    ASSERT_INT_EQ(parse(&c, &err, p, "--rate-limit", "3:2", NULL), 0);
    ASSERT(c.rate_rps == 3 && c.rate_burst == 2);
    config_free(&c);
    static const char *const bad[] = { "0", "-1", "abc", "5:0", "5:", ":5", "1e300", "nan", "inf", "5:1.5", "5:-1",
                                       "10000001", NULL };
    for (int i = 0; bad[i]; i++) {
        err = refused((char *)"--script", "s.lua", "--rate-limit", bad[i], NULL);
        ASSERT(strstr(err, "--rate-limit") && strstr(err, "expected RPS[:BURST]") && strstr(err, bad[i]));
        free(err);
    }
    expect_refused_file("return { script = 's.lua', rate_limit = { rps = 0 } }",
                        "key 'rate_limit': expected RPS[:BURST]: RPS a number above 0 and at most 10000000 "
                        "(fractional allowed), BURST an integer from 1 to 10000000, got '0'");
    expect_refused_file("return { script = 's.lua', rate_limit = { burst = 3 } }",
                        "key 'rate_limit': expected { rps = N, burst = B }: rps is missing");
    expect_refused_file("return { script = 's.lua', rate_limit = { rps = '5' } }",
                        "key 'rate_limit': expected { rps = N, burst = B } with numbers, got string 'rps'");
    expect_refused_file("return { script = 's.lua', rate_limit = { rsp = 5 } }",
                        "key 'rate_limit': expected { rps = N, burst = B } with numbers, got key 'rsp'");
    expect_refused_file("return { script = 's.lua', rate_limit = true }",
                        "key 'rate_limit': expected a table { rps = N, burst = B }, a number or a string 'N:B', "
                        "got boolean");
}

/* "Did you mean": the edit distance (a swap of neighbours is one edit,
 * '-' and '_' are one letter) and the nearest flag or key, none when
 * nothing is near. */
static void test_did_you_mean(void)
{
    ASSERT_UINT_EQ(mw_str_distance("script", 6, "script", 6), 0);
    ASSERT_UINT_EQ(mw_str_distance("scirpt", 6, "script", 6), 1);
    ASSERT_UINT_EQ(mw_str_distance("capcity", 7, "capacity", 8), 1);
    ASSERT_UINT_EQ(mw_str_distance("event_time", 10, "event-time", 10), 0);
    ASSERT_UINT_EQ(mw_str_distance("", 0, "abc", 3), 3);
    ASSERT_STR_EQ(options_suggest_flag("scirpt", 6), "script");
    ASSERT_STR_EQ(options_suggest_flag("timeout_ms", 10), "timeout");  /* the pipeline key's spelling */
    ASSERT_STR_EQ(options_suggest_flag("rate_limit", 10), "rate-limit");
    ASSERT(options_suggest_flag("xyz", 3) == NULL);
    ASSERT(options_suggest_flag("verbose", 7) == NULL);
    ASSERT_STR_EQ(options_suggest_key("capacty"), "capacity");
    ASSERT_STR_EQ(options_suggest_key("timeout"), "timeout_ms");           /* the flag's spelling */
    ASSERT_STR_EQ(options_suggest_key("ratelimit"), "rate_limit");
    ASSERT(options_suggest_key("colour") == NULL);
    char *err = refused((char *)"--scirpt", "s.lua", NULL);
    ASSERT_STR_EQ(err, "unknown option '--scirpt' (did you mean '--script'? see moonwait --help)");
    free(err);
    err = refused((char *)"--xyz", "1", NULL);
    ASSERT_STR_EQ(err, "unknown option '--xyz' (see moonwait --help)");
    free(err);
    const char *p = pipeline("return { capacty = 3 }");
    err = refused((char *)p, "--script", "s.lua", NULL);
    char want[1024];
    snprintf(want, sizeof want, "%s: unknown key 'capacty' (did you mean 'capacity'? known keys: ", p);
    ASSERT(strncmp(err, want, strlen(want)) == 0);
    free(err);
}

/* Every row of the option table says what it does and names its value
 * (a bare flag, a boolean, has no value), so --help, `moonwait help` and
 * the man page, which print the table, say something for each. */
static void test_every_setting_has_help(void)
{
    const option *o;
    size_t i = 0;
    for (; (o = options_at(i)) != NULL; i++) {
        if (!o->help || strlen(o->help) < 20 || o->help[strlen(o->help) - 1] != '.')
            FAILF("--%s: help missing or not a sentence: '%s'", o->flag, o->help ? o->help : "(null)");
        if ((o->arg == NULL) != (o->type == OPTION_BOOL))
            FAILF("--%s: arg '%s' (a value name unless it is a bare flag)", o->flag, o->arg ? o->arg : "(null)");
    }
    ASSERT(i >= 24);
    ASSERT(options_at(i + 1) == NULL);
}

/* The text f's printer writes, malloc'd. */
static char *printed(void (*print)(FILE *))
{
    static char *text; /* (static: open_memstream keeps its address) */
    static size_t len;
    text = NULL;
    FILE *f = open_memstream(&text, &len);
    ASSERT(f != NULL);
    print(f);
    fclose(f);
    return text;
}

/* --help and the man page list every row: its flag with its value name
 * and its pipeline key; every flag a group names exists. */
static void test_help_and_man_list_every_setting(void)
{
    char *help = printed(usage_print_help), *man = printed(usage_print_man);
    const option *o;
    for (size_t i = 0; (o = options_at(i)) != NULL; i++) {
        char want[320], esc[256];
        snprintf(want, sizeof want, "\n  --%s%s%s", o->flag, o->arg ? " " : "", o->arg ? o->arg : "");
        const char *at = strstr(help, want);
        if (!at || (at[strlen(want)] != ' ' && at[strlen(want)] != '\n'))
            FAILF("--help lacks '%s'", want + 1);
        if (o->key && !strstr(help, o->key))
            FAILF("--help lacks the key '%s'", o->key);
        size_t n = 0;
        for (const char *p = o->flag; *p && n + 3 < sizeof esc; p++) {
            if (*p == '-')
                esc[n++] = '\\';
            esc[n++] = *p;
        }
        esc[n] = 0;
        snprintf(want, sizeof want, "\\-\\-%s", esc);
        if (!strstr(man, want))
            FAILF("the man page lacks '%s'", want);
    }
    for (const usage_group *g = usage_groups; g->title; g++)
        for (const char *const *f = g->flags; *f; f++)
            if (!options_by_flag(*f, strlen(*f)))
                FAILF("group '%s' lists '--%s', which is not in the table", g->title, *f);
    /* A row no group lists (one appended later) is shown under the last
     * group only. */
    const option unlisted = { "not-listed-anywhere", NULL, OPTION_BOOL, NULL, NULL, "A row no group lists." };
    const usage_group *last = usage_groups;
    while (last[1].title)
        last++;
    ASSERT(usage_in_group(last, &unlisted));
    for (const usage_group *g = usage_groups; g != last; g++)
        ASSERT(!usage_in_group(g, &unlisted));
    ASSERT(strstr(man, ".TH MOONWAIT 1") == man);
    free(help);
    free(man);
}

/* `moonwait help NAME`: by flag, --flag or key; unknown: 2. */
static void test_help_explains_one_setting(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ASSERT_INT_EQ(usage_explain(f, "capacity"), 0);
    ASSERT_INT_EQ(usage_explain(f, "--timeout"), 0);
    ASSERT_INT_EQ(usage_explain(f, "max_line_bytes"), 0);
    fclose(f);
    ASSERT(strstr(text, "--capacity N|MIN..MAX\n  pipeline key: capacity (an integer or a table") != NULL);
    ASSERT(strstr(text, "--timeout MS\n  pipeline key: timeout_ms (an integer)\n  default: 10000\n") != NULL);
    ASSERT(strstr(text, "--max-line-bytes N\n") != NULL);
    free(text);
    f = fopen("/dev/null", "w");
    ASSERT_INT_EQ(usage_explain(f, "--capcity"), 2);
    ASSERT_INT_EQ(usage_explain(f, "nothing-like-it"), 2);
    fclose(f);
}

/* The warning for a strategy that retries nothing: only a strategy that
 * retries, and only without a predicate. */
static void test_retry_without_predicate_is_said(void)
{
    op_retry_policy none = { 0 }, fixed = { 0 };
    char why[128];
    ASSERT_INT_EQ(op_retry_parse("none", &none, why, sizeof why), 0);
    ASSERT_INT_EQ(op_retry_parse("fixed:3:10", &fixed, why, sizeof why), 0);
    ASSERT(config_retry_unused(NULL, 0) == NULL);
    ASSERT(config_retry_unused(&none, 0) == NULL);
    ASSERT(config_retry_unused(&fixed, 1) == NULL);
    const char *w = config_retry_unused(&fixed, 0);
    ASSERT(w != NULL && strstr(w, "no attempt will be retried") != NULL);
}

/* --log-format and log_format: 0 unset, 1 text, 2 json; the flag over the key. */
static void test_log_format(void)
{
    config c;
    char *err = NULL;
    ASSERT_INT_EQ(parse(&c, &err, "--script", "s.lua", NULL), 0);
    ASSERT_INT_EQ(c.log_format, 0);
    config_free(&c);
    const char *p = pipeline("return { script = 's.lua', log_format = 'json' }");
    ASSERT_INT_EQ(parse(&c, &err, (char *)p, NULL), 0);
    ASSERT_INT_EQ(c.log_format, 2);
    config_free(&c);
    ASSERT_INT_EQ(parse(&c, &err, (char *)p, "--log-format", "text", NULL), 0);
    ASSERT_INT_EQ(c.log_format, 1);
    config_free(&c);
    err = refused("--script", "s.lua", "--log-format", "JSON", NULL);
    ASSERT_STR_EQ(err, "option '--log-format': expected 'text' or 'json', got 'JSON'");
    free(err);
}

/* --metrics HOST:PORT: the address and port apart; [IPv6]; localhost;
 * port 0; the pipeline key; what is refused, naming the flag. */
static void test_metrics_address(void)
{
    config c;
    char *err = NULL;
    static const struct { const char *v, *host; int port; } good[] = {
        { "127.0.0.1:9090", "127.0.0.1", 9090 }, { "0.0.0.0:0", "0.0.0.0", 0 }, { "[::1]:65535", "::1", 65535 },
        { "localhost:80", "127.0.0.1", 80 },     { "[::]:1", "::", 1 },
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        ASSERT_INT_EQ(parse(&c, &err, "--script", "s.lua", "--metrics", good[i].v, NULL), 0);
        ASSERT_STR_EQ(c.metrics, good[i].v);
        ASSERT_STR_EQ(c.metrics_host, good[i].host);
        ASSERT_INT_EQ(c.metrics_port, good[i].port);
        config_free(&c);
    }
    const char *p = pipeline("return { script = 's.lua', metrics = '127.0.0.1:9100' }");
    ASSERT_INT_EQ(parse(&c, &err, p, NULL), 0);
    ASSERT_INT_EQ(c.metrics_port, 9100);
    config_free(&c);
    static const char *const bad[] = { "", "9090", "127.0.0.1", "127.0.0.1:", ":9090", "127.0.0.1:65536",
                                       "127.0.0.1:-1", "127.0.0.1:x", "example.com:80", "::1:9090", "[::1]", "[::1]9090",
                                       "[127.0.0.1:80", "1.2.3:80", "127.0.0.1:80:80", NULL };
    for (int i = 0; bad[i]; i++) {
        char *e = refused((char *)"--script", "s.lua", "--metrics", bad[i], NULL);
        if (!strstr(e, "--metrics") || !strstr(e, "expected HOST:PORT"))
            FAILF("'%s': %s", bad[i], e);
        free(e);
    }
}

TEST_MAIN("config", T(test_log_format), T(test_metrics_address), T(test_retry_without_predicate_is_said), T(test_every_setting_has_help), T(test_help_and_man_list_every_setting),
          T(test_help_explains_one_setting), T(test_did_you_mean), T(test_defaults), T(test_rate_limit_forms_and_errors), T(test_every_pipeline_key_takes_effect),
          T(test_remaining_pipeline_forms_take_effect), T(test_every_flag_takes_effect),
          T(test_flag_overrides_pipeline_file), T(test_mode_flag_takes_the_files_key), T(test_retry_precedence_flag_pipeline_script),
          T(test_bad_flag_values_are_named), T(test_adaptive_capacity_flag_and_key), T(test_bad_command_lines_are_named),
          T(test_bad_pipeline_values_are_named), T(test_clashing_files_are_refused))
