/* GET /v1/tenants/{tenant}/lever/stages and /lever/postings: Lever's lists
 * for workflow forms, fetched through the tenant's rate limit (every page),
 * cached 5 minutes per tenant. Requests that arrive while a fetch is in
 * flight wait for it. lb_api_catalog_get gives the same lists to code
 * (workflow validation) through a callback. */
#include "api/api.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/map.h"
#include "core/strbuf.h"
#include "core/time.h"
#include "engine/outbound.h"
#include "http/response.h"
#include "json/json.h"
#include "state/connections.h"
#include "state/tenants.h"

#include <stdio.h>
#include <string.h>

#define CACHE_MS (5 * 60 * 1000)
#define MAX_PAGES 50
#define MAX_WAITERS 64
#define BODY_MAX (4 * 1024 * 1024)

enum { K_STAGES, K_POSTINGS, K_COUNT };
static const char *const paths[K_COUNT] = {"/stages", "/postings"};

typedef struct entry entry;

/* Someone waiting for a fetch: a request to answer, or a callback. */
typedef struct {
    lb_http_req *req;
    lb_api_catalog_cb cb;
    void *data;
} waiter;

/* One tenant's cached list of one kind. Owned by the cache map; freed when
 * dropped and no fetch is in flight. */
struct entry {
    char key[LB_TENANT_ID_MAX + 4];
    lb_api *api;
    int kind;
    char tenant[LB_TENANT_ID_MAX + 1];
    char *body; /* the JSON answer, {"data":[...]} */
    size_t len;
    int64_t fetched_at;
    int fetching;
    int dropped;
    waiter waiters[MAX_WAITERS];
    int nwaiters;
    lb_strbuf acc; /* items so far, comma separated */
    int pages;
    lb_ob_call call;
    lb_lever_req req;
};

static lb_map cache; /* key -> entry; loop thread only */

static void entry_free(entry *e)
{
    lb_free(e->body);
    lb_strbuf_free(&e->acc);
    lb_lever_req_free(&e->req);
    lb_free(e);
}

static void respond_body(lb_http_req *req, const entry *e)
{
    char *copy = lb_memdup(e->body, e->len);
    lb_http_respond(req, 200, "application/json", "Cache-Control: no-store\r\n", copy, e->len,
                    lb_free, copy);
}

static const char *permission_of(const entry *e)
{
    return e->kind == K_STAGES ? "find all stages" : "find all postings";
}

/* Answers every waiter. Callbacks may ask again (and so add waiters or
 * start a fetch), so the list is taken first. */
static void answer_all(entry *e, int status, const char *code, const char *msg)
{
    waiter w[MAX_WAITERS];
    int n = e->nwaiters;
    memcpy(w, e->waiters, (size_t)n * sizeof(w[0]));
    e->nwaiters = 0;
    char *body = status == 200 ? lb_memdup(e->body, e->len) : NULL;
    size_t len = status == 200 ? e->len : 0;
    for (int i = 0; i < n; i++) {
        if (w[i].req != NULL && status == 200)
            respond_body(w[i].req, e);
        else if (w[i].req != NULL)
            lb_http_respond_error(w[i].req, status, code, msg, NULL);
        else
            w[i].cb(w[i].data, status, code, msg, body, len);
    }
    lb_free(body);
}

static void fetch_page(entry *e, const char *offset);

static void page_done(lb_ob_call *call, const lb_http_response *res)
{
    entry *e = call->data;
    lb_lever_req_free(&e->req);
    if (e->dropped || (res->status == 0 && res->error == LB_ECLOSED)) {
        e->fetching = 0;
        answer_all(e, 503, "unavailable", "The Lever connection went away.");
        if (e->dropped) entry_free(e);
        return;
    }
    lb_lever_outcome o = lb_lever_classify(res);
    if (o != LB_LEVER_OK) {
        char msg[300];
        lb_lever_describe(res, msg, sizeof(msg));
        if (o == LB_LEVER_REAUTH) lb_api_lever_unauthorized(e->api, e->tenant);
        if (o == LB_LEVER_FORBIDDEN)
            lb_api_lever_permission(e->api, e->tenant, permission_of(e), 0);
        e->fetching = 0;
        lb_strbuf_reset(&e->acc);
        answer_all(e, 502, "lever_unavailable", msg);
        return;
    }
    lb_api_lever_permission(e->api, e->tenant, permission_of(e), 1);
    lb_lever_page page;
    if (lb_lever_parse_page(res->body, res->body_len, &page) != 0) {
        e->fetching = 0;
        lb_strbuf_reset(&e->acc);
        answer_all(e, 502, "lever_unavailable", "Lever's answer could not be read.");
        return;
    }
    for (size_t i = 0; i < page.count; i++) {
        if (page.items[i].id == NULL) continue;
        if (e->acc.len > 0) lb_strbuf_cat(&e->acc, ",");
        lb_strbuf_cat(&e->acc, "{\"id\":");
        lb_strbuf_json_str(&e->acc, page.items[i].id, strlen(page.items[i].id));
        lb_strbuf_cat(&e->acc, ",\"text\":");
        const char *text = page.items[i].text ? page.items[i].text : "";
        lb_strbuf_json_str(&e->acc, text, strlen(text));
        lb_strbuf_cat(&e->acc, "}");
    }
    if (page.next != NULL && ++e->pages < MAX_PAGES && !e->acc.failed) {
        fetch_page(e, page.next);
        lb_lever_page_free(&page);
        return;
    }
    lb_lever_page_free(&page);
    lb_free(e->body);
    lb_strbuf b;
    lb_strbuf_init(&b, BODY_MAX + 64);
    lb_strbuf_cat(&b, "{\"data\":[");
    lb_strbuf_add(&b, e->acc.data, e->acc.len);
    lb_strbuf_cat(&b, "]}");
    e->body = lb_strbuf_steal(&b, &e->len);
    lb_strbuf_reset(&e->acc);
    e->fetched_at = lb_time_now_ms();
    e->fetching = 0;
    answer_all(e, 200, NULL, NULL);
}

