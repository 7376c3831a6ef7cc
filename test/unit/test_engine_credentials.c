/* The credentials module on one loop, with a real SQLite store and an
 * in-process fake of Lever's token endpoint that holds each call until the
 * test answers it: one refresh per tenant however many ask (single flight),
 * a refresh failed in transit retried by the timer (a 408 too) and one Lever
 * refuses turning needs_reauth, the 401 policy for API keys and OAuth, the
 * missing-permission list, and forgetting on disconnect. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "loop_helpers.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/time.h"
#include "engine/credentials.h"
#include "http/response.h"
#include "http/router.h"
#include "http/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    uv_loop_t loop;
    char dir[64], url[160], base[64];
    lb_store *store;
    lb_http_server *srv;
    lb_router *router;
    lb_http_client *client;
    lb_outbound *ob;
    lb_master_key key;
    lb_conns conns;
    lb_cred *cred;
    /* fake token endpoint */
    int token_calls;
    lb_http_req *held; /* the call waiting for an answer */
    char form[1024];   /* its body */
    /* the lease gate: 1 while this replica holds every tenant */
    lb_gate gate;
    int holds;
} fixture;

static int gate_holds(void *data, const char *tenant)
{
    (void)tenant;
    return ((fixture *)data)->holds;
}

/* ---- fake token endpoint ------------------------------------------------- */

static void token(lb_http_req *req, void *data)
{
    fixture *f = data;
    f->token_calls++;
    snprintf(f->form, sizeof(f->form), "%.*s", (int)req->body_len, req->body);
    f->held = req;
}

static void answer(fixture *f, int status, const char *body)
{
    assert_non_null(f->held);
    lb_http_req *req = f->held;
    f->held = NULL;
    lb_http_respond_static(req, status, "application/json", NULL, body, strlen(body));
}

static const char tokens[] =
    "{\"access_token\":\"at2\",\"refresh_token\":\"rt2\",\"expires_in\":3600}";

/* ---- loop helpers ------------------------------------------------------ */

