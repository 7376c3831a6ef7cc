/* /v1/tenants/{tenant}/workflows: create, list, read, replace, delete. The
 * body is validated in full (unknown fields, types, empty actions, unknown
 * template placeholders: 400 with the field's path) before the store sees
 * it; memory follows the committed write. */
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

/* Validates the request body and stores it as workflow `id`. */
static void save(lb_api *api, lb_http_req *req, const lb_tenant *t, const char *id)
{
    yajl_val body = lb_api_json_body(req);
    if (body == NULL)
        return;
    char field[128] = "", msg[256] = "";
    if (lb_workflow_validate(body, lb_template_check, field, sizeof(field), msg, sizeof(msg)) !=
        0) {
        yajl_tree_free(body);
        lb_http_respond_error(req, 400, "invalid_request", msg, field[0] ? field : NULL);
        return;
    }
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
    snprintf(c->rec.tenant_id, sizeof(c->rec.tenant_id), "%s", t->id);
    c->rec.body = lb_strndup((const char *)buf, len);
    c->rec.enabled = enabled;
    yajl_gen_free(g);
    c->op.kind = LB_STORE_WORKFLOW_PUT;
    c->op.workflow_put.rec = &c->rec;
    c->op.cb = put_done;
    c->op.data = c;
    if (lb_store_submit(api->store, &c->op) != 0) {
        lb_workflow_rec_free(&c->rec);
        lb_free(c);
        lb_api_store_unavailable(req);
    }
}

static void create(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL)
        return;
    if (lb_workflows_count(api->workflows, t->id) >= LB_WF_MAX_PER_TENANT) {
        lb_http_respond_error(req, 409, "too_many_workflows",
                              "This tenant has 1000 workflows, the most allowed.", NULL);
        return;
    }
    char *id = lb_random_id("wf_", 16);
    save(api, req, t, id);
    lb_free(id);
}

static void replace(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL)
        return;
    const char *id = lb_http_req_param(req, "id");
    if (lb_workflows_get(api->workflows, t->id, id) == NULL) {
        lb_http_respond_error(req, 404, "not_found", "No such workflow.", "id");
        return;
    }
    save(api, req, t, id);
}

static void get_one(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL)
        return;
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
    if (t == NULL)
        return;
    size_t limit;
    char cbuf[128];
    const char *cursor = NULL;
    if (lb_api_page_params(req, &limit, cbuf, sizeof(cbuf), &cursor) != 0)
        return;
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
        if (c_id != NULL && (w->created_at > c_at ||
                             (w->created_at == c_at && strcmp(w->id, c_id) >= 0)))
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
    if (t == NULL)
        return;
    const char *id = lb_http_req_param(req, "id");
    if (lb_workflows_get(api->workflows, t->id, id) == NULL) {
        lb_http_respond_error(req, 404, "not_found", "No such workflow.", "id");
        return;
    }
    wf_ctx *c = LB_NEW(wf_ctx);
    c->api = api;
    c->req = req;
    c->op.kind = LB_STORE_WORKFLOW_DELETE;
    snprintf(c->op.workflow_delete.tenant_id, sizeof(c->op.workflow_delete.tenant_id), "%s",
             t->id);
    snprintf(c->op.workflow_delete.id, sizeof(c->op.workflow_delete.id), "%s", id);
    c->op.cb = delete_done;
    c->op.data = c;
    if (lb_store_submit(api->store, &c->op) != 0) {
        lb_free(c);
        lb_api_store_unavailable(req);
    }
}

void lb_api_workflows_register(lb_api *api, lb_router *r)
{
    lb_router_add(r, "POST", "/v1/tenants/{tenant}/workflows", create, api);
    lb_router_add(r, "GET", "/v1/tenants/{tenant}/workflows", list, api);
    lb_router_add(r, "GET", "/v1/tenants/{tenant}/workflows/{id}", get_one, api);
    lb_router_add(r, "PUT", "/v1/tenants/{tenant}/workflows/{id}", replace, api);
    lb_router_add(r, "DELETE", "/v1/tenants/{tenant}/workflows/{id}", delete_one, api);
}
