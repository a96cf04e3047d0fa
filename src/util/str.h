/*
 * str.h: small string helpers both sides may use (libc only): a malloc'd
 * printf, and a strict decimal reader for the numbers of flags and option
 * strings.
 */
#ifndef MW_STR_H
#define MW_STR_H

#include <stddef.h>
#include <stdint.h>

/* printf into a malloc'd string (the caller frees it), or NULL when out of
 * memory. */
char *mw_str_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Read s as a decimal integer from 0 to max: not empty, no sign, nothing
 * after the digits (leading white space is skipped, as strtoull does). 0
 * with *out set, or -1 (*out unchanged). */
int mw_str_u64(const char *s, uint64_t max, uint64_t *out);

/* The edit distance between a[0..an) and b[0..bn): insertions, deletions,
 * substitutions and swaps of two neighbours count 1 each ("optimal string
 * alignment"); '-' and '_' are the same letter, so a pipeline key's
 * spelling of a flag is no mistake. Names longer than 63 bytes are
 * compared by their first 63. For "did you mean". */
size_t mw_str_distance(const char *a, size_t an, const char *b, size_t bn);

#endif
