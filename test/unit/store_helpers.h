/* Helpers shared by test/unit/test_store*.c: a temporary database directory,
 * a loop, opening and closing the store, running ops, raw SQL on the file.
 *
 * Both backends: with LB_TEST_DB set to a PostgreSQL URL (ctest's
 * unit.<test>.postgres entries, on the cluster of test/pg/pg.sh), each
 * fixture gets a fresh schema of its own on that database (search_path in
 * the URL) and the raw SQL helpers run there; otherwise a SQLite file in a
 * temporary directory. fx_is_pg() tells a test which one it has. */
#ifndef LB_TEST_STORE_HELPERS_H
#define LB_TEST_STORE_HELPERS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/time.h"
#include "store/store.h"

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char dir[64];
    char path[128];
    char url[1024];
    char schema[64]; /* PostgreSQL: this fixture's schema; "" with SQLite */
    char admin[900]; /* PostgreSQL: LB_TEST_DB, for creating and dropping it */
    uv_loop_t loop;
    lb_store *store;
    int closed;
} fixture;

/* A request as a caller would embed it: the op and what the test checks. */
typedef struct {
    lb_store_op op;
    int calls;
    int order;
} treq;

static int completion_counter;

static inline void treq_cb(lb_store_op *op)
{
    treq *r = op->data;
    r->calls++;
    r->order = completion_counter++;
}

static inline int fx_is_pg(const fixture *f)
{
    return f->schema[0] != '\0';
}

/* The test's PostgreSQL database (LB_TEST_DB), or NULL for SQLite. */
static inline const char *fx_pg_base(void)
{
    const char *u = getenv("LB_TEST_DB");
    return u != NULL && (strncmp(u, "postgres", 8) == 0 || strchr(u, '=') != NULL) ? u : NULL;
}

static inline void pg_quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

static inline void pg_admin_exec(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) fail_msg("PostgreSQL %s: %s", conninfo, PQerrorMessage(c));
    PQsetNoticeProcessor(c, pg_quiet, NULL);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

static inline void fx_paths(fixture *f)
{
    snprintf(f->dir, sizeof(f->dir), "/tmp/lbstore-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/test.db", f->dir);
    snprintf(f->url, sizeof(f->url), "sqlite:%s", f->path);
    f->schema[0] = '\0';
    const char *base = fx_pg_base();
    if (base == NULL) return;
    static unsigned seq;
    snprintf(f->schema, sizeof(f->schema), "lbt_%ld_%u", (long)getpid(), seq++);
    snprintf(f->admin, sizeof(f->admin), "%s", base);
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s", f->schema,
             f->schema);
    pg_admin_exec(base, sql);
    snprintf(f->url, sizeof(f->url), "%s%soptions=-csearch_path%%3D%s", base,
             strchr(base, '?') ? "&" : "?", f->schema);
}

static inline void fx_remove_files(fixture *f)
{
    if (fx_is_pg(f)) {
        char sql[256];
        snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE", f->schema);
        pg_admin_exec(f->admin, sql);
    }
    static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
    char p[200];
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof(p), "%s%s", f->path, sfx[i]);
        unlink(p);
    }
    rmdir(f->dir);
}

static inline void fx_open(fixture *f)
{
    char err[256];
    int rc = lb_store_open(&f->loop, f->url, NULL, &f->store, err, sizeof(err));
    if (rc != 0) fail_msg("lb_store_open: %d %s", rc, err);
    assert_non_null(f->store);
    assert_int_equal(lb_store_ready(f->store), 1);
}

static inline void fx_closed_cb(void *data)
{
    fixture *f = data;
    f->closed++;
}

static inline void fx_close(fixture *f)
{
    f->closed = 0;
    lb_store_close(f->store, fx_closed_cb, f);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->closed, 1);
    f->store = NULL;
}

static inline int fx_setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    fx_paths(f);
    if (uv_loop_init(&f->loop) != 0) return -1;
    *state = f;
    return 0;
}

/* Every test ends with no handle left: uv_loop_close must return 0. */
static inline int fx_teardown(void **state)
{
    fixture *f = *state;
    if (f->store != NULL) fx_close(f);
    int rc = uv_loop_close(&f->loop);
    fx_remove_files(f);
    free(f);
    return rc == 0 ? 0 : -1;
}

static inline void run_loop(fixture *f)
{
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
}

static inline void treq_upsert(treq *r, const char *id, const char *name, int64_t at)
{
    memset(r, 0, sizeof(*r));
    r->op.kind = LB_STORE_TENANT_UPSERT;
    r->op.cb = treq_cb;
    r->op.data = r;
    snprintf(r->op.tenant_upsert.rec.id, sizeof(r->op.tenant_upsert.rec.id), "%s", id);
    r->op.tenant_upsert.rec.name = (char *)name;
    r->op.tenant_upsert.rec.updated_at = at;
}

static inline void treq_delete(treq *r, const char *id)
{
    memset(r, 0, sizeof(*r));
    r->op.kind = LB_STORE_TENANT_DELETE;
    r->op.cb = treq_cb;
    r->op.data = r;
    snprintf(r->op.tenant_delete.id, sizeof(r->op.tenant_delete.id), "%s", id);
}

static inline void treq_load_all(treq *r)
{
    memset(r, 0, sizeof(*r));
    r->op.kind = LB_STORE_TENANT_LOAD_ALL;
    r->op.cb = treq_cb;
    r->op.data = r;
}

/* Submits, runs the loop until the op completed, returns its status. */
static inline int run_op(fixture *f, treq *r)
{
    assert_int_equal(lb_store_submit(f->store, &r->op), 0);
    run_loop(f);
    assert_int_equal(r->calls, 1);
    return r->op.status;
}

static inline int upsert(fixture *f, const char *id, const char *name, int64_t at)
{
    treq r;
    treq_upsert(&r, id, name, at);
    return run_op(f, &r);
}

/* Raw SQL on the database through a connection of the test's own. */
static inline void raw_exec(fixture *f, const char *sql)
{
    if (fx_is_pg(f)) {
        pg_admin_exec(f->url, sql);
        return;
    }
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) fail_msg("raw_exec %s: %s", sql, msg ? msg : "?");
    sqlite3_close(db);
}

/* The first column of the first row of sql as an integer (-1: no row). */
static inline int64_t raw_int(fixture *f, const char *sql)
{
    if (fx_is_pg(f)) {
        PGconn *c = PQconnectdb(f->url);
        if (PQstatus(c) != CONNECTION_OK) fail_msg("PostgreSQL: %s", PQerrorMessage(c));
        PGresult *r = PQexec(c, sql);
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            fail_msg("raw_int %s: %s", sql, PQerrorMessage(c));
        int64_t v = PQntuples(r) > 0 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
        PQclear(r);
        PQfinish(c);
        return v;
    }
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK)
        fail_msg("raw_int %s: %s", sql, sqlite3_errmsg(db));
    int64_t v = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int64(q, 0) : -1;
    sqlite3_finalize(q);
    sqlite3_close(db);
    return v;
}

/* PRAGMA integrity_check says "ok" and no foreign key is dangling. */
static inline void assert_db_intact(fixture *f)
{
    if (fx_is_pg(f)) return; /* PostgreSQL checks foreign keys itself, always */
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "ok");
    sqlite3_finalize(q);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA foreign_key_check", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_DONE);
    sqlite3_finalize(q);
    sqlite3_close(db);
}

#endif
