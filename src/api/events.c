/* Events and jobs of a tenant (api.md "Events and jobs"): lists newest first
 * with cursors, event replay (workflow matching again; the idempotency rules
 * of the actions still hold), job retry. Lists are read from the store: the
 * history does not live in memory. */
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

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A request waiting for the store. Owned by the handler; freed in the
 * callback (or the next step's). */
typedef struct {
    lb_store_op op;
    lb_api *api;
    lb_http_req *req;
    lb_job_rec *jobs;
    size_t njobs;
    lb_job_rec job;
} ev_ctx;

/* "<ms>_<id>" -> (ms, id); 0 or LB_EINVAL. */
static int parse_cursor(const char *c, int64_t *at, char *id, size_t size)
{
    char *us;
    long long v = strtoll(c, &us, 10);
    if (us == c || *us != '_' || us[1] == '\0' || strlen(us + 1) >= size || v <= 0)
        return LB_EINVAL;
    *at = v;
    snprintf(id, size, "%s", us + 1);
    return 0;
}

static ev_ctx *ctx_new(lb_api *api, lb_http_req *req)
{
    ev_ctx *c = LB_NEW(ev_ctx);
    c->api = api;
    c->req = req;
    c->op.data = c;
    return c;
}

/* Frees c and the jobs it holds, if any. */
static void ctx_free(void *p)
{
    ev_ctx *c = p;
    lb_job_recs_free(c->jobs, c->njobs);
    lb_job_rec_free(&c->job);
    lb_free(c);
}

static void submit(ev_ctx *c)
{
    lb_api_submit(c->api, c->req, &c->op, ctx_free, c);
}

/* A read the answer depends on failed: 503, and c is freed. 1 then. */
static int store_failed(ev_ctx *c, const lb_store_op *op)
{
    if (op->status == 0) return 0;
    lb_api_store_unavailable(c->req);
    lb_free(c);
    return 1;
}

/* ---- GET /v1/tenants/{tenant}/events ---------------------------------------- */

static void events_listed(lb_store_op *op)
{
    ev_ctx *c = op->data;
    if (store_failed(c, op)) return;
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "data");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < op->event_list.count; i++) {
        const lb_event_row *e = &op->event_list.rows[i];
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "id", e->id);
        lb_json_kv_str(g, "source", e->source);
        lb_json_kv_str(g, "type", e->type);
        lb_json_kv_time(g, "received_at", e->received_at);
        lb_json_kv_str(g, "opportunity_id", e->opportunity_id);
        lb_json_kv_str(g, "status", e->status);
        lb_json_key(g, "jobs");
        yajl_gen_array_open(g);
        for (size_t k = 0; k < e->njobs; k++)
            lb_json_str(g, e->jobs[k]);
        yajl_gen_array_close(g);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    const lb_event_row *last =
        op->event_list.count ? &op->event_list.rows[op->event_list.count - 1] : NULL;
    lb_api_next_cursor(g, op->event_list.more, last ? last->received_at : 0,
                       last ? last->id : NULL);
    yajl_gen_map_close(g);
    lb_event_rows_free(op->event_list.rows, op->event_list.count);
    lb_http_respond_json(c->req, 200, g);
    lb_free(c);
}

static void events_list(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL) return;
    size_t limit;
    char cbuf[128];
    const char *cursor;
    if (lb_api_page_params(req, &limit, cbuf, sizeof(cbuf), &cursor) != 0) return;
    ev_ctx *c = ctx_new(api, req);
    c->op.kind = LB_STORE_EVENT_LIST;
    snprintf(c->op.event_list.tenant_id, sizeof(c->op.event_list.tenant_id), "%s", t->id);
    c->op.event_list.limit = limit;
    if (cursor != NULL &&
        parse_cursor(cursor, &c->op.event_list.before_at, c->op.event_list.before_id,
                     sizeof(c->op.event_list.before_id)) != 0) {
        lb_free(c);
        lb_http_respond_error(req, 400, "invalid_request", "The cursor is not valid.", "cursor");
        return;
    }
    c->op.cb = events_listed;
    submit(c);
}

/* ---- GET /v1/tenants/{tenant}/jobs ------------------------------------------- */

