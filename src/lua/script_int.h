/*
 * script_int.h: what the files of the script adapter share with each other
 * (vm.c, record.c, invoke.c, result.c, hooks.c); not for use outside
 * them. The public contract is script.h.
 */
#ifndef MW_SCRIPT_INT_H
#define MW_SCRIPT_INT_H

#include "script.h"

/* vm.c: lua_pcall of the function below `nargs` args with a traceback
 * handler, as one CPU-budget entry (an entry that ran out of budget
 * reports the budget's message, whatever the script made of the error).
 * Returns lua_pcall's code; the results or the message are on L. */
int script_pcall(lua_State *L, int nargs, int nres);

/* invoke.c: push a record's ctx table (seq, line, attempt, deadline when
 * deadline_ms > 0, in rt_now seconds; last_error when non-NULL) with the
 * ctx metatable. */
void script_push_ctx(script *sc, lua_State *L, const script_call *a);

/* result.c: turn `what`'s results (values from index base to the top of
 * sc's main stack) into newline-terminated JSON lines; tables of the
 * record's `doc` keep their original bytes where unchanged. Returns 0 with
 * *out (malloc'd, NULL for no records) and *outlen, or -1 with *err
 * (malloc'd). Pops the results. */
int script_encode_results(script *sc, const char *what, int base, codec_doc *doc, char **out, size_t *outlen,
                          char **err);

#endif
