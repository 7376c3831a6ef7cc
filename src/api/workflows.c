/* /v1/tenants/{tenant}/workflows: create, list, read, replace, delete. The
 * body is validated in full (unknown fields, types, empty actions, unknown
 * template placeholders: 400 with the field's path) before the store sees
 * it, then checked against what can fire: send_assessment needs a platform,
 * and every stage and posting id must be one the tenant's Lever has (the
 * cached lists of catalog.c, one read through the rate limit). Memory
 * follows the committed write. */
#include "api/api.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/time.h"
#include "crypto/crypto.h"
#include "engine/template.h"
#include "http/response.h"
#include "json/json.h"
#include "state/tenants.h"
#include "state/match.h"
#include "state/workflows.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void workflow_json(yajl_gen g, const lb_workflow *w)
{
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "id", w->id);
    lb_json_key(g, "name");
    lb_json_value(g, lb_json_get(w->tree, "name"));
    lb_json_kv_bool(g, "enabled", w->enabled);
    lb_json_key(g, "trigger");
    lb_json_value(g, lb_json_get(w->tree, "trigger"));
    lb_json_key(g, "actions");
    lb_json_value(g, w->actions);
    lb_json_kv_time(g, "created_at", w->created_at);
    lb_json_kv_time(g, "updated_at", w->updated_at);
    yajl_gen_map_close(g);
}

static void respond_workflow(lb_http_req *req, int status, const lb_workflow *w)
{
    yajl_gen g = lb_json_gen_new();
    workflow_json(g, w);
    lb_http_respond_json(req, status, g);
}

/* A write in flight. Owned by the handler; freed in the callback. */
typedef struct {
    lb_store_op op;
    lb_api *api;
    lb_http_req *req;
    lb_workflow_rec rec;
} wf_ctx;

static void put_ctx_free(void *p)
{
    wf_ctx *c = p;
    lb_workflow_rec_free(&c->rec);
    lb_free(c);
}

static void put_done(lb_store_op *op)
{
    wf_ctx *c = op->data;
    if (op->status != 0) {
        lb_http_respond_error(c->req, op->status == LB_ENOTFOUND ? 404 : 503,
                              op->status == LB_ENOTFOUND ? "not_found" : "unavailable",
                              op->status == LB_ENOTFOUND ? "No such tenant."
                                                         : "The store is unavailable; try again.",
                              NULL);
    } else {
        c->rec.created_at = op->workflow_put.created_at;
        c->rec.updated_at = op->workflow_put.updated_at;
        lb_workflow *w = lb_workflows_apply(c->api->workflows, &c->rec);
        if (w == NULL)
            lb_http_respond_error(c->req, 500, "internal", "The workflow could not be read back.",
                                  NULL);
        else
            respond_workflow(c->req, op->workflow_put.created ? 201 : 200, w);
    }
    lb_workflow_rec_free(&c->rec);
    lb_free(c);
}

/* Stores a validated body as workflow `id` (taking the tree). */
static void store_put(lb_api *api, lb_http_req *req, const char *tenant, const char *id,
                      yajl_val body)
{
    int enabled = 1;
    lb_json_get_bool(body, "enabled", &enabled);
    yajl_gen g = lb_json_gen_new();
    lb_json_value(g, body);
    yajl_tree_free(body);
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(g, &buf, &len);
    wf_ctx *c = LB_NEW(wf_ctx);
    c->api = api;
    c->req = req;
    snprintf(c->rec.id, sizeof(c->rec.id), "%s", id);
    snprintf(c->rec.tenant_id, sizeof(c->rec.tenant_id), "%s", tenant);
    c->rec.body = lb_strndup((const char *)buf, len);
    c->rec.enabled = enabled;
    yajl_gen_free(g);
    c->op.kind = LB_STORE_WORKFLOW_PUT;
    c->op.workflow_put.rec = &c->rec;
    c->op.cb = put_done;
    c->op.data = c;
    lb_api_submit(api, req, &c->op, put_ctx_free, c);
}

