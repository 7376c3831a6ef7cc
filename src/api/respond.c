/* Answers shared by the route files. */
#include "api/api.h"

#include "core/error.h"
#include "core/log.h"
#include "http/response.h"
#include "json/json.h"
#include "state/match.h"
#include "state/tenants.h"

#include <stdio.h>

lb_tenant *lb_api_tenant_or_404(lb_api *api, lb_http_req *req)
{
    const char *id = lb_http_req_param(req, "tenant");
    lb_tenant *t = id ? lb_tenants_get(api->tenants, id) : NULL;
    if (t == NULL) lb_http_respond_error(req, 404, "not_found", "No such tenant.", "tenant");
    return t;
}

lb_tenant *lb_api_tenant_for(lb_api *api, lb_http_req *req, int flags)
{
    if (!lb_api_require_tenant(api, req, flags)) return NULL;
    return lb_api_tenant_or_404(api, req);
}

void lb_api_next_cursor(yajl_gen g, int more, int64_t at, const char *id)
{
    if (more && id != NULL) {
        char next[128];
        snprintf(next, sizeof(next), "%lld_%s", (long long)at, id);
        lb_json_kv_str(g, "next_cursor", next);
    } else {
        lb_json_kv_null(g, "next_cursor");
    }
}

void lb_api_store_unavailable(lb_http_req *req)
{
    lb_http_respond_error(req, 503, "unavailable", "The store is unavailable; try again.", NULL);
}

int lb_api_submit(lb_api *api, lb_http_req *req, lb_store_op *op, void (*free_ctx)(void *ctx),
                  void *ctx)
{
    int rc = lb_store_submit(api->store, op);
    if (rc == 0) return 0;
    lb_warn("api", "%s %s: the store refused the operation: %s", req->method_name, req->route,
            lb_strerror(rc));
    free_ctx(ctx);
    lb_api_store_unavailable(req);
    return rc;
}

void lb_api_too_many_jobs(lb_http_req *req)
{
    lb_warn("api", "an event matched workflows that would make more than %d jobs; not stored",
            LB_EVENT_JOBS_MAX);
    lb_http_respond_error(req, 500, "internal",
                          "This event matches workflows that would make more than 200 jobs; "
                          "disable or merge some of the tenant's workflows.",
                          NULL);
}
