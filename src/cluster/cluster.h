/* Several replicas on one PostgreSQL: this node's heartbeat and its tenant
 * leases (docs/internals/cluster.md has the protocol, the clocks and the
 * margins).
 *
 * Every third of LEASE_TTL the node writes its heartbeat and reads every
 * node and every tenant's lease in one batch, then, in the next, renews the
 * leases it keeps, releases those over its share and takes expired or free
 * ones up to its share: ceil(tenants / live nodes). The epoch is compared
 * and set by the store, so two nodes never both win a take. A lease is used
 * only until LEASE_TTL - margin after the write that took or renewed it was
 * submitted, by the monotonic clock; past that the tenant's work stops
 * (lb_jobs_tenant_lost, lb_provision_tenant_lost) whatever the store says.
 *
 * The engine asks lb_cluster_gate() whether it may work for a tenant;
 * it never includes this module. This module tells the engine of changes.
 *
 * Disabled (SQLite, one process): the node holds every tenant, nothing is
 * written, and everything behaves as without this module.
 *
 * Owner: main; loop thread only. */
#ifndef LB_CLUSTER_CLUSTER_H
#define LB_CLUSTER_CLUSTER_H

#include "engine/gate.h"
#include "engine/jobs.h"
#include "engine/provision.h"
#include "engine/reconcile.h"
#include "state/tenants.h"
#include "store/store.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct lb_cluster lb_cluster;

typedef struct {
    const char *node_id;       /* NODE_ID (copied) */
    const char *advertise_url; /* ADVERTISE_URL (copied) */
    int64_t ttl_ms;            /* LEASE_TTL */
    int enabled;               /* 0: hold every tenant, no store traffic */
    const lb_tenants *tenants; /* the tenants this node knows (borrowed) */
} lb_cluster_config;

/* The margin: a lease is used until ttl - margin after its write left. */
int64_t lb_cluster_margin_ms(int64_t ttl_ms);

int lb_cluster_new(uv_loop_t *loop, lb_store *store, const lb_cluster_config *cfg,
                   lb_cluster **out);
/* The gate the engine asks (valid as long as the cluster). */
const lb_gate *lb_cluster_gate(lb_cluster *c);
/* The parts told of leases gained and lost (any may be NULL); then the
 * first cycle starts. */
void lb_cluster_start(lb_cluster *c, lb_jobs *jobs, lb_provision *provision,
                      lb_reconcile *reconcile);
/* A cycle as soon as none is in flight (a tenant was just made here). */
void lb_cluster_kick(lb_cluster *c);
/* 1 when this node may work for tenant now. */
int lb_cluster_holds(const lb_cluster *c, const char *tenant);
/* A request needs the tenant's lease and no live node holds it: the next
 * cycle (started now, or as soon as the one in flight ends) takes it if it
 * is still free, over this node's share if need be, with the gained
 * tenant's work started as for any take; then cb(data, held) runs, held 1
 * when this node holds it now. 0; or LB_ECLOSED (disabled, draining,
 * closing), LB_ETOOBIG (too many waiting) or LB_EINVAL, and cb never runs.
 * Draining or closing wakes every waiter (held 0). */
int lb_cluster_acquire(lb_cluster *c, const char *tenant, void (*cb)(void *data, int held),
                       void *data);

/* SIGTERM: takes nothing more and starts no new work, waits for the jobs
 * running now to end, then releases every lease (its expiry set to now, so
 * other nodes take it at their next cycle) and calls cb. The caller bounds
 * the wait: lb_cluster_close releases at once. */
void lb_cluster_drain(lb_cluster *c, void (*cb)(void *data), void *data);
/* Drops every tenant's work, releases the leases (if not yet), waits for
 * the store, closes the timers, frees c and calls cb. Call once. */
void lb_cluster_close(lb_cluster *c, void (*cb)(void *data), void *data);

/* What /v1/cluster and the tenant body show: the last read (at most a third
 * of LEASE_TTL old), with this node's own writes since. */
typedef struct {
    char id[LB_NODE_ID_MAX + 1];
    const char *advertise_url;
    int64_t last_seen_at;
    size_t leases; /* unexpired */
} lb_cluster_node;

const char *lb_cluster_node_id(const lb_cluster *c);
int lb_cluster_enabled(const lb_cluster *c);
/* The nodes seen alive (this one first); *n of them, valid until the next
 * cycle ends. Disabled: this node alone, holding every tenant. */
const lb_cluster_node *lb_cluster_nodes(lb_cluster *c, size_t *n);
/* The tenant's lease as last seen: 1 and *out (node, epoch, expires_at;
 * expires_at 0 when it never expires: disabled), or 0 when it has none. */
int lb_cluster_lease(const lb_cluster *c, const char *tenant, lb_lease_rec *out);
/* Leases this node holds. */
size_t lb_cluster_held(const lb_cluster *c);

#endif
