/*
 * script.h: a loaded user script in its own VM (one "generation").
 *
 * Owns the rt (VM + scheduler), the record codec (codec.h) used to read and
 * write records, and refs to the script's functions. The host (src/app:
 * task.c per record, reload.c per generation) calls it to parse input
 * lines, to start async_invoke for a record, to run on_timeout, open and
 * close. Results come back as encoded JSON lines in a malloc'd buffer, or
 * as an error message; no Lua value crosses this interface, and none waits
 * on the VM's main stack between two calls: a parsed record is an explicit
 * handle (script_rec) that its owner passes on or frees.
 *
 * The clock. Every deadline given here is in whole milliseconds on the
 * loop's clock (uv_now of the loop the script was loaded on), which is the
 * operator's clock (op.h: the host passes uv_now as cb.now), so the host
 * passes an operator entry's deadline as it is. That one value is the
 * record's deadline on the Lua side: the fiber's I/O bounds (rt_wait_ms)
 * and ctx.remaining_ms() count down to it (remaining_ms takes the deadline
 * of the call running when it is read: the fiber's, or on_timeout's), and
 * ctx.deadline is the same moment in time.now() seconds, for display only
 * (rt_wall_secs).
 *
 * Implemented by vm.c (load, close, files to watch), record.c (input lines
 * in), invoke.c (attempts and retry predicates), result.c (results out) and
 * hooks.c (open, close, on_timeout, reload state); script_int.h is what
 * they share.
 */
#ifndef MW_SCRIPT_H
#define MW_SCRIPT_H

#include <stddef.h>
#include <lauxlib.h>
#include <stdint.h>
#include <uv.h>

#include "../util/buf.h"
#include "../util/retry_policy.h"
#include "batch.h"
#include "codec.h"
#include "runtime.h"

typedef struct script script;

/* How one attempt (or a hook) ended. */
typedef struct script_result {
    int ok;              /* the call succeeded */
    char *out;           /* ok: newline-terminated JSON lines (may be NULL); the
                          * callee takes ownership */
    size_t len;
    const char *err;     /* !ok: the message with its traceback */
    const char *errmsg;  /* !ok: the message alone (what retry_on_error saw) */
    int retry;           /* retry_on_result / retry_on_error said true */
    unsigned overloads;  /* overload signals the attempt gave (an HTTP 429/503,
                          * ctx.overloaded()), its children's included */
} script_result;

/* The caller's per-record state (src/app's task): opaque here, handed
 * back with the record's outcome. */
struct task;

/* A record's attempt ended: once per script_invoke, unless its fiber was
 * discarded first (then never). `r` and its strings are valid during the
 * call only (except r->out, which the callee takes). */
typedef void (*script_record_fn)(void *ud, struct task *t, script_result *r);

/* An open or close hook ended: once per script_run_hook that started
 * one, unless its fiber was discarded first. `r` as above (r->out is
 * always NULL). */
typedef void (*script_hook_fn)(void *ud, script_result *r);

/* A parsed record, not yet invoked: its codec doc, which carries the
 * decoded table (anchored by the doc's registry ref, so nothing waits on a
 * Lua stack). Recycled with the codec's docs: no allocation per record. */
typedef struct codec_doc script_rec;

/* A record's place in a batch (batch.c): opaque to the host. */
typedef struct script_item script_item;

/* One attempt of a record (script_invoke). */
typedef struct script_call {
    struct task *task;      /* reported back through the record callback */
    rt_fiber **fiber_slot;  /* always holds the fiber running the attempt (or
                             * its retry predicate); see script_invoke */
    script_item **item_slot; /* a batching script: holds the record's place in
                             * its batch while it waits in one or the batch
                             * runs (NULL after); see script_batch_leave */
    uint64_t seq, line;     /* ctx.seq, ctx.line */
    int attempt;            /* ctx.attempt, from 1 */
    uint64_t deadline_ms;   /* the record's deadline on the loop's clock, 0 = none */
    const char *last_error; /* ctx.last_error, or NULL (copied if kept) */
    const char *source_id;  /* ctx.source_id (a broker's entry id), or NULL;
                             * valid while the record lives */
    uint32_t deliveries;    /* ctx.deliveries when source_id is set */
} script_call;

typedef struct script_parsed {
    int is_watermark;
    int64_t watermark;
    int has_ts;        /* an event-time field was configured and read */
    int64_t ts;
    uint64_t key;      /* keyed mode: the key field's hash, or SCRIPT_NO_KEY */
} script_parsed;

