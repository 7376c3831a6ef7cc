/* Backfills: see backfill.h and docs/internals/reconcile.md. */
#include "engine/backfill.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/map.h"
#include "core/metrics.h"
#include "core/time.h"
#include "crypto/crypto.h"
#include "engine/opplist.h"
#include "json/json.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define QUERY_MAX 2048
#define ERR_MAX 512
#define METRIC "leverbridge_backfill_opportunities_total"
#define METRIC_HELP "Opportunities backfills listed, by outcome."

typedef enum {
    B_STARTING,
    B_WAITING,
    B_LIST,
    B_PAGE,
    B_BACKLOG, /* waits for the tick: a job backlog, or another replica's lease */
    B_RELOAD,
    B_FINISH,
    B_IDLE
} bstep;

/* One backfill this process runs. Owned by the engine's map; freed once
 * it has ended (or was stopped) and nothing of it is in flight. */
typedef struct bf bf;
struct bf {
    lb_backfill *b;
    char id[LB_BACKFILL_ID_MAX + 1];
    char tenant[LB_TENANT_ID_MAX + 1];
    char workflow[LB_WORKFLOW_ID_MAX + 1];
    bstep step;
    int busy;    /* a store op or a list call is in flight */
    int slot;    /* counts in b->running */
    int stopped; /* cancelled, forgotten or closing: nothing more starts */
    int forgotten;
    int queued_wait; /* in the wait queue */
    int lease_wait;  /* B_BACKLOG: until this replica holds the tenant's lease */
    char *offset;    /* the next page's offset (NULL: the first page) */
    char *next;      /* the offset after the page being written */
    int last;        /* the page being written is the last */
    int64_t listed, queued, skipped;
    lb_opp_list list;
    lb_store_op op;
    lb_backfill_rec rec; /* the row, for the insert */
    lb_stage_event *evs; /* the page's events */
    lb_store_op *evops;  /* their ops, as the page op carries them */
    size_t nevs;
    char **assess; /* the workflow's send_assessment assessments */
    size_t nassess;
    char err[ERR_MAX];
    bf *next_wait;
    lb_backfill_started_cb started;
    void *started_data;
};

struct lb_backfill {
    uv_loop_t *loop;
    lb_store *store;
    lb_outbound *ob;
    lb_conns *conns;
    lb_workflows *workflows;
    lb_backfill_config cfg;
    lb_jobs_env env;
    lb_map by_id;
    bf *wait_head, *wait_tail;
    int running;
    int busy;
    int backlogged;
    int closing;
    uv_timer_t timer;
    int timer_open;
    void (*close_cb)(void *);
    void *close_data;
};

static void page_next(bf *t);
static void start_waiting(lb_backfill *b);
static void maybe_closed(lb_backfill *b);
static void backlog_tick(uv_timer_t *timer);

static void count(const char *outcome, int64_t n)
{
    if (n <= 0) return;
    char labels[32];
    snprintf(labels, sizeof(labels), "outcome=\"%s\"", outcome);
    lb_metric_add(lb_metrics_counter(METRIC, METRIC_HELP, labels), (double)n);
}

/* ---- bookkeeping ------------------------------------------------------- */

static void set_busy(bf *t, int busy)
{
    if (t->busy == busy) return;
    t->busy = busy;
    t->b->busy += busy ? 1 : -1;
}

static void page_free(bf *t)
{
    for (size_t i = 0; i < t->nevs; i++)
        lb_stage_event_clear(&t->evs[i]);
    lb_free(t->evs);
    lb_free(t->evops);
    t->evs = NULL;
    t->evops = NULL;
    t->nevs = 0;
    lb_free(t->next);
    t->next = NULL;
}

static void assess_free(bf *t)
{
    for (size_t i = 0; i < t->nassess; i++)
        lb_free(t->assess[i]);
    lb_free(t->assess);
    t->assess = NULL;
    t->nassess = 0;
}

