/*
 * redis_int.h: what the Redis Streams source (redis_source.c), its commits
 * (redis_commit.c), the sink (redis_sink.c) and the open-time checks
 * (redis_probe.c) share. Internal to src/io.
 *
 * The source reads P partitions (one stream, or KEY{0}..KEY{P-1} in a
 * cluster); each partition has two connections to the node that holds its
 * key: `rd` for the blocking XREADGROUP, `cmd` for everything else (group
 * creation, claims, delivery counts, commits, acks), so a commit never
 * waits behind a BLOCK.
 *
 * Entries. An entry fetched from the stream is on its partition's `ready`
 * queue until the run takes it (source_next), then OUT (in the run) until
 * source_done, then COMMITTING until its commit or ack is answered. Every
 * entry the source knows is in the partition's id table, so one fetched
 * twice (this consumer's pending entries re-read after a reconnect, a claim
 * of an entry of ours that idled) is not handed out twice.
 *
 * Commits (redis_commit.c). Paired: the output (and dead-letter) streams
 * are on the node of the input, so an entry's outputs and its XACK go in
 * one atomic step: a script (EVAL, atomic as MULTI/EXEC) that first checks
 * the entry is still pending for this consumer (XPENDING), then XADDs its
 * outputs and XACKs it; entries that completed meanwhile ride in the same
 * call (commit batching: one call in flight per partition, the next one
 * takes everything that completed while it was out). The check makes a
 * commit safe to send again when its reply was lost (the first one acked
 * the entry, the second finds it no longer pending and adds nothing), and
 * fences a consumer that stalled past claim_idle_ms while another claimed
 * its entries. Unpaired (a file output, a stream elsewhere): at-least-once;
 * an entry is acked (XACK) once the sinks have written everything handed
 * to them up to its done.
 */
#ifndef MW_REDIS_INT_H
#define MW_REDIS_INT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../net/redis.h"
#include "../util/buf.h"
#include "redis_url.h"
#include "sink.h"
#include "source.h"

enum { RS_READY, RS_OUT, RS_COMMITTING };

/* How long a read for new entries blocks (XREADGROUP ... BLOCK). */
#define RS_BLOCK_MS 1000

typedef struct rs_part rs_part;
typedef struct rs_source rs_source;

typedef struct rs_entry {
    struct rs_entry *prev, *next; /* the ready queue, or the at-least-once ack list */
    struct rs_entry *hnext;       /* id table chain */
    rs_part *part;
    int state;
    uint32_t deliveries;          /* 0: XPENDING is asked (batch `counting`) */
    uint64_t counting;
    char *data;                   /* the record's JSON (owned until handed out) */
    size_t len;
    uint64_t out_pos, dlq_pos;    /* unpaired: the sinks' positions at its done */
    char id[48];                  /* "ms-seq" */
} rs_entry;

/* A commit call: units (an entry, or outputs of no entry) and their
 * arguments, built up while the previous call is out. */
typedef struct rs_batch {
    mw_buf args;                  /* the arguments' bytes, back to back */
    size_t *lens;                 /* each argument's length */
    size_t nargs, cap_args;
    rs_entry **entries;           /* the units' entries (NULL: no entry) */
    size_t *ustart;               /* each unit's first argument */
    uint64_t *ubytes;             /* each unit's output bytes */
    size_t nunits, cap_units;
    uint64_t bytes;               /* output bytes in it (for the sink's counts) */
} rs_batch;

struct rs_part {
    rs_source *src;
    uint32_t ix;
    char *key, *out_key, *dlq_key; /* owned; out/dlq only when paired */
    char host[256];               /* the node serving the key (a cluster's master) */
    int port;
    int asking;                   /* the slot is migrating to it (ASK) */
    redis_conn *rd, *cmd;
    int rd_up, cmd_up;
    int group_ready;              /* XGROUP CREATE answered on this connection */
    int group_asked;
    /* reading */
    int fetching;                 /* an XREADGROUP is out */
    size_t requested;             /* its COUNT */
    size_t read_sent, claim_sent; /* the COUNT of the last read, claim sent */
    size_t read_cap, claim_cap;   /* a reply was over the reply limit: the
                                   * most entries asked at once since (0: no cap) */
    int pel;                      /* re-reading this consumer's pending entries first */
    char pel_cursor[48];
    int new_empty;                /* the last ">" read found nothing */
    rs_entry *ready, *ready_tail;
    size_t nready;
    size_t ncommitting;           /* done, not yet acked (still pending on us) */
    /* claims */
    int claiming;                 /* an XAUTOCLAIM is out */
    size_t claim_requested;       /* its COUNT */
    int claim_due;                /* a round should run (the reads wait for it) */
    char claim_cursor[48];        /* where the round goes on ("0-0": from the start) */
    int claimed_once;
    int claim_clean;              /* the last round found nothing */
    uint64_t counts_asked, counts_answered; /* XPENDING batches for delivery counts */
    /* the id table */
    rs_entry **table;
    size_t tcap, tlen;
    /* commits (paired) */
    rs_batch staged, out;         /* being built; sent and not answered */
    int out_busy;
    /* acks (unpaired) */
    rs_entry *acks, *acks_tail;   /* done, waiting for the sinks */
    size_t nacks_out;             /* XACK ids sent, not answered */
    rs_entry **acking;
    size_t nacking;
    /* the backlog (redis_lag.c, --metrics) */
    int lag_out;                  /* an XINFO GROUPS is out */
    double lag, pending;          /* its last answer (lag -1: not known) */
};