static void job_json(yajl_gen g, const lb_job_rec *j)
{
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "id", j->id);
    lb_json_kv_str(g, "workflow_id", j->workflow_id);
    lb_json_kv_str(g, "event_id", j->event_id);
    lb_json_key(g, "action");
    char err[64];
    yajl_val a = j->action ? lb_json_parse(j->action, strlen(j->action), err, sizeof(err)) : NULL;
    const char *type = a != NULL ? lb_json_get_str(a, "type") : NULL;
    if (type != NULL && strcmp(type, "notify_platform") == 0) {
        /* An event to the platform: its id, time and data are internal. */
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "type", type);
        lb_json_kv_str(g, "event", lb_json_get_str(a, "event"));
        yajl_gen_map_close(g);
    } else if (a != NULL && YAJL_IS_OBJECT(a)) {
        /* The action as the workflow had it: the context is internal. */
        yajl_gen_map_open(g);
        for (size_t i = 0; i < a->u.object.len; i++) {
            if (strcmp(a->u.object.keys[i], "context") == 0) continue;
            lb_json_key(g, a->u.object.keys[i]);
            lb_json_value(g, a->u.object.values[i]);
        }
        yajl_gen_map_close(g);
    } else {
        yajl_gen_null(g);
    }
    if (a != NULL) yajl_tree_free(a);
    lb_json_kv_str(g, "opportunity_id", j->opportunity_id);
    lb_json_kv_str(g, "status", lb_job_status_name(j->status));
    lb_json_kv_int(g, "attempts", j->attempts);
    lb_json_kv_time(g, "next_run_at",
                    j->status == LB_JOB_RETRYING || j->status == LB_JOB_QUEUED ? j->next_run_at
                                                                               : 0);
    lb_json_kv_str(g, "last_error", j->last_error);
    lb_json_kv_time(g, "created_at", j->created_at);
    lb_json_kv_time(g, "updated_at", j->updated_at);
    yajl_gen_map_close(g);
}

static void jobs_listed(lb_store_op *op)
{
    ev_ctx *c = op->data;
    if (store_failed(c, op)) return;
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "data");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < op->job_list.count; i++)
        job_json(g, &op->job_list.recs[i]);
    yajl_gen_array_close(g);
    const lb_job_rec *last = op->job_list.count ? &op->job_list.recs[op->job_list.count - 1] : NULL;
    lb_api_next_cursor(g, op->job_list.more, last ? last->created_at : 0, last ? last->id : NULL);
    yajl_gen_map_close(g);
    lb_job_recs_free(op->job_list.recs, op->job_list.count);
    lb_http_respond_json(c->req, 200, g);
    lb_free(c);
}

static void jobs_list(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL) return;
    size_t limit;
    char cbuf[128], sbuf[32];
    const char *cursor;
    if (lb_api_page_params(req, &limit, cbuf, sizeof(cbuf), &cursor) != 0) return;
    int status = -1;
    const char *st = lb_api_query(req, "status", sbuf, sizeof(sbuf));
    if (st != NULL && *st != '\0' && (status = lb_job_status_parse(st)) < 0) {
        lb_http_respond_error(req, 400, "invalid_request",
                              "status must be one of queued, running, retrying, succeeded, "
                              "failed, skipped, cancelled.",
                              "status");
        return;
    }
    ev_ctx *c = ctx_new(api, req);
    c->op.kind = LB_STORE_JOB_LIST;
    snprintf(c->op.job_list.tenant_id, sizeof(c->op.job_list.tenant_id), "%s", t->id);
    c->op.job_list.limit = limit;
    c->op.job_list.status = status;
    if (cursor != NULL && parse_cursor(cursor, &c->op.job_list.before_at, c->op.job_list.before_id,
                                       sizeof(c->op.job_list.before_id)) != 0) {
        lb_free(c);
        lb_http_respond_error(req, 400, "invalid_request", "The cursor is not valid.", "cursor");
        return;
    }
    c->op.cb = jobs_listed;
    submit(c);
}

/* ---- POST .../events/{id}/replay -------------------------------------------- */

static void replay_inserted(lb_store_op *op)
{
    ev_ctx *c = op->data;
    if (op->status != 0) {
        lb_api_store_unavailable(c->req);
    } else {
        lb_jobs_add(c->api->jobs, c->jobs, c->njobs);
        yajl_gen g = lb_json_gen_new();
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "status", "accepted");
        lb_json_key(g, "jobs");
        yajl_gen_array_open(g);
        for (size_t i = 0; i < c->njobs; i++)
            lb_json_str(g, c->jobs[i].id);
        yajl_gen_array_close(g);
        yajl_gen_map_close(g);
        lb_http_respond_json(c->req, 202, g);
    }
    lb_job_recs_free(c->jobs, c->njobs);
    lb_free(c);
}

