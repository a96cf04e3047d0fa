/*
 * pipeline.h: one run. Wires the source (io/input), the operator core
 * (op/op), the script (lua/script) and the sink (io/output) on one libuv
 * loop, and owns the timers for timeouts and --stats.
 *
 * This is the only file that knows all four; they do not know each other.
 */
#ifndef MW_PIPELINE_H
#define MW_PIPELINE_H

#include "config.h"

/* Run the pipeline described by `c` to the end. Returns the process exit
 * status: 0 (input ended, everything emitted), 1 (the run failed), 2 (the
 * script did not load or the input/output could not be opened). */
int pipeline_run(const config *c, const char *lua_dir);

#endif
