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
#include "core/time.h"
#include "json/json.h"
#include "state/guard.h"
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

/* A delayed workflow's jobs are due at the event's time + the delay, start
 * with a check_stage gate, and come after an undelayed workflow's in the
 * event's chain; the gate counts in the bound. */
static void test_delay(void **state)
{
    (void)state;
    lb_workflows ws;
    lb_workflows_init(&ws);
    add(&ws,
        "{\"event\":\"stage_changed\",\"to_stage\":\"S2\",\"delay\":\"30m\","
        "\"postings\":[\"P1\"]}",
        2, 1);
    char delayed[16], prompt[16];
    snprintf(delayed, sizeof(delayed), "wf_%d", nwf);
    add(&ws, STAGE, 1, 1);
    snprintf(prompt, sizeof(prompt), "wf_%d", nwf);
    yajl_val data = parse("{\"opportunityId\":\"O1\",\"toStageId\":\"S2\",\"fromStageId\":\"S1\"}");
    lb_job_rec *jobs;
    size_t n;
    int64_t before = lb_time_now_ms();
    assert_int_equal(lb_workflows_derive(&ws, "acme", "ev_1", "stage_changed", data, &jobs, &n), 0);
    int64_t after = lb_time_now_ms();
    assert_int_equal(n, 4);
    assert_string_equal(jobs[0].workflow_id, prompt); /* undelayed first */
    assert_int_equal(jobs[0].next_run_at, 0);
    assert_non_null(strstr(jobs[1].action, "\"type\":\"check_stage\""));
    assert_non_null(strstr(jobs[1].action, "\"to_stage\":\"S2\""));
    assert_non_null(strstr(jobs[1].action, "\"postings\":[\"P1\"]"));
    for (size_t i = 1; i < 4; i++) {
        assert_string_equal(jobs[i].workflow_id, delayed);
        assert_int_equal(jobs[i].seq, (int)i);
        assert_non_null(strstr(jobs[i].action, "\"due_at\":"));
        assert_true(jobs[i].next_run_at >= before + 30 * 60000 &&
                    jobs[i].next_run_at <= after + 30 * 60000);
    }
    lb_job_recs_free(jobs, n);
    yajl_tree_free(data);
    assert_int_equal(lb_workflows_jobs_bound(&ws, "acme", NULL, NULL), 4);
    lb_workflows_free(&ws);
}

static void test_validate_delay_and_only_from(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        const char *field; /* NULL: valid */
    } cases[] = {
        {"{\"event\":\"stage_changed\",\"to_stage\":\"S\",\"delay\":\"2s\"}", NULL},
        {"{\"event\":\"stage_changed\",\"to_stage\":\"S\",\"delay\":\"0\"}", NULL},
        {"{\"event\":\"stage_changed\",\"to_stage\":\"S\",\"delay\":\"7d\"}", NULL},
        {"{\"event\":\"stage_changed\",\"to_stage\":\"S\",\"delay\":\"8d\"}", "trigger.delay"},
        {"{\"event\":\"stage_changed\",\"to_stage\":\"S\",\"delay\":30}", "trigger.delay"},
        {"{\"event\":\"stage_changed\",\"to_stage\":\"S\",\"delay\":\"soon\"}", "trigger.delay"},
        {"{\"event\":\"assessment_expired\",\"delay\":\"1m\"}", "trigger.delay"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[512], field[128] = "", msg[256];
        snprintf(body, sizeof(body),
                 "{\"name\":\"w\",\"trigger\":%s,\"actions\":[{\"type\":\"add_tags\","
                 "\"tags\":[\"t\"]}]}",
                 cases[i].body);
        yajl_val v = parse(body);
        int rc = lb_workflow_validate(v, NULL, field, sizeof(field), msg, sizeof(msg));
        if (cases[i].field == NULL) {
            assert_int_equal(rc, 0);
        } else {
            assert_int_equal(rc, LB_EINVAL);
            assert_string_equal(field, cases[i].field);
        }
        yajl_tree_free(v);
    }
    static const struct {
        const char *only_from;
        const char *field;
    } moves[] = {
        {"\"any\"", NULL},
        {"[\"S1\",\"S2\"]", NULL},
        {"\"some\"", "actions[0].only_from"},
        {"[]", "actions[0].only_from"},
        {"[\"S1\",7]", "actions[0].only_from[1]"},
    };
    for (size_t i = 0; i < sizeof(moves) / sizeof(moves[0]); i++) {
        char body[512], field[128] = "", msg[256];
        snprintf(body, sizeof(body),
                 "{\"name\":\"w\",\"trigger\":{\"event\":\"assessment_completed\"},"
                 "\"actions\":[{\"type\":\"move_stage\",\"stage\":\"S3\",\"only_from\":%s}]}",
                 moves[i].only_from);
        yajl_val v = parse(body);
        int rc = lb_workflow_validate(v, NULL, field, sizeof(field), msg, sizeof(msg));
        if (moves[i].field == NULL) {
            assert_int_equal(rc, 0);
        } else {
            assert_int_equal(rc, LB_EINVAL);
            assert_string_equal(field, moves[i].field);
        }
        yajl_tree_free(v);
    }
}

