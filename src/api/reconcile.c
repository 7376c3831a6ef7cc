/* POST /v1/tenants/{tenant}/lever/reconcile: a reconciliation pass now
 * (engine/reconcile.h). Glue only. */
#include "api/api.h"

#include "engine/reconcile.h"
#include "http/response.h"
#include "json/json.h"
#include "state/tenants.h"

static void reconcile_post(lb_http_req *req, void *data)
{
    lb_api *api = data;
    lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL || lb_api_forwarded(api, req, t->id, reconcile_post)) return;
    if (api->reconcile == NULL || lb_reconcile_now(api->reconcile, t->id) != 0) {
        lb_http_respond_error(req, 409, "not_connected",
                              "Connect Lever first: reconciliation reads the tenant's Lever.",
                              NULL);
        return;
    }
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "status", "running");
    yajl_gen_map_close(g);
    lb_http_respond_json(req, 202, g);
}

void lb_api_reconcile_register(lb_api *api, lb_router *r)
{
    lb_router_add(r, "POST", "/v1/tenants/{tenant}/lever/reconcile", reconcile_post, api);
}
