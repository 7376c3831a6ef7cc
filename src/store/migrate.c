/* SQLite schema migrations: the ordered list of schema steps and the code
 * that applies the missing ones, each in its own transaction. */
#include "store/migrate.h"

#include "core/error.h"
#include "store/backend.h"
#include "core/time.h"

#include <stdio.h>

/* Version 1: the tables every feature of api.md needs. Times are INTEGER ms
 * since the Unix epoch; JSON is TEXT; secrets are BLOBs sealed above the
 * store. Every row of a tenant goes with it (ON DELETE CASCADE), which needs
 * PRAGMA foreign_keys=ON on each connection. */
/* clang-format off */
static const char schema_v1[] =
    "CREATE TABLE tenants ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " name TEXT NOT NULL,"
    " api_addon INTEGER NOT NULL DEFAULT 0,"
    " lever_rate REAL,"            /* NULL: the configured default */
    " lever_burst INTEGER,"        /* NULL: the configured default */
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL);"

    "CREATE TABLE connections ("
    " tenant_id TEXT PRIMARY KEY NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
    " status TEXT NOT NULL DEFAULT 'disconnected'," /* disconnected|connected|needs_reauth */
    " auth TEXT,"                  /* api_key|oauth|NULL */
    " secret BLOB,"                /* API key or OAuth tokens, sealed by the caller */
    " token_expires_at INTEGER,"
    " permissions_missing TEXT,"   /* JSON array, in Lever's words */
    " permissions_checked_at INTEGER,"
    " connected_at INTEGER,"
    " updated_at INTEGER NOT NULL);"

    "CREATE TABLE hooks ("
    " id TEXT PRIMARY KEY NOT NULL," /* the random id in /hooks/lever/<id> */
    " tenant_id TEXT NOT NULL UNIQUE REFERENCES tenants(id) ON DELETE CASCADE,"
    " lever_webhook_id TEXT,"
    " signature_token BLOB,"       /* sealed by the caller */
    " status TEXT NOT NULL DEFAULT 'none'," /* none|pending|active|failed */
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " next_attempt_at INTEGER,"
    " deadline_at INTEGER,"
    " last_error TEXT,"
    " active_since INTEGER,"
    " last_delivery_at INTEGER,"
    " checked_at INTEGER);"

    "CREATE TABLE workflows ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
    " body TEXT NOT NULL,"         /* the workflow as JSON */
    " enabled INTEGER NOT NULL DEFAULT 1,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL);"
    "CREATE INDEX workflows_tenant ON workflows(tenant_id, created_at);"

    "CREATE TABLE events ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
    " source TEXT NOT NULL,"       /* lever|platform */
    " type TEXT NOT NULL,"
    " dedupe_key TEXT NOT NULL,"   /* Lever: hook id + token; platform: result_id */
    " status TEXT NOT NULL,"       /* accepted|duplicate|ignored */
    " opportunity_id TEXT,"
    " payload TEXT,"               /* JSON */
    " received_at INTEGER NOT NULL,"
    " UNIQUE (tenant_id, source, dedupe_key));"
    "CREATE INDEX events_tenant_received ON events(tenant_id, received_at);"

    "CREATE TABLE jobs ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
    " event_id TEXT,"              /* NULL for jobs no event made */
    " workflow_id TEXT,"           /* kept when the workflow is deleted */
    " action TEXT NOT NULL,"       /* JSON */
    " opportunity_id TEXT,"
    " seq INTEGER NOT NULL DEFAULT 0," /* order within the event's actions */
    " status TEXT NOT NULL,"       /* queued|running|retrying|succeeded|failed|skipped|cancelled */
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " next_run_at INTEGER,"
    " last_error TEXT,"
    " steps TEXT,"                 /* JSON: results of finished steps */
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL);"
    "CREATE INDEX jobs_status_next_run ON jobs(status, next_run_at);"
    "CREATE INDEX jobs_tenant_status_created ON jobs(tenant_id, status, created_at);"
    "CREATE INDEX jobs_event ON jobs(event_id, seq);"

    "CREATE TABLE invitations ("
    " tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
    " opportunity_id TEXT NOT NULL,"
    " assessment TEXT NOT NULL,"
    " job_id TEXT,"
    " invitation_id TEXT,"
    " url TEXT,"
    " note_id TEXT,"               /* the Lever note updated when the result arrives */
    " created_at INTEGER NOT NULL,"
    " PRIMARY KEY (tenant_id, opportunity_id, assessment));";