/* The key of a record whose key field is missing or null (and of every
 * record when no key field is set): the operator's OP_NO_KEY. */
#define SCRIPT_NO_KEY 0

struct script {
    rt rt;
    char *path;             /* script file as given */
    char **ts_path;         /* event-time field path, split on '.'; NULL if none */
    char **key_path;        /* keyed mode's key field path, likewise */
    uint64_t key_k0, key_k1; /* the SipHash key of record keys (script_set_key) */
    codec codec;            /* records <-> Lua values */
    int invoke_ref, timeout_ref, open_ref, close_ref; /* LUA_NOREF if absent */
    int on_result_ref, on_error_ref; /* retry predicates; LUA_NOREF if absent */
    int batch_ref;          /* batch_invoke, LUA_NOREF if absent */
    batch_opts batch;       /* M.batch as the script wrote it */
    struct batcher *batcher; /* a batching script's batches (batch.c), or NULL */
    retry_policy retry;     /* M.retry (retry.set = 0 if absent) */
    int ctx_mt_ref;         /* metatable of ctx tables */
    int ctx_keys_ref;       /* ctx's field names, interned (invoke.c) */
    int module_ref;         /* the script's module table */
    int generation;         /* hot-reload generation number (1 = first load) */
    char *tag_field;        /* --tag-generation: set this field on outputs (owned) */
    int previous_ref;       /* ctx.previous for open (decoded export), or LUA_NOREF */
    uint64_t sync_deadline_ms; /* while on_timeout runs (no fiber): its record's
                                * deadline, for ctx.remaining_ms() */
    script_record_fn record_done; /* where attempts end (script_on_done) */
    void *record_ud;
    script_hook_fn hook_done; /* where the running hook ends (script_run_hook) */
    void *hook_ud;
};

/* Load `path` into a fresh VM. `lua_dir` holds the shipped modules
 * (moonwait/host.lua). On failure returns -1 and sets *err to a malloc'd
 * "file:line: message"; the caller still closes it with script_close when
 * script_is_open() says a VM was made. */
int script_load(script *sc, uv_loop_t *loop, const char *path, const char *lua_dir, char **err);
/* The same for generation `generation` (script_load: 1) on --workers'
 * worker `worker` (1..N; 0: one worker, none named), which its log lines
 * and ctx.worker carry from the first line of its main chunk on. */
int script_load_gen(script *sc, uv_loop_t *loop, const char *path, const char *lua_dir, int generation, int worker,
                    char **err);

/* `moonwait check`: load `path` as script_load does, one check at a time,
 * reporting each (`check` names what was checked, `detail` says why it
 * failed or warns, or is NULL; both valid during the call only): the file
 * reads, compiles, its main chunk runs, returns within the CPU budget (the
 * caller started the guard) and writes no global, no function of it
 * assigns an undeclared global, then host.lua's contract list, M.batch and
 * M.retry. Returns 0 when every check passed and sc is loaded as by
 * script_load, or -1 (as script_load, close sc when script_is_open()). */
typedef enum { SCRIPT_VET_OK, SCRIPT_VET_FAIL, SCRIPT_VET_WARN } script_vet_status;
typedef void (*script_vet_fn)(void *ud, script_vet_status st, const char *check, const char *detail);
int script_vet(script *sc, uv_loop_t *loop, const char *path, const char *lua_dir, script_vet_fn report, void *ud);

/* Configure the event-time field ("a.b.c"). Returns 0 or -1 (bad path). */
int script_set_event_time(script *sc, const char *field);

/* Configure keyed mode's key field ("a.b.c"): script_parse then gives each
 * record's key as a 64-bit SipHash, keyed from `seed`, of the field's
 * canonical value: a string by its decoded text, a number by its value
 * (integers exactly: 1 and 1.0 are one key), true and false; each type
 * apart ("1" is not 1). A missing or null field is SCRIPT_NO_KEY; an object
 * or an array makes the line malformed (script_parse fails naming the
 * field). Every generation of a run must get the same seed, so keys agree
 * across a reload. Returns 0 or -1 (bad path). */
int script_set_key(script *sc, const char *field, uint64_t seed);

/* The key of `line` as script_parse would give it, without decoding the
 * record (a restored record's key): 0 with *key (SCRIPT_NO_KEY when no key
 * field is set), or -1 when the line does not parse or its key is refused. */
int script_key(script *sc, const char *line, size_t len, uint64_t *key);