static void bf_free(bf *t)
{
    if (lb_map_get(&t->b->by_id, t->id) == t) lb_map_del(&t->b->by_id, t->id);
    page_free(t);
    assess_free(t);
    lb_opp_list_clear(&t->list);
    lb_free(t->offset);
    lb_free(t);
}

static bf *bf_new(lb_backfill *b, const char *id, const char *tenant, const char *workflow)
{
    bf *t = LB_NEW(bf);
    t->b = b;
    snprintf(t->id, sizeof(t->id), "%s", id);
    snprintf(t->tenant, sizeof(t->tenant), "%s", tenant);
    snprintf(t->workflow, sizeof(t->workflow), "%s", workflow);
    lb_map_put(&b->by_id, t->id, t);
    return t;
}

static void enqueue(bf *t)
{
    lb_backfill *b = t->b;
    t->step = B_WAITING;
    t->queued_wait = 1;
    t->next_wait = NULL;
    if (b->wait_tail)
        b->wait_tail->next_wait = t;
    else
        b->wait_head = t;
    b->wait_tail = t;
}

/* The backfill is over here (ended, stopped or failed): its slot goes to
 * the next one waiting. Nothing of it is in flight. */
static void bf_end(bf *t)
{
    lb_backfill *b = t->b;
    if (t->step == B_BACKLOG) b->backlogged--;
    if (t->slot) {
        t->slot = 0;
        b->running--;
    }
    t->step = B_IDLE;
    bf_free(t);
    start_waiting(b);
    maybe_closed(b);
}

static void finished(lb_store_op *op)
{
    bf *t = op->data;
    set_busy(t, 0);
    if (op->status != 0)
        lb_warn("backfill",
                "tenant=%s backfill=%s: its end could not be stored (%s); it "
                "resumes at the next start",
                t->tenant, t->id, lb_strerror(op->status));
    bf_end(t);
}

/* The backfill fails: the row says why. */
static void bf_fail(bf *t, const char *why)
{
    lb_backfill *b = t->b;
    lb_warn("backfill", "tenant=%s backfill=%s: failed: %s", t->tenant, t->id, why);
    page_free(t);
    if (t->step == B_BACKLOG) b->backlogged--;
    snprintf(t->err, sizeof(t->err), "%s", why);
    memset(&t->op, 0, sizeof(t->op));
    t->op.kind = LB_STORE_BACKFILL_FINISH;
    t->op.cb = finished;
    t->op.data = t;
    snprintf(t->op.backfill_finish.tenant_id, sizeof(t->op.backfill_finish.tenant_id), "%s",
             t->tenant);
    snprintf(t->op.backfill_finish.id, sizeof(t->op.backfill_finish.id), "%s", t->id);
    t->op.backfill_finish.status = "failed";
    t->op.backfill_finish.last_error = t->err;
    t->step = B_FINISH;
    if (lb_store_submit(b->store, &t->op) != 0) {
        bf_end(t);
        return;
    }
    set_busy(t, 1);
}

/* Something in flight returned: 1 when the backfill goes on. */
static int returned(bf *t)
{
    set_busy(t, 0);
    if (t->stopped || t->b->closing) {
        page_free(t);
        bf_end(t);
        return 0;
    }
    return 1;
}

/* ---- pages ------------------------------------------------------------- */

static void page_written(lb_store_op *op)
{
    bf *t = op->data;
    lb_backfill *b = t->b;
    int status = op->status;
    if (status == 0 && !t->forgotten && !b->closing) {
        /* Committed: its jobs run, whatever happens to the backfill now. */
        for (size_t i = 0; i < t->nevs; i++)
            if (t->evops[i].status == 0 && !t->evops[i].event_insert.duplicate &&
                t->evs[i].njobs > 0)
                lb_jobs_add(b->cfg.jobs, t->evs[i].jobs, t->evs[i].njobs);
    }
    if (status == 0) {
        count("queued", op->backfill_page.queued - t->queued);
        count("skipped", op->backfill_page.skipped - t->skipped);
        t->listed = op->backfill_page.listed;
        t->queued = op->backfill_page.queued;
        t->skipped = op->backfill_page.skipped;
    }
    if (!returned(t)) return;
    if (status == LB_EINVAL) { /* not running any more: cancelled elsewhere */
        page_free(t);
        bf_end(t);
        return;
    }
    if (status != 0) {
        bf_fail(t, "the store could not write the page");
        return;
    }
    int last = t->last;
    lb_free(t->offset);
    t->offset = t->next;
    t->next = NULL;
    page_free(t);
    if (last) {
        lb_info("backfill",
                "tenant=%s backfill=%s: done, %" PRId64 " listed, %" PRId64 " queued, %" PRId64
                " skipped",
                t->tenant, t->id, t->listed, t->queued, t->skipped);
        bf_end(t);
        return;
    }
    page_next(t);
}

