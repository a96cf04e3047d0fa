/*
 * workers.h: --workers N: records' attempts on N-1 more threads.
 *
 * The main thread keeps everything that decides: the reader, the operator
 * (capacity, order, watermarks, timeouts, retries' schedule), the writer,
 * checkpoints, and its own VMs, which make it worker 0. Each other worker
 * is a thread with its own uv loop and its own VM per script generation;
 * the main thread sends it attempts (a record's line, its ctx fields, the
 * generation) and it sends back each attempt's outcome, as script.h's
 * record callback would have given it on the main thread. So every rule
 * of the operator holds as with one worker, because the operator never
 * leaves the main thread; a worker only runs script code.
 *
 * Messages go both ways through a locked queue and a uv_async_t, drained
 * as a batch per wake-up (uv_async_send coalesces). Ownership: an attempt
 * on a worker (wk_job) is allocated and freed on the main thread; between
 * its send and its last answer only the worker reads or writes it (the
 * queue's lock orders the two), and the main thread frees it at its last
 * answer: DONE, or after a wk_discard, DISCARDED (which always follows
 * any DONE already on its way, the queues being FIFO).
 *
 * Generations: wk_gen_open loads generation `id` on every worker (the
 * same settings as the main thread's, reload.c's gen_prepare), hands it
 * that worker's previous generation's export_state(), runs its open();
 * wk_gen_close runs close() (or not) and closes the VM. Each answers once,
 * when every worker has. A generation's records run only between the two:
 * the queue's order sees to it.
 */
#ifndef MW_WORKERS_H
#define MW_WORKERS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../lua/script.h"
#include "config.h"

typedef struct workers workers;
typedef struct wk_job wk_job;

/* A generation's open or close ended on every worker: err is the first
 * worker's error (valid during the call), or NULL. */
typedef void (*wk_gen_fn)(void *ud, const char *err);

/* Start n - 1 threads (n = c->workers >= 2). Records' outcomes are
 * reported to `done` (as script_record_fn, with the struct task * given
 * to wk_invoke) on the main loop. 0, or -1 with a message logged. */
int wk_start(workers **out, uv_loop_t *loop, const config *c, const char *lua_dir, uint64_t key_seed,
             script_record_fn done, void *ud);

/* Workers, the main thread's included (c->workers). */
int wk_count(const workers *w);

/* The worker a record with no key goes to: the least busy (0 = the main
 * thread, whose own busy count the caller gives, with the operator's
 * capacity now). */
int wk_pick(workers *w, size_t main_busy, size_t capacity);

/* Attempts running on worker k (1..n-1) now: sent and not ended there. */
size_t wk_running(const workers *w, int k);

/* Run attempt call->attempt of `line` on worker `k` (1..n-1) on
 * generation `gen_id`: the line and the call's strings are copied; `tape`
 * (the line's, from script_tape_keep, or NULL: the worker parses the line)
 * is taken, even on failure. The outcome comes through `done` with
 * call->task, unless wk_discard comes first. Returns the job (the caller
 * keeps it for wk_discard until the outcome), or NULL when out of memory. */
wk_job *wk_invoke(workers *w, int k, int gen_id, const char *line, size_t len, script_tape *tape,
                  const script_call *call);

/* The attempt is abandoned (a timeout, the run aborting): its fiber is
 * discarded on its worker and its outcome, if one is on its way, dropped. */
void wk_discard(workers *w, wk_job *j);

/* Generation `id` on every worker (see above); `done` once. */
void wk_gen_open(workers *w, int id, wk_gen_fn done, void *ud);
void wk_gen_close(workers *w, int id, int run_close, wk_gen_fn done, void *ud);

/* A batching script's pending batches on every worker: start them at the
 * end of the loop turn (flush), and from now on (drain: a reload made
 * another generation current). */
void wk_gen_flush(workers *w, int id);
void wk_gen_drain(workers *w, int id);

/* Close the main loop's handle (the run's shutdown). */
void wk_close(workers *w);
/* After the main loop ended: stop the threads, wait for them, free all. */
void wk_free(workers *w);

#endif
