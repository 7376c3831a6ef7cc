/* The store's fault-injection hook (src/store/fault.h), on either backend:
 * fail op N of a batch and the others behave as store.h promises (the
 * failed op rolled back alone, later ops seeing nothing of it, the rest
 * committed); fail the next commit and every write of the batch fails,
 * nothing of it is stored, its reads answer from before it, readiness
 * drops and comes back with the next commit. A torture loop fails each op
 * of one multi-op batch in turn, as curl's torture tests fail each
 * allocation. */
#include "store_helpers.h"

#include "store/fault.h"

#ifdef LB_FAULT_INJECTION

/* ---- one batch of every kind of write a request makes ---------------------- */

enum { B_WORKFLOW, B_EVENT, B_CONN, B_JOB_FAIL, B_HOOK, B_META, B_READ, B_COUNT };

/* The batch's ops and their inputs, all for one tenant; owned by the test. */
typedef struct {
    char tenant[LB_TENANT_ID_MAX + 1];
    char wf_id[LB_WORKFLOW_ID_MAX + 1], ev_id[LB_EVENT_ID_MAX + 1], hook_id[LB_HOOK_ID_MAX + 1];
    char key[32], meta_key[64];
    treq r[B_COUNT];
    lb_workflow_rec wf;
    lb_event_rec ev;
    lb_job_rec jobs[2];
    lb_conn_rec conn;
    lb_job_rec notify;
    lb_job_rec failed, tag;
    lb_hook_rec hook;
} tbatch;

static void op_init(treq *r, int kind)
{
    memset(r, 0, sizeof(*r));
    r->op.kind = kind;
    r->op.cb = treq_cb;
    r->op.data = r;
}

static void job_rec(lb_job_rec *j, const char *id, const char *tenant, const char *action)
{
    memset(j, 0, sizeof(*j));
    snprintf(j->id, sizeof(j->id), "%s", id);
    snprintf(j->tenant_id, sizeof(j->tenant_id), "%s", tenant);
    j->action = (char *)action;
    j->opportunity_id = (char *)"O1";
    j->status = LB_JOB_QUEUED;
    j->created_at = 1000;
}

