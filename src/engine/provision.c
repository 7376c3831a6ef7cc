#include "engine/provision.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/heap.h"
#include "core/log.h"
#include "core/map.h"
#include "core/time.h"
#include "engine/backoff.h"
#include "json/json.h"
#include "lever/lever.h"

#include <stdio.h>
#include <string.h>

#define MAX_STALE 16
#define ERR_MAX 512

typedef enum { S_IDLE, S_LIST, S_DELETE, S_CREATE, S_CHECK, S_WRITE } step;

/* One tenant's provisioning. Owned by the map; freed when forgotten and no
 * call or write of it is in flight. */
typedef struct {
    char tenant[LB_TENANT_ID_MAX + 1];
    lb_provision *p;
    lb_heap_node wake;
    step step;
    int busy;    /* a call or a write is in flight */
    int restart; /* start again when the current step returns */
    int forgotten;
    char *stale[MAX_STALE]; /* webhook ids at our URL, to delete */
    int nstale;
    lb_ob_call call;
    lb_lever_req req;
    lb_store_op op;
    lb_hook_rec rec;   /* the row being written */
    lb_job_rec notify; /* its event (webhook.active, .failed), written with it */
    lb_hook next;      /* what memory becomes once it is written */
    int then_check;    /* after the write: schedule a check, else nothing */
} pv;

struct lb_provision {
    uv_loop_t *loop;
    lb_store *store;
    lb_outbound *ob;
    lb_conns *conns;
    lb_provision_config cfg;
    lb_jobs_env env;
    lb_map tenants;
    lb_heap wakes;
    uv_timer_t timer;
    int closing;
    int busy; /* tenants with something in flight */
    void (*close_cb)(void *);
    void *close_data;
};

static void attempt(pv *v);
static void check(pv *v);
static void maybe_closed(lb_provision *p);

void lb_provision_hook_url(const lb_provision *p, const char *hook_id, char *out, size_t size)
{
    snprintf(out, size, "%s/hooks/lever/%s", p->cfg.public_url, hook_id);
}

/* ---- timers ------------------------------------------------------------ */

static void timer_cb(uv_timer_t *t);

static void arm(lb_provision *p)
{
    lb_heap_node *n = lb_heap_min(&p->wakes);
    if (n == NULL || p->closing) {
        uv_timer_stop(&p->timer);
        return;
    }
    int64_t d = n->key - lb_time_now_ms();
    uv_timer_start(&p->timer, timer_cb, d > 0 ? (uint64_t)d : 0, 0);
}

static void wake_at(pv *v, int64_t when)
{
    lb_heap_remove(&v->p->wakes, &v->wake);
    v->wake.key = when;
    lb_heap_push(&v->p->wakes, &v->wake);
    arm(v->p);
}

static const lb_hook *hook_of(pv *v)
{
    const lb_conn *c = lb_conns_get(v->p->conns, v->tenant);
    return c != NULL ? c->hook : NULL;
}

static void run(pv *v)
{
    const lb_hook *h = hook_of(v);
    if (h == NULL || v->forgotten || !lb_gate_holds(v->p->cfg.gate, v->tenant)) return;
    if (h->status == LB_HOOK_PENDING)
        attempt(v);
    else if (h->status == LB_HOOK_ACTIVE)
        check(v);
}

static void timer_cb(uv_timer_t *t)
{
    lb_provision *p = t->data;
    int64_t now = lb_time_now_ms();
    lb_heap_node *n;
    while ((n = lb_heap_min(&p->wakes)) != NULL && n->key <= now) {
        lb_heap_pop(&p->wakes);
        pv *v = LB_CONTAINER_OF(n, pv, wake);
        if (v->busy)
            v->restart = 1;
        else
            run(v);
    }
    arm(p);
}

/* ---- bookkeeping --------------------------------------------------------- */

static pv *pv_get(lb_provision *p, const char *tenant)
{
    pv *v = lb_map_get(&p->tenants, tenant);
    if (v == NULL) {
        v = LB_NEW(pv);
        snprintf(v->tenant, sizeof(v->tenant), "%s", tenant);
        v->p = p;
        lb_map_put(&p->tenants, v->tenant, v);
    }
    return v;
}

static void clear_stale(pv *v)
{
    for (int i = 0; i < v->nstale; i++)
        lb_free(v->stale[i]);
    v->nstale = 0;
}

static void pv_free(pv *v)
{
    clear_stale(v);
    lb_lever_req_free(&v->req);
    lb_hook_rec_free(&v->rec);
    lb_job_rec_free(&v->notify);
    lb_hook_clear(&v->next);
    lb_heap_remove(&v->p->wakes, &v->wake);
    lb_free(v);
}

