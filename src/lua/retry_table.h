/*
 * retry_table.h: read a retry strategy written as a Lua table, the form
 * shared by the pipeline file (`retry = {...}`) and the script (`M.retry`):
 *   { max_attempts = 5, backoff = "fixed", delay_ms = 100 }
 *   { max_attempts = 5, backoff = "exponential", initial_delay_ms = 10,
 *     max_delay_ms = 1000, multiplier = 2, jitter = "none" | "full" }
 *   { backoff = "none" }
 */
#ifndef MW_RETRY_TABLE_H
#define MW_RETRY_TABLE_H

#include <lua.h>
#include <stddef.h>

#include "../util/retry_policy.h"

/* Returns 0, or -1 with a message naming the bad field in err. */
int retry_table_parse(lua_State *L, int idx, retry_policy *p, char *err, size_t errlen);

#endif
