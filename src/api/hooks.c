/* POST /hooks/lever/{hook id}: Lever's webhook deliveries. The hook id and
 * the body's signature authenticate; everything is checked in memory, then
 * the event and the jobs it derives are written in one durable step, and
 * only then is the 200 sent. */
#include "api/api.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/time.h"
#include "crypto/crypto.h"
#include "engine/jobs.h"
#include "http/response.h"
#include "json/json.h"
#include "state/connections.h"
#include "store/store.h"

#include <stdio.h>
#include <string.h>


#define MAX_CLOCK_SKEW_MS (5 * 60 * 1000)

/* A delivery while its event is being written. Owned by the handler; freed
 * in the store callback. */
typedef struct {
    lb_store_op op;
    lb_api *api;
    lb_http_req *req;
    lb_event_rec event;
    char hook_id[LB_HOOK_ID_MAX + 1];
    char *dedupe_key;
    char *payload;
    char *opportunity;
    char *type;
    lb_job_rec *jobs;
    size_t njobs;
    int ignored;
} delivery;

static void count(const char *result)
{
    char labels[64];
    snprintf(labels, sizeof(labels), "result=\"%s\"", result);
    lb_metric_add(lb_metrics_counter("leverbridge_webhooks_total",
                                     "Lever webhook deliveries by outcome.", labels),
                  1);
}

static void reject(lb_http_req *req, int status, const char *result, const char *code,
                   const char *message, const char *field)
{
    count(result);
    lb_http_respond_error(req, status, code, message, field);
}

static void delivery_free(delivery *d)
{
    lb_free(d->dedupe_key);
    lb_free(d->payload);
    lb_free(d->opportunity);
    lb_free(d->type);
    lb_api_jobs_free(d->jobs, d->njobs);
    lb_free(d);
}

static void answer(lb_http_req *req, const char *status, const char *event)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "status", status);
    if (event != NULL)
        lb_json_kv_str(g, "event", event);
    yajl_gen_map_close(g);
    lb_http_respond_json(req, 200, g);
}

static void written(lb_store_op *op)
{
    delivery *d = op->data;
    lb_api *api = d->api;
    if (op->status != 0) {
        lb_warn("hooks", "delivery for hook %s not stored: %s", d->hook_id,
                lb_strerror(op->status));
        reject(d->req, 503, "unavailable", "unavailable",
               "The event could not be stored; Lever will retry.", NULL);
    } else if (op->event_insert.duplicate) {
        count("duplicate");
        answer(d->req, "duplicate", op->event_insert.existing_id);
    } else {
        lb_hook *h = lb_conns_hook(api->conns, d->hook_id);
        if (h != NULL && d->event.received_at > h->last_delivery_at)
            h->last_delivery_at = d->event.received_at;
        if (d->njobs > 0)
            lb_jobs_add(api->jobs, d->jobs, d->njobs);
        count(d->ignored ? "ignored" : "accepted");
        answer(d->req, d->ignored ? "ignored" : "accepted", d->ignored ? NULL : d->event.id);
    }
    delivery_free(d);
}

static void lever_hook(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const char *id = lb_http_req_param(req, "hook");
    lb_hook *hook = id ? lb_conns_hook(api->conns, id) : NULL;
    if (hook == NULL || hook->signature_token == NULL) {
        reject(req, 404, "not_found", "not_found", "No such hook.", NULL);
        return;
    }
    lb_lever_delivery dl;
    const char *field;
    switch (lb_lever_delivery_parse(req->body, req->body_len, hook->signature_token, &dl,
                                    &field)) {
    case LB_DELIVERY_OK:
        break;
    case LB_DELIVERY_NOT_JSON:
        reject(req, 400, "invalid", "invalid_json", "The body is not a JSON object.", NULL);
        return;
    case LB_DELIVERY_MISSING: {
        char msg[96];
        snprintf(msg, sizeof(msg), "The delivery has no valid \"%s\".", field);
        reject(req, 400, "invalid", "invalid_request", msg, field);
        return;
    }
    case LB_DELIVERY_BAD_SIGNATURE:
        reject(req, 401, "invalid_signature", "invalid_signature",
               "The signature does not match this hook's signature token.", NULL);
        return;
    }
    int64_t now = lb_time_now_ms();
    if (dl.triggered_ms < now - api->cfg->replay_window_ms) {
        yajl_tree_free(dl.tree);
        reject(req, 400, "stale", "stale_event",
               "triggeredAt is older than the replay window.", "triggeredAt");
        return;
    }
    /* Lever signs token || triggeredAt with no separator: a token's last
     * digits could move into triggeredAt with the signature still valid.
     * Such a moved value lies far in the future; refuse anything beyond a
     * clock skew, so a captured delivery cannot pass for a new one. */
    if (dl.triggered_ms > now + MAX_CLOCK_SKEW_MS) {
        yajl_tree_free(dl.tree);
        reject(req, 400, "invalid", "invalid_request", "triggeredAt is in the future.",
               "triggeredAt");
        return;
    }

    delivery *d = LB_NEW(delivery);
    d->api = api;
    d->req = req;
    snprintf(d->hook_id, sizeof(d->hook_id), "%s", hook->id);
    size_t klen = strlen(hook->id) + strlen(dl.token) + 2;
    d->dedupe_key = lb_malloc(klen);
    snprintf(d->dedupe_key, klen, "%s:%s", hook->id, dl.token);
    d->payload = lb_strndup(req->body, req->body_len);
    d->opportunity = dl.opportunity_id ? lb_strdup(dl.opportunity_id) : NULL;
    d->ignored = strcmp(dl.event, "candidateStageChange") != 0;
    char *eid = lb_sortable_id("ev_", lb_time_now_ms(), 12);
    snprintf(d->event.id, sizeof(d->event.id), "%s", eid);
    lb_free(eid);
    memcpy(d->event.tenant_id, hook->tenant_id, sizeof(d->event.tenant_id));
    d->event.source = "lever";
    d->type = lb_strndup(dl.event, strnlen(dl.event, 64));
    d->event.type = d->type; /* Lever's event name */
    d->event.dedupe_key = d->dedupe_key;
    d->event.status = d->ignored ? "ignored" : "accepted";
    d->event.opportunity_id = d->opportunity;
    d->event.payload = d->payload;
    d->event.received_at = now;
    if (!d->ignored)
        lb_api_derive_jobs(api, hook->tenant_id, d->event.id, "stage_changed", dl.data, &d->jobs,
                           &d->njobs);
    yajl_tree_free(dl.tree);

    d->op.kind = LB_STORE_EVENT_INSERT;
    d->op.cb = written;
    d->op.data = d;
    d->op.event_insert.event = &d->event;
    d->op.event_insert.jobs = d->jobs;
    d->op.event_insert.njobs = d->njobs;
    d->op.event_insert.hook_id = d->hook_id;
    int rc = lb_store_submit(api->store, &d->op);
    if (rc != 0) {
        delivery_free(d);
        reject(req, 503, "unavailable", "unavailable",
               "The server cannot take events now; Lever will retry.", NULL);
    }
}

int64_t lb_api_lever_dedupe_ms(const lb_config *cfg)
{
    /* A delivery passes only if triggeredAt >= now - window, and its first
     * copy arrived no earlier than triggeredAt - skew. */
    return cfg->replay_window_ms + MAX_CLOCK_SKEW_MS;
}

void lb_api_hooks_register(lb_api *api, lb_router *r)
{
    lb_metrics_declare_counter("leverbridge_webhooks_total", "Lever webhook deliveries by outcome.");
    lb_router_add(r, "POST", "/hooks/lever/{hook}", lever_hook, api);
}
