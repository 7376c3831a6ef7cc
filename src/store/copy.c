/* leverbridge copy-store: moves a SQLite store into an empty PostgreSQL
 * database, for an installation that outgrows one machine. Blocking, on the
 * calling thread, with connections of its own (no store thread).
 *
 * The source is locked as a server locks it (<path>.lock), so no server
 * writes it meanwhile, migrated to the current version if it is older (as a
 * server start would) and read in one read transaction: one moment's state.
 * The target is migrated (under the advisory lock), checked empty, and
 * written in one transaction: all of it or nothing. Every row of every table
 * is copied (tenants, connections, hooks, workflows, events with their
 * dedupe keys, jobs, invitations, meta with the master key check, keys of
 * pruned results, the failure-tag ledger,
 * backfills), byte for byte; sealed secrets stay sealed, so the copy
 * needs the same master key. */
#include "store/backend.h"

#include "core/error.h"
#include "store/migrate.h"
#include "store/pg_migrate.h"

#include <libpq-fe.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* One table: its columns in both schemas (same names), which are BLOBs
 * (sent as binary bytea), and the order rows are read in. */
typedef struct {
    const char *name;
    const char *cols;
    int ncols;
    unsigned blobs; /* bit i: column i is a BLOB */
    const char *order;
    int on_conflict_nothing; /* events: SQLite may hold a Lever key twice */
} table;

static const table tables[] = {
    {"tenants", "id, name, api_addon, lever_rate, lever_burst, created_at, updated_at, failure_tag",
     8, 0, "id", 0},
    {"meta", "key, value, updated_at", 3, 1u << 1, "key", 0},
    {"connections",
     "tenant_id, status, auth, secret, token_expires_at, permissions_missing,"
     " permissions_checked_at, connected_at, updated_at",
     9, 1u << 3, "tenant_id", 0},
    {"hooks",
     "id, tenant_id, lever_webhook_id, signature_token, status, attempts, next_attempt_at,"
     " deadline_at, last_error, active_since, last_delivery_at, checked_at",
     12, 1u << 3, "id", 0},
    {"workflows", "id, tenant_id, body, enabled, created_at, updated_at", 6, 0,
     "tenant_id, created_at, id", 0},
    {"events",
     "id, tenant_id, source, type, dedupe_key, status, opportunity_id, payload, received_at", 9, 0,
     "seq", 1},
    {"jobs",
     "id, tenant_id, event_id, workflow_id, action, opportunity_id, seq, status, attempts,"
     " next_run_at, last_error, steps, created_at, updated_at",
     14, 0, "created_at, id", 0},
    {"invitations",
     "tenant_id, opportunity_id, assessment, job_id, invitation_id, url, note_id, created_at,"
     " stage_id",
     9, 0, "tenant_id, opportunity_id, assessment", 0},
    {"event_keys", "tenant_id, source, dedupe_key, event_id", 4, 0, "tenant_id, source, dedupe_key",
     1},
    {"failure_tags", "tenant_id, opportunity_id, tag, job_id, created_at", 5, 0,
     "tenant_id, opportunity_id, tag", 0},
    {"backfills",
     "id, tenant_id, workflow_id, status, page_offset, listed, queued, skipped, last_error,"
     " created_at, updated_at",
     11, 0, "created_at, id", 0},
};

static int pg_fail(PGconn *c, const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s: %s", what, PQerrorMessage(c));
    lb_store__one_line(err);
    return LB_EIO;
}

static int pg_exec(PGconn *c, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    PQclear(r);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : pg_fail(c, what, err, errlen);
}

/* Copies one table inside the open transactions of both. */
static int copy_table(sqlite3 *db, PGconn *pg, const table *t, size_t *rows, size_t *skipped,
                      char *err, size_t errlen)
{
    char sql[1024];
    snprintf(sql, sizeof(sql), "SELECT %s FROM %s ORDER BY %s", t->cols, t->name, t->order);
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "reading %s: %s", t->name, sqlite3_errmsg(db));
        return LB_EIO;
    }
    int n = snprintf(sql, sizeof(sql), "INSERT INTO %s(%s) VALUES (", t->name, t->cols);
    for (int i = 0; i < t->ncols; i++)
        n += snprintf(sql + n, sizeof(sql) - (size_t)n, "%s$%d", i ? ", " : "", i + 1);
    snprintf(sql + n, sizeof(sql) - (size_t)n, ")%s",
             t->on_conflict_nothing ? " ON CONFLICT DO NOTHING" : "");
    PGresult *pr = PQprepare(pg, t->name, sql, 0, NULL);
    int ok = PQresultStatus(pr) == PGRES_COMMAND_OK;
    PQclear(pr);
    if (!ok) {
        sqlite3_finalize(q);
        return pg_fail(pg, "preparing the copy", err, errlen);
    }
    int rc, status = 0;
    while (status == 0 && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *vals[16];
        int lens[16], fmts[16];
        for (int i = 0; i < t->ncols; i++) {
            int blob = (t->blobs >> i) & 1u;
            fmts[i] = blob;
            lens[i] = sqlite3_column_bytes(q, i);
            if (sqlite3_column_type(q, i) == SQLITE_NULL)
                vals[i] = NULL;
            else if (blob)
                vals[i] = lens[i] ? (const char *)sqlite3_column_blob(q, i) : "";
            else
                vals[i] = (const char *)sqlite3_column_text(q, i);
            if (!blob) lens[i] = 0;
        }
        pr = PQexecPrepared(pg, t->name, t->ncols, vals, lens, fmts, 0);
        if (PQresultStatus(pr) != PGRES_COMMAND_OK) {
            char what[96];
            snprintf(what, sizeof(what), "copying %s", t->name);
            status = pg_fail(pg, what, err, errlen);
        } else if (strcmp(PQcmdTuples(pr), "0") == 0) {
            (*skipped)++;
        } else {
            (*rows)++;
        }
        PQclear(pr);
    }
    if (status == 0 && rc != SQLITE_DONE) {
        snprintf(err, errlen, "reading %s: %s", t->name, sqlite3_errmsg(db));
        status = LB_EIO;
    }
    sqlite3_finalize(q);
    return status;
}

