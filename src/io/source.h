/*
 * source.h: the record source interface. A source is a struct of callbacks
 * (Fluent Bit's input plugins, Redis's ConnectionType) behind which a file,
 * a FIFO, stdin, or later a broker (Redis Streams: XREADGROUP, XACK on
 * commit) hands records to the run. The run calls only these; it never
 * knows which source it reads.
 *
 * Pull-based, for backpressure: the run calls source_next() while the
 * operator has room (one record per call, as many calls as there are
 * free slots). When nothing is ready the source returns SOURCE_AGAIN and
 * starts one fetch (a read, a blocking XREADGROUP); when it lands it calls
 * `on_ready` and the run pulls again. Nothing is fetched while the run does
 * not ask, so a full operator stops the producer.
 *
 * Positions. source_position() says how far the records handed out so far
 * reach: what a checkpoint stores. source_seek() starts a fresh source at a
 * stored position (a restore; before the first source_next). When the
 * outputs of every record up to a position are committed (a checkpoint
 * holding it was written; without checkpoints, the run ended cleanly and
 * the sinks flushed), the run calls source_commit(): a broker source acks
 * them there (XACK); a file has nothing to do.
 *
 * Brokers (redis_source.c) hand out entries that are acked one by one:
 * each record carries a ticket, and source_done() says when its outputs
 * were handed to the sinks.
 *
 * Implementations: fd_source.c (files, FIFOs, pipes, ttys, stdin),
 * redis_source.c (Redis Streams consumer groups), opened through
 * io_source_open (io.h). A new source is a new file and one line
 * in io.c; the operator, the Lua runtime and the other sources do not
 * change.
 */
#ifndef MW_SOURCE_H
#define MW_SOURCE_H

#include <stddef.h>
#include <stdint.h>

typedef struct mw_source mw_source;

/* source_next's results. */
enum { SOURCE_RECORD = 1, SOURCE_AGAIN = 0, SOURCE_END = -1, SOURCE_ERROR = -2 };

/* One record as the source framed it: not parsed, not validated. */
typedef struct source_record {
    const char *data;  /* valid until the next call into the source */
    size_t len;
    uint64_t line;     /* its number, from 1: what messages name */
    /* A broker's entry (all zero for a file): */
    const char *id;    /* the entry id (ctx.source_id), NUL-terminated; valid as data */
    uint32_t deliveries; /* how often the broker delivered it (ctx.deliveries), from 1 */
    const char *refuse;  /* not to be invoked: fail the record with this reason
                          * (delivered too often, too long); valid as data */
    uint64_t ticket;   /* give back to source_done when the record leaves; 0: none */
} source_record;

/* How far the records handed out reach. For a byte source: the offset just
 * after the last record handed out and its number. */
typedef struct source_pos {
    uint64_t offset;
    uint64_t line;
} source_pos;

typedef struct source_ops {
    const char *kind;  /* "fd", ... (for messages) */
    /* The next record: SOURCE_RECORD with *r; SOURCE_AGAIN (a fetch was
     * started, on_ready follows); SOURCE_END; SOURCE_ERROR (every call
     * after, see strerror). */
    int (*next)(mw_source *s, source_record *r);
    /* Why next returned SOURCE_ERROR, as a message naming the source. */
    void (*strerror)(const mw_source *s, char *buf, size_t len);
    source_pos (*position)(const mw_source *s);
    /* Start at `pos` (before the first next). 0, or -1 if it cannot. */
    int (*seek)(mw_source *s, source_pos pos);
    /* Every record up to `pos` has its outputs committed. May be NULL. */
    void (*commit)(mw_source *s, source_pos pos);
    /* The record of `ticket` left the run: its outputs (none, some, a dead
     * letter) were handed to the sinks just before this call, in the same
     * turn. A broker acks it once they are committed. ticket 0: the
     * outputs handed since the last call belong to no record (a
     * watermark). May be NULL. */
    void (*done)(mw_source *s, uint64_t ticket);
    /* Whether next() would return SOURCE_END, without handing out a record:
     * 1 when the end was seen and nothing is left; 0 otherwise (a record
     * may come, or it is not known yet: then a fetch may start to find out,
     * and on_ready follows). Lets a run that holds off reading (a rate
     * limit's token) still see the end. May be NULL (0: never known). */
    int (*ended)(mw_source *s);
    /* A broker's backlog (--metrics): each(ud, stream, group, lag, pending)
     * per partition, with the values of the last poll (lag < 0: not known:
     * Redis before 7, a stream trimmed past the group, no poll answered
     * yet); a new poll starts when the last one is a second old and none
     * is out. Never waits. May be NULL (no backlog to tell). */
    void (*lag)(mw_source *s, void (*each)(void *ud, const char *stream, const char *group, double lag,
                                           double pending), void *ud);
    /* Stop fetching and release everything; on_closed (may be NULL) runs
     * once the source's handles are closed, then its memory is freed. */
    void (*close)(mw_source *s, void (*on_closed)(mw_source *s));
    /* The input's whole size in the units of source_pos.offset, when it is
     * known (a regular file: its bytes now): 0 with *size, or -1. For
     * --stats' percent done and ETA. May be NULL (never known). */
    int (*size)(const mw_source *s, uint64_t *size);
} source_ops;

struct mw_source {
    const source_ops *ops;
    void (*on_ready)(void *ud); /* a fetch after SOURCE_AGAIN landed */
    void *ud;
    size_t room;                /* how many records the run can take now: set
                                 * before each next(); a broker fetches no more */
};

static inline int source_next(mw_source *s, source_record *r) { return s->ops->next(s, r); }
static inline void source_strerror(const mw_source *s, char *buf, size_t len) { s->ops->strerror(s, buf, len); }
static inline source_pos source_position(const mw_source *s) { return s->ops->position(s); }
static inline int source_seek(mw_source *s, source_pos pos) { return s->ops->seek(s, pos); }
static inline void source_commit(mw_source *s, source_pos pos)
{
    if (s->ops->commit)
        s->ops->commit(s, pos);
}
static inline void source_done(mw_source *s, uint64_t ticket)
{
    if (s->ops->done)
        s->ops->done(s, ticket);
}
static inline int source_ended(mw_source *s) { return s->ops->ended ? s->ops->ended(s) : 0; }
static inline int source_size(const mw_source *s, uint64_t *size)
{
    return s->ops->size ? s->ops->size(s, size) : -1;
}

static inline void source_lag(mw_source *s,
                              void (*each)(void *ud, const char *stream, const char *group, double lag,
                                           double pending),
                              void *ud)
{
    if (s->ops->lag)
        s->ops->lag(s, each, ud);
}
static inline void source_close(mw_source *s, void (*on_closed)(mw_source *s)) { s->ops->close(s, on_closed); }

#endif
