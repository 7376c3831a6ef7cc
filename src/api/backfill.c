/* Backfills (api.md "Dry run and backfill"), glue over engine/backfill.h:
 *   POST   /v1/tenants/{tenant}/workflows/{id}/backfill -> 202 {"id","status"}
 *   GET    /v1/tenants/{tenant}/backfills/{id}          -> 200 the backfill
 *   DELETE /v1/tenants/{tenant}/backfills/{id}          -> 200 the backfill,
 *          "cancelled" unless it had ended before.
 * A POST while a backfill of the same workflow runs answers 202 with that
 * one's id: one backfill per workflow at a time. */
#include "api/api.h"

#include "core/alloc.h"
#include "core/error.h"
#include "engine/backfill.h"
#include "http/response.h"
#include "json/json.h"
#include "state/connections.h"
#include "state/tenants.h"
#include "state/workflows.h"

#include <stdio.h>
#include <string.h>

static void respond_started(lb_http_req *req, const char *id)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "id", id);
    lb_json_kv_str(g, "status", "running");
    yajl_gen_map_close(g);
    lb_http_respond_json(req, 202, g);
}

static void respond_unavailable(lb_http_req *req)
{
    lb_api_store_unavailable(req);
}

static void respond_backfill(lb_http_req *req, const lb_backfill_rec *r)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "id", r->id);
    lb_json_kv_str(g, "workflow_id", r->workflow_id);
    lb_json_kv_str(g, "status", r->status);
    lb_json_kv_int(g, "listed", r->listed);
    lb_json_kv_int(g, "queued", r->queued);
    lb_json_kv_int(g, "skipped", r->skipped);
    if (r->last_error != NULL)
        lb_json_kv_str(g, "last_error", r->last_error);
    else
        lb_json_kv_null(g, "last_error");
    lb_json_kv_time(g, "created_at", r->created_at);
    lb_json_kv_time(g, "updated_at", r->updated_at);
    yajl_gen_map_close(g);
    lb_http_respond_json(req, 200, g);
}

static void started(void *data, int status, const char *id)
{
    lb_http_req *req = data;
    if (status != 0)
        respond_unavailable(req);
    else
        respond_started(req, id);
}

static void backfill_post(lb_http_req *req, void *data)
{
    lb_api *api = data;
    lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL || lb_api_forwarded(api, req, t->id, backfill_post)) return;
    const lb_workflow *w = lb_workflows_get(api->workflows, t->id, lb_http_req_param(req, "id"));
    if (w == NULL) {
        lb_http_respond_error(req, 404, "not_found", "No such workflow.", NULL);
        return;
    }
    if (w->trigger != LB_TRIGGER_STAGE_CHANGED) {
        lb_http_respond_error(req, 400, "not_stage_changed",
                              "Only a stage_changed workflow can be backfilled: it applies to "
                              "the opportunities now in its to_stage.",
                              "trigger.event");
        return;
    }
    const lb_conn *c = lb_conns_get(api->conns, t->id);
    if (api->backfill == NULL || c == NULL || c->status != LB_CONN_CONNECTED) {
        lb_http_respond_error(req, 409, "not_connected",
                              "Connect Lever first: a backfill reads the tenant's Lever.", NULL);
        return;
    }
    char running[LB_BACKFILL_ID_MAX + 1];
    int rc = lb_backfill_start(api->backfill, w, started, req, running);
    if (rc == 1)
        respond_started(req, running);
    else if (rc != 0)
        respond_unavailable(req);
}

/* A read, or a cancel and then a read. Owned by the handler; freed after
 * the last op's callback. */
typedef struct {
    lb_store_op finish;
    lb_store_op get;
    lb_http_req *req;
    int get_pending; /* DELETE: the read follows the finish */
} bf_ctx;

static void got(lb_store_op *op)
{
    bf_ctx *c = op->data;
    if (op->status == LB_ENOTFOUND)
        lb_http_respond_error(c->req, 404, "not_found", "No such backfill.", NULL);
    else if (op->status != 0)
        respond_unavailable(c->req);
    else
        respond_backfill(c->req, &op->backfill_get.rec);
    if (op->status == 0) lb_backfill_rec_free(&op->backfill_get.rec);
    lb_free(c);
}

static void finished(lb_store_op *op)
{
    bf_ctx *c = op->data;
    if (!c->get_pending) lb_free(c); /* else the read after it answers, then frees */
}

static bf_ctx *ctx_new(lb_http_req *req, const lb_tenant *t, const char *id)
{
    if (id == NULL || strlen(id) > LB_BACKFILL_ID_MAX) {
        lb_http_respond_error(req, 404, "not_found", "No such backfill.", NULL);
        return NULL;
    }
    bf_ctx *c = LB_NEW(bf_ctx);
    c->req = req;
    c->get.kind = LB_STORE_BACKFILL_GET;
    c->get.cb = got;
    c->get.data = c;
    snprintf(c->get.backfill_get.tenant_id, sizeof(c->get.backfill_get.tenant_id), "%s", t->id);
    snprintf(c->get.backfill_get.id, sizeof(c->get.backfill_get.id), "%s", id);
    return c;
}

static void backfill_get(lb_http_req *req, void *data)
{
    lb_api *api = data;
    lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL) return;
    bf_ctx *c = ctx_new(req, t, lb_http_req_param(req, "id"));
    if (c == NULL) return;
    lb_api_submit(api, req, &c->get, lb_free, c);
}

static void backfill_delete(lb_http_req *req, void *data)
{
    lb_api *api = data;
    lb_tenant *t = lb_api_tenant_for(api, req, 0);
    /* forwarded: the holder is the one listing its pages */
    if (t == NULL || lb_api_forwarded(api, req, t->id, backfill_delete)) return;
    const char *id = lb_http_req_param(req, "id");
    bf_ctx *c = ctx_new(req, t, id);
    if (c == NULL) return;
    if (api->backfill != NULL) lb_backfill_cancel(api->backfill, t->id, id);
    /* The end is written after any page in flight (the store keeps the
     * order), then read back. */
    c->finish.kind = LB_STORE_BACKFILL_FINISH;
    c->finish.cb = finished;
    c->finish.data = c;
    memcpy(c->finish.backfill_finish.tenant_id, c->get.backfill_get.tenant_id,
           sizeof(c->finish.backfill_finish.tenant_id));
    memcpy(c->finish.backfill_finish.id, c->get.backfill_get.id,
           sizeof(c->finish.backfill_finish.id));
    c->finish.backfill_finish.status = "cancelled";
    if (lb_api_submit(api, req, &c->finish, lb_free, c) != 0) return;
    c->get_pending = 1;
    if (lb_store_submit(api->store, &c->get) != 0) {
        c->get_pending = 0; /* `finished` frees c */
        respond_unavailable(req);
    }
}

void lb_api_backfill_register(lb_api *api, lb_router *r)
{
    lb_router_add(r, "POST", "/v1/tenants/{tenant}/workflows/{id}/backfill", backfill_post, api);
    lb_router_add(r, "GET", "/v1/tenants/{tenant}/backfills/{id}", backfill_get, api);
    lb_router_add(r, "DELETE", "/v1/tenants/{tenant}/backfills/{id}", backfill_delete, api);
}
