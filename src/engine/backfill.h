/* Backfills (api.md "Dry run and backfill"): a stage_changed workflow
 * applied to every opportunity now in its to_stage, not archived, and
 * (when it has postings) applied to one of them. Lever's opportunity list
 * is read with those filters (stage_id, archived=false, posting_id), one
 * page of LB_BACKFILL_PAGE at a time, through the tenant's outbound queue
 * (engine/opplist.h); each opportunity of a page becomes an event of
 * source "backfill" with the workflow's jobs, and the whole page (its
 * events, the next page's offset, the counts) is one store op
 * (LB_STORE_BACKFILL_PAGE): a page committed is never listed again, a page
 * not committed is listed again after a restart, and the event's dedupe
 * key (<backfill id>:<opportunity id>) makes that harmless.
 *
 * Bounds: one page (its opportunities and events) in memory per backfill;
 * at most LB_BACKFILL_RUNNING backfills list at once, the others wait in
 * FIFO order; at most LB_BACKFILL_MAX known (running or waiting); one per
 * workflow. A backfill whose tenant has more than LB_BACKFILL_BACKLOG jobs
 * queued waits (LB_BACKFILL_BACKLOG_MS ticks) before listing its next page,
 * so the jobs it makes never pile up in memory faster than they run.
 *
 * Several replicas: only the holder of the tenant's lease (cfg.gate)
 * lists; a backfill of a tenant this replica does not hold waits, keeping
 * its slot, and reads its row again once it holds the lease (another
 * replica may have written pages meanwhile).
 *
 * Owner: main; loop thread only. See docs/internals/reconcile.md. */
#ifndef LB_ENGINE_BACKFILL_H
#define LB_ENGINE_BACKFILL_H

#include "engine/gate.h"
#include "engine/jobs.h"
#include "engine/outbound.h"
#include "state/connections.h"
#include "state/workflows.h"
#include "store/store.h"

#include <stdint.h>
#include <uv.h>

#define LB_BACKFILL_PAGE 100
#define LB_BACKFILL_RUNNING 4
#define LB_BACKFILL_MAX 1000
#define LB_BACKFILL_BACKLOG 2000
#define LB_BACKFILL_BACKLOG_MS 200

typedef struct lb_backfill lb_backfill;

typedef struct {
    lb_jobs *jobs;       /* where the events' jobs go */
    const lb_gate *gate; /* tenants this replica runs backfills of (NULL: all) */
} lb_backfill_config;

int lb_backfill_new(uv_loop_t *loop, lb_store *store, lb_outbound *ob, lb_conns *conns,
                    lb_workflows *workflows, const lb_backfill_config *cfg, const lb_jobs_env *env,
                    lb_backfill **out);
/* Start-up: loads the backfills stored as running and resumes each at its
 * stored offset. 0 or a negative code; cb-less, it runs the loop until the
 * store answers. */
int lb_backfill_load(lb_backfill *b);

/* status 0 with the new backfill's id, or the store's error. */
typedef void (*lb_backfill_started_cb)(void *data, int status, const char *id);
/* A backfill of workflow w (stage_changed) of its tenant. 0: the row is on
 * its way to the store and cb runs once it is written (the backfill then
 * runs); 1: one of this workflow runs already, its id in running_id, cb
 * never runs; LB_ETOOBIG: LB_BACKFILL_MAX known; LB_EINVAL: not a
 * stage_changed workflow; or the store's submit error. */
int lb_backfill_start(lb_backfill *b, const lb_workflow *w, lb_backfill_started_cb cb, void *data,
                      char running_id[LB_BACKFILL_ID_MAX + 1]);
/* Stops the backfill if this process runs it (a page in flight completes
 * first; nothing after it). The caller writes the row's end
 * (LB_STORE_BACKFILL_FINISH, "cancelled"), which the store orders after
 * that page. */
void lb_backfill_cancel(lb_backfill *b, const char *tenant, const char *id);
/* The tenant was disconnected or deleted: its backfills stop (a page in
 * flight completes first) and their rows end "failed", "Lever was
 * disconnected". */
void lb_backfill_forget(lb_backfill *b, const char *tenant);
/* Stops listing, cancels calls queued, waits for what is in flight, frees
 * everything, then calls cb. */
void lb_backfill_close(lb_backfill *b, void (*cb)(void *data), void *data);

#endif
