/* Stage changes found only by reconciliation (api.md: the connection's
 * webhook.missed, "in the last 7 days"), per tenant, in a ring of hours.
 * Loaded at start from the store's reconcile events
 * (LB_STORE_RECONCILED_COUNTS) and counted as passes make new ones, so it
 * is as durable as the events. Loop thread only. Owner: main, through
 * lb_api and the reconciliation engine. */
#ifndef LB_STATE_MISSED_H
#define LB_STATE_MISSED_H

#include "core/map.h"
#include "store/store.h"

#include <stddef.h>
#include <stdint.h>

#define LB_MISSED_HOURS (7 * 24)

typedef struct lb_missed {
    lb_map by_tenant;   /* tenant id -> its ring */
    int64_t started_at; /* ms: when the process loaded them */
} lb_missed;

void lb_missed_init(lb_missed *m, int64_t now_ms);
void lb_missed_free(lb_missed *m);
/* Rows of LB_STORE_RECONCILED_COUNTS since now - LB_MISSED_HOURS. */
void lb_missed_load(lb_missed *m, const lb_hour_count_rec *recs, size_t n, int64_t now_ms);
/* Every count replaced by the rows of LB_STORE_RECONCILED_COUNTS since now
 * - LB_MISSED_HOURS: with several replicas, the passes of the tenant's
 * holder, which this replica does not count itself. Keeps what
 * lb_missed_recent knows of this process's own passes. */
void lb_missed_set(lb_missed *m, const lb_hour_count_rec *recs, size_t n, int64_t now_ms);
/* One more change found only by reconciliation, now. */
void lb_missed_add(lb_missed *m, const char *tenant, int64_t now_ms);
/* The tenant's changes of the last LB_MISSED_HOURS hours. */
uint32_t lb_missed_count(const lb_missed *m, const char *tenant, int64_t now_ms);
/* 1 when a delivery arriving now could report a change that a pass of
 * this process (or of the one before it) made an event of within
 * window_ms: the newest such event is younger than the window, or the
 * process started less than a window ago. Lets the webhook path skip the
 * store's stage check otherwise. */
int lb_missed_recent(const lb_missed *m, const char *tenant, int64_t now_ms, int64_t window_ms);
void lb_missed_forget(lb_missed *m, const char *tenant);

#endif
