/* SQLite schema migrations: from an empty file, from an older version, a
 * no-op reopen, a refused future version, atomic steps, a simulated next
 * version, and v3 -> v4 (events rebuilt in arrival order). */
#include "store_helpers.h"

#include "store/migrate.h"

static const char *const v1_tables[] = {"tenants", "connections", "hooks",       "workflows",
                                        "events",  "jobs",        "invitations", "meta"};
static const char *const v1_indexes[] = {"workflows_tenant", "events_tenant_received",
                                         "jobs_status_next_run", "jobs_tenant_status_created",
                                         "jobs_event"};

static int latest(void)
{
    return lb_store_migrations[lb_store_migration_count - 1].version;
}

static void assert_v1_layout(fixture *f)
{
    char sql[200];
    for (size_t i = 0; i < LB_COUNTOF(v1_tables); i++) {
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '%s'",
                 v1_tables[i]);
        assert_int_equal(raw_int(f, sql), 1);
    }
    for (size_t i = 0; i < LB_COUNTOF(v1_indexes); i++) {
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = '%s'",
                 v1_indexes[i]);
        assert_int_equal(raw_int(f, sql), 1);
    }
    /* v4: events.id unique; results unique by key; Lever keys in no index */
    assert_int_equal(raw_int(f, "SELECT count(*) FROM pragma_index_list('events')"
                                " WHERE \"unique\" = 1 AND origin = 'u'"),
                     1);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM pragma_index_list('events')"
                                " WHERE name = 'events_dedupe' AND \"unique\" = 1 AND partial = 1"),
                     1);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM pragma_table_info('events')"
                                " WHERE name = 'seq' AND pk = 1"),
                     1);
}

static sqlite3 *raw_open(fixture *f)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    return db;
}

static void test_fresh_file(void **state)
{
    fixture *f = *state;
    fx_open(f);
    fx_close(f);
    assert_int_equal(latest(), (int)lb_store_migration_count);
    assert_int_equal(raw_int(f, "SELECT max(version) FROM schema_version"), latest());
    assert_int_equal(raw_int(f, "SELECT count(*) FROM schema_version"), latest());
    assert_v1_layout(f);
    assert_int_equal(
        raw_int(f, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'"), 1);
    assert_db_intact(f);
}

static void test_reopen_is_noop(void **state)
{
    fixture *f = *state;
    fx_open(f);
    assert_int_equal(upsert(f, "keep", "Keep", 7), 0);
    fx_close(f);
    int64_t applied = raw_int(f, "SELECT applied_at FROM schema_version WHERE version = 1");
    raw_exec(f, "UPDATE schema_version SET applied_at = 1 WHERE version = 1");

    fx_open(f);
    fx_close(f);
    assert_true(applied > 0);
    assert_int_equal(raw_int(f, "SELECT applied_at FROM schema_version WHERE version = 1"), 1);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM schema_version"), latest());
    assert_int_equal(raw_int(f, "SELECT created_at FROM tenants WHERE id = 'keep'"), 7);
    assert_db_intact(f);
}

/* A database from before the store existed: an unrelated table and an empty
 * version table (version 0). */
static void test_from_version_0(void **state)
{
    fixture *f = *state;
    raw_exec(f, "CREATE TABLE legacy(x INTEGER); INSERT INTO legacy VALUES (42);"
                "CREATE TABLE schema_version(version INTEGER PRIMARY KEY NOT NULL,"
                " name TEXT NOT NULL, applied_at INTEGER NOT NULL);");
    sqlite3 *db = raw_open(f);
    assert_int_equal(lb_store_schema_version(db), 0);
    sqlite3_close(db);

    fx_open(f);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT max(version) FROM schema_version"), latest());
    assert_int_equal(raw_int(f, "SELECT x FROM legacy"), 42);
    assert_v1_layout(f);
    assert_db_intact(f);
}

static void test_future_version_refused(void **state)
{
    fixture *f = *state;
    fx_open(f);
    assert_int_equal(upsert(f, "t", "T", 1), 0);
    fx_close(f);
    raw_exec(f, "INSERT INTO schema_version VALUES (99, 'from the future', 1)");

    char err[256];
    lb_store *s = NULL;
    assert_int_equal(lb_store_open(&f->loop, f->url, NULL, &s, err, sizeof(err)), LB_EINVAL);
    assert_null(s);
    assert_non_null(strstr(err, "99"));
    assert_non_null(strstr(err, "newer"));
    /* Untouched. */
    assert_int_equal(raw_int(f, "SELECT count(*) FROM tenants"), 1);
    assert_int_equal(raw_int(f, "SELECT max(version) FROM schema_version"), 99);
}

/* Version 4 of the future, as the next entry of the array would be. */
static int v2_apply(sqlite3 *db, char *err, size_t errlen)
{
    int rc = sqlite3_exec(db, "UPDATE tenants SET note = 'migrated:' || name", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s", sqlite3_errmsg(db));
        return LB_EIO;
    }
    return 0;
}

static void test_simulated_next(void **state)
{
    fixture *f = *state;
    fx_open(f);
    assert_int_equal(upsert(f, "acme", "Acme", 5), 0);
    fx_close(f);

    /* This binary's steps, then one more. */
    const int cur = (int)lb_store_migration_count, next = cur + 1;
    lb_store_migration steps[16];
    assert_true(lb_store_migration_count < 16);
    memcpy(steps, lb_store_migrations, lb_store_migration_count * sizeof(steps[0]));
    steps[cur] = (lb_store_migration){next, "tenant notes",
                                      "ALTER TABLE tenants ADD COLUMN note TEXT;"
                                      "CREATE INDEX tenants_note ON tenants(note);",
                                      v2_apply};
    char err[256] = "";
    int from = -1, to = -1;
    sqlite3 *db = raw_open(f);
    assert_int_equal(lb_store_migrate(db, steps, (size_t)next, &from, &to, err, sizeof(err)), 0);
    assert_int_equal(from, cur);
    assert_int_equal(to, next);
    assert_int_equal(lb_store_schema_version(db), next);
    /* Again: nothing to do. */
    assert_int_equal(lb_store_migrate(db, steps, (size_t)next, &from, &to, err, sizeof(err)), 0);
    assert_int_equal(from, next);
    assert_int_equal(to, next);
    /* This binary's list refuses the newer database. */
    assert_int_equal(lb_store_migrate(db, lb_store_migrations, lb_store_migration_count, &from, &to,
                                      err, sizeof(err)),
                     LB_EINVAL);
    sqlite3_close(db);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM tenants WHERE note = 'migrated:Acme'"), 1);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM schema_version"), next);
    assert_db_intact(f);
}

