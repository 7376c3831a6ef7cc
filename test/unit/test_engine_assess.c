/* The assessment kinds (send_assessment, add_note, update_status_note)
 * against an in-process fake Lever and fake platform on one loop, with a
 * real SQLite store: the whole send, already_invited, the platform's error
 * mapping, a restart after the note may have been created (the listing
 * finds it, on any page, and no second note is written), rendering with one
 * opportunity read only when needed, and the status note's update. */
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
#include "engine/assess.h"
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

#define NOTES_MAX 64
#define PAGE 2 /* the fake lists notes two at a time, to exercise paging */

typedef struct {
    char id[16];
    char value[1024];
    int secret;
    int64_t created;
} fnote;

typedef struct {
    uv_loop_t loop;
    char dir[64], path[128], url[160];
    lb_store *store;
    lb_http_server *srv;
    lb_router *router;
    lb_http_client *client;
    lb_outbound *ob;
    lb_jobs *jobs;
    char api[64], platform[64];
    int platform_on;
    /* fake Lever */
    fnote notes[NOTES_MAX];
    int nnotes;
    int opp_reads, note_posts, note_lists, note_puts;
    char put_id[16], put_value[1024];
    int note_post_fail; /* 503s before success (the note IS created first) */
    /* fake platform */
    int platform_calls;
    int platform_503;    /* 503s before success */
    int platform_status; /* non-zero: answer this with an error body */
    int invitations;     /* distinct idempotency keys */
    char keys[8][64];
    char last_auth[128], last_body[2048];
} fixture;

/* ---- fake Lever ---------------------------------------------------------- */

static void respond(lb_http_req *req, int status, const char *body)
{
    char *copy = lb_strdup(body);
    lb_http_respond(req, status, "application/json", NULL, copy, strlen(copy), lb_free, copy);
}

static void opp_get(lb_http_req *req, void *data)
{
    fixture *f = data;
    const char *opp = lb_http_req_param(req, "opp");
    f->opp_reads++;
    if (strcmp(opp, "gone") == 0) {
        respond(req, 404, "{\"code\":\"ResourceNotFound\",\"message\":\"No such opportunity\"}");
        return;
    }
    char b[512];
    snprintf(b, sizeof(b),
             "{\"data\":{\"id\":\"%s\",\"name\":\"Ada Lovelace\",\"emails\":[%s],"
             "\"contact\":\"c-%s\",\"applications\":[{\"id\":\"a1\",\"posting\":\"p1\"}]}}",
             opp, strcmp(opp, "noemail") == 0 ? "" : "\"ada@example.com\"", opp);
    respond(req, 200, b);
}

static void notes_post(lb_http_req *req, void *data)
{
    fixture *f = data;
    char err[64];
    yajl_val v = lb_json_parse(req->body, req->body_len, err, sizeof(err));
    const char *value = lb_json_get_str(v, "value");
    assert_non_null(value);
    f->note_posts++;
    fnote *n = &f->notes[f->nnotes++];
    snprintf(n->id, sizeof(n->id), "n%d", f->nnotes);
    snprintf(n->value, sizeof(n->value), "%s", value);
    lb_json_get_bool(v, "secret", &n->secret);
    n->created = lb_time_now_ms();
    yajl_tree_free(v);
    if (f->note_post_fail > 0) {
        f->note_post_fail--;
        respond(req, 503, "{}");
        return;
    }
    char b[128];
    snprintf(b, sizeof(b), "{\"data\":{\"noteId\":\"%s\"}}", n->id);
    respond(req, 201, b);
}

