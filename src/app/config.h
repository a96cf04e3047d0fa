/*
 * config.h: the run settings, from the pipeline file and the command line.
 *
 * A pipeline file is Lua returning a table of settings; it is evaluated in
 * a throwaway VM (not the script's). Flags override it; both override the
 * script's own M.retry (config_retry). Every error names the flag or the
 * pipeline key it is about. Used by src/app/main.c (parsing, file checks)
 * and the host (the settings).
 */
#ifndef MW_CONFIG_H
#define MW_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "../lua/batch.h"
#include "../op/op.h"
#include "../op/retry.h"

/* What happens to a record that failed for good. */
typedef enum { ON_ERROR_FAIL = 0, ON_ERROR_SKIP, ON_ERROR_DEAD_LETTER } on_error_mode;

typedef struct config {
    char *pipeline;          /* pipeline file, or NULL */
    char *script;            /* required */
    char *input;             /* "-" = stdin */
    char *output;            /* "-" = stdout */
    op_mode mode;
    size_t capacity;         /* fixed; adaptive: the starting limit (= cap_min) */
    int adaptive;            /* adaptive capacity between cap_min and cap_max */
    size_t cap_min, cap_max;
    uint64_t timeout_ms;     /* 0 = none */
    char *event_time;        /* field path, or NULL */
    int64_t max_ooo_ms;      /* max out-of-orderness */
    int has_max_ooo;
    int stats;
    size_t max_line;         /* longest accepted input line, bytes */
    op_retry_policy retry;   /* from flag or pipeline; retry.set = 0 if neither */
    on_error_mode on_error;
    char *dead_letter;       /* dead-letter file, or NULL */
    int watch;               /* reload when the script or its modules change */
    char *tag_generation;    /* tag outputs with their generation in this field */
    uint64_t reload_open_timeout_ms; /* time limit for a new generation's open() */
    char *checkpoint_dir;    /* exactly-once checkpoints, or NULL */
    uint64_t checkpoint_interval_ms;
    uint64_t cpu_budget_ms;  /* longest a script may run without yielding; 0 = off */
    char *key;               /* --mode keyed: the key field's path, or NULL */
    double rate_rps;         /* rate_limit: attempts started per second; 0 = no limit */
    double rate_burst;       /* ... and the most started at once (>= 1 when rps is set) */
    batch_opts batch;        /* --batch-size/-wait/-key and `batch = {...}`, field by field */
    int log_format;          /* --log-format: 0 not set (MOONWAIT_LOG_FORMAT, else text),
                              * else 1 + util/log.h's mw_log_format */
    char *metrics;           /* --metrics HOST:PORT as given, or NULL: no endpoint */
    char *metrics_host;      /* ... its numeric address (brackets of IPv6 removed) */
    int metrics_port;        /* ... and port (0: the kernel picks one) */
    int workers;             /* threads running the script, 1..WORKERS_MAX (1: the loop's own) */
} config;

/* The most --workers. */
#define WORKERS_MAX 64

/* Defaults: stdin, stdout, ordered, capacity 100, timeout 10000 ms,
 * max line 16 MiB, reload open timeout 10000 ms, checkpoint interval
 * 1000 ms, CPU budget 1000 ms. */
void config_defaults(config *c);

/* Parse `moonwait run` arguments (argv[0] is "run"): the pipeline file
 * (the one positional argument), then every flag over it, then the rules
 * that span settings. A flag is "--name VALUE" or "--name=VALUE"; a boolean
 * flag alone means true. Returns 0, or -1 with a malloc'd message naming
 * the flag or the pipeline key in *err. */
int config_parse_run(config *c, int argc, char **argv, char **err);

/* Refuse files that would clobber each other: --input, --output and
 * --dead-letter naming the same existing regular file (compared by device
 * and inode, so through symlinks, hard links and "-" for stdin/stdout too).
 * An output that does not exist yet cannot clash. Returns 0, or -1 with a
 * malloc'd message naming both flags in *err. */
int config_check_files(const config *c, char **err);

/* The retry strategy records run under: the flag's or the pipeline file's
 * (c->retry; the flag, applied last, wins) over the script's M.retry
 * (`script`, may be NULL or unset); NULL when no source set one. A source
 * that says "none" counts: it overrides the ones below it. */
const op_retry_policy *config_retry(const config *c, const op_retry_policy *script);

/* A retry strategy that can retry nothing: `policy` (config_retry's)
 * schedules attempts, but a strategy only schedules the attempts a
 * predicate asks for, and the script defines neither retry_on_error nor
 * retry_on_result (has_predicate = 0). The warning's text (static, without
 * the script's name), or NULL when there is nothing to say. Said by each
 * load (reload.c) and by `moonwait check`. */
const char *config_retry_unused(const op_retry_policy *policy, int has_predicate);

/* The batch settings a batching script runs under, field by field: a
 * flag over the pipeline file (c->batch; the flag, applied last, wins)
 * over the script's M.batch (`script`, may be NULL) over the defaults
 * (100 records, 5 ms, no key). *key is borrowed from c or script. */
void config_batch(const config *c, const batch_opts *script, uint32_t *max_size, uint64_t *max_wait_ms,
                  const char **key);

void config_free(config *c);

#endif