/* ---- checking ids against Lever ------------------------------------------ */

/* to, from, postings, moves with their only_from */
#define MAX_REFS (3 + 100 + LB_WF_MAX_ACTIONS * (1 + LB_WF_ONLY_FROM_MAX))

/* One id of the body that Lever must know: a stage or a posting. */
typedef struct {
    int kind;          /* LB_API_STAGES or LB_API_POSTINGS */
    const char *value; /* inside the body tree */
    char field[64];
} ref;

typedef struct wf_check wf_check;

/* One list asked for: the callback's data. */
typedef struct {
    wf_check *check;
    int kind;
} wf_ask;

/* A save waiting for Lever's lists. Owned by itself; freed once answered. */
struct wf_check {
    lb_api *api;
    lb_http_req *req;
    yajl_val body;
    char tenant[LB_TENANT_ID_MAX + 1];
    char id[LB_WORKFLOW_ID_MAX + 1];
    int replace;
    ref refs[MAX_REFS];
    size_t nrefs;
    int pending;      /* lists asked for and not yet answered, +1 while asking */
    int refreshed[2]; /* a list was fetched again after a miss */
    int failed;       /* answered with an error already */
    int err_status;
    char err_code[32];
    char err_msg[256];
    yajl_val lists[2]; /* parsed {"data":[...]} per kind, or NULL */
    wf_ask asks[2];
};

static void add_ref(wf_check *k, int kind, const char *value, const char *field)
{
    if (value == NULL || k->nrefs == MAX_REFS) return;
    ref *r = &k->refs[k->nrefs++];
    r->kind = kind;
    r->value = value;
    snprintf(r->field, sizeof(r->field), "%s", field);
}

static void collect_refs(wf_check *k)
{
    yajl_val t = lb_json_get(k->body, "trigger");
    const char *ev = lb_json_get_str(t, "event");
    if (ev != NULL && strcmp(ev, "stage_changed") == 0) {
        add_ref(k, LB_API_STAGES, lb_json_get_str(t, "to_stage"), "trigger.to_stage");
        add_ref(k, LB_API_STAGES, lb_json_get_str(t, "from_stage"), "trigger.from_stage");
        yajl_val p = lb_json_get(t, "postings");
        for (size_t i = 0; p != NULL && YAJL_IS_ARRAY(p) && i < p->u.array.len; i++) {
            char f[48];
            snprintf(f, sizeof(f), "trigger.postings[%zu]", i);
            add_ref(k, LB_API_POSTINGS, YAJL_GET_STRING(p->u.array.values[i]), f);
        }
    }
    yajl_val a = lb_json_get(k->body, "actions");
    for (size_t i = 0; a != NULL && YAJL_IS_ARRAY(a) && i < a->u.array.len; i++) {
        const char *type = lb_json_get_str(a->u.array.values[i], "type");
        if (type != NULL && strcmp(type, "move_stage") == 0) {
            char f[64];
            snprintf(f, sizeof(f), "actions[%zu].stage", i);
            add_ref(k, LB_API_STAGES, lb_json_get_str(a->u.array.values[i], "stage"), f);
            yajl_val only = lb_json_get(a->u.array.values[i], "only_from");
            for (size_t j = 0; only != NULL && YAJL_IS_ARRAY(only) && j < only->u.array.len; j++) {
                snprintf(f, sizeof(f), "actions[%zu].only_from[%zu]", i, j);
                add_ref(k, LB_API_STAGES, YAJL_GET_STRING(only->u.array.values[j]), f);
            }
        }
    }
}

/* 1 after answering 409 when, with body saved, one event could make more
 * than LB_EVENT_JOBS_MAX jobs (state/match.h). */
static int too_many_jobs(lb_api *api, lb_http_req *req, const char *tenant, yajl_val body,
                         const char *replacing)
{
    size_t bound = lb_workflows_jobs_bound(api->workflows, tenant, body, replacing);
    if (bound <= LB_EVENT_JOBS_MAX) return 0;
    char msg[200];
    snprintf(msg, sizeof(msg),
             "With this workflow one event could make %zu jobs, more than %d: it matches "
             "together with the tenant's other workflows of the same trigger.",
             bound, LB_EVENT_JOBS_MAX);
    lb_http_respond_error(req, 409, "too_many_jobs", msg, "actions");
    return 1;
}

