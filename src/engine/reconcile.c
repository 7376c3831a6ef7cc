/* Reconciliation passes: see reconcile.h and docs/internals/reconcile.md. */
#include "engine/reconcile.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/map.h"
#include "core/metrics.h"
#include "core/time.h"
#include "engine/opplist.h"
#include "lever/lever.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUERY_MAX 128
#define CURSOR_KEY_PREFIX "reconcile_cursor:"

typedef enum { S_IDLE, S_WAITING, S_CURSOR, S_LIST, S_INSERT, S_SAVE } step;

typedef struct rt rt;

/* One change on its way to the store. Owned by its pass (rt.ops). */
typedef struct {
    lb_stage_event e; /* e.op.data: this change */
    rt *t;
} change;

/* One tenant's passes. Owned by the map; freed when forgotten and nothing
 * of it is in flight, or at close. */
struct rt {
    char tenant[LB_TENANT_ID_MAX + 1];
    lb_reconcile *r;
    step step;
    int busy; /* a call or a store op is in flight */
    int again;
    int forgotten;
    int failed; /* this pass: something failed, store no cursor */
    rt *next_wait;
    int64_t since, started, connected_at;
    int64_t done_at; /* the start of the last pass that completed, 0: none yet */
    char *offset;    /* the next page's, or NULL */
    size_t found;
    lb_opp_list list;
    lb_store_op op;
    char key[sizeof(CURSOR_KEY_PREFIX) + LB_TENANT_ID_MAX];
    char value[24];
    lb_job_rec notify;
    change *ops;
    size_t nops, pending;
};

struct lb_reconcile {
    uv_loop_t *loop;
    lb_store *store;
    lb_outbound *ob;
    lb_conns *conns;
    lb_workflows *workflows;
    lb_reconcile_config cfg;
    lb_jobs_env env;
    lb_map tenants;
    rt *wait_head, *wait_tail;
    int running; /* passes under way */
    int busy;    /* tenants with something in flight */
    int closing;
    uv_timer_t timer;
    lb_reconcile_stats stats;
    void (*close_cb)(void *);
    void *close_data;
};

static void pass_next(rt *t);
static void maybe_closed(lb_reconcile *r);
static void start_waiting(lb_reconcile *r);

static void count_events(uint64_t n)
{
    static lb_metric *m;
    if (m == NULL)
        m = lb_metrics_counter("leverbridge_reconciled_events_total",
                               "Stage changes that only reconciliation found, made events.", "");
    lb_metric_add(m, (double)n);
}

/* ---- bookkeeping --------------------------------------------------------- */

static rt *rt_get(lb_reconcile *r, const char *tenant)
{
    rt *t = lb_map_get(&r->tenants, tenant);
    if (t == NULL) {
        t = LB_NEW(rt);
        snprintf(t->tenant, sizeof(t->tenant), "%s", tenant);
        t->r = r;
        lb_map_put(&r->tenants, t->tenant, t);
    }
    return t;
}

static void ops_free(rt *t)
{
    for (size_t i = 0; i < t->nops; i++)
        lb_stage_event_clear(&t->ops[i].e);
    lb_free(t->ops);
    t->ops = NULL;
    t->nops = t->pending = 0;
}

static void rt_free(rt *t)
{
    ops_free(t);
    lb_opp_list_clear(&t->list);
    lb_job_rec_free(&t->notify);
    lb_free(t->offset);
    lb_free(t);
}

static void set_busy(rt *t, int busy)
{
    if (t->busy == busy) return;
    t->busy = busy;
    t->r->busy += busy ? 1 : -1;
}

/* The pass is over (done or failed): the tenant's slot goes to the next
 * one waiting; a pass asked for meanwhile waits its turn. */
