/* /v1/tenants/{tenant}/lever: connect with an API key (checked against
 * Lever, permissions probed), read, disconnect, re-provision the hook; and
 * the credential callbacks the engine calls (lb_jobs_env). Lever's stages
 * and postings for workflow forms are in catalog.c. */
#include "api/api.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strbuf.h"
#include "core/time.h"
#include "engine/jobs.h"
#include "engine/outbound.h"
#include "engine/provision.h"
#include "engine/reconcile.h"
#include "http/response.h"
#include "json/json.h"
#include "state/connections.h"
#include "state/missed.h"
#include "state/tenants.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#define API_KEY_MAX 256
#define MADE_UP_ID "00000000-0000-4000-8000-000000000000"

/* ---- the job engine's questions -------------------------------------------- */

int lb_api_lever_auth(void *data, const char *tenant, lb_lever_auth *auth)
{
    lb_api *api = data;
    const lb_conn *c = lb_conns_get(api->conns, tenant);
    if (c == NULL || c->status != LB_CONN_CONNECTED) return LB_ENOTFOUND;
    auth->api_url = api->cfg->lever_api_url;
    if (c->auth == LB_AUTH_API_KEY && c->api_key != NULL) {
        auth->api_key = c->api_key;
        return 0;
    }
    if (c->auth == LB_AUTH_OAUTH) {
        int rc = lb_api_oauth_usable(api, c);
        if (rc == 0) auth->access_token = c->access_token;
        return rc;
    }
    return LB_ENOTFOUND;
}

void lb_api_tenant_rate(void *data, const char *tenant, double *rate, int *burst)
{
    lb_api *api = data;
    const lb_tenant *t = lb_tenants_get(api->tenants, tenant);
    *rate = t && t->lever_rate > 0 ? t->lever_rate : api->cfg->lever_rate;
    *burst = t && t->lever_burst > 0 ? t->lever_burst : api->cfg->lever_burst;
}

/* A connection change, written then applied. Owner: whoever starts it; freed
 * in saved(). */
typedef struct conn_write {
    lb_store_op op;
    lb_store_op hop;
    lb_api *api;
    lb_conn next;
    lb_hook hook;
    int with_hook;
    lb_conn_rec rec;
    lb_hook_rec hrec;
    int pending;
    int failed;
    void (*then)(struct conn_write *w, int ok);
    lb_http_req *req;
    lb_job_rec notify; /* the connection's event, written with it */
} conn_write;

static void conn_write_free(conn_write *w)
{
    lb_job_rec_free(&w->notify);
    lb_conn_clear(&w->next);
    lb_hook_clear(&w->hook);
    lb_conn_rec_free(&w->rec);
    lb_hook_rec_free(&w->hrec);
    lb_free(w);
}

static void saved(lb_store_op *op)
{
    conn_write *w = op->data;
    if (op->status != 0) w->failed = op->status;
    if (--w->pending > 0) return;
    lb_jobs_notify_done(w->api->jobs, &w->op, &w->notify);
    if (!w->failed) {
        lb_conns_apply(w->api->conns, &w->next);
        if (w->with_hook) lb_conns_apply_hook(w->api->conns, &w->hook);
    } else {
        lb_error("api", "tenant %s: connection not stored: %s", w->next.tenant_id,
                 lb_strerror(w->failed));
    }
    if (w->then) w->then(w, !w->failed);
    conn_write_free(w);
}

/* Stores w->next (and w->hook when with_hook) in one batch. */
static int conn_write_submit(lb_api *api, conn_write *w)
{
    w->api = api;
    lb_conn_to_rec(api->conns, &w->next, &w->rec);
    w->op.kind = LB_STORE_CONN_PUT;
    w->op.conn_put.rec = &w->rec;
    w->op.cb = saved;
    w->op.data = w;
    const lb_conn *old = lb_conns_get(api->conns, w->next.tenant_id);
    lb_api_conn_event(api, w->next.tenant_id, old ? old->status : LB_CONN_DISCONNECTED,
                      w->next.status, &w->notify);
    lb_api_notify_attach(&w->op, &w->notify);
    int rc = lb_store_submit(api->store, &w->op);
    if (rc != 0) return rc;
    w->pending = 1;
    if (w->with_hook) {
        lb_hook_to_rec(api->conns, &w->hook, &w->hrec);
        w->hop.kind = LB_STORE_HOOK_PUT;
        w->hop.hook_put.rec = &w->hrec;
        w->hop.cb = saved;
        w->hop.data = w;
        if (lb_store_submit(api->store, &w->hop) == 0)
            w->pending++;
        else
            w->failed = LB_EIO;
    }
    return 0;
}

