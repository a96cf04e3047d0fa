/*
 * runtime_int.h: what runtime.c and family.c share, and nobody else.
 */
#ifndef MW_RUNTIME_INT_H
#define MW_RUNTIME_INT_H

#include "runtime.h"

/* Once per run, however it ends: cancel the children, then run the end
 * hooks (family.c). Called by runtime.c when a run returns, raises, or is
 * discarded. */
void rt_end_run(rt_fiber *f, rt_end how);

#endif
