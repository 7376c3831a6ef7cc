/* GET /v1/cluster: this node, the backend, and the nodes seen alive with
 * the leases each holds (src/cluster/); the tenant body's "lease". */
#include "api/api.h"

#include "cluster/cluster.h"
#include "cluster/forward.h"
#include "http/response.h"
#include "json/json.h"

int lb_api_forwarded_as(lb_api *api, lb_http_req *req, const char *tenant, lb_http_handler self,
                        void (*fail)(lb_http_req *req, const char *msg))
{
    if (api->forward == NULL) return 0;
    return lb_cluster_fwd_route(api->forward, req, tenant, self, api, fail);
}

int lb_api_forwarded(lb_api *api, lb_http_req *req, const char *tenant, lb_http_handler self)
{
    return lb_api_forwarded_as(api, req, tenant, self, NULL);
}

void lb_api_lease_json(lb_api *api, yajl_gen g, const char *tenant)
{
    lb_lease_rec l;
    lb_json_key(g, "lease");
    if (api->cluster == NULL || !lb_cluster_lease(api->cluster, tenant, &l)) {
        yajl_gen_null(g);
        return;
    }
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "node", l.node);
    lb_json_kv_int(g, "epoch", l.epoch);
    if (l.expires_at > 0)
        lb_json_kv_time(g, "expires_at", l.expires_at);
    else
        lb_json_kv_null(g, "expires_at"); /* one replica (SQLite): never */
    yajl_gen_map_close(g);
}

static void get_cluster(lb_http_req *req, void *data)
{
    lb_api *api = data;
    if (!lb_api_require_admin(api, req)) return;
    if (api->cluster == NULL) {
        lb_api_store_unavailable(req);
        return;
    }
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "node", lb_cluster_node_id(api->cluster));
    lb_json_kv_str(g, "backend", lb_store_backend(api->store));
    lb_json_key(g, "nodes");
    yajl_gen_array_open(g);
    size_t n = 0;
    const lb_cluster_node *nodes = lb_cluster_nodes(api->cluster, &n);
    for (size_t i = 0; i < n; i++) {
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "id", nodes[i].id);
        lb_json_kv_str(g, "advertise_url", nodes[i].advertise_url);
        lb_json_kv_time(g, "last_seen_at", nodes[i].last_seen_at);
        lb_json_kv_int(g, "leases", (int64_t)nodes[i].leases);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    lb_http_respond_json(req, 200, g);
}

void lb_api_cluster_register(lb_api *api, lb_router *r)
{
    lb_router_add(r, "GET", "/v1/cluster", get_cluster, api);
}