static void set_busy(pv *v, int busy)
{
    if (v->busy == busy) return;
    v->busy = busy;
    v->p->busy += busy ? 1 : -1;
}

/* The step in flight returned: go on unless the tenant was forgotten or
 * asked to start again. 1 when the caller should continue. */
static int returned(pv *v)
{
    set_busy(v, 0);
    lb_provision *p = v->p;
    if (v->forgotten || p->closing) {
        if (v->forgotten) pv_free(v);
        maybe_closed(p);
        return 0;
    }
    if (v->restart) {
        v->restart = 0;
        run(v);
        return 0;
    }
    return 1;
}

/* ---- writing the hook -------------------------------------------------- */

static void written(lb_store_op *op)
{
    pv *v = op->data;
    int status = op->status;
    lb_jobs_notify_done(v->p->cfg.jobs, op, &v->notify);
    lb_hook_rec_free(&v->rec);
    const lb_hook *h = hook_of(v);
    int applies = status == 0 && h != NULL && !v->forgotten && strcmp(h->id, v->next.id) == 0;
    if (applies) /* memory follows the store before anything else runs */
        lb_conns_apply_hook(v->p->conns, &v->next);
    else if (status != 0)
        lb_error("provision", "tenant %s: hook state not stored: %s", v->tenant,
                 lb_strerror(status));
    lb_hook_clear(&v->next);
    if (!returned(v)) return;
    h = hook_of(v);
    if (h == NULL) return;
    if (status != 0) {
        wake_at(v, lb_time_now_ms() + v->p->cfg.retry_base_ms);
    } else if (h->status == LB_HOOK_ACTIVE) {
        int64_t base = h->checked_at > h->active_since ? h->checked_at : h->active_since;
        wake_at(v, base + v->p->cfg.check_ms);
    } else if (h->status == LB_HOOK_PENDING && h->next_attempt_at > 0) {
        wake_at(v, h->next_attempt_at);
    }
}

/* The platform event of the hook turning active or failed (api.md "Events
 * to the platform"), put on the write that makes the change. */
static void hook_event(pv *v)
{
    const lb_hook *h = hook_of(v);
    lb_hook_status was = h != NULL ? h->status : LB_HOOK_NONE;
    lb_hook_status now = v->next.status;
    memset(&v->notify, 0, sizeof(v->notify));
    if (now == was || (now != LB_HOOK_ACTIVE && now != LB_HOOK_FAILED)) return;
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    if (now == LB_HOOK_ACTIVE) {
        lb_json_kv_str(g, "lever_webhook_id", v->next.lever_webhook_id);
    } else {
        lb_json_kv_int(g, "attempts", v->next.attempts);
        lb_json_kv_str(g, "last_error", v->next.last_error);
    }
    yajl_gen_map_close(g);
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(g, &buf, &len);
    char *data = lb_strndup((const char *)buf, len);
    yajl_gen_free(g);
    if (lb_jobs_notify(v->p->cfg.jobs, v->tenant,
                       now == LB_HOOK_ACTIVE ? "webhook.active" : "webhook.failed", data,
                       &v->notify)) {
        v->op.notify = &v->notify;
        v->op.nnotify = 1;
    }
    lb_free(data);
}

/* Writes v->next (prepared by the caller) and applies it once stored. */
static void write_next(pv *v)
{
    lb_hook_to_rec(v->p->conns, &v->next, &v->rec);
    memset(&v->op, 0, sizeof(v->op));
    v->op.kind = LB_STORE_HOOK_PUT;
    v->op.hook_put.rec = &v->rec;
    v->op.cb = written;
    v->op.data = v;
    v->step = S_WRITE;
    hook_event(v);
    int rc = lb_store_submit(v->p->store, &v->op);
    if (rc != 0) {
        lb_job_rec_free(&v->notify);
        lb_hook_rec_free(&v->rec);
        lb_hook_clear(&v->next);
        wake_at(v, lb_time_now_ms() + v->p->cfg.retry_base_ms);
        return;
    }
    set_busy(v, 1);
}

/* The permission (lever.md's words) that the call of a step needs. */
static const char *step_permission(step st)
{
    switch (st) {
    case S_LIST:
    case S_CHECK:
        return "find all webhooks";
    case S_DELETE:
        return "delete a webhook";
    case S_CREATE:
        return "add a webhook";
    default:
        return NULL;
    }
}

/* What the call of the current step found: a 403 adds its permission to
 * the connection's missing list, a 2xx takes it off (api.md: "the first
 * 403 on a write adds it to permissions.missing"). */
