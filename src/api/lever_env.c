/* What the job engine asks of the rest of the server about a tenant's Lever
 * connection: credentials, limits, and what to do on 401 and 403. */
#include "api/api.h"

#include "core/error.h"
#include "core/log.h"
#include "state/tenants.h"

int lb_api_lever_auth(void *data, const char *tenant, lb_lever_auth *auth)
{
    lb_api *api = data;
    (void)api;
    (void)tenant;
    (void)auth;
    return LB_ENOTFOUND; /* no connection: its jobs wait */
}

void lb_api_lever_unauthorized(void *data, const char *tenant)
{
    (void)data;
    lb_warn("api", "tenant %s: Lever refused the credentials (401)", tenant);
}

void lb_api_lever_forbidden(void *data, const char *tenant, const char *permission)
{
    (void)data;
    lb_warn("api", "tenant %s: Lever key lacks the permission \"%s\"", tenant, permission);
}

void lb_api_tenant_rate(void *data, const char *tenant, double *rate, int *burst)
{
    lb_api *api = data;
    const lb_tenant *t = lb_tenants_get(api->tenants, tenant);
    *rate = t && t->lever_rate > 0 ? t->lever_rate : api->cfg->lever_rate;
    *burst = t && t->lever_burst > 0 ? t->lever_burst : api->cfg->lever_burst;
}