static void tbatch_init(tbatch *b, int n)
{
    memset(b, 0, sizeof(*b));
    snprintf(b->tenant, sizeof(b->tenant), "t%d", n);
    snprintf(b->wf_id, sizeof(b->wf_id), "wf_%d", n);
    snprintf(b->ev_id, sizeof(b->ev_id), "ev_%d", n);
    snprintf(b->hook_id, sizeof(b->hook_id), "hook_%d", n);
    snprintf(b->key, sizeof(b->key), "h:tok%d", n);
    snprintf(b->meta_key, sizeof(b->meta_key), "fault_test_%d", n);

    op_init(&b->r[B_WORKFLOW], LB_STORE_WORKFLOW_PUT);
    snprintf(b->wf.id, sizeof(b->wf.id), "%s", b->wf_id);
    snprintf(b->wf.tenant_id, sizeof(b->wf.tenant_id), "%s", b->tenant);
    b->wf.body = (char *)"{\"name\":\"w\"}";
    b->wf.enabled = 1;
    b->wf.created_at = b->wf.updated_at = 1000;
    b->r[B_WORKFLOW].op.workflow_put.rec = &b->wf;

    /* an event and its two jobs: one op, several rows */
    op_init(&b->r[B_EVENT], LB_STORE_EVENT_INSERT);
    snprintf(b->ev.id, sizeof(b->ev.id), "%s", b->ev_id);
    snprintf(b->ev.tenant_id, sizeof(b->ev.tenant_id), "%s", b->tenant);
    b->ev.source = "lever";
    b->ev.type = "candidateStageChange";
    b->ev.dedupe_key = b->key;
    b->ev.status = "accepted";
    b->ev.opportunity_id = "O1";
    b->ev.payload = "{}";
    b->ev.received_at = lb_time_now_ms();
    for (int i = 0; i < 2; i++) {
        char id[LB_JOB_ID_MAX + 1];
        snprintf(id, sizeof(id), "job_%d_%d", n, i);
        job_rec(&b->jobs[i], id, b->tenant, "{\"type\":\"add_note\"}");
        b->jobs[i].event_id = b->ev.id;
        b->jobs[i].seq = i;
    }
    b->r[B_EVENT].op.event_insert.event = &b->ev;
    b->r[B_EVENT].op.event_insert.jobs = b->jobs;
    b->r[B_EVENT].op.event_insert.njobs = 2;

    /* a connection with its platform event */
    op_init(&b->r[B_CONN], LB_STORE_CONN_PUT);
    snprintf(b->conn.tenant_id, sizeof(b->conn.tenant_id), "%s", b->tenant);
    b->conn.status = (char *)"connected";
    b->r[B_CONN].op.conn_put.rec = &b->conn;
    char nid[LB_JOB_ID_MAX + 1];
    snprintf(nid, sizeof(nid), "job_n%d", n);
    job_rec(&b->notify, nid, b->tenant, "{\"type\":\"notify_platform\"}");
    b->notify.opportunity_id = NULL;
    b->r[B_CONN].op.notify = &b->notify;
    b->r[B_CONN].op.nnotify = 1;

    /* the event's first job fails for good, with its failure tag's job */
    op_init(&b->r[B_JOB_FAIL], LB_STORE_JOB_UPDATE);
    b->failed = b->jobs[0];
    b->failed.status = LB_JOB_FAILED;
    b->failed.last_error = (char *)"refused";
    char tid[LB_JOB_ID_MAX + 1];
    snprintf(tid, sizeof(tid), "job_t%d", n);
    job_rec(&b->tag, tid, b->tenant, "{\"type\":\"failure_tag\",\"tag\":\"x\"}");
    b->r[B_JOB_FAIL].op.job_update.rec = &b->failed;
    b->r[B_JOB_FAIL].op.job_update.tag_job = &b->tag;
    b->r[B_JOB_FAIL].op.job_update.tag = "x";

    op_init(&b->r[B_HOOK], LB_STORE_HOOK_PUT);
    snprintf(b->hook.id, sizeof(b->hook.id), "%s", b->hook_id);
    snprintf(b->hook.tenant_id, sizeof(b->hook.tenant_id), "%s", b->tenant);
    b->hook.status = (char *)"pending";
    b->r[B_HOOK].op.hook_put.rec = &b->hook;

    op_init(&b->r[B_META], LB_STORE_META_PUT);
    b->r[B_META].op.meta_put.key = b->meta_key;
    b->r[B_META].op.meta_put.value = (const uint8_t *)"v";
    b->r[B_META].op.meta_put.len = 1;

    /* a read after the writes: it sees what committed before it in the batch */
    op_init(&b->r[B_READ], LB_STORE_JOB_LIST);
    snprintf(b->r[B_READ].op.job_list.tenant_id, sizeof(b->r[B_READ].op.job_list.tenant_id), "%s",
             b->tenant);
    b->r[B_READ].op.job_list.status = -1;
    b->r[B_READ].op.job_list.limit = 50;
}

static void tbatch_submit(fixture *f, tbatch *b)
{
    completion_counter = 0;
    for (int i = 0; i < B_COUNT; i++)
        assert_int_equal(lb_store_submit(f->store, &b->r[i].op), 0);
    run_loop(f);
    for (int i = 0; i < B_COUNT; i++) {
        assert_int_equal(b->r[i].calls, 1);
        assert_int_equal(b->r[i].order, i); /* in submission order, always */
    }
}

/* count(*) of table's rows of the tenant, with an extra condition ("" for
 * none). */
static int64_t count_of(fixture *f, const char *table, const char *tenant, const char *and)
{
    char sql[512];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s WHERE tenant_id = '%s'%s", table, tenant,
             and);
    return raw_int(f, sql);
}

/* What the batch of tenant b left in the database, write by write: 1 when
 * the op's rows are all there, 0 when none is (never a part). */
