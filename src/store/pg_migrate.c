/* PostgreSQL schema migrations: the ordered list of schema steps and the code
 * that applies the missing ones, each in its own transaction, all under one
 * advisory lock. */
#include "store/pg_migrate.h"

#include "core/error.h"
#include "store/backend.h"
#include "core/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Version 1: what SQLite's versions 1 to 5 hold, in PostgreSQL's types.
 * Times are bigint ms since the Unix epoch (as the store interface has
 * them); secrets are bytea, sealed above the store; JSON columns are `json`,
 * which checks the text and keeps it byte for byte (jsonb would reorder keys
 * and respace what the API hands back). Ids compare bytewise (COLLATE "C"),
 * so orders and list cursors are those of the SQLite backend whatever the
 * database's locale.
 *
 * Dedupe: one unique index on (tenant, source, dedupe_key) for every source:
 * a Lever key is "<hook id>:<token>", a platform key its result_id. Replicas
 * share it (INSERT ... ON CONFLICT DO NOTHING), unlike SQLite's in-memory
 * window. Keys of pruned results move to event_keys. */
/* clang-format off */
static const char schema_v1[] =
    "CREATE TABLE tenants ("
    " id text COLLATE \"C\" PRIMARY KEY,"
    " name text NOT NULL,"
    " api_addon smallint NOT NULL DEFAULT 0,"
    " lever_rate double precision,"   /* NULL: the configured default */
    " lever_burst integer,"           /* NULL: the configured default */
    " created_at bigint NOT NULL,"
    " updated_at bigint NOT NULL);"

    "CREATE TABLE connections ("
    " tenant_id text COLLATE \"C\" PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,"
    " status text NOT NULL DEFAULT 'disconnected',"
    " auth text,"
    " secret bytea,"                  /* sealed by the caller */
    " token_expires_at bigint,"
    " permissions_missing text,"      /* JSON array (text: the caller's bytes) */
    " permissions_checked_at bigint,"
    " connected_at bigint,"
    " updated_at bigint NOT NULL);"

    "CREATE TABLE hooks ("
    " id text COLLATE \"C\" PRIMARY KEY,"
    " tenant_id text COLLATE \"C\" NOT NULL UNIQUE REFERENCES tenants(id) ON DELETE CASCADE,"
    " lever_webhook_id text,"
    " signature_token bytea,"         /* sealed by the caller */
    " status text NOT NULL DEFAULT 'none',"
    " attempts integer NOT NULL DEFAULT 0,"
    " next_attempt_at bigint,"
    " deadline_at bigint,"
    " last_error text,"
    " active_since bigint,"
    " last_delivery_at bigint,"
    " checked_at bigint);"

    "CREATE TABLE workflows ("
    " id text COLLATE \"C\" PRIMARY KEY,"
    " tenant_id text COLLATE \"C\" NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
    " body json NOT NULL,"
    " enabled boolean NOT NULL DEFAULT true,"
    " created_at bigint NOT NULL,"
    " updated_at bigint NOT NULL);"
    "CREATE INDEX workflows_tenant ON workflows(tenant_id, created_at, id);"

    "CREATE TABLE events ("
    " id text COLLATE \"C\" PRIMARY KEY,"
    " tenant_id text COLLATE \"C\" NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
    " source text NOT NULL,"          /* lever|platform */
    " type text NOT NULL,"
    " dedupe_key text COLLATE \"C\" NOT NULL,"
    " status text NOT NULL,"          /* accepted|ignored */
    " opportunity_id text,"
    " payload json,"
    " received_at bigint NOT NULL);"
    "CREATE UNIQUE INDEX events_dedupe ON events(tenant_id, source, dedupe_key);"
    "CREATE INDEX events_tenant_received ON events(tenant_id, received_at, id);"
    "CREATE INDEX events_source_received ON events(source, received_at);"

    "CREATE TABLE jobs ("
    " id text COLLATE \"C\" PRIMARY KEY,"
    " tenant_id text COLLATE \"C\" NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
    " event_id text COLLATE \"C\","   /* NULL for jobs no event made */
    " workflow_id text COLLATE \"C\","/* kept when the workflow is deleted */
    " action json NOT NULL,"
    " opportunity_id text,"
    " seq integer NOT NULL DEFAULT 0,"
    " status text NOT NULL,"
    " attempts integer NOT NULL DEFAULT 0,"
    " next_run_at bigint,"
    " last_error text,"
    " steps json,"
    " created_at bigint NOT NULL,"
    " updated_at bigint NOT NULL);"
    "CREATE INDEX jobs_active ON jobs(created_at, event_id, seq)"
    " WHERE status IN ('queued', 'running', 'retrying');"
    "CREATE INDEX jobs_tenant_created ON jobs(tenant_id, created_at, id);"
    "CREATE INDEX jobs_tenant_status_created ON jobs(tenant_id, status, created_at, id);"
    "CREATE INDEX jobs_event ON jobs(event_id, seq);"
    "CREATE INDEX jobs_failed ON jobs(tenant_id) WHERE status = 'failed';"
    "CREATE INDEX jobs_finished ON jobs(updated_at)"
    " WHERE status IN ('succeeded', 'failed', 'skipped', 'cancelled');"

    "CREATE TABLE invitations ("
    " tenant_id text COLLATE \"C\" NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
    " opportunity_id text COLLATE \"C\" NOT NULL,"
    " assessment text COLLATE \"C\" NOT NULL,"
    " job_id text,"
    " invitation_id text,"
    " url text,"
    " note_id text,"
    " created_at bigint NOT NULL,"
    " PRIMARY KEY (tenant_id, opportunity_id, assessment));"

    "CREATE TABLE meta ("
    " key text COLLATE \"C\" PRIMARY KEY,"
    " value bytea NOT NULL,"
    " updated_at bigint NOT NULL);"

    "CREATE TABLE event_keys ("
    " tenant_id text COLLATE \"C\" NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
    " source text NOT NULL,"
    " dedupe_key text COLLATE \"C\" NOT NULL,"
    " event_id text NOT NULL,"        /* the pruned event's id, for the duplicate's answer */
    " PRIMARY KEY (tenant_id, source, dedupe_key));";
