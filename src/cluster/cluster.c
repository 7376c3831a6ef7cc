/* Tenant leases: see cluster.h and docs/internals/cluster.md. */
#include "cluster/cluster.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/map.h"
#include "core/metrics.h"
#include "core/time.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "cluster"
/* A node not seen for this long is forgotten (its row deleted). */
#define FORGET_MS (3600LL * 1000)
/* How often a drain looks whether the running jobs have ended. */
#define DRAIN_POLL_MS 50
/* Jobs written by other replicas are looked for back to this far before
 * the last look (their updated_at is the writer's clock). */
#define RELOAD_SLACK_MS 60000

/* A lease this node holds. Owned by the map `held`. */
typedef struct {
    char tenant[LB_TENANT_ID_MAX + 1];
    int64_t epoch;
    int64_t expires_at; /* the database's clock, for show */
    uint64_t stop_ns;   /* monotonic: no new work from here on */
} lease;

typedef enum { IDLE, READING, WRITING } phase;

/* A request waiting for its tenant's lease (lb_cluster_acquire). Owned by
 * the list it is on; freed once its callback ran. */
typedef struct waiter {
    char tenant[LB_TENANT_ID_MAX + 1];
    void (*cb)(void *data, int held);
    void *data;
    struct waiter *next;
} waiter;

/* Most requests waiting for a lease at once (past it: LB_ETOOBIG). */
#define WAITERS_MAX 256

struct lb_cluster {
    uv_loop_t *loop;
    lb_store *store;
    lb_gate gate;
    char node[LB_NODE_ID_MAX + 1];
    char *advertise_url;
    int64_t ttl_ms, margin_ms;
    int enabled;
    const lb_tenants *tenants;
    lb_jobs *jobs;
    lb_provision *provision;
    lb_reconcile *reconcile;
    lb_map held; /* tenant -> lease */

    uv_timer_t tick; /* every ttl / 3: one cycle */
    uv_timer_t stop; /* at the earliest stop_ns */
    uv_timer_t poll; /* a drain waiting for the running jobs */
    int timers_open;
    int timers_closing;
    int kicked; /* a cycle asked for while one was in flight */
    phase phase;
    int inflight; /* store ops in flight */
    lb_store_op beat, read, write;
    lb_lease_item *items;
    uint64_t write_sent_ns;
    int64_t reload_since; /* wall ms: the next periodic reload's since */

    /* the last read, with this node's writes since */
    lb_lease_rec *view;
    size_t nview;
    lb_cluster_node *nodes;
    size_t nnodes;
    lb_node_rec *node_recs; /* what nodes[].advertise_url points into */
    size_t nnode_recs;
    lb_cluster_node self;

    waiter *waiting;  /* for the next cycle's decision */
    waiter *deciding; /* in the cycle in flight: woken when it ends */
    size_t nwaiters;

    int draining;  /* SIGTERM: no takes, no new work */
    int releasing; /* waiting for the cycle in flight, then releasing */
    int released;
    void (*drain_cb)(void *);
    void *drain_data;
    int closing;
    void (*close_cb)(void *);
    void *close_data;

    lb_metric *m_held, *m_gained, *m_lost;
};

static void cycle_done(lb_cluster *c);
static void wake(lb_cluster *c, waiter **list);
static void maybe_closed(lb_cluster *c);
static void release_all(lb_cluster *c);

int64_t lb_cluster_margin_ms(int64_t ttl_ms)
{
    int64_t m = ttl_ms / 5;
    return m < 250 ? 250 : m;
}

static uint64_t mono_ns(void)
{
    return uv_hrtime();
}

/* ---- holding ------------------------------------------------------------- */

int lb_cluster_holds(const lb_cluster *c, const char *tenant)
{
    if (!c->enabled) return 1;
    if (c->draining) return 0;
    const lease *l = lb_map_get(&c->held, tenant);
    return l != NULL && mono_ns() < l->stop_ns;
}

static int gate_holds(void *data, const char *tenant)
{
    return lb_cluster_holds(data, tenant);
}

static int64_t gate_epoch(void *data, const char *tenant)
{
    const lb_cluster *c = data;
    const lease *l = c->enabled ? lb_map_get(&c->held, tenant) : NULL;
    return l != NULL ? l->epoch : 0;
}

const lb_gate *lb_cluster_gate(lb_cluster *c)
{
    return &c->gate;
}