static void pass_end(rt *t)
{
    lb_reconcile *r = t->r;
    ops_free(t);
    lb_free(t->offset);
    t->offset = NULL;
    t->step = S_IDLE;
    r->running--;
    if (t->forgotten) {
        if (!t->busy) rt_free(t);
    } else if (t->again && !r->closing) {
        t->again = 0;
        t->step = S_WAITING;
        t->next_wait = NULL;
        if (r->wait_tail)
            r->wait_tail->next_wait = t;
        else
            r->wait_head = t;
        r->wait_tail = t;
    }
    start_waiting(r);
}

static void pass_failed(rt *t, const char *why)
{
    t->r->stats.failed++;
    lb_warn("reconcile", "tenant=%s: pass failed, the next one covers its changes: %s", t->tenant,
            why);
    pass_end(t);
}

/* A step in flight returned: 1 when the pass goes on. */
static int returned(rt *t)
{
    set_busy(t, 0);
    lb_reconcile *r = t->r;
    if (t->forgotten || r->closing) {
        pass_end(t);
        maybe_closed(r);
        return 0;
    }
    return 1;
}

static int has_stage_workflow(lb_reconcile *r, const char *tenant, const char *stage)
{
    for (const lb_workflow *w = lb_workflows_of(r->workflows, tenant); w != NULL; w = w->next)
        if (w->enabled && w->trigger == LB_TRIGGER_STAGE_CHANGED && w->to_stage != NULL &&
            (stage == NULL || strcmp(w->to_stage, stage) == 0))
            return 1;
    return 0;
}

/* ---- the cursor ------------------------------------------------------ */

static void cursor_saved(lb_store_op *op)
{
    rt *t = op->data;
    lb_jobs_notify_done(t->r->cfg.jobs, op, &t->notify);
    int status = op->status;
    if (!returned(t)) return;
    if (status != 0) {
        pass_failed(t, lb_strerror(status));
        return;
    }
    t->r->stats.passes++;
    t->done_at = t->started;
    lb_info("reconcile", "tenant=%s: pass done, %zu change(s) Lever did not deliver", t->tenant,
            t->found);
    pass_end(t);
}

static void save_cursor(rt *t)
{
    lb_reconcile *r = t->r;
    snprintf(t->value, sizeof(t->value), "%" PRId64, t->started);
    memset(&t->op, 0, sizeof(t->op));
    t->op.kind = LB_STORE_META_PUT;
    t->op.meta_put.key = t->key;
    t->op.meta_put.value = (const uint8_t *)t->value;
    t->op.meta_put.len = strlen(t->value);
    t->op.cb = cursor_saved;
    t->op.data = t;
    memset(&t->notify, 0, sizeof(t->notify));
    if (t->found > 0) {
        /* webhook.not_delivering, written with the pass's outcome. */
        char data[256];
        char since[LB_TIME_STR_SIZE];
        lb_time_format(t->since, since);
        snprintf(data, sizeof(data), "{\"changes\":%zu,\"missed\":%u,\"since\":\"%s\"}", t->found,
                 lb_missed_count(r->cfg.missed, t->tenant, lb_time_now_ms()), since);
        if (lb_jobs_notify(r->cfg.jobs, t->tenant, "webhook.not_delivering", data, &t->notify)) {
            t->op.notify = &t->notify;
            t->op.nnotify = 1;
        }
    }
    t->step = S_SAVE;
    int rc = lb_store_submit(r->store, &t->op);
    if (rc != 0) {
        lb_job_rec_free(&t->notify);
        pass_failed(t, lb_strerror(rc));
        return;
    }
    set_busy(t, 1);
}

static void cursor_read(lb_store_op *op)
{
    rt *t = op->data;
    int64_t cursor = 0;
    if (op->status == 0) {
        char buf[24];
        size_t n = op->meta_get.len < sizeof(buf) - 1 ? op->meta_get.len : sizeof(buf) - 1;
        memcpy(buf, op->meta_get.value, n);
        buf[n] = '\0';
        cursor = strtoll(buf, NULL, 10);
        lb_free(op->meta_get.value);
    }
    int status = op->status;
    if (!returned(t)) return;
    if (status != 0 && status != LB_ENOTFOUND) {
        pass_failed(t, lb_strerror(status));
        return;
    }
    /* The first pass after a connect starts at the connect time. */
    int64_t since = cursor > 0 ? cursor - LB_RECONCILE_OVERLAP_MS : 0;
    t->since = since > t->connected_at ? since : t->connected_at;
    pass_next(t);
}