/* Free a split field path (NULL: nothing). */
void script_path_free(char **path);

/* Where the outcome of every record's attempt is reported. */
void script_on_done(script *sc, script_record_fn done, void *ud);

/* Decode one input line (strict JSON, one object). On success returns 0
 * and fills *p; for a record (not a watermark) *rec is the decoded record,
 * owned by the caller until it passes it to script_invoke or frees it with
 * script_rec_free (before script_close); for a watermark *rec is NULL.
 * `line` must stay valid and unchanged until that record's attempt has
 * ended (its untouched values are written from it). On a malformed line
 * returns -1 with a message in err (*rec NULL). */
int script_parse(script *sc, const char *line, size_t len, script_parsed *p, script_rec **rec, char *err,
                 size_t errlen);

/* script_parse without building the record: what the line is (a
 * watermark, its event time, its key), or -1 with err for a malformed
 * line, exactly as script_parse says it. Where the record's attempt runs
 * on another worker's VM (--workers), the main thread needs only this. */
int script_classify(script *sc, const char *line, size_t len, script_parsed *p, char *err, size_t errlen);

/* The record of the line script_classify read last (a record, not a
 * watermark), without reading it again: script_parse's *rec. Only right
 * after that script_classify, before anything else parses on sc. */
script_rec *script_build(script *sc);

/* Decode `line` again for another attempt: 0 with *rec as script_parse
 * gives it (`line` must stay valid as there), or -1 (it parsed before, so
 * only on out of memory). */
int script_reparse(script *sc, const char *line, size_t len, script_rec **rec);

/* A copy of the tape script_classify read last (a record's), for another
 * thread's VM to build the record from without parsing the line again
 * (script_rebuild): --workers' main thread classifies every line, and a
 * second parse on the worker was ~3,000 instructions a record
 * (BENCHMARKS.md). Owned by the caller; NULL when out of memory. Any
 * thread may free it (script_tape_free; NULL: nothing). */
typedef struct script_tape script_tape;
script_tape *script_tape_keep(const script *sc);
void script_tape_free(script_tape *tp);

/* script_reparse from tp (script_tape_keep's copy of `line`'s tape, used
 * and left to the caller), not from the text. */
int script_rebuild(script *sc, const char *line, size_t len, const script_tape *tp, script_rec **rec);

/* Drop a parsed record that will not be invoked (NULL: nothing). */
void script_rec_free(script *sc, script_rec *rec);

/* Start async_invoke(record, ctx) on `rec` (ownership passes: it lives as
 * long as the attempt), then the retry predicate that applies
 * (retry_on_result after a success, retry_on_error after a failure), each
 * in a fiber. `*call->fiber_slot` always holds the fiber running now (set
 * before it starts: it may end before this returns); the outcome is
 * reported once through the record callback with call->task. */
void script_invoke(script *sc, script_rec *rec, const script_call *call);

/* Batching (batch.c). A script with batch_invoke is a batching script:
 * script_invoke then puts the attempt into the pending batch of its key
 * (an item, whose place *call->item_slot holds) instead of starting a
 * fiber; a batch starts when it holds max_size records, max_wait_ms after
 * its first one, or at script_batch_flush, as one fiber running
 * batch_invoke(records, ctxs); each record's outcome is reported through
 * the record callback as for async_invoke (retry predicates per record, in
 * a fiber of its own, which *call->fiber_slot then holds). */
static inline int script_batches(const script *sc) { return sc->batch_ref != LUA_NOREF; }

/* The settings batches use from now on (max_size >= 1, key NULL for none;
 * copied). 0, or -1 on out of memory or a bad key path. */
int script_batch_configure(script *sc, uint32_t max_size, uint64_t max_wait_ms, const char *key);

/* Start every pending batch at the end of this loop turn, not waiting
 * for max_wait_ms (no more records are coming soon). */
void script_batch_flush(script *sc);

/* No new record will come to this script (a reload made another
 * generation current): its pending batches, and those its records'
 * retries make from now on, start at the end of the loop turn, since
 * waiting max_wait_ms for records that cannot come only holds them. */
void script_batch_drain(script *sc);

/* The record of `it` leaves its batch without an outcome (its deadline
 * passed, or the run abandons it): a pending batch forgets it; a running
 * batch goes on for the others and drops its result; the batch's fiber is
 * discarded when no record of it is left. Clears the item's slot. */
void script_batch_leave(script_item *it);

