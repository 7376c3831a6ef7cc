/* State sync's apply (cluster/sync.h): rows of one tenant or of all of
 * them applied to the in-memory state, with signature tokens opened; the
 * same rows applied again change nothing (the objects stay where they
 * were); what the store no longer has is removed. No store and no engine:
 * the parts are NULL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cluster/sync.h"
#include "core/alloc.h"

#include <stdio.h>
#include <string.h>

#define WF_BODY                                                                                    \
    "{\"name\":\"tag\",\"trigger\":{\"event\":\"stage_changed\",\"to_stage\":\"S2\"},"             \
    "\"actions\":[{\"type\":\"add_tags\",\"tags\":[\"seen\"]}]}"

typedef struct {
    uv_loop_t loop;
    lb_master_key key;
    lb_tenants tenants;
    lb_conns conns;
    lb_workflows workflows;
    lb_sync *sync;
    /* rows, as a load returns them */
    lb_tenant_rec t[2];
    lb_conn_rec c;
    lb_hook_rec h;
    lb_workflow_rec w[3];
} fixture;

static void tenant_rec(lb_tenant_rec *r, const char *id, const char *name, int64_t at)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->id, sizeof(r->id), "%s", id);
    r->name = (char *)name;
    r->created_at = 1;
    r->updated_at = at;
}

static void wf_rec(lb_workflow_rec *r, const char *tenant, const char *id, int64_t at)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->id, sizeof(r->id), "%s", id);
    snprintf(r->tenant_id, sizeof(r->tenant_id), "%s", tenant);
    r->body = (char *)WF_BODY;
    r->enabled = 1;
    r->created_at = at;
    r->updated_at = at;
}

static int setup(void **state)
{
    fixture *f = LB_NEW(fixture);
    uv_loop_init(&f->loop);
    memset(&f->key, 7, sizeof(f->key));
    lb_tenants_init(&f->tenants);
    lb_conns_init(&f->conns, &f->key);
    lb_workflows_init(&f->workflows);
    lb_sync_config cfg = {
        .tenants = &f->tenants, .conns = &f->conns, .workflows = &f->workflows, .reload_ms = 60000};
    assert_int_equal(lb_sync_new(&f->loop, NULL, &cfg, &f->sync), 0);

    tenant_rec(&f->t[0], "t1", "One", 10);
    tenant_rec(&f->t[1], "t2", "Two", 10);
    /* t1's connection and hook, sealed as the store keeps them. */
    lb_conns scratch;
    lb_conns_init(&scratch, &f->key);
    lb_conn c = {.tenant_id = "t1",
                 .status = LB_CONN_CONNECTED,
                 .auth = LB_AUTH_API_KEY,
                 .api_key = "key-1",
                 .updated_at = 5};
    lb_hook h = {.id = "hk_1",
                 .tenant_id = "t1",
                 .lever_webhook_id = "lw_1",
                 .signature_token = "sekrit",
                 .status = LB_HOOK_ACTIVE,
                 .active_since = 7};
    lb_conn_to_rec(&scratch, &c, &f->c);
    lb_hook_to_rec(&scratch, &h, &f->h);
    lb_conns_free(&scratch);
    wf_rec(&f->w[0], "t1", "wf_a", 1);
    wf_rec(&f->w[1], "t1", "wf_b", 2);
    wf_rec(&f->w[2], "t2", "wf_c", 3);
    *state = f;
    return 0;
}

static void closed_cb(void *data)
{
    *(int *)data = 1;
}

static int teardown(void **state)
{
    fixture *f = *state;
    int closed = 0;
    lb_sync_close(f->sync, closed_cb, &closed);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    lb_conn_rec_free(&f->c);
    lb_hook_rec_free(&f->h);
    lb_tenants_free(&f->tenants);
    lb_conns_free(&f->conns);
    lb_workflows_free(&f->workflows);
    lb_free(f);
    return 0;
}

static lb_sync_rows all_rows(fixture *f)
{
    return (lb_sync_rows){.tenants = f->t,
                          .ntenants = 2,
                          .conns = &f->c,
                          .nconns = 1,
                          .hooks = &f->h,
                          .nhooks = 1,
                          .workflows = f->w,
                          .nworkflows = 3};
}