static void tick_cb(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop for ms, or until *flag is set or a token call is held
 * (whichever is asked for, when not NULL). */
static void run(fixture *f, const int *flag, int for_held, int ms)
{
    uv_timer_t tick;
    uv_timer_init(&f->loop, &tick);
    uv_timer_start(&tick, tick_cb, 5, 5);
    int64_t until = lb_time_now_ms() + ms;
    while (!(flag != NULL && *flag) && !(for_held && f->held != NULL) && lb_time_now_ms() < until)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void run_until(fixture *f, const int *flag)
{
    run(f, flag, 0, 5000);
    assert_true(*flag);
}

static void run_until_held(fixture *f)
{
    run(f, NULL, 1, 5000);
    assert_non_null(f->held);
}

/* Runs the loop until the tenant's refresh has ended (its tokens stored
 * and applied, or its failure handled). */
static void run_while_refreshing(fixture *f)
{
    int64_t until = lb_time_now_ms() + 5000;
    while (lb_cred_refreshing(f->cred, "acme") && lb_time_now_ms() < until)
        run(f, NULL, 0, 5);
    assert_false(lb_cred_refreshing(f->cred, "acme"));
}

static void sync_done(lb_store_op *op)
{
    (*(int *)op->data)++;
}

/* Waits for every store write submitted before (the store answers in
 * order). */
static void sync_store(fixture *f)
{
    int done = 0;
    lb_store_op op = {.kind = LB_STORE_META_GET, .meta_get.key = "none", .cb = sync_done};
    op.data = &done;
    assert_int_equal(lb_store_submit(f->store, &op), 0);
    run_until(f, &done);
}

/* Lets the loop run for ms (answers in flight arrive). */
static void run_for(fixture *f, int ms)
{
    run(f, NULL, 0, ms);
}

static void store_run(fixture *f, lb_store_op *op)
{
    int done = 0;
    op->cb = lbt_store_done;
    op->data = &done;
    assert_int_equal(lb_store_submit(f->store, op), 0);
    run_until(f, &done);
}

/* The tenant's connection row's status as stored, or "" when none. */
static void stored_status(fixture *f, const char *tenant, char *out, size_t size)
{
    lb_store_op op = {.kind = LB_STORE_CONN_LOAD_ALL};
    store_run(f, &op);
    assert_int_equal(op.status, 0);
    snprintf(out, size, "%s", "");
    for (size_t i = 0; i < op.conn_load_all.nconns; i++) {
        if (strcmp(op.conn_load_all.conns[i].tenant_id, tenant) == 0)
            snprintf(out, size, "%s", op.conn_load_all.conns[i].status);
        lb_conn_rec_free(&op.conn_load_all.conns[i]);
    }
    for (size_t i = 0; i < op.conn_load_all.nhooks; i++)
        lb_hook_rec_free(&op.conn_load_all.hooks[i]);
    lb_free(op.conn_load_all.conns);
    lb_free(op.conn_load_all.hooks);
}

/* A connection, stored and in memory, as a connect leaves it. */
static void connect_conn(fixture *f, const char *tenant, lb_auth_kind auth, int64_t expires_in)
{
    lb_store_op top = {.kind = LB_STORE_TENANT_UPSERT};
    snprintf(top.tenant_upsert.rec.id, sizeof(top.tenant_upsert.rec.id), "%s", tenant);
    top.tenant_upsert.rec.name = "Acme";
    store_run(f, &top);
    lb_conn c;
    memset(&c, 0, sizeof(c));
    snprintf(c.tenant_id, sizeof(c.tenant_id), "%s", tenant);
    c.status = LB_CONN_CONNECTED;
    c.auth = auth;
    int64_t now = lb_time_now_ms();
    if (auth == LB_AUTH_API_KEY) {
        c.api_key = lb_strdup("key1");
    } else {
        c.access_token = lb_strdup("at1");
        c.refresh_token = lb_strdup("rt1");
        c.token_ttl_ms = 3600 * 1000;
        c.token_expires_at = now + expires_in;
    }
    c.connected_at = c.updated_at = now;
    lb_conn_rec rec;
    lb_conn_to_rec(&f->conns, &c, &rec);
    lb_store_op op = {.kind = LB_STORE_CONN_PUT, .conn_put.rec = &rec};
    store_run(f, &op);
    assert_int_equal(op.status, 0);
    lb_conn_rec_free(&rec);
    lb_conns_apply(&f->conns, &c);
    lb_conn_clear(&c);
}

/* ---- fixture ----------------------------------------------------------- */

static int setup(void **state)
{
    fixture *f = LB_NEW(fixture);
    uv_loop_init(&f->loop);
    lbt_tmpdir(f->dir, sizeof(f->dir), "lbcred");
    snprintf(f->url, sizeof(f->url), "sqlite:%s/db", f->dir);
    char err[256];
    assert_int_equal(lb_store_open(&f->loop, f->url, NULL, &f->store, err, sizeof(err)), 0);
    f->router = lb_router_new();
    lb_router_add(f->router, "POST", "/oauth/token", token, f);
    int port = lbt_server_start(&f->loop, f->router, 100, &f->srv);
    snprintf(f->base, sizeof(f->base), "http://127.0.0.1:%d", port);
    lb_http_client_config cc = {.max_inflight = 16, .timeout_ms = 5000};
    assert_int_equal(lb_http_client_new(&f->loop, &cc, &f->client), 0);
    assert_int_equal(lb_outbound_new(&f->loop, f->client, &f->ob), 0);
    memset(&f->key, 7, sizeof(f->key));
    lb_conns_init(&f->conns, &f->key);
    lb_cred_config cfg = {.lever_api_url = f->base,
                          .lever_auth_url = f->base,
                          .client_id = "client",
                          .client_secret = "secret",
                          .public_url = "http://lb.test",
                          .webhook_deadline_ms = 60000,
                          .lever_rate = 10,
                          .lever_burst = 10,
                          .refresh_retry_ms = 50,
                          .gate = &f->gate};
    f->holds = 1;
    f->gate = (lb_gate){.holds = gate_holds, .data = f};
    assert_int_equal(
        lb_cred_new(&f->loop, f->store, &f->conns, NULL, f->ob, f->client, &f->key, &cfg, &f->cred),
        0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->held != NULL) answer(f, 503, "{}");
    int n = 0;
    lb_outbound_close(f->ob, lbt_count_cb, &n);
    lb_http_client_close(f->client, lbt_count_cb, &n);
    lb_http_server_close(f->srv, lbt_count_cb, &n);
    lb_cred_close(f->cred);
    while (n < 3)
        uv_run(&f->loop, UV_RUN_ONCE);
    lb_store_close(f->store, lbt_count_cb, &n);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(n, 4);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    lb_cred_free(f->cred);
    lb_conns_free(&f->conns);
    lb_router_free(f->router);
    lbt_rmdir(f->dir);
    lb_free(f);
    return 0;
}

static const lb_conn *conn(fixture *f)
{
    return lb_conns_get(&f->conns, "acme");
}

/* ---- refresh ----------------------------------------------------------- */

static void test_refresh_single_flight(void **state)
{
    fixture *f = *state;
    connect_conn(f, "acme", LB_AUTH_OAUTH, 60 * 1000); /* within 5 minutes of expiry */
    lb_lever_auth auth = {0};
    for (int i = 0; i < 5; i++) {
        memset(&auth, 0, sizeof(auth));
        /* still valid a minute: handed out while the refresh runs */
        assert_int_equal(lb_cred_auth(f->cred, "acme", &auth), 0);
        assert_string_equal(auth.access_token, "at1");
    }
    assert_true(lb_cred_refreshing(f->cred, "acme"));
    run_until_held(f);
    assert_non_null(strstr(f->form, "grant_type=refresh_token"));
    assert_non_null(strstr(f->form, "refresh_token=rt1"));
    lb_cred_auth(f->cred, "acme", &auth);
    run_for(f, 30);
    assert_int_equal(f->token_calls, 1); /* one refresh however many asked */
    answer(f, 200, tokens);
    run_while_refreshing(f);
    assert_false(lb_cred_refreshing(f->cred, "acme"));
    assert_string_equal(conn(f)->access_token, "at2");
    assert_string_equal(conn(f)->refresh_token, "rt2"); /* the rotated one, stored */
    assert_true(conn(f)->refreshed_at > 0);
    memset(&auth, 0, sizeof(auth));
    assert_int_equal(lb_cred_auth(f->cred, "acme", &auth), 0);
    assert_string_equal(auth.access_token, "at2");
    assert_false(lb_cred_refreshing(f->cred, "acme")); /* fresh: nothing to refresh */
    assert_int_equal(f->token_calls, 1);
}

static void retried_after(fixture *f, int status)
{
    connect_conn(f, "acme", LB_AUTH_OAUTH, 60 * 1000);
    lb_lever_auth auth = {0};
    assert_int_equal(lb_cred_auth(f->cred, "acme", &auth), 0);
    run_until_held(f);
    answer(f, status, "{}");
    run_while_refreshing(f);
    /* transient: retried by the timer (50 ms here), the connection as it was */
    assert_false(lb_cred_refreshing(f->cred, "acme"));
    assert_int_equal(conn(f)->status, LB_CONN_CONNECTED);
    assert_true(conn(f)->refresh_retry_at > 0);
    /* no refresh is started by use while one waits for the timer */
    assert_int_equal(lb_cred_auth(f->cred, "acme", &auth), 0);
    assert_false(lb_cred_refreshing(f->cred, "acme"));
    run_until_held(f);
    assert_int_equal(f->token_calls, 2);
    assert_int_equal(conn(f)->refresh_retry_at, 0);
    answer(f, 200, tokens);
    run_while_refreshing(f);
    assert_string_equal(conn(f)->access_token, "at2");
}

static void test_refresh_retried_after_503(void **state)
{
    retried_after(*state, 503);
}

static void test_refresh_retried_after_408(void **state)
{
    retried_after(*state, 408); /* Lever's transient, as for every call */
}

/* A refresh that failed in transit is not retried by a replica that lost
 * the tenant's lease meanwhile: the holder refreshes (two replicas
 * refreshing would spend each other's rotating refresh token). */
static void test_refresh_retry_only_by_the_holder(void **state)
{
    fixture *f = *state;
    connect_conn(f, "acme", LB_AUTH_OAUTH, 60 * 1000);
    lb_lever_auth auth = {0};
    assert_int_equal(lb_cred_auth(f->cred, "acme", &auth), 0);
    run_until_held(f);
    answer(f, 503, "{}");
    run_while_refreshing(f);
    assert_true(conn(f)->refresh_retry_at > 0);
    f->holds = 0; /* the lease moved on */
    run_for(f, 200);
    assert_int_equal(f->token_calls, 1);
    assert_false(lb_cred_refreshing(f->cred, "acme"));
    assert_int_equal(conn(f)->refresh_retry_at, 0);
}

static void test_refresh_refused(void **state)
{
    fixture *f = *state;
    connect_conn(f, "acme", LB_AUTH_OAUTH, 60 * 1000);
    lb_lever_auth auth = {0};
    assert_int_equal(lb_cred_auth(f->cred, "acme", &auth), 0);
    run_until_held(f);
    answer(f, 400, "{\"error\":\"invalid_grant\"}");
    run_while_refreshing(f);
    assert_int_equal(conn(f)->status, LB_CONN_NEEDS_REAUTH);
    assert_int_equal(lb_cred_auth(f->cred, "acme", &auth), LB_ENOTFOUND);
    char st[32];
    stored_status(f, "acme", st, sizeof(st));
    assert_string_equal(st, "needs_reauth");
    run_for(f, 100);
    assert_int_equal(f->token_calls, 1); /* not retried */
}

/* ---- 401 ----------------------------------------------------------------- */

static void test_401_api_key(void **state)
{
    fixture *f = *state;
    connect_conn(f, "acme", LB_AUTH_API_KEY, 0);
    lb_lever_auth auth = {0};
    assert_int_equal(lb_cred_auth(f->cred, "acme", &auth), 0);
    assert_string_equal(auth.api_key, "key1");
    lb_cred_unauthorized(f->cred, "acme");
    /* at once, before the store answered: calls stop using the key */
    assert_int_equal(conn(f)->status, LB_CONN_NEEDS_REAUTH);
    assert_int_equal(lb_cred_auth(f->cred, "acme", &auth), LB_ENOTFOUND);
    char st[32];
    stored_status(f, "acme", st, sizeof(st));
    assert_string_equal(st, "needs_reauth");
    assert_int_equal(f->token_calls, 0);
}

static void test_401_oauth_refreshes_once(void **state)
{
    fixture *f = *state;
    connect_conn(f, "acme", LB_AUTH_OAUTH, 3600 * 1000); /* fresh */
    lb_lever_auth auth = {0};
    assert_int_equal(lb_cred_auth(f->cred, "acme", &auth), 0);
    assert_false(lb_cred_refreshing(f->cred, "acme"));
    lb_cred_unauthorized(f->cred, "acme");
    /* a refresh instead of needs_reauth; the token is not handed out */
    assert_true(lb_cred_refreshing(f->cred, "acme"));
    assert_int_equal(conn(f)->status, LB_CONN_CONNECTED);
    assert_int_equal(lb_cred_auth(f->cred, "acme", &auth), UV_EAGAIN);
    run_until_held(f);
    answer(f, 200, tokens);
    run_while_refreshing(f);
    assert_int_equal(lb_cred_auth(f->cred, "acme", &auth), 0);
    assert_string_equal(auth.access_token, "at2");
    /* the refreshed token gets a 401 too, within a minute: the grant is gone */
    lb_cred_unauthorized(f->cred, "acme");
    assert_false(lb_cred_refreshing(f->cred, "acme"));
    assert_int_equal(conn(f)->status, LB_CONN_NEEDS_REAUTH);
    char st[32];
    stored_status(f, "acme", st, sizeof(st));
    assert_string_equal(st, "needs_reauth");
    assert_int_equal(f->token_calls, 1);
}

/* ---- permissions ------------------------------------------------------------ */

static void test_missing_permissions(void **state)
{
    fixture *f = *state;
    connect_conn(f, "acme", LB_AUTH_API_KEY, 0);
    lb_cred_permission(f->cred, "acme", "find all stages", 0);
    assert_int_equal(conn(f)->nmissing, 0); /* memory follows the store */
    sync_store(f);
    assert_int_equal(conn(f)->nmissing, 1);
    assert_string_equal(conn(f)->missing[0], "find all stages");
    int64_t updated = conn(f)->updated_at;
    lb_cred_permission(f->cred, "acme", "find all stages", 0); /* already listed */
    lb_cred_permission(f->cred, "acme", "find a stage", 1);    /* never missing */
    sync_store(f);
    assert_int_equal(conn(f)->nmissing, 1);
    assert_int_equal(conn(f)->updated_at, updated);
    lb_cred_permission(f->cred, "acme", "find all stages", 1); /* fixed in Lever */
    sync_store(f);
    assert_int_equal(conn(f)->nmissing, 0);
    lb_cred_permission(f->cred, "nobody", "find all stages", 0); /* not connected: nothing */
    sync_store(f);
    assert_null(lb_conns_get(&f->conns, "nobody"));
}

/* ---- forgetting ------------------------------------------------------------ */

static void test_forget_drops_refresh_in_flight(void **state)
{
    fixture *f = *state;
    connect_conn(f, "acme", LB_AUTH_OAUTH, 60 * 1000);
    lb_lever_auth auth = {0};
    assert_int_equal(lb_cred_auth(f->cred, "acme", &auth), 0);
    run_until_held(f);
    lb_cred_forget(f->cred, "acme");
    assert_null(conn(f));
    assert_int_equal(lb_cred_auth(f->cred, "acme", &auth), LB_ENOTFOUND);
    /* connected again before the old refresh answers: it must not win */
    connect_conn(f, "acme", LB_AUTH_API_KEY, 0);
    answer(f, 200, tokens);
    run_while_refreshing(f);
    assert_false(lb_cred_refreshing(f->cred, "acme"));
    assert_int_equal(conn(f)->auth, LB_AUTH_API_KEY);
    assert_null(conn(f)->access_token);
    assert_int_equal(conn(f)->status, LB_CONN_CONNECTED);
}

static int disconnect_status = 99;

static void disconnected(void *data, int status)
{
    disconnect_status = status;
    (*(int *)data)++;
}

static void test_disconnect(void **state)
{
    fixture *f = *state;
    connect_conn(f, "acme", LB_AUTH_API_KEY, 0);
    int done = 0;
    assert_int_equal(lb_cred_disconnect(f->cred, "acme", disconnected, &done), 0);
    assert_non_null(conn(f)); /* memory follows the store */
    run_until(f, &done);
    assert_int_equal(disconnect_status, 0);
    assert_null(conn(f));
    char st[32];
    stored_status(f, "acme", st, sizeof(st));
    assert_string_equal(st, "");
    lb_lever_auth auth = {0};
    assert_int_equal(lb_cred_auth(f->cred, "acme", &auth), LB_ENOTFOUND);
}

/* ---- rate ---------------------------------------------------------------- */

static void test_rate_defaults(void **state)
{
    fixture *f = *state;
    double rate;
    int burst;
    lb_cred_rate(f->cred, "acme", &rate, &burst);
    assert_true(rate == 10.0);
    assert_int_equal(burst, 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_refresh_single_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refresh_retried_after_503, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refresh_retried_after_408, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refresh_retry_only_by_the_holder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refresh_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_401_api_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_401_oauth_refreshes_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_permissions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forget_drops_refresh_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rate_defaults, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