/* A database written by the previous version (v1, before the meta table)
 * is migrated at open and keeps its rows. */
static void test_from_previous_version(void **state)
{
    fixture *f = *state;
    sqlite3 *db = raw_open(f);
    char err[256] = "";
    int from = -1, to = -1;
    assert_int_equal(lb_store_migrate(db, lb_store_migrations, 1, &from, &to, err, sizeof(err)), 0);
    assert_int_equal(to, 1);
    assert_int_equal(sqlite3_exec(db,
                                  "INSERT INTO tenants(id, name, api_addon, created_at, updated_at)"
                                  " VALUES ('old', 'Old', 1, 3, 4)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM sqlite_master WHERE name = 'meta'"), 0);

    fx_open(f);
    fx_close(f);
    assert_int_equal(raw_int(f, "SELECT max(version) FROM schema_version"), latest());
    assert_int_equal(raw_int(f, "SELECT count(*) FROM sqlite_master WHERE name = 'meta'"), 1);
    assert_int_equal(raw_int(f, "SELECT created_at FROM tenants WHERE id = 'old'"), 3);
    assert_db_intact(f);
}

/* v3 -> v4: the events table is rebuilt with its rows and row numbers, in
 * arrival order; results stay unique by key, Lever keys are in no index (the
 * backend dedupes them in memory), and the store opens and dedupes both. */
