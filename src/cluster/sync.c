/* State sync between replicas: sync.h has the contract,
 * docs/internals/cluster.md "State sync" the protocol. */
#include "cluster/sync.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/map.h"
#include "core/metrics.h"
#include "core/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "sync"
/* A report of jobs starts their reload after this, so a stream of
 * deliveries to other replicas costs one read per interval. */
#define JOBS_DEBOUNCE_MS 20
/* The prompt jobs reload reads jobs written this long before it (the
 * writers' clocks may differ a little; the lease cycle's reload, with a
 * minute of slack, catches what a larger skew hides). */
#define JOBS_SLACK_MS 5000
/* A reload that failed is tried again (in full) after this. */
#define RETRY_MS 1000

/* One reload: a tenant's rows or everyone's, three reads submitted
 * together (one batch), and in full a fourth: the counts of changes that
 * reconciliation found (webhook.missed; the passes run on each tenant's
 * holder, so the other replicas learn of them here). Owner: the sync, on its `reloads` list until
 * the last read's callback. */
typedef struct reload {
    lb_sync *y;
    char tenant[LB_TENANT_ID_MAX + 1]; /* "" for all */
    int full;
    int pending; /* reads not answered yet */
    int failed;  /* a read's status, or 0 */
    lb_store_op ops[4];
    int nops;
    struct reload *prev, *next;
} reload;

/* A tenant waiting for its reload (the key of `want`). */
typedef struct {
    char id[LB_TENANT_ID_MAX + 1];
} want_entry;

struct lb_sync {
    uv_loop_t *loop;
    lb_store *store;
    lb_sync_config cfg;
    lb_sync_parts parts;

    lb_map want; /* tenant -> want_entry: reported, reload not sent yet */
    int want_all;
    uv_timer_t debounce; /* LB_SYNC_DEBOUNCE_MS after the first report */
    uv_timer_t full;     /* every reload_ms */
    uv_timer_t jobs;     /* JOBS_DEBOUNCE_MS after a report of jobs */
    int timers_open;
    reload *reloads; /* in flight */
    int full_inflight;
    uint64_t count[2]; /* reloads applied: [0] tenant, [1] full */
    lb_metric *m_reloads[2];

    int closing;
    void (*close_cb)(void *);
    void *close_data;
};

/* ---- applying rows -------------------------------------------------------- */

static int str_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL) return a == b;
    return strcmp(a, b) == 0;
}

static int tenant_same(const lb_tenant *t, const lb_tenant_rec *r)
{
    return t->created_at == r->created_at && t->updated_at == r->updated_at &&
           str_eq(t->name, r->name ? r->name : "") && t->api_addon == r->api_addon &&
           t->lever_rate == r->lever_rate && t->lever_burst == r->lever_burst &&
           str_eq(t->failure_tag, r->failure_tag);
}

/* The stored fields a hook row shares with memory (its token is sealed in
 * the row: a new token comes with a new lever_webhook_id). last_delivery_at
 * is left out: memory has it first, and both only grow. */
static int hook_same(const lb_hook *h, const lb_hook_rec *r)
{
    return strcmp(h->id, r->id) == 0 && str_eq(h->lever_webhook_id, r->lever_webhook_id) &&
           str_eq(lb_hook_status_name(h->status), r->status) && h->attempts == r->attempts &&
           h->next_attempt_at == r->next_attempt_at && h->deadline_at == r->deadline_at &&
           str_eq(h->last_error, r->last_error) && h->active_since == r->active_since &&
           h->checked_at == r->checked_at && (h->signature_token != NULL) == (r->token_len > 0);
}

/* The tenant is gone from the store (deleted through another replica, its
 * rows with it): what DELETE /v1/tenants does here after its write, but
 * Lever's webhook, which that replica deleted. */
