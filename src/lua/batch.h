/*
 * batch.h: the settings of batching across records (batch.c): how many
 * records a batch holds at most, how long a batch waits to fill after its
 * first record, and the record field whose value splits batches. The
 * same limits serve the flags (src/app/options.c), the pipeline file's
 * `batch = {...}` and the script's own `M.batch` (read in vm.c), so the
 * three cannot disagree about what is valid.
 */
#ifndef MW_BATCH_H
#define MW_BATCH_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#define BATCH_MAX_SIZE 100000           /* max_size from 1 to this */
#define BATCH_MAX_WAIT_MS 3600000       /* max_wait_ms from 0 to this */
#define BATCH_DEFAULT_SIZE 100
#define BATCH_DEFAULT_WAIT_MS 5

/* One source's batch settings: each field counts only when its has_ flag
 * is set (a flag over the pipeline file over M.batch, field by field). */
typedef struct batch_opts {
    int has_size, has_wait, has_key;
    uint32_t max_size;
    uint64_t max_wait_ms;
    char *key; /* a field name or dotted path (owned), when has_key */
} batch_opts;

/* A batch key must be a field name or a dotted path "a.b": 0, or -1 with
 * why in err. */
int batch_key_check(const char *key, char *err, size_t errlen);

void batch_opts_free(batch_opts *o);

/* Read M.batch, the table at idx of L, into o (a field at a time, so an
 * error names it). 0, or -1 with why. */
int script_batch_read(lua_State *L, int idx, batch_opts *o, char *why, size_t whylen);

#endif
