/* What only the PostgreSQL backend has (run with LB_TEST_DB, ctest's
 * unit.test_store_pg.postgres; every test skips on SQLite): migrations once
 * under the advisory lock, two stores on one database deduplicating a
 * delivery as replicas would, losing the connection and getting it back
 * without reopening, reads that do not share a failed batch's fate, a
 * database that cannot be reached at open waited for, and the changes
 * another store commits reported (lb_store_listen). */
#include "store_helpers.h"

#include "store/pg_migrate.h"

/* The fixture's URL with an application_name of its own, so a test can find
 * (and kill) its store's connection among those of other runs. */
static void fx_tag(fixture *f)
{
    size_t n = strlen(f->url);
    snprintf(f->url + n, sizeof(f->url) - n, "&application_name=%s", f->schema);
}

static void open_second(fixture *f, lb_store **out)
{
    char err[256];
    int rc = lb_store_open(&f->loop, f->url, NULL, out, err, sizeof(err));
    if (rc != 0) fail_msg("lb_store_open: %d %s", rc, err);
}

static void close_other(fixture *f, lb_store *s)
{
    f->closed = 0;
    lb_store_close(s, fx_closed_cb, f);
    run_loop(f);
    assert_int_equal(f->closed, 1);
}

static void test_migrates_once(void **state)
{
    fixture *f = *state;
    if (!fx_is_pg(f)) skip();
    fx_open(f);
    lb_store *second = NULL;
    open_second(f, &second); /* finds the schema current: nothing to do */
    const int last = lb_store_pg_migrations[lb_store_pg_migration_count - 1].version;
    assert_int_equal(raw_int(f, "SELECT count(*) FROM schema_version"),
                     lb_store_pg_migration_count);
    assert_int_equal(raw_int(f, "SELECT max(version) FROM schema_version"), last);
    close_other(f, second);
    fx_close(f);
    /* A schema newer than this binary is refused. */
    raw_exec(f, "INSERT INTO schema_version VALUES (99, 'future', 0)");
    char err[256];
    lb_store *s = NULL;
    assert_int_equal(lb_store_open(&f->loop, f->url, NULL, &s, err, sizeof(err)), LB_EINVAL);
    assert_null(s);
    assert_non_null(strstr(err, "newer"));
}

typedef struct {
    treq r;
    lb_event_rec ev;
} ereq;

static void ereq_init(ereq *e, const char *id, const char *key)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->ev.id, sizeof(e->ev.id), "%s", id);
    snprintf(e->ev.tenant_id, sizeof(e->ev.tenant_id), "t1");
    e->ev.source = "lever";
    e->ev.type = "candidateStageChange";
    e->ev.dedupe_key = key;
    e->ev.status = "accepted";
    e->ev.payload = "{\"b\": 1, \"a\": [2]}";
    e->r.op.kind = LB_STORE_EVENT_INSERT;
    e->r.op.cb = treq_cb;
    e->r.op.data = &e->r;
    e->r.op.event_insert.event = &e->ev;
}

/* Two stores on one database, as two replicas: the same delivery through
 * both is one event, in the same loop turn or later. */
static void test_two_stores_one_event(void **state)
{
    fixture *f = *state;
    if (!fx_is_pg(f)) skip();
    fx_open(f);
    assert_int_equal(upsert(f, "t1", "T1", 1), 0);
    lb_store *other = NULL;
    open_second(f, &other);
    ereq a, b, c;
    ereq_init(&a, "ev_a", "h1:tok");
    ereq_init(&b, "ev_b", "h1:tok");
    ereq_init(&c, "ev_c", "h1:tok");
    assert_int_equal(lb_store_submit(f->store, &a.r.op), 0);
    assert_int_equal(lb_store_submit(other, &b.r.op), 0);
    run_loop(f);
    assert_int_equal(a.r.op.status, 0);
    assert_int_equal(b.r.op.status, 0);
    assert_int_equal(a.r.op.event_insert.duplicate + b.r.op.event_insert.duplicate, 1);
    assert_int_equal(lb_store_submit(other, &c.r.op), 0);
    run_loop(f);
    assert_int_equal(c.r.op.event_insert.duplicate, 1);
    assert_string_equal(c.r.op.event_insert.existing_id,
                        a.r.op.event_insert.duplicate ? "ev_b" : "ev_a");
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events"), 1);

    /* The payload comes back byte for byte (json, not jsonb). */
    treq g;
    memset(&g, 0, sizeof(g));
    g.op.kind = LB_STORE_EVENT_GET;
    g.op.cb = treq_cb;
    g.op.data = &g;
    snprintf(g.op.event_get.tenant_id, sizeof(g.op.event_get.tenant_id), "t1");
    snprintf(g.op.event_get.id, sizeof(g.op.event_get.id), "%s", c.r.op.event_insert.existing_id);
    assert_int_equal(run_op(f, &g), 0);
    assert_string_equal(g.op.event_get.row.payload, "{\"b\": 1, \"a\": [2]}");
    lb_event_row_free(&g.op.event_get.row);
    close_other(f, other);
}

