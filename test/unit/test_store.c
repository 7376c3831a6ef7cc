/* The store's interface over either backend (SQLite, or PostgreSQL with
 * LB_TEST_DB: store_helpers.h): operations, batching (group commit), per-op
 * failure isolation, whole-batch failure, bounds, close. */
#include "store_helpers.h"

/* ---- open and close ---- */

static void test_open_close(void **state)
{
    fixture *f = *state;
    fx_open(f);
    assert_string_equal(lb_store_backend(f->store), fx_is_pg(f) ? "postgres" : "sqlite");
    lb_store_stats st;
    lb_store_stats_get(f->store, &st);
    assert_int_equal(st.commits, 0);
    assert_int_equal(st.pending, 0);
    /* An idle store does not keep the loop running. */
    run_loop(f);
    fx_close(f);
    /* And again on the same file. */
    fx_open(f);
    fx_close(f);
    assert_db_intact(f);
}

static void test_bad_urls(void **state)
{
    fixture *f = *state;
    char err[256];
    lb_store *s = (lb_store *)0x1;
    /* PostgreSQL that is not there, the URI form and the conninfo form: the
     * store opens waiting for it (not ready, every op LB_EIO) and closes
     * cleanly while still waiting. */
    static const char *const absent[] = {"postgresql:///db?host=/nonexistent-dir",
                                         "host=/nonexistent-dir dbname=db"};
    for (size_t i = 0; i < 2; i++) {
        s = NULL;
        assert_int_equal(lb_store_open(&f->loop, absent[i], NULL, &s, err, sizeof(err)), 0);
        assert_non_null(s);
        assert_int_equal(lb_store_waiting(s, err, sizeof(err)), 1);
        assert_int_equal(lb_store_ready(s), 0);
        treq r;
        treq_load_all(&r);
        assert_int_equal(lb_store_submit(s, &r.op), 0);
        run_loop(f);
        assert_int_equal(r.op.status, LB_EIO);
        f->closed = 0;
        lb_store_close(s, fx_closed_cb, f);
        run_loop(f);
        assert_int_equal(f->closed, 1);
    }
    /* Not a URL at all: configuration, refused. */
    s = (lb_store *)0x1;
    assert_int_equal(
        lb_store_open(&f->loop, "postgres://h:notaport/db", NULL, &s, err, sizeof(err)), LB_EINVAL);
    assert_null(s);
    assert_non_null(strstr(err, "LEVERBRIDGE_DB"));
    assert_int_equal(lb_store_open(&f->loop, "host=h nosuchkeyword=1", NULL, &s, err, sizeof(err)),
                     LB_EINVAL);
    assert_null(s);
    assert_int_equal(lb_store_open(&f->loop, "mysql://h/db", NULL, &s, err, sizeof(err)),
                     LB_EINVAL);
    assert_int_equal(lb_store_open(&f->loop, "sqlite:", NULL, &s, err, sizeof(err)), LB_EINVAL);
    int rc = lb_store_open(&f->loop, "sqlite:/nonexistent-dir/x/y.db", NULL, &s, err, sizeof(err));
    assert_true(rc < 0);
    assert_null(s);
    assert_non_null(strstr(err, "/nonexistent-dir/x/y.db"));
    /* Nothing was left on the loop (the teardown checks uv_loop_close). */
}

static void test_not_a_database(void **state)
{
    fixture *f = *state;
    if (fx_is_pg(f)) skip(); /* a file that is not a database: SQLite's */
    FILE *fp = fopen(f->path, "w");
    assert_non_null(fp);
    for (int i = 0; i < 512; i++)
        fputs("this is not a database file. ", fp);
    fclose(fp);
    char err[256];
    lb_store *s = NULL;
    assert_int_equal(lb_store_open(&f->loop, f->url, NULL, &s, err, sizeof(err)), LB_ECORRUPT);
    assert_null(s);
}

/* ---- operations ---- */

static void test_upsert_create_then_update(void **state)
{
    fixture *f = *state;
    fx_open(f);

    treq r;
    treq_upsert(&r, "acme", "Acme", 1000);
    assert_int_equal(run_op(f, &r), 0);
    assert_int_equal(r.op.tenant_upsert.created, 1);
    assert_int_equal(r.op.tenant_upsert.rec.created_at, 1000);
    assert_int_equal(r.op.tenant_upsert.rec.updated_at, 1000);

    treq_upsert(&r, "acme", "Acme Inc.", 2000);
    r.op.tenant_upsert.rec.api_addon = 1;
    r.op.tenant_upsert.rec.lever_rate = 2.5;
    r.op.tenant_upsert.rec.lever_burst = 7;
    r.op.tenant_upsert.rec.created_at = 424242; /* ignored */
    assert_int_equal(run_op(f, &r), 0);
    assert_int_equal(r.op.tenant_upsert.created, 0);
    assert_int_equal(r.op.tenant_upsert.rec.created_at, 1000); /* kept */
    assert_int_equal(r.op.tenant_upsert.rec.updated_at, 2000);
    assert_string_equal(r.op.tenant_upsert.rec.name, "Acme Inc.");

    /* updated_at 0: the store's clock. */
    int64_t before = lb_time_now_ms();
    treq_upsert(&r, "acme", "Acme", 0);
    assert_int_equal(run_op(f, &r), 0);
    assert_int_equal(r.op.tenant_upsert.created, 0);
    assert_int_equal(r.op.tenant_upsert.rec.created_at, 1000);
    assert_true(r.op.tenant_upsert.rec.updated_at >= before);

    treq l;
    treq_load_all(&l);
    assert_int_equal(run_op(f, &l), 0);
    assert_int_equal(l.op.tenant_load_all.count, 1);
    lb_tenant_rec *t = &l.op.tenant_load_all.recs[0];
    assert_string_equal(t->id, "acme");
    assert_string_equal(t->name, "Acme");
    /* A PUT replaces: the defaults are back. */
    assert_int_equal(t->api_addon, 0);
    assert_true(t->lever_rate == 0);
    assert_int_equal(t->lever_burst, 0);
    assert_int_equal(t->created_at, 1000);
    lb_tenant_recs_free(l.op.tenant_load_all.recs, l.op.tenant_load_all.count);

    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM tenants WHERE lever_rate IS NULL"), 1);
    assert_db_intact(f);
}

