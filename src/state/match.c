/* Matching an event against the tenant's workflows: see match.h. */
#include "state/match.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/time.h"
#include "crypto/crypto.h"
#include "json/json.h"

#include <string.h>

typedef struct {
    lb_job_rec *recs;
    size_t n, cap;
    int over; /* more than LB_EVENT_JOBS_MAX */
    const char *tenant, *event_id, *opportunity;
    int64_t now;
} builder;

static void add_job(builder *b, const lb_workflow *w, yajl_gen action, int64_t due)
{
    if (b->over || b->n == LB_EVENT_JOBS_MAX) {
        b->over = 1;
        return;
    }
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 4;
        if (b->cap > LB_EVENT_JOBS_MAX) b->cap = LB_EVENT_JOBS_MAX;
        b->recs = lb_realloc(b->recs, b->cap * sizeof(*b->recs));
    }
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
    r->next_run_at = due;
    r->created_at = b->now;
    b->n++;
}

/* The context object into g; a delayed workflow's jobs carry their due time
 * as "due_at" (ms), from which JOB_MAX_AGE counts (engine/jobs.c). */
static void put_context(yajl_gen g, yajl_val context, int64_t due)
{
    lb_json_key(g, "context");
    yajl_gen_map_open(g);
    for (size_t k = 0; context != NULL && YAJL_IS_OBJECT(context) && k < context->u.object.len;
         k++) {
        lb_json_key(g, context->u.object.keys[k]);
        lb_json_value(g, context->u.object.values[k]);
    }
    if (due > 0) lb_json_kv_int(g, "due_at", due);
    yajl_gen_map_close(g);
}

/* The workflow's actions, each with the context, after its gate: a
 * delayed workflow starts with check_stage (the opportunity read again when
 * due: still in to_stage, not archived, and, with postings, applied to one
 * of them), an undelayed one with postings with check_postings, unless the
 * caller knows its postings match (postings_checked). Every job of a
 * delayed workflow is due at the event's time + the delay. */
static void add_actions(builder *b, const lb_workflow *w, yajl_val context, int postings_checked)
{
    int64_t due = w->delay_ms > 0 ? b->now + w->delay_ms : 0;
    if (w->delay_ms > 0 || (w->postings != NULL && !postings_checked)) {
        yajl_gen g = lb_json_gen_new();
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "type", w->delay_ms > 0 ? "check_stage" : "check_postings");
        if (w->delay_ms > 0) lb_json_kv_str(g, "to_stage", w->to_stage);
        if (w->postings != NULL) {
            lb_json_key(g, "postings");
            lb_json_value(g, w->postings);
        }
        if (due > 0) put_context(g, NULL, due);
        yajl_gen_map_close(g);
        add_job(b, w, g, due);
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
        put_context(g, context, due);
        yajl_gen_map_close(g);
        add_job(b, w, g, due);
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
    if (w->trigger != trigger) return 0;
    const char *assessment = lb_json_get_str(data, "assessment");
    if (w->assessment != NULL && (assessment == NULL || strcmp(w->assessment, assessment) != 0))
        return 0;
    if (trigger == LB_TRIGGER_ASSESSMENT_COMPLETED && (w->has_min || w->has_max)) {
        yajl_val sv = lb_json_get(data, "score");
        if (sv == NULL || !YAJL_IS_NUMBER(sv)) return 0;
        double score = YAJL_GET_DOUBLE(sv);
        if ((w->has_min && score < w->min_score) || (w->has_max && score > w->max_score)) return 0;
    }
    return 1;
}

/* The context every job of an event carries (NULL when it cannot be
 * made); the caller frees it. */
static yajl_val make_context(int stage, const char *trigger, yajl_val data)
{
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
    return context;
}

static int builder_end(builder *b, lb_job_rec **jobs, size_t *n)
{
    if (b->over) {
        lb_job_recs_free(b->recs, b->n);
        return LB_ETOOBIG;
    }
    *jobs = b->recs;
    *n = b->n;
    return 0;
}

int lb_workflows_derive(const lb_workflows *ws, const char *tenant, const char *event_id,
                        const char *trigger, yajl_val data, lb_job_rec **jobs, size_t *n)
{
    *jobs = NULL;
    *n = 0;
    const lb_workflow *first = lb_workflows_of(ws, tenant);
    if (first == NULL || data == NULL) return 0;
    int stage = strcmp(trigger, "stage_changed") == 0;
    lb_trigger t = stage                                          ? LB_TRIGGER_STAGE_CHANGED
                   : strcmp(trigger, "assessment_completed") == 0 ? LB_TRIGGER_ASSESSMENT_COMPLETED
                                                                  : LB_TRIGGER_ASSESSMENT_EXPIRED;
    builder b = {.tenant = tenant,
                 .event_id = event_id,
                 .opportunity = lb_json_get_str(data, stage ? "opportunityId" : "opportunity_id"),
                 .now = lb_time_now_ms()};
    yajl_val context = make_context(stage, trigger, data);

    /* The event's jobs form one chain: the workflows' jobs go in the order
     * of their due times (shortest delay first, then oldest workflow), so a
     * delayed workflow never holds back one due earlier. */
    const lb_workflow *hit[LB_WF_MAX_PER_TENANT];
    size_t nhit = 0;
    for (const lb_workflow *w = first; w != NULL && nhit < LB_COUNTOF(hit); w = w->next) {
        if (!w->enabled || !(stage ? stage_matches(w, data) : result_matches(w, t, data))) continue;
        size_t at = nhit++;
        while (at > 0 && hit[at - 1]->delay_ms > w->delay_ms) {
            hit[at] = hit[at - 1];
            at--;
        }
        hit[at] = w;
    }
    for (size_t i = 0; i < nhit; i++)
        add_actions(&b, hit[i], context, 0);
    if (context != NULL) yajl_tree_free(context);
    return builder_end(&b, jobs, n);
}

