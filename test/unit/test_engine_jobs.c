/* Durable jobs against an in-process fake Lever on one loop, with a real
 * SQLite store: success, retries with backoff, api.md's error mapping (403,
 * 404, 401 and resume), max age, event chains in order, restart from the
 * store skipping recorded steps, and cancellation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "loop_helpers.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/time.h"
#include "engine/actions.h"
#include "engine/jobs.h"
#include "http/response.h"
#include "http/router.h"
#include "http/server.h"
#include "json/json.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    uv_loop_t loop;
    char dir[64], path[128], url[160];
    lb_store *store;
    lb_http_server *srv;
    lb_router *router;
    lb_http_client *client;
    lb_outbound *ob;
    lb_jobs *jobs;
    char api[64];
    /* fake Lever */
    int flaky_left; /* 503s before success for opportunity "flaky" */
    int auth_ok;    /* 0: 401 for opportunity "auth" */
    int calls;
    int step_a_calls;
    char stages[16][16];
    int nstages;
    int inflight, max_inflight;
    /* env */
    int reauth;
    int unauthorized_calls;
    char forbidden[64];
    char granted[64];
    int granted_calls;
} fixture;

static fixture *F;

/* ---- fake Lever ---------------------------------------------------------- */

static void add_tags(lb_http_req *req, void *data)
{
    fixture *f = data;
    const char *opp = lb_http_req_param(req, "opp");
    f->calls++;
    if (strcmp(opp, "flaky") == 0 && f->flaky_left > 0) {
        f->flaky_left--;
        lb_http_respond_static(req, 503, "application/json", NULL, "{}", 2);
    } else if (strcmp(opp, "forbidden") == 0) {
        static const char b[] = "{\"code\":\"Forbidden\",\"message\":\"Ask a Super Admin\"}";
        lb_http_respond_static(req, 403, "application/json", NULL, b, sizeof(b) - 1);
    } else if (strcmp(opp, "gone") == 0) {
        static const char b[] =
            "{\"code\":\"ResourceNotFound\",\"message\":\"No such opportunity\"}";
        lb_http_respond_static(req, 404, "application/json", NULL, b, sizeof(b) - 1);
    } else if (strcmp(opp, "auth") == 0 && !f->auth_ok) {
        lb_http_respond_static(req, 401, "application/json", NULL, "{}", 2);
    } else {
        lb_http_respond_static(req, 200, "application/json", NULL, "{}", 2);
    }
}

typedef struct {
    uv_timer_t timer;
    lb_http_req *req;
    fixture *f;
} delayed;

static void delayed_cb(uv_timer_t *t)
{
    delayed *d = t->data;
    d->f->inflight--;
    lb_http_respond_static(d->req, 200, "application/json", NULL, "{}", 2);
    uv_close((uv_handle_t *)t, (uv_close_cb)lb_free);
}

/* Answers after 20 ms so that overlapping calls would show. */
static void move_stage(lb_http_req *req, void *data)
{
    fixture *f = data;
    char err[64];
    yajl_val v = lb_json_parse(req->body, req->body_len, err, sizeof(err));
    const char *stage = lb_json_get_str(v, "stage");
    if (f->nstages < 16)
        snprintf(f->stages[f->nstages++], sizeof(f->stages[0]), "%s", stage ? stage : "?");
    yajl_tree_free(v);
    if (++f->inflight > f->max_inflight) f->max_inflight = f->inflight;
    delayed *d = LB_NEW(delayed);
    d->req = req;
    d->f = f;
    uv_timer_init(&f->loop, &d->timer);
    d->timer.data = d;
    uv_timer_start(&d->timer, delayed_cb, 20, 0);
}

/* move_stage reads the opportunity first: it is in no stage a test moves
 * it to. */
