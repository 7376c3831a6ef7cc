/* GET /v1/tenants/{tenant}/lever/stages and /lever/postings: Lever's lists
 * for workflow forms, from the engine's catalog (engine/catalog.h: cached
 * 5 minutes per tenant, fetched through the tenant's rate limit). */
#include "api/api.h"

#include "core/alloc.h"
#include "core/error.h"
#include "engine/catalog.h"
#include "http/response.h"
#include "state/tenants.h"

static void answer(void *data, int status, const char *code, const char *msg, const char *body,
                   size_t len)
{
    lb_http_req *req = data;
    if (status == 200) {
        char *copy = lb_memdup(body, len);
        lb_http_respond(req, 200, "application/json", "Cache-Control: no-store\r\n", copy, len,
                        lb_free, copy);
    } else {
        lb_http_respond_error(req, status, code, msg, NULL);
    }
}

static void list(lb_http_req *req, lb_api *api, int kind, lb_http_handler self)
{
    const lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL || lb_api_forwarded(api, req, t->id, self)) return;
    int rc = lb_catalog_get(api->catalog, t->id, kind, 0, answer, req);
    if (rc == LB_ENOTFOUND)
        lb_http_respond_error(req, 409, "not_connected", "Connect Lever first.", NULL);
    else if (rc != 0)
        lb_http_respond_error(req, 503, "unavailable", "Too many requests wait for Lever.", NULL);
}

static void stages(lb_http_req *req, void *data)
{
    list(req, data, LB_CATALOG_STAGES, stages);
}

static void postings(lb_http_req *req, void *data)
{
    list(req, data, LB_CATALOG_POSTINGS, postings);
}

void lb_api_catalog_register(lb_api *api, lb_router *r)
{
    lb_router_add(r, "GET", "/v1/tenants/{tenant}/lever/stages", stages, api);
    lb_router_add(r, "GET", "/v1/tenants/{tenant}/lever/postings", postings, api);
}