static void test_full_then_again(void **state)
{
    fixture *f = *state;
    lb_sync_rows rows = all_rows(f);
    lb_sync_apply(f->sync, NULL, &rows);
    assert_int_equal(f->tenants.count, 2);
    assert_string_equal(lb_tenants_get(&f->tenants, "t1")->name, "One");
    const lb_conn *c = lb_conns_get(&f->conns, "t1");
    assert_non_null(c);
    assert_string_equal(c->api_key, "key-1"); /* opened */
    const lb_hook *h = lb_conns_hook(&f->conns, "hk_1");
    assert_non_null(h);
    assert_string_equal(h->signature_token, "sekrit"); /* opened */
    assert_int_equal(h->status, LB_HOOK_ACTIVE);
    assert_null(lb_conns_get(&f->conns, "t2"));
    assert_int_equal(lb_workflows_count(&f->workflows, "t1"), 2);
    assert_int_equal(lb_workflows_count(&f->workflows, "t2"), 1);

    /* The same rows again (this node's own change heard back, or the
     * minute's reload): nothing replaced. */
    const lb_tenant *t1 = lb_tenants_get(&f->tenants, "t1");
    const lb_workflow *wa = lb_workflows_get(&f->workflows, "t1", "wf_a");
    const yajl_val tree = wa->tree;
    const char *key = c->api_key;
    lb_conns_hook_delivered(&f->conns, "hk_1", 99); /* memory's own, newer */
    lb_sync_apply(f->sync, NULL, &rows);
    assert_ptr_equal(lb_tenants_get(&f->tenants, "t1"), t1);
    assert_ptr_equal(lb_conns_hook(&f->conns, "hk_1"), h);
    assert_ptr_equal(lb_conns_get(&f->conns, "t1")->api_key, key);
    assert_ptr_equal(lb_workflows_get(&f->workflows, "t1", "wf_a")->tree, tree);
    assert_int_equal(h->last_delivery_at, 99);
}

static void test_one_tenant_changes(void **state)
{
    fixture *f = *state;
    lb_sync_rows rows = all_rows(f);
    lb_sync_apply(f->sync, NULL, &rows);
    const lb_workflow *wa = lb_workflows_get(&f->workflows, "t1", "wf_a");
    const lb_workflow *wc = lb_workflows_get(&f->workflows, "t2", "wf_c");

    /* t1 renamed, wf_b deleted, wf_a changed; its hook failed. Rows of t1
     * alone, as a tenant's reload reads them. */
    lb_tenant_rec t1;
    tenant_rec(&t1, "t1", "One again", 11);
    lb_workflow_rec w[1];
    wf_rec(&w[0], "t1", "wf_a", 1);
    w[0].updated_at = 4;
    w[0].enabled = 0;
    lb_hook_rec h = f->h;
    h.status = "failed";
    h.last_error = "gone";
    lb_sync_rows one = {.tenants = &t1,
                        .ntenants = 1,
                        .conns = &f->c,
                        .nconns = 1,
                        .hooks = &h,
                        .nhooks = 1,
                        .workflows = w,
                        .nworkflows = 1};
    lb_sync_apply(f->sync, "t1", &one);
    assert_string_equal(lb_tenants_get(&f->tenants, "t1")->name, "One again");
    assert_int_equal(lb_workflows_count(&f->workflows, "t1"), 1);
    assert_null(lb_workflows_get(&f->workflows, "t1", "wf_b"));
    assert_ptr_equal(lb_workflows_get(&f->workflows, "t1", "wf_a"), wa); /* updated in place */
    assert_int_equal(wa->enabled, 0);
    assert_int_equal(lb_conns_hook(&f->conns, "hk_1")->status, LB_HOOK_FAILED);
    assert_string_equal(lb_conns_hook(&f->conns, "hk_1")->signature_token, "sekrit");
    /* t2 untouched */
    assert_ptr_equal(lb_workflows_get(&f->workflows, "t2", "wf_c"), wc);
    assert_int_equal(f->tenants.count, 2);

    /* t2's reload finds no rows: deleted elsewhere. */
    lb_sync_rows none = {0};
    lb_sync_apply(f->sync, "t2", &none);
    assert_null(lb_tenants_get(&f->tenants, "t2"));
    assert_int_equal(lb_workflows_count(&f->workflows, "t2"), 0);
    assert_non_null(lb_tenants_get(&f->tenants, "t1"));

    /* t1 disconnected elsewhere: its connection and hook go. */
    one.nconns = one.nhooks = 0;
    lb_sync_apply(f->sync, "t1", &one);
    assert_null(lb_conns_get(&f->conns, "t1"));
    assert_null(lb_conns_hook(&f->conns, "hk_1"));
}

static void test_full_removes_what_vanished(void **state)
{
    fixture *f = *state;
    lb_sync_rows rows = all_rows(f);
    lb_sync_apply(f->sync, NULL, &rows);
    /* A full reload without t1 (deleted, its notification lost). */
    lb_sync_rows rest = {
        .tenants = &f->t[1], .ntenants = 1, .workflows = &f->w[2], .nworkflows = 1};
    lb_sync_apply(f->sync, NULL, &rest);
    assert_int_equal(f->tenants.count, 1);
    assert_null(lb_tenants_get(&f->tenants, "t1"));
    assert_null(lb_conns_get(&f->conns, "t1"));
    assert_null(lb_conns_hook(&f->conns, "hk_1"));
    assert_int_equal(lb_workflows_count(&f->workflows, "t1"), 0);
    assert_int_equal(lb_workflows_count(&f->workflows, "t2"), 1);
    lb_sync_rows empty = {0};
    lb_sync_apply(f->sync, NULL, &empty);
    assert_int_equal(f->tenants.count, 0);
    assert_int_equal(lb_workflows_count(&f->workflows, "t2"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_full_then_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_tenant_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_removes_what_vanished, setup, teardown),
    };
    return cmocka_run_group_tests_name("cluster_sync", tests, NULL, NULL);
}