/* Run on_timeout(record, ctx) synchronously on a fresh decode of `line`;
 * `a` gives ctx (a->deadline_ms, the record's on the loop clock, gives
 * ctx.deadline; its task, fiber slot and last_error are not used).
 * Returns 1 with *out and *len set (ownership passes), 0 when the script has no
 * on_timeout, -1 with *err (malloc'd) when it failed. */
int script_on_timeout(script *sc, const char *line, size_t len, const script_call *a, char **out, size_t *outlen,
                      char **err);

/* Start the open or close hook (`which` is "open" or "close") as a fiber.
 * Returns 0 if it was started (`done` follows, once, with ud), 1 if the
 * script has no such hook. One hook at a time. */
int script_run_hook(script *sc, const char *which, rt_fiber **fiber_slot, script_hook_fn done, void *ud);

/* --workers: this VM runs on worker `worker` (1..N), which ctx.worker
 * gives (1 when never set) and moonwait.log's lines name ("worker=W"; set
 * only with N > 1, so one worker's lines read as they always did). */
void script_set_worker(script *sc, int worker);

/* Tag every output record (a table) with field = generation. */
void script_set_tag(script *sc, const char *field, int generation);

/* Call M.export_state() (if the script has one; it must not yield) and
 * encode its result as JSON for the next generation. Returns 0 with *json
 * (malloc'd, or NULL when there is no export_state), or -1 with *json set
 * to a malloc'd error message. */
int script_export_state(script *sc, char **json);

/* Give the open hook ctx.previous = the decoded `json` (NULL: none).
 * Returns 0, or -1 if it does not decode. */
int script_set_previous(script *sc, const char *json);

/* Files the script loaded from its own directory (itself first): what a
 * watcher should watch. A NULL-terminated array; free with
 * script_free_files. */
char **script_loaded_files(script *sc);
void script_free_files(char **files);

/* VMs loaded and not yet closed, process-wide (for leak checks). */
extern _Atomic int script_live_vms;

/* Set when the run's input is stdin: VMs made afterwards refuse io.read,
 * io.lines() and io.stdin (they would take lines meant for moonwait). */
extern _Atomic int script_stdin_is_input;

/* Threads (--workers N; ARCHITECTURE.md "Threads"): any number of threads
 * may each run a uv loop and VMs on it (script_load_gen with that thread's
 * loop, and every other call on a script from that thread). Per thread:
 * moonwait.cache's named stores, the HTTP client's idle connections, free
 * requests and DNS cache. Shared and locked: moonwait.limit's named
 * limiters, moonwait.metrics' registry, TLS contexts, log output. */

/* Free the named caches of moonwait.cache (cache_store.c), which outlive
 * every generation: the calling thread's (each thread has its own), after
 * its last VM has closed. */
void script_cache_free_all(void);

/* A loop thread other than the main one ends: free what the layers below
 * keep for it (its named caches, idle connections, DNS cache, the HTTP
 * client's free requests), after its last VM has closed and before its
 * loop closes: idle connections close their handles on that loop, so run
 * it (UV_RUN_DEFAULT) once more after this. */
void script_thread_free(void);

/* Free the named limiters of moonwait.limit (mod_limit.c), which outlive
 * every generation too and are shared by every thread: once, after the
 * last VM of every thread has closed. */
void script_limit_free_all(void);

/* moonwait.metrics (mod_metrics.c): the scripts' metrics and the HTTP
 * client's, one process-wide registry that outlives every generation.
 * Each metric holds at most SCRIPT_METRICS_MAX_SERIES label sets. */
#define SCRIPT_METRICS_MAX_SERIES 1000
/* --metrics is set: moonwait.http counts its requests per host. */
void script_metrics_enable(int on);
int script_metrics_http_on(void);
/* Append the registry's exposition text (util/metrics.h). 0, or -1. */
int script_metrics_render(mw_buf *out);
/* A moonwait.http request to host:port ended: status (0: no response) and
 * its duration in seconds. Nothing unless enabled. */
void script_metrics_http(const char *host, int port, int status, double secs);
/* Free the registry: once, after the last VM of every thread has closed. */
void script_metrics_free_all(void);

/* Nonzero when sc holds a VM (to be closed with script_close). */
static inline int script_is_open(const script *sc) { return sc->rt.L != NULL; }

/* Close the VM. `on_closed` runs when the last handle is closed. */
void script_close(script *sc, void (*on_closed)(void *ud), void *ud);

#endif
