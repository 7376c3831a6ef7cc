/* state/match: jobs from an event, never dropped past the bound, and the
 * bound a save is checked against. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/error.h"
#include "json/json.h"
#include "state/match.h"

static int nwf;

/* A workflow with `actions` add_tags actions; trig is the trigger object. */
static void add(lb_workflows *ws, const char *trig, int actions, int enabled)
{
    char body[8192];
    int n =
        snprintf(body, sizeof(body), "{\"name\":\"w\",\"enabled\":%s,\"trigger\":%s,\"actions\":[",
                 enabled ? "true" : "false", trig);
    for (int i = 0; i < actions; i++)
        n += snprintf(body + n, sizeof(body) - (size_t)n,
                      "%s{\"type\":\"add_tags\",\"tags\":[\"t\"]}", i ? "," : "");
    snprintf(body + n, sizeof(body) - (size_t)n, "]}");
    lb_workflow_rec rec;
    memset(&rec, 0, sizeof(rec));
    snprintf(rec.id, sizeof(rec.id), "wf_%d", ++nwf);
    snprintf(rec.tenant_id, sizeof(rec.tenant_id), "acme");
    rec.body = body;
    rec.enabled = enabled;
    rec.created_at = rec.updated_at = nwf;
    assert_non_null(lb_workflows_apply(ws, &rec));
}

static yajl_val parse(const char *s)
{
    char err[64];
    yajl_val v = lb_json_parse(s, strlen(s), err, sizeof(err));
    assert_non_null(v);
    return v;
}

static const char STAGE[] = "{\"event\":\"stage_changed\",\"to_stage\":\"S2\"}";

static void test_never_drops(void **state)
{
    (void)state;
    lb_workflows ws;
    lb_workflows_init(&ws);
    for (int i = 0; i < 10; i++)
        add(&ws, STAGE, LB_WF_MAX_ACTIONS, 1);
    yajl_val data = parse("{\"opportunityId\":\"O1\",\"toStageId\":\"S2\",\"fromStageId\":\"S1\"}");
    lb_job_rec *jobs = (lb_job_rec *)1;
    size_t n = 99;
    assert_int_equal(lb_workflows_derive(&ws, "acme", "ev_1", "stage_changed", data, &jobs, &n), 0);
    assert_int_equal(n, LB_EVENT_JOBS_MAX); /* exactly at the bound: all of them */
    for (size_t i = 0; i < n; i++)
        assert_int_equal(jobs[i].seq, (int)i);
    lb_job_recs_free(jobs, n);
    /* One more job: an error and nothing, where the old code kept 200. */
    add(&ws, STAGE, 1, 1);
    assert_int_equal(lb_workflows_derive(&ws, "acme", "ev_2", "stage_changed", data, &jobs, &n),
                     LB_ETOOBIG);
    assert_null(jobs);
    assert_int_equal(n, 0);
    /* A disabled workflow and another stage do not count. */
    add(&ws, "{\"event\":\"stage_changed\",\"to_stage\":\"S3\"}", 5, 1);
    yajl_tree_free(data);
    data = parse("{\"opportunityId\":\"O1\",\"toStageId\":\"S3\"}");
    assert_int_equal(lb_workflows_derive(&ws, "acme", "ev_3", "stage_changed", data, &jobs, &n), 0);
    assert_int_equal(n, 5);
    lb_job_recs_free(jobs, n);
    yajl_tree_free(data);
    lb_workflows_free(&ws);
}

static void test_bound(void **state)
{
    (void)state;
    lb_workflows ws;
    lb_workflows_init(&ws);
    assert_int_equal(lb_workflows_jobs_bound(&ws, "acme", NULL, NULL), 0);
    add(&ws, STAGE, 10, 1);
    add(&ws, "{\"event\":\"stage_changed\",\"to_stage\":\"S2\",\"from_stage\":\"A\"}", 20, 1);
    add(&ws, "{\"event\":\"stage_changed\",\"to_stage\":\"S2\",\"from_stage\":\"A\"}", 20, 1);
    add(&ws, "{\"event\":\"stage_changed\",\"to_stage\":\"S2\",\"from_stage\":\"B\"}", 15, 1);
    add(&ws, STAGE, 20, 0); /* disabled */
    /* S2 from A: 10 (any) + 40 (A); from B only 25. */
    assert_int_equal(lb_workflows_jobs_bound(&ws, "acme", NULL, NULL), 50);
    /* A postings filter adds its check job. */
    yajl_val with = parse("{\"name\":\"n\",\"trigger\":{\"event\":\"stage_changed\",\"to_stage\":"
                          "\"S2\",\"postings\":[\"P\"]},\"actions\":[{\"type\":\"add_tags\","
                          "\"tags\":[\"x\"]}]}");
    assert_int_equal(lb_workflows_jobs_bound(&ws, "acme", with, NULL), 52);
    /* Replacing wf_1 (10 jobs, any from_stage) by it. */
    char first[32];
    snprintf(first, sizeof(first), "wf_%d", nwf - 4);
    assert_int_equal(lb_workflows_jobs_bound(&ws, "acme", with, first), 42);
    yajl_tree_free(with);
    /* Results: the same or an unnamed assessment match together, plus the
     * status note's job. */
    add(&ws, "{\"event\":\"assessment_completed\",\"assessment\":\"js\"}", 20, 1);
    add(&ws, "{\"event\":\"assessment_completed\"}", 20, 1);
    add(&ws, "{\"event\":\"assessment_completed\",\"assessment\":\"js\"}", 20, 1);
    add(&ws, "{\"event\":\"assessment_completed\",\"assessment\":\"go\"}", 20, 1);
    add(&ws, "{\"event\":\"assessment_expired\",\"assessment\":\"js\"}", 20, 1);
    assert_int_equal(lb_workflows_jobs_bound(&ws, "acme", NULL, NULL), 61);
    assert_int_equal(lb_workflows_jobs_bound(&ws, "other", NULL, NULL), 0);
    lb_workflows_free(&ws);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_never_drops),
        cmocka_unit_test(test_bound),
    };
    return cmocka_run_group_tests_name("state_match", tests, NULL, NULL);
}
