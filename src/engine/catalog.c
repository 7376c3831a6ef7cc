/* The catalog of Lever stages and postings: see catalog.h. */
#include "engine/catalog.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/map.h"
#include "core/strbuf.h"
#include "core/time.h"

#include <stdio.h>
#include <string.h>

#define CACHE_MS (5 * 60 * 1000)
#define MAX_PAGES 50
#define MAX_WAITERS 64
#define BODY_MAX (4 * 1024 * 1024)
/* A cached list younger than this is not fetched again when asked to. */
#define REFRESH_MIN_MS 2000

enum { K_COUNT = 2 };
static const char *const paths[K_COUNT] = {"/stages", "/postings"};

struct lb_catalog {
    lb_outbound *ob;
    const lb_conns *conns;
    lb_jobs_env env;
    lb_map cache; /* key -> entry */
};

typedef struct entry entry;

/* Someone waiting for a fetch. */
typedef struct {
    lb_catalog_cb cb;
    void *data;
} waiter;

/* One tenant's cached list of one kind. Owned by the cache map; freed when
 * dropped and no fetch is in flight. */
struct entry {
    char key[LB_TENANT_ID_MAX + 4];
    lb_catalog *cat;
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

static void entry_free(entry *e)
{
    lb_free(e->body);
    lb_strbuf_free(&e->acc);
    lb_lever_req_free(&e->req);
    lb_free(e);
}

static const char *permission_of(const entry *e)
{
    return e->kind == LB_CATALOG_STAGES ? "find all stages" : "find all postings";
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
    for (int i = 0; i < n; i++)
        w[i].cb(w[i].data, status, code, msg, body, len);
    lb_free(body);
}

static void fetch_page(entry *e, const char *offset);

static void page_done(lb_ob_call *call, const lb_http_response *res)
{
    entry *e = call->data;
    const lb_jobs_env *env = &e->cat->env;
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
        if (o == LB_LEVER_REAUTH) env->lever_unauthorized(env->data, e->tenant);
        if (o == LB_LEVER_FORBIDDEN)
            env->lever_permission(env->data, e->tenant, permission_of(e), 0);
        e->fetching = 0;
        lb_strbuf_reset(&e->acc);
        answer_all(e, 502, "lever_unavailable", msg);
        return;
    }
    env->lever_permission(env->data, e->tenant, permission_of(e), 1);
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
    lb_catalog *cat = e->cat;
    lb_lever_auth auth = {0};
    if (cat->env.lever_auth(cat->env.data, e->tenant, &auth) != 0) {
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
    cat->env.tenant_rate(cat->env.data, e->tenant, &rate, &burst);
    if (lb_outbound_submit(lb_outbound_tenant(cat->ob, e->tenant, rate, burst), &e->call) != 0) {
        e->fetching = 0;
        answer_all(e, 503, "unavailable", "Too many Lever calls are queued for this tenant.");
    }
}

int lb_catalog_get(lb_catalog *cat, const char *id, int kind, int refresh, lb_catalog_cb cb,
                   void *data)
{
    if (kind < 0 || kind >= K_COUNT) return LB_EINVAL;
    const lb_conn *c = lb_conns_get(cat->conns, id);
    if (c == NULL || c->status != LB_CONN_CONNECTED) return LB_ENOTFOUND;
    char key[sizeof(((entry *)0)->key)];
    snprintf(key, sizeof(key), "%d:%s", kind, id);
    entry *e = lb_map_get(&cat->cache, key);
    if (e == NULL) {
        e = LB_NEW(entry);
        memcpy(e->key, key, sizeof(e->key));
        e->cat = cat;
        e->kind = kind;
        snprintf(e->tenant, sizeof(e->tenant), "%s", id);
        lb_strbuf_init(&e->acc, BODY_MAX);
        lb_map_put(&cat->cache, e->key, e);
    }
    int64_t age = lb_time_now_ms() - e->fetched_at;
    if (e->body != NULL && age < CACHE_MS && (!refresh || age < REFRESH_MIN_MS)) {
        cb(data, 200, NULL, NULL, e->body, e->len);
        return 0;
    }
    if (e->nwaiters == MAX_WAITERS) return LB_ETOOBIG;
    e->waiters[e->nwaiters++] = (waiter){cb, data};
    if (!e->fetching) {
        e->fetching = 1;
        e->pages = 0;
        lb_strbuf_reset(&e->acc);
        fetch_page(e, NULL);
    }
    return 0;
}

void lb_catalog_drop(lb_catalog *cat, const char *tenant)
{
    for (int k = 0; k < K_COUNT; k++) {
        char key[sizeof(((entry *)0)->key)];
        snprintf(key, sizeof(key), "%d:%s", k, tenant);
        entry *e = lb_map_del(&cat->cache, key);
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

int lb_catalog_new(lb_outbound *ob, const lb_conns *conns, const lb_jobs_env *env, lb_catalog **out)
{
    lb_catalog *cat = LB_NEW(lb_catalog);
    cat->ob = ob;
    cat->conns = conns;
    cat->env = *env;
    lb_map_init(&cat->cache);
    *out = cat;
    return 0;
}

void lb_catalog_free(lb_catalog *cat)
{
    if (cat == NULL) return;
    size_t pos = 0;
    void *e;
    while ((e = lb_map_next(&cat->cache, &pos)) != NULL)
        entry_free(e);
    lb_map_free(&cat->cache);
    lb_free(cat);
}
