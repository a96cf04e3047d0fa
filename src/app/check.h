/*
 * check.h: `moonwait check`, which loads a script the way a run does (its
 * main chunk runs, its module's contract is checked) without reading any
 * input. Called by main.c.
 */
#ifndef MW_CHECK_H
#define MW_CHECK_H

/* Load the script at `path` (shipped modules in `lua_dir`) and close it.
 * Its main chunk runs under the run's default CPU budget (1000 ms), so a
 * spinning one cannot hang `check`. The exit status: 0 (printed "FILE:
 * ok") or 2 (the error printed). */
int check_script(const char *path, const char *lua_dir);

#endif
