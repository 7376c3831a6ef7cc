/* State sync between replicas on one PostgreSQL (docs/internals/cluster.md
 * "State sync"): the tenants, connections, hooks (their signature tokens
 * opened) and workflows in memory follow what any replica commits.
 *
 * Loaded whole at start (lb_sync_load); then the store reports each
 * tenant another process changed (lb_store_listen: a NOTIFY sent in the
 * change's transaction) and that tenant's rows are read again, a few
 * tens of ms later so a burst costs one read; every LB_SYNC_RELOAD_MS (and
 * after the listener reconnected, as it may have missed some) everything
 * is read again and what vanished is removed. A report of jobs for a
 * tenant this node holds starts the jobs' reload at once instead of at
 * the next lease cycle.
 *
 * What a reload applies is what the API would have applied after its own
 * write (the same state functions), and only what differs from memory:
 * applying the same committed rows again changes nothing. Nothing in the
 * engine keeps a pointer to a tenant, connection, hook or workflow across
 * a wait (they keep ids and look up again), so a change here is as safe
 * as one made through this node's API.
 *
 * On SQLite (one process, `shared` 0) only the start-up load runs: the
 * store never reports anything and nothing else writes it.
 *
 * Owner: main; loop thread only. */
#ifndef LB_CLUSTER_SYNC_H
#define LB_CLUSTER_SYNC_H

#include "cluster/cluster.h"
#include "engine/credentials.h"
#include "engine/jobs.h"
#include "engine/provision.h"
#include "state/connections.h"
#include "state/missed.h"
#include "state/stats.h"
#include "state/tenants.h"
#include "state/workflows.h"
#include "store/store.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* The full reload's period. Tests shorten it with the test-only
 * environment variable LB_TEST_STATE_RELOAD_MS. */
#define LB_SYNC_RELOAD_MS 60000
/* How long a tenant's reload waits after the first report of a change. */
#define LB_SYNC_DEBOUNCE_MS 20
/* Most tenants waiting for their reload; past it, one full reload. */
#define LB_SYNC_WANT_MAX 1024

typedef struct lb_sync lb_sync;

typedef struct {
    lb_tenants *tenants;
    lb_conns *conns;
    lb_workflows *workflows;
    int64_t reload_ms; /* 0: LB_SYNC_RELOAD_MS (or the test's variable) */
    int shared;        /* other processes write the store (PostgreSQL): reload
                          periodically; 0 (SQLite): the start-up load only */
} lb_sync_config;

/* The parts told of what changed; any may be NULL. */
typedef struct {
    lb_cluster *cluster; /* holds: who runs a tenant's jobs and hook */
    lb_jobs *jobs;
    lb_cred *cred;
    lb_provision *provision;
    lb_stats *stats;
    lb_missed *missed;
} lb_sync_parts;

int lb_sync_new(uv_loop_t *loop, lb_store *store, const lb_sync_config *cfg, lb_sync **out);
/* Start-up, before anything is served: loads every tenant, connection,
 * hook and workflow into the state, running the loop until the store has
 * answered. 0, or the store's code with one line in err. */
int lb_sync_load(lb_sync *y, char *err, size_t errlen);
/* Listening and the periodic reload start. */
void lb_sync_start(lb_sync *y, const lb_sync_parts *parts);
/* Stops listening and the timers, waits for the reloads in flight (their
 * results are dropped), frees y, then cb(data). Call once, before the
 * parts in lb_sync_parts close. */
void lb_sync_close(lb_sync *y, void (*cb)(void *data), void *data);

/* The store's rows of one tenant (scope 1: the rows of `tenant` alone,
 * which may be none: it was deleted) or of every tenant (scope 0: a tenant
 * in memory without a row is removed), applied to the state. Exposed for
 * the unit tests; the records stay the caller's. */
typedef struct {
    const lb_tenant_rec *tenants;
    size_t ntenants;
    const lb_conn_rec *conns;
    size_t nconns;
    const lb_hook_rec *hooks;
    size_t nhooks;
    const lb_workflow_rec *workflows;
    size_t nworkflows;
} lb_sync_rows;
void lb_sync_apply(lb_sync *y, const char *tenant, const lb_sync_rows *rows);

/* Reloads applied since lb_sync_new, by scope (for /metrics and tests). */
uint64_t lb_sync_reloads(const lb_sync *y, int full);

#endif
