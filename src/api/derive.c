/* From an event to the jobs the tenant's workflows derive from it, matched
 * in memory. Each action becomes one job whose `action` is the workflow's
 * action plus a "context" object with what the event knows; the jobs of one
 * event run in order (seq). A workflow with a postings filter starts with a
 * check_postings job that reads the opportunity and, when it applied to none
 * of the postings, skips the workflow's other jobs. */
#include "api/api.h"

#include "core/alloc.h"
#include "core/time.h"
#include "crypto/crypto.h"
#include "json/json.h"
#include "state/workflows.h"
#include "store/store.h"

#include <string.h>

#define MAX_JOBS 200

typedef struct {
    lb_job_rec *recs;
    size_t n;
    const char *tenant, *event_id, *opportunity;
    int64_t now;
} builder;

static void add_job(builder *b, const lb_workflow *w, yajl_gen action)
{
    if (b->n == MAX_JOBS)
        return;
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(action, &buf, &len);
    lb_job_rec *r = &b->recs[b->n];
    memset(r, 0, sizeof(*r));
    lb_sortable_id_buf(r->id, sizeof(r->id), "job_", lb_time_now_ms(), 12);
    snprintf(r->tenant_id, sizeof(r->tenant_id), "%s", b->tenant);
    r->event_id = lb_strdup(b->event_id);
    r->workflow_id = lb_strdup(w->id);
    r->action = lb_strndup((const char *)buf, len);
    r->opportunity_id = b->opportunity ? lb_strdup(b->opportunity) : NULL;
    r->seq = (int)b->n;
    r->status = LB_JOB_QUEUED;
    r->created_at = b->now;
    b->n++;
}

/* The workflow's actions, each with the context. */
static void add_actions(builder *b, const lb_workflow *w, yajl_val context)
{
    if (w->postings != NULL) {
        yajl_gen g = lb_json_gen_new();
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "type", "check_postings");
        lb_json_key(g, "postings");
        lb_json_value(g, w->postings);
        yajl_gen_map_close(g);
        add_job(b, w, g);
        yajl_gen_free(g);
    }
    for (size_t i = 0; i < w->actions->u.array.len; i++) {
        yajl_val a = w->actions->u.array.values[i];
        yajl_gen g = lb_json_gen_new();
        yajl_gen_map_open(g);
        for (size_t k = 0; k < a->u.object.len; k++) {
            lb_json_key(g, a->u.object.keys[k]);
            lb_json_value(g, a->u.object.values[k]);
        }
        lb_json_key(g, "context");
        lb_json_value(g, context);
        yajl_gen_map_close(g);
        add_job(b, w, g);
        yajl_gen_free(g);
    }
}

static int stage_matches(const lb_workflow *w, yajl_val data)
{
    const char *to = lb_json_get_str(data, "toStageId");
    const char *from = lb_json_get_str(data, "fromStageId");
    if (w->trigger != LB_TRIGGER_STAGE_CHANGED || to == NULL || strcmp(w->to_stage, to) != 0)
        return 0;
    return w->from_stage == NULL || (from != NULL && strcmp(w->from_stage, from) == 0);
}

static int result_matches(const lb_workflow *w, lb_trigger trigger, yajl_val data)
{
    if (w->trigger != trigger)
        return 0;
    const char *assessment = lb_json_get_str(data, "assessment");
    if (w->assessment != NULL && (assessment == NULL || strcmp(w->assessment, assessment) != 0))
        return 0;
    if (trigger == LB_TRIGGER_ASSESSMENT_COMPLETED && (w->has_min || w->has_max)) {
        yajl_val sv = lb_json_get(data, "score");
        if (sv == NULL || !YAJL_IS_NUMBER(sv))
            return 0;
        double score = YAJL_GET_DOUBLE(sv);
        if ((w->has_min && score < w->min_score) || (w->has_max && score > w->max_score))
            return 0;
    }
    return 1;
}

void lb_api_derive_jobs(lb_api *api, const char *tenant, const char *event_id,
                        const char *trigger, yajl_val data, lb_job_rec **jobs, size_t *n)
{
    *jobs = NULL;
    *n = 0;
    const lb_workflow *first = lb_workflows_of(api->workflows, tenant);
    if (first == NULL || data == NULL)
        return;
    int stage = strcmp(trigger, "stage_changed") == 0;
    lb_trigger t = stage                                          ? LB_TRIGGER_STAGE_CHANGED
                   : strcmp(trigger, "assessment_completed") == 0 ? LB_TRIGGER_ASSESSMENT_COMPLETED
                                                                  : LB_TRIGGER_ASSESSMENT_EXPIRED;
    builder b = {.recs = lb_calloc(MAX_JOBS, sizeof(lb_job_rec)),
                 .tenant = tenant,
                 .event_id = event_id,
                 .opportunity = lb_json_get_str(data, stage ? "opportunityId" : "opportunity_id"),
                 .now = lb_time_now_ms()};
    /* The context every job of this event carries. */
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "event", trigger);
    if (stage) {
        lb_json_kv_str(g, "to_stage", lb_json_get_str(data, "toStageId"));
        lb_json_kv_str(g, "from_stage", lb_json_get_str(data, "fromStageId"));
    } else {
        static const char *const keys[] = {"assessment", "score",        "max_score", "report_url",
                                           "result_id",  "completed_at", "status"};
        for (size_t i = 0; i < LB_COUNTOF(keys); i++) {
            yajl_val v = lb_json_get(data, keys[i]);
            if (v != NULL) {
                lb_json_key(g, keys[i]);
                lb_json_value(g, v);
            }
        }
    }
    yajl_gen_map_close(g);
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(g, &buf, &len);
    char err[64];
    yajl_val context = lb_json_parse((const char *)buf, len, err, sizeof(err));
    yajl_gen_free(g);

    for (const lb_workflow *w = first; w != NULL; w = w->next) {
        if (!w->enabled)
            continue;
        if (stage ? stage_matches(w, data) : result_matches(w, t, data))
            add_actions(&b, w, context);
    }
    if (context != NULL)
        yajl_tree_free(context);
    if (b.n == 0) {
        lb_free(b.recs);
        return;
    }
    *jobs = b.recs;
    *n = b.n;
}

void lb_api_jobs_free(lb_job_rec *jobs, size_t n)
{
    lb_job_recs_free(jobs, n);
}
