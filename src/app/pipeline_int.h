/*
 * pipeline_int.h: the run's state, shared by pipeline.c (wiring: pump,
 * completions, routing, shutdown) and reload.c (script generations, the
 * watcher, SIGHUP). Not for other files.
 */
#ifndef MW_PIPELINE_INT_H
#define MW_PIPELINE_INT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../io/input.h"
#include "../io/output.h"
#include "../lua/script.h"
#include "../op/op.h"
#include "../op/wmgen.h"
#include "config.h"

struct ckpt;

/* Stop reading while this much output is waiting to be written. */
#define OUTPUT_HIGH_WATER (4u * 1024 * 1024)

/* At most this many generations (the current one and those draining). */
#define MAX_GENERATIONS 4

enum { OPENING, RUNNING, CLOSING, DRAINING, DONE };

typedef struct pipeline pipeline;

/* A generation: one load of the script, in its own VM. Records accepted
 * while it is current run on it for their whole life. */
enum { G_OPENING, G_CURRENT, G_DRAINING, G_CLOSING, G_CLOSED };

typedef struct gen {
    script sc;               /* first member: rt* -> script* -> gen* */
    pipeline *p;
    int id;
    int state;               /* G_* */
    size_t records;          /* tasks pointing at it (accepted, not yet released) */
    op_retry_policy policy;  /* effective strategy for its records */
    rt_fiber *hook_fiber;    /* open or close while it runs */
    uv_timer_t open_timer;   /* a reload's time limit for open() */
    int timer_open;
    int vm_open;             /* sc still holds a VM */
    int handles;             /* open handles: VM + timer; freed at 0 with records == 0 */
    uint64_t load_started;   /* uv_hrtime() when the reload began */
    uint64_t processed;      /* records completed on it */
    struct gen *next;
} gen;

typedef struct task {
    op_entry *e;
    int malformed;        /* a line that did not parse, routed to the dead letters */
    gen *g;               /* the generation it runs on */
    rt_fiber *fiber;      /* while an attempt or predicate runs; NULL after */
    char *line;           /* raw input line (owned) */
    size_t len;
    uint64_t lineno;
    double deadline;      /* rt_now() seconds, 0 = none */
    char *last_error;     /* the previous attempt's error (owned), or NULL */
} task;

typedef struct watch {
    uv_fs_event_t h;
    char *dir;
    char **names;         /* basenames watched in dir */
    struct watch *next;
} watch;

struct pipeline {
    const config *cfg;
    const char *lua_dir;
    uv_loop_t *loop;
    op op;
    gen *cur;                 /* the current generation */
    gen *gens;                /* every live generation */
    int next_gen_id;
    int reloads, rejected;
    int reload_pending;       /* a reload was asked for while one could not start */
    int reload_waiting_logged;
    watch *watches;
    uv_timer_t debounce;      /* --watch: one reload per burst of events */
    uv_signal_t sighup;
    input in;
    output out;
    output dlq;               /* --dead-letter file */
    int dlq_open;
    int drains_left;          /* outputs still draining at the end */
    uint64_t skipped;         /* records dropped by --on-error skip */
    uint64_t malformed;       /* malformed input lines routed (skip/dead-letter) */
    uint64_t rng;             /* xorshift state for retry jitter */
    wmgen wm;
    int have_pending_wm;
    int64_t pending_wm;
    uv_timer_t timeout_timer;
    uint64_t armed;           /* deadline the timer is armed for */
    uv_timer_t stats_timer;
    uv_signal_t sigint, sigterm;
    int signals;
    int phase;
    int pumping;
    int input_ended;          /* EOF seen */
    int stop_reading;         /* failure or signal: accept nothing more */
    int aborting;             /* in-flight records were abandoned */
    int exit_code;
    uint64_t outputs;         /* output lines written */
    uint64_t start_ms;
    uint64_t last_stats_ms, last_stats_out;
    int input_open, output_open;
    int open_handles;
    /* exactly-once (checkpoint.c) */
    struct ckpt *restore;     /* the checkpoint being restored, until injected */
    uint64_t restore_out_len, restore_dlq_len;
    uv_timer_t ckpt_timer;
    int ckpt_timer_open;
    int ckpt_state;           /* CK_IDLE, CK_FLUSHING, CK_WRITING */
    int ckpt_final;           /* the one in progress marks the run complete */
    uint64_t ckpt_out_len, ckpt_dlq_len; /* what the one in progress commits */
    char *ckpt_buf;           /* its encoded bytes (owned while writing) */
    size_t ckpt_len;
    uv_work_t ckpt_work;
    int ckpt_err;
    uint64_t checkpoints;     /* written so far */
    void (*ckpt_done)(pipeline *p); /* when no checkpoint is in progress or queued */
    /* A snapshot taken while another was being committed waits here. */
    int ckpt_has_next, ckpt_next_final;
    char *ckpt_next_buf;
    size_t ckpt_next_len;
    uint64_t ckpt_next_out_len, ckpt_next_dlq_len;
    int ckpt_failed;          /* a checkpoint could not be taken or written */
    int lock_fd;              /* DIR/lock, flocked for the whole run (0 = none) */
    char *id_in, *id_out, *id_dl; /* the pipeline's identity, resolved once */
    int signal_exit;          /* 130/143: a signal's checkpoint was taken */
};