static void stored(fixture *f, const tbatch *b, int out[B_READ])
{
    const char *t = b->tenant;
    out[B_WORKFLOW] = (int)count_of(f, "workflows", t, "");
    int64_t ev = count_of(f, "events", t, "");
    int64_t ev_jobs = count_of(f, "jobs", t, " AND event_id IS NOT NULL");
    assert_true(ev * 2 == ev_jobs); /* an event with both its jobs, or neither */
    out[B_EVENT] = (int)ev;
    int64_t conn = count_of(f, "connections", t, "");
    int64_t notify = count_of(f, "jobs", t, " AND id LIKE 'job_n%'");
    assert_true(conn == notify);
    out[B_CONN] = (int)conn;
    int64_t failed = count_of(f, "jobs", t, " AND status = 'failed'");
    int64_t ledger = count_of(f, "failure_tags", t, "");
    int64_t tag = count_of(f, "jobs", t, " AND id LIKE 'job_t%'");
    assert_true(failed == ledger && ledger == tag);
    out[B_JOB_FAIL] = (int)failed;
    out[B_HOOK] = (int)count_of(f, "hooks", t, "");
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM meta WHERE key = '%s'", b->meta_key);
    out[B_META] = (int)raw_int(f, sql);
}

/* ---- fail op N ---------------------------------------------------------------- */

/* Each op of the batch failed in turn (torture): the failed op gets LB_EIO
 * and left nothing; an op that needs its rows (the job update needs the
 * event's job) finds none; every other op committed, the read included,
 * which counts the jobs committed before it. The batch is one commit and
 * the store stays ready. */
static void test_each_op_failed_in_turn(void **state)
{
    fixture *f = *state;
    fx_open(f);
    lb_store__fault_clear();
    for (int n = 0; n <= B_COUNT; n++) {
        char id[16];
        snprintf(id, sizeof(id), "t%d", n);
        assert_int_equal(upsert(f, id, "T", 1), 0);
    }
    for (int fail = 0; fail <= B_COUNT; fail++) { /* B_COUNT: none fails */
        tbatch b;
        tbatch_init(&b, fail);
        if (fail < B_COUNT) lb_store__fault_arm(0, fail + 1);
        lb_store_stats before, after;
        lb_store_stats_get(f->store, &before);
        tbatch_submit(f, &b);
        lb_store_stats_get(f->store, &after);
        assert_int_equal(after.commits, before.commits + 1);
        assert_int_equal(after.commit_failures, before.commit_failures);
        assert_int_equal(lb_store_ready(f->store), 1);

        int want[B_COUNT];
        for (int i = 0; i < B_COUNT; i++) {
            int status = i == fail ? LB_EIO : 0;
            if (i == B_JOB_FAIL && fail == B_EVENT) status = LB_ENOTFOUND;
            assert_int_equal(b.r[i].op.status, status);
            want[i] = status == 0;
        }
        if (fail != B_READ) {
            /* the event's two jobs, the platform event, the tag job */
            size_t jobs = (fail == B_EVENT ? 0 : 2) + (fail == B_CONN ? 0 : 1) +
                          (fail == B_EVENT || fail == B_JOB_FAIL ? 0 : 1);
            assert_int_equal(b.r[B_READ].op.job_list.count, jobs);
            lb_job_recs_free(b.r[B_READ].op.job_list.recs, b.r[B_READ].op.job_list.count);
        } else {
            assert_null(b.r[B_READ].op.job_list.recs); /* discarded */
        }
        assert_int_equal(b.r[B_JOB_FAIL].op.job_update.tag_added, want[B_JOB_FAIL]);
        int got[B_READ];
        stored(f, &b, got);
        for (int i = 0; i < B_READ; i++) /* the read stores nothing */
            if (got[i] != want[i]) fail_msg("op %d failed: op %d stored %d", fail, i, got[i]);
    }
    fx_close(f);
    assert_db_intact(f);
}

/* The Nth op counts from the arming, across batches; an op refused at
 * submit is not counted. */