static void replay_loaded(lb_store_op *op)
{
    ev_ctx *c = op->data;
    lb_api *api = c->api;
    if (op->status == LB_ENOTFOUND) {
        lb_http_respond_error(c->req, 404, "not_found", "No such event.", "id");
        lb_free(c);
        return;
    }
    if (store_failed(c, op)) return;
    lb_event_row *e = &op->event_get.row;
    const char *trigger = NULL;
    yajl_val data = NULL, tree = NULL;
    char err[64];
    if (e->payload != NULL) tree = lb_json_parse(e->payload, strlen(e->payload), err, sizeof(err));
    if (strcmp(e->source, "lever") == 0 && strcmp(e->type, "candidateStageChange") == 0) {
        trigger = "stage_changed";
        data = lb_json_get(tree, "data");
    } else if (strcmp(e->source, "platform") == 0) {
        trigger = e->type; /* assessment_completed / assessment_expired */
        data = tree;
    }
    int rc = 0;
    if (trigger != NULL && data != NULL)
        rc = lb_workflows_derive(api->workflows, e->tenant_id, e->id, trigger, data, &c->jobs,
                                 &c->njobs);
    if (tree != NULL) yajl_tree_free(tree);
    lb_event_row_free(e);
    if (rc != 0) {
        lb_api_too_many_jobs(c->req);
        lb_free(c);
        return;
    }
    if (c->njobs == 0) {
        yajl_gen g = lb_json_gen_new();
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "status", "accepted");
        lb_json_key(g, "jobs");
        yajl_gen_array_open(g);
        yajl_gen_array_close(g);
        yajl_gen_map_close(g);
        lb_http_respond_json(c->req, 202, g);
        lb_free(c);
        return;
    }
    memset(&c->op, 0, sizeof(c->op));
    c->op.kind = LB_STORE_JOB_INSERT;
    c->op.job_insert.recs = c->jobs;
    c->op.job_insert.count = c->njobs;
    c->op.cb = replay_inserted;
    c->op.data = c;
    lb_api_submit(api, c->req, &c->op, ctx_free, c);
}

static void event_replay(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL) return;
    ev_ctx *c = ctx_new(api, req);
    c->op.kind = LB_STORE_EVENT_GET;
    snprintf(c->op.event_get.tenant_id, sizeof(c->op.event_get.tenant_id), "%s", t->id);
    snprintf(c->op.event_get.id, sizeof(c->op.event_get.id), "%s", lb_http_req_param(req, "id"));
    c->op.cb = replay_loaded;
    submit(c);
}

/* ---- POST .../jobs/{id}/retry ------------------------------------------------- */

static void retry_written(lb_store_op *op)
{
    ev_ctx *c = op->data;
    if (op->status != 0) {
        lb_api_store_unavailable(c->req);
    } else {
        lb_jobs_tenant_failed_add(c->api->jobs, c->job.tenant_id, -1);
        lb_jobs_add(c->api->jobs, &c->job, 1);
        yajl_gen g = lb_json_gen_new();
        job_json(g, &c->job);
        lb_http_respond_json(c->req, 202, g);
    }
    lb_job_rec_free(&c->job);
    lb_free(c);
}

static void retry_loaded(lb_store_op *op)
{
    ev_ctx *c = op->data;
    if (op->status == LB_ENOTFOUND) {
        lb_http_respond_error(c->req, 404, "not_found", "No such job.", "id");
        lb_free(c);
        return;
    }
    if (store_failed(c, op)) return;
    c->job = op->job_get.rec;
    if (c->job.status != LB_JOB_FAILED) {
        char msg[128];
        snprintf(msg, sizeof(msg), "Only a failed job can be retried; this one is %s.",
                 lb_job_status_name(c->job.status));
        lb_http_respond_error(c->req, 409, "not_failed", msg, NULL);
        lb_job_rec_free(&c->job);
        lb_free(c);
        return;
    }
    /* Runs again from its first unrecorded step, with a fresh age. */
    int64_t now = lb_time_now_ms();
    c->job.status = LB_JOB_QUEUED;
    c->job.next_run_at = 0;
    c->job.created_at = now; /* JOB_MAX_AGE counts from the retry */
    lb_free(c->job.last_error);
    c->job.last_error = NULL;
    memset(&c->op, 0, sizeof(c->op));
    c->op.kind = LB_STORE_JOB_UPDATE;
    c->op.job_update.rec = &c->job;
    c->op.cb = retry_written;
    c->op.data = c;
    lb_api_submit(c->api, c->req, &c->op, ctx_free, c);
}

static void job_retry(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL) return;
    ev_ctx *c = ctx_new(api, req);
    c->op.kind = LB_STORE_JOB_GET;
    snprintf(c->op.job_get.tenant_id, sizeof(c->op.job_get.tenant_id), "%s", t->id);
    snprintf(c->op.job_get.id, sizeof(c->op.job_get.id), "%s", lb_http_req_param(req, "id"));
    c->op.cb = retry_loaded;
    submit(c);
}

void lb_api_events_register(lb_api *api, lb_router *r)
{
    lb_router_add(r, "GET", "/v1/tenants/{tenant}/events", events_list, api);
    lb_router_add(r, "POST", "/v1/tenants/{tenant}/events/{id}/replay", event_replay, api);
    lb_router_add(r, "GET", "/v1/tenants/{tenant}/jobs", jobs_list, api);
    lb_router_add(r, "POST", "/v1/tenants/{tenant}/jobs/{id}/retry", job_retry, api);
}