/* Another replica's copy of a delivery, in a transaction left open until
 * this store's insert of the same delivery waits for its row lock. */
typedef struct {
    fixture *f;
    PGconn *c;
    int committed;
} late_commit;

static void late_commit_cb(uv_timer_t *t)
{
    late_commit *l = t->data;
    PGresult *r = PQexec(l->c, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type ="
                               " 'Lock' AND application_name = current_setting('application_name')"
                               " AND pid <> pg_backend_pid()");
    int waiting = PQresultStatus(r) == PGRES_TUPLES_OK && atoi(PQgetvalue(r, 0, 0)) > 0;
    PQclear(r);
    if (!waiting) return; /* the store's statement has not reached the lock yet */
    r = PQexec(l->c, "COMMIT");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    l->committed = 1;
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
}

/* The same delivery to two replicas at once: the other's insert commits
 * after this store's statement took its snapshot, while ON CONFLICT waits
 * for it. The duplicate still names the other's event (the contract's
 * {"status":"duplicate","event":"ev_..."}): one op alone, then two
 * coalesced ones twice (the fast form refused by the index, then the ON
 * CONFLICT form that follows it for a while). */
static void test_duplicate_of_a_concurrent_commit(void **state)
{
    fixture *f = *state;
    if (!fx_is_pg(f)) skip();
    fx_tag(f);
    fx_open(f);
    assert_int_equal(upsert(f, "t1", "T1", 1), 0);
    for (int round = 0; round < 3; round++) {
        char key[32], other_id[32], sql[512];
        snprintf(key, sizeof(key), "h1:late%d", round);
        snprintf(other_id, sizeof(other_id), "ev_other%d", round);
        late_commit l = {.f = f, .c = PQconnectdb(f->url)};
        assert_int_equal(PQstatus(l.c), CONNECTION_OK);
        snprintf(sql, sizeof(sql),
                 "BEGIN; INSERT INTO events(id, tenant_id, source, type, dedupe_key, status,"
                 " received_at) VALUES ('%s', 't1', 'lever', 'candidateStageChange', '%s',"
                 " 'accepted', %lld)",
                 other_id, key, (long long)lb_time_now_ms());
        PGresult *r = PQexec(l.c, sql);
        assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
        PQclear(r);
        ereq mine, more;
        char mine_id[32], more_id[32], more_key[32];
        snprintf(mine_id, sizeof(mine_id), "ev_mine%d", round);
        snprintf(more_id, sizeof(more_id), "ev_more%d", round);
        snprintf(more_key, sizeof(more_key), "h1:more%d", round);
        ereq_init(&mine, mine_id, key);
        ereq_init(&more, more_id, more_key);
        uv_timer_t t;
        uv_timer_init(&f->loop, &t);
        t.data = &l;
        uv_timer_start(&t, late_commit_cb, 10, 10);
        assert_int_equal(lb_store_submit(f->store, &mine.r.op), 0);
        if (round > 0) assert_int_equal(lb_store_submit(f->store, &more.r.op), 0);
        run_loop(f);
        assert_int_equal(l.committed, 1);
        PQfinish(l.c);
        assert_int_equal(mine.r.op.status, 0);
        assert_int_equal(mine.r.op.event_insert.duplicate, 1);
        assert_string_equal(mine.r.op.event_insert.existing_id, other_id);
        if (round > 0) {
            assert_int_equal(more.r.op.status, 0);
            assert_int_equal(more.r.op.event_insert.duplicate, 0);
        }
    }
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events"), 5);
    fx_close(f);
}

static int64_t now_ms(void)
{
    return lb_time_now_ms();
}

