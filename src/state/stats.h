/* Hourly counts for the console's charts: per tenant and in total, the
 * deliveries accepted, duplicate and refused, and the jobs succeeded and
 * failed, for the last LB_STATS_HOURS hours.
 *
 * Counted in memory (a ring of hours per tenant, about 1.2 KB each) and
 * added to the store's rows once a minute (LB_STORE_STATS_PUT: what was
 * counted since the last write, so several replicas add to one row),
 * loaded at start (lb_stats_load), so a restart loses at most the last
 * minute. Shared (PostgreSQL: other replicas count too), each write is
 * followed by a read of the current and previous hour's rows, which with
 * what is counted here and not yet written become what is shown: the
 * cluster's counts, at most a minute behind. Loop thread only. Owner:
 * main. */
#ifndef LB_STATE_STATS_H
#define LB_STATE_STATS_H

#include <stdint.h>
#include <uv.h>

#include "core/map.h"
#include "store/store.h"

#define LB_STATS_HOURS 24
#define LB_HOUR_MS (3600 * 1000LL)

typedef enum {
    LB_STAT_ACCEPTED,
    LB_STAT_DUPLICATE,
    LB_STAT_REFUSED,
    LB_STAT_SUCCEEDED,
    LB_STAT_FAILED,
} lb_stat;

typedef struct lb_stats lb_stats;

/* The hours, oldest first: hour[i] (ms / LB_HOUR_MS) and its counts. */
typedef struct {
    int64_t hour[LB_STATS_HOURS];
    uint32_t count[LB_STATS_HOURS][LB_STATS_KINDS];
} lb_stats_series;

/* store may be NULL (nothing written); shared: other processes add to the
 * same rows. Returns 0 and *out, or a negative code. */
int lb_stats_new(uv_loop_t *loop, lb_store *store, int64_t flush_ms, int shared, lb_stats **out);
/* Rows from LB_STORE_STATS_LOAD, before anything is counted. */
void lb_stats_load(lb_stats *st, const lb_stats_rec *recs, size_t n, int64_t now_ms);
/* tenant NULL or "": counted in the total only. */
void lb_stats_add(lb_stats *st, const char *tenant, lb_stat what, int64_t now_ms);
/* tenant NULL: the total of every tenant (and of none). Hours without counts
 * are zeros. */
void lb_stats_get(const lb_stats *st, const char *tenant, int64_t now_ms, lb_stats_series *out);
/* A deleted tenant: its own series goes (its hours stay in the total). */
void lb_stats_forget(lb_stats *st, const char *tenant);
/* Writes what changed, waits for it, closes the timer, frees, then calls cb
 * from a loop callback. */
void lb_stats_close(lb_stats *st, void (*cb)(void *data), void *data);

#endif
