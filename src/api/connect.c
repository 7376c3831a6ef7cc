/* Connect links (api.md "Connect links and pages"): POST
 * /v1/tenants/{tenant}/connect-links (admin) mints a grant for one tenant.
 * The token's format and its check are in state/links.h; nothing is
 * stored. */
#include "api/api.h"

#include "core/time.h"
#include "http/response.h"
#include "json/json.h"
#include "state/tenants.h"

#include <string.h>

/* ---- POST /v1/tenants/{tenant}/connect-links ------------------------------------ */

static void link_create(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, LB_API_ADMIN_ONLY);
    if (t == NULL) return;
    int64_t ttl = LB_CONNECT_LINK_TTL_DEFAULT_MS;
    if (req->body_len > 0) {
        yajl_val body = lb_api_json_body(req);
        if (body == NULL) return;
        for (size_t i = 0; i < body->u.object.len; i++) {
            if (strcmp(body->u.object.keys[i], "expires_in") != 0) {
                lb_http_respond_error(req, 400, "invalid_request", "Unknown field.",
                                      body->u.object.keys[i]);
                yajl_tree_free(body);
                return;
            }
        }
        yajl_val v = lb_json_get(body, "expires_in");
        if (v != NULL && !YAJL_IS_NULL(v)) {
            int64_t ms = 0;
            if (!YAJL_IS_STRING(v) || lb_duration_parse(v->u.string, &ms) != 0 ||
                ms < LB_CONNECT_LINK_TTL_MIN_MS || ms > LB_CONNECT_LINK_TTL_MAX_MS) {
                lb_http_respond_error(req, 400, "invalid_request",
                                      "expires_in must be a duration from 1s to 24h, such as "
                                      "\"30m\" or \"1h\".",
                                      "expires_in");
                yajl_tree_free(body);
                return;
            }
            ttl = ms;
        }
        yajl_tree_free(body);
    }
    int64_t expiry = lb_time_now_ms() + ttl;
    char url[1536];
    lb_api_connect_url(api, t->id, expiry, url, sizeof(url));
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "url", url);
    lb_json_kv_time(g, "expires_at", expiry);
    yajl_gen_map_close(g);
    lb_http_respond_json(req, 201, g);
}

void lb_api_connect_register(lb_api *api, lb_router *r)
{
    lb_router_add(r, "POST", "/v1/tenants/{tenant}/connect-links", link_create, api);
}