/* clang-format on */

/* Version 2: the console's hourly counts (state/stats.h), as SQLite's
 * version 6; no foreign key, so a deleted tenant's hours stay in the
 * totals until they age out. */
static const char schema_v2[] =
    "CREATE TABLE stats_hourly ("
    " tenant_id text COLLATE \"C\" NOT NULL,"
    " hour bigint NOT NULL,"
    " accepted bigint NOT NULL, duplicate bigint NOT NULL, refused bigint NOT NULL,"
    " succeeded bigint NOT NULL, failed bigint NOT NULL,"
    " PRIMARY KEY (tenant_id, hour));"
    "CREATE INDEX stats_hourly_hour ON stats_hourly(hour);";

/* Version 3: as SQLite's version 7, the stage an opportunity was in when its
 * invitation was sent (guarded moves). */
static const char schema_v3[] = "ALTER TABLE invitations ADD COLUMN stage_id text;";

/* Version 4: failures visible in Lever, as SQLite's version 8: the
 * tenant's tag and the ledger that makes it once per opportunity. */
static const char schema_v4[] =
    "ALTER TABLE tenants ADD COLUMN failure_tag text;"
    "CREATE TABLE failure_tags ("
    " tenant_id text COLLATE \"C\" NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
    " opportunity_id text COLLATE \"C\" NOT NULL,"
    " tag text COLLATE \"C\" NOT NULL,"
    " job_id text NOT NULL,"
    " created_at bigint NOT NULL,"
    " PRIMARY KEY (tenant_id, opportunity_id, tag));";

/* Version 5: jsonb where nothing depends on the JSON's text. jsonb sorts an
 * object's keys, keeps the last of duplicate keys, respaces, and refuses
 * the escape \u0000; a column whose text is handed back or read by
 * leverbridge's parser (which keeps the first of duplicate keys) stays
 * `json`, which stores it as given:
 *  - events.payload: the delivery as Lever or the platform sent it; a
 *    signed delivery holding \u0000 would be refused by jsonb and stored
 *    by SQLite.
 *  - jobs.action: GET .../jobs hands it back key by key, in its order, and
 *    a workflow's duplicate keys (the first one counts) are copied into it.
 *  - workflows.body: read back at start into the workflow GET answers, in
 *    its key order, the first of duplicate keys counting.
 * jobs.steps is written by the engine only (steps_json: unique step names,
 * string values, looked up by name, never handed back): jsonb. */
static const char schema_v5[] =
    "ALTER TABLE jobs ALTER COLUMN steps TYPE jsonb USING steps::jsonb;";

/* Version 6: several replicas (docs/internals/cluster.md). A node's row is
 * its heartbeat; a tenant's lease row names its holder, the epoch (bumped
 * at every change of holder) and when it ends, by the database's clock.
 * A lease goes with its tenant. */
static const char schema_v6[] =
    "CREATE TABLE nodes ("
    " id text COLLATE \"C\" PRIMARY KEY,"
    " advertise_url text NOT NULL,"
    " started_at bigint NOT NULL,"
    " last_seen_at bigint NOT NULL);"
    "CREATE TABLE leases ("
    " tenant_id text COLLATE \"C\" PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,"
    " node text COLLATE \"C\" NOT NULL,"
    " epoch bigint NOT NULL,"
    " expires_at bigint NOT NULL);"
    "CREATE INDEX leases_node ON leases(node);"
    /* A fenced write whose lease moved on fails with this SQLSTATE, so
     * that its transaction's other writes (its platform events) go too. */
    "CREATE FUNCTION lb_lease_moved_on() RETURNS integer LANGUAGE plpgsql VOLATILE AS"
    " $$BEGIN RAISE EXCEPTION 'the lease moved on' USING ERRCODE = 'P0L01'; END$$;";

