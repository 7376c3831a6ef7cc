/* POST /v1/tenants/{tenant}/results: assessment results from the platform
 * (api.md "Inbound: assessment results"). The body is checked in memory;
 * the invitation is looked up (its status note gets an update_status_note
 * job); then the event, that job and the jobs the tenant's workflows derive
 * are written in one durable step, and only then is the 202 sent. The same
 * result_id again is a duplicate (the store dedupes on it). */
#include "api/api.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/time.h"
#include "crypto/crypto.h"
#include "engine/jobs.h"
#include "http/response.h"
#include "state/match.h"
#include "json/json.h"
#include "state/tenants.h"
#include "store/store.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Longest accepted string of each kind (bytes). */
#define RESULT_ID_MAX 256
#define OPPORTUNITY_ID_MAX 256
#define ASSESSMENT_MAX 256
#define REPORT_URL_MAX 4096

/* A result while it is looked up and written. Owned by the handler; freed
 * in the last store callback. */
typedef struct {
    lb_store_op op;
    lb_api *api;
    lb_http_req *req;
    yajl_val body; /* the request body, until the jobs are derived */
    lb_event_rec event;
    char *payload;
    char *result_id, *opportunity, *assessment;
    const char *type; /* static */
    lb_job_rec *jobs;
    size_t njobs;
} result;

static void result_free(result *r)
{
    if (r->body != NULL) yajl_tree_free(r->body);
    lb_free(r->payload);
    lb_free(r->result_id);
    lb_free(r->opportunity);
    lb_free(r->assessment);
    lb_job_recs_free(r->jobs, r->njobs);
    lb_free(r);
}

static void result_free_cb(void *r)
{
    result_free(r);
}

static void answer(lb_http_req *req, int status, const char *what, const char *event)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "status", what);
    lb_json_kv_str(g, "event", event);
    yajl_gen_map_close(g);
    lb_http_respond_json(req, status, g);
}

/* ---- validation ------------------------------------------------------------ */

static const char *const known[] = {"result_id", "opportunity_id", "assessment", "status",
                                    "score",     "max_score",      "report_url", "completed_at"};

/* A required or optional string field, 1..max bytes. */
static int check_str(yajl_val body, const char *key, size_t max, int required, char *msg,
                     size_t mlen)
{
    yajl_val v = lb_json_get(body, key);
    if (v == NULL || (!required && YAJL_IS_NULL(v))) {
        if (!required) return 0;
        snprintf(msg, mlen, "%s is required.", key);
        return LB_EINVAL;
    }
    if (!YAJL_IS_STRING(v) || v->u.string[0] == '\0') {
        snprintf(msg, mlen, "%s must be a non-empty string.", key);
        return LB_EINVAL;
    }
    if (strlen(v->u.string) > max) {
        snprintf(msg, mlen, "%s is longer than %zu bytes.", key, max);
        return LB_EINVAL;
    }
    return 0;
}

static int check_number(yajl_val body, const char *key, int required, char *msg, size_t mlen)
{
    yajl_val v = lb_json_get(body, key);
    if (v == NULL || YAJL_IS_NULL(v)) {
        if (!required) return 0;
        snprintf(msg, mlen, "%s is required when status is \"completed\".", key);
        return LB_EINVAL;
    }
    if (!YAJL_IS_NUMBER(v) || !isfinite(YAJL_GET_DOUBLE(v))) {
        snprintf(msg, mlen, "%s must be a number.", key);
        return LB_EINVAL;
    }
    return 0;
}