static void poll_cb(uv_timer_t *t)
{
    fixture *f = t->data;
    if (lb_store_ready(f->store)) uv_timer_stop(t);
}

/* Runs the loop until the store is ready again (at most ms). */
static int wait_ready(fixture *f, int64_t ms)
{
    uv_timer_t t;
    uv_timer_init(&f->loop, &t);
    t.data = f;
    int64_t deadline = now_ms() + ms;
    uv_timer_start(&t, poll_cb, 20, 20);
    while (!lb_store_ready(f->store) && now_ms() < deadline)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&t);
    uv_close((uv_handle_t *)&t, NULL);
    run_loop(f);
    return lb_store_ready(f->store);
}

/* The server side kills the store's connection (as a restart of PostgreSQL
 * or a failover would): the next batch fails as a whole, readiness drops,
 * and the store reconnects and is ready again by itself. */
static void test_reconnects(void **state)
{
    fixture *f = *state;
    if (!fx_is_pg(f)) skip();
    fx_tag(f);
    fx_open(f);
    assert_int_equal(upsert(f, "t1", "T1", 1), 0);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
             " WHERE application_name = '%s' AND pid <> pg_backend_pid()",
             f->schema);
    pg_admin_exec(f->admin, sql); /* not through f->url: that is the tagged one */
    usleep(100 * 1000);

    treq r[2];
    treq_upsert(&r[0], "t2", "T2", 1);
    treq_load_all(&r[1]);
    assert_int_equal(lb_store_submit(f->store, &r[0].op), 0);
    assert_int_equal(lb_store_submit(f->store, &r[1].op), 0);
    run_loop(f);
    assert_int_equal(r[0].op.status, LB_EIO);
    assert_int_equal(r[1].op.status, LB_EIO); /* no connection to read on either */
    assert_int_equal(lb_store_ready(f->store), 0);

    int64_t t0 = now_ms();
    assert_int_equal(wait_ready(f, 5000), 1);
    assert_true(now_ms() - t0 < 2000); /* the first backoff steps are short */
    assert_int_equal(upsert(f, "t2", "T2", 1), 0);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM tenants"), 2);
    lb_store_stats st;
    lb_store_stats_get(f->store, &st);
    assert_int_equal(st.commit_failures, 1);
    fx_close(f);
}

/* COMMIT fails (a deferred foreign key): the writes get LB_EIO, the read of
 * the same batch runs again alone and sees the state from before it. */
static void test_read_survives_failed_commit(void **state)
{
    fixture *f = *state;
    if (!fx_is_pg(f)) skip();
    fx_open(f);
    fx_close(f);
    raw_exec(f, "CREATE TABLE parent(id TEXT PRIMARY KEY);"
                "CREATE TABLE child(pid TEXT REFERENCES parent(id) DEFERRABLE INITIALLY"
                " DEFERRED);"
                "CREATE FUNCTION late() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN"
                " IF NEW.name = 'commitfail' THEN INSERT INTO child VALUES ('missing');"
                " END IF; RETURN NEW; END$$;"
                "CREATE TRIGGER late AFTER INSERT ON tenants FOR EACH ROW"
                " EXECUTE FUNCTION late();"
                "INSERT INTO tenants VALUES ('old', 'Old', 0, NULL, NULL, 1, 1);");
    fx_open(f);
    treq r[3];
    treq_upsert(&r[0], "a", "A", 1);
    treq_upsert(&r[1], "b", "commitfail", 1);
    treq_load_all(&r[2]);
    for (int i = 0; i < 3; i++)
        assert_int_equal(lb_store_submit(f->store, &r[i].op), 0);
    run_loop(f);
    assert_int_equal(r[0].op.status, LB_EIO);
    assert_int_equal(r[1].op.status, LB_EIO);
    assert_int_equal(r[2].op.status, 0);
    assert_int_equal(r[2].op.tenant_load_all.count, 1);
    assert_string_equal(r[2].op.tenant_load_all.recs[0].id, "old");
    lb_tenant_recs_free(r[2].op.tenant_load_all.recs, r[2].op.tenant_load_all.count);
    fx_close(f);
}

/* Several ops of one batch failing alone, each for its own reason: the
 * pipeline is sent again without each in turn, and the others commit once,
 * in order, with their outputs. */
