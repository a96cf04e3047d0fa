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

/* vm.c, the steps of script_load (vet.c takes them one by one): a fresh VM
 * with the host modules and host.lua's policy (moonwait.host left at
 * *host on the stack); the module at index `mod` checked and its hooks
 * taken; the end of the load. Each 0, or -1 with *err (malloc'd, NULL =
 * out of memory). */
int script_vm_open(script *sc, uv_loop_t *loop, const char *path, const char *lua_dir, int *host, char **err);
int script_take_module(script *sc, int host, int mod, char **err);
int script_load_done(script *sc, char **err);

/* invoke.c: push a record's ctx table (seq, line, attempt, deadline when
 * deadline_ms > 0, in rt_now seconds; last_error when non-NULL) with the
 * ctx metatable. */
void script_push_ctx(script *sc, lua_State *L, const script_call *a);
/* ctx's field names (NULL-terminated), interned at [1..] of the ctx
 * metatable (vm.c) for script_push_ctx. */
extern const char *const script_ctx_keys[];

/* result.c: turn `what`'s results (values from index base to the top of
 * sc's main stack) into newline-terminated JSON lines; tables of the
 * record's `doc` keep their original bytes where unchanged. Returns 0 with
 * *out (malloc'd, NULL for no records) and *outlen, or -1 with *err
 * (malloc'd). Pops the results. */
int script_encode_results(script *sc, const char *what, int base, codec_doc *doc, char **out, size_t *outlen,
                          char **err);

/* invoke.c: an attempt's outcome is known (a batch's record, batch.c):
 * report it, or first run the retry predicate that applies in a fiber of
 * its own, as for async_invoke. Takes `out` and the malloc'd err and
 * errmsg (NULL when ok); outputs_ref is a registry ref to the outputs
 * table for retry_on_result (taken), or LUA_NOREF. */
/* `field` ("a.b.c") split on '.', NULL-terminated (malloc'd; free with
 * script_path_free), or NULL (an empty part, or out of memory). */
char **script_path_split(const char *field);

void script_attempt_ended(script *sc, const script_call *a, int ok, char *out, size_t len, char *err, char *errmsg,
                          int outputs_ref, uint32_t overloads);

/* vm.c: push a ctx.remaining_ms function counting down to deadline_ms
 * (loop ms, 0 = none): a batch's ctxs each carry their record's own. */
void script_push_remaining_ms(lua_State *L, uint64_t deadline_ms);

/* ctx's __index (ctx.c): remaining_ms, overloaded, defer, log on access;
 * its upvalue is the script. */
int script_ctx_index(lua_State *L);

/* batch.c: script_invoke for a batching script: `rec` joins the pending
 * batch of its key (ownership passes). */
void script_batch_add(script *sc, script_rec *rec, const script_call *a);

/* batch.c: drop every pending batch and close the timer (script_close,
 * before the VM closes). */
void script_batch_close(script *sc);

#endif