static void tenant_remove(lb_sync *y, const char *id)
{
    const lb_sync_parts *p = &y->parts;
    if (p->cred != NULL)
        lb_cred_drop(p->cred, id);
    else
        lb_conns_remove(y->cfg.conns, id);
    if (p->jobs != NULL) {
        lb_jobs_tenant_cancel_events(p->jobs, id); /* their rows went with it */
        lb_jobs_tenant_failed_add(p->jobs, id, -(long)lb_jobs_tenant_failed(p->jobs, id));
    }
    lb_workflows_remove_tenant(y->cfg.workflows, id);
    if (p->stats != NULL) lb_stats_forget(p->stats, id);
    if (p->missed != NULL) lb_missed_forget(p->missed, id);
    lb_tenants_remove(y->cfg.tenants, id);
    lb_info(MOD, "tenant=%s: no longer in the store (deleted through another replica)", id);
}

/* The tenant's connection and hook rows (each may be NULL). */
static void conn_apply(lb_sync *y, const char *id, const lb_conn_rec *cr, const lb_hook_rec *hr)
{
    lb_conns *cs = y->cfg.conns;
    const lb_conn *c = lb_conns_get(cs, id);
    if (cr == NULL) {
        if (c == NULL) return;
        /* Disconnected through another replica: forgotten here as that
         * replica did (it deleted the webhook in Lever). */
        if (y->parts.cred != NULL)
            lb_cred_drop(y->parts.cred, id);
        else
            lb_conns_remove(cs, id);
        return;
    }
    int was_connected = c != NULL && c->status == LB_CONN_CONNECTED;
    int changed = 0;
    if (c == NULL || c->updated_at != cr->updated_at) {
        /* Memory-only bookkeeping of OAuth refreshes survives the row. */
        int64_t refreshed = c ? c->refreshed_at : 0, retry = c ? c->refresh_retry_at : 0;
        lb_conns_load(cs, cr, 1, NULL, 0);
        lb_conns_set_refreshed(cs, id, refreshed);
        lb_conns_set_refresh_retry(cs, id, retry);
        changed = 1;
    }
    c = lb_conns_get(cs, id);
    if (hr != NULL && (c->hook == NULL || !hook_same(c->hook, hr))) {
        int64_t delivered = c->hook ? c->hook->last_delivery_at : 0;
        lb_conns_load(cs, NULL, 0, hr, 1); /* opens the signature token */
        if (delivered > 0) lb_conns_hook_delivered(cs, hr->id, delivered);
        changed = 1;
    }
    if (!changed) return;
    c = lb_conns_get(cs, id);
    int holds = y->parts.cluster == NULL || lb_cluster_holds(y->parts.cluster, id);
    if (!holds) return;
    /* This node runs the tenant's work: its hook is looked after from the
     * new rows, and jobs that waited for a connection run. */
    if (y->parts.provision != NULL) lb_provision_tenant_gained(y->parts.provision, id);
    if (!was_connected && c != NULL && c->status == LB_CONN_CONNECTED && y->parts.jobs != NULL)
        lb_jobs_tenant_resume(y->parts.jobs, id);
}

/* The tenant's workflows are exactly ws[0..n). */
static void workflows_apply(lb_sync *y, const char *id, const lb_workflow_rec *ws, size_t n)
{
    lb_workflows *all = y->cfg.workflows;
    for (size_t i = 0; i < n; i++) {
        const lb_workflow *w = lb_workflows_get(all, id, ws[i].id);
        if (w == NULL || w->updated_at != ws[i].updated_at || w->enabled != ws[i].enabled ||
            w->created_at != ws[i].created_at)
            lb_workflows_apply(all, &ws[i]);
    }
    /* Those memory has and the store has not: deleted elsewhere. */
    for (;;) {
        const lb_workflow *gone = NULL;
        for (const lb_workflow *w = lb_workflows_of(all, id); w != NULL && gone == NULL;
             w = w->next) {
            size_t k = 0;
            while (k < n && strcmp(ws[k].id, w->id) != 0)
                k++;
            if (k == n) gone = w;
        }
        if (gone == NULL) break;
        lb_workflows_remove(all, gone->id);
    }
}