static void test_load_all(void **state)
{
    fixture *f = *state;
    fx_open(f);

    treq l;
    treq_load_all(&l);
    assert_int_equal(run_op(f, &l), 0);
    assert_int_equal(l.op.tenant_load_all.count, 0);
    lb_tenant_recs_free(l.op.tenant_load_all.recs, l.op.tenant_load_all.count);

    treq r[3];
    treq_upsert(&r[0], "zeta", "Zeta", 30);
    treq_upsert(&r[1], "alpha", "Alpha", 10);
    r[1].op.tenant_upsert.rec.api_addon = 1;
    r[1].op.tenant_upsert.rec.lever_rate = 0.5;
    r[1].op.tenant_upsert.rec.lever_burst = 3;
    treq_upsert(&r[2], "m.id_with-all.chars_01234567890123456789012345678901234567890123", "", 20);
    assert_int_equal(strlen(r[2].op.tenant_upsert.rec.id), LB_TENANT_ID_MAX);
    for (int i = 0; i < 3; i++)
        assert_int_equal(lb_store_submit(f->store, &r[i].op), 0);
    /* Reads see the writes before them in the same batch. */
    treq_load_all(&l);
    assert_int_equal(lb_store_submit(f->store, &l.op), 0);
    run_loop(f);
    assert_int_equal(l.op.status, 0);
    assert_int_equal(l.op.tenant_load_all.count, 3);
    lb_tenant_rec *t = l.op.tenant_load_all.recs;
    assert_string_equal(t[0].id, "alpha");
    assert_string_equal(t[0].name, "Alpha");
    assert_int_equal(t[0].api_addon, 1);
    assert_true(t[0].lever_rate == 0.5);
    assert_int_equal(t[0].lever_burst, 3);
    assert_int_equal(t[0].created_at, 10);
    assert_int_equal(t[0].updated_at, 10);
    assert_string_equal(t[1].id, r[2].op.tenant_upsert.rec.id);
    assert_string_equal(t[1].name, "");
    assert_string_equal(t[2].id, "zeta");
    assert_int_equal(t[2].api_addon, 0);
    assert_true(t[2].lever_rate == 0);
    lb_tenant_recs_free(l.op.tenant_load_all.recs, l.op.tenant_load_all.count);
    lb_tenant_recs_free(NULL, 0);

    /* Survives a reopen. */
    fx_close(f);
    fx_open(f);
    treq_load_all(&l);
    assert_int_equal(run_op(f, &l), 0);
    assert_int_equal(l.op.tenant_load_all.count, 3);
    lb_tenant_recs_free(l.op.tenant_load_all.recs, l.op.tenant_load_all.count);
    fx_close(f);
    assert_db_intact(f);
}

static void test_delete_cascades(void **state)
{
    fixture *f = *state;
    fx_open(f);
    assert_int_equal(upsert(f, "t1", "One", 1), 0);
    assert_int_equal(upsert(f, "t2", "Two", 1), 0);
    fx_close(f);

    /* Rows of every table for both tenants (later ops will write these). */
    static const char *const tenants[] = {"t1", "t2"};
    for (int i = 0; i < 2; i++) {
        char sql[2048];
        const char *t = tenants[i];
        snprintf(sql, sizeof(sql),
                 "INSERT INTO connections(tenant_id, status, auth, secret, updated_at)"
                 "  VALUES ('%s', 'connected', 'api_key', %s, 1);"
                 "INSERT INTO hooks(id, tenant_id, status) VALUES ('h-%s', '%s', 'pending');"
                 "INSERT INTO workflows(id, tenant_id, body, created_at, updated_at)"
                 "  VALUES ('wf_%s', '%s', '{}', 1, 1);"
                 "INSERT INTO events(id, tenant_id, source, type, dedupe_key, status, received_at)"
                 "  VALUES ('ev_%s', '%s', 'lever', 'candidateStageChange', 'k', 'accepted', 1);"
                 "INSERT INTO jobs(id, tenant_id, event_id, action, status, created_at, updated_at)"
                 "  VALUES ('job_%s', '%s', 'ev_%s', '{}', 'queued', 1, 1);"
                 "INSERT INTO invitations(tenant_id, opportunity_id, assessment, created_at)"
                 "  VALUES ('%s', 'opp', 'js', 1);",
                 t, fx_is_pg(f) ? "'\\x0102'" : "x'0102'", t, t, t, t, t, t, t, t, t, t);
        raw_exec(f, sql);
    }

    fx_open(f);
    treq d;
    treq_delete(&d, "t1");
    assert_int_equal(run_op(f, &d), 0);
    treq_delete(&d, "t1");
    assert_int_equal(run_op(f, &d), LB_ENOTFOUND);
    treq_delete(&d, "never");
    assert_int_equal(run_op(f, &d), LB_ENOTFOUND);
    fx_close(f);

    static const char *const tables[] = {"tenants", "connections", "hooks",      "workflows",
                                         "events",  "jobs",        "invitations"};
    for (size_t i = 0; i < LB_COUNTOF(tables); i++) {
        char sql[200];
        const char *col = i == 0 ? "id" : "tenant_id";
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s WHERE %s = 't1'", tables[i], col);
        assert_int_equal(raw_int(f, sql), 0);
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s WHERE %s = 't2'", tables[i], col);
        assert_int_equal(raw_int(f, sql), 1);
    }
    assert_db_intact(f);
}

/* The loads' tenant filter (state sync reloads one tenant): only that
 * tenant's rows; none for a tenant without rows; every tenant's without it. */