int lb_workflow_derive_stage(const lb_workflow *w, const char *event_id, yajl_val data,
                             int postings_checked, lb_job_rec **jobs, size_t *n)
{
    *jobs = NULL;
    *n = 0;
    if (w->trigger != LB_TRIGGER_STAGE_CHANGED || data == NULL) return LB_EINVAL;
    builder b = {.tenant = w->tenant_id,
                 .event_id = event_id,
                 .opportunity = lb_json_get_str(data, "opportunityId"),
                 .now = lb_time_now_ms()};
    yajl_val context = make_context(1, "stage_changed", data);
    add_actions(&b, w, context, postings_checked);
    if (context != NULL) yajl_tree_free(context);
    return builder_end(&b, jobs, n);
}

/* ---- the bound, checked when a workflow is saved ---- */

typedef struct {
    lb_trigger trigger;
    const char *stage;  /* to_stage, or the assessment (NULL: any) */
    const char *detail; /* from_stage (NULL: any) */
    size_t jobs;
} shape;

static size_t jobs_of(yajl_val actions, yajl_val postings, int64_t delay_ms)
{
    return (actions && YAJL_IS_ARRAY(actions) ? actions->u.array.len : 0) +
           (postings != NULL || delay_ms > 0);
}

static int same(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* For the group of workflows one event can match together (`key`), the
 * most they make: those open on the detail (any from_stage), plus the
 * largest set sharing one detail. O(n^2) in the group, n <= 1000. */
static size_t group_bound(const shape *sh, size_t n, const shape *key)
{
    size_t open = 0, best = 0;
    for (size_t i = 0; i < n; i++) {
        const shape *a = &sh[i];
        if (a->trigger != key->trigger) continue;
        int in = key->trigger == LB_TRIGGER_STAGE_CHANGED
                     ? same(a->stage, key->stage)
                     : (a->stage == NULL || same(a->stage, key->stage));
        if (!in) continue;
        if (a->detail == NULL) {
            open += a->jobs;
            continue;
        }
        size_t sum = 0;
        for (size_t k = 0; k < n; k++)
            if (sh[k].trigger == key->trigger && same(sh[k].stage, key->stage) &&
                same(sh[k].detail, a->detail))
                sum += sh[k].jobs;
        if (sum > best) best = sum;
    }
    return open + best + (key->trigger == LB_TRIGGER_STAGE_CHANGED ? 0 : 1);
}

size_t lb_workflows_jobs_bound(const lb_workflows *ws, const char *tenant, yajl_val with,
                               const char *replacing)
{
    size_t cap = lb_workflows_count(ws, tenant) + 1, n = 0;
    shape *sh = lb_calloc(cap, sizeof(*sh));
    for (const lb_workflow *w = lb_workflows_of(ws, tenant); w != NULL && n < cap; w = w->next) {
        if (!w->enabled || (replacing != NULL && strcmp(w->id, replacing) == 0)) continue;
        int stage = w->trigger == LB_TRIGGER_STAGE_CHANGED;
        sh[n++] =
            (shape){w->trigger, stage ? w->to_stage : w->assessment, stage ? w->from_stage : NULL,
                    jobs_of(w->actions, w->postings, w->delay_ms)};
    }
    int enabled = 1;
    if (with != NULL) lb_json_get_bool(with, "enabled", &enabled);
    if (with != NULL && enabled && n < cap) {
        yajl_val t = lb_json_get(with, "trigger");
        const char *ev = lb_json_get_str(t, "event");
        lb_trigger trig = ev && strcmp(ev, "stage_changed") == 0 ? LB_TRIGGER_STAGE_CHANGED
                          : ev && strcmp(ev, "assessment_expired") == 0
                              ? LB_TRIGGER_ASSESSMENT_EXPIRED
                              : LB_TRIGGER_ASSESSMENT_COMPLETED;
        int stage = trig == LB_TRIGGER_STAGE_CHANGED;
        sh[n++] = (shape){trig, lb_json_get_str(t, stage ? "to_stage" : "assessment"),
                          stage ? lb_json_get_str(t, "from_stage") : NULL,
                          jobs_of(lb_json_get(with, "actions"), lb_json_get(t, "postings"),
                                  lb_workflow_delay(t))};
    }
    size_t bound = 0;
    for (size_t i = 0; i < n; i++) {
        size_t b = group_bound(sh, n, &sh[i]);
        if (b > bound) bound = b;
    }
    lb_free(sh);
    return bound;
}