static void note_permission(pv *v, const lb_http_response *res)
{
    const char *perm = step_permission(v->step);
    lb_jobs_env *env = &v->p->env;
    if (perm == NULL || env->lever_permission == NULL) return;
    if (res->status >= 200 && res->status < 300)
        env->lever_permission(env->data, v->tenant, perm, 1);
    else if (lb_lever_classify(res) == LB_LEVER_FORBIDDEN)
        env->lever_permission(env->data, v->tenant, perm, 0);
}

static void failed(pv *v, const lb_http_response *res, const char *what)
{
    lb_provision *p = v->p;
    const lb_hook *h = hook_of(v);
    if (h == NULL) return;
    char msg[ERR_MAX - 64], err[ERR_MAX];
    lb_lever_describe(res, msg, sizeof(msg));
    snprintf(err, sizeof(err), "%s: %s", what, msg);
    lb_hook_copy(&v->next, h);
    lb_free(v->next.last_error);
    v->next.last_error = lb_strdup(err);
    int64_t now = lb_time_now_ms();
    if (lb_lever_classify(res) == LB_LEVER_REAUTH) {
        /* Waits for a new connection, which restarts provisioning. */
        p->env.lever_unauthorized(p->env.data, v->tenant);
        v->next.next_attempt_at = 0;
    } else {
        v->next.attempts++;
        int64_t next = now + lb_backoff_delay(p->cfg.retry_base_ms, p->cfg.retry_cap_ms,
                                              (unsigned)(v->next.attempts - 1));
        if (next <= now) next = now + 1;
        if (next >= v->next.deadline_at) {
            v->next.status = LB_HOOK_FAILED;
            v->next.next_attempt_at = 0;
            lb_warn("provision", "tenant %s: webhook provisioning failed: %s", v->tenant, err);
        } else {
            v->next.next_attempt_at = next;
        }
    }
    if (h->status == LB_HOOK_ACTIVE) { /* a failed check: try again later */
        v->next.attempts = h->attempts;
        v->next.status = LB_HOOK_ACTIVE;
        v->next.next_attempt_at = 0;
        v->next.checked_at = now - p->cfg.check_ms + p->cfg.retry_cap_ms;
    }
    write_next(v);
}

/* ---- calls ------------------------------------------------------------- */

/* Sends a Lever call for the tenant's current step. 0, or a negative code:
 * no usable connection (a reconnect restarts provisioning) or a full queue
 * (a retry is scheduled). */
static int lever_send(pv *v, const char *method, const char *query, yajl_gen body, lb_ob_cb done,
                      const char *path_fmt, const char *arg)
{
    lb_provision *p = v->p;
    lb_lever_auth auth = {0};
    if (p->env.lever_auth(p->env.data, v->tenant, &auth) != 0)
        return LB_ENOTFOUND; /* no usable connection: a reconnect restarts us */
    lb_lever_req_free(&v->req);
    lb_lever_req_init(&v->req, &auth, method, query, path_fmt, arg);
    if (body != NULL) lb_lever_req_json(&v->req, body);
    memset(&v->call, 0, sizeof(v->call));
    v->call.req = v->req.http;
    v->call.cb = done;
    v->call.data = v;
    double rate = 0;
    int burst = 0;
    p->env.tenant_rate(p->env.data, v->tenant, &rate, &burst);
    int rc = lb_outbound_submit(lb_outbound_tenant(p->ob, v->tenant, rate, burst), &v->call);
    if (rc == 0)
        set_busy(v, 1);
    else if (rc == LB_ETOOBIG) /* the tenant's queue is full: try again later */
        wake_at(v, lb_time_now_ms() + p->cfg.retry_base_ms);
    return rc;
}

/* A call of the current step came back: 1 when the step goes on; 0 when
 * the queue let the call go, the tenant was forgotten, or a restart was
 * asked for (returned() has dealt with those). */
static int call_returned(pv *v, const lb_http_response *res)
{
    if (res->status == 0 && res->error == LB_ECLOSED) {
        returned(v);
        return 0;
    }
    if (!v->forgotten && !v->p->closing) /* even when a restart was asked for */
        note_permission(v, res);
    return returned(v);
}

static void create_done(lb_ob_call *call, const lb_http_response *res);
static void delete_next(pv *v);

static void create(pv *v)
{
    const lb_hook *h = hook_of(v);
    if (h == NULL) return;
    char url[1024];
    lb_provision_hook_url(v->p, h->id, url, sizeof(url));
    yajl_gen g = lb_json_gen_new();
    lb_lever_webhook_body(g, url, "candidateStageChange");
    v->step = S_CREATE;
    lever_send(v, "POST", NULL, g, create_done, "/webhooks", NULL);
    yajl_gen_free(g);
}