static void test_op_n_counts_submits_from_now(void **state)
{
    fixture *f = *state;
    fx_open(f);
    lb_store__fault_clear();
    assert_int_equal(upsert(f, "a", "A", 1), 0);
    lb_store__fault_arm(0, 3);
    treq bad;
    treq_upsert(&bad, "", "no id", 1);
    assert_int_equal(lb_store_submit(f->store, &bad.op), LB_EINVAL); /* not counted */
    assert_int_equal(upsert(f, "b", "B", 1), 0);                     /* 1 */
    assert_int_equal(upsert(f, "c", "C", 1), 0);                     /* 2 */
    treq r[2];
    treq_upsert(&r[0], "d", "D", 1); /* 3: fails */
    treq_upsert(&r[1], "e", "E", 1);
    for (int i = 0; i < 2; i++)
        assert_int_equal(lb_store_submit(f->store, &r[i].op), 0);
    run_loop(f);
    assert_int_equal(r[0].op.status, LB_EIO);
    assert_int_equal(r[1].op.status, 0);
    assert_int_equal(upsert(f, "d", "D", 1), 0); /* once only */
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM tenants"), 5);
}

/* ---- fail the next commit ------------------------------------------------------ */

static void test_failed_commit_stores_nothing(void **state)
{
    fixture *f = *state;
    fx_open(f);
    lb_store__fault_clear();
    assert_int_equal(upsert(f, "t0", "T", 1), 0);
    tbatch b;
    tbatch_init(&b, 0);
    lb_store__fault_arm(1, 0);
    tbatch_submit(f, &b);
    for (int i = 0; i < B_COUNT; i++)
        assert_int_equal(b.r[i].op.status, i == B_READ ? 0 : LB_EIO);
    /* the read ran again alone: the state before the batch */
    assert_int_equal(b.r[B_READ].op.job_list.count, 0);
    lb_job_recs_free(b.r[B_READ].op.job_list.recs, b.r[B_READ].op.job_list.count);
    assert_int_equal(b.r[B_JOB_FAIL].op.job_update.tag_added, 0);
    assert_int_equal(b.r[B_EVENT].op.event_insert.duplicate, 0);
    int got[B_READ];
    stored(f, &b, got);
    for (int i = 0; i < B_READ; i++)
        assert_int_equal(got[i], 0);
    assert_int_equal(lb_store_ready(f->store), 0);
    lb_store_stats st;
    lb_store_stats_get(f->store, &st);
    assert_int_equal(st.commit_failures, 1);

    /* a batch of reads only does not take the fault; the same batch again
     * commits, the Lever delivery is no duplicate, and readiness is back */
    lb_store__fault_arm(1, 0);
    treq l;
    treq_load_all(&l);
    assert_int_equal(run_op(f, &l), 0);
    lb_tenant_recs_free(l.op.tenant_load_all.recs, l.op.tenant_load_all.count);
    assert_int_equal(upsert(f, "t1", "T", 1), LB_EIO); /* the armed commit */
    tbatch_init(&b, 0);
    tbatch_submit(f, &b);
    for (int i = 0; i < B_COUNT; i++)
        assert_int_equal(b.r[i].op.status, 0);
    assert_int_equal(b.r[B_EVENT].op.event_insert.duplicate, 0);
    lb_job_recs_free(b.r[B_READ].op.job_list.recs, b.r[B_READ].op.job_list.count);
    assert_int_equal(lb_store_ready(f->store), 1);
    stored(f, &b, got);
    for (int i = 0; i < B_READ; i++)
        assert_int_equal(got[i], 1);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM tenants"), 1);
    assert_db_intact(f);
}

#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
#ifdef LB_FAULT_INJECTION
        cmocka_unit_test_setup_teardown(test_each_op_failed_in_turn, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_op_n_counts_submits_from_now, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_failed_commit_stores_nothing, fx_setup, fx_teardown),
#endif
    };
    return cmocka_run_group_tests_name("store_fault", tests, NULL, NULL);
}