/* Rows of one tenant: its record, its connection and hook (or NULL), its
 * workflows (consecutive in the load's order). */
static void tenant_apply(lb_sync *y, const lb_tenant_rec *t, const lb_conn_rec *c,
                         const lb_hook_rec *h, const lb_workflow_rec *ws, size_t nws)
{
    lb_tenant *mem = lb_tenants_get(y->cfg.tenants, t->id);
    int created = mem == NULL;
    if (mem == NULL || !tenant_same(mem, t)) lb_tenants_apply(y->cfg.tenants, t);
    conn_apply(y, t->id, c, h);
    workflows_apply(y, t->id, ws, nws);
    /* A tenant new here: its lease may be taken at once (its holder may
     * be this node). */
    if (created && y->parts.cluster != NULL) lb_cluster_kick(y->parts.cluster);
}

void lb_sync_apply(lb_sync *y, const char *tenant, const lb_sync_rows *r)
{
    lb_map conns, hooks, wfs; /* tenant id -> first row */
    lb_map_init(&conns);
    lb_map_init(&hooks);
    lb_map_init(&wfs);
    for (size_t i = 0; i < r->nconns; i++)
        lb_map_put(&conns, r->conns[i].tenant_id, (void *)&r->conns[i]);
    for (size_t i = 0; i < r->nhooks; i++)
        lb_map_put(&hooks, r->hooks[i].tenant_id, (void *)&r->hooks[i]);
    for (size_t i = r->nworkflows; i-- > 0;) /* the first of each tenant's run wins */
        lb_map_put(&wfs, r->workflows[i].tenant_id, (void *)&r->workflows[i]);
    lb_map seen;
    lb_map_init(&seen);
    for (size_t i = 0; i < r->ntenants; i++) {
        const lb_tenant_rec *t = &r->tenants[i];
        if (tenant != NULL && strcmp(t->id, tenant) != 0) continue;
        const lb_workflow_rec *w0 = lb_map_get(&wfs, t->id);
        size_t nw = 0;
        if (w0 != NULL) {
            size_t first = (size_t)(w0 - r->workflows);
            while (first + nw < r->nworkflows && strcmp(w0[nw].tenant_id, t->id) == 0)
                nw++;
        }
        tenant_apply(y, t, lb_map_get(&conns, t->id), lb_map_get(&hooks, t->id), w0, nw);
        lb_map_put(&seen, t->id, (void *)t);
    }
    /* What memory has and the store has not: deleted elsewhere. */
    if (tenant != NULL) {
        if (lb_map_get(&seen, tenant) == NULL && lb_tenants_get(y->cfg.tenants, tenant) != NULL)
            tenant_remove(y, tenant);
    } else {
        lb_tenants *ts = y->cfg.tenants;
        for (size_t i = ts->count; i-- > 0;) {
            if (i >= ts->count) continue; /* (a removal shrank the list) */
            const lb_tenant *t = ts->order[i];
            if (lb_map_get(&seen, t->id) == NULL) {
                char id[LB_TENANT_ID_MAX + 1];
                memcpy(id, t->id, sizeof(id));
                tenant_remove(y, id);
            }
        }
    }
    lb_map_free(&seen);
    lb_map_free(&conns);
    lb_map_free(&hooks);
    lb_map_free(&wfs);
}

/* ---- reloads --------------------------------------------------------------- */

static void reload_free(reload *rl)
{
    lb_store_op *o = rl->ops;
    lb_tenant_recs_free(o[0].tenant_load_all.recs, o[0].tenant_load_all.count);
    for (size_t i = 0; i < o[1].conn_load_all.nconns; i++)
        lb_conn_rec_free(&o[1].conn_load_all.conns[i]);
    for (size_t i = 0; i < o[1].conn_load_all.nhooks; i++)
        lb_hook_rec_free(&o[1].conn_load_all.hooks[i]);
    lb_free(o[1].conn_load_all.conns);
    lb_free(o[1].conn_load_all.hooks);
    lb_workflow_recs_free(o[2].workflow_load_all.recs, o[2].workflow_load_all.count);
    lb_free(o[3].reconciled_counts.recs);
    lb_free(rl);
}

