/* The admin API's routes: the table of route groups (one file each, glue
 * over the engine and the state) and the guard that answers 401/403 before
 * a body is sent. Each group's file registers its own paths. */
#include "api/api.h"

#include "http/router.h"

#include <string.h>

/* Before 100 Continue (lb_router_check): a /v1/ request must carry the
 * admin token, or for a tenant's routes a connect link for that tenant, so
 * that a client without one gets its 401 or 403 before it sends the body.
 * What a link may do on the route is still the handler's to say. Other
 * routes (hooks, OAuth callback, pages) authenticate by what they carry. */
static int expect_guard(lb_http_req *req, void *data)
{
    lb_api *api = data;
    if (req->route == NULL || strncmp(req->route, "/v1/", 4) != 0) return 1;
    if (strstr(req->route, "{tenant}") != NULL) return lb_api_require_tenant(api, req, 0);
    return lb_api_require_admin(api, req);
}

/* Every route group, one file each. */
static void (*const groups[])(lb_api *api, lb_router *r) = {
    lb_api_ops_register,     lb_api_stats_register,     lb_api_tenants_register,
    lb_api_hooks_register,   lb_api_lever_register,     lb_api_catalog_register,
    lb_api_oauth_register,   lb_api_workflows_register, lb_api_events_register,
    lb_api_results_register, lb_api_connect_register,   lb_api_pages_register,
    lb_api_openapi_register, lb_api_reconcile_register, lb_api_dryrun_register,
    lb_api_cluster_register, lb_api_backfill_register,
};

int lb_api_register(lb_api *api, lb_router *r)
{
    lb_links_init(&api->links, api->key);
    lb_router_set_guard(r, expect_guard, api);
    for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
        groups[i](api, r);
    return 0;
}