static void listed(lb_opp_list *l, int status, const char *error, lb_lever_opp_page *page)
{
    bf *t = l->data;
    lb_backfill *b = t->b;
    if (!returned(t)) {
        if (page != NULL) lb_lever_opp_page_free(page);
        return;
    }
    if (status != 0) {
        bf_fail(t, error);
        return;
    }
    const lb_workflow *w = lb_workflows_get(b->workflows, t->tenant, t->workflow);
    if (w == NULL || w->trigger != LB_TRIGGER_STAGE_CHANGED) {
        lb_lever_opp_page_free(page);
        bf_fail(t, "the workflow was deleted or changed its trigger");
        return;
    }
    t->evs = lb_calloc(page->count ? page->count : 1, sizeof(*t->evs));
    int64_t now = lb_time_now_ms();
    int bad = 0;
    for (size_t i = 0; i < page->count && !bad; i++) {
        const lb_lever_opp_brief *o = &page->items[i];
        /* Lever filtered them; a list that did not is not trusted. */
        if (o->archived || o->stage_id == NULL || strcmp(o->stage_id, w->to_stage) != 0) continue;
        char key[LB_BACKFILL_ID_MAX + 256];
        snprintf(key, sizeof(key), "%s:%s", t->id, o->id);
        lb_stage_event_in in = {.tenant = t->tenant,
                                .source = "backfill",
                                .opp = o,
                                .to_stage = w->to_stage,
                                .key = key,
                                .only = w,
                                .extra_name = "backfill_id",
                                .extra_value = t->id};
        if (lb_stage_event_make(&t->evs[t->nevs], &in, now) != 0)
            bad = 1;
        else
            t->nevs++;
    }
    t->next = page->next;
    page->next = NULL;
    t->last = t->next == NULL;
    lb_lever_opp_page_free(page);
    if (bad) {
        bf_fail(t, "an opportunity's event could not be made");
        return;
    }
    t->evops = lb_calloc(t->nevs ? t->nevs : 1, sizeof(*t->evops));
    for (size_t i = 0; i < t->nevs; i++)
        t->evops[i] = t->evs[i].op;
    memset(&t->op, 0, sizeof(t->op));
    t->op.kind = LB_STORE_BACKFILL_PAGE;
    t->op.cb = page_written;
    t->op.data = t;
    snprintf(t->op.backfill_page.tenant_id, sizeof(t->op.backfill_page.tenant_id), "%s", t->tenant);
    snprintf(t->op.backfill_page.id, sizeof(t->op.backfill_page.id), "%s", t->id);
    t->op.backfill_page.offset = t->next;
    t->op.backfill_page.done = t->last;
    t->op.backfill_page.events = t->evops;
    t->op.backfill_page.nevents = t->nevs;
    t->op.backfill_page.assessments = (const char *const *)t->assess;
    t->op.backfill_page.nassessments = t->nassess;
    t->step = B_PAGE;
    int rc = lb_store_submit(b->store, &t->op);
    if (rc != 0) {
        bf_fail(t, lb_strerror(rc));
        return;
    }
    set_busy(t, 1);
}

/* The assessments of the workflow's send_assessment actions: an
 * opportunity invited to all of them already counts as skipped. */
