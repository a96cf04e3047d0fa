/*
 * usage.h: what moonwait says about itself: --help, `moonwait help NAME`
 * and the man page, all three generated from the option table
 * (options.c) that the parser reads, so a setting cannot be parsed and
 * missing from them. The parts that are not settings (commands, exit
 * statuses, environment) are one static text each, shared by the three.
 * Called by main.c.
 */
#ifndef MW_USAGE_H
#define MW_USAGE_H

#include <stdio.h>

#include "options.h"

/* The whole --help text: commands, every setting of the table grouped
 * (flag, value name, pipeline key, help), exit statuses, environment. */
void usage_print_help(FILE *f);

/* `moonwait help NAME`: one setting, named by its flag (with or without
 * "--") or its pipeline key, or one command ("run", "check"): its flag,
 * value, pipeline key and the pipeline value's type, default and help.
 * 0, or 2 after saying on stderr that NAME is unknown (with "did you
 * mean" when a setting is near). */
int usage_explain(FILE *f, const char *name);

/* The man page (roff, man(7) macros) from the same table and texts. */
void usage_print_man(FILE *f);

/* The section a flag is listed under in --help and the man page; a flag
 * in none of the listed groups (a row added to the table later) goes to
 * the last ("Observing the run, other settings"). Exposed for the unit test that every listed
 * flag exists. NULL-terminated; `flags` too. */
typedef struct usage_group {
    const char *title;
    const char *const *flags;
} usage_group;
extern const usage_group usage_groups[];

/* Whether option o is shown under group g (listed there, or listed
 * nowhere and g is the last group). */
int usage_in_group(const usage_group *g, const option *o);

#endif