static void test_load_one_tenant(void **state)
{
    fixture *f = *state;
    fx_open(f);
    assert_int_equal(upsert(f, "t1", "One", 1), 0);
    assert_int_equal(upsert(f, "t2", "Two", 2), 0);
    fx_close(f);
    static const char *const tenants[] = {"t1", "t2"};
    for (int i = 0; i < 2; i++) {
        char sql[1024];
        const char *t = tenants[i];
        snprintf(sql, sizeof(sql),
                 "INSERT INTO connections(tenant_id, status, auth, secret, updated_at)"
                 "  VALUES ('%s', 'connected', 'api_key', %s, 1);"
                 "INSERT INTO hooks(id, tenant_id, status) VALUES ('h-%s', '%s', 'pending');"
                 "INSERT INTO workflows(id, tenant_id, body, created_at, updated_at)"
                 "  VALUES ('wf_%s_a', '%s', '{}', 1, 1);"
                 "INSERT INTO workflows(id, tenant_id, body, created_at, updated_at)"
                 "  VALUES ('wf_%s_b', '%s', '{}', 2, 2);",
                 t, fx_is_pg(f) ? "'\\x0102'" : "x'0102'", t, t, t, t, t, t);
        raw_exec(f, sql);
    }
    fx_open(f);
    static const char *const filters[] = {"t2", "none", NULL};
    static const size_t want[] = {1, 0, 2};
    for (size_t k = 0; k < LB_COUNTOF(filters); k++) {
        const char *only = filters[k];
        treq t, c, w;
        treq_load_all(&t);
        t.op.tenant_load_all.tenant_id = only;
        c = t;
        c.op.kind = LB_STORE_CONN_LOAD_ALL;
        memset(&c.op.conn_load_all, 0, sizeof(c.op.conn_load_all));
        c.op.conn_load_all.tenant_id = only;
        w = t;
        w.op.kind = LB_STORE_WORKFLOW_LOAD_ALL;
        memset(&w.op.workflow_load_all, 0, sizeof(w.op.workflow_load_all));
        w.op.workflow_load_all.tenant_id = only;
        c.op.data = &c;
        w.op.data = &w;
        assert_int_equal(lb_store_submit(f->store, &t.op), 0);
        assert_int_equal(lb_store_submit(f->store, &c.op), 0);
        assert_int_equal(lb_store_submit(f->store, &w.op), 0);
        run_loop(f);
        assert_int_equal(t.op.status, 0);
        assert_int_equal(c.op.status, 0);
        assert_int_equal(w.op.status, 0);
        assert_int_equal(t.op.tenant_load_all.count, want[k]);
        assert_int_equal(c.op.conn_load_all.nconns, want[k]);
        assert_int_equal(c.op.conn_load_all.nhooks, want[k]);
        assert_int_equal(w.op.workflow_load_all.count, 2 * want[k]);
        for (size_t i = 0; only != NULL && i < want[k]; i++) {
            assert_string_equal(t.op.tenant_load_all.recs[i].id, only);
            assert_string_equal(t.op.tenant_load_all.recs[i].name, "Two");
            assert_string_equal(c.op.conn_load_all.conns[i].tenant_id, only);
            assert_string_equal(c.op.conn_load_all.hooks[i].tenant_id, only);
            assert_int_equal(c.op.conn_load_all.conns[i].secret_len, 2);
        }
        for (size_t i = 0; only != NULL && i < w.op.workflow_load_all.count; i++)
            assert_string_equal(w.op.workflow_load_all.recs[i].tenant_id, only);
        lb_tenant_recs_free(t.op.tenant_load_all.recs, t.op.tenant_load_all.count);
        for (size_t i = 0; i < c.op.conn_load_all.nconns; i++)
            lb_conn_rec_free(&c.op.conn_load_all.conns[i]);
        for (size_t i = 0; i < c.op.conn_load_all.nhooks; i++)
            lb_hook_rec_free(&c.op.conn_load_all.hooks[i]);
        lb_free(c.op.conn_load_all.conns);
        lb_free(c.op.conn_load_all.hooks);
        lb_workflow_recs_free(w.op.workflow_load_all.recs, w.op.workflow_load_all.count);
    }
    /* A filter that is no tenant id is refused. */
    treq bad;
    treq_load_all(&bad);
    bad.op.tenant_load_all.tenant_id = "";
    assert_int_equal(lb_store_submit(f->store, &bad.op), LB_EINVAL);
    fx_close(f);
    assert_db_intact(f);
}

/* ---- group commit ---- */

typedef struct {
    int calls;
    size_t ops;
    double seconds;
} commit_log;

static void on_commit(double seconds, size_t ops, void *data)
{
    commit_log *c = data;
    c->calls++;
    c->ops += ops;
    c->seconds += seconds;
}

#define BATCH_N 1000

typedef struct {
    fixture *f;
    treq *reqs;
    uv_timer_t timer;
} burst;