static void get_opportunity(lb_http_req *req, void *data)
{
    (void)data;
    static const char b[] = "{\"data\":{\"id\":\"o\",\"stage\":\"s_none\",\"archived\":null}}";
    lb_http_respond_static(req, 200, "application/json", NULL, b, sizeof(b) - 1);
}

static void step_a(lb_http_req *req, void *data)
{
    fixture *f = data;
    f->step_a_calls++;
    lb_http_respond_static(req, 200, "application/json", NULL, "{\"data\":{\"noteId\":\"n1\"}}",
                           24);
}

/* ---- a two-step kind: A (recorded), then B ------------------------------- */

static void two_b_done(lb_job *job, const lb_http_response *res)
{
    if (lb_lever_classify(res) != LB_LEVER_OK) {
        lb_job_lever_failed(job, res);
        return;
    }
    lb_job_finish(job, LB_JOB_SUCCEEDED, NULL);
}

static void two_a_done(lb_job *job, const lb_http_response *res)
{
    if (lb_lever_classify(res) != LB_LEVER_OK) {
        lb_job_lever_failed(job, res);
        return;
    }
    char *id = NULL;
    lb_lever_parse_note_id(res->body, res->body_len, &id);
    lb_job_record(job, "a", id ? id : "");
    lb_free(id);
}

static void two_run(lb_job *job)
{
    if (lb_job_step(job, "a") == NULL)
        lb_job_lever(job, "create an opportunity note", "POST", NULL, NULL, two_a_done,
                     "/opportunities/%s/notes", lb_job_opportunity(job));
    else
        lb_job_lever(job, "add opportunity tags", "POST", NULL, NULL, two_b_done,
                     "/opportunities/%s/addTags", lb_job_opportunity(job));
}

static lb_job_kind kinds[8];

/* ---- env --------------------------------------------------------------- */

static int env_auth(void *data, const char *tenant, lb_lever_auth *auth)
{
    fixture *f = data;
    (void)tenant;
    if (f->reauth) return LB_EIO;
    auth->api_url = f->api;
    auth->api_key = "key";
    return 0;
}

static void env_unauthorized(void *data, const char *tenant)
{
    fixture *f = data;
    (void)tenant;
    f->reauth = 1;
    f->unauthorized_calls++;
}

static void env_permission(void *data, const char *tenant, const char *permission, int granted)
{
    fixture *f = data;
    (void)tenant;
    if (granted) {
        f->granted_calls++;
        snprintf(f->granted, sizeof(f->granted), "%s", permission);
    } else {
        snprintf(f->forbidden, sizeof(f->forbidden), "%s", permission);
    }
}

static void env_rate(void *data, const char *tenant, double *rate, int *burst)
{
    (void)data;
    (void)tenant;
    *rate = 0;
    *burst = 0;
}

/* ---- fixture ----------------------------------------------------------- */

static void engine_open(fixture *f, int64_t max_age)
{
    char err[256];
    assert_int_equal(lb_store_open(&f->loop, f->url, NULL, &f->store, err, sizeof(err)), 0);
    lb_http_client_config cc = {.max_inflight = 16, .timeout_ms = 5000};
    assert_int_equal(lb_http_client_new(&f->loop, &cc, &f->client), 0);
    assert_int_equal(lb_outbound_new(&f->loop, f->client, &f->ob), 0);
    lb_jobs_config jc = {.retry_base_ms = 10,
                         .retry_cap_ms = 40,
                         .max_age_ms = max_age,
                         .max_running = 8,
                         .max_running_tenant = 4};
    lb_jobs_env env = {env_auth, env_unauthorized, env_permission, env_rate, f, NULL};
    assert_int_equal(lb_jobs_new(&f->loop, f->store, f->ob, f->client, &jc, &env, &f->jobs), 0);
    lb_jobs_register(f->jobs, kinds, 4);
}

static void engine_close(fixture *f)
{
    lbt_engine_close(&f->loop, f->jobs, f->ob, f->client, f->store);
}

