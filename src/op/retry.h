/*
 * retry.h: retry strategies (Flink's AsyncRetryStrategy), in plain C.
 *
 * max_attempts counts every call, the first included: max_attempts = 3 means
 * at most 3 calls (Flink allows maxAttempts retries after the first call, one
 * more than this; we deliberately count calls).
 * Delay before attempt a+1, after attempt a failed or asked for a retry:
 *   fixed:        delay_ms
 *   exponential:  min(initial_ms * multiplier^(a-1), max_ms)
 * With full jitter the delay is uniform in [0, that delay].
 */
#ifndef MW_RETRY_H
#define MW_RETRY_H

#include <stddef.h>
#include <stdint.h>

#include "../util/retry_policy.h"

/* The policy itself (plain data, shared with the Lua adapter). */
typedef retry_policy op_retry_policy;

/* The back-off before attempt `done_attempt + 1`; `rnd` in [0, 1) is used
 * only with full jitter. */
uint64_t op_retry_delay(const op_retry_policy *p, uint32_t done_attempt, double rnd);

/* Parse the flag form: "none", "fixed:ATTEMPTS:DELAY_MS",
 * "exponential:ATTEMPTS:INITIAL_MS:MAX_MS:MULTIPLIER[:full]".
 * Returns 0, or -1 with a message in err. */
int op_retry_parse(const char *spec, op_retry_policy *p, char *err, size_t errlen);

/* Check the fields of a policy built from a table. 0 or -1 with err. */
int op_retry_validate(const op_retry_policy *p, char *err, size_t errlen);

#endif
