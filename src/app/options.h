/*
 * options.h: every `moonwait run` setting, declared once: its flag, its
 * pipeline-file key, the type of value it takes, and the setter that
 * validates a value and stores it in a config. The command line (config.c)
 * and the pipeline file (pipefile.c) both read this one table, so a flag
 * and its key cannot drift apart.
 */
#ifndef MW_OPTIONS_H
#define MW_OPTIONS_H

#include <stddef.h>

#include "config.h"

typedef enum {
    OPTION_STRING,
    OPTION_PATH,  /* a string; in the pipeline file, relative to its directory */
    OPTION_INT,
    OPTION_BOOL,  /* a flag without a value means true */
    OPTION_RETRY, /* the flag's string form, or (pipeline only) a table */
    OPTION_CKPT,  /* the pipeline's `checkpoint = { dir =, interval_ms = }` */
    OPTION_CAPACITY, /* an integer, "MIN..MAX" (adaptive), or (pipeline only)
                      * `{ min =, max =, adaptive = true }` */
    OPTION_RATE,  /* "N[:B]", a number, or (pipeline only) `{ rps = N, burst = B }` */
    OPTION_BATCH, /* the flag's integer, or (pipeline only) `batch = { max_size =, max_wait_ms =, key = }` */
} option_type;

/* Validate the text form of a value and store it in c. 0, or -1 with why
 * it was refused in why (the caller adds which flag or key). */
typedef int (*option_setter)(config *c, const char *v, char *why, size_t whylen);

typedef struct option {
    const char *flag;  /* without "--" */
    const char *key;   /* pipeline key, or NULL (a flag whose key is a field of another's table) */
    option_type type;
    option_setter set;
    const char *arg;   /* the value's name in --help ("MS", "FILE"), NULL for a bare flag */
    const char *help;  /* what it does, for --help, `moonwait help FLAG` and the man page */
} option;

/* The i-th setting in table order, or NULL past the last: for --help, `moonwait
 * help` and the man page (usage.c), which list every row without knowing them. */
const option *options_at(size_t i);

/* The setting of flag name[0..n) (without "--"), or NULL. */
const option *options_by_flag(const char *name, size_t n);

/* The setting of pipeline key `key`, or NULL. */
const option *options_by_key(const char *key);

/* "Did you mean": the flag (without "--") or the pipeline key nearest to
 * name[0..n), or NULL when none is near enough (an edit distance of at
 * most a third of the name's length, at least 1; a pipeline key's spelling
 * of a flag, timeout_ms for --timeout, is near too). */
const char *options_suggest_flag(const char *name, size_t n);
const char *options_suggest_key(const char *name);

/* Every pipeline key, comma-separated, in table order, into out. */
void options_keys(char *out, size_t n);

/* What a pipeline value of type t must be ("an integer", ...). */
const char *options_want(option_type t);

#endif
