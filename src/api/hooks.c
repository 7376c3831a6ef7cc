/* POST /hooks/lever/{hook id}: Lever's webhook deliveries. The hook id and
 * the body's signature authenticate; everything is checked in memory, then
 * the event and the jobs it derives are written in one durable step, and
 * only then is the 200 sent. */
#include "api/api.h"

#include "cluster/cluster.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/time.h"
#include "crypto/crypto.h"
#include "engine/jobs.h"
#include "engine/reconcile.h"
#include "http/response.h"
#include "json/json.h"
#include "state/connections.h"
#include "state/match.h"
#include "state/missed.h"
#include "state/stats.h"
#include "store/store.h"

#include <stdio.h>
#include <string.h>

#define MAX_CLOCK_SKEW_MS (5 * 60 * 1000)

/* A delivery while its event is being written. Owned by the handler; freed
 * in the store callback. One allocation: the strings the event points to
 * (dedupe key, payload, opportunity, type) follow the struct in `str`. */
typedef struct {
    lb_store_op op;
    lb_api *api;
    lb_http_req *req;
    lb_event_rec event;
    char hook_id[LB_HOOK_ID_MAX + 1];
    lb_job_rec *jobs;
    size_t njobs;
    int ignored;
    char str[];
} delivery;

/* webhooks_total's results; the labels are spelled out so that counting
 * formats nothing. */
typedef enum {
    R_ACCEPTED,
    R_IGNORED,
    R_DUPLICATE,
    R_INVALID,
    R_INVALID_SIGNATURE,
    R_STALE,
    R_NOT_FOUND,
    R_UNAVAILABLE,
    R_COUNT,
} result;

static const char *const result_labels[R_COUNT] = {
    [R_ACCEPTED] = "result=\"accepted\"",
    [R_IGNORED] = "result=\"ignored\"",
    [R_DUPLICATE] = "result=\"duplicate\"",
    [R_INVALID] = "result=\"invalid\"",
    [R_INVALID_SIGNATURE] = "result=\"invalid_signature\"",
    [R_STALE] = "result=\"stale\"",
    [R_NOT_FOUND] = "result=\"not_found\"",
    [R_UNAVAILABLE] = "result=\"unavailable\"",
};

/* Series pointers live until lb_metrics_reset, which runs after the loop;
 * a series is created on its first use, as before. */
static void count(result r)
{
    static lb_metric *series[R_COUNT];
    if (series[r] == NULL)
        series[r] = lb_metrics_counter("leverbridge_webhooks_total",
                                       "Lever webhook deliveries by outcome.", result_labels[r]);
    lb_metric_add(series[r], 1);
}

/* tenant: the hook's, NULL for an unknown hook. */
static void reject(lb_api *api, const char *tenant, lb_http_req *req, int status, result r,
                   const char *code, const char *message, const char *field)
{
    count(r);
    lb_stats_add(api->stats, tenant, LB_STAT_REFUSED, lb_time_now_ms());
    lb_http_respond_error(req, status, code, message, field);
}

/* Copies s[0..n) to p, then `end`; returns the byte after. */
static char *put(char *p, const char *s, size_t n, char end)
{
    memcpy(p, s, n);
    p[n] = end;
    return p + n + 1;
}

static void delivery_free(delivery *d)
{
    lb_job_recs_free(d->jobs, d->njobs);
    lb_free(d);
}

/* {"status":...,"event":...}: built directly, one allocation, as it is
 * written for every delivery. */
static void answer(lb_http_req *req, const char *status, const char *event)
{
    lb_strbuf b;
    lb_strbuf_init(&b, 1024);
    lb_strbuf_cat(&b, "{\"status\":");
    lb_strbuf_json_str(&b, status, strlen(status));
    if (event != NULL) {
        lb_strbuf_cat(&b, ",\"event\":");
        lb_strbuf_json_str(&b, event, strlen(event));
    }
    lb_strbuf_cat(&b, "}");
    size_t len;
    char *body = lb_strbuf_steal(&b, &len);
    lb_http_respond(req, 200, "application/json", NULL, body, len, lb_free, body);
}

static void written(lb_store_op *op)
{
    delivery *d = op->data;
    lb_api *api = d->api;
    if (op->status != 0) {
        lb_warn("hooks", "delivery for hook %s not stored: %s", d->hook_id,
                lb_strerror(op->status));
        reject(api, d->event.tenant_id, d->req, 503, R_UNAVAILABLE, "unavailable",
               "The event could not be stored; Lever will retry.", NULL);
    } else if (op->event_insert.duplicate) {
        count(R_DUPLICATE);
        lb_stats_add(api->stats, d->event.tenant_id, LB_STAT_DUPLICATE, lb_time_now_ms());
        answer(d->req, "duplicate", op->event_insert.existing_id);
    } else {
        lb_conns_hook_delivered(api->conns, d->hook_id, d->event.received_at);
        if (d->njobs > 0) lb_jobs_add(api->jobs, d->jobs, d->njobs);
        count(d->ignored ? R_IGNORED : R_ACCEPTED);
        if (!d->ignored)
            lb_stats_add(api->stats, d->event.tenant_id, LB_STAT_ACCEPTED, lb_time_now_ms());
        answer(d->req, d->ignored ? "ignored" : "accepted", d->ignored ? NULL : d->event.id);
    }
    delivery_free(d);
}

