/* Events and their dedupe: the in-memory table of recent Lever keys
 * (store/recent.h) on its own, then event_insert through the SQLite backend:
 * Lever duplicates in one batch, across a restart, outside the window, after
 * a rolled-back op; results deduplicated by their unique index. */
#include "store_helpers.h"

#include "store/recent.h"

/* ---- the table ------------------------------------------------------------ */

static void test_recent_find_and_grow(void **state)
{
    (void)state;
    lb_recent r;
    lb_recent_init(&r, 1000);
    int64_t seqs[4];
    assert_int_equal(lb_recent_find(&r, 42, seqs, 4), 0); /* empty, no slots yet */
    uint64_t a = lb_recent_hash("t1", "hook:tok");
    assert_true(a != 0);
    assert_true(a != lb_recent_hash("t2", "hook:tok"));
    assert_true(a != lb_recent_hash("t1h", "ook:tok")); /* the separator counts */
    for (int64_t i = 1; i <= 5000; i++) /* grows past its first 1024 slots */
        lb_recent_add(&r, lb_recent_hash("t1", i == 777 ? "hook:tok" : "x") + (uint64_t)i, i,
                      5000, 5000);
    assert_int_equal(r.count, 5000);
    assert_true(4 * r.count <= 3 * r.cap);
    lb_recent_add(&r, a, 9001, 5000, 5000);
    lb_recent_add(&r, a, 9002, 5000, 5000);
    assert_int_equal(lb_recent_find(&r, a, seqs, 4), 2);
    assert_true((seqs[0] == 9001 && seqs[1] == 9002) || (seqs[0] == 9002 && seqs[1] == 9001));
    assert_int_equal(lb_recent_find(&r, a, seqs, 1), 2); /* counts past max */
    lb_recent_free(&r);
}

static void test_recent_forgets_past_horizon(void **state)
{
    (void)state;
    lb_recent r;
    lb_recent_init(&r, 1000);
    uint64_t old = lb_recent_hash("t", "old");
    lb_recent_add(&r, old, 1, 100, 100); /* arrived at 100 ms */
    for (int64_t i = 2; i <= 768; i++)   /* fills the 1024 slots to 3/4 */
        lb_recent_add(&r, lb_recent_hash("t", "k") + (uint64_t)i, i, 100, 100);
    int64_t seqs[2];
    assert_int_equal(lb_recent_find(&r, old, seqs, 2), 1);
    /* The next add rebuilds at 2000 ms: everything from 100 ms is past the
     * 1000 ms horizon and goes; the table shrinks back to its minimum. */
    assert_int_equal(r.count, 768);
    assert_int_equal(r.cap, 1024);
    lb_recent_add(&r, lb_recent_hash("t", "new"), 769, 2000, 2000);
    assert_int_equal(r.count, 1);
    assert_int_equal(r.cap, 1024);
    assert_int_equal(lb_recent_find(&r, old, seqs, 2), 0);
    assert_int_equal(lb_recent_find(&r, lb_recent_hash("t", "new"), seqs, 2), 1);
    assert_int_equal(seqs[0], 769);
    lb_recent_free(&r);
}

/* ---- event_insert ------------------------------------------------------------ */

typedef struct {
    treq r;
    lb_event_rec ev;
    lb_job_rec job[2];
} ereq;

static int seqno;

static void ereq_init(ereq *e, const char *tenant, const char *source, const char *key,
                      int64_t received_at)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->ev.id, sizeof(e->ev.id), "ev_%06d", ++seqno);
    snprintf(e->ev.tenant_id, sizeof(e->ev.tenant_id), "%s", tenant);
    e->ev.source = source;
    e->ev.type = "candidateStageChange";
    e->ev.dedupe_key = key;
    e->ev.status = "accepted";
    e->ev.payload = "{}";
    e->ev.received_at = received_at;
    e->r.op.kind = LB_STORE_EVENT_INSERT;
    e->r.op.cb = treq_cb;
    e->r.op.data = &e->r;
    e->r.op.event_insert.event = &e->ev;
}

/* One job (or two with the same id, which fails the op) for the event. */
static void ereq_jobs(ereq *e, int n)
{
    for (int i = 0; i < n; i++) {
        snprintf(e->job[i].id, sizeof(e->job[i].id), "job_%s", e->ev.id + 3);
        snprintf(e->job[i].tenant_id, sizeof(e->job[i].tenant_id), "%s", e->ev.tenant_id);
        e->job[i].event_id = e->ev.id;
        e->job[i].action = "{\"type\":\"add_tags\",\"tags\":[\"x\"]}";
    }
    e->r.op.event_insert.jobs = e->job;
    e->r.op.event_insert.njobs = (size_t)n;
}

static int insert_one(fixture *f, ereq *e)
{
    return run_op(f, &e->r);
}

static void fx_open_window(fixture *f, int64_t window_ms)
{
    char err[256];
    lb_store_options o = {.lever_dedupe_ms = window_ms};
    int rc = lb_store_open(&f->loop, f->url, &o, &f->store, err, sizeof(err));
    if (rc != 0) fail_msg("lb_store_open: %d %s", rc, err);
}

static void tenants(fixture *f)
{
    assert_int_equal(upsert(f, "t1", "T1", 1), 0);
    assert_int_equal(upsert(f, "t2", "T2", 1), 0);
}

