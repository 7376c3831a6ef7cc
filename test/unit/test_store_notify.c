/* Platform events ride on the write that makes the change they report
 * (store.h, lb_store_op.notify): inserted in its transaction, and only when
 * it succeeds. */
#include "store_helpers.h"

static lb_job_rec notify_rec(const char *id, const char *tenant)
{
    lb_job_rec r;
    memset(&r, 0, sizeof(r));
    snprintf(r.id, sizeof(r.id), "%s", id);
    snprintf(r.tenant_id, sizeof(r.tenant_id), "%s", tenant);
    r.action = (char *)"{\"type\":\"notify_platform\",\"event\":\"connection.connected\"}";
    r.status = LB_JOB_QUEUED;
    r.created_at = 1000;
    return r;
}

static void conn_put(treq *r, lb_conn_rec *c, const char *tenant)
{
    memset(r, 0, sizeof(*r));
    memset(c, 0, sizeof(*c));
    snprintf(c->tenant_id, sizeof(c->tenant_id), "%s", tenant);
    c->status = (char *)"connected";
    r->op.kind = LB_STORE_CONN_PUT;
    r->op.conn_put.rec = c;
    r->op.cb = treq_cb;
    r->op.data = r;
}

static void test_notify_rides_on_the_write(void **state)
{
    fixture *f = *state;
    fx_open(f);
    assert_int_equal(upsert(f, "acme", "Acme", 0), 0);
    treq r;
    lb_conn_rec c;
    conn_put(&r, &c, "acme");
    lb_job_rec n = notify_rec("job_n1", "acme");
    r.op.notify = &n;
    r.op.nnotify = 1;
    assert_int_equal(run_op(f, &r), 0);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM jobs WHERE id='job_n1' AND "
                                "status='queued' AND tenant_id='acme'"),
                     1);
}

static void test_notify_not_written_when_the_write_fails(void **state)
{
    fixture *f = *state;
    fx_open(f);
    treq r;
    lb_conn_rec c;
    conn_put(&r, &c, "nobody"); /* unknown tenant: LB_ENOTFOUND */
    lb_job_rec n = notify_rec("job_n2", "nobody");
    r.op.notify = &n;
    r.op.nnotify = 1;
    assert_int_not_equal(run_op(f, &r), 0);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM jobs"), 0);
}

static void test_notify_failing_fails_the_write(void **state)
{
    fixture *f = *state;
    fx_open(f);
    assert_int_equal(upsert(f, "acme", "Acme", 0), 0);
    treq r;
    lb_conn_rec c;
    conn_put(&r, &c, "acme");
    lb_job_rec n[2] = {notify_rec("job_same", "acme"), notify_rec("job_same", "acme")};
    r.op.notify = n;
    r.op.nnotify = 2; /* the second insert conflicts: all of it rolls back */
    assert_int_not_equal(run_op(f, &r), 0);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM jobs"), 0);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM connections"), 0);
}

static void test_notify_refused_where_not_allowed(void **state)
{
    fixture *f = *state;
    fx_open(f);
    treq r;
    treq_upsert(&r, "acme", "Acme", 0);
    lb_job_rec n = notify_rec("job_n3", "acme");
    r.op.notify = &n;
    r.op.nnotify = 1;
    assert_int_equal(lb_store_submit(f->store, &r.op), LB_EINVAL);
    lb_conn_rec c;
    conn_put(&r, &c, "acme");
    r.op.nnotify = 1; /* no records */
    assert_int_equal(lb_store_submit(f->store, &r.op), LB_EINVAL);
    lb_job_rec many[LB_STORE_NOTIFY_MAX + 1];
    for (size_t i = 0; i <= LB_STORE_NOTIFY_MAX; i++)
        many[i] = notify_rec("job_x", "acme");
    r.op.notify = many;
    r.op.nnotify = LB_STORE_NOTIFY_MAX + 1;
    assert_int_equal(lb_store_submit(f->store, &r.op), LB_EINVAL);
    assert_int_equal(r.calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_notify_rides_on_the_write, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_notify_not_written_when_the_write_fails, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_notify_failing_fails_the_write, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_notify_refused_where_not_allowed, fx_setup,
                                        fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
