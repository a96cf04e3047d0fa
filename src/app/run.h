/*
 * run.h: one run of a pipeline, from opening its source and sinks to the
 * last handle closed. main.c's only way in.
 */
#ifndef MW_RUN_H
#define MW_RUN_H

#include "config.h"

/* Run the pipeline described by `c` to the end. Returns the process exit
 * status: 0 (input ended, everything emitted), 1 (the run failed), 2 (the
 * script did not load or the input/output could not be opened), 128 + n
 * (stopped by signal n after its checkpoint was written, or SIGPIPE). */
int run_pipeline(const config *c, const char *lua_dir);

#endif
