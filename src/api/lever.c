/* /v1/tenants/{tenant}/lever: connect with an API key, read, disconnect,
 * re-provision the hook. Glue over engine/credentials.c, which probes the
 * key's permissions, stores the connection and forgets it; here the
 * requests are read and the answers written. */
#include "api/api.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/strbuf.h"
#include "core/time.h"
#include "engine/credentials.h"
#include "engine/jobs.h"
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
    lb_cred_rate(api->cred, t->id, &rate, &burst);
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

/* ---- connecting with an API key ------------------------------------------ */

/* One PUT .../lever while the credentials module asks Lever. Owned by the
 * handler; freed once answered. */
typedef struct {
    lb_api *api;
    lb_http_req *req;
    char tenant[LB_TENANT_ID_MAX + 1];
} connect_ctx;

static void respond_missing(lb_http_req *req, const lb_cred_probe_result *r)
{
    lb_strbuf b;
    lb_strbuf_init(&b, 16 * 1024);
    lb_strbuf_cat(&b, "{\"error\":{\"code\":\"missing_permissions\",\"message\":");
    static const char msg[] = "This Lever API key lacks permissions that leverbridge needs. "
                              "Ask a Lever Super Admin to grant them under Settings > "
                              "Integrations and API > API Credentials.";
    lb_strbuf_json_str(&b, msg, sizeof(msg) - 1);
    lb_strbuf_cat(&b, ",\"field\":\"api_key\",\"missing\":[");
    for (size_t i = 0; i < r->nmissing; i++) {
        if (i > 0) lb_strbuf_cat(&b, ",");
        lb_strbuf_json_str(&b, r->missing[i], strlen(r->missing[i]));
    }
    lb_strbuf_cat(&b, "]}}");
    size_t len;
    char *body = lb_strbuf_steal(&b, &len);
    lb_http_respond(req, 422, "application/json", NULL, body, len, lb_free, body);
}

static void connected(void *data, const lb_cred_probe_result *r)
{
    connect_ctx *cc = data;
    lb_http_req *req = cc->req;
    if (r->outcome == LB_CRED_REFUSED) {
        lb_http_respond_error(req, 422, "invalid_api_key",
                              "Lever refused this API key. Use a Lever API key from Settings > "
                              "Integrations and API > API Credentials, not a Postings API key.",
                              "api_key");
    } else if (r->outcome == LB_CRED_UNAVAILABLE) {
        char msg[400];
        snprintf(msg, sizeof(msg), "Lever could not be reached or failed: %s.%s", r->message,
                 r->tls_setup ? "" : " Try again later.");
        lb_http_respond_error(req, 502, "lever_unavailable", msg, NULL);
    } else if (r->outcome == LB_CRED_MISSING) {
        respond_missing(req, r);
    } else if (r->outcome == LB_CRED_NOT_STORED) {
        lb_api_store_unavailable(req);
    } else {
        const lb_tenant *t = lb_tenants_get(cc->api->tenants, cc->tenant);
        if (t != NULL)
            respond_connection(cc->api, req, 200, t);
        else
            lb_http_respond_error(req, 404, "not_found", "No such tenant.", "tenant");
    }
    lb_free(cc);
}

static void lever_put(lb_http_req *req, void *data)
{
    lb_api *api = data;
    lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL || lb_api_forwarded(api, req, t->id, lever_put)) return;
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
    connect_ctx *cc = LB_NEW(connect_ctx);
    cc->api = api;
    cc->req = req;
    snprintf(cc->tenant, sizeof(cc->tenant), "%s", t->id);
    lb_cred_connect_key(api->cred, t->id, key, connected, cc);
    sodium_memzero((char *)key, strlen(key));
    yajl_tree_free(body);
}

/* ---- disconnecting ------------------------------------------------------ */

static void disconnected(void *data, int status)
{
    lb_http_req *req = data;
    if (status != 0) {
        lb_api_store_unavailable(req);
        return;
    }
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "status", "disconnected");
    yajl_gen_map_close(g);
    lb_http_respond_json(req, 202, g);
}

static void lever_delete(lb_http_req *req, void *data)
{
    lb_api *api = data;
    lb_tenant *t = lb_api_tenant_for(api, req, 0);
    /* forwarded: the holder deletes the Lever webhook */
    if (t == NULL || lb_api_forwarded(api, req, t->id, lever_delete)) return;
    if (lb_cred_disconnect(api->cred, t->id, disconnected, req) != 0) lb_api_store_unavailable(req);
}

/* ---- POST .../lever/webhook/provision -------------------------------------- */

static void reprovisioned(void *data, int status, int64_t deadline_at)
{
    lb_http_req *req = data;
    if (status != 0) {
        lb_api_store_unavailable(req);
        return;
    }
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "status", "pending");
    lb_json_kv_time(g, "deadline_at", deadline_at);
    yajl_gen_map_close(g);
    lb_http_respond_json(req, 202, g);
}

static void provision_post(lb_http_req *req, void *data)
{
    lb_api *api = data;
    lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL || lb_api_forwarded(api, req, t->id, provision_post)) return;
    int rc = lb_cred_reprovision(api->cred, t->id, reprovisioned, req);
    if (rc == LB_ENOTFOUND)
        lb_http_respond_error(req, 409, "not_connected",
                              "Connect Lever first: the hook is provisioned for a connection.",
                              NULL);
    else if (rc != 0)
        lb_api_store_unavailable(req);
}

void lb_api_lever_register(lb_api *api, lb_router *r)
{
    lb_router_add(r, "GET", "/v1/tenants/{tenant}/lever", lever_get, api);
    lb_router_add(r, "PUT", "/v1/tenants/{tenant}/lever", lever_put, api);
    lb_router_add(r, "DELETE", "/v1/tenants/{tenant}/lever", lever_delete, api);
    lb_router_add(r, "POST", "/v1/tenants/{tenant}/lever/webhook/provision", provision_post, api);
}
