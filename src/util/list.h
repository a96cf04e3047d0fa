/*
 * list.h: intrusive doubly linked lists on fields the caller names (the
 * idea of BSD's <sys/queue.h>, on plain pointer fields): an element is any
 * struct with a `prev` and a `next` pointer to its own type (a struct may
 * sit on several lists, one pair of fields each); a list is a head pointer,
 * and a queue is a head and a tail pointer. No allocation, no casts.
 *
 * Arguments are evaluated more than once: pass plain lvalues. Used by the
 * operator's queue (op/op.c), the runtime's ready queue and fiber list
 * (lua/runtime.c), its timer list (lua/timers.c) and the codec's live docs
 * (lua/codec.c).
 */
#ifndef MW_LIST_H
#define MW_LIST_H

#include <stddef.h>

/* Put x first on the list at head. */
#define MW_LIST_PUSH(head, x, prev, next)                                                                    \
    do {                                                                                                     \
        (x)->prev = NULL;                                                                                    \
        (x)->next = (head);                                                                                  \
        if (head)                                                                                            \
            (head)->prev = (x);                                                                              \
        (head) = (x);                                                                                        \
    } while (0)

/* Put x last on the queue (head, tail). */
#define MW_QUEUE_APPEND(head, tail, x, prev, next)                                                           \
    do {                                                                                                     \
        (x)->next = NULL;                                                                                    \
        (x)->prev = (tail);                                                                                  \
        if (tail)                                                                                            \
            (tail)->next = (x);                                                                              \
        else                                                                                                 \
            (head) = (x);                                                                                    \
        (tail) = (x);                                                                                        \
    } while (0)

/* Take x off the list at head it is on; its links are cleared. */
#define MW_LIST_UNLINK(head, x, prev, next)                                                                  \
    do {                                                                                                     \
        if ((x)->prev)                                                                                       \
            (x)->prev->next = (x)->next;                                                                     \
        else if ((head) == (x))                                                                              \
            (head) = (x)->next;                                                                              \
        if ((x)->next)                                                                                       \
            (x)->next->prev = (x)->prev;                                                                     \
        (x)->next = (x)->prev = NULL;                                                                        \
    } while (0)

/* Take x off the queue (head, tail) it is on; its links are cleared. */
#define MW_QUEUE_UNLINK(head, tail, x, prev, next)                                                           \
    do {                                                                                                     \
        if (!(x)->next && (tail) == (x))                                                                     \
            (tail) = (x)->prev;                                                                              \
        MW_LIST_UNLINK(head, x, prev, next);                                                                 \
    } while (0)

#endif