static void test_several_fail_alone(void **state)
{
    fixture *f = *state;
    if (!fx_is_pg(f)) skip();
    fx_open(f);
    assert_int_equal(upsert(f, "t1", "T1", 1), 0);
    lb_job_rec j1 = {.id = "job_1", .tenant_id = "t1", .action = "{}"};
    lb_job_rec j2 = {.id = "job_1", .tenant_id = "t1", .action = "{}"}; /* same id */
    lb_job_rec j3 = {.id = "job_3", .tenant_id = "nobody", .action = "{}"};
    lb_job_rec j4 = {.id = "job_4", .tenant_id = "t1", .action = "not json"};
    const lb_job_rec *recs[] = {&j1, &j2, &j3, &j4};
    treq r[6];
    for (int i = 0; i < 4; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        r[i].op.kind = LB_STORE_JOB_INSERT;
        r[i].op.cb = treq_cb;
        r[i].op.data = &r[i];
        r[i].op.job_insert.recs = recs[i];
        r[i].op.job_insert.count = 1;
    }
    treq_upsert(&r[4], "t2", "T2", 1);
    treq_load_all(&r[5]);
    completion_counter = 0;
    for (int i = 0; i < 6; i++)
        assert_int_equal(lb_store_submit(f->store, &r[i].op), 0);
    run_loop(f);
    for (int i = 0; i < 6; i++)
        assert_int_equal(r[i].order, i);
    assert_int_equal(r[0].op.status, 0);
    assert_int_equal(r[1].op.status, LB_ECONFLICT);
    assert_int_equal(r[2].op.status, LB_ENOTFOUND);
    assert_int_equal(r[3].op.status, LB_EINVAL);
    assert_int_equal(r[4].op.status, 0);
    assert_int_equal(r[4].op.tenant_upsert.created, 1);
    assert_int_equal(r[5].op.status, 0);
    assert_int_equal(r[5].op.tenant_load_all.count, 2);
    lb_tenant_recs_free(r[5].op.tenant_load_all.recs, r[5].op.tenant_load_all.count);
    lb_store_stats st;
    lb_store_stats_get(f->store, &st);
    assert_int_equal(st.commit_failures, 0);
    assert_int_equal(lb_store_ready(f->store), 1);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM jobs"), 1);
    fx_close(f);
}

/* A database with statistics: the store switches to generic plans (pg.c,
 * plans_check) and answers as before: a new delivery inserted, a copy a
 * duplicate of the right event, the hook's time moved, lists in order. */
static void test_generic_plans(void **state)
{
    fixture *f = *state;
    if (!fx_is_pg(f)) skip();
    fx_open(f);
    assert_int_equal(upsert(f, "t1", "T1", 1), 0);
    fx_close(f);
    raw_exec(f, "INSERT INTO hooks(id, tenant_id, status, last_delivery_at)"
                " VALUES ('h1', 't1', 'active', 5);"
                "INSERT INTO events(id, tenant_id, source, type, dedupe_key, status, received_at)"
                " SELECT 'ev_old' || g, 't1', 'lever', 'x', 'h1:old' || g, 'accepted', g"
                " FROM generate_series(1, 12000) g;"
                "ANALYZE");
    fx_open(f);
    for (int round = 0; round < 8; round++) { /* past the 5 custom plans of auto */
        char id[32], key[32];
        snprintf(id, sizeof(id), "ev_new%d", round);
        snprintf(key, sizeof(key), "h1:new%d", round);
        ereq a, d;
        ereq_init(&a, id, key);
        a.ev.received_at = 1000 + round;
        a.r.op.event_insert.hook_id = "h1";
        ereq_init(&d, "ev_copy", round % 2 ? key : "h1:old77");
        assert_int_equal(lb_store_submit(f->store, &a.r.op), 0);
        assert_int_equal(lb_store_submit(f->store, &d.r.op), 0);
        run_loop(f);
        assert_int_equal(a.r.op.status, 0);
        assert_int_equal(a.r.op.event_insert.duplicate, 0);
        assert_int_equal(d.r.op.status, 0);
        assert_int_equal(d.r.op.event_insert.duplicate, 1);
        assert_string_equal(d.r.op.event_insert.existing_id, round % 2 ? id : "ev_old77");
    }
    assert_int_equal(raw_int(f, "SELECT last_delivery_at FROM hooks WHERE id = 'h1'"), 1007);
    treq l;
    memset(&l, 0, sizeof(l));
    l.op.kind = LB_STORE_EVENT_LIST;
    l.op.cb = treq_cb;
    l.op.data = &l;
    snprintf(l.op.event_list.tenant_id, sizeof(l.op.event_list.tenant_id), "t1");
    l.op.event_list.limit = 3;
    assert_int_equal(run_op(f, &l), 0);
    assert_int_equal(l.op.event_list.count, 3);
    assert_int_equal(l.op.event_list.more, 1);
    assert_string_equal(l.op.event_list.rows[0].id, "ev_old12000");
    lb_event_rows_free(l.op.event_list.rows, l.op.event_list.count);
    fx_close(f);
}

