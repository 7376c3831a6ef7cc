/* Reconciliation (api.md "Reconciliation: stage changes that no webhook
 * reported"): every RECONCILE_INTERVAL, for each connected tenant with an
 * enabled stage_changed workflow, a pass lists the opportunities Lever
 * changed since the last pass (updated_at_start = the stored cursor minus
 * one minute of overlap, never before the connection's connected_at), one
 * page of LB_RECONCILE_PAGE at a time, and reads the stageChanges that each
 * opportunity of the page carries: no read per opportunity. A change into
 * a workflow's to_stage becomes an event of source "reconcile" with the
 * jobs its workflows derive, unless the store finds it already an event
 * (store.h, event_insert.stage_id: an accepted delivery of the same
 * opportunity and stage within LB_RECONCILE_WINDOW_MS, or the same change
 * made an event by an earlier pass). When the last page is done the cursor
 * (the pass's start) is stored, and with it, when the pass found changes,
 * the platform event webhook.not_delivering.
 *
 * A pass holds one page and its events at a time. A pass that fails (Lever
 * or the store) stores no cursor: the next one covers the same changes
 * again, and the store's dedupe keeps them one event each. At most
 * LB_RECONCILE_PASSES passes run at once; other tenants wait their turn in
 * FIFO order. All Lever calls go through the tenant's outbound queue.
 *
 * Owner: main; loop thread only. See docs/internals/reconcile.md. */
#ifndef LB_ENGINE_RECONCILE_H
#define LB_ENGINE_RECONCILE_H

#include "engine/jobs.h"
#include "engine/outbound.h"
#include "state/connections.h"
#include "state/missed.h"
#include "state/workflows.h"
#include "store/store.h"

#include <stdint.h>
#include <uv.h>

#define LB_RECONCILE_OVERLAP_MS (60 * 1000)
#define LB_RECONCILE_WINDOW_MS (5 * 60 * 1000)
#define LB_RECONCILE_PAGE 100
#define LB_RECONCILE_PASSES 16

typedef struct lb_reconcile lb_reconcile;

typedef struct {
    int64_t interval_ms; /* RECONCILE_INTERVAL; 0: passes only on request */
    lb_jobs *jobs;       /* where events' jobs and platform events go */
    lb_missed *missed;   /* counts of changes found only by passes */
    const lb_gate *gate; /* tenants this replica reconciles (NULL: all) */
} lb_reconcile_config;

typedef struct {
    uint64_t passes, failed, events, pages;
} lb_reconcile_stats;

int lb_reconcile_new(uv_loop_t *loop, lb_store *store, lb_outbound *ob, lb_conns *conns,
                     lb_workflows *workflows, const lb_reconcile_config *cfg,
                     const lb_jobs_env *env, lb_reconcile **out);
/* A pass for the tenant as soon as one may run (after the one under way,
 * if any). 0, or LB_ENOTFOUND when the tenant is not connected. */
int lb_reconcile_now(lb_reconcile *r, const char *tenant);
/* The tenant was disconnected or deleted: its pass stops (what is in
 * flight completes without effect). */
void lb_reconcile_forget(lb_reconcile *r, const char *tenant);
/* When the last pass of the tenant that this process completed started
 * (its changes up to then are events), or 0. */
int64_t lb_reconcile_done_at(const lb_reconcile *r, const char *tenant);
/* 1 while the tenant's pass runs or waits. */
int lb_reconcile_busy(const lb_reconcile *r, const char *tenant);
void lb_reconcile_stats_get(const lb_reconcile *r, lb_reconcile_stats *out);
/* Stops starting passes, cancels calls in flight, waits for the store
 * writes in flight, frees everything, then calls cb. */
void lb_reconcile_close(lb_reconcile *r, void (*cb)(void *data), void *data);

#endif