size_t lb_cluster_held(const lb_cluster *c)
{
    return c->enabled ? c->held.count : c->tenants->count;
}

static void count_held(lb_cluster *c)
{
    lb_metric_set(c->m_held, (double)c->held.count);
}

/* The tenant's work stops here, before anyone else may take it. */
static void lose(lb_cluster *c, lease *l, const char *why)
{
    lb_info(MOD, "tenant=%s: lease (epoch %lld) %s", l->tenant, (long long)l->epoch, why);
    lb_map_del(&c->held, l->tenant);
    if (c->jobs != NULL) lb_jobs_tenant_lost(c->jobs, l->tenant);
    if (c->provision != NULL) lb_provision_tenant_lost(c->provision, l->tenant);
    if (c->reconcile != NULL) lb_reconcile_forget(c->reconcile, l->tenant); /* its pass stops */
    lb_metric_add(c->m_lost, 1);
    lb_free(l);
    count_held(c);
}

static void stop_cb(uv_timer_t *t);

static void arm_stop(lb_cluster *c)
{
    uint64_t first = 0;
    size_t pos = 0;
    lease *l;
    while ((l = lb_map_next(&c->held, &pos)) != NULL)
        if (first == 0 || l->stop_ns < first) first = l->stop_ns;
    if (first == 0 || c->closing) {
        uv_timer_stop(&c->stop);
        return;
    }
    uint64_t now = mono_ns();
    uint64_t ms = first > now ? (first - now) / 1000000 + 1 : 0;
    uv_timer_start(&c->stop, stop_cb, ms, 0);
}

static void stop_cb(uv_timer_t *t)
{
    lb_cluster *c = t->data;
    uint64_t now = mono_ns();
    lease *gone[64];
    size_t n;
    do { /* collect first: losing changes the map */
        n = 0;
        size_t pos = 0;
        lease *l;
        while ((l = lb_map_next(&c->held, &pos)) != NULL && n < 64)
            if (l->stop_ns <= now) gone[n++] = l;
        for (size_t i = 0; i < n; i++)
            lose(c, gone[i], "not renewed in time: the tenant's work stopped");
    } while (n == 64);
    arm_stop(c);
}

/* ---- the view ------------------------------------------------------------ */