/* The source's lock, as a server takes it: refused while one runs. */
static int lock_source(const char *path, int *fd, char *err, size_t errlen)
{
    char lpath[4096];
    snprintf(lpath, sizeof(lpath), "%s.lock", path);
    *fd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (*fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", lpath, strerror(errno));
        return -errno;
    }
    if (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "%s is in use by a running leverbridge: stop it first", path);
        close(*fd);
        *fd = -1;
        return LB_ECONFLICT;
    }
    return 0;
}

int lb_store_copy(const char *from, const char *to, lb_store_copy_stats *out, char *err,
                  size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (strncmp(from, "sqlite:", 7) != 0 || from[7] == '\0' || strcmp(from + 7, ":memory:") == 0) {
        snprintf(err, errlen, "--from: expected sqlite:PATH");
        return LB_EINVAL;
    }
    if (strncmp(to, "postgres://", 11) != 0 && strncmp(to, "postgresql://", 13) != 0 &&
        strchr(to, '=') == NULL) {
        snprintf(err, errlen, "--to: expected postgres://... or a libpq conninfo string");
        return LB_EINVAL;
    }
    const char *path = from + 7;
    if (access(path, R_OK) != 0) {
        snprintf(err, errlen, "--from: %s: %s", path, strerror(errno));
        return LB_EINVAL;
    }
    int lock_fd = -1;
    int rc = lock_source(path, &lock_fd, err, errlen);
    if (rc != 0) return rc;

    sqlite3 *db = NULL;
    PGconn *pg = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", path, sqlite3_errmsg(db));
        rc = LB_EIO;
        goto done;
    }
    sqlite3_busy_timeout(db, 5000);
    rc = lb_store_migrate(db, lb_store_migrations, lb_store_migration_count, NULL, NULL, err,
                          errlen);
    if (rc != 0) goto done;

    static const char *const kw[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *val[] = {"10", "leverbridge copy-store", to, NULL};
    pg = PQconnectdbParams(kw, val, 1);
    if (pg == NULL || PQstatus(pg) != CONNECTION_OK) {
        rc = pg ? pg_fail(pg, "cannot connect to PostgreSQL", err, errlen) : LB_EIO;
        goto done;
    }
    rc = lb_store_pg_migrate(pg, NULL, NULL, err, errlen);
    if (rc != 0) goto done;

    rc = pg_exec(pg, "BEGIN ISOLATION LEVEL SERIALIZABLE", "BEGIN", err, errlen);
    if (rc != 0) goto done;
    PGresult *r = PQexec(pg, "SELECT (SELECT count(*) FROM tenants) + (SELECT count(*) FROM events)"
                             " + (SELECT count(*) FROM meta WHERE key <> 'write_probe')");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        rc = pg_fail(pg, "checking the target", err, errlen);
        goto done;
    }
    int empty = strcmp(PQgetvalue(r, 0, 0), "0") == 0;
    PQclear(r);
    if (!empty) {
        snprintf(err, errlen,
                 "--to: the PostgreSQL database already holds a leverbridge store: copy-store "
                 "only fills an empty one");
        rc = LB_ECONFLICT;
        goto done;
    }
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "reading %s: %s", path, sqlite3_errmsg(db));
        rc = LB_EIO;
        goto done;
    }
    size_t *counts[] = {&out->tenants,    &out->meta,         &out->connections, &out->hooks,
                        &out->workflows,  &out->events,       &out->jobs,        &out->invitations,
                        &out->event_keys, &out->failure_tags, &out->backfills};
    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]) && rc == 0; i++)
        rc = copy_table(db, pg, &tables[i], counts[i], &out->skipped, err, errlen);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    if (rc == 0) rc = pg_exec(pg, "COMMIT", "COMMIT", err, errlen);

done:
    if (pg != NULL) {
        if (rc != 0 && PQtransactionStatus(pg) != PQTRANS_IDLE) PQclear(PQexec(pg, "ROLLBACK"));
        PQfinish(pg);
    }
    if (db != NULL) sqlite3_close(db);
    if (lock_fd >= 0) close(lock_fd);
    return rc;
}