static void assess_load(bf *t, const lb_workflow *w)
{
    assess_free(t);
    size_t n = w->actions != NULL && YAJL_IS_ARRAY(w->actions) ? w->actions->u.array.len : 0;
    t->assess = lb_calloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; i < n && t->nassess < LB_STORE_BACKFILL_ASSESSMENTS_MAX; i++) {
        yajl_val a = w->actions->u.array.values[i];
        const char *type = lb_json_get_str(a, "type");
        const char *name = lb_json_get_str(a, "assessment");
        if (type != NULL && strcmp(type, "send_assessment") == 0 && name != NULL)
            t->assess[t->nassess++] = lb_strdup(name);
    }
}

/* Parks t until the next tick (B_BACKLOG). */
static void park(bf *t)
{
    lb_backfill *b = t->b;
    if (t->step != B_BACKLOG) b->backlogged++;
    t->step = B_BACKLOG;
    if (!uv_is_active((uv_handle_t *)&b->timer))
        uv_timer_start(&b->timer, backlog_tick, LB_BACKFILL_BACKLOG_MS, LB_BACKFILL_BACKLOG_MS);
}

/* The row read again once this replica holds the tenant's lease: another
 * replica may have written pages meanwhile. */
static void reloaded(lb_store_op *op)
{
    bf *t = op->data;
    int status = op->status;
    lb_backfill_rec r = op->backfill_get.rec;
    if (!returned(t)) {
        if (status == 0) lb_backfill_rec_free(&r);
        return;
    }
    if (status != 0 || strcmp(r.status, "running") != 0) {
        if (status == 0) lb_backfill_rec_free(&r);
        if (status != 0 && status != LB_ENOTFOUND) {
            bf_fail(t, "the store could not read the backfill");
            return;
        }
        bf_end(t); /* gone, or ended by another replica */
        return;
    }
    lb_free(t->offset);
    t->offset = r.offset;
    r.offset = NULL;
    t->listed = r.listed;
    t->queued = r.queued;
    t->skipped = r.skipped;
    lb_backfill_rec_free(&r);
    page_next(t);
}

static void reload(bf *t)
{
    lb_backfill *b = t->b;
    b->backlogged--;
    t->lease_wait = 0;
    memset(&t->op, 0, sizeof(t->op));
    t->op.kind = LB_STORE_BACKFILL_GET;
    t->op.cb = reloaded;
    t->op.data = t;
    snprintf(t->op.backfill_get.tenant_id, sizeof(t->op.backfill_get.tenant_id), "%s", t->tenant);
    snprintf(t->op.backfill_get.id, sizeof(t->op.backfill_get.id), "%s", t->id);
    t->step = B_RELOAD;
    int rc = lb_store_submit(b->store, &t->op);
    if (rc != 0) {
        bf_fail(t, lb_strerror(rc));
        return;
    }
    set_busy(t, 1);
}

static void page_next(bf *t)
{
    lb_backfill *b = t->b;
    if (!lb_gate_holds(b->cfg.gate, t->tenant)) {
        /* Another replica holds the tenant's lease: it runs the tenant's
         * outbound work, this one waits (and reads the row again first). */
        t->lease_wait = 1;
        park(t);
        return;
    }
    const lb_workflow *w = lb_workflows_get(b->workflows, t->tenant, t->workflow);
    if (w == NULL || w->trigger != LB_TRIGGER_STAGE_CHANGED || w->to_stage == NULL) {
        bf_fail(t, "the workflow was deleted or changed its trigger");
        return;
    }
    const lb_conn *c = lb_conns_get(b->conns, t->tenant);
    if (c == NULL || c->status != LB_CONN_CONNECTED) {
        bf_fail(t, "Lever is not connected");
        return;
    }
    size_t queued = 0, retrying = 0;
    lb_jobs_tenant_backlog(b->cfg.jobs, t->tenant, &queued, &retrying);
    if (queued + retrying > LB_BACKFILL_BACKLOG) {
        park(t);
        return;
    }
    if (t->step == B_BACKLOG) b->backlogged--;
    assess_load(t, w);
    char q[QUERY_MAX];
    snprintf(q, sizeof(q), "limit=%d&archived=false", LB_BACKFILL_PAGE);
    int rc = lb_lever_query_add(q, sizeof(q), "stage_id", w->to_stage);
    if (w->postings != NULL && YAJL_IS_ARRAY(w->postings))
        for (size_t i = 0; i < w->postings->u.array.len && rc == 0; i++) {
            const char *p = YAJL_GET_STRING(w->postings->u.array.values[i]);
            if (p != NULL) rc = lb_lever_query_add(q, sizeof(q), "posting_id", p);
        }
    if (rc != 0) {
        t->step = B_LIST;
        bf_fail(t, "the workflow has too many postings for one list query");
        return;
    }
    const char *why = NULL;
    t->step = B_LIST;
    /* since = INT64_MAX: the page's stageChanges are not needed. */
    if (lb_opp_list_get(&t->list, b->ob, &b->env, t->tenant, q, t->offset, INT64_MAX, listed, t,
                        &why) != 0) {
        bf_fail(t, why);
        return;
    }
    set_busy(t, 1);
}

