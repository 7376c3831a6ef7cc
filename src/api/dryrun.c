/* POST /v1/tenants/{tenant}/workflows/{id}/dry-run {"opportunity_id"}: glue
 * over engine/dryrun.h, which reads the opportunity (through the tenant's
 * rate limit) and the invitation ledger and writes nothing. */
#include "api/api.h"

#include "core/alloc.h"
#include "core/error.h"
#include "engine/credentials.h"
#include "engine/dryrun.h"
#include "http/response.h"
#include "json/json.h"
#include "state/tenants.h"
#include "state/workflows.h"

#include <string.h>

static void done(void *data, const lb_dryrun_result *res)
{
    lb_http_req *req = data;
    if (res->status != 200) {
        lb_http_respond_error(req, res->status, res->code, res->message, res->field);
        return;
    }
    char *body = lb_memdup(res->body, res->len);
    lb_http_respond(req, 200, "application/json", NULL, body, res->len, lb_free, body);
}

static void dry_run(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL || lb_api_forwarded(api, req, t->id, dry_run)) return;
    const lb_workflow *w = lb_workflows_get(api->workflows, t->id, lb_http_req_param(req, "id"));
    if (w == NULL) {
        lb_http_respond_error(req, 404, "not_found", "No such workflow.", "id");
        return;
    }
    yajl_val body = lb_api_json_body(req);
    if (body == NULL) return;
    const char *bad = NULL;
    for (size_t i = 0; YAJL_IS_OBJECT(body) && i < body->u.object.len; i++)
        if (strcmp(body->u.object.keys[i], "opportunity_id") != 0) bad = body->u.object.keys[i];
    yajl_val opp = lb_json_get(body, "opportunity_id");
    if (!YAJL_IS_OBJECT(body) || bad != NULL || opp == NULL || !YAJL_IS_STRING(opp) ||
        opp->u.string[0] == '\0' || strlen(opp->u.string) > 200) {
        lb_http_respond_error(req, 400, "invalid_request",
                              bad != NULL ? "Unknown field."
                                          : "Expected {\"opportunity_id\":\"<a Lever opportunity "
                                            "id>\"}.",
                              bad != NULL ? bad : "opportunity_id");
        yajl_tree_free(body);
        return;
    }
    lb_jobs_env env;
    lb_cred_env(api->cred, &env);
    env.failure_tag = NULL; /* a dry run fails no job */
    int rc = lb_dryrun_start(api->outbound, api->store, &env, w, opp->u.string,
                             api->cfg->platform_url != NULL, done, req);
    yajl_tree_free(body);
    if (rc == LB_ENOTFOUND)
        lb_http_respond_error(req, 409, "not_connected",
                              "Connect Lever first: a dry run reads the opportunity from Lever.",
                              NULL);
    else if (rc != 0)
        lb_http_respond_error(req, 503, "unavailable",
                              "Too many Lever calls are queued; try again.", NULL);
}

void lb_api_dryrun_register(lb_api *api, lb_router *r)
{
    lb_router_add(r, "POST", "/v1/tenants/{tenant}/workflows/{id}/dry-run", dry_run, api);
}
