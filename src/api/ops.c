/* /healthz, /readyz, /metrics. */
#include "api/api.h"

#include "core/alloc.h"
#include "core/metrics.h"
#include "core/strbuf.h"
#include "http/response.h"
#include "engine/jobs.h"
#include "state/connections.h"
#include "store/store.h"

static const char ok_body[] = "{\"status\":\"ok\"}";
static const char ready_body[] = "{\"status\":\"ready\"}";

static void healthz(lb_http_req *req, void *data)
{
    (void)data;
    lb_http_respond_static(req, 200, "application/json", "Cache-Control: no-store\r\n", ok_body,
                           sizeof(ok_body) - 1);
}

static void readyz(lb_http_req *req, void *data)
{
    lb_api *api = data;
    if (api->draining || (api->server && lb_http_server_draining(api->server))) {
        lb_http_respond_error(req, 503, "unavailable", "The server is shutting down.", NULL);
        return;
    }
    if (api->store == NULL || !lb_store_ready(api->store)) {
        int e = api->store ? lb_store_write_error(api->store) : 0;
        lb_http_respond_error(req, 503, "unavailable",
                              e == UV_ENOSPC ? "The store cannot write: no space left on device. "
                                               "Reads are served; writes wait for space."
                                             : "The store is not available.",
                              NULL);
        return;
    }
    lb_http_respond_static(req, 200, "application/json", "Cache-Control: no-store\r\n", ready_body,
                           sizeof(ready_body) - 1);
}

static void metrics(lb_http_req *req, void *data)
{
    lb_api *api = data;
    lb_strbuf b;
    lb_strbuf_init(&b, 4 * 1024 * 1024);
    lb_metric_set(lb_metrics_gauge("leverbridge_memory_bytes",
                                   "Bytes allocated through leverbridge's allocator.", ""),
                  (double)lb_alloc_live_bytes());
    if (api->server != NULL)
        lb_metric_set(
            lb_metrics_gauge("leverbridge_http_connections", "Open client connections.", ""),
            (double)lb_http_server_connections(api->server));
    if (api->jobs != NULL) {
        lb_jobs_stats st;
        lb_jobs_stats_get(api->jobs, &st);
        static const char help[] =
            "Jobs by status: unfinished ones now, finished ones since start.";
        const struct {
            const char *label;
            double v;
        } rows[] = {
            {"status=\"queued\"", (double)(st.active - st.running - st.retrying)},
            {"status=\"running\"", (double)st.running},
            {"status=\"retrying\"", (double)st.retrying},
            {"status=\"succeeded\"", (double)st.succeeded},
            {"status=\"failed\"", (double)st.failed},
            {"status=\"skipped\"", (double)st.skipped},
            {"status=\"cancelled\"", (double)st.cancelled},
        };
        for (size_t i = 0; i < LB_COUNTOF(rows); i++)
            lb_metric_set(lb_metrics_gauge("leverbridge_jobs", help, rows[i].label), rows[i].v);
    }
    if (api->conns != NULL) {
        size_t conns[3], hooks[4];
        lb_conns_count(api->conns, conns, hooks);
        static const char chelp[] = "Tenants' Lever connections by status.";
        static const char hhelp[] = "Tenants' Lever webhooks by status (none: not connected).";
        char label[64];
        for (int i = 0; i < 3; i++) {
            snprintf(label, sizeof(label), "status=\"%s\"", lb_conn_status_name((lb_conn_status)i));
            lb_metric_set(lb_metrics_gauge("leverbridge_connections", chelp, label),
                          (double)conns[i]);
        }
        for (int i = 0; i < 4; i++) {
            snprintf(label, sizeof(label), "status=\"%s\"", lb_hook_status_name((lb_hook_status)i));
            lb_metric_set(lb_metrics_gauge("leverbridge_hooks", hhelp, label), (double)hooks[i]);
        }
    }
    int ready = !(api->draining || (api->server && lb_http_server_draining(api->server))) &&
                api->store != NULL && lb_store_ready(api->store);
    lb_metric_set(lb_metrics_gauge("leverbridge_ready",
                                   "1 while /readyz answers 200: the store can write and the "
                                   "server is not draining.",
                                   ""),
                  ready);
    lb_metrics_render(&b);
    size_t len;
    char *text = lb_strbuf_steal(&b, &len);
    lb_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8",
                    "Cache-Control: no-store\r\n", text, len, lb_free, text);
}

void lb_api_ops_register(lb_api *api, lb_router *r)
{
    lb_router_add(r, "GET", "/healthz", healthz, api);
    lb_router_add(r, "GET", "/readyz", readyz, api);
    lb_router_add(r, "GET", "/metrics", metrics, api);
}