void lb_api_lever_unauthorized(void *data, const char *tenant)
{
    lb_api *api = data;
    const lb_conn *c = lb_conns_get(api->conns, tenant);
    if (c == NULL || c->status != LB_CONN_CONNECTED) return;
    if (c->auth == LB_AUTH_OAUTH && lb_api_oauth_unauthorized(api, c))
        return; /* a refresh runs; the waiting jobs resume after it */
    lb_warn("api",
            "tenant %s: Lever refused the credentials; the connection needs re-authorization",
            tenant);
    conn_write *w = LB_NEW(conn_write);
    lb_conn_copy(&w->next, c);
    w->next.status = LB_CONN_NEEDS_REAUTH;
    w->next.updated_at = lb_time_now_ms();
    /* Memory at once (in this same turn of the loop): calls in flight must
     * stop using the credentials now; the store follows. Submitted first so
     * that the write sees the change and carries its event. */
    if (conn_write_submit(api, w) != 0) conn_write_free(w);
    lb_conns_stop(api->conns, tenant);
}

int lb_api_conn_event(lb_api *api, const char *tenant, int was, int now, lb_job_rec *rec)
{
    const char *type = NULL;
    memset(rec, 0, sizeof(*rec));
    if (now == was) return 0;
    if (now == LB_CONN_CONNECTED)
        type = "connection.connected";
    else if (now == LB_CONN_NEEDS_REAUTH)
        type = "connection.needs_reauth";
    else if (now == LB_CONN_DISCONNECTED)
        type = "connection.disconnected";
    if (type == NULL) return 0;
    const lb_conn *c = lb_conns_get(api->conns, tenant);
    const char *auth = c != NULL ? lb_auth_name(c->auth) : NULL;
    char data[64];
    if (now == LB_CONN_CONNECTED || auth == NULL)
        snprintf(data, sizeof(data), "{}");
    else
        snprintf(data, sizeof(data), "{\"auth\":\"%s\"}", auth);
    return lb_jobs_notify(api->jobs, tenant, type, data, rec);
}

void lb_api_notify_attach(lb_store_op *op, lb_job_rec *rec)
{
    if (rec->action == NULL) return;
    op->notify = rec;
    op->nnotify = 1;
}

/* A connection row written on its own, with its event. Owned by the store
 * op's callback. */
typedef struct {
    lb_store_op op;
    lb_api *api;
    lb_conn_rec rec;
    lb_job_rec notify;
} rec_write;

static void rec_saved(lb_store_op *op)
{
    rec_write *w = op->data;
    if (op->status != 0)
        lb_error("api", "tenant %s: connection state not stored: %s", w->rec.tenant_id,
                 lb_strerror(op->status));
    lb_jobs_notify_done(w->api->jobs, op, &w->notify);
    lb_conn_rec_free(&w->rec);
    lb_free(w);
}

void lb_api_store_conn_rec(lb_api *api, lb_conn_rec *rec, lb_job_rec *notify)
{
    rec_write *w = LB_NEW(rec_write);
    w->api = api;
    w->rec = *rec;
    memset(rec, 0, sizeof(*rec));
    if (notify != NULL) {
        w->notify = *notify;
        memset(notify, 0, sizeof(*notify));
    }
    w->op.kind = LB_STORE_CONN_PUT;
    w->op.conn_put.rec = &w->rec;
    w->op.cb = rec_saved;
    w->op.data = w;
    lb_api_notify_attach(&w->op, &w->notify);
    if (lb_store_submit(api->store, &w->op) != 0) {
        lb_job_rec_free(&w->notify);
        lb_conn_rec_free(&w->rec);
        lb_free(w);
    }
}

/* The connection's list of missing permissions follows what Lever answers:
 * a 403 adds the call's permission, a 2xx removes it. Nothing is written
 * when the list does not change, so the success of every call costs a scan
 * of a list that is almost always empty. */
