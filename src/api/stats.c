/* GET /v1/stats and GET /v1/tenants/{tenant}/stats: the console's charts,
 * the last 24 hours of state/stats.h as JSON, oldest hour first. */
#include "api/api.h"

#include "core/time.h"
#include "http/response.h"
#include "json/json.h"
#include "state/stats.h"
#include "state/tenants.h"

static const char *const kinds[LB_STATS_KINDS] = {
    [LB_STAT_ACCEPTED] = "accepted", [LB_STAT_DUPLICATE] = "duplicate",
    [LB_STAT_REFUSED] = "refused",   [LB_STAT_SUCCEEDED] = "succeeded",
    [LB_STAT_FAILED] = "failed",
};

static void iso(int64_t hour, char out[LB_TIME_STR_SIZE])
{
    lb_time_format(hour * LB_HOUR_MS, out);
}

static void respond(lb_api *api, lb_http_req *req, const char *tenant)
{
    lb_stats_series se;
    int64_t now = lb_time_now_ms();
    lb_stats_get(api->stats, tenant, now, &se);
    yajl_gen g = lb_json_gen_new();
    char at[LB_TIME_STR_SIZE];
    yajl_gen_map_open(g);
    if (tenant != NULL)
        lb_json_kv_str(g, "tenant", tenant);
    else
        lb_json_kv_null(g, "tenant");
    lb_json_kv_int(g, "bucket_seconds", LB_HOUR_MS / 1000);
    iso(se.hour[0], at);
    lb_json_kv_str(g, "from", at);
    iso(se.hour[LB_STATS_HOURS - 1] + 1, at);
    lb_json_kv_str(g, "to", at);
    lb_json_key(g, "buckets");
    yajl_gen_array_open(g);
    for (int i = 0; i < LB_STATS_HOURS; i++) {
        yajl_gen_map_open(g);
        iso(se.hour[i], at);
        lb_json_kv_str(g, "start", at);
        lb_json_key(g, "deliveries");
        yajl_gen_map_open(g);
        for (int k = LB_STAT_ACCEPTED; k <= LB_STAT_REFUSED; k++)
            lb_json_kv_int(g, kinds[k], se.count[i][k]);
        yajl_gen_map_close(g);
        lb_json_key(g, "jobs");
        yajl_gen_map_open(g);
        for (int k = LB_STAT_SUCCEEDED; k <= LB_STAT_FAILED; k++)
            lb_json_kv_int(g, kinds[k], se.count[i][k]);
        yajl_gen_map_close(g);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    lb_http_respond_json(req, 200, g);
}

static void total(lb_http_req *req, void *data)
{
    lb_api *api = data;
    if (lb_api_require_admin(api, req)) respond(api, req, NULL);
}

static void of_tenant(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t != NULL) respond(api, req, t->id);
}

void lb_api_stats_register(lb_api *api, lb_router *r)
{
    lb_router_add(r, "GET", "/v1/stats", total, api);
    lb_router_add(r, "GET", "/v1/tenants/{tenant}/stats", of_tenant, api);
}