enum { CK_IDLE, CK_FLUSHING, CK_WRITING };

/* checkpoint.c */
/* Before opening files: validate, read an existing checkpoint. Returns 0
 * (run; p->restore set if restoring), 1 (the run already completed: a
 * no-op), or -1 (refused; message printed, exit 2). */
int ckpt_prepare(pipeline *p);
/* Apply the restore to the freshly opened input (seek) and generator. */
void ckpt_apply_input(pipeline *p);
/* Start the periodic checkpoints. */
void ckpt_start(pipeline *p);
/* The output made progress: a checkpoint waiting for its flush may go on. */
void ckpt_output_progress(pipeline *p);
/* The clean end: write the final (complete) checkpoint, then `done`. */
void ckpt_finish(pipeline *p, void (*done)(pipeline *p));
/* Take a checkpoint of this moment now (a signal); it is committed after
 * the one in progress, if any. 0, or -1 (the run was failed). */
int ckpt_take_now(pipeline *p);
/* Call `done` once no checkpoint is being committed or waits to be (at
 * once if none): the outputs' fds must stay open until then. */
void ckpt_when_idle(pipeline *p, void (*done)(pipeline *p));
/* Stop the timer (shutdown). */
void ckpt_stop(pipeline *p);
/* Release the lock and what ckpt_prepare kept (after the loop ended). */
void ckpt_release(pipeline *p);

/* reload.c */
/* Make generation 1 from the configured script. 0, or -1 (message printed). */
int gen_first(pipeline *p);
/* Reload now if possible, else remember to (trigger names the cause). */
void gen_trigger_reload(pipeline *p, const char *trigger);
/* A task of g was released (its record left the operator). */
void gen_record_released(gen *g);
/* The run is ending: close every generation; `done` runs when all are. */
void gen_close_all(pipeline *p);
/* Start watching (--watch) and SIGHUP. */
void gen_start_triggers(pipeline *p);
/* Stop watchers, timers and signals (shutdown). */
void gen_stop_triggers(pipeline *p);
/* A hook of g finished (open or close). */
void gen_hook_done(gen *g, script_result *r);
/* Free what is left (after the loop ended). */
void gen_free_all(pipeline *p);

/* pipeline.c, for reload.c */
void pipeline_pump(pipeline *p);
void pipeline_all_gens_closed(pipeline *p);
void pipeline_fail(pipeline *p, int abort_now, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void pipeline_script_done(void *ud, void *taskp, script_result *r);

#endif