static lb_lease_rec *view_find(const lb_cluster *c, const char *tenant)
{
    size_t lo = 0, hi = c->nview;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int d = strcmp(c->view[mid].tenant_id, tenant);
        if (d == 0) return &c->view[mid];
        if (d < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static void view_set(lb_cluster *c, const char *tenant, int64_t epoch, int64_t expires_at,
                     int released)
{
    lb_lease_rec *v = view_find(c, tenant);
    if (v == NULL) return;
    snprintf(v->node, sizeof(v->node), "%s", c->node);
    v->epoch = epoch;
    v->expires_at = expires_at;
    v->expired = released;
}

int lb_cluster_lease(const lb_cluster *c, const char *tenant, lb_lease_rec *out)
{
    memset(out, 0, sizeof(*out));
    if (!c->enabled) {
        snprintf(out->tenant_id, sizeof(out->tenant_id), "%s", tenant);
        snprintf(out->node, sizeof(out->node), "%s", c->node);
        return 1;
    }
    const lb_lease_rec *v = view_find(c, tenant);
    if (v == NULL || v->node[0] == '\0') return 0;
    *out = *v;
    return 1;
}

const char *lb_cluster_node_id(const lb_cluster *c)
{
    return c->node;
}

int lb_cluster_enabled(const lb_cluster *c)
{
    return c->enabled;
}

const lb_cluster_node *lb_cluster_nodes(lb_cluster *c, size_t *n)
{
    if (!c->enabled || c->nnodes == 0) {
        snprintf(c->self.id, sizeof(c->self.id), "%s", c->node);
        c->self.advertise_url = c->advertise_url;
        c->self.last_seen_at = lb_time_now_ms();
        c->self.leases = lb_cluster_held(c);
        *n = 1;
        return &c->self;
    }
    /* this node's count is its own, not the read's */
    for (size_t i = 0; i < c->nnodes; i++)
        if (strcmp(c->nodes[i].id, c->node) == 0) c->nodes[i].leases = c->held.count;
    *n = c->nnodes;
    return c->nodes;
}

/* Nodes alive in the read, this one first, each with its unexpired leases. */
static void view_nodes(lb_cluster *c, lb_node_rec *recs, size_t n)
{
    lb_free(c->nodes);
    lb_node_recs_free(c->node_recs, c->nnode_recs);
    c->node_recs = recs;
    c->nnode_recs = n;
    c->nodes = lb_calloc(n + 1, sizeof(*c->nodes));
    c->nnodes = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < n; i++) {
            int me = strcmp(recs[i].id, c->node) == 0;
            if (!recs[i].live || (pass == 0) != me) continue;
            lb_cluster_node *o = &c->nodes[c->nnodes++];
            snprintf(o->id, sizeof(o->id), "%s", recs[i].id);
            o->advertise_url = recs[i].advertise_url;
            o->last_seen_at = recs[i].last_seen_at;
        }
    for (size_t k = 0; k < c->nview; k++) {
        if (c->view[k].expired || c->view[k].node[0] == '\0') continue;
        for (size_t i = 0; i < c->nnodes; i++)
            if (strcmp(c->nodes[i].id, c->view[k].node) == 0) {
                c->nodes[i].leases++;
                break;
            }
    }
}

/* ---- the cycle ----------------------------------------------------------- */

static int item_cmp(const void *a, const void *b)
{
    return strcmp(((const lb_lease_item *)a)->tenant_id, ((const lb_lease_item *)b)->tenant_id);
}

static void add_item(lb_lease_item *items, size_t *n, const char *tenant, int action, int64_t epoch)
{
    lb_lease_item *it = &items[(*n)++];
    memset(it, 0, sizeof(*it));
    snprintf(it->tenant_id, sizeof(it->tenant_id), "%s", tenant);
    it->action = action;
    it->epoch = epoch;
}

static void write_cb(lb_store_op *op);

/* What to renew, release and take, from a fresh read. */
static void decide(lb_cluster *c)
{
    size_t t = c->nview, live = 0;
    for (size_t i = 0; i < c->nnodes; i++)
        live++;
    if (live == 0) live = 1;
    size_t share = (t + live - 1) / live;

    /* Leases the read gives to others: this node holds them no more. */
    for (size_t k = 0; k < c->nview; k++) {
        const lb_lease_rec *v = &c->view[k];
        lease *l = lb_map_get(&c->held, v->tenant_id);
        if (l != NULL && (strcmp(v->node, c->node) != 0 || v->epoch != l->epoch))
            lose(c, l, "moved on to another node");
    }
    /* (a lease of a tenant deleted since is renewed in vain: the write says) */

    lb_lease_item *items = lb_calloc(t > 0 ? t : 1, sizeof(*items));
    size_t n = 0, keep = 0;
    /* Renew what this node holds. A lease under its name that it does not
     * hold (a previous process with the same NODE_ID, killed) is taken
     * back below, with a new epoch. */
    for (size_t k = 0; k < c->nview; k++) {
        const lb_lease_rec *v = &c->view[k];
        if (strcmp(v->node, c->node) == 0 && lb_map_get(&c->held, v->tenant_id) != NULL) {
            add_item(items, &n, v->tenant_id, LB_LEASE_RENEW, v->epoch);
            keep++;
        }
    }
    /* share + 1: the slack api.md allows, so that a node at its share can
     * still take over one lease of a node that died, and so that leases do
     * not move back and forth when tenants / nodes is not whole. */
    size_t cap = share + 1;
    if (!c->draining && keep > cap) {
        /* Over it: release the extras that another live node has room for
         * (it takes them at its next cycle). */
        size_t room = 0;
        for (size_t i = 0; i < c->nnodes; i++)
            if (strcmp(c->nodes[i].id, c->node) != 0 && c->nodes[i].leases < share)
                room += share - c->nodes[i].leases;
        size_t extra = keep - cap < room ? keep - cap : room;
        for (size_t i = n; i > 0 && extra > 0; i--) {
            lb_lease_item *it = &items[i - 1];
            if (it->action != LB_LEASE_RENEW) continue;
            lease *l = lb_map_get(&c->held, it->tenant_id);
            if (l != NULL) lose(c, l, "released: over this node's share");
            it->action = LB_LEASE_RELEASE;
            extra--;
            keep--;
        }
    }
    /* Requests waiting for a lease nobody holds (lb_cluster_acquire): taken
     * now, over the cap if need be; a later cycle releases extras that
     * other nodes have room for. They are woken when this cycle ends. */
    for (waiter *w = c->deciding; w != NULL && !c->draining; w = w->next) {
        const lb_lease_rec *v = view_find(c, w->tenant);
        if (v == NULL || (!v->expired && strcmp(v->node, c->node) != 0)) continue;
        if (lb_map_get(&c->held, v->tenant_id) != NULL) continue;
        if (lb_tenants_get(c->tenants, v->tenant_id) == NULL) continue;
        int dup = 0;
        for (size_t i = 0; i < n && !dup; i++)
            dup = strcmp(items[i].tenant_id, v->tenant_id) == 0;
        if (!dup) add_item(items, &n, v->tenant_id, LB_LEASE_TAKE, v->epoch);
    }
    if (!c->draining && keep < cap && t > 0) {
        /* Take expired or free leases of tenants this node knows, from a
         * random place so that nodes starting together pick apart. */
        size_t want = cap - keep, start = randombytes_uniform((uint32_t)t);
        for (size_t j = 0; j < t && want > 0; j++) {
            const lb_lease_rec *v = &c->view[(start + j) % t];
            int own = strcmp(v->node, c->node) == 0;
            if ((!v->expired && !own) || lb_map_get(&c->held, v->tenant_id) != NULL) continue;
            if (lb_tenants_get(c->tenants, v->tenant_id) == NULL) continue;
            int dup = 0; /* taken above for a waiting request */
            for (size_t i = 0; i < n && !dup; i++)
                dup = strcmp(items[i].tenant_id, v->tenant_id) == 0;
            if (dup) continue;
            add_item(items, &n, v->tenant_id, LB_LEASE_TAKE, v->epoch);
            want--;
        }
    }
    if (n == 0) {
        lb_free(items);
        cycle_done(c);
        return;
    }
    qsort(items, n, sizeof(*items), item_cmp);
    c->items = items;
    memset(&c->write, 0, sizeof(c->write));
    c->write.kind = LB_STORE_LEASE_WRITE;
    c->write.lease_write.node = c->node;
    c->write.lease_write.ttl_ms = c->ttl_ms;
    c->write.lease_write.items = items;
    c->write.lease_write.count = n;
    c->write.cb = write_cb;
    c->write.data = c;
    c->write_sent_ns = mono_ns();
    int rc = lb_store_submit(c->store, &c->write);
    if (rc != 0) {
        lb_warn(MOD, "cannot write leases: %s", lb_strerror(rc));
        lb_free(items);
        c->items = NULL;
        cycle_done(c);
        return;
    }
    c->inflight++;
    c->phase = WRITING;
}

static void write_cb(lb_store_op *op)
{
    lb_cluster *c = op->data;
    c->inflight--;
    size_t gained = 0;
    if (op->status != 0) {
        lb_warn(MOD, "leases not written: %s (held ones stop at their deadline)",
                lb_strerror(op->status));
    } else {
        uint64_t stop_ns = c->write_sent_ns + (uint64_t)(c->ttl_ms - c->margin_ms) * 1000000u;
        for (size_t i = 0; i < op->lease_write.count; i++) {
            const lb_lease_item *it = &op->lease_write.items[i];
            lease *l = lb_map_get(&c->held, it->tenant_id);
            if (it->action == LB_LEASE_RELEASE) {
                if (it->ok) view_set(c, it->tenant_id, it->epoch, it->expires_at, 1);
                continue;
            }
            if (!it->ok) {
                if (l != NULL) lose(c, l, "not renewed: it moved on");
                continue;
            }
            view_set(c, it->tenant_id, it->epoch, it->expires_at, 0);
            if (l == NULL && (c->closing || c->releasing)) continue; /* released below */
            if (l == NULL) {
                l = LB_NEW(lease);
                snprintf(l->tenant, sizeof(l->tenant), "%s", it->tenant_id);
                lb_map_put(&c->held, l->tenant, l);
                lb_metric_add(c->m_gained, 1);
                lb_info(MOD, "tenant=%s: lease taken (epoch %lld)", l->tenant,
                        (long long)it->epoch);
                gained++;
            }
            l->epoch = it->epoch;
            l->expires_at = it->expires_at;
            l->stop_ns = stop_ns;
        }
        count_held(c);
        arm_stop(c);
        /* The gained tenants' work starts: what memory has, then the store's. */
        for (size_t i = 0; gained > 0 && i < op->lease_write.count; i++) {
            const lb_lease_item *it = &op->lease_write.items[i];
            if (it->action == LB_LEASE_RELEASE || !it->ok || !lb_cluster_holds(c, it->tenant_id))
                continue;
            if (c->jobs != NULL) lb_jobs_tenant_gained(c->jobs, it->tenant_id);
            if (c->provision != NULL) lb_provision_tenant_gained(c->provision, it->tenant_id);
        }
    }
    lb_free(c->items);
    c->items = NULL;
    if (c->jobs != NULL && c->held.count > 0 && !c->closing) {
        /* Jobs other replicas wrote for these tenants (all of them for a
         * tenant just gained). */
        int64_t now = lb_time_now_ms();
        if (lb_jobs_reload(c->jobs, c->node, gained > 0 ? 0 : c->reload_since) == 0)
            c->reload_since = now - RELOAD_SLACK_MS;
    }
    cycle_done(c);
}

static void beat_cb(lb_store_op *op)
{
    lb_cluster *c = op->data;
    c->inflight--;
    if (op->status != 0) lb_warn(MOD, "heartbeat not written: %s", lb_strerror(op->status));
    maybe_closed(c);
}

static void read_cb(lb_store_op *op)
{
    lb_cluster *c = op->data;
    c->inflight--;
    if (op->status != 0) {
        lb_warn(MOD, "cannot read the leases: %s (held ones stop at their deadline)",
                lb_strerror(op->status));
        cycle_done(c);
        return;
    }
    lb_free(c->view);
    c->view = op->cluster_read.leases;
    c->nview = op->cluster_read.nleases;
    view_nodes(c, op->cluster_read.nodes, op->cluster_read.nnodes);
    op->cluster_read.leases = NULL;
    op->cluster_read.nodes = NULL;
    if (c->closing || c->releasing) {
        cycle_done(c);
        return;
    }
    decide(c);
}

static void tick_cb(uv_timer_t *t)
{
    lb_cluster *c = t->data;
    if (c->phase != IDLE || c->closing || c->releasing) return;
    memset(&c->beat, 0, sizeof(c->beat));
    c->beat.kind = LB_STORE_NODE_BEAT;
    c->beat.node_beat.node = c->node;
    c->beat.node_beat.advertise_url = c->advertise_url;
    c->beat.node_beat.forget_ms = FORGET_MS;
    c->beat.cb = beat_cb;
    c->beat.data = c;
    memset(&c->read, 0, sizeof(c->read));
    c->read.kind = LB_STORE_CLUSTER_READ;
    c->read.cluster_read.live_ms = c->ttl_ms;
    c->read.cb = read_cb;
    c->read.data = c;
    if (lb_store_submit(c->store, &c->beat) == 0) c->inflight++;
    /* The requests waiting for a lease are decided on with this read. */
    c->deciding = c->waiting;
    c->waiting = NULL;
    int rc = lb_store_submit(c->store, &c->read);
    if (rc != 0) {
        lb_warn(MOD, "cannot read the leases: %s", lb_strerror(rc));
        wake(c, &c->deciding);
        return;
    }
    c->inflight++;
    c->phase = READING;
}

void lb_cluster_kick(lb_cluster *c)
{
    if (!c->enabled || c->closing || c->draining) return;
    if (c->phase != IDLE) {
        c->kicked = 1;
        return;
    }
    tick_cb(&c->tick);
}

static void cycle_done(lb_cluster *c)
{
    c->phase = IDLE;
    wake(c, &c->deciding);
    if (c->kicked && !c->closing && !c->releasing) {
        c->kicked = 0;
        tick_cb(&c->tick);
        return;
    }
    if (c->releasing && !c->released) release_all(c);
    maybe_closed(c);
}

/* ---- a lease for a request ---------------------------------------------- */

/* Calls back every waiter of list (which the callbacks may not touch: they
 * may add waiters to c->waiting only). */
static void wake(lb_cluster *c, waiter **list)
{
    waiter *w = *list;
    *list = NULL;
    while (w != NULL) {
        waiter *next = w->next;
        c->nwaiters--;
        w->cb(w->data, lb_cluster_holds(c, w->tenant));
        lb_free(w);
        w = next;
    }
}

int lb_cluster_acquire(lb_cluster *c, const char *tenant, void (*cb)(void *data, int held),
                       void *data)
{
    if (!c->enabled || c->draining || c->closing || c->releasing) return LB_ECLOSED;
    if (strlen(tenant) > LB_TENANT_ID_MAX) return LB_EINVAL;
    if (c->nwaiters >= WAITERS_MAX) return LB_ETOOBIG;
    waiter *w = LB_NEW(waiter);
    snprintf(w->tenant, sizeof(w->tenant), "%s", tenant);
    w->cb = cb;
    w->data = data;
    w->next = c->waiting;
    c->waiting = w;
    c->nwaiters++;
    lb_cluster_kick(c);
    return 0;
}

/* ---- draining and closing ------------------------------------------------ */

static void release_cb(lb_store_op *op)
{
    lb_cluster *c = op->data;
    c->inflight--;
    if (op->status != 0)
        lb_warn(MOD, "leases not released: %s (others take them when they expire)",
                lb_strerror(op->status));
    else
        lb_info(MOD, "released %zu lease(s)", op->lease_write.count);
    lb_free(c->items);
    c->items = NULL;
    void (*cb)(void *) = c->drain_cb;
    c->drain_cb = NULL;
    if (cb != NULL) cb(c->drain_data);
    maybe_closed(c);
}

/* Stops every tenant's work, then expires its leases now. Once no cycle is
 * in flight (else when it ends). */
static void release_all(lb_cluster *c)
{
    c->releasing = 1;
    if (c->phase != IDLE || c->released) return;
    c->released = 1;
    uv_timer_stop(&c->tick);
    uv_timer_stop(&c->poll);
    size_t n = c->held.count, k = 0;
    lb_lease_item *items = n > 0 ? lb_calloc(n, sizeof(*items)) : NULL;
    size_t pos = 0;
    lease *l;
    while ((l = lb_map_next(&c->held, &pos)) != NULL)
        add_item(items, &k, l->tenant, LB_LEASE_RELEASE, l->epoch);
    for (size_t i = 0; i < k; i++)
        lose(c, lb_map_get(&c->held, items[i].tenant_id), "released: shutting down");
    arm_stop(c);
    /* This node leaves: the others count one node fewer at once, so their
     * shares grow enough to take its tenants. */
    memset(&c->beat, 0, sizeof(c->beat));
    c->beat.kind = LB_STORE_NODE_BEAT;
    c->beat.node_beat.node = c->node;
    c->beat.node_beat.advertise_url = c->advertise_url;
    c->beat.node_beat.leave = 1;
    c->beat.cb = beat_cb;
    c->beat.data = c;
    if (lb_store_submit(c->store, &c->beat) == 0) c->inflight++;
    if (k > 0) {
        qsort(items, k, sizeof(*items), item_cmp);
        c->items = items;
        memset(&c->write, 0, sizeof(c->write));
        c->write.kind = LB_STORE_LEASE_WRITE;
        c->write.lease_write.node = c->node;
        c->write.lease_write.ttl_ms = c->ttl_ms;
        c->write.lease_write.items = items;
        c->write.lease_write.count = k;
        c->write.cb = release_cb;
        c->write.data = c;
        if (lb_store_submit(c->store, &c->write) == 0) {
            c->inflight++;
            return;
        }
        lb_warn(MOD, "cannot release the leases: others take them when they expire");
        lb_free(items);
        c->items = NULL;
    }
    void (*cb)(void *) = c->drain_cb;
    c->drain_cb = NULL;
    if (cb != NULL) cb(c->drain_data);
}

static void poll_cb(uv_timer_t *t)
{
    lb_cluster *c = t->data;
    if (!c->enabled) { /* nothing to hand over */
        void (*cb)(void *) = c->drain_cb;
        c->drain_cb = NULL;
        if (cb != NULL) cb(c->drain_data);
        return;
    }
    if (c->jobs != NULL && lb_jobs_running(c->jobs) > 0) return;
    uv_timer_stop(&c->poll);
    release_all(c);
}

void lb_cluster_drain(lb_cluster *c, void (*cb)(void *data), void *data)
{
    c->draining = 1;
    c->drain_cb = cb;
    c->drain_data = data;
    wake(c, &c->waiting); /* no takes any more; those deciding wake at the cycle's end */
    if (!c->enabled) {
        c->released = 1;
        uv_timer_start(&c->poll, poll_cb, 0, 0); /* cb from the loop, not from here */
        return;
    }
    lb_info(MOD, "draining: no new leases; releasing once the running jobs end");
    uv_timer_start(&c->poll, poll_cb, 0, DRAIN_POLL_MS);
}

static void timer_closed_cb(uv_handle_t *h)
{
    lb_cluster *c = h->data;
    c->timers_open--;
    maybe_closed(c);
}

static void maybe_closed(lb_cluster *c)
{
    if (!c->closing || c->inflight > 0 || !c->released) return;
    if (!c->timers_closing) {
        c->timers_closing = 1;
        uv_close((uv_handle_t *)&c->tick, timer_closed_cb);
        uv_close((uv_handle_t *)&c->stop, timer_closed_cb);
        uv_close((uv_handle_t *)&c->poll, timer_closed_cb);
        return;
    }
    if (c->timers_open > 0) return;
    size_t pos = 0;
    lease *l;
    while ((l = lb_map_next(&c->held, &pos)) != NULL)
        lb_free(l);
    lb_map_free(&c->held);
    lb_free(c->view);
    lb_free(c->nodes);
    lb_node_recs_free(c->node_recs, c->nnode_recs);
    lb_free(c->advertise_url);
    void (*cb)(void *) = c->close_cb;
    void *data = c->close_data;
    lb_free(c);
    if (cb != NULL) cb(data);
}

void lb_cluster_close(lb_cluster *c, void (*cb)(void *data), void *data)
{
    c->closing = 1;
    c->close_cb = cb;
    c->close_data = data;
    c->drain_cb = NULL; /* the drain's caller gave up waiting */
    wake(c, &c->waiting);
    if (c->phase == IDLE) wake(c, &c->deciding);
    uv_timer_stop(&c->tick);
    uv_timer_stop(&c->poll);
    if (!c->enabled) c->released = 1;
    if (!c->released) release_all(c);
    maybe_closed(c);
}

/* ---- life ---------------------------------------------------------------- */

int lb_cluster_new(uv_loop_t *loop, lb_store *store, const lb_cluster_config *cfg, lb_cluster **out)
{
    if (cfg->node_id == NULL || strlen(cfg->node_id) > LB_NODE_ID_MAX || cfg->ttl_ms < 1000 ||
        cfg->tenants == NULL)
        return LB_EINVAL;
    lb_cluster *c = LB_NEW(lb_cluster);
    c->loop = loop;
    c->store = store;
    c->gate.holds = gate_holds;
    c->gate.epoch = gate_epoch;
    c->gate.data = c;
    snprintf(c->node, sizeof(c->node), "%s", cfg->node_id);
    c->gate.node = c->node;
    c->advertise_url = lb_strdup(cfg->advertise_url ? cfg->advertise_url : "");
    c->ttl_ms = cfg->ttl_ms;
    c->margin_ms = lb_cluster_margin_ms(cfg->ttl_ms);
    c->enabled = cfg->enabled;
    c->tenants = cfg->tenants;
    lb_map_init(&c->held);
    uv_timer_init(loop, &c->tick);
    uv_timer_init(loop, &c->stop);
    uv_timer_init(loop, &c->poll);
    c->tick.data = c->stop.data = c->poll.data = c;
    c->timers_open = 3;
    c->m_held =
        lb_metrics_gauge("leverbridge_leases_held", "Tenant leases this replica holds.", "");
    c->m_gained =
        lb_metrics_counter("leverbridge_lease_changes_total",
                           "Tenant leases this replica took or lost.", "change=\"gained\"");
    c->m_lost = lb_metrics_counter("leverbridge_lease_changes_total",
                                   "Tenant leases this replica took or lost.", "change=\"lost\"");
    *out = c;
    return 0;
}

void lb_cluster_start(lb_cluster *c, lb_jobs *jobs, lb_provision *provision,
                      lb_reconcile *reconcile)
{
    c->jobs = jobs;
    c->provision = provision;
    c->reconcile = reconcile;
    if (!c->enabled) {
        lb_metric_set(c->m_held, (double)c->tenants->count);
        return;
    }
    lb_info(MOD, "node %s (%s): leases of %lld ms, renewed every %lld ms, used until %lld ms",
            c->node, c->advertise_url, (long long)c->ttl_ms, (long long)(c->ttl_ms / 3),
            (long long)(c->ttl_ms - c->margin_ms));
    uint64_t every = (uint64_t)(c->ttl_ms / 3);
    uv_timer_start(&c->tick, tick_cb, 0, every);
}