static void fetch_page(entry *e, const char *offset)
{
    lb_api *api = e->api;
    lb_lever_auth auth = {0};
    if (lb_api_lever_auth(api, e->tenant, &auth) != 0) {
        e->fetching = 0;
        answer_all(e, 409, "not_connected", "The tenant's Lever connection is not usable.");
        return;
    }
    char query[512];
    if (offset != NULL)
        snprintf(query, sizeof(query), "limit=100&offset=%s", offset);
    else
        snprintf(query, sizeof(query), "limit=100");
    lb_lever_req_free(&e->req);
    lb_lever_req_init(&e->req, &auth, "GET", query, paths[e->kind]);
    memset(&e->call, 0, sizeof(e->call));
    e->call.req = e->req.http;
    e->call.cb = page_done;
    e->call.data = e;
    double rate;
    int burst;
    lb_api_tenant_rate(api, e->tenant, &rate, &burst);
    if (lb_outbound_submit(lb_outbound_tenant(api->outbound, e->tenant, rate, burst), &e->call) !=
        0) {
        e->fetching = 0;
        answer_all(e, 503, "unavailable", "Too many Lever calls are queued for this tenant.");
    }
}

/* A cached list younger than this is not fetched again when asked to. */
#define REFRESH_MIN_MS 2000

/* Waits for (or answers from the cache) one tenant's list. 0, or
 * LB_ENOTFOUND (not connected) or LB_ETOOBIG (too many waiters): then w is
 * not answered. */
static int lookup(lb_api *api, const char *id, int kind, int refresh, waiter w)
{
    const lb_conn *c = lb_conns_get(api->conns, id);
    if (c == NULL || c->status != LB_CONN_CONNECTED) return LB_ENOTFOUND;
    char key[sizeof(((entry *)0)->key)];
    snprintf(key, sizeof(key), "%d:%s", kind, id);
    entry *e = lb_map_get(&cache, key);
    if (e == NULL) {
        e = LB_NEW(entry);
        memcpy(e->key, key, sizeof(e->key));
        e->api = api;
        e->kind = kind;
        snprintf(e->tenant, sizeof(e->tenant), "%s", id);
        lb_strbuf_init(&e->acc, BODY_MAX);
        lb_map_put(&cache, e->key, e);
    }
    int64_t age = lb_time_now_ms() - e->fetched_at;
    if (e->body != NULL && age < CACHE_MS && (!refresh || age < REFRESH_MIN_MS)) {
        if (w.req != NULL)
            respond_body(w.req, e);
        else
            w.cb(w.data, 200, NULL, NULL, e->body, e->len);
        return 0;
    }
    if (e->nwaiters == MAX_WAITERS) return LB_ETOOBIG;
    e->waiters[e->nwaiters++] = w;
    if (!e->fetching) {
        e->fetching = 1;
        e->pages = 0;
        lb_strbuf_reset(&e->acc);
        fetch_page(e, NULL);
    }
    return 0;
}

int lb_api_catalog_get(lb_api *api, const char *tenant, int kind, int refresh, lb_api_catalog_cb cb,
                       void *data)
{
    if (kind < 0 || kind >= K_COUNT) return LB_EINVAL;
    return lookup(api, tenant, kind, refresh, (waiter){NULL, cb, data});
}

static void list(lb_http_req *req, lb_api *api, int kind)
{
    const lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL) return;
    int rc = lookup(api, t->id, kind, 0, (waiter){req, NULL, NULL});
    if (rc == LB_ENOTFOUND)
        lb_http_respond_error(req, 409, "not_connected", "Connect Lever first.", NULL);
    else if (rc != 0)
        lb_http_respond_error(req, 503, "unavailable", "Too many requests wait for Lever.", NULL);
}

static void stages(lb_http_req *req, void *data)
{
    list(req, data, K_STAGES);
}

static void postings(lb_http_req *req, void *data)
{
    list(req, data, K_POSTINGS);
}

void lb_api_lever_cache_drop(lb_api *api, const char *tenant)
{
    (void)api;
    for (int k = 0; k < K_COUNT; k++) {
        char key[sizeof(((entry *)0)->key)];
        snprintf(key, sizeof(key), "%d:%s", k, tenant);
        entry *e = lb_map_del(&cache, key);
        if (e == NULL) continue;
        if (e->fetching) {
            e->dropped = 1; /* freed when its call returns */
            if (lb_outbound_cancel(&e->call)) {
                answer_all(e, 503, "unavailable", "The Lever connection went away.");
                entry_free(e);
            }
        } else {
            entry_free(e);
        }
    }
}

void lb_api_catalog_free(void)
{
    size_t pos = 0;
    void *e;
    while ((e = lb_map_next(&cache, &pos)) != NULL)
        entry_free(e);
    lb_map_free(&cache);
}

void lb_api_catalog_register(lb_api *api, lb_router *r)
{
    lb_map_init(&cache);
    lb_router_add(r, "GET", "/v1/tenants/{tenant}/lever/stages", stages, api);
    lb_router_add(r, "GET", "/v1/tenants/{tenant}/lever/postings", postings, api);
}