void lb_api_lever_permission(void *data, const char *tenant, const char *permission, int granted)
{
    lb_api *api = data;
    const lb_conn *c = lb_conns_get(api->conns, tenant);
    if (c == NULL) return;
    size_t at = c->nmissing;
    for (size_t i = 0; i < c->nmissing; i++)
        if (strcmp(c->missing[i], permission) == 0) at = i;
    if (granted ? at == c->nmissing : at < c->nmissing || c->nmissing == LB_PERMISSIONS_MAX) return;
    conn_write *w = LB_NEW(conn_write);
    lb_conn_copy(&w->next, c);
    if (granted) {
        lb_info("api", "tenant %s: the Lever key now has \"%s\"", tenant, permission);
        lb_free(w->next.missing[at]);
        memmove(&w->next.missing[at], &w->next.missing[at + 1],
                (w->next.nmissing - at - 1) * sizeof(w->next.missing[0]));
        w->next.nmissing--;
    } else {
        lb_warn("api", "tenant %s: the Lever key lacks \"%s\"", tenant, permission);
        w->next.missing[w->next.nmissing++] = lb_strdup(permission);
    }
    w->next.updated_at = lb_time_now_ms();
    if (conn_write_submit(api, w) != 0) conn_write_free(w);
}

/* ---- rendering ------------------------------------------------------------ */

void lb_api_connection_json(lb_api *api, yajl_gen g, const lb_tenant *t)
{
    const lb_conn *c = lb_conns_get(api->conns, t->id);
    const lb_hook *h = c ? c->hook : NULL;
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "status", lb_conn_status_name(c ? c->status : LB_CONN_DISCONNECTED));
    lb_json_kv_str(g, "auth", c ? lb_auth_name(c->auth) : NULL);
    lb_json_kv_time(g, "connected_at", c ? c->connected_at : 0);
    lb_json_key(g, "permissions");
    yajl_gen_map_open(g);
    lb_json_kv_time(g, "checked_at", c ? c->permissions_checked_at : 0);
    lb_json_key(g, "missing");
    yajl_gen_array_open(g);
    for (size_t i = 0; c && i < c->nmissing; i++)
        lb_json_str(g, c->missing[i]);
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    lb_json_key(g, "webhook");
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "status", lb_hook_status_name(h ? h->status : LB_HOOK_NONE));
    lb_json_kv_str(g, "id", h ? h->lever_webhook_id : NULL);
    if (h != NULL) {
        char url[1024];
        snprintf(url, sizeof(url), "%s/hooks/lever/%s", api->cfg->public_url, h->id);
        lb_json_kv_str(g, "url", url);
    } else {
        lb_json_kv_null(g, "url");
    }
    lb_json_kv_int(g, "attempts", h ? h->attempts : 0);
    lb_json_kv_time(g, "next_attempt_at",
                    h && h->status == LB_HOOK_PENDING ? h->next_attempt_at : 0);
    lb_json_kv_time(g, "deadline_at", h ? h->deadline_at : 0);
    lb_json_kv_str(g, "last_error", h ? h->last_error : NULL);
    lb_json_kv_time(g, "active_since", h && h->status == LB_HOOK_ACTIVE ? h->active_since : 0);
    lb_json_kv_time(g, "last_delivery_at", h ? h->last_delivery_at : 0);
    lb_json_kv_int(g, "missed",
                   api->missed ? lb_missed_count(api->missed, t->id, lb_time_now_ms()) : 0);
    lb_json_kv_time(g, "reconciled_at",
                    api->reconcile ? lb_reconcile_done_at(api->reconcile, t->id) : 0);
    lb_json_kv_str(g, "warning", api->cfg->public_url_warning);
    yajl_gen_map_close(g);
    lb_json_key(g, "rate");
    yajl_gen_map_open(g);
    double rate;
    int burst;
    lb_api_tenant_rate(api, t->id, &rate, &burst);
    lb_json_kv_double(g, "per_second", rate);
    lb_json_kv_int(g, "burst", burst);
    yajl_gen_map_close(g);
    size_t queued = 0, retrying = 0;
    if (api->jobs != NULL) lb_jobs_tenant_backlog(api->jobs, t->id, &queued, &retrying);
    lb_json_key(g, "backlog");
    yajl_gen_map_open(g);
    lb_json_kv_int(g, "queued", (int64_t)queued);
    lb_json_kv_int(g, "retrying", (int64_t)retrying);
    lb_json_kv_int(g, "failed",
                   api->jobs != NULL ? (int64_t)lb_jobs_tenant_failed(api->jobs, t->id) : 0);
    yajl_gen_map_close(g);
    yajl_gen_map_close(g);
}