static void test_events_v3_to_v4(void **state)
{
    fixture *f = *state;
    sqlite3 *db = raw_open(f);
    char err[256] = "";
    int from = -1, to = -1;
    assert_int_equal(lb_store_migrate(db, lb_store_migrations, 3, &from, &to, err, sizeof(err)), 0);
    assert_int_equal(to, 3);
    const char *rows =
        "INSERT INTO tenants(id, name, created_at, updated_at) VALUES ('t', 'T', 1, 1);"
        "INSERT INTO events(id, tenant_id, source, type, dedupe_key, status, received_at)"
        " VALUES ('ev_a', 't', 'lever', 'candidateStageChange', 'h:tok1', 'accepted', 10),"
        "        ('ev_b', 't', 'platform', 'assessment_completed', 'res-1', 'accepted', 20),"
        "        ('ev_c', 't', 'lever', 'candidateStageChange', 'h:tok2', 'accepted', 30);"
        "DELETE FROM events WHERE id = 'ev_b';"
        "INSERT INTO events(id, tenant_id, source, type, dedupe_key, status, received_at)"
        " VALUES ('ev_d', 't', 'platform', 'assessment_completed', 'res-2', 'accepted', 40);";
    assert_int_equal(sqlite3_exec(db, rows, NULL, NULL, NULL), SQLITE_OK);
    int64_t rowid_d = 0;
    {
        sqlite3_stmt *q = NULL;
        sqlite3_prepare_v2(db, "SELECT rowid FROM events WHERE id = 'ev_d'", -1, &q, NULL);
        assert_int_equal(sqlite3_step(q), SQLITE_ROW);
        rowid_d = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
    }
    assert_int_equal(lb_store_migrate(db, lb_store_migrations, lb_store_migration_count, &from, &to,
                                      err, sizeof(err)),
                     0);
    assert_int_equal(from, 3);
    assert_int_equal(to, latest());
    /* results: still unique by (tenant, source, key) */
    assert_int_not_equal(sqlite3_exec(db,
                                      "INSERT INTO events(id, tenant_id, source, type, dedupe_key,"
                                      " status, received_at) VALUES ('ev_x', 't', 'platform',"
                                      " 'assessment_completed', 'res-2', 'accepted', 50)",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events"), 3);
    assert_int_equal(raw_int(f, "SELECT seq FROM events WHERE id = 'ev_d'"), rowid_d);
    assert_int_equal(raw_int(f, "SELECT received_at FROM events WHERE id = 'ev_c'"), 30);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM events WHERE seq < (SELECT seq FROM events"
                                " WHERE id = 'ev_c')"),
                     1);
    assert_v1_layout(f);
    assert_db_intact(f);
}

/* A failing step leaves the database as it was before the step. */
static void test_failing_step_rolls_back(void **state)
{
    fixture *f = *state;
    fx_open(f);
    fx_close(f);

    const int cur = (int)lb_store_migration_count, next = cur + 1;
    lb_store_migration steps[16];
    assert_true(lb_store_migration_count < 16);
    memcpy(steps, lb_store_migrations, lb_store_migration_count * sizeof(steps[0]));
    steps[cur] = (lb_store_migration){
        next, "half done", "CREATE TABLE half(x); INSERT INTO no_such_table VALUES (1);", NULL};
    char err[256] = "", want[32];
    sqlite3 *db = raw_open(f);
    assert_int_equal(lb_store_migrate(db, steps, (size_t)next, NULL, NULL, err, sizeof(err)),
                     LB_EIO);
    snprintf(want, sizeof(want), "migration %d", next);
    assert_non_null(strstr(err, want));
    assert_int_equal(lb_store_schema_version(db), cur);
    assert_int_equal(sqlite3_get_autocommit(db), 1);

    /* Steps must be numbered 1, 2, ... */
    lb_store_migration bad[1] = {{3, "misnumbered", "SELECT 1", NULL}};
    assert_int_equal(lb_store_migrate(db, bad, 1, NULL, NULL, err, sizeof(err)), LB_EINVAL);
    sqlite3_close(db);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM sqlite_master WHERE name = 'half'"), 0);

    /* The store still opens it. */
    fx_open(f);
    fx_close(f);
    assert_db_intact(f);
}

/* lb_store_migrate on an empty file with no version table. */
static void test_migrate_empty_file(void **state)
{
    fixture *f = *state;
    sqlite3 *db = raw_open(f);
    assert_int_equal(lb_store_schema_version(db), 0);
    char err[256];
    int from = -1, to = -1;
    assert_int_equal(lb_store_migrate(db, lb_store_migrations, lb_store_migration_count, &from, &to,
                                      err, sizeof(err)),
                     0);
    assert_int_equal(from, 0);
    assert_int_equal(to, latest());
    sqlite3_close(db);
    assert_v1_layout(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fresh_file, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_reopen_is_noop, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_from_version_0, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_future_version_refused, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_simulated_next, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_from_previous_version, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_events_v3_to_v4, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_failing_step_rolls_back, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_migrate_empty_file, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