/* Submits BATCH_N upserts from one timer callback: one loop turn. */
static void burst_cb(uv_timer_t *t)
{
    burst *b = t->data;
    for (int i = 0; i < BATCH_N; i++) {
        char id[32];
        snprintf(id, sizeof(id), "tenant-%04d", i);
        treq_upsert(&b->reqs[i], id, "Batch", 5);
        assert_int_equal(lb_store_submit(b->f->store, &b->reqs[i].op), 0);
    }
    lb_store_stats st;
    lb_store_stats_get(b->f->store, &st);
    assert_int_equal(st.pending, BATCH_N);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_group_commit(void **state)
{
    fixture *f = *state;
    fx_open(f);
    commit_log c = {0};
    lb_store_set_on_commit(f->store, on_commit, &c);

    burst b = {f, calloc(BATCH_N, sizeof(treq)), {0}};
    uv_timer_init(&f->loop, &b.timer);
    b.timer.data = &b;
    uv_timer_start(&b.timer, burst_cb, 0, 0);
    completion_counter = 0;
    run_loop(f);

    for (int i = 0; i < BATCH_N; i++) {
        assert_int_equal(b.reqs[i].calls, 1);
        assert_int_equal(b.reqs[i].op.status, 0);
        assert_int_equal(b.reqs[i].op.tenant_upsert.created, 1);
        assert_int_equal(b.reqs[i].order, i); /* callbacks in submission order */
    }
    lb_store_stats st;
    lb_store_stats_get(f->store, &st);
    print_message("%d upserts in %llu commit(s), last %.6f s\n", BATCH_N,
                  (unsigned long long)st.commits, st.last_commit_seconds);
    /* One turn's ops go to the store thread together: one transaction. */
    assert_int_equal(st.commits, 1);
    assert_int_equal(st.ops_committed, BATCH_N);
    assert_int_equal(st.last_batch_ops, BATCH_N);
    assert_int_equal(st.commit_failures, 0);
    assert_int_equal(st.pending, 0);
    assert_true(st.last_commit_seconds > 0);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.ops, BATCH_N);

    /* Ops submitted on separate turns while the thread is busy still share
     * commits: 20 turns of 50 ops. */
    for (int turn = 0; turn < 20; turn++) {
        for (int i = 0; i < 50; i++) {
            treq *r = &b.reqs[turn * 50 + i];
            char id[32];
            snprintf(id, sizeof(id), "tenant-%04d", turn * 50 + i);
            treq_upsert(r, id, "Again", 6);
            assert_int_equal(lb_store_submit(f->store, &r->op), 0);
        }
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    run_loop(f);
    for (int i = 0; i < BATCH_N; i++) {
        assert_int_equal(b.reqs[i].op.status, 0);
        assert_int_equal(b.reqs[i].op.tenant_upsert.created, 0);
    }
    lb_store_stats_get(f->store, &st);
    assert_int_equal(st.ops_committed, 2 * BATCH_N);
    assert_true(st.commits <= 1 + 20);
    assert_int_equal((uint64_t)c.calls, st.commits);
    free(b.reqs);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM tenants WHERE name = 'Again'"), BATCH_N);
    assert_db_intact(f);
}

/* ---- failures ---- */

static void migrate_only(fixture *f)
{
    fx_open(f);
    fx_close(f);
}

static void test_failing_op_does_not_fail_batch(void **state)
{
    fixture *f = *state;
    migrate_only(f);
    if (fx_is_pg(f))
        raw_exec(f, "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN"
                    " IF NEW.name = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END$$;"
                    "CREATE TRIGGER boom BEFORE INSERT ON tenants FOR EACH ROW"
                    " EXECUTE FUNCTION boom();");
    else
        raw_exec(f, "CREATE TRIGGER boom BEFORE INSERT ON tenants WHEN NEW.name = 'boom'"
                    " BEGIN SELECT RAISE(ABORT, 'boom'); END;");
    fx_open(f);

    treq r[5];
    treq_upsert(&r[0], "a", "A", 1);
    treq_upsert(&r[1], "b", "boom", 1);
    treq_upsert(&r[2], "c", "C", 1);
    treq_delete(&r[3], "nobody");
    treq_load_all(&r[4]);
    for (int i = 0; i < 5; i++)
        assert_int_equal(lb_store_submit(f->store, &r[i].op), 0);
    run_loop(f);
    assert_int_equal(r[0].op.status, 0);
    assert_int_equal(r[1].op.status, LB_EINVAL); /* a constraint (the trigger) */
    assert_int_equal(r[2].op.status, 0);
    assert_int_equal(r[3].op.status, LB_ENOTFOUND);
    assert_int_equal(r[4].op.status, 0);
    assert_int_equal(r[4].op.tenant_load_all.count, 2); /* a and c */
    lb_tenant_recs_free(r[4].op.tenant_load_all.recs, r[4].op.tenant_load_all.count);

    lb_store_stats st;
    lb_store_stats_get(f->store, &st);
    assert_int_equal(st.commits, 1);
    assert_int_equal(st.commit_failures, 0);
    assert_int_equal(lb_store_ready(f->store), 1);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM tenants"), 2);
    assert_db_intact(f);
}

/* SQLite rolled the whole transaction back (as on a full disk): every write
 * of the batch, including those that had succeeded, gets LB_EIO; the read
 * runs again alone and answers from the state before the batch. */
static void test_lost_transaction_fails_batch(void **state)
{
    fixture *f = *state;
    migrate_only(f);
    if (fx_is_pg(f)) /* a failure of the transaction's, not of the op's input */
        raw_exec(f, "CREATE FUNCTION rb() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN"
                    " IF NEW.name = 'rollback' THEN RAISE EXCEPTION 'gone'"
                    " USING ERRCODE = 'serialization_failure'; END IF; RETURN NEW; END$$;"
                    "CREATE TRIGGER rb BEFORE INSERT ON tenants FOR EACH ROW"
                    " EXECUTE FUNCTION rb();");
    else
        raw_exec(f, "CREATE TRIGGER rb BEFORE INSERT ON tenants WHEN NEW.name = 'rollback'"
                    " BEGIN SELECT RAISE(ROLLBACK, 'gone'); END;");
    fx_open(f);

    treq r[4];
    treq_upsert(&r[0], "a", "A", 1);
    treq_upsert(&r[1], "b", "rollback", 1);
    treq_upsert(&r[2], "c", "C", 1);
    treq_load_all(&r[3]);
    completion_counter = 0;
    for (int i = 0; i < 4; i++)
        assert_int_equal(lb_store_submit(f->store, &r[i].op), 0);
    run_loop(f);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].order, i);
        assert_int_equal(r[i].op.status, i == 3 ? 0 : LB_EIO);
    }
    assert_int_equal(r[0].op.tenant_upsert.created, 0);
    assert_int_equal(r[3].op.tenant_load_all.count, 0);
    lb_tenant_recs_free(r[3].op.tenant_load_all.recs, r[3].op.tenant_load_all.count);
    assert_int_equal(lb_store_ready(f->store), 0);
    lb_store_stats st;
    lb_store_stats_get(f->store, &st);
    assert_int_equal(st.commit_failures, 1);
    assert_int_equal(st.commits, 0);

    /* The next good batch makes the store ready again. */
    assert_int_equal(upsert(f, "d", "D", 1), 0);
    assert_int_equal(lb_store_ready(f->store), 1);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM tenants"), 1);
    assert_db_intact(f);
}

/* COMMIT itself fails (here a deferred foreign key): every op gets LB_EIO
 * and nothing of the batch is on disk. */
static void test_commit_failure_fails_batch(void **state)
{
    fixture *f = *state;
    migrate_only(f);
    if (fx_is_pg(f))
        raw_exec(f, "CREATE TABLE parent(id TEXT PRIMARY KEY);"
                    "CREATE TABLE child(pid TEXT REFERENCES parent(id) DEFERRABLE INITIALLY"
                    " DEFERRED);"
                    "CREATE FUNCTION late() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN"
                    " IF NEW.name = 'commitfail' THEN INSERT INTO child VALUES ('missing');"
                    " END IF; RETURN NEW; END$$;"
                    "CREATE TRIGGER late AFTER INSERT ON tenants FOR EACH ROW"
                    " EXECUTE FUNCTION late();");
    else
        raw_exec(f, "CREATE TABLE parent(id TEXT PRIMARY KEY);"
                    "CREATE TABLE child(pid TEXT REFERENCES parent(id) DEFERRABLE INITIALLY "
                    "DEFERRED);"
                    "CREATE TRIGGER late AFTER INSERT ON tenants WHEN NEW.name = 'commitfail'"
                    " BEGIN INSERT INTO child VALUES ('missing'); END;");
    fx_open(f);
    commit_log c = {0};
    lb_store_set_on_commit(f->store, on_commit, &c);

    treq r[3];
    treq_upsert(&r[0], "a", "A", 1);
    treq_upsert(&r[1], "b", "commitfail", 1);
    treq_upsert(&r[2], "c", "C", 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(lb_store_submit(f->store, &r[i].op), 0);
    run_loop(f);
    for (int i = 0; i < 3; i++)
        assert_int_equal(r[i].op.status, LB_EIO);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.ops, 3);
    assert_int_equal(lb_store_ready(f->store), 0);

    assert_int_equal(upsert(f, "d", "D", 1), 0);
    assert_int_equal(lb_store_ready(f->store), 1);
    assert_int_equal(c.calls, 2);
    lb_store_stats st;
    lb_store_stats_get(f->store, &st);
    assert_int_equal(st.commits, 1);
    assert_int_equal(st.commit_failures, 1);
    assert_int_equal(st.ops_committed, 1);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM tenants"), 1);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM child"), 0);
    assert_db_intact(f);
}

/* ---- submit rules ---- */

