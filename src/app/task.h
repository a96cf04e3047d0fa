/*
 * task.h: one record's life on the host side. A task hangs on its operator
 * entry (udata) from the moment its line is read until the entry leaves
 * the operator (task_release): it owns its copy of the raw line, the
 * previous attempt's error, and while an attempt runs, its fiber (or, for
 * a batch_invoke script, its place in a batch: task_discard makes it leave).
 *
 * This file makes every per-record call into lua/script.h: decoding a line
 * (script_parse, script_reparse: a script_rec handle the task passes on to
 * script_invoke, or frees), on_timeout, abandoning a fiber; and it turns an
 * attempt's outcome into the operator's verbs (complete, retry, or route
 * the failure).
 *
 * One clock: a record's deadline is its operator entry's (e->deadline, on
 * op_now's clock, which is the loop's uv_now); the script gets that value
 * as it is, and every comparison here is against op_now().
 *
 * Retries: when an attempt's outcome asks for another (the script's retry
 * predicate said so), op_retry() decides whether one may follow; if so the
 * record waits in back-off in the operator (keeping its slot) and
 * task_retry starts the next attempt from the raw line.
 */
#ifndef MW_TASK_H
#define MW_TASK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../io/source.h"
#include "../lua/script.h"
#include "../op/adapt.h"
#include "../op/op.h"
#include "../store/ckpt.h"
#include "evtime.h"
#include "expose.h"
#include "limit.h"
#include "reload.h"
#include "route.h"
#include "workers.h"

typedef struct task task;

/* What every task of a run shares (set up by the run, read-only here). */
typedef struct task_env {
    op *op;
    route *route;
    evtime *ev;
    const gens *gens;      /* new records run on the current generation */
    uint64_t timeout_ms;   /* for the timeout message */
    mw_source *src;        /* told when a record leaves (source_done) */
    adapt *adapt;          /* adaptive capacity: fed each attempt's latency and
                            * overload, it sets the operator's capacity; or NULL */
    limit *lim;            /* the rate limit: a first attempt takes its token */
    expose *mx;            /* --metrics: the histograms are observed; or NULL */
    workers *wk;           /* --workers N >= 2: the other workers, or NULL */
    size_t *main_busy;     /* attempts running on this thread (wk_pick weighs it) */
} task_env;

/* task_accept's and task_outcome's results. */
enum {
    TASK_OK,    /* accepted (or dropped: a blank line, a skipped one) */
    TASK_STOP,  /* a malformed line fails the run in its turn: stop reading */
    TASK_FATAL, /* the run fails at once, with the message given */
    TASK_LATE,  /* the outcome came after the record's deadline: ignored,
                 * its timeout decides (re-arm the timer) */
};

/* A line was read: an explicit watermark goes to the generator (and maybe
 * the operator); a record gets its task, enters the operator and starts
 * its first attempt (which may complete, even emit, before this returns);
 * a malformed line is routed. The operator must have room. */
int task_accept(const task_env *env, const source_record *rec, char *msg, size_t msglen);

/* An attempt of t ended with r (reload.h's record_done). `aborting`: the
 * run is abandoning everything (no retry). */
int task_outcome(const task_env *env, task *t, script_result *r, int aborting);

/* e's back-off ended: start its next attempt. */
void task_retry(const task_env *env, op_entry *e);

/* e's deadline passed: abandon its attempt, run on_timeout, decide. */
void task_timeout(const task_env *env, op_entry *e);

/* Abandon t's running attempt, if any (never resumed again). */
void task_discard(task *t);

/* e leaves the operator: free its task. */
void task_release(op_entry *e);

/* Re-insert a stored record of a checkpoint: a completed one with its
 * result (not invoked again), any other re-invoked, continuing its attempt
 * count and used budget. Takes ce's strings. 0, or -1 with msg. */
int task_restore(const task_env *env, ckpt_entry *ce, char *msg, size_t msglen);

/* What a checkpoint stores of t (borrowed while t lives). */
const char *task_line(const task *t, size_t *len);
uint64_t task_lineno(const task *t);
int task_malformed(const task *t);
const char *task_last_error(const task *t);
/* The generation t's record runs on, for log lines; 0 for none. */
int task_generation(const task *t);
/* The source's ticket for t's record (source_done), 0 for none. */
uint64_t task_ticket(const task *t);
/* --metrics: when t's record was read and finished (uv_hrtime; 0: not
 * stamped: no --metrics, a restored record, a malformed line). */
void task_times(const task *t, uint64_t *read_ns, uint64_t *done_ns);

#endif