static void lever_hook(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const char *id = lb_http_req_param(req, "hook");
    const lb_hook *hook = id ? lb_conns_hook(api->conns, id) : NULL;
    if (hook == NULL || hook->signature_token == NULL) {
        reject(api, NULL, req, 404, R_NOT_FOUND, "not_found", "No such hook.", NULL);
        return;
    }
    lb_lever_delivery dl;
    const char *field;
    switch (lb_lever_delivery_parse(req->body, req->body_len, hook->signature_token, &dl, &field)) {
    case LB_DELIVERY_OK:
        break;
    case LB_DELIVERY_NOT_JSON:
        reject(api, hook->tenant_id, req, 400, R_INVALID, "invalid_json",
               "The body is not a JSON object.", NULL);
        return;
    case LB_DELIVERY_MISSING: {
        char msg[96];
        snprintf(msg, sizeof(msg), "The delivery has no valid \"%s\".", field);
        reject(api, hook->tenant_id, req, 400, R_INVALID, "invalid_request", msg, field);
        return;
    }
    case LB_DELIVERY_BAD_SIGNATURE:
        reject(api, hook->tenant_id, req, 401, R_INVALID_SIGNATURE, "invalid_signature",
               "The signature does not match this hook's signature token.", NULL);
        return;
    }
    int64_t now = lb_time_now_ms();
    if (dl.triggered_ms < now - api->cfg->replay_window_ms) {
        yajl_tree_free(dl.tree);
        reject(api, hook->tenant_id, req, 400, R_STALE, "stale_event",
               "triggeredAt is older than the replay window.", "triggeredAt");
        return;
    }
    /* Lever signs token || triggeredAt with no separator: a token's last
     * digits could move into triggeredAt with the signature still valid.
     * Such a moved value lies far in the future; refuse anything beyond a
     * clock skew, so a captured delivery cannot pass for a new one. */
    if (dl.triggered_ms > now + MAX_CLOCK_SKEW_MS) {
        yajl_tree_free(dl.tree);
        reject(api, hook->tenant_id, req, 400, R_INVALID, "invalid_request",
               "triggeredAt is in the future.", "triggeredAt");
        return;
    }

    /* One allocation: the strings the event points to follow the struct. */
    size_t typelen = strnlen(dl.event, 64);
    /* A change that a reconciliation pass may have made an event of
     * already (store.h, event_insert.stage_id): on one process, only
     * checked while the tenant's passes made one recently, so ingest pays
     * nothing otherwise. With several replicas always: the passes run on
     * the tenant's lease holder, and this replica's ring does not hear of
     * them (its "started less than a window ago" hid that in the tests). */
    const char *to_stage = lb_json_get_str(dl.data, "toStageId");
    int shared = api->cluster != NULL && lb_cluster_enabled(api->cluster);
    int check_stage =
        to_stage != NULL && dl.opportunity_id != NULL && api->missed != NULL &&
        strcmp(dl.event, "candidateStageChange") == 0 &&
        (shared || lb_missed_recent(api->missed, hook->tenant_id, now, LB_RECONCILE_WINDOW_MS));
    size_t room = strlen(hook->id) + 1 + strlen(dl.token) + 1 + req->body_len + 1 +
                  (dl.opportunity_id ? strlen(dl.opportunity_id) + 1 : 0) + typelen + 1 +
                  (check_stage ? strlen(to_stage) + 1 : 0);
    delivery *d = lb_calloc(1, sizeof(*d) + room);
    d->api = api;
    d->req = req;
    snprintf(d->hook_id, sizeof(d->hook_id), "%s", hook->id);
    char *p = d->str;
    d->event.dedupe_key = p;
    p = put(p, hook->id, strlen(hook->id), ':');
    p = put(p, dl.token, strlen(dl.token), '\0');
    d->event.payload = p;
    p = put(p, req->body, req->body_len, '\0');
    if (dl.opportunity_id != NULL) {
        d->event.opportunity_id = p;
        p = put(p, dl.opportunity_id, strlen(dl.opportunity_id), '\0');
    }
    d->event.type = p; /* Lever's event name */
    p = put(p, dl.event, typelen, '\0');
    if (check_stage) {
        d->op.event_insert.stage_id = p;
        d->op.event_insert.stage_window_ms = LB_RECONCILE_WINDOW_MS;
        put(p, to_stage, strlen(to_stage), '\0');
    }
    d->ignored = strcmp(dl.event, "candidateStageChange") != 0;
    lb_sortable_id_buf(d->event.id, sizeof(d->event.id), "ev_", lb_time_now_ms(), 12);
    memcpy(d->event.tenant_id, hook->tenant_id, sizeof(d->event.tenant_id));
    d->event.source = "lever";
    d->event.status = d->ignored ? "ignored" : "accepted";
    d->event.received_at = now;
    int rc = d->ignored ? 0
                        : lb_workflows_derive(api->workflows, hook->tenant_id, d->event.id,
                                              "stage_changed", dl.data, &d->jobs, &d->njobs);
    yajl_tree_free(dl.tree);
    if (rc != 0) {
        delivery_free(d);
        count(R_UNAVAILABLE);
        lb_stats_add(api->stats, hook->tenant_id, LB_STAT_REFUSED, now);
        lb_api_too_many_jobs(req);
        return;
    }

    d->op.kind = LB_STORE_EVENT_INSERT;
    d->op.cb = written;
    d->op.data = d;
    d->op.event_insert.event = &d->event;
    d->op.event_insert.jobs = d->jobs;
    d->op.event_insert.njobs = d->njobs;
    d->op.event_insert.hook_id = d->hook_id;
    if (lb_store_submit(api->store, &d->op) != 0) {
        delivery_free(d);
        reject(api, hook->tenant_id, req, 503, R_UNAVAILABLE, "unavailable",
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
    lb_metrics_declare_counter("leverbridge_webhooks_total",
                               "Lever webhook deliveries by outcome.");
    lb_router_add(r, "POST", "/hooks/lever/{hook}", lever_hook, api);
}
