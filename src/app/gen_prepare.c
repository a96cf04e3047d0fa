/*
 * gen_prepare.c: a generation's VM made with the run's settings (contract
 * in reload.h): the script loaded, then the event-time field, keyed mode's
 * key (with the run's one seed), the generation tag and the batch
 * settings. The main thread's generations (reload.c) and every worker's
 * (wk_thread.c) are made by this one function, so they cannot differ.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reload.h"

int gen_prepare(script *sc, uv_loop_t *loop, const config *c, const char *lua_dir, int id, int worker,
                uint64_t key_seed, char **err)
{
    if (script_load_gen(sc, loop, c->script, lua_dir, id, worker, err) != 0) {
        /* Name the setting, as --input and --output do: from a pipeline
         * file's `script` key the path alone does not say which file it is. */
        char *named;
        if (*err && strncmp(*err, "cannot open ", 12) == 0 && asprintf(&named, "--script: %s", *err) >= 0) {
            free(*err);
            *err = named;
        }
        return -1;
    }
    if (c->event_time && script_set_event_time(sc, c->event_time) != 0) {
        if (asprintf(err, "option '--event-time': bad field path '%s'", c->event_time) < 0)
            *err = NULL;
        return -1;
    }
    if (c->key && script_set_key(sc, c->key, key_seed) != 0) {
        if (asprintf(err, "option '--key': bad field path '%s'", c->key) < 0)
            *err = NULL;
        return -1;
    }
    script_set_tag(sc, c->tag_generation, id);
    if (script_batches(sc)) {
        uint32_t size;
        uint64_t wait;
        const char *key;
        config_batch(c, &sc->batch, &size, &wait, &key);
        if (script_batch_configure(sc, size, wait, key) != 0) {
            *err = strdup("out of memory setting up batches");
            return -1;
        }
    } else if (c->batch.has_size || c->batch.has_wait || c->batch.has_key) {
        /* Said rather than ignored: the settings would do nothing. */
        if (asprintf(err, "%s: batch settings (--batch-size, --batch-wait, --batch-key or the pipeline key "
                          "'batch') are set, but the script has no batch_invoke(records, ctxs)",
                     c->script) < 0)
            *err = NULL;
        return -1;
    }
    return 0;
}
