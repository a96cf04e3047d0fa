/*
 * check.h: `moonwait check`, which runs the checks it can without input:
 * the script loaded the way a run loads it (its main chunk runs under the
 * CPU budget, its module's contract is checked) and more (globals written
 * inside functions, near-miss hook names), a pipeline file's keys, and
 * what the two say together. Called by main.c.
 */
#ifndef MW_CHECK_H
#define MW_CHECK_H

/* Check the script at `path` (shipped modules in `lua_dir`) and, when
 * `pipeline` is not NULL, the pipeline file (read as `run PIPELINE
 * --script path` would: `path` replaces its script key). Prints each check
 * and its result on stdout, then "FILE: ok (...)" or "FILE: FAILED: ...".
 * The script's main chunk runs under the pipeline's --cpu-budget, else
 * the default 1000 ms, so a spinning one cannot hang `check`. The exit
 * status: 0 (every check passed; warnings allowed) or 2. */
int check_script(const char *path, const char *pipeline, const char *lua_dir);

#endif