/* 0, or LB_EINVAL with the field at fault and a sentence. */
static int validate(yajl_val body, const char **field, char *msg, size_t mlen)
{
    for (size_t i = 0; i < body->u.object.len; i++) {
        size_t k;
        for (k = 0; k < LB_COUNTOF(known); k++)
            if (strcmp(body->u.object.keys[i], known[k]) == 0) break;
        if (k == LB_COUNTOF(known)) {
            *field = body->u.object.keys[i];
            snprintf(msg, mlen, "Unknown field \"%.64s\".", body->u.object.keys[i]);
            return LB_EINVAL;
        }
    }
    static const struct {
        const char *key;
        size_t max;
        int required;
    } strs[] = {{"result_id", RESULT_ID_MAX, 1},
                {"opportunity_id", OPPORTUNITY_ID_MAX, 1},
                {"assessment", ASSESSMENT_MAX, 1},
                {"report_url", REPORT_URL_MAX, 0}};
    for (size_t i = 0; i < LB_COUNTOF(strs); i++) {
        if (check_str(body, strs[i].key, strs[i].max, strs[i].required, msg, mlen) != 0) {
            *field = strs[i].key;
            return LB_EINVAL;
        }
    }
    const char *status = lb_json_get_str(body, "status");
    if (status == NULL || (strcmp(status, "completed") != 0 && strcmp(status, "expired") != 0)) {
        *field = "status";
        snprintf(msg, mlen, "status must be \"completed\" or \"expired\".");
        return LB_EINVAL;
    }
    int completed = strcmp(status, "completed") == 0;
    static const char *const nums[] = {"score", "max_score"};
    for (size_t i = 0; i < LB_COUNTOF(nums); i++) {
        if (check_number(body, nums[i], completed, msg, mlen) != 0) {
            *field = nums[i];
            return LB_EINVAL;
        }
    }
    yajl_val at = lb_json_get(body, "completed_at");
    int64_t ms;
    if (at != NULL && !YAJL_IS_NULL(at) &&
        (!YAJL_IS_STRING(at) || lb_time_parse(at->u.string, strlen(at->u.string), &ms) != 0)) {
        *field = "completed_at";
        snprintf(msg, mlen,
                 "completed_at must be an RFC 3339 time on a real calendar date, "
                 "not before 1970.");
        return LB_EINVAL;
    }
    return 0;
}

/* ---- jobs ------------------------------------------------------------------ */

/* The update_status_note job of the invitation: the action carries the
 * outcome as the workflows' jobs do ("context"). */
static void status_note_job(result *r, lb_job_rec *j, int64_t now)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "type", "update_status_note");
    lb_json_key(g, "context");
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "event", r->type);
    static const char *const keys[] = {"assessment", "score",        "max_score", "report_url",
                                       "result_id",  "completed_at", "status"};
    for (size_t i = 0; i < LB_COUNTOF(keys); i++) {
        yajl_val v = lb_json_get(r->body, keys[i]);
        if (v != NULL && !YAJL_IS_NULL(v)) {
            lb_json_key(g, keys[i]);
            lb_json_value(g, v);
        }
    }
    yajl_gen_map_close(g);
    yajl_gen_map_close(g);
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(g, &buf, &len);
    memset(j, 0, sizeof(*j));
    char *id = lb_sortable_id("job_", lb_time_now_ms(), 12);
    snprintf(j->id, sizeof(j->id), "%s", id);
    lb_free(id);
    snprintf(j->tenant_id, sizeof(j->tenant_id), "%s", r->event.tenant_id);
    j->event_id = lb_strdup(r->event.id);
    j->action = lb_strndup((const char *)buf, len);
    j->opportunity_id = lb_strdup(r->opportunity);
    j->status = LB_JOB_QUEUED;
    j->created_at = now;
    yajl_gen_free(g);
}

/* ---- store ----------------------------------------------------------------- */

static void written(lb_store_op *op)
{
    result *r = op->data;
    lb_api *api = r->api;
    if (op->status == LB_ENOTFOUND) {
        lb_http_respond_error(r->req, 404, "not_found", "No such tenant.", "tenant");
    } else if (op->status != 0) {
        lb_warn("results", "result for tenant %s not stored: %s", r->event.tenant_id,
                lb_strerror(op->status));
        lb_api_store_unavailable(r->req);
    } else if (op->event_insert.duplicate) {
        answer(r->req, 200, "duplicate", op->event_insert.existing_id);
    } else {
        if (r->njobs > 0) lb_jobs_add(api->jobs, r->jobs, r->njobs);
        answer(r->req, 202, "accepted", r->event.id);
    }
    result_free(r);
}

