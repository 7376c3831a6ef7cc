#include "engine/notify.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/time.h"
#include "crypto/crypto.h"
#include "json/json.h"
#include "platform/platform.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#define URL_MAX 2048
#define ERR_MAX 512
/* A delivery's whole call, connect included. */
#define CALL_TIMEOUT_MS 15000

void lb_notify_rec(lb_job_rec *rec, const char *tenant, const char *type, const char *data,
                   int64_t created_at, const char *event_id)
{
    memset(rec, 0, sizeof(*rec));
    lb_sortable_id_buf(rec->id, sizeof(rec->id), "job_", created_at, 12);
    snprintf(rec->tenant_id, sizeof(rec->tenant_id), "%s", tenant);
    char id[LB_NOTIFY_ID_MAX + 1];
    if (event_id != NULL)
        snprintf(id, sizeof(id), "%s", event_id);
    else
        lb_sortable_id_buf(id, sizeof(id), "pe_", created_at, 12);
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "type", "notify_platform");
    lb_json_kv_str(g, "event", type);
    lb_json_kv_str(g, "id", id);
    lb_json_kv_time(g, "created_at", created_at);
    lb_json_key(g, "data");
    char err[64];
    yajl_val v = data ? lb_json_parse(data, strlen(data), err, sizeof(err)) : NULL;
    if (v != NULL && YAJL_IS_OBJECT(v)) {
        lb_json_value(g, v);
    } else {
        if (data != NULL)
            lb_error("notify", "tenant=%s %s: data is not a JSON object, sent as {}", tenant, type);
        yajl_gen_map_open(g);
        yajl_gen_map_close(g);
    }
    if (v != NULL) yajl_tree_free(v);
    yajl_gen_map_close(g);
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(g, &buf, &len);
    rec->action = lb_malloc(len + 1);
    memcpy(rec->action, buf, len);
    rec->action[len] = '\0';
    yajl_gen_free(g);
    rec->status = LB_JOB_QUEUED;
    rec->created_at = created_at;
    rec->updated_at = created_at;
}

char *lb_notify_body(yajl_val action, const char *tenant, size_t *len)
{
    const char *type = lb_json_get_str(action, "event");
    const char *at = lb_json_get_str(action, "created_at");
    yajl_val data = lb_json_get_obj(action, "data");
    if (type == NULL || at == NULL || data == NULL) return NULL;
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "type", type);
    lb_json_kv_str(g, "tenant_id", tenant);
    lb_json_kv_str(g, "created_at", at);
    lb_json_key(g, "data");
    lb_json_value(g, data);
    yajl_gen_map_close(g);
    const unsigned char *buf;
    size_t n;
    yajl_gen_get_buf(g, &buf, &n);
    char *out = lb_malloc(n + 1);
    memcpy(out, buf, n);
    out[n] = '\0';
    yajl_gen_free(g);
    *len = n;
    return out;
}

/* ---- the kind ------------------------------------------------------------ */

/* leverbridge_platform_events_total{type,result}; result is delivered,
 * retried or failed. Series live until lb_metrics_reset. */
static void count(const char *type, const char *result)
{
    char labels[128];
    snprintf(labels, sizeof(labels), "type=\"%.*s\",result=\"%s\"", LB_NOTIFY_TYPE_MAX,
             type ? type : "unknown", result);
    lb_metric_add(lb_metrics_counter("leverbridge_platform_events_total",
                                     "Events sent to the platform, by type and result.", labels),
                  1);
}

static const char *type_of(lb_job *job)
{
    return lb_json_get_str(lb_job_action(job), "event");
}

static void delivered(lb_job *job, const lb_http_response *res)
{
    const char *type = type_of(job);
    if (res->status >= 200 && res->status < 300) {
        count(type, "delivered");
        lb_debug("notify", "tenant=%s job=%s: %s delivered", lb_job_tenant(job), lb_job_id(job),
                 type);
        lb_job_finish(job, LB_JOB_SUCCEEDED, NULL);
        return;
    }
    char msg[ERR_MAX];
    if (res->status == 0)
        snprintf(msg, sizeof(msg), "the events endpoint is unreachable: %s",
                 res->error_text ? res->error_text : "network error");
    else
        snprintf(msg, sizeof(msg), "the events endpoint answered %d: %.200s", res->status,
                 res->body ? res->body : "");
    int transient = (res->status == 0 && !res->tls_setup) || res->status >= 500 ||
                    res->status == 408 || res->status == 429;
    if (!transient) {
        count(type, "failed");
        lb_job_finish(job, LB_JOB_FAILED, msg);
        return;
    }
    const lb_jobs_config *cfg = lb_job_config(job);
    count(type,
          lb_time_now_ms() - lb_job_created_at(job) >= cfg->max_age_ms ? "failed" : "retried");
    lb_job_retry(job, msg); /* fails it past JOB_MAX_AGE */
}

static void notify_run(lb_job *job)
{
    const lb_jobs_config *cfg = lb_job_config(job);
    yajl_val action = lb_job_action(job);
    const char *id = lb_json_get_str(action, "id");
    if (cfg->events_url == NULL || cfg->events_key_len == 0) {
        lb_job_finish(job, LB_JOB_FAILED, "platform events are not configured");
        return;
    }
    size_t blen = 0;
    char *body = id ? lb_notify_body(action, lb_job_tenant(job), &blen) : NULL;
    if (body == NULL) {
        lb_job_finish(job, LB_JOB_FAILED, "the event's record is unreadable");
        return;
    }
    int64_t ts = lb_time_now_ms() / 1000;
    char sig[LB_PLATFORM_SIG_SIZE];
    lb_platform_sign(cfg->events_key, cfg->events_key_len, id, ts, body, blen, sig);
    char h_id[32 + LB_NOTIFY_ID_MAX], h_ts[48], h_sig[32 + LB_PLATFORM_SIG_SIZE];
    snprintf(h_id, sizeof(h_id), "webhook-id: %s", id);
    snprintf(h_ts, sizeof(h_ts), "webhook-timestamp: %" PRId64, ts);
    snprintf(h_sig, sizeof(h_sig), "webhook-signature: %s", sig);
    const char *headers[] = {"Content-Type: application/json", h_id, h_ts, h_sig, NULL};
    lb_http_request req = {.method = "POST",
                           .url = cfg->events_url,
                           .headers = headers,
                           .body = body,
                           .body_len = blen,
                           .timeout_ms = CALL_TIMEOUT_MS};
    lb_job_http(job, &req, delivered); /* curl copied what it needs */
    lb_free(body);
}

const lb_job_kind lb_notify_kinds[] = {
    {"notify_platform", notify_run, LB_JOB_KIND_NOTIFY},
};
const size_t lb_notify_nkinds = sizeof(lb_notify_kinds) / sizeof(lb_notify_kinds[0]);
