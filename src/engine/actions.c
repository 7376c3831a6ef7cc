#include "engine/actions.h"

#include "core/alloc.h"
#include "core/error.h"
#include "engine/assess.h"
#include "json/json.h"
#include "state/guard.h"

#include <stdio.h>
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

/* The opportunity of a "find an opportunity" answer: 0 with o filled (the
 * caller frees it), or -1 once the job was handed back (Lever failed: its
 * error policy; an answer that does not parse: retried). */
static int opportunity_read(lb_job *job, const lb_http_response *res, lb_lever_opportunity *o)
{
    if (lb_lever_classify(res) != LB_LEVER_OK) {
        lb_job_lever_failed(job, res);
        return -1;
    }
    if (lb_lever_parse_opportunity(res->body, res->body_len, o) != 0) {
        lb_job_retry(job, "Lever's opportunity could not be read");
        return -1;
    }
    return 0;
}

/* ---- move_stage: PUT /opportunities/:id/stage {"stage":id} ---------------- */

/* Just before the PUT the opportunity is read: a move to the stage it is
 * in ends succeeded without a write, and a guard that no longer holds
 * (only_from; for a move that a result fired, the stage recorded with the
 * invitation) ends it skipped with stage_changed_meanwhile. The invitation's
 * stage is recorded as step "guard" ("" when unknown) before the read. */

static yajl_val move_context(lb_job *job)
{
    return lb_json_get_obj(lb_job_action(job), "context");
}

static int move_by_result(lb_job *job)
{
    return lb_guard_by_result(lb_json_get_str(move_context(job), "event"));
}

static void move_read(lb_job *job, const lb_http_response *res)
{
    lb_lever_opportunity o;
    if (opportunity_read(job, res, &o) != 0) return;
    yajl_val action = lb_job_action(job);
    lb_guard_opp g = {o.stage_id, o.archived, (const char *const *)o.postings, o.npostings};
    lb_guard_move_outcome out =
        lb_guard_move(&g, action, move_by_result(job), lb_job_step(job, "guard"));
    lb_lever_opportunity_free(&o);
    if (out == LB_GUARD_ALREADY) {
        lb_job_finish(job, LB_JOB_SUCCEEDED, NULL);
        return;
    }
    if (out == LB_GUARD_SKIP) {
        lb_job_finish(job, LB_JOB_SKIPPED, "stage_changed_meanwhile");
        return;
    }
    yajl_gen g2 = lb_json_gen_new();
    lb_lever_stage_body(g2, lb_json_get_str(action, "stage"));
    lb_job_lever(job, "update an opportunity's stage", "PUT", NULL, g2, call_done,
                 "/opportunities/%s/stage", lb_job_opportunity(job));
    yajl_gen_free(g2);
}

/* An invitation read of a move: the op and the strings it reads. */
typedef struct {
    lb_store_op op; /* first: the callback gets &op */
    char *opp, *assessment;
} guard_op;

static void move_guard_read(lb_job *job, lb_store_op *op, int live)
{
    guard_op *c = (guard_op *)op;
    int st = op->status;
    char *stage = NULL;
    if (st == 0) {
        stage = op->invitation_get.rec.stage_id ? lb_strdup(op->invitation_get.rec.stage_id) : NULL;
        lb_invitation_rec_free(&op->invitation_get.rec);
    }
    lb_free(c->opp);
    lb_free(c->assessment);
    lb_free(c);
    if (live) {
        if (st != 0 && st != LB_ENOTFOUND)
            lb_job_retry(job, "the store could not read the invitation");
        else
            lb_job_record(job, "guard", stage ? stage : "");
    }
    lb_free(stage);
}

static void move_stage_run(lb_job *job)
{
    yajl_val action = lb_job_action(job);
    const char *stage = lb_json_get_str(action, "stage");
    if (stage == NULL || *stage == '\0') {
        lb_job_finish(job, LB_JOB_FAILED, "move_stage needs a stage");
        return;
    }
    const char *assessment = lb_json_get_str(move_context(job), "assessment");
    if (lb_json_get(action, "only_from") == NULL && move_by_result(job) && assessment != NULL &&
        lb_job_step(job, "guard") == NULL) {
        guard_op *c = LB_NEW(guard_op);
        c->opp = lb_strdup(lb_job_opportunity(job) ? lb_job_opportunity(job) : "");
        c->assessment = lb_strdup(assessment);
        c->op.kind = LB_STORE_INVITATION_GET;
        snprintf(c->op.invitation_get.tenant_id, sizeof(c->op.invitation_get.tenant_id), "%s",
                 lb_job_tenant(job));
        c->op.invitation_get.opportunity_id = c->opp;
        c->op.invitation_get.assessment = c->assessment;
        if (lb_job_store(job, &c->op, move_guard_read) != 0) {
            lb_free(c->opp);
            lb_free(c->assessment);
            lb_free(c);
            lb_job_retry(job, "the store is not taking operations");
        }
        return;
    }
    lb_job_lever(job, "find an opportunity", "GET", NULL, NULL, move_read, "/opportunities/%s",
                 lb_job_opportunity(job));
}

/* ---- check_stage: the gate of a delayed workflow, when it is due ---------- */

static void stage_checked(lb_job *job, const lb_http_response *res)
{
    lb_lever_opportunity o;
    if (opportunity_read(job, res, &o) != 0) return;
    yajl_val action = lb_job_action(job);
    lb_guard_opp g = {o.stage_id, o.archived, (const char *const *)o.postings, o.npostings};
    const char *why = lb_guard_trigger(&g, lb_json_get_str(action, "to_stage"),
                                       lb_json_get(action, "postings"), "moved_on");
    lb_lever_opportunity_free(&o);
    if (why == NULL)
        lb_job_finish(job, LB_JOB_SUCCEEDED, NULL);
    else
        lb_job_skip_workflow(job, why);
}

static void check_stage_run(lb_job *job)
{
    int postings = lb_json_get(lb_job_action(job), "postings") != NULL;
    lb_job_lever(job, "find an opportunity", "GET", postings ? "expand=applications" : NULL, NULL,
                 stage_checked, "/opportunities/%s", lb_job_opportunity(job));
}

/* ---- check_postings: the gate of a workflow with a postings filter --------- */

static void postings_done(lb_job *job, const lb_http_response *res)
{
    lb_lever_opportunity o;
    if (opportunity_read(job, res, &o) != 0) return;
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
    {"check_stage", check_stage_run, 0},
    {"add_tags", add_tags_run, 0},
    {"move_stage", move_stage_run, 0},
    {"send_assessment", lb_assess_send_run, 0},
    {"add_note", lb_assess_add_note_run, 0},
    {"update_status_note", lb_assess_update_note_run, 0},
    {"failure_tag", failure_tag_run, LB_JOB_KIND_NO_FAILURE_TAG},
};
const size_t lb_action_nkinds = sizeof(lb_action_kinds) / sizeof(lb_action_kinds[0]);