static void notes_list(lb_http_req *req, void *data)
{
    fixture *f = data;
    f->note_lists++;
    int start = 0;
    const char *off = strstr(req->query, "offset=");
    if (off != NULL) start = atoi(off + 7 + 3); /* "off" + number, as the fake sends it */
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "data");
    yajl_gen_array_open(g);
    int end = start + PAGE < f->nnotes ? start + PAGE : f->nnotes;
    for (int i = start; i < end; i++) {
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "id", f->notes[i].id);
        lb_json_key(g, "fields");
        yajl_gen_array_open(g);
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "type", "note");
        lb_json_kv_str(g, "value", f->notes[i].value);
        yajl_gen_map_close(g);
        yajl_gen_array_close(g);
        lb_json_kv_int(g, "createdAt", f->notes[i].created);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    lb_json_kv_bool(g, "hasNext", end < f->nnotes);
    if (end < f->nnotes) {
        char next[16];
        snprintf(next, sizeof(next), "off%d", end);
        lb_json_kv_str(g, "next", next);
    }
    yajl_gen_map_close(g);
    lb_http_respond_json(req, 200, g);
}

static void note_put(lb_http_req *req, void *data)
{
    fixture *f = data;
    f->note_puts++;
    snprintf(f->put_id, sizeof(f->put_id), "%s", lb_http_req_param(req, "note"));
    char err[64];
    yajl_val v = lb_json_parse(req->body, req->body_len, err, sizeof(err));
    yajl_val values = lb_json_get_array(v, "values");
    assert_non_null(values);
    assert_int_equal(values->u.array.len, 1);
    snprintf(f->put_value, sizeof(f->put_value), "%s",
             lb_json_get_str(values->u.array.values[0], "value"));
    yajl_tree_free(v);
    respond(req, 200, "{\"data\":{}}");
}

/* ---- fake platform ------------------------------------------------------- */

static void invitations_post(lb_http_req *req, void *data)
{
    fixture *f = data;
    f->platform_calls++;
    size_t len;
    const char *auth = lb_http_req_header(req, "authorization", &len);
    snprintf(f->last_auth, sizeof(f->last_auth), "%.*s", auth ? (int)len : 0, auth ? auth : "");
    snprintf(f->last_body, sizeof(f->last_body), "%.*s", (int)req->body_len, req->body);
    const char *key = lb_http_req_header(req, "idempotency-key", &len);
    assert_non_null(key);
    if (f->platform_status != 0) {
        respond(req, f->platform_status,
                "{\"error\":{\"code\":\"invalid_request\",\"message\":\"unknown assessment\"}}");
        return;
    }
    if (f->platform_503 > 0) {
        f->platform_503--;
        respond(req, 503, "{}");
        return;
    }
    int i;
    for (i = 0; i < f->invitations; i++)
        if (strlen(f->keys[i]) == len && memcmp(f->keys[i], key, len) == 0) break;
    if (i == f->invitations)
        snprintf(f->keys[f->invitations++], sizeof(f->keys[0]), "%.*s", (int)len, key);
    char b[256];
    snprintf(b, sizeof(b),
             "{\"invitation_id\":\"inv_%d\",\"url\":\"https://assess.test/i/inv_%d\"}", i, i);
    respond(req, 201, b);
}

/* ---- env ----------------------------------------------------------------- */

static int env_auth(void *data, const char *tenant, lb_lever_auth *auth)
{
    fixture *f = data;
    (void)tenant;
    auth->api_url = f->api;
    auth->api_key = "key";
    return 0;
}

static void env_unauthorized(void *data, const char *tenant)
{
    (void)data;
    (void)tenant;
}

static void env_permission(void *data, const char *tenant, const char *permission, int granted)
{
    (void)data;
    (void)tenant;
    (void)permission;
    (void)granted;
}

static void env_rate(void *data, const char *tenant, double *rate, int *burst)
{
    (void)data;
    (void)tenant;
    *rate = 0;
    *burst = 0;
}

/* ---- fixture --------------------------------------------------------------- */

