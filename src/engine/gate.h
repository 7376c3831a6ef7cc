/* The one question the engine asks about several replicas: may this
 * replica do the tenant's outbound work now (does it hold the tenant's
 * lease)? Whoever owns the leases (src/cluster/) answers it; main wires
 * it. The engine never includes that module: the arrow stays one way, and
 * the owner tells the engine of a change through lb_jobs_tenant_gained /
 * _lost and lb_provision_tenant_gained / _lost.
 *
 * A NULL gate, or one with a NULL holds, holds every tenant (SQLite, one
 * replica: everything as before). */
#ifndef LB_ENGINE_GATE_H
#define LB_ENGINE_GATE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    /* 1 when this replica may start outbound work for tenant. Cheap: called
     * for every job started. */
    int (*holds)(void *data, const char *tenant);
    /* The epoch of the tenant's lease this replica holds, 0 when it holds
     * none (or NULL: never fenced). With node, it fences the engine's job
     * writes: the store refuses them once the lease moved on. */
    int64_t (*epoch)(void *data, const char *tenant);
    const char *node;
    void *data;
} lb_gate;

static inline int lb_gate_holds(const lb_gate *g, const char *tenant)
{
    return g == NULL || g->holds == NULL || g->holds(g->data, tenant);
}

static inline int64_t lb_gate_epoch(const lb_gate *g, const char *tenant)
{
    return g == NULL || g->epoch == NULL || g->node == NULL ? 0 : g->epoch(g->data, tenant);
}

#endif