/* clang-format on */

/* Version 2: process-wide facts, such as the master key check. */
static const char schema_v2[] = "CREATE TABLE meta ("
                                " key TEXT PRIMARY KEY NOT NULL,"
                                " value BLOB NOT NULL,"
                                " updated_at INTEGER NOT NULL);";

/* Version 3: the jobs list of a tenant, newest first, without a sort. */
static const char schema_v3[] =
    "CREATE INDEX jobs_tenant_created ON jobs(tenant_id, created_at, id);";

/* Version 4: events in arrival order, without the unique index for Lever
 * deliveries. Their keys hold 48 random characters: in a unique B-tree each
 * delivery dirtied its own leaf page, one 4 KiB WAL page per delivery per
 * commit. The SQLite backend now finds Lever duplicates among the recent
 * keys it keeps in memory (store/recent.h) and reads candidates by `seq`,
 * an explicit row number (stable across VACUUM), which also gives the
 * arrival order it reloads them in. The results of the assessment platform
 * keep a unique index: they have no replay window. The table is rebuilt
 * (SQLite cannot drop a table constraint), rows and row numbers kept. */
/* clang-format off */
static const char schema_v4[] =
    "CREATE TABLE events_v4 ("
    " seq INTEGER PRIMARY KEY,"    /* arrival order */
    " id TEXT NOT NULL UNIQUE,"
    " tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
    " source TEXT NOT NULL,"       /* lever|platform */
    " type TEXT NOT NULL,"
    " dedupe_key TEXT NOT NULL,"   /* Lever: hook id + token; platform: result_id */
    " status TEXT NOT NULL,"       /* accepted|duplicate|ignored */
    " opportunity_id TEXT,"
    " payload TEXT,"               /* JSON */
    " received_at INTEGER NOT NULL);"
    "INSERT INTO events_v4(seq, id, tenant_id, source, type, dedupe_key, status,"
    " opportunity_id, payload, received_at)"
    " SELECT rowid, id, tenant_id, source, type, dedupe_key, status, opportunity_id,"
    " payload, received_at FROM events ORDER BY rowid;"
    "DROP TABLE events;"
    "ALTER TABLE events_v4 RENAME TO events;"
    "CREATE INDEX events_tenant_received ON events(tenant_id, received_at);"
    "CREATE UNIQUE INDEX events_dedupe ON events(tenant_id, source, dedupe_key)"
    " WHERE source <> 'lever';";
/* clang-format on */

/* Version 5: retention. Finished jobs and old events are pruned in small
 * batches (LB_STORE_PRUNE): an index for each scan, so a pass reads only
 * what it deletes. The unique index on the platform's result ids dies with
 * their events, so the keys of pruned ones move to event_keys and a result
 * posted again is still a duplicate. */
/* clang-format off */
static const char schema_v5[] =
    "CREATE INDEX events_source_received ON events(source, received_at);"
    "CREATE INDEX jobs_finished ON jobs(updated_at)"
    " WHERE status IN ('succeeded', 'failed', 'skipped', 'cancelled');"
    "CREATE TABLE event_keys ("
    " tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
    " source TEXT NOT NULL,"
    " dedupe_key TEXT NOT NULL,"
    " event_id TEXT NOT NULL,"     /* the pruned event's id, for the duplicate's answer */
    " PRIMARY KEY (tenant_id, source, dedupe_key)) WITHOUT ROWID;";
