/* Answers shared by the route files. */
#include "api/api.h"

#include "http/response.h"
#include "state/tenants.h"

lb_tenant *lb_api_tenant_or_404(lb_api *api, lb_http_req *req)
{
    const char *id = lb_http_req_param(req, "tenant");
    lb_tenant *t = id ? lb_tenants_get(api->tenants, id) : NULL;
    if (t == NULL)
        lb_http_respond_error(req, 404, "not_found", "No such tenant.", "tenant");
    return t;
}

void lb_api_store_unavailable(lb_http_req *req)
{
    lb_http_respond_error(req, 503, "unavailable", "The store is unavailable; try again.", NULL);
}
