/*
 * opview.h: the app's only reads of the operator's struct fields (its
 * queue, sequence counter and counters), in one place until op.h offers
 * accessors for them (op.c belongs to the operator layer). Read-only.
 */
#ifndef MW_OPVIEW_H
#define MW_OPVIEW_H

#include "../op/op.h"

/* The queue in input order: the first entry, then each one's next. */
static inline op_entry *opv_first(const op *o) { return o->head; }
static inline op_entry *opv_next(const op_entry *e) { return e->next; }
/* The seq the next record read gets. */
static inline uint64_t opv_next_seq(const op *o) { return o->next_seq; }
static inline const op_stats *opv_stats(const op *o) { return &o->stats; }

#endif