/* A stop timer for run_until: the loop runs until *done or the deadline. */
static void deadline_cb(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until every op of ops[0..n) has completed, at most ms; the
 * number that completed. */
static size_t run_until(fixture *f, ereq *ops, size_t n, int64_t ms)
{
    uv_timer_t t;
    uv_timer_init(&f->loop, &t);
    uv_timer_start(&t, deadline_cb, 20, 20);
    int64_t deadline = now_ms() + ms;
    size_t done = 0;
    while (now_ms() < deadline) {
        done = 0;
        for (size_t i = 0; i < n; i++)
            done += ops[i].r.calls > 0;
        if (done == n) break;
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&t);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    return done;
}

/* A hook's row that another replica's transaction holds (its own delivery
 * to the same hook, not committed yet) is not waited for: the delivery is
 * committed at once and leaves last_delivery_at to the holder. Waiting
 * made replicas' batches queue behind each other, and two batches that
 * locked two hooks in opposite orders deadlocked (1 s until PostgreSQL
 * broke it, then a whole batch answered 503): bench/cluster.sh saw p99
 * ingest latency at 980 ms with three replicas. */
static void test_busy_hook_row_not_waited_for(void **state)
{
    fixture *f = *state;
    if (!fx_is_pg(f)) skip();
    fx_open(f);
    assert_int_equal(upsert(f, "t1", "T1", 1), 0);
    assert_int_equal(upsert(f, "t2", "T2", 1), 0);
    raw_exec(f, "INSERT INTO hooks(id, tenant_id, status, last_delivery_at)"
                " VALUES ('h1', 't1', 'active', 5), ('h2', 't2', 'active', 5)");
    PGconn *other = PQconnectdb(f->url);
    assert_int_equal(PQstatus(other), CONNECTION_OK);
    PGresult *r = PQexec(other, "BEGIN; SELECT 1 FROM hooks WHERE id = 'h1' FOR UPDATE");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);

    /* One delivery alone (its own statement), then three in one batch (the
     * coalesced insert), each to the held hook h1 and to h2. */
    ereq ops[4];
    static const char *const keys[] = {"h1:a", "h1:b", "h2:c", "h1:d"};
    static const char *const hooks[] = {"h1", "h1", "h2", "h1"};
    for (size_t i = 0; i < 4; i++) {
        char id[16];
        snprintf(id, sizeof(id), "ev_%zu", i);
        ereq_init(&ops[i], id, keys[i]);
        ops[i].ev.received_at = 100 + (int64_t)i;
        ops[i].r.op.event_insert.hook_id = hooks[i];
        if (hooks[i][1] == '2') snprintf(ops[i].ev.tenant_id, sizeof(ops[i].ev.tenant_id), "t2");
    }
    assert_int_equal(lb_store_submit(f->store, &ops[0].r.op), 0);
    size_t alone = run_until(f, ops, 1, 3000);
    for (size_t i = 1; i < 4; i++)
        assert_int_equal(lb_store_submit(f->store, &ops[i].r.op), 0);
    size_t batch = run_until(f, ops + 1, 3, 3000);

    r = PQexec(other, "ROLLBACK");
    PQclear(r);
    PQfinish(other);
    run_loop(f); /* the ops the lock held, if any, complete now */
    assert_int_equal(alone, 1);
    assert_int_equal(batch, 3);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(ops[i].r.op.status, 0);
        assert_int_equal(ops[i].r.op.event_insert.duplicate, 0);
    }
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events"), 4);
    assert_int_equal(raw_int(f, "SELECT last_delivery_at FROM hooks WHERE id = 'h1'"), 5);
    assert_int_equal(raw_int(f, "SELECT last_delivery_at FROM hooks WHERE id = 'h2'"), 102);

    /* Free again: the next delivery raises it. */
    ereq e;
    ereq_init(&e, "ev_4", "h1:e");
    e.ev.received_at = 200;
    e.r.op.event_insert.hook_id = "h1";
    assert_int_equal(lb_store_submit(f->store, &e.r.op), 0);
    run_loop(f);
    assert_int_equal(e.r.op.status, 0);
    assert_int_equal(raw_int(f, "SELECT last_delivery_at FROM hooks WHERE id = 'h1'"), 200);
    fx_close(f);
}