static void check_free(wf_check *k)
{
    if (k->body != NULL) yajl_tree_free(k->body);
    for (int i = 0; i < 2; i++)
        if (k->lists[i] != NULL) yajl_tree_free(k->lists[i]);
    lb_free(k);
}

static int listed(yajl_val list, const char *value)
{
    yajl_val d = lb_json_get(list, "data");
    for (size_t i = 0; d != NULL && YAJL_IS_ARRAY(d) && i < d->u.array.len; i++) {
        const char *id = lb_json_get_str(d->u.array.values[i], "id");
        if (id != NULL && strcmp(id, value) == 0) return 1;
    }
    return 0;
}

static void list_cb(void *data, int status, const char *code, const char *msg, const char *body,
                    size_t len);

static void ask(wf_check *k, int kind, int refresh)
{
    k->pending++;
    k->asks[kind].check = k;
    k->asks[kind].kind = kind;
    int rc = lb_catalog_get(k->api->catalog, k->tenant, kind, refresh, list_cb, &k->asks[kind]);
    if (rc == 0) return;
    k->pending--;
    if (!k->failed) {
        k->failed = 1;
        k->err_status = rc == LB_ENOTFOUND ? 409 : 503;
        snprintf(k->err_code, sizeof(k->err_code), "%s",
                 rc == LB_ENOTFOUND ? "not_connected" : "unavailable");
        snprintf(k->err_msg, sizeof(k->err_msg), "%s",
                 rc == LB_ENOTFOUND
                     ? "Connect Lever first: the workflow's stage and posting ids are checked "
                       "against Lever."
                     : "Too many requests wait for Lever; try again.");
    }
}

/* Every list asked for is in (or one failed): answer, ask again, or save. */
static void decide(wf_check *k)
{
    if (k->pending > 0) return;
    if (k->failed) {
        lb_http_respond_error(k->req, k->err_status, k->err_code, k->err_msg, NULL);
        check_free(k);
        return;
    }
    for (size_t i = 0; i < k->nrefs; i++) {
        ref *r = &k->refs[i];
        if (listed(k->lists[r->kind], r->value)) continue;
        if (!k->refreshed[r->kind]) { /* maybe added in Lever since the cache was filled */
            k->refreshed[r->kind] = 1;
            k->pending = 1;
            ask(k, r->kind, 1);
            k->pending--;
            decide(k);
            return;
        }
        char msg[512];
        snprintf(msg, sizeof(msg),
                 "The tenant's Lever has no %s with the id \"%.200s\", so the workflow could "
                 "never run; pick one from GET /v1/tenants/%s/lever/%s.",
                 r->kind == LB_API_STAGES ? "stage" : "posting", r->value, k->tenant,
                 r->kind == LB_API_STAGES ? "stages" : "postings");
        lb_http_respond_error(k->req, 400, "invalid_request", msg, r->field);
        check_free(k);
        return;
    }
    if (k->replace && lb_workflows_get(k->api->workflows, k->tenant, k->id) == NULL) {
        lb_http_respond_error(k->req, 404, "not_found", "No such workflow.", "id");
        check_free(k);
        return;
    }
    /* Again: another save may have landed while Lever was asked. */
    if (too_many_jobs(k->api, k->req, k->tenant, k->body, k->replace ? k->id : NULL)) {
        check_free(k);
        return;
    }
    yajl_val body = k->body;
    k->body = NULL;
    store_put(k->api, k->req, k->tenant, k->id, body);
    check_free(k);
}