static void maybe_closed(lb_sync *y);
static void debounce_cb(uv_timer_t *t);

static void reload_apply(reload *rl)
{
    lb_store_op *o = rl->ops;
    lb_sync_rows rows = {.tenants = o[0].tenant_load_all.recs,
                         .ntenants = o[0].tenant_load_all.count,
                         .conns = o[1].conn_load_all.conns,
                         .nconns = o[1].conn_load_all.nconns,
                         .hooks = o[1].conn_load_all.hooks,
                         .nhooks = o[1].conn_load_all.nhooks,
                         .workflows = o[2].workflow_load_all.recs,
                         .nworkflows = o[2].workflow_load_all.count};
    lb_sync *y = rl->y;
    lb_sync_apply(y, rl->full ? NULL : rl->tenant, &rows);
    if (rl->nops == 4 && y->parts.missed != NULL)
        lb_missed_set(y->parts.missed, o[3].reconciled_counts.recs, o[3].reconciled_counts.count,
                      lb_time_now_ms());
    y->count[rl->full]++;
    if (y->m_reloads[rl->full] != NULL) lb_metric_add(y->m_reloads[rl->full], 1);
    lb_debug(MOD, "reloaded %s", rl->full ? "every tenant" : rl->tenant);
}

static void reload_cb(lb_store_op *op)
{
    reload *rl = op->data;
    lb_sync *y = rl->y;
    if (op->status != 0 && rl->failed == 0) rl->failed = op->status;
    if (--rl->pending > 0) return;
    if (rl->prev != NULL)
        rl->prev->next = rl->next;
    else
        y->reloads = rl->next;
    if (rl->next != NULL) rl->next->prev = rl->prev;
    if (rl->full) y->full_inflight = 0;
    if (!y->closing && rl->failed == 0) {
        reload_apply(rl);
    } else if (!y->closing) {
        /* The store is unreachable, say: everything again a little later
         * (what failed may have changed meanwhile). */
        lb_warn(MOD, "cannot reload %s: %s; again in %d ms", rl->full ? "the state" : rl->tenant,
                lb_strerror(rl->failed), RETRY_MS);
        y->want_all = 1;
        if (!uv_is_active((uv_handle_t *)&y->debounce))
            uv_timer_start(&y->debounce, debounce_cb, RETRY_MS, 0);
    }
    reload_free(rl);
    maybe_closed(y);
}

/* Sends the three reads; tenant NULL: every tenant. 0, or the store's
 * code (nothing sent). */
static int reload_send(lb_sync *y, const char *tenant)
{
    reload *rl = LB_NEW(reload);
    rl->y = y;
    rl->full = tenant == NULL;
    if (tenant != NULL) snprintf(rl->tenant, sizeof(rl->tenant), "%s", tenant);
    const char *filter = tenant != NULL ? rl->tenant : NULL;
    rl->ops[0].kind = LB_STORE_TENANT_LOAD_ALL;
    rl->ops[0].tenant_load_all.tenant_id = filter;
    rl->ops[1].kind = LB_STORE_CONN_LOAD_ALL;
    rl->ops[1].conn_load_all.tenant_id = filter;
    rl->ops[2].kind = LB_STORE_WORKFLOW_LOAD_ALL;
    rl->ops[2].workflow_load_all.tenant_id = filter;
    rl->nops = 3;
    if (rl->full && y->parts.missed != NULL) {
        rl->ops[3].kind = LB_STORE_RECONCILED_COUNTS;
        rl->ops[3].reconciled_counts.since =
            (lb_time_now_ms() / LB_HOUR_MS - LB_MISSED_HOURS + 1) * LB_HOUR_MS;
        rl->nops = 4;
    }
    for (int i = 0; i < rl->nops; i++) {
        rl->ops[i].cb = reload_cb;
        rl->ops[i].data = rl;
        int rc = lb_store_submit(y->store, &rl->ops[i]);
        if (rc != 0) {
            if (i == 0) {
                lb_free(rl);
                return rc;
            }
            /* The reads sent are answered; the reload counts as failed. */
            rl->failed = rc;
            break;
        }
        rl->pending++;
    }
    rl->next = y->reloads;
    if (y->reloads != NULL) y->reloads->prev = rl;
    y->reloads = rl;
    if (rl->full) y->full_inflight = 1;
    return 0;
}