static void respond_connection(lb_api *api, lb_http_req *req, int status, const lb_tenant *t)
{
    yajl_gen g = lb_json_gen_new();
    lb_api_connection_json(api, g, t);
    lb_http_respond_json(req, status, g);
}

static void lever_get(lb_http_req *req, void *data)
{
    lb_api *api = data;
    lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t != NULL) respond_connection(api, req, 200, t);
}

/* ---- connecting with an API key: the permission probe ---------------------- */

/* Every read permission of lever.md's table, probed with a cheap GET. */
typedef enum {
    P_ALL_OPPS,
    P_OPP,
    P_ALL_CANDS,
    P_CAND,
    P_ALL_OPP_APPS,
    P_OPP_APP,
    P_ALL_CAND_APPS,
    P_OPP_NOTE,
    P_ALL_TAGS,
    P_STAGE,
    P_ALL_STAGES,
    P_POSTING,
    P_ALL_POSTINGS,
    P_ALL_WEBHOOKS,
    P_COUNT,
    /* helpers that find ids, not permissions of their own */
    X_NOTES = P_COUNT,
    X_COUNT
} probe_id;

static const char *const probe_names[P_COUNT] = {
    [P_ALL_OPPS] = "find all opportunities",
    [P_OPP] = "find an opportunity",
    [P_ALL_CANDS] = "find all candidates",
    [P_CAND] = "find a candidate",
    [P_ALL_OPP_APPS] = "find all opportunity applications",
    [P_OPP_APP] = "find an opportunity application",
    [P_ALL_CAND_APPS] = "find all candidate applications",
    [P_OPP_NOTE] = "find an opportunity note",
    [P_ALL_TAGS] = "find all tags",
    [P_STAGE] = "find a stage",
    [P_ALL_STAGES] = "find all stages",
    [P_POSTING] = "find a posting",
    [P_ALL_POSTINGS] = "find all postings",
    [P_ALL_WEBHOOKS] = "find all webhooks",
};

typedef struct probe probe;

typedef struct {
    lb_ob_call call;
    lb_lever_req req;
    probe *pr;
    probe_id id;
} probe_call;

/* One PUT .../lever while Lever is asked. Owned by the handler; freed once
 * every call returned and the answer is sent. */
struct probe {
    lb_api *api;
    lb_http_req *req;
    char tenant[LB_TENANT_ID_MAX + 1];
    char *key;
    probe_call calls[X_COUNT];
    int outstanding;
    int phase;
    int forbidden[P_COUNT];
    int unauthorized;
    int unavailable;
    int tls_setup; /* unavailable for a reason that waiting will not mend */
    char unavailable_msg[256];
    char *opp, *app, *note, *stage, *posting;
};

static void probe_free(probe *pr)
{
    for (int i = 0; i < X_COUNT; i++)
        lb_lever_req_free(&pr->calls[i].req);
    if (pr->key) {
        sodium_memzero(pr->key, strlen(pr->key));
        lb_free(pr->key);
    }
    lb_free(pr->opp);
    lb_free(pr->app);
    lb_free(pr->note);
    lb_free(pr->stage);
    lb_free(pr->posting);
    lb_free(pr);
}

static void probe_next_phase(probe *pr);

static char *first_id(const lb_http_response *res)
{
    lb_lever_page page;
    if (lb_lever_parse_page(res->body, res->body_len, &page) != 0) return NULL;
    char *id = page.count > 0 && page.items[0].id ? lb_strdup(page.items[0].id) : NULL;
    lb_lever_page_free(&page);
    return id;
}