static int setup(void **state)
{
    fixture *f = LB_NEW(fixture);
    F = f;
    for (size_t i = 0; i < lb_action_nkinds; i++) {
        if (strcmp(lb_action_kinds[i].type, "add_tags") == 0) kinds[0] = lb_action_kinds[i];
        if (strcmp(lb_action_kinds[i].type, "move_stage") == 0) kinds[1] = lb_action_kinds[i];
    }
    kinds[2] = (lb_job_kind){"two_steps", two_run, 0};
    /* move_stage run as notify_platform jobs are: one chain per tenant */
    kinds[3] = (lb_job_kind){"serial_stage", kinds[1].run, LB_JOB_KIND_NOTIFY};
    uv_loop_init(&f->loop);
    lbt_tmpdir(f->dir, sizeof(f->dir), "lbjobs");
    snprintf(f->path, sizeof(f->path), "%s/db", f->dir);
    snprintf(f->url, sizeof(f->url), "sqlite:%s", f->path);
    f->router = lb_router_new();
    lb_router_add(f->router, "POST", "/v1/opportunities/{opp}/addTags", add_tags, f);
    lb_router_add(f->router, "PUT", "/v1/opportunities/{opp}/stage", move_stage, f);
    lb_router_add(f->router, "GET", "/v1/opportunities/{opp}", get_opportunity, f);
    lb_router_add(f->router, "POST", "/v1/opportunities/{opp}/notes", step_a, f);
    int port = lbt_server_start(&f->loop, f->router, 100, &f->srv);
    snprintf(f->api, sizeof(f->api), "http://127.0.0.1:%d/v1", port);
    engine_open(f, 60000);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    engine_close(f);
    int n = 0;
    lb_http_server_close(f->srv, lbt_count_cb, &n);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    lb_router_free(f->router);
    lbt_rmdir(f->dir);
    lb_free(f);
    return 0;
}

/* ---- helpers ------------------------------------------------------------- */

/* Inserts jobs durably, as the webhook path does, then hands them over. */
static void insert(fixture *f, lb_job_rec *recs, size_t n)
{
    lb_store_op op = {.kind = LB_STORE_JOB_INSERT};
    op.job_insert.recs = recs;
    op.job_insert.count = n;
    lbt_store_run(&f->loop, f->store, &op);
    assert_int_equal(op.status, 0);
    lb_jobs_add(f->jobs, recs, n);
}

static void upsert_tenant(fixture *f)
{
    lb_store_op op = {.kind = LB_STORE_TENANT_UPSERT};
    snprintf(op.tenant_upsert.rec.id, sizeof(op.tenant_upsert.rec.id), "acme");
    op.tenant_upsert.rec.name = "Acme";
    lbt_store_run(&f->loop, f->store, &op);
}

static lb_job_rec job(const char *id, const char *action, const char *opp, const char *event,
                      int seq)
{
    lb_job_rec r;
    memset(&r, 0, sizeof(r));
    snprintf(r.id, sizeof(r.id), "%s", id);
    snprintf(r.tenant_id, sizeof(r.tenant_id), "acme");
    r.action = (char *)action;
    r.opportunity_id = (char *)opp;
    r.event_id = (char *)event;
    r.seq = seq;
    r.status = LB_JOB_QUEUED;
    r.created_at = lb_time_now_ms();
    return r;
}