/* ---- the pages ------------------------------------------------------- */

static void inserted(lb_store_op *op)
{
    change *c = op->data;
    rt *t = c->t;
    lb_reconcile *r = t->r;
    if (op->status != 0) {
        t->failed = 1;
        lb_warn("reconcile", "tenant=%s opportunity=%s: event not stored: %s", t->tenant, c->e.opp,
                lb_strerror(op->status));
    } else if (!op->event_insert.duplicate && !t->forgotten && !r->closing) {
        if (c->e.njobs > 0) lb_jobs_add(r->cfg.jobs, c->e.jobs, c->e.njobs);
        lb_missed_add(r->cfg.missed, t->tenant, lb_time_now_ms());
        t->found++;
        r->stats.events++;
        count_events(1);
        lb_info("reconcile", "tenant=%s opportunity=%s: stage %s not delivered by Lever: event %s",
                t->tenant, c->e.opp, c->e.stage, c->e.ev.id);
    }
    if (--t->pending > 0) return;
    if (!returned(t)) return;
    ops_free(t);
    if (t->failed) {
        pass_failed(t, "an event could not be stored");
        return;
    }
    if (t->offset == NULL)
        save_cursor(t);
    else
        pass_next(t);
}

/* Builds the event of one change, with the jobs it derives. 0, or a
 * negative code (the pass fails: the next one tries again). */
static int make_change(rt *t, change *c, const lb_lever_opp_brief *o,
                       const lb_lever_stage_change *s, int64_t now)
{
    char key[512];
    snprintf(key, sizeof(key), "%s:%s:%" PRId64, o->id, s->to_stage, s->at);
    lb_stage_event_in in = {.tenant = t->tenant,
                            .source = "reconcile",
                            .opp = o,
                            .to_stage = s->to_stage,
                            .from_stage = s->from_stage,
                            .at = s->at,
                            .key = key,
                            .workflows = t->r->workflows};
    c->t = t;
    int rc = lb_stage_event_make(&c->e, &in, now);
    if (rc != 0) return rc;
    c->e.op.cb = inserted;
    c->e.op.data = c;
    c->e.op.event_insert.stage_id = c->e.stage;
    c->e.op.event_insert.changed_at = s->at;
    c->e.op.event_insert.stage_window_ms = LB_RECONCILE_WINDOW_MS;
    return 0;
}

/* The page's changes into workflows' stages, each an event insert; all
 * submitted at once (a page is bounded: LB_RECONCILE_PAGE opportunities of
 * at most LB_LEVER_CHANGES_MAX changes). */
static void page_changes(rt *t, const lb_lever_opp_page *page)
{
    lb_reconcile *r = t->r;
    size_t n = 0;
    for (size_t i = 0; i < page->count; i++)
        n += page->items[i].nchanges;
    t->ops = n > 0 ? lb_calloc(n, sizeof(change)) : NULL;
    int64_t now = lb_time_now_ms();
    for (size_t i = 0; i < page->count; i++) {
        const lb_lever_opp_brief *o = &page->items[i];
        for (size_t k = 0; k < o->nchanges; k++) {
            const lb_lever_stage_change *s = &o->changes[k];
            if (s->at < t->since || s->at < t->connected_at ||
                !has_stage_workflow(r, t->tenant, s->to_stage))
                continue;
            change *c = &t->ops[t->nops++];
            if (make_change(t, c, o, s, now) != 0) {
                t->failed = 1;
                t->nops--;
                memset(c, 0, sizeof(*c));
            }
        }
    }
    t->step = S_INSERT;
    /* Count them all before the first can complete. */
    t->pending = t->nops;
    size_t submitted = 0;
    for (size_t i = 0; i < t->nops; i++) {
        if (lb_store_submit(r->store, &t->ops[i].e.op) == 0) {
            submitted++;
        } else {
            t->failed = 1;
            t->pending--;
        }
    }
    if (submitted > 0) {
        set_busy(t, 1);
        return;
    }
    ops_free(t);
    if (t->failed)
        pass_failed(t, "the page's events could not be made");
    else if (t->offset == NULL)
        save_cursor(t);
    else
        pass_next(t);
}