static void probe_done(lb_ob_call *call, const lb_http_response *res)
{
    probe_call *pc = call->data;
    probe *pr = pc->pr;
    pr->outstanding--;
    if (res->status == 0 && res->error == LB_ECLOSED) {
        pr->unavailable = 1;
        snprintf(pr->unavailable_msg, sizeof(pr->unavailable_msg), "the server is stopping");
    } else {
        switch (lb_lever_classify(res)) {
        case LB_LEVER_OK:
            if (pc->id == P_ALL_OPPS)
                pr->opp = first_id(res);
            else if (pc->id == P_ALL_OPP_APPS)
                pr->app = first_id(res);
            else if (pc->id == X_NOTES)
                pr->note = first_id(res);
            else if (pc->id == P_ALL_STAGES)
                pr->stage = first_id(res);
            else if (pc->id == P_ALL_POSTINGS)
                pr->posting = first_id(res);
            break;
        case LB_LEVER_NOT_FOUND: /* a made-up id: the call itself was permitted */
            break;
        case LB_LEVER_FORBIDDEN:
            if (pc->id < P_COUNT) pr->forbidden[pc->id] = 1;
            break;
        case LB_LEVER_REAUTH:
            pr->unauthorized = 1;
            break;
        default:
            if (pc->id == X_NOTES) /* only a helper: a made-up note id will do */
                break;
            pr->unavailable = 1;
            pr->tls_setup |= res->tls_setup;
            lb_lever_describe(res, pr->unavailable_msg, sizeof(pr->unavailable_msg));
            break;
        }
    }
    if (pr->outstanding == 0) probe_next_phase(pr);
}

static int probe_send(probe *pr, probe_id id, const char *query, const char *fmt, const char *a,
                      const char *b)
{
    lb_api *api = pr->api;
    probe_call *pc = &pr->calls[id];
    lb_lever_auth auth = {.api_url = api->cfg->lever_api_url, .api_key = pr->key};
    lb_lever_req_free(&pc->req);
    lb_lever_req_init(&pc->req, &auth, "GET", query, fmt, a, b);
    pc->pr = pr;
    pc->id = id;
    memset(&pc->call, 0, sizeof(pc->call));
    pc->call.req = pc->req.http;
    pc->call.cb = probe_done;
    pc->call.data = pc;
    double rate;
    int burst;
    lb_api_tenant_rate(api, pr->tenant, &rate, &burst);
    int rc =
        lb_outbound_submit(lb_outbound_tenant(api->outbound, pr->tenant, rate, burst), &pc->call);
    if (rc == 0) pr->outstanding++;
    return rc;
}

static void connected(conn_write *w, int ok);

