/*
 * pipefile.h: the pipeline file: Lua returning a table of settings, run in
 * a throwaway VM (not the script's), each key applied through the option
 * table (options.h). Paths in it are relative to the file's directory.
 */
#ifndef MW_PIPEFILE_H
#define MW_PIPEFILE_H

#include "config.h"

/* Apply the settings of the pipeline file at `path` to c. 0, or -1 with a
 * malloc'd message naming the file and the key in *err. */
int pipefile_load(config *c, const char *path, char **err);

#endif
