/*
 * adapt.c: the adaptive capacity controller (rules and contract in
 * adapt.h). Called by src/app/task.c once per attempt.
 */
#include "adapt.h"

#include <math.h>

static double clamp(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static void window_reset(adapt *a, uint64_t now)
{
    a->win_start = now;
    a->win_n = a->win_slow = 0;
    a->win_sum = 0;
    a->win_inflight = 0;
}

void adapt_init(adapt *a, size_t min, size_t max, uint64_t now)
{
    *a = (adapt){ 0 };
    a->min = (double)(min ? min : 1);
    a->max = (double)(max > min ? max : min);
    a->limit = a->min;
    a->slow_start = 1;
    window_reset(a, now);
}

/* (every change of a->limit clamps it to [min, max]) */
size_t adapt_limit(const adapt *a)
{
    return (size_t)floor(a->limit);
}

static void decrease(adapt *a, double factor, uint64_t now)
{
    /* (an overload while probing: the limit we came from was too high) */
    a->limit = clamp((a->probing ? a->saved : a->limit) * factor, a->min, a->max);
    a->probing = 0;
    a->slow_start = 0;
    a->has_cut = 1;
    a->cut_at = now;
    a->decreases++;
    window_reset(a, now);
}

/* Start a probe window: the limit at a quarter for one window, so the
 * service's queue (if we built one) drains and the baseline sees its
 * latency without our load. Samples that started before do not count. */
static void probe_start(adapt *a, uint64_t now)
{
    a->saved = a->limit;
    a->limit = clamp(a->limit / 4, a->min, a->max);
    a->probing = 1;
    a->since_probe = 0;
    a->has_cut = 1;
    a->cut_at = now;
    window_reset(a, now);
}

/* The window is over (a round trip and enough samples): decide. */
static void window_close(adapt *a, uint64_t now)
{
    double mean = a->win_sum / a->win_n;
    if (a->probing) {
        /* What the probe measured is the baseline if it is lower (a
         * service that was slow at first, or a queue we built while the
         * baseline was set); then back to the limit we came from: if the
         * baseline fell, the next windows are slow and decrease it. */
        if (mean < a->long_rtt)
            a->long_rtt = mean;
        a->limit = a->saved;
        a->probing = 0;
        window_reset(a, now);
        return;
    }
    int slow = a->long_rtt > 0 && a->win_slow * 2 > a->win_n;
    int used = (double)a->win_inflight * 2 >= a->limit;
    /* The baseline (no-load latency, as in TCP Vegas): a faster window is
     * the new normal at once (halfway per window). A slower one never
     * moves it while the limit can still fall: else queueing we cause
     * creeps into it and the limit with it. At min the limit cannot fall
     * further, so the service is slower for reasons of its own: a slow
     * window there moves it by ADAPT_LONG_WEIGHT, and after some windows
     * that is the new normal and the limit grows again. */
    double prev = a->long_rtt;
    if (a->long_rtt <= 0)
        a->long_rtt = mean;
    else if (mean < a->long_rtt)
        a->long_rtt = (a->long_rtt + mean) / 2;
    else if (slow && a->limit <= a->min)
        a->long_rtt += ADAPT_LONG_WEIGHT * (mean - a->long_rtt);
    if (slow) {
        decrease(a, clamp(ADAPT_TOLERANCE * prev / mean, 0.5, 0.9), now);
        return;
    }
    if (used) {
        a->limit = a->slow_start ? a->limit * 2 : a->limit + sqrt(a->limit);
        a->limit = clamp(a->limit, a->min, a->max);
        a->increases++;
        /* Every ADAPT_PROBE_EVERY used windows, re-measure the baseline
         * (BBR's ProbeRTT): a baseline only ever lowered by windows that
         * carry our own queueing never finds the service's real one. */
        if (!a->slow_start && ++a->since_probe >= ADAPT_PROBE_EVERY) {
            probe_start(a, now);
            return;
        }
    }
    window_reset(a, now);
}

size_t adapt_sample(adapt *a, uint64_t started, uint64_t now, size_t inflight, int overload)
{
    /* An attempt that started before the last decrease ran under the old
     * limit: what it says is already acted on. */
    if (a->has_cut && started < a->cut_at)
        return adapt_limit(a);
    if (overload) {
        a->overloads++;
        decrease(a, ADAPT_BACKOFF, now);
        return adapt_limit(a);
    }
    double ms = (double)(now >= started ? now - started : 0);
    if (a->long_rtt > 0) {
        if (ms > ADAPT_TOLERANCE * a->long_rtt)
            a->win_slow++;
        ms = fmin(ms, 2 * ADAPT_TOLERANCE * a->long_rtt);
    }
    a->win_n++;
    a->win_sum += ms;
    if (inflight > a->win_inflight)
        a->win_inflight = inflight;
    double need = fmin(ADAPT_MIN_SAMPLES, fmax(1, floor(a->limit / 2)));
    double rtt = a->long_rtt > 0 ? a->long_rtt : a->win_sum / a->win_n;
    if (a->win_n >= need && (double)(now - a->win_start) >= rtt)
        window_close(a, now);
    return adapt_limit(a);
}