/* clang-format on */

/* Version 6: hourly counts for the console's charts (state/stats.h). No
 * foreign key: the hours of a deleted tenant stay in the totals until they
 * age out. */
static const char schema_v6[] = "CREATE TABLE stats_hourly ("
                                " tenant_id TEXT NOT NULL,"
                                " hour INTEGER NOT NULL,"
                                " accepted INTEGER NOT NULL, duplicate INTEGER NOT NULL,"
                                " refused INTEGER NOT NULL, succeeded INTEGER NOT NULL,"
                                " failed INTEGER NOT NULL,"
                                " PRIMARY KEY (tenant_id, hour)) WITHOUT ROWID;"
                                "CREATE INDEX stats_hourly_hour ON stats_hourly(hour);";

/* Version 7: the stage an opportunity was in when its invitation was sent,
 * the default guard of a move that its result fires (api.md "Guarded stage
 * moves"). NULL for invitations sent before: their moves are unguarded. */
static const char schema_v7[] = "ALTER TABLE invitations ADD COLUMN stage_id TEXT;";

/* Version 8: failures visible in Lever (api.md). The tenant's tag (NULL:
 * off), and the ledger that makes it once per opportunity: a row per
 * (tenant, opportunity, tag), written in the transaction of the failed
 * job's end together with the job that adds the tag. Never pruned. */
static const char schema_v8[] = "ALTER TABLE tenants ADD COLUMN failure_tag TEXT;"
                                "CREATE TABLE failure_tags ("
                                " tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
                                " opportunity_id TEXT NOT NULL,"
                                " tag TEXT NOT NULL,"
                                " job_id TEXT NOT NULL," /* the job that adds it */
                                " created_at INTEGER NOT NULL,"
                                " PRIMARY KEY (tenant_id, opportunity_id, tag)) WITHOUT ROWID;";

/* Version 9: backfills (api.md "Dry run and backfill"): one row each,
 * with the offset of the next page and the counts, written in the same
 * transaction as each page's events, so a restart resumes at the first
 * page not committed. No foreign key on the workflow: a backfill's record
 * outlives its workflow. */
static const char schema_v9[] = "CREATE TABLE backfills ("
                                " id TEXT PRIMARY KEY NOT NULL,"
                                " tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
                                " workflow_id TEXT NOT NULL,"
                                " status TEXT NOT NULL," /* running|done|failed|cancelled */
                                " page_offset TEXT,"
                                " listed INTEGER NOT NULL DEFAULT 0,"
                                " queued INTEGER NOT NULL DEFAULT 0,"
                                " skipped INTEGER NOT NULL DEFAULT 0,"
                                " last_error TEXT,"
                                " created_at INTEGER NOT NULL,"
                                " updated_at INTEGER NOT NULL);"
                                "CREATE INDEX backfills_tenant ON backfills(tenant_id, created_at);"
                                "CREATE INDEX backfills_running ON backfills(created_at)"
                                " WHERE status = 'running';";

const lb_store_migration lb_store_migrations[] = {
    {1, "initial schema", schema_v1, NULL},
    {2, "meta table", schema_v2, NULL},
    {3, "jobs by tenant and time", schema_v3, NULL},
    {4, "events in arrival order, Lever keys out of the unique index", schema_v4, NULL},
    {5, "retention: pruning indexes, keys of pruned results", schema_v5, NULL},
    {6, "hourly counts for the console", schema_v6, NULL},
    {7, "invitations: the stage at sending, for guarded moves", schema_v7, NULL},
    {8, "failure tags: each tenant tag and its ledger", schema_v8, NULL},
    {9, "backfills", schema_v9, NULL},
    /* {3, "what it changes", "ALTER TABLE ...;", NULL}, */
};
const size_t lb_store_migration_count =
    sizeof(lb_store_migrations) / sizeof(lb_store_migrations[0]);

