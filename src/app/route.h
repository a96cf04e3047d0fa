/*
 * route.h: where a record that failed for good goes (--on-error): fail the
 * run, skip it, or the dead-letter route. Owns the dead-letter line format
 * (one JSON object per record, with the first Lua frame of the traceback
 * kept in the message) and the counts of skipped and malformed records.
 *
 * Called by task.c (outcomes, timeouts, malformed lines) and run.c (the
 * message a failure stops the run with). Knows the operator and the JSON
 * writer, nothing of Lua or of the sinks: a dead-letter line rides on its
 * entry (op_complete_dead) and reaches the dead-letter sink when the entry
 * leaves the operator, in its turn.
 */
#ifndef MW_ROUTE_H
#define MW_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "../op/op.h"

typedef struct route {
    op *op;
    int on_error;        /* ON_ERROR_* (config.h) */
    uint64_t skipped;    /* records dropped by --on-error skip */
    uint64_t malformed;  /* malformed input lines routed (skip/dead-letter) */
} route;

/* The record a route needs to write about (its raw line, not owned). */
typedef struct route_rec {
    const char *line;
    size_t len;
    uint64_t lineno;
    int malformed;       /* the line did not parse: never invoked */
    const char *source_id; /* a broker's entry id, or NULL */
    uint32_t deliveries; /* with source_id: how often it was delivered */
} route_rec;

void route_init(route *r, op *o, int on_error);

/* Record `e` (read from `rec`) failed for good with `err`; `now` is the
 * operator's clock: fail the run, skip it, or complete it into the
 * dead-letter route. */
void route_failure(route *r, op_entry *e, const route_rec *rec, const char *err, uint64_t now);

/* What route_malformed did with the line. */
enum {
    ROUTE_STOP,     /* queued as a failed entry (fails the run in its turn):
                     * stop reading; the caller frees its record */
    ROUTE_QUEUED,   /* queued as a dead letter or a skipped record with `udata` (the caller's
                     * record, released through op's release callback,
                     * perhaps before this returns: touch it no more) */
    ROUTE_NOROOM,   /* the operator refused it: the caller frees its record */
};

/* A line that is not a record (`err` says why) read as `rec`. */
int route_malformed(route *r, const route_rec *rec, const char *err, void *udata, uint64_t now);

/* The message a failed entry stops the run with (malloc'd, or NULL when
 * out of memory). `from_record`: it came from an input line (else the
 * entry's own message is the whole story). */
char *route_fatal_message(const op_entry *e, int from_record);

#endif
