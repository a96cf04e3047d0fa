/*
 * reload.h: script generations and hot reload.
 *
 * Every load of the script is a generation with its own VM. A reload is a
 * transaction: load the new version into a fresh VM, check its contract,
 * hand it the previous generation's export_state(), and run its open()
 * under a time limit. Any failure rejects it (its VM is closed, the
 * current generation keeps running, the error is logged with file:line).
 * On success new records go to the new generation; records already
 * accepted finish on theirs (a task's generation never changes). A
 * generation with no records left after it stopped being current runs
 * close() and its VM is closed. At most GEN_MAX live at once; a reload
 * asked for beyond that waits until one has drained.
 *
 * Triggers: --watch and SIGHUP (triggers.c).
 *
 * This file makes every generation-level call into lua/script.h (load,
 * hooks, export/import of state, close); task.c makes the per-record ones
 * (and check.c loads a script on its own for `moonwait check`). Records'
 * attempts end at ev.record_done (script_on_done); hooks end at this
 * file's own callback (script_run_hook).
 * It reports to the run only through the gen_events it is given; it calls
 * nothing of the run's. The gens struct is embedded by the run; its fields
 * are this file's.
 */
#ifndef MW_RELOAD_H
#define MW_RELOAD_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../lua/script.h"
#include "../op/retry.h"
#include "config.h"
#include "triggers.h"
#include "workers.h"

/* At most this many generations (the current one and those draining). */
#define GEN_MAX 4

typedef struct gen gen;

/* What the generations tell the run. */
typedef struct gen_events {
    /* The first generation's open() ended (or it has none): the run starts
     * reading. `err` is NULL, or the message the run fails with. */
    void (*opened)(void *ud, const char *err);
    /* The current generation's close() failed while the run ends. */
    void (*failed)(void *ud, const char *err);
    /* After gen_close_all: the last generation has closed. */
    void (*all_closed)(void *ud);
    /* An attempt of a record started by task.c ended (r and its strings
     * are valid during the call only, except r->out, which the callee
     * takes). */
    script_record_fn record_done;
    void *ud;
} gen_events;

typedef struct gens {
    uv_loop_t *loop;
    const config *cfg;
    const char *lua_dir;
    gen_events ev;
    gen *cur;                 /* the current generation */
    gen *live;                /* every live generation */
    gen *dead;                /* closed, memory still pointed at by tasks */
    int next_id;
    int last_id;              /* the latest generation that was current */
    int reloads, rejected;
    int pending;              /* a reload was asked for while one could not start */
    int phase;                /* opening, running, closing (reload.c) */
    triggers trig;
    uint64_t key_seed;        /* keyed mode: every generation hashes keys with it */
    workers *wk;              /* --workers N >= 2: every generation also loads
                               * on the other workers (gen_set_workers), or NULL */
} gens;

/* Make generation 1 from the configured script. 0, or -1 (message
 * printed). `stdin_is_input`: VMs refuse io.read and friends. */
int gen_init(gens *gs, uv_loop_t *loop, const config *c, const char *lua_dir, int stdin_is_input,
             const gen_events *ev);

/* Load generation `id` of the configured script into sc on `loop` with
 * the run's settings (event time, key, tag, batches), as --workers'
 * worker `worker` (1..N, 0 with one worker: see script_load_gen): the
 * main thread's generations and every worker's (workers.c) are made
 * alike. 0, or -1 with *err (malloc'd). */
int gen_prepare(script *sc, uv_loop_t *loop, const config *c, const char *lua_dir, int id, int worker,
                uint64_t key_seed, char **err);

/* --workers: from now on every generation is also loaded, opened and
 * closed on the other workers (before gen_open_first). */
void gen_set_workers(gens *gs, workers *wk);

/* Start the first generation's open(); ev.opened follows (maybe now). */
void gen_open_first(gens *gs);

/* Reload now if possible, else remember to (trigger names the cause). */
void gen_trigger_reload(gens *gs, const char *trigger);

/* The generation new records run on (NULL once closing). */
gen *gen_current(const gens *gs);
/* Its number, or 0 when none. */
int gen_current_id(const gens *gs);
/* The number of the latest generation that was current, also once the
 * generations have closed (the --stats summary), or 0 before the first. */
int gen_last_id(const gens *gs);
/* Reloads done and rejected so far (--stats). */
void gen_counts(const gens *gs, int *reloads, int *rejected);
/* Generations alive now: the current one, those draining, one opening. */
int gen_live_count(const gens *gs);
/* A record now runs on g / was released (its record left the operator). */
void gen_retain(gen *g);
void gen_release(gen *g);
script *gen_script(gen *g);
/* The retry strategy records of g run under (config_retry: flag over
 * pipeline over the script's M.retry), or NULL for none; outlives them. */
const op_retry_policy *gen_policy(const gen *g);

/* The run is ending: close every generation; ev.all_closed follows. */
void gen_close_all(gens *gs);

/* Start every generation's pending batches at the end of this loop turn
 * (the pump: no more records can come soon). */
void gen_flush_batches(gens *gs);
/* Start watching (--watch) and SIGHUP. */
void gen_start_triggers(gens *gs);
/* Stop watchers, timers and signals (shutdown). */
void gen_stop_triggers(gens *gs);
/* Free what is left (after the loop ended). */
void gen_free_all(gens *gs);

#endif