static void probe_finish(probe *pr)
{
    lb_api *api = pr->api;
    lb_http_req *req = pr->req;
    if (pr->unauthorized) {
        lb_http_respond_error(req, 422, "invalid_api_key",
                              "Lever refused this API key. Use a Lever API key from Settings > "
                              "Integrations and API > API Credentials, not a Postings API key.",
                              "api_key");
        probe_free(pr);
        return;
    }
    if (pr->unavailable) {
        char msg[400];
        snprintf(msg, sizeof(msg), "Lever could not be reached or failed: %s.%s",
                 pr->unavailable_msg, pr->tls_setup ? "" : " Try again later.");
        lb_http_respond_error(req, 502, "lever_unavailable", msg, NULL);
        probe_free(pr);
        return;
    }
    int nmissing = 0;
    for (int i = 0; i < P_COUNT; i++)
        nmissing += pr->forbidden[i];
    if (nmissing > 0) {
        lb_strbuf b;
        lb_strbuf_init(&b, 16 * 1024);
        lb_strbuf_cat(&b, "{\"error\":{\"code\":\"missing_permissions\",\"message\":");
        static const char msg[] = "This Lever API key lacks permissions that leverbridge needs. "
                                  "Ask a Lever Super Admin to grant them under Settings > "
                                  "Integrations and API > API Credentials.";
        lb_strbuf_json_str(&b, msg, sizeof(msg) - 1);
        lb_strbuf_cat(&b, ",\"field\":\"api_key\",\"missing\":[");
        int first = 1;
        for (int i = 0; i < P_COUNT; i++) {
            if (!pr->forbidden[i]) continue;
            if (!first) lb_strbuf_cat(&b, ",");
            first = 0;
            lb_strbuf_json_str(&b, probe_names[i], strlen(probe_names[i]));
        }
        lb_strbuf_cat(&b, "]}}");
        size_t len;
        char *body = lb_strbuf_steal(&b, &len);
        lb_http_respond(req, 422, "application/json", NULL, body, len, lb_free, body);
        probe_free(pr);
        return;
    }
    /* Every read permission is there: store the connection and a pending
     * hook (the same hook id as before, so provisioning can clean up). */
    int64_t now = lb_time_now_ms();
    conn_write *w = LB_NEW(conn_write);
    const lb_conn *old = lb_conns_get(api->conns, pr->tenant);
    snprintf(w->next.tenant_id, sizeof(w->next.tenant_id), "%s", pr->tenant);
    w->next.status = LB_CONN_CONNECTED;
    w->next.auth = LB_AUTH_API_KEY;
    w->next.api_key = lb_strdup(pr->key);
    w->next.permissions_checked_at = now;
    w->next.connected_at = now;
    w->next.updated_at = now;
    w->with_hook = 1;
    if (old != NULL && old->hook != NULL) {
        lb_hook_copy(&w->hook, old->hook);
    } else {
        char *hid = lb_random_id("", 24);
        snprintf(w->hook.id, sizeof(w->hook.id), "%s", hid);
        lb_free(hid);
        snprintf(w->hook.tenant_id, sizeof(w->hook.tenant_id), "%s", pr->tenant);
    }
    w->hook.status = LB_HOOK_PENDING;
    w->hook.attempts = 0;
    w->hook.next_attempt_at = now;
    w->hook.deadline_at = now + api->cfg->webhook_deadline_ms;
    lb_free(w->hook.last_error);
    w->hook.last_error = NULL;
    w->then = connected;
    w->req = req;
    probe_free(pr);
    if (conn_write_submit(api, w) != 0) {
        conn_write_free(w);
        lb_api_store_unavailable(req);
    }
}

static void connected(conn_write *w, int ok)
{
    lb_api *api = w->api;
    if (!ok) {
        lb_api_store_unavailable(w->req);
        return;
    }
    lb_info("api", "tenant %s: Lever connected with an API key", w->next.tenant_id);
    lb_jobs_tenant_resume(api->jobs, w->next.tenant_id);
    lb_provision_start(api->provision, w->next.tenant_id);
    const lb_tenant *t = lb_tenants_get(api->tenants, w->next.tenant_id);
    if (t != NULL)
        respond_connection(api, w->req, 200, t);
    else
        lb_http_respond_error(w->req, 404, "not_found", "No such tenant.", "tenant");
}

static void probe_next_phase(probe *pr)
{
    if (pr->unauthorized || pr->unavailable || pr->phase == 3) {
        probe_finish(pr);
        return;
    }
    pr->phase++;
    const char *opp = pr->opp ? pr->opp : MADE_UP_ID;
    int rc = 0;
    if (pr->phase == 1) {
        /* One cheap call first: a wrong key or an unreachable Lever shows at once. */
        rc = probe_send(pr, P_ALL_OPPS, "limit=1", "/opportunities", NULL, NULL);
    } else if (pr->phase == 2) {
        rc |= probe_send(pr, P_OPP, NULL, "/opportunities/%s", opp, NULL);
        rc |= probe_send(pr, P_ALL_CANDS, "limit=1", "/candidates", NULL, NULL);
        rc |= probe_send(pr, P_CAND, NULL, "/candidates/%s", opp, NULL);
        rc |= probe_send(pr, P_ALL_OPP_APPS, NULL, "/opportunities/%s/applications", opp, NULL);
        rc |= probe_send(pr, P_ALL_CAND_APPS, NULL, "/candidates/%s/applications", opp, NULL);
        rc |= probe_send(pr, X_NOTES, NULL, "/opportunities/%s/notes", opp, NULL);
        rc |= probe_send(pr, P_ALL_TAGS, NULL, "/tags", NULL, NULL);
        rc |= probe_send(pr, P_ALL_STAGES, NULL, "/stages", NULL, NULL);
        rc |= probe_send(pr, P_ALL_POSTINGS, "limit=1", "/postings", NULL, NULL);
        rc |= probe_send(pr, P_ALL_WEBHOOKS, NULL, "/webhooks", NULL, NULL);
    } else {
        rc |= probe_send(pr, P_OPP_APP, NULL, "/opportunities/%s/applications/%s", opp,
                         pr->app ? pr->app : MADE_UP_ID);
        rc |= probe_send(pr, P_OPP_NOTE, NULL, "/opportunities/%s/notes/%s", opp,
                         pr->note ? pr->note : MADE_UP_ID);
        rc |= probe_send(pr, P_STAGE, NULL, "/stages/%s", pr->stage ? pr->stage : MADE_UP_ID, NULL);
        rc |= probe_send(pr, P_POSTING, NULL, "/postings/%s",
                         pr->posting ? pr->posting : MADE_UP_ID, NULL);
    }
    if (rc != 0) {
        pr->unavailable = 1;
        snprintf(pr->unavailable_msg, sizeof(pr->unavailable_msg),
                 "too many calls are queued for this tenant");
    }
    if (pr->outstanding == 0) probe_finish(pr);
}