struct rs_source {
    mw_source base;               /* first member: the interface */
    uv_loop_t *loop;
    redis_url u;
    char *name;                   /* the URL without its password, for messages */
    char run_id[48];              /* the server's (redis_probe.c; a cluster: partition 0's master's) */
    char *consumer;               /* owned */
    size_t max_line;
    rs_part *parts;
    uint32_t nparts, rr;          /* round robin over partitions */
    uint64_t lineno;
    rs_entry *last;               /* handed out by the last next(): its data is freed at the next call */
    uv_timer_t claim_timer, tick; /* claims every claim_idle_ms; acks and commits */
    int refs;                     /* the source and each paired sink */
    int closing, handles, handles_closing;
    uint64_t close_by;            /* closing: the acks in flight get until then */
    void (*on_closed)(mw_source *s);
    char err[512];
    int failed;
    int ended;                    /* until=empty: the end was returned */
    int announced_down;
    int slots_stale, slots_asked; /* a MOVED was seen: read CLUSTER SLOTS again */
    /* pairing */
    int paired;                   /* commits are atomic (script) */
    mw_sink *out, *dlq;           /* the run's sinks (paired or not) */
    mw_buf staged_out, staged_dlq;/* paired: lines handed since the last done */
    uint64_t accepted_bytes, committed_bytes; /* paired: output and dead-letter bytes */
    uint64_t lost_ownership;      /* units skipped: the entry was pending on another consumer */
    uint64_t already_acked;       /* units skipped: the entry was pending on none */
    void (*flush_done[2])(void *ud);
    uint64_t flush_by;            /* the sinks' flush gives up when no commit was answered by then */
    char sink_err[512];
    int sink_failed;
    /* settings of the paired sinks */
    char *out_field, *dlq_field;
    uint64_t out_maxlen, dlq_maxlen;
    uint64_t lag_polled_ms;       /* uv_now of the last backlog poll (redis_lag.c) */
    redis_url out_u, dlq_u;
};

/* redis_read.c */
void rs_entry_free(rs_part *p, rs_entry *e);     /* out of the id table too */
/* Start a read (XREADGROUP) if there is room and none is out. */
void rs_fetch(rs_part *p);
/* Start a claim round (XAUTOCLAIM) if one is due and there is room. */
void rs_claim(rs_part *p);
/* The claim timer (every claim_idle_ms): a round is due on every partition. */
void rs_on_claim_timer(uv_timer_t *t);

/* redis_part.c */
/* Connect p's two connections to its node. 0, or -1 (out of memory). */
int rs_part_connect(rs_part *p);

/* redis_source.c */
void rs_source_unref(rs_source *s);
void rs_fail(rs_source *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Start the 5 ms tick if something waits for it (it stops by itself). */
void rs_tick(rs_source *s);

/* The reply was a cluster redirection (MOVED, ASK) or a retryable
 * cluster error (TRYAGAIN, CLUSTERDOWN): the partition moves or reconnects
 * and what was out is sent again. 1 when handled. */
int rs_redirected(rs_part *p, const char *err);

/* An error reply to a read, a claim or the group check (what: the
 * command): a redirection is followed, NOGROUP ends the run
 * (rs_group_gone), any other fails it naming the command and key. */
void rs_reply_error(rs_part *p, const resp_reader *r, const char *d, const char *what);

/* The group went away mid-run: the run fails (making it again would read
 * the stream again from `start`). */
void rs_group_gone(rs_part *p);

/* The end of a run waits this long for a commit to be answered (the
 * sinks' flush), then fails: the entries stay pending for a claim. */
#define RS_FLUSH_WAIT_MS 5000

/* redis_commit.c */
/* An entry (or no entry) left the run: commit or queue its ack. */
void rs_commit_done(rs_source *s, rs_entry *e);
/* Send what waits (a connection came up, a call was answered, a tick). */
void rs_commit_kick(rs_part *p);
/* Everything handed to the sinks is committed or acked. */
int rs_commit_idle(const rs_source *s);
/* The partition's connection was dropped with its calls out: what they
 * carried is sent again. */
void rs_commit_lost(rs_part *p);
/* Free the partition's batches and lists. */
void rs_commit_free(rs_part *p);
/* The flushes waiting for commits: call them if idle. */
void rs_commit_flushed(rs_source *s);

/* redis_sink.c: the paired sinks stage their lines here. */
void rs_stage(rs_source *s, int which, const char *data, size_t len);

/* redis_probe.c: before the run, on a private loop: can we connect and
 * authenticate; does each key hold a stream (or nothing); for a source,
 * create its group (XGROUP CREATE ... MKSTREAM; an existing one is kept);
 * the server's run_id (INFO server; in a cluster, partition 0's master's)
 * into run_id, which tells whether two URLs name one server (or cluster)
 * whatever they call it. 0, or -1
 * with a message in err. */
int rs_probe(const redis_url *u, int role, char run_id[48], char *err, size_t errlen);
/* A cluster's slot map, from the first seed host that answers. */
struct redis_slots;
int rs_probe_slots(const redis_url *u, struct redis_slots *slots, char *err, size_t errlen);

/* The source's `lag` op (redis_lag.c). */
void rs_lag(mw_source *b, void (*each)(void *ud, const char *stream, const char *group, double lag, double pending),
            void *ud);

#endif