static void engine_open(fixture *f)
{
    char err[256];
    assert_int_equal(lb_store_open(&f->loop, f->url, NULL, &f->store, err, sizeof(err)), 0);
    lb_http_client_config cc = {.max_inflight = 16, .timeout_ms = 5000};
    assert_int_equal(lb_http_client_new(&f->loop, &cc, &f->client), 0);
    assert_int_equal(lb_outbound_new(&f->loop, f->client, &f->ob), 0);
    lb_jobs_config jc = {.retry_base_ms = 5,
                         .retry_cap_ms = 20,
                         .max_age_ms = 60000,
                         .max_running = 8,
                         .max_running_tenant = 4,
                         .platform_url = f->platform_on ? f->platform : NULL,
                         .platform_token = f->platform_on ? "ptok" : NULL};
    lb_jobs_env env = {env_auth, env_unauthorized, env_permission, env_rate, f, NULL};
    assert_int_equal(lb_jobs_new(&f->loop, f->store, f->ob, f->client, &jc, &env, &f->jobs), 0);
    lb_jobs_register(f->jobs, lb_action_kinds, lb_action_nkinds);
}

static void engine_close(fixture *f)
{
    lbt_engine_close(&f->loop, f->jobs, f->ob, f->client, f->store);
}

static void run_op(fixture *f, lb_store_op *op)
{
    lbt_store_run(&f->loop, f->store, op);
}