static void invitation_read(lb_store_op *op)
{
    result *r = op->data;
    lb_api *api = r->api;
    int st = op->status;
    if (st == 0) lb_invitation_rec_free(&op->invitation_get.rec);
    if (st != 0 && st != LB_ENOTFOUND) {
        lb_api_store_unavailable(r->req);
        result_free(r);
        return;
    }
    /* One chain: the status note first, then the workflows' jobs. An
     * invitation whose note is not written yet still gets the job: it waits
     * for the note while the send_assessment job may still write it. */
    int64_t now = lb_time_now_ms();
    lb_job_rec *derived = NULL;
    size_t nderived = 0;
    if (lb_workflows_derive(api->workflows, r->event.tenant_id, r->event.id, r->type, r->body,
                            &derived, &nderived) != 0) {
        lb_api_too_many_jobs(r->req);
        result_free(r);
        return;
    }
    size_t own = st == 0 ? 1 : 0;
    r->njobs = own + nderived;
    if (r->njobs > 0) {
        r->jobs = lb_calloc(r->njobs, sizeof(lb_job_rec));
        if (own) status_note_job(r, &r->jobs[0], now);
        if (nderived > 0) memcpy(r->jobs + own, derived, nderived * sizeof(lb_job_rec));
        for (size_t i = 0; i < r->njobs; i++)
            r->jobs[i].seq = (int)i;
    }
    lb_free(derived); /* its records' strings now belong to r->jobs */
    yajl_tree_free(r->body);
    r->body = NULL;

    memset(&r->op, 0, sizeof(r->op));
    r->op.kind = LB_STORE_EVENT_INSERT;
    r->op.cb = written;
    r->op.data = r;
    r->op.event_insert.event = &r->event;
    r->op.event_insert.jobs = r->jobs;
    r->op.event_insert.njobs = r->njobs;
    lb_api_submit(api, r->req, &r->op, result_free_cb, r);
}

/* ---- route ----------------------------------------------------------------- */

static void results_post(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, LB_API_ADMIN_ONLY);
    if (t == NULL) return;
    yajl_val body = lb_api_json_body(req);
    if (body == NULL) return;
    const char *field = NULL;
    char msg[256];
    if (validate(body, &field, msg, sizeof(msg)) != 0) {
        lb_http_respond_error(req, 400, "invalid_request", msg, field);
        yajl_tree_free(body);
        return;
    }
    result *r = LB_NEW(result);
    r->api = api;
    r->req = req;
    r->body = body;
    r->result_id = lb_strdup(lb_json_get_str(body, "result_id"));
    r->opportunity = lb_strdup(lb_json_get_str(body, "opportunity_id"));
    r->assessment = lb_strdup(lb_json_get_str(body, "assessment"));
    r->type = strcmp(lb_json_get_str(body, "status"), "completed") == 0 ? "assessment_completed"
                                                                        : "assessment_expired";
    r->payload = lb_strndup(req->body, req->body_len);
    char *eid = lb_sortable_id("ev_", lb_time_now_ms(), 12);
    snprintf(r->event.id, sizeof(r->event.id), "%s", eid);
    lb_free(eid);
    snprintf(r->event.tenant_id, sizeof(r->event.tenant_id), "%s", t->id);
    r->event.source = "platform";
    r->event.type = r->type;
    r->event.dedupe_key = r->result_id;
    r->event.status = "accepted";
    r->event.opportunity_id = r->opportunity;
    r->event.payload = r->payload;
    r->event.received_at = lb_time_now_ms();

    r->op.kind = LB_STORE_INVITATION_GET;
    r->op.cb = invitation_read;
    r->op.data = r;
    snprintf(r->op.invitation_get.tenant_id, sizeof(r->op.invitation_get.tenant_id), "%s", t->id);
    r->op.invitation_get.opportunity_id = r->opportunity;
    r->op.invitation_get.assessment = r->assessment;
    lb_api_submit(api, req, &r->op, result_free_cb, r);
}

void lb_api_results_register(lb_api *api, lb_router *r)
{
    lb_router_add(r, "POST", "/v1/tenants/{tenant}/results", results_post, api);
}