static void lever_put(lb_http_req *req, void *data)
{
    lb_api *api = data;
    lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL) return;
    yajl_val body = lb_api_json_body(req);
    if (body == NULL) return;
    for (size_t i = 0; i < body->u.object.len; i++) {
        if (strcmp(body->u.object.keys[i], "api_key") != 0) {
            lb_http_respond_error(req, 400, "invalid_request", "Unknown field.",
                                  body->u.object.keys[i]);
            yajl_tree_free(body);
            return;
        }
    }
    const char *key = lb_json_get_str(body, "api_key");
    if (key == NULL || *key == '\0' || strlen(key) > API_KEY_MAX) {
        yajl_tree_free(body);
        lb_http_respond_error(req, 400, "invalid_request",
                              "api_key must be a non-empty string of at most 256 bytes.",
                              "api_key");
        return;
    }
    if (!t->api_addon) {
        yajl_tree_free(body);
        lb_http_respond_error(req, 403, "api_addon_required",
                              "This tenant does not have the API add-on, which connecting Lever "
                              "needs.",
                              NULL);
        return;
    }
    probe *pr = LB_NEW(probe);
    pr->api = api;
    pr->req = req;
    snprintf(pr->tenant, sizeof(pr->tenant), "%s", t->id);
    pr->key = lb_strdup(key);
    sodium_memzero((char *)key, strlen(key));
    yajl_tree_free(body);
    probe_next_phase(pr);
}

/* ---- disconnecting ------------------------------------------------------ */

/* The best-effort removal of the webhook in Lever, after the credentials
 * are gone from the store. Owned by itself; freed when the call returns. */
typedef struct {
    lb_ob_call call;
    lb_lever_req req;
} unhook;

static void unhook_done(lb_ob_call *call, const lb_http_response *res)
{
    unhook *u = call->data;
    if (lb_lever_classify(res) != LB_LEVER_OK && res->error != LB_ECLOSED) {
        char msg[256];
        lb_lever_describe(res, msg, sizeof(msg));
        lb_warn("api", "could not delete the Lever webhook: %s", msg);
    }
    lb_lever_req_free(&u->req);
    lb_free(u);
}

typedef struct {
    lb_store_op op;
    lb_api *api;
    lb_http_req *req;
    char tenant[LB_TENANT_ID_MAX + 1];
    lb_job_rec notify; /* connection.disconnected, written with the delete */
} disconnect_ctx;

static void disconnected(lb_store_op *op)
{
    disconnect_ctx *d = op->data;
    lb_api *api = d->api;
    lb_jobs_notify_done(api->jobs, op, &d->notify);
    if (op->status != 0) {
        lb_api_store_unavailable(d->req);
        lb_free(d);
        return;
    }
    lb_api_lever_forget(api, d->tenant);
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "status", "disconnected");
    yajl_gen_map_close(g);
    lb_http_respond_json(d->req, 202, g);
    lb_free(d);
}

