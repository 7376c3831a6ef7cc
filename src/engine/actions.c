#include "engine/actions.h"

#include "engine/assess.h"
#include "json/json.h"

#include <string.h>

/* ---- add_tags: POST /opportunities/:id/addTags {"tags":[...]} ------------- */

static void call_done(lb_job *job, const lb_http_response *res)
{
    if (lb_lever_classify(res) == LB_LEVER_OK)
        lb_job_finish(job, LB_JOB_SUCCEEDED, NULL);
    else
        lb_job_lever_failed(job, res);
}

static void add_tags_run(lb_job *job)
{
    yajl_val tags = lb_json_get(lb_job_action(job), "tags");
    if (tags == NULL || !YAJL_IS_ARRAY(tags) || tags->u.array.len == 0) {
        lb_job_finish(job, LB_JOB_FAILED, "add_tags needs a non-empty tags array");
        return;
    }
    const char *list[64];
    size_t n = 0;
    for (size_t i = 0; i < tags->u.array.len && n < 64; i++)
        if (YAJL_IS_STRING(tags->u.array.values[i])) list[n++] = tags->u.array.values[i]->u.string;
    yajl_gen g = lb_json_gen_new();
    lb_lever_tags_body(g, list, n);
    lb_job_lever(job, "add opportunity tags", "POST", NULL, g, call_done,
                 "/opportunities/%s/addTags", lb_job_opportunity(job));
    yajl_gen_free(g);
}

/* ---- failure_tag: the tenant's tag on a failed job's opportunity ---------- */

/* api.md "Failures visible in Lever": made by the engine when a job fails
 * for good (jobs.c), never by a workflow. Its own failure tags nothing
 * (LB_JOB_KIND_NO_FAILURE_TAG). */
static void failure_tag_run(lb_job *job)
{
    const char *tag = lb_json_get_str(lb_job_action(job), "tag");
    if (tag == NULL || *tag == '\0') {
        lb_job_finish(job, LB_JOB_FAILED, "failure_tag needs a tag");
        return;
    }
    const char *list[1] = {tag};
    yajl_gen g = lb_json_gen_new();
    lb_lever_tags_body(g, list, 1);
    lb_job_lever(job, "add opportunity tags", "POST", NULL, g, call_done,
                 "/opportunities/%s/addTags", lb_job_opportunity(job));
    yajl_gen_free(g);
}

/* ---- move_stage: PUT /opportunities/:id/stage {"stage":id} ---------------- */

static void move_stage_run(lb_job *job)
{
    const char *stage = lb_json_get_str(lb_job_action(job), "stage");
    if (stage == NULL || *stage == '\0') {
        lb_job_finish(job, LB_JOB_FAILED, "move_stage needs a stage");
        return;
    }
    yajl_gen g = lb_json_gen_new();
    lb_lever_stage_body(g, stage);
    lb_job_lever(job, "update an opportunity's stage", "PUT", NULL, g, call_done,
                 "/opportunities/%s/stage", lb_job_opportunity(job));
    yajl_gen_free(g);
}

/* ---- check_postings: the gate of a workflow with a postings filter --------- */

static void postings_done(lb_job *job, const lb_http_response *res)
{
    if (lb_lever_classify(res) != LB_LEVER_OK) {
        lb_job_lever_failed(job, res);
        return;
    }
    lb_lever_opportunity o;
    if (lb_lever_parse_opportunity(res->body, res->body_len, &o) != 0) {
        lb_job_retry(job, "Lever's opportunity could not be read");
        return;
    }
    yajl_val want = lb_json_get(lb_job_action(job), "postings");
    int match = 0;
    for (size_t i = 0; want && YAJL_IS_ARRAY(want) && i < want->u.array.len && !match; i++) {
        yajl_val p = want->u.array.values[i];
        for (size_t k = 0; YAJL_IS_STRING(p) && k < o.npostings; k++)
            if (strcmp(p->u.string, o.postings[k]) == 0) match = 1;
    }
    lb_lever_opportunity_free(&o);
    if (match)
        lb_job_finish(job, LB_JOB_SUCCEEDED, NULL);
    else
        lb_job_skip_workflow(job, "postings_not_matched");
}

static void check_postings_run(lb_job *job)
{
    lb_job_lever(job, "find an opportunity", "GET", "expand=applications", NULL, postings_done,
                 "/opportunities/%s", lb_job_opportunity(job));
}

const lb_job_kind lb_action_kinds[] = {
    {"check_postings", check_postings_run, 0},
    {"add_tags", add_tags_run, 0},
    {"move_stage", move_stage_run, 0},
    {"send_assessment", lb_assess_send_run, 0},
    {"add_note", lb_assess_add_note_run, 0},
    {"update_status_note", lb_assess_update_note_run, 0},
    {"failure_tag", failure_tag_run, LB_JOB_KIND_NO_FAILURE_TAG},
};
const size_t lb_action_nkinds = sizeof(lb_action_kinds) / sizeof(lb_action_kinds[0]);