static void full_reload(lb_sync *y)
{
    if (y->closing || y->full_inflight) return;
    int rc = reload_send(y, NULL);
    if (rc != 0) lb_warn(MOD, "cannot reload the state: %s", lb_strerror(rc));
}

/* The reported tenants' reloads go out (or one full reload). */
static void want_flush(lb_sync *y)
{
    if (y->closing) return;
    if (y->want_all) {
        y->want_all = 0;
        full_reload(y);
    }
    size_t pos = 0;
    want_entry *w;
    while ((w = lb_map_next(&y->want, &pos)) != NULL) {
        /* A full reload sent now reads these too; one in flight may have
         * read before their change, so they go as well. */
        int rc = reload_send(y, w->id);
        if (rc != 0) {
            lb_warn(MOD, "tenant=%s: cannot reload: %s", w->id, lb_strerror(rc));
            y->want_all = 1;
        }
        lb_free(w);
    }
    lb_map_free(&y->want);
    lb_map_init(&y->want);
}

static void debounce_cb(uv_timer_t *t)
{
    want_flush(t->data);
}

static void full_cb(uv_timer_t *t)
{
    full_reload(t->data);
}

static void jobs_cb(uv_timer_t *t)
{
    lb_sync *y = t->data;
    if (y->closing || y->parts.jobs == NULL || y->parts.cluster == NULL) return;
    int rc = lb_jobs_reload(y->parts.jobs, lb_cluster_node_id(y->parts.cluster),
                            lb_time_now_ms() - JOBS_SLACK_MS);
    if (rc != 0) lb_debug(MOD, "cannot reload jobs now: %s", lb_strerror(rc));
}

static void want(lb_sync *y, const char *tenant)
{
    if (tenant == NULL) {
        y->want_all = 1;
    } else if (!y->want_all && lb_map_get(&y->want, tenant) == NULL) {
        if (y->want.count >= LB_SYNC_WANT_MAX) {
            y->want_all = 1;
        } else {
            want_entry *w = LB_NEW(want_entry);
            snprintf(w->id, sizeof(w->id), "%s", tenant);
            lb_map_put(&y->want, w->id, w);
        }
    }
    if (!uv_is_active((uv_handle_t *)&y->debounce))
        uv_timer_start(&y->debounce, debounce_cb, LB_SYNC_DEBOUNCE_MS, 0);
}

static void heard_cb(void *data, int what, const char *tenant)
{
    lb_sync *y = data;
    if (y->closing) return;
    if (what == LB_STORE_CHANGED_JOBS) {
        /* Only the holder runs them; the others ignore the news. */
        if (y->parts.cluster != NULL && lb_cluster_holds(y->parts.cluster, tenant) &&
            !uv_is_active((uv_handle_t *)&y->jobs))
            uv_timer_start(&y->jobs, jobs_cb, JOBS_DEBOUNCE_MS, 0);
        return;
    }
    if (what == LB_STORE_CHANGED_ANY) {
        /* (Re)connected, or the queue overflowed: jobs may have been
         * missed too. */
        want(y, NULL);
        if (y->parts.jobs != NULL && y->parts.cluster != NULL &&
            !uv_is_active((uv_handle_t *)&y->jobs))
            uv_timer_start(&y->jobs, jobs_cb, JOBS_DEBOUNCE_MS, 0);
        return;
    }
    want(y, tenant);
}