static void test_submit_rejects_bad_ops(void **state)
{
    fixture *f = *state;
    fx_open(f);
    treq r;
    treq_upsert(&r, "ok", "Name", 1);
    r.op.cb = NULL;
    assert_int_equal(lb_store_submit(f->store, &r.op), LB_EINVAL);
    assert_int_equal(lb_store_submit(f->store, NULL), LB_EINVAL);

    treq_upsert(&r, "ok", "Name", 1);
    r.op.kind = 0;
    assert_int_equal(lb_store_submit(f->store, &r.op), LB_EINVAL);
    r.op.kind = LB_STORE_OP_KIND_END;
    assert_int_equal(lb_store_submit(f->store, &r.op), LB_EINVAL);

    treq_upsert(&r, "", "Name", 1);
    assert_int_equal(lb_store_submit(f->store, &r.op), LB_EINVAL);
    treq_upsert(&r, "ok", NULL, 1);
    assert_int_equal(lb_store_submit(f->store, &r.op), LB_EINVAL);
    treq_upsert(&r, "ok", "Name", 1);
    memset(r.op.tenant_upsert.rec.id, 'x', sizeof(r.op.tenant_upsert.rec.id)); /* no NUL */
    assert_int_equal(lb_store_submit(f->store, &r.op), LB_EINVAL);
    treq_upsert(&r, "ok", "Name", 1);
    r.op.tenant_upsert.rec.lever_rate = -1;
    assert_int_equal(lb_store_submit(f->store, &r.op), LB_EINVAL);
    treq_upsert(&r, "ok", "Name", 1);
    r.op.tenant_upsert.rec.api_addon = 2;
    assert_int_equal(lb_store_submit(f->store, &r.op), LB_EINVAL);
    treq_delete(&r, "");
    assert_int_equal(lb_store_submit(f->store, &r.op), LB_EINVAL);

    run_loop(f);
    assert_int_equal(r.calls, 0);
    lb_store_stats st;
    lb_store_stats_get(f->store, &st);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.commits, 0);
    fx_close(f);
}

static void test_queue_bound(void **state)
{
    fixture *f = *state;
    fx_open(f);
    treq *r = calloc(LB_STORE_QUEUE_MAX + 1, sizeof(treq));
    for (int i = 0; i < LB_STORE_QUEUE_MAX; i++) {
        treq_delete(&r[i], "nobody");
        assert_int_equal(lb_store_submit(f->store, &r[i].op), 0);
    }
    treq_delete(&r[LB_STORE_QUEUE_MAX], "nobody");
    assert_int_equal(lb_store_submit(f->store, &r[LB_STORE_QUEUE_MAX].op), LB_ETOOBIG);
    run_loop(f);
    for (int i = 0; i < LB_STORE_QUEUE_MAX; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].op.status, LB_ENOTFOUND);
    }
    assert_int_equal(r[LB_STORE_QUEUE_MAX].calls, 0);
    /* Room again. */
    assert_int_equal(run_op(f, &r[LB_STORE_QUEUE_MAX]), LB_ENOTFOUND);
    free(r);
    fx_close(f);
}

/* ---- submitting from any loop phase ---- */

/* Ops submitted from prepare and check callbacks (which run after the
 * store's hand-over in a loop turn) must not wait for the loop's poll: here
 * a 10 s timer would let the loop sleep that long. */
typedef struct {
    fixture *f;
    uv_prepare_t prepare;
    uv_check_t check;
    uv_timer_t guard;
    treq reqs[2];
    int done;
    uint64_t t0;
    uint64_t elapsed_ns;
} phases;

static phases *phases_current;

static void phase_done_cb(lb_store_op *op)
{
    treq_cb(op);
    phases *p = phases_current;
    if (++p->done == 2) {
        p->elapsed_ns = uv_hrtime() - p->t0;
        uv_close((uv_handle_t *)&p->prepare, NULL);
        uv_close((uv_handle_t *)&p->check, NULL);
        uv_close((uv_handle_t *)&p->guard, NULL);
    }
}

static void phase_submit(phases *p, int i, const char *id)
{
    treq_upsert(&p->reqs[i], id, "Phase", 1);
    p->reqs[i].op.cb = phase_done_cb;
    assert_int_equal(lb_store_submit(p->f->store, &p->reqs[i].op), 0);
}

static void from_prepare_cb(uv_prepare_t *h)
{
    phases *p = h->data;
    uv_prepare_stop(h);
    phase_submit(p, 0, "from-prepare");
}

static void from_check_cb(uv_check_t *h)
{
    phases *p = h->data;
    uv_check_stop(h);
    phase_submit(p, 1, "from-check");
}

static void guard_cb(uv_timer_t *t)
{
    fail_msg("the loop slept with store operations pending");
}

static void test_submit_from_any_phase(void **state)
{
    fixture *f = *state;
    fx_open(f);
    phases p;
    memset(&p, 0, sizeof(p));
    p.f = f;
    phases_current = &p;
    uv_prepare_init(&f->loop, &p.prepare);
    uv_check_init(&f->loop, &p.check);
    uv_timer_init(&f->loop, &p.guard);
    p.prepare.data = p.check.data = &p;
    uv_prepare_start(&p.prepare, from_prepare_cb);
    uv_check_start(&p.check, from_check_cb);
    uv_timer_start(&p.guard, guard_cb, 10000, 0);
    p.t0 = uv_hrtime();
    run_loop(f);
    assert_int_equal(p.done, 2);
    assert_int_equal(p.reqs[0].op.status, 0);
    assert_int_equal(p.reqs[1].op.status, 0);
    assert_true(p.elapsed_ns < 2000000000ull);
    fx_close(f);
}

/* ---- close ---- */

typedef struct {
    treq reqs[100];
    int closed_after; /* op callbacks seen when the close callback ran */
    int calls;
} close_state;

static close_state *cs_current;

static void count_cb(lb_store_op *op)
{
    cs_current->calls++;
}

static void close_order_cb(void *data)
{
    close_state *cs = data;
    cs->closed_after = cs->calls;
}

