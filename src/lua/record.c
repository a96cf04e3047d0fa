/*
 * record.c: a record's way into a script's VM (contract in script.h): parse
 * an input line with the codec, recognise a watermark line and read the
 * event-time field off the tape (no Lua for either), then build the record
 * and hand out its doc, which anchors the decoded table, as the caller's
 * script_rec (for script_invoke in invoke.c, or script_rec_free).
 *
 * Called by src/app for every input line, and again for each retry.
 */
#include "script.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int script_set_event_time(script *sc, const char *field)
{
    size_t n = 1;
    for (const char *p = field; *p; p++)
        n += *p == '.';
    sc->ts_path = calloc(n + 1, sizeof *sc->ts_path);
    char *copy = strdup(field), *save = NULL;
    if (!sc->ts_path || !copy) {
        free(copy);
        return -1;
    }
    size_t i = 0;
    for (char *tok = strtok_r(copy, ".", &save); tok && i < n; tok = strtok_r(NULL, ".", &save)) {
        if (!(sc->ts_path[i] = strdup(tok)))
            break; /* out of memory: refused below */
        i++;
    }
    free(copy);
    return i == n && i > 0 ? 0 : -1;
}

/* The event-time field's value in the parsed tape: 0 with *ms, or -1. */
static int read_event_time(script *sc, const json_tape *t, const char *text, int64_t *ms)
{
    int node = 0;
    for (char **k = sc->ts_path; *k && node >= 0; k++)
        node = json_member(t, text, (uint32_t)node, *k, strlen(*k));
    if (node < 0)
        return -1;
    const json_node *x = &t->nodes[node];
    if (x->type != JSON_NUMBER || (x->flags & (JSON_I64 | JSON_U64)) || !isfinite(x->v.d) ||
        fabs(x->v.d) >= 9.0e15)
        return -1;
    *ms = (int64_t)floor(x->v.d);
    return 0;
}

/* A watermark line (the root has "$watermark"): 1 with p filled, -1 with
 * err when it is not exactly {"$watermark": N}, 0 for a record. */
static int read_watermark(const json_tape *t, const char *line, script_parsed *p, char *err, size_t errlen)
{
    int wm = json_member(t, line, 0, "$watermark", 10);
    if (wm < 0)
        return 0;
    const json_node *x = &t->nodes[wm];
    if (t->nodes[0].n != 1 || x->type != JSON_NUMBER || (x->flags & (JSON_I64 | JSON_U64)) ||
        x->v.d != floor(x->v.d) || fabs(x->v.d) > 9.0e15) {
        snprintf(err, errlen, "a watermark line must be exactly {\"$watermark\": N} with N an integer (ms)");
        return -1;
    }
    p->is_watermark = 1;
    p->watermark = (int64_t)x->v.d;
    return 1;
}

/* Build the parsed tape's record: its doc holds the decoded table, and
 * nothing stays on the stack. */
static script_rec *build(script *sc)
{
    codec_doc *d = codec_build(&sc->codec, sc->rt.L);
    lua_pop(sc->rt.L, 1);
    return d;
}

int script_parse(script *sc, const char *line, size_t len, script_parsed *p, script_rec **rec, char *err,
                 size_t errlen)
{
    memset(p, 0, sizeof *p);
    *rec = NULL;
    if (codec_parse(&sc->codec, line, len, err, errlen) != 0)
        return -1;
    const json_tape *t = codec_pending(&sc->codec);
    int wm = read_watermark(t, line, p, err, errlen);
    if (wm != 0)
        return wm > 0 ? 0 : -1;
    if (sc->ts_path) {
        if (read_event_time(sc, t, line, &p->ts) != 0) {
            char field[256] = "";
            for (char **k = sc->ts_path; *k; k++) {
                if (k != sc->ts_path)
                    strncat(field, ".", sizeof field - strlen(field) - 1);
                strncat(field, *k, sizeof field - strlen(field) - 1);
            }
            snprintf(err, errlen, "event-time field '%s' is missing or not a number (ms)", field);
            return -1;
        }
        p->has_ts = 1;
    }
    *rec = build(sc);
    return 0;
}

int script_reparse(script *sc, const char *line, size_t len, script_rec **rec)
{
    char err[256];
    *rec = NULL;
    if (codec_parse(&sc->codec, line, len, err, sizeof err) != 0)
        return -1;
    *rec = build(sc);
    return 0;
}

void script_rec_free(script *sc, script_rec *rec)
{
    codec_doc_free(&sc->codec, rec);
}
