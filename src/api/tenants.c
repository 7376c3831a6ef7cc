/* /v1/tenants: create or update, read, list, delete. The store commits
 * first; memory (lb_tenants) follows only a successful commit. */
#include "api/api.h"

#include "cluster/cluster.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/time.h"
#include "engine/credentials.h"
#include "engine/jobs.h"
#include "http/response.h"
#include "json/json.h"
#include "state/missed.h"
#include "state/stats.h"
#include "state/tenants.h"
#include "state/workflows.h"
#include "store/store.h"

#include <math.h>
#include <string.h>

#define NAME_MAX_BYTES 200
/* A rate below the floor freezes a tenant: one call every ten seconds. */
#define RATE_MIN 0.1
#define RATE_MAX 1000.0
#define BURST_MAX 10000

/* One request's context while its store operation is in flight. Owned by
 * the handler; freed in the completion callback. */
typedef struct {
    lb_store_op op;
    lb_api *api;
    lb_http_req *req;
    char *name;
    char *failure_tag;
} tenant_ctx;

static void ctx_free(void *p)
{
    tenant_ctx *ctx = p;
    lb_free(ctx->name);
    lb_free(ctx->failure_tag);
    lb_free(ctx);
}

/* ---- rendering ---------------------------------------------------------- */

static void tenant_json(lb_api *api, yajl_gen g, const lb_tenant *t)
{
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "id", t->id);
    lb_json_kv_str(g, "name", t->name);
    lb_json_kv_bool(g, "api_addon", t->api_addon);
    lb_json_kv_str(g, "failure_tag", t->failure_tag);
    lb_json_kv_time(g, "created_at", t->created_at);
    lb_json_kv_time(g, "updated_at", t->updated_at);
    lb_json_key(g, "lever");
    lb_api_connection_json(api, g, t);
    lb_api_lease_json(api, g, t->id);
    yajl_gen_map_close(g);
}

static void respond_tenant(lb_api *api, lb_http_req *req, int status, const lb_tenant *t)
{
    yajl_gen g = lb_json_gen_new();
    tenant_json(api, g, t);
    lb_http_respond_json(req, status, g);
}

/* Finds the tenant named by the route, or answers 404. */
static void store_failed(lb_http_req *req, int status)
{
    lb_warn("api", "store operation failed: %s", lb_strerror(status));
    lb_api_store_unavailable(req);
}

/* ---- PUT /v1/tenants/{tenant} --------------------------------------------- */

static void put_done(lb_store_op *op)
{
    tenant_ctx *ctx = op->data;
    if (op->status != 0) {
        store_failed(ctx->req, op->status);
    } else {
        lb_tenant *t = lb_tenants_apply(ctx->api->tenants, &op->tenant_upsert.rec);
        if (op->tenant_upsert.created && ctx->api->cluster != NULL)
            lb_cluster_kick(ctx->api->cluster); /* its lease, at once */
        respond_tenant(ctx->api, ctx->req, op->tenant_upsert.created ? 201 : 200, t);
    }
    lb_free(ctx->name);
    lb_free(ctx->failure_tag);
    lb_free(ctx);
}

static int bad_field(lb_http_req *req, const char *field, const char *msg)
{
    lb_http_respond_error(req, 400, "invalid_request", msg, field);
    return LB_EINVAL;
}

/* failure_tag: absent keeps the current one, null turns it off, else a
 * string of 1..LB_FAILURE_TAG_MAX bytes without control characters (a tag
 * as Lever shows it). 0 and *out (lb_malloc'd or NULL), or LB_EINVAL
 * answered. */
static int parse_failure_tag(lb_http_req *req, yajl_val body, const lb_tenant *cur, char **out)
{
    yajl_val v = lb_json_get(body, "failure_tag");
    *out = NULL;
    if (v == NULL) {
        if (cur != NULL && cur->failure_tag != NULL) *out = lb_strdup(cur->failure_tag);
        return 0;
    }
    if (YAJL_IS_NULL(v)) return 0;
    size_t n = YAJL_IS_STRING(v) ? strlen(v->u.string) : 0;
    int ok = n >= 1 && n <= LB_FAILURE_TAG_MAX;
    for (size_t i = 0; ok && i < n; i++)
        if ((unsigned char)v->u.string[i] < 0x20 || v->u.string[i] == 0x7f) ok = 0;
    if (!ok)
        return bad_field(req, "failure_tag",
                         "failure_tag must be null or a string of 1 to 100 bytes without "
                         "control characters.");
    *out = lb_strdup(v->u.string);
    return 0;
}