/* Version 7: backfills, as SQLite's version 9. */
static const char schema_v7[] =
    "CREATE TABLE backfills ("
    " id text COLLATE \"C\" PRIMARY KEY,"
    " tenant_id text COLLATE \"C\" NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
    " workflow_id text NOT NULL,"
    " status text NOT NULL,"
    " page_offset text,"
    " listed bigint NOT NULL DEFAULT 0, queued bigint NOT NULL DEFAULT 0,"
    " skipped bigint NOT NULL DEFAULT 0,"
    " last_error text,"
    " created_at bigint NOT NULL, updated_at bigint NOT NULL);"
    "CREATE INDEX backfills_tenant ON backfills(tenant_id, created_at);"
    "CREATE INDEX backfills_running ON backfills(created_at) WHERE status = 'running';";

const lb_store_pg_migration lb_store_pg_migrations[] = {
    {1, "initial schema (SQLite versions 1-5)", schema_v1},
    {2, "hourly counts for the console (SQLite version 6)", schema_v2},
    {3, "invitations: the stage at sending (SQLite version 7)", schema_v3},
    {4, "failure tags: each tenant tag and its ledger (SQLite version 8)", schema_v4},
    {5, "jobs.steps as jsonb", schema_v5},
    {6, "nodes and tenant leases (several replicas)", schema_v6},
    {7, "backfills (SQLite version 9)", schema_v7},
    /* {8, "what it changes", "ALTER TABLE ...;"}, */
};
const size_t lb_store_pg_migration_count =
    sizeof(lb_store_pg_migrations) / sizeof(lb_store_pg_migrations[0]);

/* The advisory lock's key: the project's, and the schema's (two schemas of
 * one database migrate independently). */
#define LOCK_SQL "SELECT pg_advisory_lock(1819042151, hashtext(current_schema()))"
#define UNLOCK_SQL "SELECT pg_advisory_unlock(1819042151, hashtext(current_schema()))"

/* Runs sql (no parameters); 0, or LB_EIO with err set. */
static int exec(PGconn *c, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) {
        snprintf(err, errlen, "%s: %s", what, PQerrorMessage(c));
        lb_store__one_line(err);
    }
    PQclear(r);
    return ok ? 0 : LB_EIO;
}

static int read_version(PGconn *c, int *v, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, "SELECT COALESCE(max(version), 0) FROM schema_version");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        snprintf(err, errlen, "reading the schema version: %s", PQerrorMessage(c));
        lb_store__one_line(err);
        PQclear(r);
        return LB_EIO;
    }
    *v = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

static int migrate_locked(PGconn *c, int *from, int *to, char *err, size_t errlen)
{
    int rc = exec(c,
                  "CREATE TABLE IF NOT EXISTS schema_version ("
                  " version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)",
                  "creating schema_version", err, errlen);
    int v = 0;
    if (rc == 0) rc = read_version(c, &v, err, errlen);
    if (rc != 0) return rc;
    *from = *to = v;
    int last = lb_store_pg_migrations[lb_store_pg_migration_count - 1].version;
    if ((rc = lb_store__schema_check(v, last, err, errlen)) != 0) return rc;
    for (size_t i = 0; i < lb_store_pg_migration_count; i++) {
        const lb_store_pg_migration *m = &lb_store_pg_migrations[i];
        if (m->version <= v) continue;
        char what[160];
        snprintf(what, sizeof(what), "schema version %d (%s)", m->version, m->name);
        rc = exec(c, "BEGIN", what, err, errlen);
        if (rc == 0) rc = exec(c, m->sql, what, err, errlen);
        if (rc == 0) {
            char sql[256];
            snprintf(sql, sizeof(sql),
                     "INSERT INTO schema_version(version, name, applied_at) VALUES (%d, '%s', "
                     "%lld)",
                     m->version, m->name, (long long)lb_time_now_ms()); /* no quotes in names */
            rc = exec(c, sql, what, err, errlen);
        }
        if (rc == 0) rc = exec(c, "COMMIT", what, err, errlen);
        if (rc != 0) {
            PQclear(PQexec(c, "ROLLBACK"));
            return rc;
        }
        *to = m->version;
    }
    return 0;
}

int lb_store_pg_migrate(PGconn *conn, int *from, int *to, char *err, size_t errlen)
{
    int f = 0, t = 0;
    int rc = exec(conn, LOCK_SQL, "taking the migration lock", err, errlen);
    if (rc != 0) return rc;
    rc = migrate_locked(conn, &f, &t, err, errlen);
    char uerr[256];
    (void)exec(conn, UNLOCK_SQL, "unlock", uerr, sizeof(uerr));
    if (from != NULL) *from = f;
    if (to != NULL) *to = t;
    return rc;
}