static void list_cb(void *data, int status, const char *code, const char *msg, const char *body,
                    size_t len)
{
    wf_ask *a = data;
    wf_check *k = a->check;
    k->pending--;
    if (status == 200) {
        char err[64];
        yajl_val list = lb_json_parse(body, len, err, sizeof(err));
        if (list != NULL) {
            if (k->lists[a->kind] != NULL) yajl_tree_free(k->lists[a->kind]);
            k->lists[a->kind] = list;
        } else {
            status = 502;
            code = "lever_unavailable";
            msg = "Lever's answer could not be read.";
        }
    }
    if (status != 200 && !k->failed) {
        /* Lever could not say which ids it has: refuse rather than save
         * something unchecked, with the connect route's 502 for Lever down. */
        k->failed = 1;
        k->err_status = status == 409 ? 409 : 502;
        snprintf(k->err_code, sizeof(k->err_code), "%s",
                 status == 409 ? "not_connected" : "lever_unavailable");
        snprintf(k->err_msg, sizeof(k->err_msg),
                 "The workflow's %s could not be checked against Lever (%.150s). Try again.",
                 a->kind == LB_API_STAGES ? "stages" : "postings",
                 msg ? msg : (code ? code : "no answer"));
    }
    decide(k);
}

/* Validates the request body, checks it can fire, and stores it as
 * workflow `id`. */
static void save(lb_api *api, lb_http_req *req, const lb_tenant *t, const char *id, int replace)
{
    yajl_val body = lb_api_json_body(req);
    if (body == NULL) return;
    char field[128] = "", msg[256] = "";
    if (lb_workflow_validate(body, lb_template_check, field, sizeof(field), msg, sizeof(msg)) !=
        0) {
        yajl_tree_free(body);
        lb_http_respond_error(req, 400, "invalid_request", msg, field[0] ? field : NULL);
        return;
    }
    yajl_val actions = lb_json_get(body, "actions");
    for (size_t i = 0; api->cfg->platform_url == NULL && i < actions->u.array.len; i++) {
        const char *type = lb_json_get_str(actions->u.array.values[i], "type");
        if (type != NULL && strcmp(type, "send_assessment") == 0) {
            snprintf(field, sizeof(field), "actions[%zu].type", i);
            yajl_tree_free(body);
            lb_http_respond_error(req, 400, "platform_not_configured",
                                  "send_assessment needs the assessment platform, and this "
                                  "server has none configured (LEVERBRIDGE_PLATFORM_URL and "
                                  "_TOKEN).",
                                  field);
            return;
        }
    }
    if (too_many_jobs(api, req, t->id, body, replace ? id : NULL)) {
        yajl_tree_free(body);
        return;
    }
    wf_check *k = LB_NEW(wf_check);
    k->api = api;
    k->req = req;
    k->body = body;
    k->replace = replace;
    snprintf(k->tenant, sizeof(k->tenant), "%s", t->id);
    snprintf(k->id, sizeof(k->id), "%s", id);
    collect_refs(k);
    int need[2] = {0, 0};
    for (size_t i = 0; i < k->nrefs; i++)
        need[k->refs[i].kind] = 1;
    /* pending holds 1 while asking, so an answer from the cache (which runs
     * list_cb at once) cannot decide before both lists are asked for. */
    k->pending = 1;
    for (int kind = 0; kind < 2; kind++)
        if (need[kind]) ask(k, kind, 0);
    k->pending--;
    decide(k);
}

static void create(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL) return;
    if (lb_workflows_count(api->workflows, t->id) >= LB_WF_MAX_PER_TENANT) {
        lb_http_respond_error(req, 409, "too_many_workflows",
                              "This tenant has 1000 workflows, the most allowed.", NULL);
        return;
    }
    char *id = lb_random_id("wf_", 16);
    save(api, req, t, id, 0);
    lb_free(id);
}

static void replace(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL) return;
    const char *id = lb_http_req_param(req, "id");
    if (lb_workflows_get(api->workflows, t->id, id) == NULL) {
        lb_http_respond_error(req, 404, "not_found", "No such workflow.", "id");
        return;
    }
    save(api, req, t, id, 1);
}