/* Validates the body against the tenant's current values (absent fields keep
 * them; a new tenant starts from the defaults). */
static int parse_tenant(lb_http_req *req, yajl_val body, const lb_tenant *cur, lb_tenant_rec *rec,
                        char **name)
{
    static const char *const known[] = {"name", "api_addon", "lever_rate", "lever_burst",
                                        "failure_tag"};
    for (size_t i = 0; i < body->u.object.len; i++) {
        const char *k = body->u.object.keys[i];
        size_t j = 0;
        while (j < LB_COUNTOF(known) && strcmp(k, known[j]) != 0)
            j++;
        if (j == LB_COUNTOF(known)) return bad_field(req, k, "Unknown field.");
    }
    yajl_val v = lb_json_get(body, "name");
    if (v != NULL) {
        if (!YAJL_IS_STRING(v) || v->u.string[0] == '\0' || strlen(v->u.string) > NAME_MAX_BYTES)
            return bad_field(req, "name", "name must be a non-empty string of at most 200 bytes.");
        *name = lb_strdup(v->u.string);
    } else if (cur != NULL) {
        *name = lb_strdup(cur->name);
    } else {
        return bad_field(req, "name", "name is required.");
    }
    rec->api_addon = cur ? cur->api_addon : 0;
    rec->lever_rate = cur ? cur->lever_rate : 0;
    rec->lever_burst = cur ? cur->lever_burst : 0;
    int b;
    int rc = lb_json_get_bool(body, "api_addon", &b);
    if (rc == 0)
        rec->api_addon = b;
    else if (rc != LB_ENOTFOUND && !YAJL_IS_NULL(lb_json_get(body, "api_addon")))
        goto bad_addon;
    v = lb_json_get(body, "lever_rate");
    if (v != NULL && YAJL_IS_NULL(v)) {
        rec->lever_rate = 0;
    } else if (v != NULL) {
        double r = YAJL_IS_NUMBER(v) ? YAJL_GET_DOUBLE(v) : -1;
        if (!YAJL_IS_NUMBER(v) || !(r >= RATE_MIN) || r > RATE_MAX || !isfinite(r)) {
            lb_free(*name);
            return bad_field(req, "lever_rate", "lever_rate must be a number in [0.1, 1000].");
        }
        rec->lever_rate = r;
    }
    v = lb_json_get(body, "lever_burst");
    int64_t burst;
    if (v != NULL && YAJL_IS_NULL(v)) {
        rec->lever_burst = 0;
    } else if (v != NULL) {
        if (lb_json_get_int(body, "lever_burst", &burst) != 0 || burst < 1 || burst > BURST_MAX) {
            lb_free(*name);
            return bad_field(req, "lever_burst", "lever_burst must be an integer in 1..10000.");
        }
        rec->lever_burst = (int)burst;
    }
    return 0;
bad_addon:
    lb_free(*name);
    return bad_field(req, "api_addon", "api_addon must be true or false.");
}

static void tenant_put(lb_http_req *req, void *data)
{
    lb_api *api = data;
    if (!lb_api_require_tenant(api, req, LB_API_ADMIN_ONLY)) return;
    const char *id = lb_http_req_param(req, "tenant");
    if (!lb_tenant_id_valid(id)) {
        lb_http_respond_error(
            req, 400, "invalid_request",
            "The tenant id must match [A-Za-z0-9._-]{1,64} and not be \".\" or \"..\".", "tenant");
        return;
    }
    yajl_val body = lb_api_json_body(req);
    if (body == NULL) return;
    tenant_ctx *ctx = LB_NEW(tenant_ctx);
    lb_tenant_rec *rec = &ctx->op.tenant_upsert.rec;
    const lb_tenant *cur = lb_tenants_get(api->tenants, id);
    int rc = parse_tenant(req, body, cur, rec, &ctx->name);
    if (rc == 0 && (rc = parse_failure_tag(req, body, cur, &ctx->failure_tag)) != 0)
        lb_free(ctx->name);
    yajl_tree_free(body);
    if (rc != 0) {
        lb_free(ctx);
        return;
    }
    memcpy(rec->id, id, strlen(id) + 1);
    rec->name = ctx->name;
    rec->failure_tag = ctx->failure_tag;
    ctx->api = api;
    ctx->req = req;
    ctx->op.kind = LB_STORE_TENANT_UPSERT;
    ctx->op.cb = put_done;
    ctx->op.data = ctx;
    lb_api_submit(api, req, &ctx->op, ctx_free, ctx);
}