/* ---- scheduling -------------------------------------------------------- */

static void start_waiting(lb_backfill *b)
{
    while (!b->closing && b->running < LB_BACKFILL_RUNNING && b->wait_head != NULL) {
        bf *t = b->wait_head;
        b->wait_head = t->next_wait;
        if (b->wait_head == NULL) b->wait_tail = NULL;
        t->next_wait = NULL;
        t->queued_wait = 0;
        if (t->stopped) {
            bf_free(t);
            continue;
        }
        t->slot = 1;
        b->running++;
        lb_info("backfill", "tenant=%s backfill=%s workflow=%s: %s", t->tenant, t->id, t->workflow,
                t->offset ? "resumed" : "started");
        page_next(t);
    }
}

static void backlog_tick(uv_timer_t *timer)
{
    lb_backfill *b = timer->data;
    if (b->backlogged <= 0 || b->closing) {
        uv_timer_stop(timer);
        return;
    }
    bf *ready[LB_BACKFILL_RUNNING];
    size_t n = 0, pos = 0;
    bf *t;
    while ((t = lb_map_next(&b->by_id, &pos)) != NULL && n < LB_BACKFILL_RUNNING)
        if (t->step == B_BACKLOG) ready[n++] = t;
    for (size_t i = 0; i < n; i++) {
        if (!ready[i]->lease_wait)
            page_next(ready[i]);
        else if (lb_gate_holds(b->cfg.gate, ready[i]->tenant))
            reload(ready[i]);
    }
    if (b->backlogged <= 0) uv_timer_stop(timer);
}

static void put_done(lb_store_op *op)
{
    bf *t = op->data;
    lb_backfill *b = t->b;
    set_busy(t, 0);
    int status = op->status;
    lb_backfill_started_cb cb = t->started;
    void *data = t->started_data;
    char id[LB_BACKFILL_ID_MAX + 1];
    snprintf(id, sizeof(id), "%s", t->id);
    if (status != 0 || t->stopped || b->closing) {
        t->step = B_IDLE;
        bf_free(t);
        maybe_closed(b);
    } else {
        enqueue(t);
        start_waiting(b);
    }
    if (cb != NULL) cb(data, status, id);
}

/* ---- public ------------------------------------------------------------ */

int lb_backfill_new(uv_loop_t *loop, lb_store *store, lb_outbound *ob, lb_conns *conns,
                    lb_workflows *workflows, const lb_backfill_config *cfg, const lb_jobs_env *env,
                    lb_backfill **out)
{
    lb_backfill *b = LB_NEW(lb_backfill);
    b->loop = loop;
    b->store = store;
    b->ob = ob;
    b->conns = conns;
    b->workflows = workflows;
    b->cfg = *cfg;
    b->env = *env;
    lb_map_init(&b->by_id);
    uv_timer_init(loop, &b->timer);
    b->timer.data = b;
    b->timer_open = 1;
    /* Both outcomes appear in /metrics from the start. */
    lb_metrics_counter(METRIC, METRIC_HELP, "outcome=\"queued\"");
    lb_metrics_counter(METRIC, METRIC_HELP, "outcome=\"skipped\"");
    *out = b;
    return 0;
}

