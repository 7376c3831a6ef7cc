/* Retention: a background pruner of old events and finished jobs.
 *
 * Every `interval` (at most a minute, RETENTION/2 when that is shorter) a
 * pass deletes, oldest first, what is older than RETENTION, in operations of
 * LB_PRUNE_BATCH rows of each table (LB_STORE_PRUNE). The next operation of a
 * pass is submitted only when the previous one has committed, so a pass never
 * holds more than one small operation in a batch and ingest interleaves with
 * it. What exactly-once needs is kept by the store (see LB_STORE_PRUNE).
 *
 * Owner: the caller of lb_pruner_start; loop thread only. */
#ifndef LB_STORE_PRUNE_H
#define LB_STORE_PRUNE_H

#include <stdint.h>
#include <uv.h>

#include "store/store.h"

#define LB_PRUNE_BATCH 200

typedef struct lb_pruner lb_pruner;

typedef struct {
    size_t passes; /* passes finished */
    size_t jobs;   /* rows deleted since start */
    size_t events;
    int64_t last_pass_ms; /* when the last pass finished, 0: none yet */
} lb_pruner_stats;

/* retention_ms > 0 (0 means keep all: do not start one). Returns 0 and *out,
 * or a negative code. The first pass starts after one interval. */
int lb_pruner_start(uv_loop_t *loop, lb_store *store, int64_t retention_ms, lb_pruner **out);

/* Runs a pass now unless one is under way (tests, operators). */
void lb_pruner_kick(lb_pruner *p);

void lb_pruner_stats_get(const lb_pruner *p, lb_pruner_stats *out);

/* Stops: waits for the operation in flight, closes the timer, frees, then
 * calls cb (from a loop callback, never from inside this call). Call before
 * closing the store. */
void lb_pruner_close(lb_pruner *p, void (*cb)(void *data), void *data);

#endif