static void listed(lb_opp_list *l, int status, const char *error, lb_lever_opp_page *page)
{
    rt *t = l->data;
    lb_reconcile *r = t->r;
    if (!returned(t)) {
        if (page != NULL) lb_lever_opp_page_free(page);
        return;
    }
    if (status != 0) {
        pass_failed(t, error);
        return;
    }
    r->stats.pages++;
    lb_free(t->offset);
    t->offset = page->next;
    page->next = NULL;
    page_changes(t, page);
    lb_lever_opp_page_free(page);
}

/* The next page of opportunities changed since t->since. */
static void pass_next(rt *t)
{
    lb_reconcile *r = t->r;
    char q[QUERY_MAX];
    snprintf(q, sizeof(q), "limit=%d&updated_at_start=%" PRId64, LB_RECONCILE_PAGE, t->since);
    const char *why = NULL;
    t->step = S_LIST;
    if (lb_opp_list_get(&t->list, r->ob, &r->env, t->tenant, q, t->offset, t->since, listed, t,
                        &why) != 0) {
        pass_failed(t, why);
        return;
    }
    set_busy(t, 1);
}

/* ---- scheduling ------------------------------------------------------ */

static void pass_start(rt *t)
{
    lb_reconcile *r = t->r;
    const lb_conn *c = lb_conns_get(r->conns, t->tenant);
    r->running++;
    t->failed = 0;
    t->found = 0;
    t->started = lb_time_now_ms();
    if (c == NULL || c->status != LB_CONN_CONNECTED || !has_stage_workflow(r, t->tenant, NULL) ||
        !lb_gate_holds(r->cfg.gate, t->tenant)) {
        pass_end(t); /* nothing to reconcile (here: another replica holds it) */
        return;
    }
    t->connected_at = c->connected_at;
    snprintf(t->key, sizeof(t->key), CURSOR_KEY_PREFIX "%s", t->tenant);
    memset(&t->op, 0, sizeof(t->op));
    t->op.kind = LB_STORE_META_GET;
    t->op.meta_get.key = t->key;
    t->op.cb = cursor_read;
    t->op.data = t;
    t->step = S_CURSOR;
    if (lb_store_submit(r->store, &t->op) != 0) {
        pass_failed(t, "the store cannot take the cursor read");
        return;
    }
    set_busy(t, 1);
}

static void start_waiting(lb_reconcile *r)
{
    while (!r->closing && r->running < LB_RECONCILE_PASSES && r->wait_head != NULL) {
        rt *t = r->wait_head;
        r->wait_head = t->next_wait;
        if (r->wait_head == NULL) r->wait_tail = NULL;
        t->next_wait = NULL;
        if (t->forgotten) {
            rt_free(t);
            continue;
        }
        pass_start(t);
    }
}

static void enqueue(lb_reconcile *r, const char *tenant)
{
    rt *t = rt_get(r, tenant);
    if (t->step == S_WAITING) return;
    if (t->step != S_IDLE) {
        t->again = 1;
        return;
    }
    t->step = S_WAITING;
    t->next_wait = NULL;
    if (r->wait_tail)
        r->wait_tail->next_wait = t;
    else
        r->wait_head = t;
    r->wait_tail = t;
}

static void tick_cb(uv_timer_t *timer)
{
    lb_reconcile *r = timer->data;
    size_t pos = 0;
    lb_conn *c;
    while ((c = lb_map_next(&r->conns->by_tenant, &pos)) != NULL)
        if (c->status == LB_CONN_CONNECTED && has_stage_workflow(r, c->tenant_id, NULL) &&
            lb_gate_holds(r->cfg.gate, c->tenant_id))
            enqueue(r, c->tenant_id);
    start_waiting(r);
}