static int map_rc(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
        return LB_ECORRUPT;
    default:
        return LB_EIO;
    }
}

static int fail(sqlite3 *db, int rc, char *err, size_t errlen, const char *what)
{
    snprintf(err, errlen, "%s: %s", what, sqlite3_errmsg(db));
    if (!sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return map_rc(rc);
}

static int read_version(sqlite3 *db, int *version)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT COALESCE(MAX(version), 0) FROM schema_version", -1, &q,
                                NULL);
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        *version = sqlite3_column_int(q, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(q);
    return rc;
}

static const char create_version_table[] = "CREATE TABLE IF NOT EXISTS schema_version ("
                                           " version INTEGER PRIMARY KEY NOT NULL,"
                                           " name TEXT NOT NULL,"
                                           " applied_at INTEGER NOT NULL)";

int lb_store_schema_version(sqlite3 *db)
{
    int v = 0;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT 1 FROM sqlite_master WHERE type = 'table'"
                                " AND name = 'schema_version'",
                                -1, &q, NULL);
    if (rc != SQLITE_OK) return map_rc(rc);
    rc = sqlite3_step(q);
    sqlite3_finalize(q);
    if (rc == SQLITE_DONE) return 0;
    if (rc != SQLITE_ROW) return map_rc(rc);
    rc = read_version(db, &v);
    return rc == SQLITE_OK ? v : map_rc(rc);
}

static int record_version(sqlite3 *db, const lb_store_migration *m)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "INSERT INTO schema_version(version, name, applied_at)"
                                " VALUES (?1, ?2, ?3)",
                                -1, &q, NULL);
    if (rc != SQLITE_OK) return rc;
    sqlite3_bind_int(q, 1, m->version);
    sqlite3_bind_text(q, 2, m->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, lb_time_now_ms());
    rc = sqlite3_step(q);
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int lb_store_migrate(sqlite3 *db, const lb_store_migration *steps, size_t n, int *from, int *to,
                     char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        if (steps[i].version != (int)i + 1) {
            snprintf(err, errlen, "schema migration %zu is numbered %d", i + 1, steps[i].version);
            return LB_EINVAL;
        }
    }
    const int latest = (int)n;

    /* Read (and create) the version table in a transaction of its own. */
    int current = 0;
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK) return fail(db, rc, err, errlen, "cannot read the schema version");
    rc = sqlite3_exec(db, create_version_table, NULL, NULL, NULL);
    if (rc == SQLITE_OK) rc = read_version(db, &current);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) return fail(db, rc, err, errlen, "cannot read the schema version");
    if (from != NULL) *from = current;
    if ((rc = lb_store__schema_check(current, latest, err, errlen)) != 0) return rc;

    for (size_t i = (size_t)current; i < n; i++) {
        const lb_store_migration *m = &steps[i];
        char what[160];
        snprintf(what, sizeof(what), "schema migration %d (%s) failed", m->version, m->name);
        rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (rc != SQLITE_OK) return fail(db, rc, err, errlen, what);
        /* Another process may have applied it while we waited for the lock. */
        int now = 0;
        rc = read_version(db, &now);
        if (rc != SQLITE_OK) return fail(db, rc, err, errlen, what);
        if (now >= m->version) {
            sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
            current = now;
            continue;
        }
        if (m->sql != NULL) {
            rc = sqlite3_exec(db, m->sql, NULL, NULL, NULL);
            if (rc != SQLITE_OK) return fail(db, rc, err, errlen, what);
        }
        if (m->apply != NULL) {
            char why[256] = "";
            int lrc = m->apply(db, why, sizeof(why));
            if (lrc != 0) {
                snprintf(err, errlen, "%s: %s", what, why);
                sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
                return lrc;
            }
        }
        rc = record_version(db, m);
        if (rc == SQLITE_OK) rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK) return fail(db, rc, err, errlen, what);
        current = m->version;
    }
    if (to != NULL) *to = current;
    return 0;
}