int lb_backfill_load(lb_backfill *b)
{
    lb_store_op op = {.kind = LB_STORE_BACKFILL_LIST, .backfill_list.running = 1};
    int rc = lb_store_run(b->store, &op);
    if (rc != 0) return rc;
    size_t n = 0;
    for (size_t i = 0; i < op.backfill_list.count; i++) {
        const lb_backfill_rec *r = &op.backfill_list.recs[i];
        if (lb_map_get(&b->by_id, r->id) != NULL || b->by_id.count >= LB_BACKFILL_MAX) continue;
        bf *t = bf_new(b, r->id, r->tenant_id, r->workflow_id);
        t->offset = r->offset ? lb_strdup(r->offset) : NULL;
        t->listed = r->listed;
        t->queued = r->queued;
        t->skipped = r->skipped;
        enqueue(t);
        n++;
    }
    lb_backfill_recs_free(op.backfill_list.recs, op.backfill_list.count);
    if (n > 0) lb_info("backfill", "resuming %zu running backfill(s)", n);
    start_waiting(b);
    return 0;
}

int lb_backfill_start(lb_backfill *b, const lb_workflow *w, lb_backfill_started_cb cb, void *data,
                      char running_id[LB_BACKFILL_ID_MAX + 1])
{
    if (b->closing) return LB_ECLOSED;
    if (w->trigger != LB_TRIGGER_STAGE_CHANGED) return LB_EINVAL;
    size_t pos = 0;
    bf *o;
    while ((o = lb_map_next(&b->by_id, &pos)) != NULL) {
        if (!o->stopped && strcmp(o->tenant, w->tenant_id) == 0 &&
            strcmp(o->workflow, w->id) == 0) {
            snprintf(running_id, LB_BACKFILL_ID_MAX + 1, "%s", o->id);
            return 1;
        }
    }
    if (b->by_id.count >= LB_BACKFILL_MAX) return LB_ETOOBIG;
    char id[LB_BACKFILL_ID_MAX + 1];
    int64_t now = lb_time_now_ms();
    lb_sortable_id_buf(id, sizeof(id), "bf_", now, 12);
    bf *t = bf_new(b, id, w->tenant_id, w->id);
    t->step = B_STARTING;
    t->started = cb;
    t->started_data = data;
    memcpy(t->rec.id, t->id, sizeof(t->rec.id));
    memcpy(t->rec.tenant_id, t->tenant, sizeof(t->rec.tenant_id));
    memcpy(t->rec.workflow_id, t->workflow, sizeof(t->rec.workflow_id));
    snprintf(t->rec.status, sizeof(t->rec.status), "running");
    t->rec.created_at = now;
    t->op.kind = LB_STORE_BACKFILL_PUT;
    t->op.cb = put_done;
    t->op.data = t;
    t->op.backfill_put.rec = &t->rec;
    int rc = lb_store_submit(b->store, &t->op);
    if (rc != 0) {
        bf_free(t);
        return rc;
    }
    set_busy(t, 1);
    return 0;
}

/* Stops t here: what is queued is dropped, what is in flight completes
 * without effect (but the jobs of a page committed). */
static void stop(bf *t, int forgotten)
{
    t->stopped = 1;
    t->forgotten |= forgotten;
    if (t->queued_wait || t->step == B_STARTING) return; /* freed when it comes out */
    if (t->step == B_BACKLOG) {
        bf_end(t);
        return;
    }
    if (t->busy && t->step == B_LIST && lb_opp_list_cancel(&t->list)) {
        set_busy(t, 0);
        bf_end(t);
    }
}