static void get_one(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL) return;
    const lb_workflow *w = lb_workflows_get(api->workflows, t->id, lb_http_req_param(req, "id"));
    if (w == NULL)
        lb_http_respond_error(req, 404, "not_found", "No such workflow.", "id");
    else
        respond_workflow(req, 200, w);
}

/* Newest first; the cursor is "<created_at>_<id>" of the last item. */
static void list(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL) return;
    size_t limit;
    char cbuf[128];
    const char *cursor = NULL;
    if (lb_api_page_params(req, &limit, cbuf, sizeof(cbuf), &cursor) != 0) return;
    int64_t c_at = 0;
    const char *c_id = NULL;
    if (cursor != NULL) {
        char *us;
        c_at = strtoll(cursor, &us, 10);
        if (us == cursor || *us != '_' || us[1] == '\0') {
            lb_http_respond_error(req, 400, "invalid_request", "The cursor is not valid.",
                                  "cursor");
            return;
        }
        c_id = us + 1;
    }
    /* The list is oldest first and short (bounded per tenant): collect, then
     * walk it backwards. */
    const lb_workflow *all[LB_WF_MAX_PER_TENANT];
    size_t n = 0;
    for (const lb_workflow *w = lb_workflows_of(api->workflows, t->id); w && n < LB_COUNTOF(all);
         w = w->next)
        all[n++] = w;
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "data");
    yajl_gen_array_open(g);
    size_t out = 0;
    const lb_workflow *last = NULL;
    int more = 0;
    for (size_t i = n; i-- > 0;) {
        const lb_workflow *w = all[i];
        if (c_id != NULL &&
            (w->created_at > c_at || (w->created_at == c_at && strcmp(w->id, c_id) >= 0)))
            continue;
        if (out == limit) {
            more = 1;
            break;
        }
        workflow_json(g, w);
        last = w;
        out++;
    }
    yajl_gen_array_close(g);
    lb_api_next_cursor(g, more, last ? last->created_at : 0, last ? last->id : NULL);
    yajl_gen_map_close(g);
    lb_http_respond_json(req, 200, g);
}

static void delete_done(lb_store_op *op)
{
    wf_ctx *c = op->data;
    if (op->status == LB_ENOTFOUND) {
        lb_http_respond_error(c->req, 404, "not_found", "No such workflow.", "id");
    } else if (op->status != 0) {
        lb_api_store_unavailable(c->req);
    } else {
        lb_workflows_remove(c->api->workflows, op->workflow_delete.id);
        lb_http_respond(c->req, 204, NULL, NULL, NULL, 0, NULL, NULL);
    }
    lb_free(c);
}

static void delete_one(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL) return;
    const char *id = lb_http_req_param(req, "id");
    if (lb_workflows_get(api->workflows, t->id, id) == NULL) {
        lb_http_respond_error(req, 404, "not_found", "No such workflow.", "id");
        return;
    }
    wf_ctx *c = LB_NEW(wf_ctx);
    c->api = api;
    c->req = req;
    c->op.kind = LB_STORE_WORKFLOW_DELETE;
    snprintf(c->op.workflow_delete.tenant_id, sizeof(c->op.workflow_delete.tenant_id), "%s", t->id);
    snprintf(c->op.workflow_delete.id, sizeof(c->op.workflow_delete.id), "%s", id);
    c->op.cb = delete_done;
    c->op.data = c;
    lb_api_submit(api, req, &c->op, lb_free, c);
}

void lb_api_workflows_register(lb_api *api, lb_router *r)
{
    lb_router_add(r, "POST", "/v1/tenants/{tenant}/workflows", create, api);
    lb_router_add(r, "GET", "/v1/tenants/{tenant}/workflows", list, api);
    lb_router_add(r, "GET", "/v1/tenants/{tenant}/workflows/{id}", get_one, api);
    lb_router_add(r, "PUT", "/v1/tenants/{tenant}/workflows/{id}", replace, api);
    lb_router_add(r, "DELETE", "/v1/tenants/{tenant}/workflows/{id}", delete_one, api);
}