static void run_until_ended(fixture *f, uint64_t ended)
{
    lb_jobs_stats st;
    uint64_t t0 = uv_hrtime();
    for (;;) {
        lb_jobs_stats_get(f->jobs, &st);
        if (st.succeeded + st.failed + st.skipped + st.cancelled >= ended) break;
        assert_true(uv_hrtime() - t0 < 10ull * 1000 * 1000 * 1000);
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    /* let the final writes land */
    for (int i = 0; i < 20; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* A column of a job row, read with a connection of the test's own. */
static void row(fixture *f, const char *id, char *status, int *attempts, char *err, size_t errlen)
{
    usleep(20000);
    for (int i = 0; i < 50; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT status, attempts, COALESCE(last_error, '')"
                                        " FROM jobs WHERE id = ?1",
                                        -1, &q, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    strcpy(status, (const char *)sqlite3_column_text(q, 0));
    *attempts = sqlite3_column_int(q, 1);
    if (err != NULL) snprintf(err, errlen, "%s", (const char *)sqlite3_column_text(q, 2));
    sqlite3_finalize(q);
    sqlite3_close(db);
}

static const char TAGS[] = "{\"type\":\"add_tags\",\"tags\":[\"x\"]}";

/* ---- tests ------------------------------------------------------------- */

static void succeeds(void **state)
{
    fixture *f = *state;
    upsert_tenant(f);
    lb_job_rec r = job("job_ok", TAGS, "o1", "ev1", 0);
    insert(f, &r, 1);
    run_until_ended(f, 1);
    char st[16];
    int attempts;
    row(f, "job_ok", st, &attempts, NULL, 0);
    assert_string_equal(st, "succeeded");
    assert_int_equal(attempts, 1);
}

static void retries_then_succeeds(void **state)
{
    fixture *f = *state;
    upsert_tenant(f);
    f->flaky_left = 2;
    lb_job_rec r = job("job_flaky", TAGS, "flaky", NULL, 0);
    insert(f, &r, 1);
    run_until_ended(f, 1);
    char st[16];
    int attempts;
    row(f, "job_flaky", st, &attempts, NULL, 0);
    assert_string_equal(st, "succeeded");
    assert_int_equal(attempts, 3);
    /* only the 2xx reports the permission as granted, the 5xx before it not */
    assert_int_equal(f->granted_calls, 1);
    assert_string_equal(f->granted, "add opportunity tags");
    lb_jobs_stats s;
    lb_jobs_stats_get(f->jobs, &s);
    assert_int_equal(s.retried, 2);
}

static void error_mapping(void **state)
{
    fixture *f = *state;
    upsert_tenant(f);
    lb_job_rec r[2] = {job("job_403", TAGS, "forbidden", NULL, 0),
                       job("job_404", TAGS, "gone", NULL, 0)};
    insert(f, r, 2);
    run_until_ended(f, 2);
    char st[16], err[256];
    int attempts;
    row(f, "job_403", st, &attempts, err, sizeof(err));
    assert_string_equal(st, "failed");
    assert_int_equal(attempts, 1); /* not retried */
    assert_non_null(strstr(err, "missing_permission"));
    assert_non_null(strstr(err, "add opportunity tags"));
    assert_string_equal(f->forbidden, "add opportunity tags");
    row(f, "job_404", st, &attempts, err, sizeof(err));
    assert_string_equal(st, "failed");
    assert_non_null(strstr(err, "No such opportunity"));
    assert_int_equal(f->granted_calls, 0); /* neither answer grants anything */
}

static void unauthorized_waits_then_resumes(void **state)
{
    fixture *f = *state;
    upsert_tenant(f);
    lb_job_rec r[2] = {job("job_401", TAGS, "auth", NULL, 0),
                       job("job_after", TAGS, "o2", NULL, 0)};
    insert(f, r, 1);
    for (int i = 0; i < 200 && f->unauthorized_calls == 0; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(f->unauthorized_calls, 1);
    insert(f, &r[1], 1); /* arrives while the connection is broken: waits too */
    for (int i = 0; i < 50; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    lb_jobs_stats s;
    lb_jobs_stats_get(f->jobs, &s);
    assert_int_equal(s.succeeded + s.failed, 0); /* nothing failed: they wait */
    char st[16];
    int attempts;
    row(f, "job_401", st, &attempts, NULL, 0);
    assert_string_equal(st, "queued");
    f->auth_ok = 1;
    f->reauth = 0;
    lb_jobs_tenant_resume(f->jobs, "acme");
    run_until_ended(f, 2);
    row(f, "job_401", st, &attempts, NULL, 0);
    assert_string_equal(st, "succeeded");
    row(f, "job_after", st, &attempts, NULL, 0);
    assert_string_equal(st, "succeeded");
}

static void too_old_fails(void **state)
{
    fixture *f = *state;
    upsert_tenant(f);
    f->flaky_left = 1000;
    lb_job_rec r = job("job_old", TAGS, "flaky", NULL, 0);
    r.created_at = lb_time_now_ms() - 60000; /* max age is 60 s */
    insert(f, &r, 1);
    run_until_ended(f, 1);
    char st[16], err[256];
    int attempts;
    row(f, "job_old", st, &attempts, err, sizeof(err));
    assert_string_equal(st, "failed");
    assert_non_null(strstr(err, "gave up after 1 attempts"));
}

/* A delayed job's age counts from its due time (context.due_at): made 60 s
 * ago but due now, it retries instead of failing. */
static void delayed_age_counts_from_due(void **state)
{
    fixture *f = *state;
    upsert_tenant(f);
    f->flaky_left = 3;
    char action[160];
    snprintf(action, sizeof(action),
             "{\"type\":\"add_tags\",\"tags\":[\"x\"],\"context\":{\"due_at\":%lld}}",
             (long long)lb_time_now_ms());
    lb_job_rec r = job("job_due", action, "flaky", NULL, 0);
    r.created_at = lb_time_now_ms() - 60000; /* max age is 60 s */
    insert(f, &r, 1);
    run_until_ended(f, 1);
    char st[16];
    int attempts;
    row(f, "job_due", st, &attempts, NULL, 0);
    assert_string_equal(st, "succeeded");
    assert_int_equal(attempts, 4);
}

static void chain_runs_in_order(void **state)
{
    fixture *f = *state;
    upsert_tenant(f);
    lb_job_rec r[4] = {
        job("job_c0", "{\"type\":\"move_stage\",\"stage\":\"s0\"}", "o1", "evc", 0),
        job("job_c1", "{\"type\":\"move_stage\",\"stage\":\"s1\"}", "o1", "evc", 1),
        job("job_c2", "{\"type\":\"move_stage\",\"stage\":\"s2\"}", "o1", "evc", 2),
        job("job_other", "{\"type\":\"move_stage\",\"stage\":\"t\"}", "o9", "evd", 0),
    };
    insert(f, r, 4);
    run_until_ended(f, 4);
    assert_int_equal(f->nstages, 4);
    int pos[3] = {-1, -1, -1};
    for (int i = 0; i < 4; i++)
        if (f->stages[i][0] == 's') pos[f->stages[i][1] - '0'] = i;
    assert_true(pos[0] < pos[1] && pos[1] < pos[2]);
    assert_int_equal(f->max_inflight, 2); /* the chain, one at a time, beside the other event */
}

static void restart_resumes_and_skips_recorded_steps(void **state)
{
    fixture *f = *state;
    upsert_tenant(f);
    /* As a crash leaves them: one running with step "a" recorded, one queued. */
    lb_job_rec r[2] = {job("job_r1", "{\"type\":\"two_steps\"}", "o1", NULL, 0),
                       job("job_r2", "{\"type\":\"two_steps\"}", "o2", NULL, 0)};
    r[0].status = LB_JOB_RUNNING;
    r[0].attempts = 1;
    r[0].steps = "{\"a\":\"n0\"}";
    lb_store_op op = {.kind = LB_STORE_JOB_INSERT};
    op.job_insert.recs = r;
    op.job_insert.count = 2;
    lbt_store_run(&f->loop, f->store, &op);
    /* a new engine on the same store, as at start-up */
    engine_close(f);
    engine_open(f, 60000);
    assert_int_equal(lb_jobs_load(f->jobs), 0);
    run_until_ended(f, 2);
    assert_int_equal(f->step_a_calls, 1); /* only job_r2 ran step a */
    char st[16];
    int attempts;
    row(f, "job_r1", st, &attempts, NULL, 0);
    assert_string_equal(st, "succeeded");
    assert_int_equal(attempts, 2);
    row(f, "job_r2", st, &attempts, NULL, 0);
    assert_string_equal(st, "succeeded");
}

static void cancel_tenant(void **state)
{
    fixture *f = *state;
    upsert_tenant(f);
    f->reauth = 1; /* every job waits */
    lb_job_rec r[3] = {job("job_x0", TAGS, "o1", "evx", 0), job("job_x1", TAGS, "o1", "evx", 1),
                       job("job_y", TAGS, "o2", NULL, 0)};
    r[2].next_run_at = lb_time_now_ms() + 60000; /* sleeping */
    insert(f, r, 3);
    for (int i = 0; i < 50; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    lb_jobs_tenant_cancel(f->jobs, "acme");
    run_until_ended(f, 3);
    char st[16];
    int attempts;
    for (int i = 0; i < 3; i++) {
        row(f, r[i].id, st, &attempts, NULL, 0);
        assert_string_equal(st, "cancelled");
    }
    lb_jobs_stats s;
    lb_jobs_stats_get(f->jobs, &s);
    assert_int_equal(s.active, 0);
}

static void unknown_action_fails(void **state)
{
    fixture *f = *state;
    upsert_tenant(f);
    lb_job_rec r = job("job_unknown", "{\"type\":\"teleport\"}", "o1", NULL, 0);
    insert(f, &r, 1);
    run_until_ended(f, 1);
    char st[16], err[128];
    int attempts;
    row(f, "job_unknown", st, &attempts, err, sizeof(err));
    assert_string_equal(st, "failed");
    assert_string_equal(err, "unknown action type");
}

/* Kinds flagged LB_JOB_KIND_NOTIFY: a tenant's jobs run one at a time in the
 * order added, with no event to chain them, and a tenant's cancel leaves
 * them alone. */
static void notify_kinds_chain_per_tenant(void **state)
{
    fixture *f = *state;
    upsert_tenant(f);
    lb_job_rec r[3] = {
        job("job_s1", "{\"type\":\"serial_stage\",\"stage\":\"s1\"}", "o1", NULL, 0),
        job("job_s2", "{\"type\":\"serial_stage\",\"stage\":\"s2\"}", "o2", NULL, 0),
        job("job_s3", "{\"type\":\"serial_stage\",\"stage\":\"s3\"}", "o3", NULL, 0)};
    insert(f, r, 3);
    lb_jobs_tenant_cancel(f->jobs, "acme");
    run_until_ended(f, 3);
    assert_int_equal(f->nstages, 3);
    assert_string_equal(f->stages[0], "s1");
    assert_string_equal(f->stages[1], "s2");
    assert_string_equal(f->stages[2], "s3");
    assert_int_equal(f->max_inflight, 1);
    char st[16];
    int attempts;
    row(f, "job_s3", st, &attempts, NULL, 0);
    assert_string_equal(st, "succeeded");
}

int main(void)
{
    lb_http_client_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(succeeds, setup, teardown),
        cmocka_unit_test_setup_teardown(retries_then_succeeds, setup, teardown),
        cmocka_unit_test_setup_teardown(error_mapping, setup, teardown),
        cmocka_unit_test_setup_teardown(unauthorized_waits_then_resumes, setup, teardown),
        cmocka_unit_test_setup_teardown(too_old_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(delayed_age_counts_from_due, setup, teardown),
        cmocka_unit_test_setup_teardown(chain_runs_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(restart_resumes_and_skips_recorded_steps, setup, teardown),
        cmocka_unit_test_setup_teardown(cancel_tenant, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_action_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(notify_kinds_chain_per_tenant, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    lb_http_client_global_cleanup();
    return rc;
}