static void test_close_completes_inflight_first(void **state)
{
    fixture *f = *state;
    fx_open(f);
    close_state cs = {0};
    cs_current = &cs;
    for (int i = 0; i < 100; i++) {
        char id[16];
        snprintf(id, sizeof(id), "c%d", i);
        treq_upsert(&cs.reqs[i], id, "Close", 1);
        cs.reqs[i].op.cb = count_cb;
        assert_int_equal(lb_store_submit(f->store, &cs.reqs[i].op), 0);
    }
    cs.closed_after = -1;
    lb_store_close(f->store, close_order_cb, &cs);
    assert_int_equal(lb_store_ready(f->store), 0);

    /* After close: refused, and the callback never runs. */
    treq late;
    treq_upsert(&late, "late", "Late", 1);
    assert_int_equal(lb_store_submit(f->store, &late.op), LB_ECLOSED);

    run_loop(f);
    f->store = NULL;
    assert_int_equal(cs.calls, 100);
    assert_int_equal(cs.closed_after, 100);
    assert_int_equal(late.calls, 0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(cs.reqs[i].op.status, 0);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM tenants"), 100);
    assert_db_intact(f);
}

/* An op callback that closes the store and tries to submit again. */
static fixture *cb_fixture;
static treq cb_second;

static void close_from_cb(lb_store_op *op)
{
    treq_cb(op);
    lb_store_close(cb_fixture->store, fx_closed_cb, cb_fixture);
    treq_upsert(&cb_second, "second", "Second", 1);
    assert_int_equal(lb_store_submit(cb_fixture->store, &cb_second.op), LB_ECLOSED);
}

static void test_meta_get_put(void **state)
{
    fixture *f = *state;
    fx_open(f);
    treq r;
    memset(&r, 0, sizeof(r));
    r.op.kind = LB_STORE_META_GET;
    r.op.cb = treq_cb;
    r.op.data = &r;
    r.op.meta_get.key = "k";
    assert_int_equal(run_op(f, &r), LB_ENOTFOUND);
    assert_null(r.op.meta_get.value);

    static const uint8_t v1[] = {1, 2, 0, 3};
    memset(&r, 0, sizeof(r));
    r.op.kind = LB_STORE_META_PUT;
    r.op.cb = treq_cb;
    r.op.data = &r;
    r.op.meta_put.key = "k";
    r.op.meta_put.value = v1;
    r.op.meta_put.len = sizeof(v1);
    assert_int_equal(run_op(f, &r), 0);
    r.calls = 0;
    r.op.meta_put.len = 2; /* replaces */
    assert_int_equal(run_op(f, &r), 0);

    memset(&r, 0, sizeof(r));
    r.op.kind = LB_STORE_META_GET;
    r.op.cb = treq_cb;
    r.op.data = &r;
    r.op.meta_get.key = "k";
    assert_int_equal(run_op(f, &r), 0);
    assert_int_equal(r.op.meta_get.len, 2);
    assert_memory_equal(r.op.meta_get.value, v1, 2);
    lb_free(r.op.meta_get.value);

    /* keys are bounded */
    char longkey[LB_STORE_META_KEY_MAX + 2];
    memset(longkey, 'x', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    r.op.meta_get.key = longkey;
    assert_int_equal(lb_store_submit(f->store, &r.op), LB_EINVAL);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM meta"), 1);
}

static void test_close_from_callback(void **state)
{
    fixture *f = *state;
    fx_open(f);
    cb_fixture = f;
    treq r;
    treq_upsert(&r, "first", "First", 1);
    r.op.cb = close_from_cb;
    f->closed = 0;
    assert_int_equal(lb_store_submit(f->store, &r.op), 0);
    run_loop(f);
    f->store = NULL;
    assert_int_equal(r.calls, 1);
    assert_int_equal(f->closed, 1);
    assert_int_equal(cb_second.calls, 0);
}

/* ---- nodes and leases (both backends: tables on PostgreSQL, temporary
 * tables on SQLite) ------------------------------------------------------- */

static void node_beat(fixture *f, const char *node)
{
    treq r;
    memset(&r, 0, sizeof(r));
    r.op.kind = LB_STORE_NODE_BEAT;
    r.op.cb = treq_cb;
    r.op.data = &r;
    r.op.node_beat.node = node;
    r.op.node_beat.advertise_url = "http://127.0.0.1:1";
    r.op.node_beat.forget_ms = 3600000;
    assert_int_equal(run_op(f, &r), 0);
}

static void cluster_read(fixture *f, treq *r)
{
    memset(r, 0, sizeof(*r));
    r->op.kind = LB_STORE_CLUSTER_READ;
    r->op.cb = treq_cb;
    r->op.data = r;
    r->op.cluster_read.live_ms = 60000;
    assert_int_equal(run_op(f, r), 0);
}

/* One lease item for node: returns its ok, and its epoch in *epoch. */
static int lease1(fixture *f, const char *node, int action, const char *tenant, int64_t *epoch)
{
    lb_lease_item it;
    memset(&it, 0, sizeof(it));
    snprintf(it.tenant_id, sizeof(it.tenant_id), "%s", tenant);
    it.action = action;
    it.epoch = *epoch;
    treq r;
    memset(&r, 0, sizeof(r));
    r.op.kind = LB_STORE_LEASE_WRITE;
    r.op.cb = treq_cb;
    r.op.data = &r;
    r.op.lease_write.node = node;
    r.op.lease_write.ttl_ms = 60000;
    r.op.lease_write.items = &it;
    r.op.lease_write.count = 1;
    assert_int_equal(run_op(f, &r), 0);
    if (it.ok) *epoch = it.epoch;
    return it.ok;
}

static void test_leases(void **state)
{
    fixture *f = *state;
    fx_open(f);
    assert_int_equal(upsert(f, "a", "A", 0), 0);
    assert_int_equal(upsert(f, "b", "B", 0), 0);
    assert_int_equal(upsert(f, "c", "C", 0), 0);
    node_beat(f, "n1");
    node_beat(f, "n2");
    treq r;
    cluster_read(f, &r);
    assert_int_equal(r.op.cluster_read.nnodes, 2);
    assert_string_equal(r.op.cluster_read.nodes[0].id, "n1");
    assert_true(r.op.cluster_read.nodes[1].live);
    assert_string_equal(r.op.cluster_read.nodes[1].advertise_url, "http://127.0.0.1:1");
    assert_int_equal(r.op.cluster_read.nleases, 3);
    assert_string_equal(r.op.cluster_read.leases[0].tenant_id, "a");
    assert_string_equal(r.op.cluster_read.leases[0].node, "");
    assert_int_equal(r.op.cluster_read.leases[0].epoch, 0);
    assert_true(r.op.cluster_read.leases[0].expired);
    int64_t now = r.op.cluster_read.now;
    assert_true(now > 0);
    lb_node_recs_free(r.op.cluster_read.nodes, r.op.cluster_read.nnodes);
    lb_free(r.op.cluster_read.leases);

    /* n1 takes a and b in one write (ascending ids), n2 takes c */
    lb_lease_item two[2];
    memset(two, 0, sizeof(two));
    snprintf(two[0].tenant_id, sizeof(two[0].tenant_id), "a");
    snprintf(two[1].tenant_id, sizeof(two[1].tenant_id), "b");
    two[0].action = two[1].action = LB_LEASE_TAKE;
    memset(&r, 0, sizeof(r));
    r.op.kind = LB_STORE_LEASE_WRITE;
    r.op.cb = treq_cb;
    r.op.data = &r;
    r.op.lease_write.node = "n1";
    r.op.lease_write.ttl_ms = 60000;
    r.op.lease_write.items = two;
    r.op.lease_write.count = 2;
    assert_int_equal(run_op(f, &r), 0);
    assert_true(two[0].ok && two[1].ok);
    assert_int_equal(two[0].epoch, 1);
    assert_true(two[0].expires_at >= now + 60000);
    /* out of order: refused before it is queued */
    lb_lease_item swapped[2] = {two[1], two[0]};
    r.op.lease_write.items = swapped;
    assert_int_equal(lb_store_submit(f->store, &r.op), LB_EINVAL);

    int64_t e = 0;
    assert_false(lease1(f, "n2", LB_LEASE_TAKE, "a", &e)); /* a has a lease */
    e = 1;
    assert_false(lease1(f, "n2", LB_LEASE_TAKE, "a", &e));  /* not expired */
    assert_false(lease1(f, "n2", LB_LEASE_RENEW, "a", &e)); /* not n2's */
    assert_true(lease1(f, "n1", LB_LEASE_RENEW, "a", &e));
    assert_int_equal(e, 1);
    /* a node takes its own unexpired lease back (a restart with the same
     * NODE_ID): a new epoch, and the old one no longer renews */
    assert_true(lease1(f, "n1", LB_LEASE_TAKE, "a", &e));
    assert_int_equal(e, 2);
    e = 1;
    assert_false(lease1(f, "n1", LB_LEASE_RENEW, "a", &e));
    e = 2;
    e = 0;
    assert_true(lease1(f, "n2", LB_LEASE_TAKE, "c", &e));
    e = 0;
    assert_false(lease1(f, "n2", LB_LEASE_TAKE, "zz", &e)); /* no such tenant */

    /* released: expired at once, taken by another with the epoch bumped;
     * the old holder's epoch no longer renews */
    e = 1;
    assert_true(lease1(f, "n1", LB_LEASE_RELEASE, "b", &e));
    cluster_read(f, &r);
    assert_true(r.op.cluster_read.leases[1].expired);
    assert_string_equal(r.op.cluster_read.leases[1].node, "n1");
    assert_false(r.op.cluster_read.leases[0].expired);
    lb_node_recs_free(r.op.cluster_read.nodes, r.op.cluster_read.nnodes);
    lb_free(r.op.cluster_read.leases);
    e = 1;
    assert_true(lease1(f, "n2", LB_LEASE_TAKE, "b", &e));
    assert_int_equal(e, 2);
    e = 1;
    assert_false(lease1(f, "n1", LB_LEASE_RENEW, "b", &e));

    /* the active jobs of the tenants leased to a node */
    lb_job_rec jobs[2];
    memset(jobs, 0, sizeof(jobs));
    snprintf(jobs[0].id, sizeof(jobs[0].id), "job_1");
    snprintf(jobs[0].tenant_id, sizeof(jobs[0].tenant_id), "a");
    snprintf(jobs[1].id, sizeof(jobs[1].id), "job_2");
    snprintf(jobs[1].tenant_id, sizeof(jobs[1].tenant_id), "c");
    jobs[0].action = jobs[1].action = "{\"type\":\"x\"}";
    jobs[0].created_at = 1000;
    jobs[1].created_at = 2000;
    memset(&r, 0, sizeof(r));
    r.op.kind = LB_STORE_JOB_INSERT;
    r.op.cb = treq_cb;
    r.op.data = &r;
    r.op.job_insert.recs = jobs;
    r.op.job_insert.count = 2;
    assert_int_equal(run_op(f, &r), 0);
    memset(&r, 0, sizeof(r));
    r.op.kind = LB_STORE_JOB_LOAD_ACTIVE;
    r.op.cb = treq_cb;
    r.op.data = &r;
    r.op.job_load_active.lease_node = "n1";
    assert_int_equal(run_op(f, &r), 0);
    assert_int_equal(r.op.job_load_active.count, 1);
    assert_string_equal(r.op.job_load_active.recs[0].id, "job_1");
    lb_job_recs_free(r.op.job_load_active.recs, r.op.job_load_active.count);
    memset(&r, 0, sizeof(r));
    r.op.kind = LB_STORE_JOB_LOAD_ACTIVE;
    r.op.cb = treq_cb;
    r.op.data = &r;
    r.op.job_load_active.lease_node = "n2";
    r.op.job_load_active.changed_since = 2000;
    assert_int_equal(run_op(f, &r), 0);
    assert_int_equal(r.op.job_load_active.count, 1);
    assert_string_equal(r.op.job_load_active.recs[0].id, "job_2");
    lb_job_recs_free(r.op.job_load_active.recs, r.op.job_load_active.count);
    r.calls = 0;
    r.op.job_load_active.changed_since = 2001;
    assert_int_equal(run_op(f, &r), 0);
    assert_int_equal(r.op.job_load_active.count, 0);

    /* fenced job writes: only while the tenant's lease names the node and
     * epoch; refused (LB_ECONFLICT) with the events they carry once it
     * moved on (c is n2's, epoch 1) */
    lb_job_rec upd = jobs[1];
    upd.status = LB_JOB_SUCCEEDED;
    lb_job_rec ev = jobs[1];
    snprintf(ev.id, sizeof(ev.id), "job_ev");
    memset(&r, 0, sizeof(r));
    r.op.kind = LB_STORE_JOB_UPDATE;
    r.op.cb = treq_cb;
    r.op.data = &r;
    r.op.job_update.rec = &upd;
    r.op.job_update.lease_node = "n1";
    r.op.job_update.lease_epoch = 1;
    r.op.notify = &ev;
    r.op.nnotify = 1;
    assert_int_equal(run_op(f, &r), LB_ECONFLICT);
    r.calls = 0;
    r.op.job_update.lease_node = "n2";
    r.op.job_update.lease_epoch = 2;
    assert_int_equal(run_op(f, &r), LB_ECONFLICT);
    r.calls = 0;
    r.op.notify = NULL;
    r.op.nnotify = 0;
    r.op.job_update.lease_epoch = 1;
    assert_int_equal(run_op(f, &r), 0);
    r.calls = 0;
    snprintf(upd.id, sizeof(upd.id), "job_none");
    assert_int_equal(run_op(f, &r), LB_ENOTFOUND);
    memset(&r, 0, sizeof(r));
    r.op.kind = LB_STORE_JOB_GET;
    r.op.cb = treq_cb;
    r.op.data = &r;
    snprintf(r.op.job_get.tenant_id, sizeof(r.op.job_get.tenant_id), "c");
    snprintf(r.op.job_get.id, sizeof(r.op.job_get.id), "job_2");
    assert_int_equal(run_op(f, &r), 0);
    assert_int_equal(r.op.job_get.rec.status, LB_JOB_SUCCEEDED);
    lb_job_rec_free(&r.op.job_get.rec);
    r.calls = 0;
    snprintf(r.op.job_get.id, sizeof(r.op.job_get.id), "job_ev");
    assert_int_equal(run_op(f, &r), LB_ENOTFOUND); /* the refused write's event */

    /* fenced invitation ledger writes, the same rule: a claim or an update
     * of a node whose lease moved on writes nothing, not even its events */
    lb_invitation_rec inv;
    memset(&inv, 0, sizeof(inv));
    snprintf(inv.tenant_id, sizeof(inv.tenant_id), "c");
    inv.opportunity_id = "O1";
    inv.assessment = "js";
    inv.job_id = "job_2";
    memset(&r, 0, sizeof(r));
    r.op.kind = LB_STORE_INVITATION_CLAIM;
    r.op.cb = treq_cb;
    r.op.data = &r;
    r.op.invitation_claim.rec = &inv;
    r.op.invitation_claim.lease_node = "n1";
    r.op.invitation_claim.lease_epoch = 0; /* a fence needs an epoch */
    assert_int_equal(lb_store_submit(f->store, &r.op), LB_EINVAL);
    r.op.invitation_claim.lease_epoch = 1;
    assert_int_equal(run_op(f, &r), LB_ECONFLICT);
    treq g;
    memset(&g, 0, sizeof(g));
    g.op.kind = LB_STORE_INVITATION_GET;
    g.op.cb = treq_cb;
    g.op.data = &g;
    snprintf(g.op.invitation_get.tenant_id, sizeof(g.op.invitation_get.tenant_id), "c");
    g.op.invitation_get.opportunity_id = "O1";
    g.op.invitation_get.assessment = "js";
    assert_int_equal(run_op(f, &g), LB_ENOTFOUND); /* the refused claim wrote nothing */
    r.calls = 0;
    r.op.invitation_claim.lease_node = "n2";
    assert_int_equal(run_op(f, &r), 0);
    assert_int_equal(r.op.invitation_claim.owned, 1);
    lb_invitation_rec_free(&r.op.invitation_claim.existing);
    inv.invitation_id = "inv_1";
    inv.url = "https://p.example/inv_1";
    memset(&r, 0, sizeof(r));
    r.op.kind = LB_STORE_INVITATION_UPDATE;
    r.op.cb = treq_cb;
    r.op.data = &r;
    r.op.invitation_update.rec = &inv;
    r.op.invitation_update.lease_node = "n2";
    r.op.invitation_update.lease_epoch = 2;
    r.op.notify = &ev;
    r.op.nnotify = 1;
    assert_int_equal(run_op(f, &r), LB_ECONFLICT);
    g.calls = 0;
    assert_int_equal(run_op(f, &g), 0);
    assert_null(g.op.invitation_get.rec.invitation_id);
    lb_invitation_rec_free(&g.op.invitation_get.rec);
    memset(&g.op.invitation_get.rec, 0, sizeof(g.op.invitation_get.rec));
    treq jg;
    memset(&jg, 0, sizeof(jg));
    jg.op.kind = LB_STORE_JOB_GET;
    jg.op.cb = treq_cb;
    jg.op.data = &jg;
    snprintf(jg.op.job_get.tenant_id, sizeof(jg.op.job_get.tenant_id), "c");
    snprintf(jg.op.job_get.id, sizeof(jg.op.job_get.id), "job_ev");
    assert_int_equal(run_op(f, &jg), LB_ENOTFOUND); /* nor its invitation.sent */
    r.calls = 0;
    r.op.invitation_update.lease_epoch = 1;
    assert_int_equal(run_op(f, &r), 0);
    jg.calls = 0;
    assert_int_equal(run_op(f, &jg), 0); /* written with it */
    lb_job_rec_free(&jg.op.job_get.rec);
    g.calls = 0;
    assert_int_equal(run_op(f, &g), 0);
    assert_string_equal(g.op.invitation_get.rec.invitation_id, "inv_1");
    lb_invitation_rec_free(&g.op.invitation_get.rec);
    r.calls = 0;
    r.op.notify = NULL;
    r.op.nnotify = 0;
    inv.opportunity_id = "O2"; /* no such row: held lease, nothing to update */
    assert_int_equal(run_op(f, &r), LB_ENOTFOUND);

    /* a node that leaves is gone at once */
    memset(&r, 0, sizeof(r));
    r.op.kind = LB_STORE_NODE_BEAT;
    r.op.cb = treq_cb;
    r.op.data = &r;
    r.op.node_beat.node = "n1";
    r.op.node_beat.advertise_url = "";
    r.op.node_beat.leave = 1;
    assert_int_equal(run_op(f, &r), 0);
    cluster_read(f, &r);
    assert_int_equal(r.op.cluster_read.nnodes, 1);
    assert_string_equal(r.op.cluster_read.nodes[0].id, "n2");
    lb_node_recs_free(r.op.cluster_read.nodes, r.op.cluster_read.nnodes);
    lb_free(r.op.cluster_read.leases);

    /* a deleted tenant's lease goes with it */
    memset(&r, 0, sizeof(r));
    treq_delete(&r, "a");
    assert_int_equal(run_op(f, &r), 0);
    cluster_read(f, &r);
    assert_int_equal(r.op.cluster_read.nleases, 2);
    assert_string_equal(r.op.cluster_read.leases[0].tenant_id, "b");
    assert_string_equal(r.op.cluster_read.leases[0].node, "n2");
    assert_int_equal(r.op.cluster_read.leases[0].epoch, 2);
    lb_node_recs_free(r.op.cluster_read.nodes, r.op.cluster_read.nnodes);
    lb_free(r.op.cluster_read.leases);
    fx_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_close, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_bad_urls, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_not_a_database, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_upsert_create_then_update, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_load_all, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_delete_cascades, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_load_one_tenant, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_failing_op_does_not_fail_batch, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_lost_transaction_fails_batch, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_commit_failure_fails_batch, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_submit_rejects_bad_ops, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_queue_bound, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_submit_from_any_phase, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_close_completes_inflight_first, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_close_from_callback, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_meta_get_put, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_leases, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