static void create_done(lb_ob_call *call, const lb_http_response *res)
{
    pv *v = call->data;
    if (!call_returned(v, res)) return;
    const lb_hook *h = hook_of(v);
    if (h == NULL) return;
    if (lb_lever_classify(res) != LB_LEVER_OK) {
        failed(v, res, "creating the webhook");
        return;
    }
    char *id = NULL, *token = NULL;
    if (lb_lever_parse_webhook(res->body, res->body_len, &id, &token) != 0) {
        lb_http_response bad = *res;
        bad.status = 502;
        failed(v, &bad, "creating the webhook (no id or signature token in the answer)");
        return;
    }
    int64_t now = lb_time_now_ms();
    lb_hook_copy(&v->next, h);
    lb_free(v->next.lever_webhook_id);
    v->next.lever_webhook_id = id;
    if (v->next.signature_token) lb_free(v->next.signature_token);
    v->next.signature_token = token;
    v->next.status = LB_HOOK_ACTIVE;
    v->next.next_attempt_at = 0;
    lb_free(v->next.last_error);
    v->next.last_error = NULL;
    v->next.active_since = now;
    v->next.checked_at = now;
    lb_info("provision", "tenant %s: webhook %s active", v->tenant, id);
    write_next(v);
}

static void delete_done(lb_ob_call *call, const lb_http_response *res)
{
    pv *v = call->data;
    if (!call_returned(v, res)) return;
    lb_lever_outcome o = lb_lever_classify(res);
    if (o != LB_LEVER_OK && o != LB_LEVER_NOT_FOUND) {
        failed(v, res, "deleting the earlier webhook");
        return;
    }
    delete_next(v);
}

static void delete_next(pv *v)
{
    if (v->nstale == 0) {
        create(v);
        return;
    }
    char *id = v->stale[--v->nstale];
    v->step = S_DELETE;
    lever_send(v, "DELETE", NULL, NULL, delete_done, "/webhooks/%s", id);
    lb_free(id);
}

static void list_done(lb_ob_call *call, const lb_http_response *res)
{
    pv *v = call->data;
    if (!call_returned(v, res)) return;
    const lb_hook *h = hook_of(v);
    if (h == NULL) return;
    if (lb_lever_classify(res) != LB_LEVER_OK) {
        failed(v, res, v->step == S_CHECK ? "checking the webhook" : "listing webhooks");
        return;
    }
    lb_lever_page page;
    if (lb_lever_parse_page(res->body, res->body_len, &page) != 0) {
        lb_http_response bad = *res;
        bad.status = 502;
        failed(v, &bad, "listing webhooks (unreadable answer)");
        return;
    }
    char url[1024];
    lb_provision_hook_url(v->p, h->id, url, sizeof(url));
    if (v->step == S_CHECK) {
        int found = 0;
        for (size_t i = 0; i < page.count; i++)
            if (page.items[i].id && h->lever_webhook_id &&
                strcmp(page.items[i].id, h->lever_webhook_id) == 0)
                found = 1;
        lb_lever_page_free(&page);
        int64_t now = lb_time_now_ms();
        lb_hook_copy(&v->next, h);
        if (found) {
            v->next.checked_at = now;
        } else {
            lb_warn("provision", "tenant %s: webhook %s is gone from Lever; provisioning again",
                    v->tenant, h->lever_webhook_id ? h->lever_webhook_id : "?");
            v->next.status = LB_HOOK_PENDING;
            v->next.attempts = 0;
            v->next.deadline_at = now + v->p->cfg.deadline_ms;
            v->next.next_attempt_at = now;
            lb_free(v->next.last_error);
            v->next.last_error = lb_strdup("the webhook was deleted in Lever");
        }
        write_next(v);
        return;
    }
    clear_stale(v);
    for (size_t i = 0; i < page.count && v->nstale < MAX_STALE; i++)
        if (page.items[i].url && page.items[i].id && strcmp(page.items[i].url, url) == 0)
            v->stale[v->nstale++] = lb_strdup(page.items[i].id);
    lb_lever_page_free(&page);
    delete_next(v);
}

/* Both an attempt (S_LIST) and a check (S_CHECK) start by listing the
 * tenant's webhooks; list_done tells them apart by the step. */
static void list_webhooks(pv *v, step st)
{
    if (v->busy) {
        v->restart = 1;
        return;
    }
    v->step = st;
    lever_send(v, "GET", NULL, NULL, list_done, "/webhooks", NULL);
}

