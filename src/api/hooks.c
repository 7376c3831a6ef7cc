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

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_MAX 256
#define TRIGGERED_MAX 24

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

/* triggeredAt as Lever sent it: an integer number (or a string of digits),
 * kept as its decimal text because the signature covers that text. */
static int triggered_text(yajl_val v, char *out, size_t size, int64_t *ms)
{
    const char *s = NULL;
    if (v != NULL && YAJL_IS_INTEGER(v))
        s = v->u.number.r;
    else if (v != NULL && YAJL_IS_STRING(v))
        s = v->u.string;
    if (s == NULL || *s == '\0' || strlen(s) >= size)
        return LB_EINVAL;
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p))
            return LB_EINVAL;
    snprintf(out, size, "%s", s);
    *ms = strtoll(s, NULL, 10);
    return 0;
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
    char err[256];
    yajl_val body = lb_json_parse(req->body, req->body_len, err, sizeof(err));
    if (body == NULL || !YAJL_IS_OBJECT(body)) {
        if (body != NULL)
            yajl_tree_free(body);
        reject(req, 400, "invalid", "invalid_json", "The body is not a JSON object.", NULL);
        return;
    }
    const char *token = lb_json_get_str(body, "token");
    const char *signature = lb_json_get_str(body, "signature");
    const char *event = lb_json_get_str(body, "event");
    char triggered[TRIGGERED_MAX];
    int64_t triggered_ms = 0;
    const char *missing = token == NULL || *token == '\0' || strlen(token) > TOKEN_MAX ? "token"
                          : triggered_text(lb_json_get(body, "triggeredAt"), triggered,
                                           sizeof(triggered), &triggered_ms) != 0
                              ? "triggeredAt"
                          : signature == NULL ? "signature"
                          : event == NULL || *event == '\0' ? "event"
                                                            : NULL;
    if (missing != NULL) {
        char msg[96];
        snprintf(msg, sizeof(msg), "The delivery has no valid \"%s\".", missing);
        yajl_tree_free(body);
        reject(req, 400, "invalid", "invalid_request", msg, missing);
        return;
    }
    if (!lb_lever_signature_ok(hook->signature_token, strlen(hook->signature_token), token,
                               strlen(token), triggered, strlen(triggered), signature,
                               strlen(signature))) {
        yajl_tree_free(body);
        reject(req, 401, "invalid_signature", "invalid_signature",
               "The signature does not match this hook's signature token.", NULL);
        return;
    }
    int64_t now = lb_time_now_ms();
    if (triggered_ms < now - api->cfg->replay_window_ms) {
        yajl_tree_free(body);
        reject(req, 400, "stale", "stale_event",
               "triggeredAt is older than the replay window.", "triggeredAt");
        return;
    }

    delivery *d = LB_NEW(delivery);
    d->api = api;
    d->req = req;
    snprintf(d->hook_id, sizeof(d->hook_id), "%s", hook->id);
    size_t klen = strlen(hook->id) + strlen(token) + 2;
    d->dedupe_key = lb_malloc(klen);
    snprintf(d->dedupe_key, klen, "%s:%s", hook->id, token);
    d->payload = lb_strndup(req->body, req->body_len);
    yajl_val ev_data = lb_json_get(body, "data");
    const char *opp = lb_json_get_str(ev_data, "opportunityId");
    d->opportunity = opp ? lb_strdup(opp) : NULL;
    d->ignored = strcmp(event, "candidateStageChange") != 0;
    char *eid = lb_random_id("ev_", 16);
    snprintf(d->event.id, sizeof(d->event.id), "%s", eid);
    lb_free(eid);
    memcpy(d->event.tenant_id, hook->tenant_id, sizeof(d->event.tenant_id));
    d->event.source = "lever";
    d->event.type = d->ignored ? "ignored" : "stage_changed";
    d->event.dedupe_key = d->dedupe_key;
    d->event.status = d->ignored ? "ignored" : "accepted";
    d->event.opportunity_id = d->opportunity;
    d->event.payload = d->payload;
    d->event.received_at = now;
    if (!d->ignored)
        lb_api_derive_jobs(api, hook->tenant_id, d->event.id, "stage_changed", ev_data, &d->jobs,
                           &d->njobs);
    yajl_tree_free(body);

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

void lb_api_hooks_register(lb_api *api, lb_router *r)
{
    lb_metrics_declare_counter("leverbridge_webhooks_total", "Lever webhook deliveries by outcome.");
    lb_router_add(r, "POST", "/hooks/lever/{hook}", lever_hook, api);
}