/* The backfills of tenant (NULL: all), collected before they change. */
static size_t collect(lb_backfill *b, const char *tenant, bf ***out)
{
    bf **v = lb_calloc(b->by_id.count ? b->by_id.count : 1, sizeof(*v));
    size_t n = 0, pos = 0;
    bf *t;
    while ((t = lb_map_next(&b->by_id, &pos)) != NULL)
        if (!t->stopped && (tenant == NULL || strcmp(t->tenant, tenant) == 0)) v[n++] = t;
    *out = v;
    return n;
}

void lb_backfill_cancel(lb_backfill *b, const char *tenant, const char *id)
{
    bf *t = lb_map_get(&b->by_id, id);
    if (t == NULL || t->stopped || strcmp(t->tenant, tenant) != 0) return;
    lb_info("backfill", "tenant=%s backfill=%s: cancelled", t->tenant, t->id);
    stop(t, 0);
}

/* The end of a backfill stopped by a disconnect, written after whatever
 * of it is in flight. Owned by itself; freed in its callback. */
typedef struct {
    lb_store_op op;
    lb_backfill *b;
} forget_op;

static void forgotten_cb(lb_store_op *op)
{
    forget_op *f = op->data;
    lb_backfill *b = f->b;
    if (op->status != 0)
        lb_warn("backfill", "tenant=%s backfill=%s: its end could not be stored (%s)",
                op->backfill_finish.tenant_id, op->backfill_finish.id, lb_strerror(op->status));
    lb_free(f);
    b->busy--;
    maybe_closed(b);
}

void lb_backfill_forget(lb_backfill *b, const char *tenant)
{
    bf **v;
    size_t n = collect(b, tenant, &v);
    for (size_t i = 0; i < n; i++) {
        /* The row ends too (a tenant deleted has none left: no change), so
         * a new backfill may start once Lever is connected again. */
        forget_op *f = LB_NEW(forget_op);
        f->b = b;
        f->op.kind = LB_STORE_BACKFILL_FINISH;
        f->op.cb = forgotten_cb;
        f->op.data = f;
        snprintf(f->op.backfill_finish.tenant_id, sizeof(f->op.backfill_finish.tenant_id), "%s",
                 v[i]->tenant);
        snprintf(f->op.backfill_finish.id, sizeof(f->op.backfill_finish.id), "%s", v[i]->id);
        f->op.backfill_finish.status = "failed";
        f->op.backfill_finish.last_error = "Lever was disconnected";
        stop(v[i], 1);
        if (lb_store_submit(b->store, &f->op) == 0)
            b->busy++;
        else
            lb_free(f);
    }
    lb_free(v);
}

static void timer_closed_cb(uv_handle_t *h)
{
    lb_backfill *b = h->data;
    b->timer_open = 0;
    maybe_closed(b);
}

static void maybe_closed(lb_backfill *b)
{
    if (!b->closing || b->busy > 0 || b->timer_open) return;
    bf **v;
    size_t n = collect(b, NULL, &v);
    for (size_t i = 0; i < n; i++)
        bf_free(v[i]);
    lb_free(v);
    size_t pos = 0; /* stopped ones still in the map (waiting) */
    bf *t;
    while ((t = lb_map_next(&b->by_id, &pos)) != NULL) {
        bf_free(t);
        pos = 0;
    }
    lb_map_free(&b->by_id);
    void (*cb)(void *) = b->close_cb;
    void *data = b->close_data;
    lb_free(b);
    if (cb != NULL) cb(data);
}

void lb_backfill_close(lb_backfill *b, void (*cb)(void *data), void *data)
{
    b->closing = 1;
    b->close_cb = cb;
    b->close_data = data;
    b->wait_head = b->wait_tail = NULL; /* freed with the map */
    bf **v;
    size_t n = collect(b, NULL, &v);
    for (size_t i = 0; i < n; i++) {
        v[i]->queued_wait = 0;
        if (v[i]->busy) stop(v[i], 0);
    }
    lb_free(v);
    uv_timer_stop(&b->timer);
    uv_close((uv_handle_t *)&b->timer, timer_closed_cb);
}