/* A database that cannot be reached at open (here: not created yet) is
 * waited for: open succeeds, the store is not ready and fails every op;
 * once the database is there the store migrates it and is ready, without
 * being opened again. A URL that is not one is refused at open. */
static void test_waits_for_the_database(void **state)
{
    fixture *f = *state;
    if (!fx_is_pg(f)) skip();
    char db[96], sql[200], err[256];
    snprintf(db, sizeof(db), "%s_db", f->schema);
    size_t n = strlen(f->url);
    snprintf(f->url + n, sizeof(f->url) - n, "&dbname=%s", db);
    assert_int_equal(lb_store_open(&f->loop, f->url, NULL, &f->store, err, sizeof(err)), 0);
    assert_int_equal(lb_store_waiting(f->store, err, sizeof(err)), 1);
    assert_int_equal(lb_store_ready(f->store), 0);
    assert_int_equal(upsert(f, "t1", "T1", 1), LB_EIO);

    /* The database first, then the fixture's schema in it: a store that
     * connects in between finds no schema to migrate and tries again. */
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
    pg_admin_exec(f->admin, sql);
    char in_db[1200];
    snprintf(in_db, sizeof(in_db), "%s%sdbname=%s", f->admin, strchr(f->admin, '?') ? "&" : "?",
             db);
    snprintf(sql, sizeof(sql), "CREATE SCHEMA %s", f->schema);
    pg_admin_exec(in_db, sql);
    int64_t t0 = now_ms();
    assert_int_equal(wait_ready(f, 8000), 1);
    assert_true(now_ms() - t0 < 6000); /* one backoff step (5 s at most) */
    assert_int_equal(lb_store_waiting(f->store, err, sizeof(err)), 0);
    assert_int_equal(upsert(f, "t1", "T1", 1), 0);
    assert_int_equal(upsert(f, "t1", "T1 again", 1), 0);
    fx_close(f);
    snprintf(sql, sizeof(sql), "DROP DATABASE %s WITH (FORCE)", db);
    pg_admin_exec(f->admin, sql);

    lb_store *s = NULL;
    assert_int_equal(
        lb_store_open(&f->loop, "postgres://h:notaport/db", NULL, &s, err, sizeof(err)), LB_EINVAL);
    assert_null(s);
    assert_non_null(strstr(err, "LEVERBRIDGE_DB"));
    assert_int_equal(
        lb_store_open(&f->loop, "postgres:///db?nosuchoption=1", NULL, &s, err, sizeof(err)),
        LB_EINVAL);
}

/* ---- lb_store_listen (state sync) ---------------------------------------- */

typedef struct {
    int any; /* LB_STORE_CHANGED_ANY reports */
    char state[8][LB_TENANT_ID_MAX + 1];
    char jobs[8][LB_TENANT_ID_MAX + 1];
    int nstate, njobs;
} heard_log;

static void heard_cb(void *data, int what, const char *tenant)
{
    heard_log *h = data;
    if (what == LB_STORE_CHANGED_ANY) {
        assert_null(tenant);
        h->any++;
    } else if (what == LB_STORE_CHANGED_STATE && h->nstate < 8) {
        snprintf(h->state[h->nstate++], LB_TENANT_ID_MAX + 1, "%s", tenant);
    } else if (what == LB_STORE_CHANGED_JOBS && h->njobs < 8) {
        snprintf(h->jobs[h->njobs++], LB_TENANT_ID_MAX + 1, "%s", tenant);
    }
}

static int heard(char (*list)[LB_TENANT_ID_MAX + 1], int n, const char *tenant)
{
    for (int i = 0; i < n; i++)
        if (strcmp(list[i], tenant) == 0) return 1;
    return 0;
}