static void attempt(pv *v)
{
    list_webhooks(v, S_LIST);
}

static void check(pv *v)
{
    list_webhooks(v, S_CHECK);
}

/* ---- public ------------------------------------------------------------ */

int lb_provision_new(uv_loop_t *loop, lb_store *store, lb_outbound *ob, lb_conns *conns,
                     const lb_provision_config *cfg, const lb_jobs_env *env, lb_provision **out)
{
    lb_provision *p = LB_NEW(lb_provision);
    p->loop = loop;
    p->store = store;
    p->ob = ob;
    p->conns = conns;
    p->cfg = *cfg;
    if (p->cfg.check_ms <= 0) p->cfg.check_ms = LB_PROVISION_CHECK_MS;
    p->env = *env;
    lb_map_init(&p->tenants);
    lb_heap_init(&p->wakes);
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    *out = p;
    return 0;
}

/* Wakes the tenant's provisioning when its stored hook says. */
static void resume_one(lb_provision *p, const lb_conn *c)
{
    if (c->hook == NULL || c->status != LB_CONN_CONNECTED) return;
    pv *v = pv_get(p, c->tenant_id);
    const lb_hook *h = c->hook;
    if (h->status == LB_HOOK_PENDING)
        wake_at(v, h->next_attempt_at);
    else if (h->status == LB_HOOK_ACTIVE)
        wake_at(v, (h->checked_at > h->active_since ? h->checked_at : h->active_since) +
                       p->cfg.check_ms);
}

void lb_provision_resume(lb_provision *p)
{
    size_t pos = 0;
    lb_conn *c;
    while ((c = lb_map_next(&p->conns->by_tenant, &pos)) != NULL)
        resume_one(p, c);
}

void lb_provision_tenant_gained(lb_provision *p, const char *tenant)
{
    const lb_conn *c = lb_conns_get(p->conns, tenant);
    if (c != NULL && !p->closing) resume_one(p, c);
}

void lb_provision_tenant_lost(lb_provision *p, const char *tenant)
{
    pv *v = lb_map_get(&p->tenants, tenant);
    if (v == NULL) return;
    lb_heap_remove(&p->wakes, &v->wake);
    arm(p);
    /* A write in flight completes (it records what Lever already did). */
    if (v->busy && v->step != S_WRITE && lb_outbound_cancel(&v->call)) set_busy(v, 0);
    v->restart = 0;
}

void lb_provision_start(lb_provision *p, const char *tenant)
{
    pv *v = pv_get(p, tenant);
    v->forgotten = 0;
    lb_heap_remove(&p->wakes, &v->wake);
    if (!lb_gate_holds(p->cfg.gate, tenant)) return; /* its holder's work */
    if (v->busy)
        v->restart = 1;
    else
        attempt(v);
}

void lb_provision_kick(lb_provision *p, const char *tenant)
{
    pv *v = pv_get(p, tenant);
    if (v->busy || v->forgotten) return;
    lb_heap_remove(&p->wakes, &v->wake);
    run(v);
}

void lb_provision_forget(lb_provision *p, const char *tenant)
{
    pv *v = lb_map_del(&p->tenants, tenant);
    if (v == NULL) return;
    v->forgotten = 1;
    lb_heap_remove(&p->wakes, &v->wake);
    if (!v->busy) pv_free(v);
}

static void timer_closed_cb(uv_handle_t *h)
{
    lb_provision *p = h->data;
    p->timer.data = NULL;
    maybe_closed(p);
}

static void maybe_closed(lb_provision *p)
{
    if (!p->closing || p->busy > 0 || p->timer.data != NULL) return;
    size_t pos = 0;
    pv *v;
    while ((v = lb_map_next(&p->tenants, &pos)) != NULL)
        pv_free(v);
    lb_map_free(&p->tenants);
    lb_heap_free(&p->wakes);
    void (*cb)(void *) = p->close_cb;
    void *data = p->close_data;
    lb_free(p);
    if (cb != NULL) cb(data);
}

/* Calls in flight are cancelled (the outbound queue completes them with
 * LB_ECLOSED); store writes are waited for. Hook state stays in the store. */
void lb_provision_close(lb_provision *p, void (*cb)(void *data), void *data)
{
    p->closing = 1;
    p->close_cb = cb;
    p->close_data = data;
    size_t pos = 0;
    pv *v;
    while ((v = lb_map_next(&p->tenants, &pos)) != NULL) {
        if (v->busy && v->step != S_WRITE && lb_outbound_cancel(&v->call)) set_busy(v, 0);
    }
    uv_close((uv_handle_t *)&p->timer, timer_closed_cb);
}
