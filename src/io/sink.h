/*
 * sink.h: the record sink interface: where encoded output lines go (the
 * output, the dead-letter route). A struct of callbacks, like source.h:
 * a file, a pipe or stdout today (fd_sink.c), later a broker (Redis
 * Streams: XADD, committed in MULTI/EXEC). The run and the checkpoint call
 * only these.
 *
 * Writes never block: bytes are accepted into the sink's buffer and go out
 * on the loop; sink_backlog() says how much waits, so the run stops reading
 * while a slow consumer catches up. sink_flush() calls back once everything
 * accepted so far is written.
 *
 * Positions (exactly-once). sink_position() counts the bytes accepted,
 * including the prefix kept at open: what a checkpoint commits.
 * sink_written() counts those written; a checkpoint waits until they cover
 * its position, then sink_sync() (in the thread pool) makes them durable.
 * A restore opens the sink at the committed position: everything after it
 * is discarded (a file is truncated to it), so the bytes written after the
 * checkpoint are written again exactly once.
 *
 * Callbacks: on_error (the first write error; the sink accepts nothing
 * more), on_written (a write finished: the backlog shrank). Both may be
 * NULL; set them after opening.
 */
#ifndef MW_SINK_H
#define MW_SINK_H

#include <stddef.h>
#include <stdint.h>

typedef struct mw_sink mw_sink;

/* io_sink_open's `keep` for "append to what the file holds" (the outputs
 * of a broker source: a restart must not destroy what was acked). */
#define SINK_APPEND UINT64_MAX

typedef struct sink_ops {
    const char *kind;  /* "fd", ... */
    /* Append bytes (copied). */
    void (*write)(mw_sink *k, const char *data, size_t len);
    /* Append a malloc'd buffer and take it (freed by the sink). */
    void (*write_owned)(mw_sink *k, char *data, size_t len);
    /* Bytes accepted and not yet written. */
    size_t (*backlog)(const mw_sink *k);
    /* Call done(ud) once everything accepted so far is written (or failed). */
    void (*flush)(mw_sink *k, void (*done)(void *ud));
    uint64_t (*position)(const mw_sink *k);
    uint64_t (*written)(const mw_sink *k);
    /* Make the written bytes durable. Runs in the thread pool: it reads
     * only what does not change while the sink is open. 0, or -1 with
     * errno set. */
    int (*sync)(mw_sink *k);
    /* The first write error (a negative uv code), or 0. */
    int (*error)(const mw_sink *k);
    /* That error as a message, when the code alone does not say it (a
     * server's reply). May be NULL. */
    void (*strerror)(const mw_sink *k, char *buf, size_t len);
    /* Close handles; on_closed (may be NULL) runs when all are released,
     * then the sink's memory is freed. */
    void (*close)(mw_sink *k, void (*on_closed)(mw_sink *k));
} sink_ops;

struct mw_sink {
    const sink_ops *ops;
    void (*on_error)(void *ud);
    void (*on_written)(void *ud);
    void *ud;
};

static inline void sink_write(mw_sink *k, const char *d, size_t n) { k->ops->write(k, d, n); }
static inline void sink_write_owned(mw_sink *k, char *d, size_t n) { k->ops->write_owned(k, d, n); }
static inline size_t sink_backlog(const mw_sink *k) { return k->ops->backlog(k); }
static inline void sink_flush(mw_sink *k, void (*done)(void *ud)) { k->ops->flush(k, done); }
static inline uint64_t sink_position(const mw_sink *k) { return k->ops->position(k); }
static inline uint64_t sink_written(const mw_sink *k) { return k->ops->written(k); }
static inline int sink_sync(mw_sink *k) { return k->ops->sync(k); }
static inline int sink_error(const mw_sink *k) { return k->ops->error(k); }
/* The first write error as a message. */
void sink_strerror(const mw_sink *k, char *buf, size_t len);
static inline void sink_close(mw_sink *k, void (*on_closed)(mw_sink *k)) { k->ops->close(k, on_closed); }

#endif