static void test_lever_duplicates_in_one_batch(void **state)
{
    fixture *f = *state;
    fx_open(f);
    tenants(f);
    int64_t now = lb_time_now_ms();
    ereq a, b, c;
    ereq_init(&a, "t1", "lever", "h1:tokA", now);
    ereq_init(&b, "t1", "lever", "h1:tokA", now);
    ereq_init(&c, "t2", "lever", "h1:tokA", now); /* another tenant: not a duplicate */
    assert_int_equal(lb_store_submit(f->store, &a.r.op), 0);
    assert_int_equal(lb_store_submit(f->store, &b.r.op), 0);
    assert_int_equal(lb_store_submit(f->store, &c.r.op), 0);
    run_loop(f);
    assert_int_equal(a.r.op.status, 0);
    assert_int_equal(b.r.op.status, 0);
    assert_int_equal(c.r.op.status, 0);
    assert_int_equal(a.r.op.event_insert.duplicate, 0);
    assert_int_equal(b.r.op.event_insert.duplicate, 1);
    assert_string_equal(b.r.op.event_insert.existing_id, a.ev.id);
    assert_int_equal(c.r.op.event_insert.duplicate, 0);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events"), 2);
}

static void test_lever_duplicate_after_restart(void **state)
{
    fixture *f = *state;
    fx_open(f);
    tenants(f);
    int64_t now = lb_time_now_ms();
    ereq a, b, p;
    ereq_init(&a, "t1", "lever", "h1:tokB", now - 60 * 1000);
    assert_int_equal(insert_one(f, &a), 0);
    ereq_init(&p, "t1", "platform", "res-1", now); /* a result, to be skipped by the load */
    assert_int_equal(insert_one(f, &p), 0);
    fx_close(f);

    fx_open(f); /* the keys of the window come back from the rows */
    ereq_init(&b, "t1", "lever", "h1:tokB", now);
    assert_int_equal(insert_one(f, &b), 0);
    assert_int_equal(b.r.op.event_insert.duplicate, 1);
    assert_string_equal(b.r.op.event_insert.existing_id, a.ev.id);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events WHERE source = 'lever'"), 1);
}

static void test_lever_window_bounds_the_keys_kept(void **state)
{
    fixture *f = *state;
    fx_open_window(f, 60 * 60 * 1000);
    tenants(f);
    int64_t now = lb_time_now_ms();
    ereq old, dup;
    /* Received two hours ago: outside a one-hour window. The hook refuses
     * such a delivery as stale before it reaches the store; the store
     * itself keeps only the window, so after a restart it is forgotten. */
    ereq_init(&old, "t1", "lever", "h1:tokOld", now - 2 * 60 * 60 * 1000);
    assert_int_equal(insert_one(f, &old), 0);
    fx_close(f);
    fx_open_window(f, 60 * 60 * 1000);
    ereq_init(&dup, "t1", "lever", "h1:tokOld", now);
    assert_int_equal(insert_one(f, &dup), 0);
    assert_int_equal(dup.r.op.event_insert.duplicate, 0);
    fx_close(f);
    /* With a window that covers it, the same row is a duplicate. */
    fx_open_window(f, 3 * 60 * 60 * 1000);
    ereq_init(&dup, "t1", "lever", "h1:tokOld", now);
    assert_int_equal(insert_one(f, &dup), 0);
    assert_int_equal(dup.r.op.event_insert.duplicate, 1);
    fx_close(f);
}

static void test_lever_rolled_back_op_is_no_duplicate(void **state)
{
    fixture *f = *state;
    fx_open(f);
    tenants(f);
    int64_t now = lb_time_now_ms();
    ereq bad, again, third;
    ereq_init(&bad, "t1", "lever", "h1:tokC", now);
    ereq_jobs(&bad, 2); /* two jobs with one id: the op fails and rolls back */
    assert_int_not_equal(insert_one(f, &bad), 0);
    /* Its key went into the table before the failure; the row did not stay.
     * The next delivery of that key is new, and takes the same row number. */
    ereq_init(&again, "t1", "lever", "h1:tokC", now);
    ereq_jobs(&again, 1);
    assert_int_equal(insert_one(f, &again), 0);
    assert_int_equal(again.r.op.event_insert.duplicate, 0);
    ereq_init(&third, "t1", "lever", "h1:tokC", now);
    assert_int_equal(insert_one(f, &third), 0);
    assert_int_equal(third.r.op.event_insert.duplicate, 1);
    assert_string_equal(third.r.op.event_insert.existing_id, again.ev.id);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events"), 1);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM jobs"), 1);
    assert_db_intact(f);
}

static void test_results_unique_by_index(void **state)
{
    fixture *f = *state;
    fx_open(f);
    tenants(f);
    int64_t now = lb_time_now_ms();
    ereq a, b, c;
    ereq_init(&a, "t1", "platform", "res-9", now - 30LL * 24 * 3600 * 1000); /* a month ago */
    assert_int_equal(insert_one(f, &a), 0);
    fx_close(f);
    fx_open_window(f, 1000); /* the Lever window does not apply to results */
    ereq_init(&b, "t1", "platform", "res-9", now);
    ereq_init(&c, "t1", "lever", "res-9", now); /* same key, other source: new */
    assert_int_equal(insert_one(f, &b), 0);
    assert_int_equal(b.r.op.event_insert.duplicate, 1);
    assert_string_equal(b.r.op.event_insert.existing_id, a.ev.id);
    assert_int_equal(insert_one(f, &c), 0);
    assert_int_equal(c.r.op.event_insert.duplicate, 0);
    fx_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recent_find_and_grow),
        cmocka_unit_test(test_recent_forgets_past_horizon),
        cmocka_unit_test_setup_teardown(test_lever_duplicates_in_one_batch, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_lever_duplicate_after_restart, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_lever_window_bounds_the_keys_kept, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_lever_rolled_back_op_is_no_duplicate, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_results_unique_by_index, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests_name("store_events", tests, NULL, NULL);
}