static void test_guards(void **state)
{
    (void)state;
    const char *const posts[] = {"P1"};
    lb_guard_opp o = {"S2", 0, posts, 1};
    yajl_val want = parse("[\"P9\",\"P1\"]"), other = parse("[\"P9\"]");
    assert_null(lb_guard_trigger(&o, "S2", NULL, "moved_on"));
    assert_null(lb_guard_trigger(&o, "S2", want, "moved_on"));
    assert_string_equal(lb_guard_trigger(&o, "S3", want, "moved_on"), "moved_on");
    assert_string_equal(lb_guard_trigger(&o, "S2", other, "moved_on"), "postings_not_matched");
    o.archived = 1;
    assert_string_equal(lb_guard_trigger(&o, "S3", want, "moved_on"), "archived");
    o.archived = 0;
    yajl_val plain = parse("{\"stage\":\"S3\"}");
    yajl_val listed = parse("{\"stage\":\"S3\",\"only_from\":[\"S1\",\"S2\"]}");
    yajl_val elsewhere = parse("{\"stage\":\"S3\",\"only_from\":[\"S1\"]}");
    yajl_val any = parse("{\"stage\":\"S3\",\"only_from\":\"any\"}");
    yajl_val here = parse("{\"stage\":\"S2\",\"only_from\":[\"S1\"]}");
    assert_int_equal(lb_guard_move(&o, plain, 0, "S1"), LB_GUARD_MOVE); /* not by a result */
    assert_int_equal(lb_guard_move(&o, plain, 1, "S2"), LB_GUARD_MOVE);
    assert_int_equal(lb_guard_move(&o, plain, 1, "S1"), LB_GUARD_SKIP);
    assert_int_equal(lb_guard_move(&o, plain, 1, NULL), LB_GUARD_MOVE);
    assert_int_equal(lb_guard_move(&o, plain, 1, ""), LB_GUARD_MOVE);
    assert_int_equal(lb_guard_move(&o, listed, 1, "S1"), LB_GUARD_MOVE);
    assert_int_equal(lb_guard_move(&o, elsewhere, 0, NULL), LB_GUARD_SKIP);
    assert_int_equal(lb_guard_move(&o, any, 1, "S1"), LB_GUARD_MOVE);
    assert_int_equal(lb_guard_move(&o, here, 1, "S1"), LB_GUARD_ALREADY);
    yajl_val all[] = {want, other, plain, listed, elsewhere, any, here};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        yajl_tree_free(all[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_never_drops), cmocka_unit_test(test_bound),
        cmocka_unit_test(test_delay),       cmocka_unit_test(test_validate_delay_and_only_from),
        cmocka_unit_test(test_guards),
    };
    return cmocka_run_group_tests_name("state_match", tests, NULL, NULL);
}