/* ---- life ------------------------------------------------------------------ */

int lb_sync_new(uv_loop_t *loop, lb_store *store, const lb_sync_config *cfg, lb_sync **out)
{
    lb_sync *y = LB_NEW(lb_sync);
    y->loop = loop;
    y->store = store;
    y->cfg = *cfg;
    if (y->cfg.reload_ms <= 0) {
        const char *v = getenv("LB_TEST_STATE_RELOAD_MS"); /* tests only */
        long ms = v != NULL ? strtol(v, NULL, 10) : 0;
        y->cfg.reload_ms = ms > 0 ? ms : LB_SYNC_RELOAD_MS;
    }
    lb_map_init(&y->want);
    uv_timer_init(loop, &y->debounce);
    uv_timer_init(loop, &y->full);
    uv_timer_init(loop, &y->jobs);
    y->debounce.data = y->full.data = y->jobs.data = y;
    y->timers_open = 3;
    y->m_reloads[0] =
        lb_metrics_counter("leverbridge_state_reloads_total",
                           "State reloads from the store, by scope.", "scope=\"tenant\"");
    y->m_reloads[1] =
        lb_metrics_counter("leverbridge_state_reloads_total",
                           "State reloads from the store, by scope.", "scope=\"full\"");
    *out = y;
    return 0;
}

int lb_sync_load(lb_sync *y, char *err, size_t errlen)
{
    uint64_t before = y->count[1];
    int rc = reload_send(y, NULL);
    if (rc == 0) {
        /* reload_cb applies the rows (or fails) and frees the reload. */
        while (y->full_inflight)
            uv_run(y->loop, UV_RUN_ONCE);
        if (y->count[1] > before) return 0;
        rc = LB_EIO;
    }
    snprintf(err, errlen, "LEVERBRIDGE_DB: cannot load tenants, connections and workflows: %s",
             lb_strerror(rc));
    return rc;
}

void lb_sync_start(lb_sync *y, const lb_sync_parts *parts)
{
    y->parts = *parts;
    if (!y->cfg.shared) return;
    uv_timer_start(&y->full, full_cb, (uint64_t)y->cfg.reload_ms, (uint64_t)y->cfg.reload_ms);
    uv_unref((uv_handle_t *)&y->full);
    int rc = lb_store_listen(y->store, heard_cb, y);
    if (rc != 0) lb_warn(MOD, "cannot listen for changes: %s", lb_strerror(rc));
}

uint64_t lb_sync_reloads(const lb_sync *y, int full)
{
    return y->count[full ? 1 : 0];
}

static void timer_closed_cb(uv_handle_t *h)
{
    lb_sync *y = h->data;
    y->timers_open--;
    maybe_closed(y);
}

static void maybe_closed(lb_sync *y)
{
    if (!y->closing || y->reloads != NULL || y->timers_open > 0) return;
    void (*cb)(void *) = y->close_cb;
    void *data = y->close_data;
    size_t pos = 0;
    want_entry *w;
    while ((w = lb_map_next(&y->want, &pos)) != NULL)
        lb_free(w);
    lb_map_free(&y->want);
    lb_free(y);
    if (cb != NULL) cb(data);
}

void lb_sync_close(lb_sync *y, void (*cb)(void *data), void *data)
{
    /* The store outlives the sync, and its listener may still hear. */
    if (y->store != NULL) lb_store_unlisten(y->store);
    y->closing = 1;
    y->close_cb = cb;
    y->close_data = data;
    uv_close((uv_handle_t *)&y->debounce, timer_closed_cb);
    uv_close((uv_handle_t *)&y->full, timer_closed_cb);
    uv_close((uv_handle_t *)&y->jobs, timer_closed_cb);
}