static void tick_cb(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop for ms (the listener's reports come through it). */
static void run_for(fixture *f, int64_t ms)
{
    uv_timer_t t;
    uv_timer_init(&f->loop, &t);
    uv_timer_start(&t, tick_cb, 20, 20);
    int64_t deadline = now_ms() + ms;
    while (now_ms() < deadline)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    run_loop(f);
}

/* What another store on the database commits is reported by tenant, on
 * its channel, and only once committed; the listener's own store's
 * changes are not; connecting is reported as "reload everything". */
static void test_listen(void **state)
{
    fixture *f = *state;
    if (!fx_is_pg(f)) skip();
    fx_open(f);
    heard_log h;
    memset(&h, 0, sizeof(h));
    assert_int_equal(lb_store_listen(f->store, heard_cb, &h), 0);
    assert_int_equal(lb_store_listen(f->store, heard_cb, &h), LB_EINVAL);
    for (int64_t end = now_ms() + 5000; h.any == 0 && now_ms() < end;)
        run_for(f, 50);
    assert_int_equal(h.any, 1);

    /* Tenant ids of this run's own (other runs share the channels). */
    char mine[LB_TENANT_ID_MAX + 1], theirs[LB_TENANT_ID_MAX + 1], gone[LB_TENANT_ID_MAX + 1];
    snprintf(mine, sizeof(mine), "m-%.40s", f->schema);
    snprintf(theirs, sizeof(theirs), "o-%.40s", f->schema);
    snprintf(gone, sizeof(gone), "g-%.40s", f->schema);
    lb_store *other = NULL;
    open_second(f, &other);
    treq a, b, c;
    treq_upsert(&a, mine, "Mine", 1);
    treq_upsert(&b, theirs, "Theirs", 1);
    treq_upsert(&c, gone, "Gone", 1);
    assert_int_equal(lb_store_submit(f->store, &a.op), 0);
    assert_int_equal(lb_store_submit(other, &b.op), 0);
    assert_int_equal(lb_store_submit(other, &c.op), 0);
    run_loop(f);
    assert_int_equal(a.op.status + b.op.status + c.op.status, 0);
    /* Jobs made by the other store; and a batch that fails writes nothing
     * and says nothing. */
    lb_job_rec job = {.status = LB_JOB_QUEUED, .action = "{\"type\":\"x\"}"};
    snprintf(job.id, sizeof(job.id), "job_listen_1");
    snprintf(job.tenant_id, sizeof(job.tenant_id), "%s", theirs);
    treq j;
    memset(&j, 0, sizeof(j));
    j.op.kind = LB_STORE_JOB_INSERT;
    j.op.job_insert.recs = &job;
    j.op.job_insert.count = 1;
    j.op.cb = treq_cb;
    j.op.data = &j;
    assert_int_equal(lb_store_submit(other, &j.op), 0);
    run_loop(f);
    assert_int_equal(j.op.status, 0);
    for (int64_t end = now_ms() + 3000;
         (!heard(h.state, h.nstate, theirs) || !heard(h.jobs, h.njobs, theirs)) && now_ms() < end;)
        run_for(f, 20);
    assert_true(heard(h.state, h.nstate, theirs));
    assert_true(heard(h.state, h.nstate, gone));
    assert_true(heard(h.jobs, h.njobs, theirs));
    assert_false(heard(h.state, h.nstate, mine));
    assert_false(heard(h.jobs, h.njobs, gone));

    /* Unlistened (the sync closing before the store): what is heard
     * afterwards reaches no one, while the listening goes on. */
    lb_store_unlisten(f->store);
    size_t nstate = h.nstate;
    char late[LB_TENANT_ID_MAX + 1];
    snprintf(late, sizeof(late), "l-%.40s", f->schema);
    treq d;
    treq_upsert(&d, late, "Late", 1);
    assert_int_equal(lb_store_submit(other, &d.op), 0);
    run_loop(f);
    assert_int_equal(d.op.status, 0);
    run_for(f, 500);
    assert_int_equal(h.nstate, nstate);
    close_other(f, other);
    fx_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrates_once, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_two_stores_one_event, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_of_a_concurrent_commit, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_reconnects, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_read_survives_failed_commit, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_generic_plans, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_busy_hook_row_not_waited_for, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_several_fail_alone, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_waits_for_the_database, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_listen, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests_name("store_pg", tests, NULL, NULL);
}