void lb_api_lever_forget(lb_api *api, const char *tenant)
{
    const lb_conn *c = lb_conns_get(api->conns, tenant);
    if (c == NULL) return;
    lb_jobs_tenant_cancel(api->jobs, tenant);
    lb_provision_forget(api->provision, tenant);
    if (api->reconcile != NULL) lb_reconcile_forget(api->reconcile, tenant);
    lb_lever_auth auth = {.api_url = api->cfg->lever_api_url};
    if (c->auth == LB_AUTH_API_KEY)
        auth.api_key = c->api_key;
    else
        auth.access_token = c->access_token;
    if (c->hook != NULL && c->hook->lever_webhook_id != NULL &&
        (auth.api_key != NULL || auth.access_token != NULL)) {
        unhook *u = LB_NEW(unhook);
        lb_lever_req_init(&u->req, &auth, "DELETE", NULL, "/webhooks/%s",
                          c->hook->lever_webhook_id);
        u->call.req = u->req.http;
        u->call.cb = unhook_done;
        u->call.data = u;
        double rate;
        int burst;
        lb_api_tenant_rate(api, tenant, &rate, &burst);
        if (lb_outbound_submit(lb_outbound_tenant(api->outbound, tenant, rate, burst), &u->call) !=
            0) {
            lb_lever_req_free(&u->req);
            lb_free(u);
        }
    }
    lb_conns_remove(api->conns, tenant);
    lb_api_lever_cache_drop(api, tenant);
}

static void lever_delete(lb_http_req *req, void *data)
{
    lb_api *api = data;
    lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL) return;
    disconnect_ctx *d = LB_NEW(disconnect_ctx);
    d->api = api;
    d->req = req;
    snprintf(d->tenant, sizeof(d->tenant), "%s", t->id);
    d->op.kind = LB_STORE_CONN_DELETE;
    snprintf(d->op.conn_delete.tenant_id, sizeof(d->op.conn_delete.tenant_id), "%s", t->id);
    d->op.cb = disconnected;
    d->op.data = d;
    const lb_conn *c = lb_conns_get(api->conns, t->id);
    if (c != NULL) lb_api_conn_event(api, t->id, c->status, LB_CONN_DISCONNECTED, &d->notify);
    lb_api_notify_attach(&d->op, &d->notify);
    if (lb_store_submit(api->store, &d->op) != 0) {
        lb_job_rec_free(&d->notify);
        lb_free(d);
        lb_api_store_unavailable(req);
    }
}

/* ---- POST .../lever/webhook/provision -------------------------------------- */

static void reprovisioned(conn_write *w, int ok)
{
    lb_api *api = w->api;
    if (!ok) {
        lb_api_store_unavailable(w->req);
        return;
    }
    lb_provision_start(api->provision, w->next.tenant_id);
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "status", "pending");
    lb_json_kv_time(g, "deadline_at", w->hook.deadline_at);
    yajl_gen_map_close(g);
    lb_http_respond_json(w->req, 202, g);
}

static void provision_post(lb_http_req *req, void *data)
{
    lb_api *api = data;
    lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL) return;
    const lb_conn *c = lb_conns_get(api->conns, t->id);
    if (c == NULL || c->status != LB_CONN_CONNECTED || c->hook == NULL) {
        lb_http_respond_error(req, 409, "not_connected",
                              "Connect Lever first: the hook is provisioned for a connection.",
                              NULL);
        return;
    }
    int64_t now = lb_time_now_ms();
    conn_write *w = LB_NEW(conn_write);
    lb_conn_copy(&w->next, c);
    w->with_hook = 1;
    lb_hook_copy(&w->hook, c->hook);
    w->hook.status = LB_HOOK_PENDING;
    w->hook.attempts = 0;
    w->hook.next_attempt_at = now;
    w->hook.deadline_at = now + api->cfg->webhook_deadline_ms;
    lb_free(w->hook.last_error);
    w->hook.last_error = NULL;
    w->then = reprovisioned;
    w->req = req;
    if (conn_write_submit(api, w) != 0) {
        conn_write_free(w);
        lb_api_store_unavailable(req);
    }
}

void lb_api_lever_register(lb_api *api, lb_router *r)
{
    lb_router_add(r, "GET", "/v1/tenants/{tenant}/lever", lever_get, api);
    lb_router_add(r, "PUT", "/v1/tenants/{tenant}/lever", lever_put, api);
    lb_router_add(r, "DELETE", "/v1/tenants/{tenant}/lever", lever_delete, api);
    lb_router_add(r, "POST", "/v1/tenants/{tenant}/lever/webhook/provision", provision_post, api);
}