/* ---- public ---------------------------------------------------------- */

int lb_reconcile_new(uv_loop_t *loop, lb_store *store, lb_outbound *ob, lb_conns *conns,
                     lb_workflows *workflows, const lb_reconcile_config *cfg,
                     const lb_jobs_env *env, lb_reconcile **out)
{
    lb_reconcile *r = LB_NEW(lb_reconcile);
    r->loop = loop;
    r->store = store;
    r->ob = ob;
    r->conns = conns;
    r->workflows = workflows;
    r->cfg = *cfg;
    r->env = *env;
    lb_map_init(&r->tenants);
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    lb_metrics_declare_counter("leverbridge_reconciled_events_total",
                               "Stage changes that only reconciliation found, made events.");
    if (cfg->interval_ms > 0)
        uv_timer_start(&r->timer, tick_cb, (uint64_t)cfg->interval_ms, (uint64_t)cfg->interval_ms);
    *out = r;
    return 0;
}

int lb_reconcile_now(lb_reconcile *r, const char *tenant)
{
    const lb_conn *c = lb_conns_get(r->conns, tenant);
    if (c == NULL || c->status != LB_CONN_CONNECTED) return LB_ENOTFOUND;
    rt *t = lb_map_get(&r->tenants, tenant);
    if (t != NULL && t->forgotten) return LB_ENOTFOUND;
    enqueue(r, tenant);
    start_waiting(r);
    return 0;
}

int64_t lb_reconcile_done_at(const lb_reconcile *r, const char *tenant)
{
    const rt *t = lb_map_get(&r->tenants, tenant);
    return t != NULL ? t->done_at : 0;
}

int lb_reconcile_busy(const lb_reconcile *r, const char *tenant)
{
    const rt *t = lb_map_get(&r->tenants, tenant);
    return t != NULL && (t->step != S_IDLE || t->again);
}

void lb_reconcile_forget(lb_reconcile *r, const char *tenant)
{
    rt *t = lb_map_del(&r->tenants, tenant);
    if (t == NULL) return;
    t->forgotten = 1;
    t->again = 0;
    if (t->step == S_WAITING) return; /* freed when it comes out of the queue */
    if (t->step == S_IDLE) {
        rt_free(t);
        return;
    }
    if (t->busy && t->step == S_LIST && lb_opp_list_cancel(&t->list)) {
        set_busy(t, 0);
        pass_end(t);
    }
}

void lb_reconcile_stats_get(const lb_reconcile *r, lb_reconcile_stats *out)
{
    *out = r->stats;
}

static void timer_closed_cb(uv_handle_t *h)
{
    lb_reconcile *r = h->data;
    r->timer.data = NULL;
    maybe_closed(r);
}

static void maybe_closed(lb_reconcile *r)
{
    if (!r->closing || r->busy > 0 || r->timer.data != NULL) return;
    size_t pos = 0;
    rt *t;
    while ((t = lb_map_next(&r->tenants, &pos)) != NULL)
        rt_free(t);
    lb_map_free(&r->tenants);
    for (rt *w = r->wait_head; w != NULL;) { /* forgotten ones left in the queue */
        rt *next = w->next_wait;
        if (w->forgotten) rt_free(w);
        w = next;
    }
    void (*cb)(void *) = r->close_cb;
    void *data = r->close_data;
    lb_free(r);
    if (cb != NULL) cb(data);
}

void lb_reconcile_close(lb_reconcile *r, void (*cb)(void *data), void *data)
{
    r->closing = 1;
    r->close_cb = cb;
    r->close_data = data;
    size_t pos = 0;
    rt *t;
    while ((t = lb_map_next(&r->tenants, &pos)) != NULL) {
        if (t->busy && t->step == S_LIST && lb_opp_list_cancel(&t->list)) {
            set_busy(t, 0);
            pass_end(t);
        }
    }
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, timer_closed_cb);
}