/* ---- GET /v1/tenants/{tenant}, GET /v1/tenants ---------------------------- */

static void tenant_get(lb_http_req *req, void *data)
{
    lb_api *api = data;
    lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t != NULL) respond_tenant(api, req, 200, t);
}

static void tenant_list(lb_http_req *req, void *data)
{
    lb_api *api = data;
    if (!lb_api_require_admin(api, req)) return;
    size_t limit;
    char cursor[LB_TENANT_CURSOR_MAX + 1];
    const char *cur = NULL;
    if (lb_api_page_params(req, &limit, cursor, sizeof(cursor), &cur) != 0) return;
    lb_tenant *page[LB_API_LIMIT_MAX];
    size_t n;
    int more;
    if (lb_tenants_page(api->tenants, cur, page, limit, &n, &more) != 0) {
        lb_http_respond_error(req, 400, "invalid_request", "The cursor is not valid.", "cursor");
        return;
    }
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "data");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < n; i++)
        tenant_json(api, g, page[i]);
    yajl_gen_array_close(g);
    if (more) {
        char next[LB_TENANT_CURSOR_MAX];
        lb_tenant_cursor(page[n - 1], next);
        lb_json_kv_str(g, "next_cursor", next);
    } else {
        lb_json_kv_null(g, "next_cursor");
    }
    yajl_gen_map_close(g);
    lb_http_respond_json(req, 200, g);
}

/* ---- DELETE /v1/tenants/{tenant} ------------------------------------------ */

static void delete_done(lb_store_op *op)
{
    tenant_ctx *ctx = op->data;
    const char *id = op->tenant_delete.id;
    if (op->status == LB_ENOTFOUND) {
        lb_tenants_remove(ctx->api->tenants, id);
        lb_http_respond_error(ctx->req, 404, "not_found", "No such tenant.", "tenant");
    } else if (op->status != 0) {
        store_failed(ctx->req, op->status);
    } else {
        lb_cred_forget(ctx->api->cred, id);
        lb_jobs_tenant_cancel_events(ctx->api->jobs, id); /* their rows went with it */
        lb_jobs_tenant_failed_add(ctx->api->jobs, id,
                                  -(long)lb_jobs_tenant_failed(ctx->api->jobs, id));
        lb_workflows_remove_tenant(ctx->api->workflows, id);
        lb_stats_forget(ctx->api->stats, id);
        if (ctx->api->missed != NULL) lb_missed_forget(ctx->api->missed, id);
        lb_tenants_remove(ctx->api->tenants, id);
        lb_info("api", "tenant %s deleted", id);
        yajl_gen g = lb_json_gen_new();
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "id", id);
        lb_json_kv_str(g, "status", "deleted");
        yajl_gen_map_close(g);
        lb_http_respond_json(ctx->req, 202, g);
    }
    lb_free(ctx);
}

static void tenant_delete(lb_http_req *req, void *data)
{
    lb_api *api = data;
    lb_tenant *t = lb_api_tenant_for(api, req, LB_API_ADMIN_ONLY);
    /* forwarded: the holder deletes the Lever webhook */
    if (t == NULL || lb_api_forwarded(api, req, t->id, tenant_delete)) return;
    tenant_ctx *ctx = LB_NEW(tenant_ctx);
    memcpy(ctx->op.tenant_delete.id, t->id, sizeof(t->id));
    ctx->api = api;
    ctx->req = req;
    ctx->op.kind = LB_STORE_TENANT_DELETE;
    ctx->op.cb = delete_done;
    ctx->op.data = ctx;
    lb_api_submit(api, req, &ctx->op, ctx_free, ctx);
}

void lb_api_tenants_register(lb_api *api, lb_router *r)
{
    lb_router_add(r, "GET", "/v1/tenants", tenant_list, api);
    lb_router_add(r, "PUT", "/v1/tenants/{tenant}", tenant_put, api);
    lb_router_add(r, "GET", "/v1/tenants/{tenant}", tenant_get, api);
    lb_router_add(r, "DELETE", "/v1/tenants/{tenant}", tenant_delete, api);
}