static int setup(void **state)
{
    fixture *f = LB_NEW(fixture);
    uv_loop_init(&f->loop);
    lbt_tmpdir(f->dir, sizeof(f->dir), "lbassess");
    snprintf(f->path, sizeof(f->path), "%s/db", f->dir);
    snprintf(f->url, sizeof(f->url), "sqlite:%s", f->path);
    f->router = lb_router_new();
    lb_router_add(f->router, "GET", "/v1/opportunities/{opp}", opp_get, f);
    lb_router_add(f->router, "GET", "/v1/opportunities/{opp}/notes", notes_list, f);
    lb_router_add(f->router, "POST", "/v1/opportunities/{opp}/notes", notes_post, f);
    lb_router_add(f->router, "PUT", "/v1/opportunities/{opp}/notes/{note}", note_put, f);
    lb_router_add(f->router, "POST", "/platform/invitations", invitations_post, f);
    int port = lbt_server_start(&f->loop, f->router, 100, &f->srv);
    snprintf(f->api, sizeof(f->api), "http://127.0.0.1:%d/v1", port);
    snprintf(f->platform, sizeof(f->platform), "http://127.0.0.1:%d/platform/", port);
    f->platform_on = 1;
    engine_open(f);
    lb_store_op op = {.kind = LB_STORE_TENANT_UPSERT};
    snprintf(op.tenant_upsert.rec.id, sizeof(op.tenant_upsert.rec.id), "acme");
    op.tenant_upsert.rec.name = "Acme";
    run_op(f, &op);
    assert_int_equal(op.status, 0);
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

static lb_job_rec job(const char *id, const char *action, const char *opp)
{
    lb_job_rec r;
    memset(&r, 0, sizeof(r));
    snprintf(r.id, sizeof(r.id), "%s", id);
    snprintf(r.tenant_id, sizeof(r.tenant_id), "acme");
    r.action = (char *)action;
    r.opportunity_id = (char *)opp;
    r.status = LB_JOB_QUEUED;
    r.created_at = lb_time_now_ms();
    return r;
}

static void insert(fixture *f, lb_job_rec *recs, size_t n, int add)
{
    lb_store_op op = {.kind = LB_STORE_JOB_INSERT};
    op.job_insert.recs = recs;
    op.job_insert.count = n;
    run_op(f, &op);
    assert_int_equal(op.status, 0);
    if (add) lb_jobs_add(f->jobs, recs, n);
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
    for (int i = 0; i < 20; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
}

/* status, last_error and steps of a job row, read with the test's own connection. */
static void row(fixture *f, const char *id, char *status, char *err, size_t errlen, char *steps,
                size_t stepslen)
{
    usleep(20000);
    for (int i = 0; i < 50; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT status, COALESCE(last_error, ''),"
                                        " COALESCE(steps, '') FROM jobs WHERE id = ?1",
                                        -1, &q, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    strcpy(status, (const char *)sqlite3_column_text(q, 0));
    if (err != NULL) snprintf(err, errlen, "%s", (const char *)sqlite3_column_text(q, 1));
    if (steps != NULL) snprintf(steps, stepslen, "%s", (const char *)sqlite3_column_text(q, 2));
    sqlite3_finalize(q);
    sqlite3_close(db);
}

static void expect_job(fixture *f, const char *id, const char *status, const char *err_part)
{
    char st[16], err[512];
    row(f, id, st, err, sizeof(err), NULL, 0);
    if (strcmp(st, status) != 0) fail_msg("job %s: %s (%s), expected %s", id, st, err, status);
    if (err_part != NULL && strstr(err, err_part) == NULL)
        fail_msg("job %s: error \"%s\" lacks \"%s\"", id, err, err_part);
}

/* The invitation row, or status LB_ENOTFOUND. */
static int invitation(fixture *f, const char *opp, const char *assessment, lb_invitation_rec *out)
{
    lb_store_op op = {.kind = LB_STORE_INVITATION_GET};
    snprintf(op.invitation_get.tenant_id, sizeof(op.invitation_get.tenant_id), "acme");
    op.invitation_get.opportunity_id = opp;
    op.invitation_get.assessment = assessment;
    run_op(f, &op);
    *out = op.invitation_get.rec;
    return op.status;
}

static void put_invitation(fixture *f, const char *opp, const char *job_id, const char *note_id)
{
    lb_invitation_rec r;
    memset(&r, 0, sizeof(r));
    snprintf(r.tenant_id, sizeof(r.tenant_id), "acme");
    r.opportunity_id = (char *)opp;
    r.assessment = "js-senior";
    r.job_id = (char *)job_id;
    lb_store_op op = {.kind = LB_STORE_INVITATION_CLAIM};
    op.invitation_claim.rec = &r;
    run_op(f, &op);
    assert_int_equal(op.status, 0);
    lb_invitation_rec_free(&op.invitation_claim.existing);
    if (note_id != NULL) {
        r.invitation_id = "inv_x";
        r.url = "https://assess.test/i/inv_x";
        r.note_id = (char *)note_id;
        lb_store_op up = {.kind = LB_STORE_INVITATION_UPDATE};
        up.invitation_update.rec = &r;
        run_op(f, &up);
        assert_int_equal(up.status, 0);
    }
}

static fnote *add_fake_note(fixture *f, const char *value, int64_t created)
{
    fnote *n = &f->notes[f->nnotes++];
    snprintf(n->id, sizeof(n->id), "n%d", f->nnotes);
    snprintf(n->value, sizeof(n->value), "%s", value);
    n->created = created;
    return n;
}

static int count_notes(fixture *f, const char *value)
{
    int c = 0;
    for (int i = 0; i < f->nnotes; i++)
        c += strcmp(f->notes[i].value, value) == 0;
    return c;
}

static const char SEND[] = "{\"type\":\"send_assessment\",\"assessment\":\"js-senior\","
                           "\"context\":{\"event\":\"stage_changed\",\"to_stage\":\"s2\"}}";

/* ---- send_assessment -------------------------------------------------------- */

static void send_whole(void **state)
{
    fixture *f = *state;
    lb_job_rec r = job("job_send1", SEND, "o1");
    insert(f, &r, 1, 1);
    run_until_ended(f, 1);
    expect_job(f, "job_send1", "succeeded", NULL);
    assert_int_equal(f->platform_calls, 1);
    assert_int_equal(f->invitations, 1);
    assert_string_equal(f->keys[0], "job_send1");
    assert_string_equal(f->last_auth, "Bearer ptok");
    char err[64];
    yajl_val b = lb_json_parse(f->last_body, strlen(f->last_body), err, sizeof(err));
    assert_string_equal(lb_json_get_str(b, "tenant_id"), "acme");
    assert_string_equal(lb_json_get_str(b, "assessment"), "js-senior");
    yajl_val cand = lb_json_get_obj(b, "candidate");
    assert_string_equal(lb_json_get_str(cand, "name"), "Ada Lovelace");
    assert_string_equal(lb_json_get_str(cand, "email"), "ada@example.com");
    yajl_val lever = lb_json_get_obj(b, "lever");
    assert_string_equal(lb_json_get_str(lever, "opportunity_id"), "o1");
    assert_string_equal(lb_json_get_str(lever, "candidate_id"), "c-o1");
    assert_string_equal(lb_json_get_str(lever, "posting_id"), "p1");
    yajl_tree_free(b);
    /* the status note, once, and the invitation row complete */
    assert_int_equal(f->note_posts, 1);
    assert_int_equal(f->note_lists, 0); /* nothing to look for on a first try */
    assert_string_equal(f->notes[0].value,
                        "Assessment js-senior sent: https://assess.test/i/inv_0");
    assert_int_equal(f->notes[0].secret, 0);
    lb_invitation_rec inv;
    assert_int_equal(invitation(f, "o1", "js-senior", &inv), 0);
    assert_string_equal(inv.job_id, "job_send1");
    assert_string_equal(inv.invitation_id, "inv_0");
    assert_string_equal(inv.url, "https://assess.test/i/inv_0");
    assert_string_equal(inv.note_id, "n1");
    lb_invitation_rec_free(&inv);
}

static void send_twice_is_skipped(void **state)
{
    fixture *f = *state;
    lb_job_rec r[2] = {job("job_a", SEND, "o1"), job("job_b", SEND, "o1")};
    insert(f, &r[0], 1, 1);
    run_until_ended(f, 1);
    insert(f, &r[1], 1, 1);
    run_until_ended(f, 2);
    expect_job(f, "job_a", "succeeded", NULL);
    expect_job(f, "job_b", "skipped", "already_invited");
    assert_int_equal(f->platform_calls, 1);
    assert_int_equal(f->note_posts, 1);
}

static void platform_errors(void **state)
{
    fixture *f = *state;
    /* 503s retry with the same Idempotency-Key: one invitation. */
    f->platform_503 = 2;
    lb_job_rec r = job("job_flaky", SEND, "o1");
    insert(f, &r, 1, 1);
    run_until_ended(f, 1);
    expect_job(f, "job_flaky", "succeeded", NULL);
    assert_int_equal(f->platform_calls, 3);
    assert_int_equal(f->invitations, 1);
    assert_int_equal(f->note_posts, 1);
    /* Another 4xx fails the job with the platform's words. */
    f->platform_status = 422;
    lb_job_rec r2 = job("job_422", SEND, "o2");
    insert(f, &r2, 1, 1);
    run_until_ended(f, 2);
    expect_job(f, "job_422", "failed", "unknown assessment");
    assert_int_equal(f->platform_calls, 4);
    /* A candidate without an email is never sent. */
    f->platform_status = 0;
    lb_job_rec r3 = job("job_noemail", SEND, "noemail");
    insert(f, &r3, 1, 1);
    run_until_ended(f, 3);
    expect_job(f, "job_noemail", "failed", "no email");
    assert_int_equal(f->platform_calls, 4);
    /* Lever's 404 on the opportunity fails with Lever's message. */
    lb_job_rec r4 = job("job_gone", SEND, "gone");
    insert(f, &r4, 1, 1);
    run_until_ended(f, 4);
    expect_job(f, "job_gone", "failed", "No such opportunity");
}

static void platform_not_configured(void **state)
{
    fixture *f = *state;
    engine_close(f);
    f->platform_on = 0;
    engine_open(f);
    lb_job_rec r = job("job_np", SEND, "o1");
    insert(f, &r, 1, 1);
    run_until_ended(f, 1);
    expect_job(f, "job_np", "failed", "platform not configured");
    assert_int_equal(f->opp_reads, 0);
    /* nothing claimed: a later try once configured is not "already invited" */
    lb_invitation_rec inv;
    assert_int_equal(invitation(f, "o1", "js-senior", &inv), LB_ENOTFOUND);
}

/* As a crash leaves it: invited, stored, note_at recorded, the note
 * perhaps created in Lever. */
static void restart_job(fixture *f, const char *id, const char *opp, int64_t note_at)
{
    char steps[512];
    snprintf(steps, sizeof(steps),
             "{\"claim\":\"1\",\"opportunity\":\"{\\\"name\\\":\\\"Ada\\\",\\\"email\\\":"
             "\\\"ada@example.com\\\"}\",\"invitation\":\"{\\\"invitation_id\\\":\\\"inv_7\\\","
             "\\\"url\\\":\\\"https://assess.test/i/inv_7\\\"}\",\"stored\":\"1\","
             "\"note_at\":\"%lld\"}",
             (long long)note_at);
    put_invitation(f, opp, id, NULL);
    lb_job_rec r = job(id, SEND, opp);
    r.status = LB_JOB_RUNNING;
    r.attempts = 1;
    r.steps = steps;
    insert(f, &r, 1, 0);
    engine_close(f);
    engine_open(f);
    assert_int_equal(lb_jobs_load(f->jobs), 0);
}

static void restart_finds_the_note(void **state)
{
    fixture *f = *state;
    const char *text = "Assessment js-senior sent: https://assess.test/i/inv_7";
    int64_t now = lb_time_now_ms();
    /* The note sits on the third page, after notes of other kinds; an
     * identical but much older note (before note_at - skew) is not taken. */
    add_fake_note(f, text, now - 3600 * 1000)->id[0] = 'x';
    add_fake_note(f, "something else", now);
    add_fake_note(f, "Assessment js-senior sent: https://assess.test/i/inv_9", now);
    add_fake_note(f, "a human's note", now);
    fnote *ours = add_fake_note(f, text, now);
    char ours_id[16];
    snprintf(ours_id, sizeof(ours_id), "%s", ours->id);
    restart_job(f, "job_crash", "o1", now - 1000);
    run_until_ended(f, 1);
    expect_job(f, "job_crash", "succeeded", NULL);
    assert_int_equal(f->note_posts, 0); /* no second note */
    assert_int_equal(f->note_lists, 3);
    assert_int_equal(f->platform_calls, 0); /* the invitation was recorded */
    lb_invitation_rec inv;
    assert_int_equal(invitation(f, "o1", "js-senior", &inv), 0);
    assert_string_equal(inv.note_id, ours_id);
    lb_invitation_rec_free(&inv);
}

static void restart_without_the_note_creates_it(void **state)
{
    fixture *f = *state;
    restart_job(f, "job_crash2", "o1", lb_time_now_ms());
    run_until_ended(f, 1);
    expect_job(f, "job_crash2", "succeeded", NULL);
    assert_int_equal(f->note_lists, 1);
    assert_int_equal(f->note_posts, 1);
    assert_int_equal(count_notes(f, "Assessment js-senior sent: https://assess.test/i/inv_7"), 1);
}

static void note_retry_after_5xx_does_not_duplicate(void **state)
{
    fixture *f = *state;
    /* Lever creates the note and then answers 503: the retry lists first. */
    f->note_post_fail = 1;
    lb_job_rec r = job("job_5xx", SEND, "o1");
    insert(f, &r, 1, 1);
    run_until_ended(f, 1);
    expect_job(f, "job_5xx", "succeeded", NULL);
    assert_int_equal(f->note_posts, 1);
    assert_int_equal(f->note_lists, 1);
    assert_int_equal(count_notes(f, "Assessment js-senior sent: https://assess.test/i/inv_0"), 1);
    lb_invitation_rec inv;
    assert_int_equal(invitation(f, "o1", "js-senior", &inv), 0);
    assert_string_equal(inv.note_id, "n1");
    lb_invitation_rec_free(&inv);
}

/* ---- add_note ------------------------------------------------------------- */

static void add_note_renders(void **state)
{
    fixture *f = *state;
    put_invitation(f, "o1", "job_owner", "n99");
    lb_job_rec r[2] = {
        job("job_n1",
            "{\"type\":\"add_note\",\"text\":\"{{candidate.name}} ({{candidate.email}}) scored "
            "{{score}}/{{max_score}} on {{assessment}}: {{report_url}} [{{invitation_url}}]\","
            "\"secret\":true,\"context\":{\"event\":\"assessment_completed\",\"assessment\":"
            "\"js-senior\",\"score\":87,\"max_score\":100.5,\"report_url\":\"https://r/1\","
            "\"status\":\"completed\"}}",
            "o1"),
        job("job_n2",
            "{\"type\":\"add_note\",\"text\":\"Expired: {{assessment}}{{score}}\","
            "\"context\":{\"event\":\"assessment_expired\",\"assessment\":\"js-senior\","
            "\"status\":\"expired\"}}",
            "o2"),
    };
    insert(f, r, 2, 1);
    run_until_ended(f, 2);
    expect_job(f, "job_n1", "succeeded", NULL);
    expect_job(f, "job_n2", "succeeded", NULL);
    assert_int_equal(f->note_posts, 2);
    assert_int_equal(f->opp_reads, 1); /* only the template with candidate.* reads */
    assert_int_equal(count_notes(f, "Ada Lovelace (ada@example.com) scored 87/100.5 on "
                                    "js-senior: https://r/1 [https://assess.test/i/inv_x]"),
                     1);
    assert_int_equal(count_notes(f, "Expired: js-senior"), 1);
    for (int i = 0; i < f->nnotes; i++)
        assert_int_equal(f->notes[i].secret, strncmp(f->notes[i].value, "Ada", 3) == 0);
}

static void add_note_bad_input_fails(void **state)
{
    fixture *f = *state;
    lb_job_rec r[4] = {
        job("job_bad1", "{\"type\":\"add_note\",\"text\":\"{{nope}}\"}", "o1"),
        job("job_bad4", SEND, NULL),
        job("job_bad2", "{\"type\":\"add_note\"}", "o1"),
        job("job_bad3", "{\"type\":\"add_note\",\"text\":\"{{report_url}}\",\"context\":{}}", "o1"),
    };
    insert(f, r, 4, 1);
    run_until_ended(f, 4);
    expect_job(f, "job_bad1", "failed", "{{nope}}");
    expect_job(f, "job_bad4", "failed", "no opportunity");
    expect_job(f, "job_bad2", "failed", "needs a text");
    expect_job(f, "job_bad3", "failed", "empty");
    assert_int_equal(f->note_posts, 0);
}

/* ---- update_status_note --------------------------------------------------- */

static void update_status_note(void **state)
{
    fixture *f = *state;
    put_invitation(f, "o1", "job_owner", "n42");
    put_invitation(f, "o2", "job_owner2", "n43");
    lb_job_rec r[3] = {
        job("job_u1",
            "{\"type\":\"update_status_note\",\"context\":{\"event\":\"assessment_completed\","
            "\"assessment\":\"js-senior\",\"status\":\"completed\",\"score\":87,"
            "\"max_score\":100,\"report_url\":\"https://r/1\"}}",
            "o1"),
        job("job_u2",
            "{\"type\":\"update_status_note\",\"context\":{\"event\":\"assessment_expired\","
            "\"assessment\":\"js-senior\",\"status\":\"expired\"}}",
            "o2"),
        job("job_u3",
            "{\"type\":\"update_status_note\",\"context\":{\"assessment\":\"js-senior\","
            "\"status\":\"completed\",\"score\":1,\"max_score\":2}}",
            "o3"),
    };
    insert(f, &r[0], 1, 1);
    run_until_ended(f, 1);
    expect_job(f, "job_u1", "succeeded", NULL);
    assert_string_equal(f->put_id, "n42");
    assert_string_equal(f->put_value, "Assessment js-senior completed: 87/100 https://r/1");
    insert(f, &r[1], 1, 1);
    run_until_ended(f, 2);
    expect_job(f, "job_u2", "succeeded", NULL);
    assert_string_equal(f->put_id, "n43");
    assert_string_equal(f->put_value, "Assessment js-senior expired");
    insert(f, &r[2], 1, 1);
    run_until_ended(f, 3);
    expect_job(f, "job_u3", "skipped", "no_invitation");
    assert_int_equal(f->note_puts, 2);
}

static void update_waits_for_the_note(void **state)
{
    fixture *f = *state;
    /* The invitation's job has not written the note: the update waits
     * (retries) while that job may still write it, and is skipped once the
     * job has failed. */
    lb_job_rec owner = job("job_owner", "{\"type\":\"add_tags\",\"tags\":[\"x\"]}", "o1");
    owner.next_run_at = lb_time_now_ms() + 3600 * 1000; /* queued, not run now */
    insert(f, &owner, 1, 0);
    put_invitation(f, "o1", "job_owner", NULL);
    lb_job_rec r = job("job_wait",
                       "{\"type\":\"update_status_note\",\"context\":{\"assessment\":"
                       "\"js-senior\",\"status\":\"expired\"}}",
                       "o1");
    insert(f, &r, 1, 1);
    uint64_t t0 = uv_hrtime();
    while (uv_hrtime() - t0 < 200ull * 1000 * 1000)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    char st[16], err[256];
    row(f, "job_wait", st, err, sizeof(err), NULL, 0);
    assert_true(strcmp(st, "retrying") == 0 || strcmp(st, "running") == 0);
    assert_non_null(strstr(err, "waiting for the invitation's status note"));
    /* the owner fails: the next try gives up on the note */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000); /* the store's thread writes meanwhile */
    assert_int_equal(sqlite3_exec(db, "UPDATE jobs SET status = 'failed' WHERE id = 'job_owner'",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    run_until_ended(f, 1);
    expect_job(f, "job_wait", "skipped", "no_status_note");
    assert_int_equal(f->note_puts, 0);
}

static void texts(void **state)
{
    (void)state;
    char b[128];
    lb_assess_outcome_text(b, sizeof(b), "a", "completed", "1", "2", NULL);
    assert_string_equal(b, "Assessment a completed: 1/2");
    lb_assess_outcome_text(b, sizeof(b), "a", "completed", "1", "2", "u");
    assert_string_equal(b, "Assessment a completed: 1/2 u");
    lb_assess_outcome_text(b, sizeof(b), "a", "expired", NULL, NULL, "u");
    assert_string_equal(b, "Assessment a expired");
    lb_assess_sent_text(b, sizeof(b), "a", "https://x");
    assert_string_equal(b, "Assessment a sent: https://x");
    char err[64];
    yajl_val v = lb_json_parse("[87, 87.5, \"90\", 1e2, null]", 27, err, sizeof(err));
    const char *want[] = {"87", "87.5", "90", "100", ""};
    for (size_t i = 0; i < 5; i++) {
        lb_assess_number_text(v->u.array.values[i], b, sizeof(b));
        assert_string_equal(b, want[i]);
    }
    yajl_tree_free(v);
}

int main(void)
{
    lb_http_client_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(send_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(send_twice_is_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(platform_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(platform_not_configured, setup, teardown),
        cmocka_unit_test_setup_teardown(restart_finds_the_note, setup, teardown),
        cmocka_unit_test_setup_teardown(restart_without_the_note_creates_it, setup, teardown),
        cmocka_unit_test_setup_teardown(note_retry_after_5xx_does_not_duplicate, setup, teardown),
        cmocka_unit_test_setup_teardown(add_note_renders, setup, teardown),
        cmocka_unit_test_setup_teardown(add_note_bad_input_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(update_status_note, setup, teardown),
        cmocka_unit_test_setup_teardown(update_waits_for_the_note, setup, teardown),
        cmocka_unit_test(texts),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    lb_http_client_global_cleanup();
    return rc;
}
