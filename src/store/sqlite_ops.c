/* What runs inside a batch of the SQLite backend: the statements and one
 * runner per operation kind (sqlite_int.h). Store thread. */
#include "store/sqlite_int.h"

#include "core/time.h"

#include <stdint.h>

const char *const lb_sq_stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_BEGIN_READ] = "BEGIN DEFERRED",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT op",
    [ST_RELEASE] = "RELEASE op",
    [ST_ROLLBACK_TO] = "ROLLBACK TO op",
    [ST_TENANT_CREATED_AT] = "SELECT created_at FROM tenants WHERE id = ?1",
    [ST_TENANT_INSERT] = "INSERT INTO tenants(id, name, api_addon, lever_rate, lever_burst,"
                         " created_at, updated_at, failure_tag)"
                         " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
    [ST_TENANT_UPDATE] = "UPDATE tenants SET name = ?2, api_addon = ?3, lever_rate = ?4,"
                         " lever_burst = ?5, updated_at = ?6, failure_tag = ?7 WHERE id = ?1",
    [ST_TENANT_DELETE] = "DELETE FROM tenants WHERE id = ?1",
    [ST_TENANT_ALL] =
        "SELECT id, name, api_addon, lever_rate, lever_burst, created_at,"
        " updated_at, failure_tag FROM tenants WHERE ?1 IS NULL OR id = ?1 ORDER BY id",
    [ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [ST_META_PUT] = "INSERT INTO meta(key, value, updated_at) VALUES (?1, ?2, ?3)"
                    " ON CONFLICT(key) DO UPDATE SET value = ?2, updated_at = ?3",
    [ST_META_DELETE] = "DELETE FROM meta WHERE key = ?1",
    [ST_JOB_INSERT] = "INSERT INTO jobs(id, tenant_id, event_id, workflow_id, action,"
                      " opportunity_id, seq, status, attempts, next_run_at, last_error, steps,"
                      " created_at, updated_at)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)",
    [ST_JOB_UPDATE] = "UPDATE jobs SET status = ?2, attempts = ?3, next_run_at = ?4,"
                      " last_error = ?5, steps = ?6, updated_at = ?7 WHERE id = ?1",
    /* The failure-tag ledger (schema v7): a row for a new (tenant,
     * opportunity, tag), nothing for one already tagged. */
    [ST_FAILURE_TAG_CLAIM] = "INSERT INTO failure_tags(tenant_id, opportunity_id, tag, job_id,"
                             " created_at) VALUES (?1, ?2, ?3, ?4, ?5)"
                             " ON CONFLICT(tenant_id, opportunity_id, tag) DO NOTHING",
    [ST_JOB_ACTIVE] = "SELECT id, tenant_id, event_id, workflow_id, action, opportunity_id, seq,"
                      " status, attempts, next_run_at, last_error, steps, created_at, updated_at"
                      " FROM jobs WHERE status IN ('queued', 'running', 'retrying')"
                      " ORDER BY created_at, event_id, seq",
    [ST_CONN_PUT] = "INSERT INTO connections(tenant_id, status, auth, secret, token_expires_at,"
                    " permissions_missing, permissions_checked_at, connected_at, updated_at)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                    " ON CONFLICT(tenant_id) DO UPDATE SET status = ?2, auth = ?3, secret = ?4,"
                    " token_expires_at = ?5, permissions_missing = ?6,"
                    " permissions_checked_at = ?7, connected_at = ?8, updated_at = ?9",
    [ST_CONN_DELETE] = "DELETE FROM connections WHERE tenant_id = ?1",
    [ST_HOOK_DELETE_TENANT] = "DELETE FROM hooks WHERE tenant_id = ?1",
    [ST_CONN_ALL] = "SELECT tenant_id, status, auth, secret, token_expires_at,"
                    " permissions_missing, permissions_checked_at, connected_at, updated_at"
                    " FROM connections WHERE ?1 IS NULL OR tenant_id = ?1",
    [ST_HOOK_ALL] = "SELECT id, tenant_id, lever_webhook_id, signature_token, status, attempts,"
                    " next_attempt_at, deadline_at, last_error, active_since, last_delivery_at,"
                    " checked_at FROM hooks WHERE ?1 IS NULL OR tenant_id = ?1",
    [ST_HOOK_DELETE_OTHERS] = "DELETE FROM hooks WHERE tenant_id = ?1 AND id <> ?2",
    [ST_HOOK_PUT] = "INSERT INTO hooks(id, tenant_id, lever_webhook_id, signature_token, status,"
                    " attempts, next_attempt_at, deadline_at, last_error, active_since,"
                    " last_delivery_at, checked_at)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                    " ON CONFLICT(id) DO UPDATE SET lever_webhook_id = ?3,"
                    " signature_token = ?4, status = ?5, attempts = ?6, next_attempt_at = ?7,"
                    " deadline_at = ?8, last_error = ?9, active_since = ?10,"
                    " last_delivery_at = MAX(COALESCE(last_delivery_at, 0), COALESCE(?11, 0)),"
                    " checked_at = ?12",
    /* "source <> 'lever'" lets the planner use the partial unique index */
    [ST_EVENT_FIND] = "SELECT id FROM events WHERE tenant_id = ?1 AND source = ?2"
                      " AND dedupe_key = ?3 AND source <> 'lever'",
    [ST_EVENT_INSERT] = "INSERT INTO events(id, tenant_id, source, type, dedupe_key, status,"
                        " opportunity_id, payload, received_at)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [ST_EVENT_INSERT_UNIQUE] = "INSERT INTO events(id, tenant_id, source, type, dedupe_key,"
                               " status, opportunity_id, payload, received_at)"
                               " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                               " ON CONFLICT(tenant_id, source, dedupe_key)"
                               " WHERE source <> 'lever' DO NOTHING",
    [ST_EVENT_AT_SEQ] = "SELECT id, tenant_id, source, dedupe_key FROM events WHERE seq = ?1",
    [ST_EVENT_FIND_RECENT] = "SELECT id FROM events WHERE tenant_id = ?1 AND received_at >= ?2"
                             " AND source = 'lever' AND dedupe_key = ?3",
    [ST_EVENT_RECENT_LOAD] = "SELECT seq, tenant_id, dedupe_key, received_at FROM events"
                             " WHERE source = 'lever' ORDER BY seq DESC",
    [ST_HOOK_DELIVERED] = "UPDATE hooks SET last_delivery_at = ?2 WHERE id = ?1"
                          " AND COALESCE(last_delivery_at, 0) < ?2",
    [ST_WF_CREATED_AT] = "SELECT created_at FROM workflows WHERE id = ?1 AND tenant_id = ?2",
    [ST_WF_INSERT] = "INSERT INTO workflows(id, tenant_id, body, enabled, created_at, updated_at)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
    [ST_WF_UPDATE] = "UPDATE workflows SET body = ?3, enabled = ?4, updated_at = ?5"
                     " WHERE id = ?1 AND tenant_id = ?2",
    [ST_WF_DELETE] = "DELETE FROM workflows WHERE id = ?1 AND tenant_id = ?2",
    [ST_WF_ALL] = "SELECT id, tenant_id, body, enabled, created_at, updated_at FROM workflows"
                  " WHERE ?1 IS NULL OR tenant_id = ?1 ORDER BY tenant_id, created_at, id",
    [ST_EVENT_LIST] = "SELECT id, tenant_id, source, type, status, opportunity_id, received_at"
                      " FROM events WHERE tenant_id = ?1"
                      " ORDER BY received_at DESC, id DESC LIMIT ?2",
    [ST_EVENT_LIST_BEFORE] = "SELECT id, tenant_id, source, type, status, opportunity_id,"
                             " received_at FROM events WHERE tenant_id = ?1"
                             " AND (received_at < ?3 OR (received_at = ?3 AND id < ?4))"
                             " ORDER BY received_at DESC, id DESC LIMIT ?2",
    [ST_EVENT_ONE] = "SELECT id, tenant_id, source, type, status, opportunity_id, received_at,"
                     " payload FROM events WHERE tenant_id = ?1 AND id = ?2",
    [ST_EVENT_JOBS] = "SELECT id FROM jobs WHERE event_id = ?1 ORDER BY seq, created_at, id",
    [ST_JOB_LIST] = "SELECT id, tenant_id, event_id, workflow_id, action, opportunity_id, seq, "
                    "status, attempts, next_run_at, last_error, steps, created_at, updated_at FROM "
                    "jobs WHERE tenant_id = ?1"
                    " ORDER BY created_at DESC, id DESC LIMIT ?2",
    [ST_JOB_LIST_BEFORE] = "SELECT id, tenant_id, event_id, workflow_id, action, opportunity_id, "
                           "seq, status, attempts, next_run_at, last_error, steps, created_at, "
                           "updated_at FROM jobs WHERE tenant_id = ?1"
                           " AND (created_at < ?3 OR (created_at = ?3 AND id < ?4))"
                           " ORDER BY created_at DESC, id DESC LIMIT ?2",
    [ST_JOB_LIST_STATUS] = "SELECT id, tenant_id, event_id, workflow_id, action, opportunity_id, "
                           "seq, status, attempts, next_run_at, last_error, steps, created_at, "
                           "updated_at FROM jobs WHERE tenant_id = ?1 AND status = ?5"
                           " ORDER BY created_at DESC, id DESC LIMIT ?2",
    [ST_JOB_LIST_STATUS_BEFORE] =
        "SELECT id, tenant_id, event_id, workflow_id, action, opportunity_id, seq, status, "
        "attempts, next_run_at, last_error, steps, created_at, updated_at FROM jobs WHERE "
        "tenant_id = ?1 AND status = ?5"
        " AND (created_at < ?3 OR (created_at = ?3 AND id < ?4))"
        " ORDER BY created_at DESC, id DESC LIMIT ?2",
    [ST_JOB_ONE] = "SELECT id, tenant_id, event_id, workflow_id, action, opportunity_id, seq, "
                   "status, attempts, next_run_at, last_error, steps, created_at, updated_at FROM "
                   "jobs WHERE tenant_id = ?1 AND id = ?2",
    [ST_INV_GET] = "SELECT opportunity_id, assessment, job_id, invitation_id, url, note_id,"
                   " created_at, stage_id FROM invitations"
                   " WHERE tenant_id = ?1 AND opportunity_id = ?2 AND assessment = ?3",
    [ST_INV_INSERT] = "INSERT INTO invitations(tenant_id, opportunity_id, assessment, job_id,"
                      " created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_INV_UPDATE] = "UPDATE invitations SET invitation_id = COALESCE(?4, invitation_id),"
                      " url = COALESCE(?5, url), note_id = COALESCE(?6, note_id),"
                      " stage_id = COALESCE(?7, stage_id)"
                      " WHERE tenant_id = ?1 AND opportunity_id = ?2 AND assessment = ?3",
    [ST_JOB_FAILED_COUNTS] = "SELECT tenant_id, count(*) FROM jobs WHERE status = 'failed'"
                             " GROUP BY tenant_id",
    /* The key of a result whose event was pruned (schema v5). */
    [ST_EVENT_KEY_FIND] = "SELECT event_id FROM event_keys WHERE tenant_id = ?1 AND source = ?2"
                          " AND dedupe_key = ?3",
    /* Retention, oldest first, each through its own index (schema v5). */
    [ST_PRUNE_JOBS] =
        "DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs INDEXED BY jobs_finished"
        " WHERE status IN ('succeeded', 'failed', 'skipped', 'cancelled')"
        " AND updated_at < ?1 ORDER BY updated_at LIMIT ?2)",
#define PRUNE_EVENTS_OF                                                                            \
    "SELECT seq FROM events WHERE source = ?3 AND received_at < ?1"                                \
    " AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.event_id = events.id)"                         \
    " ORDER BY received_at LIMIT ?2"
    [ST_PRUNE_KEYS] = "INSERT OR IGNORE INTO event_keys(tenant_id, source, dedupe_key, event_id)"
                      " SELECT tenant_id, source, dedupe_key, id FROM events"
                      " WHERE seq IN (" PRUNE_EVENTS_OF ")",
    [ST_PRUNE_EVENTS] = "DELETE FROM events WHERE seq IN (" PRUNE_EVENTS_OF ")",
#undef PRUNE_EVENTS_OF
    [ST_STATS_PUT] = "INSERT INTO stats_hourly(tenant_id, hour, accepted, duplicate, refused,"
                     " succeeded, failed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                     " ON CONFLICT(tenant_id, hour) DO UPDATE SET accepted = accepted + ?3,"
                     " duplicate = duplicate + ?4, refused = refused + ?5,"
                     " succeeded = succeeded + ?6, failed = failed + ?7",
    [ST_STATS_FORGET] = "DELETE FROM stats_hourly WHERE hour < ?1",
    [ST_STATS_LOAD] = "SELECT tenant_id, hour, accepted, duplicate, refused, succeeded, failed"
                      " FROM stats_hourly WHERE hour >= ?1 ORDER BY tenant_id, hour",
    /* A stage change seen twice (store.h, event_insert.stage_id): a
     * delivery after a reconciliation pass, and the other way round. Both
     * read the tenant's events of a window through events_tenant_received. */
    [ST_EVENT_STAGE_RECONCILED] =
        "SELECT id FROM events WHERE tenant_id = ?1 AND received_at >= ?2"
        " AND source = 'reconcile' AND opportunity_id = ?3"
        " AND json_extract(payload, '$.data.toStageId') = ?4"
        " AND json_extract(payload, '$.triggeredAt') BETWEEN ?5 AND ?6 LIMIT 1",
    [ST_EVENT_STAGE_DELIVERED] =
        "SELECT id FROM events WHERE tenant_id = ?1 AND received_at BETWEEN ?2 AND ?3"
        " AND source = 'lever' AND status = 'accepted' AND opportunity_id = ?4"
        " AND json_extract(payload, '$.data.toStageId') = ?5 LIMIT 1",
    [ST_RECONCILED_COUNTS] = "SELECT tenant_id, received_at / 3600000, count(*) FROM events"
                             " WHERE source = 'reconcile' AND received_at >= ?1"
                             " GROUP BY tenant_id, received_at / 3600000"
                             " ORDER BY tenant_id, received_at / 3600000",
    [ST_JOB_UPDATE_FENCED] = "UPDATE jobs SET status = ?2, attempts = ?3, next_run_at = ?4,"
                             " last_error = ?5, steps = ?6, updated_at = ?7 WHERE id = ?1"
                             " AND EXISTS (SELECT 1 FROM temp.leases l WHERE"
                             " l.tenant_id = jobs.tenant_id AND l.node = ?8 AND l.epoch = ?9)",
    [ST_JOB_EXISTS] = "SELECT 1 FROM jobs WHERE id = ?1",
    [ST_LEASE_HELD] = "SELECT 1 FROM temp.leases WHERE tenant_id = ?1 AND node = ?2 AND epoch = ?3",
    [ST_JOB_ACTIVE_SOME] =
        "SELECT id, tenant_id, event_id, workflow_id, action, opportunity_id, seq,"
        " status, attempts, next_run_at, last_error, steps, created_at, updated_at"
        " FROM jobs WHERE status IN ('queued', 'running', 'retrying') AND updated_at >= ?2"
        " AND (?1 IS NULL OR tenant_id IN (SELECT tenant_id FROM temp.leases WHERE node = ?1))"
        " ORDER BY created_at, event_id, seq",
    /* Nodes and leases: temporary tables of this connection (one process
     * holds the file, so there is one node); the same rules as pg.c's, with
     * this process's clock as the database's (?3 / ?1: now). */
    [ST_NODE_BEAT] =
        "INSERT INTO temp.nodes(id, advertise_url, started_at, last_seen_at)"
        " VALUES (?1, ?2, ?3, ?3) ON CONFLICT(id) DO UPDATE SET"
        " advertise_url = excluded.advertise_url, last_seen_at = excluded.last_seen_at",
    [ST_NODE_FORGET] = "DELETE FROM temp.nodes WHERE id <> ?1 AND last_seen_at < ?3 - ?2",
    [ST_NODE_LEAVE] = "DELETE FROM temp.nodes WHERE id = ?1",
    [ST_NODES] = "SELECT id, advertise_url, last_seen_at, last_seen_at > ?1 - ?2"
                 " FROM temp.nodes ORDER BY id LIMIT 1001",
    [ST_LEASES] = "SELECT t.id, l.node, l.epoch, l.expires_at,"
                  " l.expires_at IS NULL OR l.expires_at <= ?1"
                  " FROM tenants t LEFT JOIN temp.leases l ON l.tenant_id = t.id ORDER BY t.id",
    [ST_LEASE_TAKE_NEW] = "INSERT INTO temp.leases(tenant_id, node, epoch, expires_at)"
                          " SELECT ?1, ?2, 1, ?5 + ?3 WHERE EXISTS (SELECT 1 FROM tenants"
                          " WHERE id = ?1) AND ?4 = 0"
                          " ON CONFLICT(tenant_id) DO NOTHING RETURNING epoch, expires_at",
    [ST_LEASE_TAKE] = "UPDATE temp.leases SET node = ?2, epoch = epoch + 1, expires_at = ?5 + ?3"
                      " WHERE tenant_id = ?1 AND epoch = ?4 AND (expires_at <= ?5 OR node = ?2)"
                      " RETURNING epoch, expires_at",
    [ST_LEASE_RENEW] = "UPDATE temp.leases SET expires_at = ?5 + ?3"
                       " WHERE tenant_id = ?1 AND node = ?2 AND epoch = ?4"
                       " RETURNING epoch, expires_at",
    [ST_LEASE_RELEASE] = "UPDATE temp.leases SET expires_at = ?5"
                         " WHERE tenant_id = ?1 AND node = ?2 AND epoch = ?4 AND ?3 > 0"
                         " RETURNING epoch, expires_at",
#define BF_COLS                                                                                    \
    "id, tenant_id, workflow_id, status, page_offset, listed, queued, skipped, last_error,"        \
    " created_at, updated_at"
    [ST_BF_INSERT] = "INSERT INTO backfills(id, tenant_id, workflow_id, status, created_at,"
                     " updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
    [ST_BF_STATUS] = "SELECT status FROM backfills WHERE id = ?1 AND tenant_id = ?2",
    [ST_BF_PAGE] = "UPDATE backfills SET page_offset = ?3, status = ?4, listed = listed + ?5,"
                   " queued = queued + ?6, skipped = skipped + ?7, updated_at = ?8"
                   " WHERE id = ?1 AND tenant_id = ?2"
                   " RETURNING listed, queued, skipped",
    [ST_BF_FINISH] = "UPDATE backfills SET status = ?3, last_error = ?4, updated_at = ?5"
                     " WHERE id = ?1 AND tenant_id = ?2 AND status = 'running'",
    [ST_BF_ONE] = "SELECT " BF_COLS " FROM backfills WHERE tenant_id = ?1 AND id = ?2",
    [ST_BF_LIST] = "SELECT " BF_COLS " FROM backfills WHERE tenant_id = ?1"
                   " ORDER BY created_at DESC, id DESC LIMIT ?2",
    [ST_BF_RUNNING] = "SELECT " BF_COLS " FROM backfills WHERE status = 'running'"
                      " ORDER BY created_at, id",
};

/* A batch on its way back to the loop. Owner: the store thread until it is
 * on `done`, then the loop thread, which frees it after completing it. */
/* ---- operations (store thread) ------------------------------------------ */

/* Each runs inside the batch's transaction and the op's savepoint, returns
 * the op's status, and leaves its outputs either complete or freeable by the
 * kind's discard rule. A new kind adds a function here and a line in
 * runners[]. */

static int run_tenant_upsert(sq_store *s, lb_store_op *op)
{
    lb_tenant_rec *r = &op->tenant_upsert.rec;
    int64_t now = r->updated_at > 0 ? r->updated_at : lb_time_now_ms();

    sqlite3_stmt *q = stmt(s, ST_TENANT_CREATED_AT);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, r->id);
    int rc = sqlite3_step(q);
    int exists = rc == SQLITE_ROW;
    int64_t created_at = exists ? sqlite3_column_int64(q, 0) : now;
    done_with(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return op_failed(s, rc, "tenant upsert");

    q = stmt(s, exists ? ST_TENANT_UPDATE : ST_TENANT_INSERT);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, r->id);
    bind_text(q, 2, r->name);
    sqlite3_bind_int(q, 3, r->api_addon ? 1 : 0);
    if (r->lever_rate > 0)
        sqlite3_bind_double(q, 4, r->lever_rate);
    else
        sqlite3_bind_null(q, 4);
    if (r->lever_burst > 0)
        sqlite3_bind_int(q, 5, r->lever_burst);
    else
        sqlite3_bind_null(q, 5);
    sqlite3_bind_int64(q, 6, now);
    bind_text(q, 7, r->failure_tag);
    rc = sqlite3_step(q);
    done_with(q);
    if (rc != SQLITE_DONE) return op_failed(s, rc, "tenant upsert");

    op->tenant_upsert.created = !exists;
    r->created_at = created_at;
    r->updated_at = now;
    return 0;
}

static int run_tenant_delete(sq_store *s, lb_store_op *op)
{
    sqlite3_stmt *q = stmt(s, ST_TENANT_DELETE);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, op->tenant_delete.id);
    int rc = sqlite3_step(q);
    done_with(q);
    if (rc != SQLITE_DONE) return op_failed(s, rc, "tenant delete");
    return sqlite3_changes(s->db) > 0 ? 0 : LB_ENOTFOUND;
}

static int run_tenant_load_all(sq_store *s, lb_store_op *op)
{
    sqlite3_stmt *q = stmt(s, ST_TENANT_ALL);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, op->tenant_load_all.tenant_id);
    lb_tenant_rec *recs = NULL;
    size_t count = 0, cap = 0;
    int rc, status = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (count == LB_STORE_TENANTS_MAX) {
            status = LB_ETOOBIG;
            break;
        }
        recs = grow(recs, count, &cap, sizeof(*recs), 64);
        lb_tenant_rec *r = &recs[count++];
        memset(r, 0, sizeof(*r));
        const unsigned char *id = sqlite3_column_text(q, 0);
        size_t idlen = (size_t)sqlite3_column_bytes(q, 0);
        if (id != NULL && idlen <= LB_TENANT_ID_MAX) memcpy(r->id, id, idlen);
        r->name = column_strdup(q, 1);
        r->api_addon = sqlite3_column_int(q, 2) != 0;
        r->lever_rate = sqlite3_column_type(q, 3) == SQLITE_NULL ? 0 : sqlite3_column_double(q, 3);
        r->lever_burst = sqlite3_column_type(q, 4) == SQLITE_NULL ? 0 : sqlite3_column_int(q, 4);
        r->created_at = sqlite3_column_int64(q, 5);
        r->updated_at = sqlite3_column_int64(q, 6);
        r->failure_tag = sqlite3_column_type(q, 7) == SQLITE_NULL ? NULL : column_strdup(q, 7);
    }
    if (status == 0 && rc != SQLITE_DONE) status = op_failed(s, rc, "tenant load");
    done_with(q);
    /* Handed over even on failure: the loop's discard rule frees it. */
    op->tenant_load_all.recs = recs;
    op->tenant_load_all.count = count;
    return status;
}

static int run_meta_get(sq_store *s, lb_store_op *op)
{
    sqlite3_stmt *q = stmt(s, ST_META_GET);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, op->meta_get.key);
    int rc = sqlite3_step(q);
    int status = 0;
    if (rc == SQLITE_ROW) {
        size_t n = (size_t)sqlite3_column_bytes(q, 0);
        const void *v = sqlite3_column_blob(q, 0);
        op->meta_get.value = lb_malloc(n);
        if (n > 0) memcpy(op->meta_get.value, v, n);
        op->meta_get.len = n;
    } else if (rc == SQLITE_DONE) {
        status = LB_ENOTFOUND;
    } else {
        status = op_failed(s, rc, "meta get");
    }
    done_with(q);
    return status;
}

static int run_meta_put(sq_store *s, lb_store_op *op)
{
    sqlite3_stmt *q = stmt(s, ST_META_PUT);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, op->meta_put.key);
    sqlite3_bind_blob(q, 2, op->meta_put.len ? (const void *)op->meta_put.value : "",
                      (int)op->meta_put.len, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, lb_time_now_ms());
    int rc = sqlite3_step(q);
    done_with(q);
    return rc == SQLITE_DONE ? 0 : op_failed(s, rc, "meta put");
}

static char *column_strdup_or_null(sqlite3_stmt *q, int i)
{
    return sqlite3_column_type(q, i) == SQLITE_NULL ? NULL : column_strdup(q, i);
}

static void column_id(sqlite3_stmt *q, int i, char *out, size_t max)
{
    const unsigned char *t = sqlite3_column_text(q, i);
    size_t n = (size_t)sqlite3_column_bytes(q, i);
    if (t != NULL && n <= max) memcpy(out, t, n);
}

static int run_job_insert(sq_store *s, lb_store_op *op)
{
    int64_t now = lb_time_now_ms();
    for (size_t i = 0; i < op->job_insert.count; i++) {
        const lb_job_rec *r = &op->job_insert.recs[i];
        sqlite3_stmt *q = stmt(s, ST_JOB_INSERT);
        if (q == NULL) return LB_EIO;
        bind_text(q, 1, r->id);
        bind_text(q, 2, r->tenant_id);
        bind_text(q, 3, r->event_id);
        bind_text(q, 4, r->workflow_id);
        bind_text(q, 5, r->action);
        bind_text(q, 6, r->opportunity_id);
        sqlite3_bind_int(q, 7, r->seq);
        bind_text(q, 8, lb_job_status_name(r->status));
        sqlite3_bind_int(q, 9, r->attempts);
        sqlite3_bind_int64(q, 10, r->next_run_at);
        bind_text(q, 11, r->last_error);
        bind_text(q, 12, r->steps);
        sqlite3_bind_int64(q, 13, r->created_at > 0 ? r->created_at : now);
        int rc = sqlite3_step(q);
        done_with(q);
        if (rc != SQLITE_DONE) return op_failed(s, rc, "job insert");
    }
    return 0;
}

/* job_update's tag job: the ledger's row, and the job only when the row is
 * new (store.h). */
static int failure_tag_claim(sq_store *s, lb_store_op *op)
{
    const lb_job_rec *t = op->job_update.tag_job;
    int64_t now = lb_time_now_ms();
    sqlite3_stmt *q = stmt(s, ST_FAILURE_TAG_CLAIM);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, t->tenant_id);
    bind_text(q, 2, t->opportunity_id);
    bind_text(q, 3, op->job_update.tag);
    bind_text(q, 4, t->id);
    sqlite3_bind_int64(q, 5, t->created_at > 0 ? t->created_at : now);
    int rc = sqlite3_step(q);
    done_with(q);
    if (rc != SQLITE_DONE) return op_failed(s, rc, "failure tag claim");
    if (sqlite3_changes(s->db) == 0) return 0; /* tagged before: nothing to add */
    lb_store_op ins = {.kind = LB_STORE_JOB_INSERT};
    ins.job_insert.recs = t;
    ins.job_insert.count = 1;
    int status = run_job_insert(s, &ins);
    if (status == 0) op->job_update.tag_added = 1;
    return status;
}

static int run_job_update(sq_store *s, lb_store_op *op)
{
    const lb_job_rec *r = op->job_update.rec;
    int fenced = op->job_update.lease_node != NULL;
    sqlite3_stmt *q = stmt(s, fenced ? ST_JOB_UPDATE_FENCED : ST_JOB_UPDATE);
    if (q == NULL) return LB_EIO;
    if (fenced) {
        bind_text(q, 8, op->job_update.lease_node);
        sqlite3_bind_int64(q, 9, op->job_update.lease_epoch);
    }
    bind_text(q, 1, r->id);
    bind_text(q, 2, lb_job_status_name(r->status));
    sqlite3_bind_int(q, 3, r->attempts);
    sqlite3_bind_int64(q, 4, r->next_run_at);
    bind_text(q, 5, r->last_error);
    bind_text(q, 6, r->steps);
    sqlite3_bind_int64(q, 7, r->updated_at > 0 ? r->updated_at : lb_time_now_ms());
    int rc = sqlite3_step(q);
    done_with(q);
    if (rc != SQLITE_DONE) return op_failed(s, rc, "job update");
    if (sqlite3_changes(s->db) > 0)
        return op->job_update.tag_job != NULL ? failure_tag_claim(s, op) : 0;
    if (!fenced) return LB_ENOTFOUND;
    /* refused by the fence, or absent */
    if ((q = stmt(s, ST_JOB_EXISTS)) == NULL) return LB_EIO;
    bind_text(q, 1, r->id);
    rc = sqlite3_step(q);
    done_with(q);
    if (rc == SQLITE_ROW) return LB_ECONFLICT;
    return rc == SQLITE_DONE ? LB_ENOTFOUND : op_failed(s, rc, "job update");
}

static void job_read(sqlite3_stmt *q, lb_job_rec *r);

static int run_job_load_active(sq_store *s, lb_store_op *op)
{
    int some = op->job_load_active.lease_node != NULL || op->job_load_active.changed_since > 0;
    sqlite3_stmt *q = stmt(s, some ? ST_JOB_ACTIVE_SOME : ST_JOB_ACTIVE);
    if (q == NULL) return LB_EIO;
    if (some) {
        bind_text(q, 1, op->job_load_active.lease_node);
        sqlite3_bind_int64(q, 2, op->job_load_active.changed_since);
    }
    lb_job_rec *recs = NULL;
    size_t count = 0, cap = 0;
    int rc, status = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (count == LB_STORE_JOBS_MAX) {
            status = LB_ETOOBIG;
            break;
        }
        recs = grow(recs, count, &cap, sizeof(*recs), 64);
        job_read(q, &recs[count++]);
    }
    if (status == 0 && rc != SQLITE_DONE) status = op_failed(s, rc, "job load");
    done_with(q);
    op->job_load_active.recs = recs;
    op->job_load_active.count = count;
    return status;
}

static void bind_blob(sqlite3_stmt *q, int i, const uint8_t *v, size_t n)
{
    if (v == NULL)
        sqlite3_bind_null(q, i);
    else
        sqlite3_bind_blob(q, i, v, (int)n, SQLITE_STATIC);
}

static void bind_time(sqlite3_stmt *q, int i, int64_t v)
{
    if (v > 0)
        sqlite3_bind_int64(q, i, v);
    else
        sqlite3_bind_null(q, i);
}

static uint8_t *column_blob_dup(sqlite3_stmt *q, int i, size_t *len)
{
    *len = 0;
    if (sqlite3_column_type(q, i) == SQLITE_NULL) return NULL;
    size_t n = (size_t)sqlite3_column_bytes(q, i);
    uint8_t *p = lb_malloc(n ? n : 1);
    if (n > 0) memcpy(p, sqlite3_column_blob(q, i), n);
    *len = n;
    return p;
}

static int run_conn_put(sq_store *s, lb_store_op *op)
{
    const lb_conn_rec *r = op->conn_put.rec;
    sqlite3_stmt *q = stmt(s, ST_CONN_PUT);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, r->tenant_id);
    bind_text(q, 2, r->status);
    bind_text(q, 3, r->auth);
    bind_blob(q, 4, r->secret, r->secret_len);
    bind_time(q, 5, r->token_expires_at);
    bind_text(q, 6, r->permissions_missing);
    bind_time(q, 7, r->permissions_checked_at);
    bind_time(q, 8, r->connected_at);
    sqlite3_bind_int64(q, 9, r->updated_at > 0 ? r->updated_at : lb_time_now_ms());
    int rc = sqlite3_step(q);
    done_with(q);
    return rc == SQLITE_DONE ? 0 : op_failed(s, rc, "connection put");
}

static int run_conn_delete(sq_store *s, lb_store_op *op)
{
    int ids[2] = {ST_HOOK_DELETE_TENANT, ST_CONN_DELETE};
    for (int i = 0; i < 2; i++) {
        sqlite3_stmt *q = stmt(s, ids[i]);
        if (q == NULL) return LB_EIO;
        bind_text(q, 1, op->conn_delete.tenant_id);
        int rc = sqlite3_step(q);
        done_with(q);
        if (rc != SQLITE_DONE) return op_failed(s, rc, "connection delete");
    }
    return 0;
}

static int run_conn_load_all(sq_store *s, lb_store_op *op)
{
    sqlite3_stmt *q = stmt(s, ST_CONN_ALL);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, op->conn_load_all.tenant_id);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        op->conn_load_all.conns =
            grow(op->conn_load_all.conns, op->conn_load_all.nconns, &cap, sizeof(lb_conn_rec), 16);
        lb_conn_rec *r = &op->conn_load_all.conns[op->conn_load_all.nconns++];
        memset(r, 0, sizeof(*r));
        column_id(q, 0, r->tenant_id, LB_TENANT_ID_MAX);
        r->status = column_strdup(q, 1);
        r->auth = column_strdup_or_null(q, 2);
        r->secret = column_blob_dup(q, 3, &r->secret_len);
        r->token_expires_at = sqlite3_column_int64(q, 4);
        r->permissions_missing = column_strdup_or_null(q, 5);
        r->permissions_checked_at = sqlite3_column_int64(q, 6);
        r->connected_at = sqlite3_column_int64(q, 7);
        r->updated_at = sqlite3_column_int64(q, 8);
    }
    done_with(q);
    if (rc != SQLITE_DONE) return op_failed(s, rc, "connection load");
    q = stmt(s, ST_HOOK_ALL);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, op->conn_load_all.tenant_id);
    cap = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        op->conn_load_all.hooks =
            grow(op->conn_load_all.hooks, op->conn_load_all.nhooks, &cap, sizeof(lb_hook_rec), 16);
        lb_hook_rec *h = &op->conn_load_all.hooks[op->conn_load_all.nhooks++];
        memset(h, 0, sizeof(*h));
        column_id(q, 0, h->id, LB_HOOK_ID_MAX);
        column_id(q, 1, h->tenant_id, LB_TENANT_ID_MAX);
        h->lever_webhook_id = column_strdup_or_null(q, 2);
        h->signature_token = column_blob_dup(q, 3, &h->token_len);
        h->status = column_strdup(q, 4);
        h->attempts = sqlite3_column_int(q, 5);
        h->next_attempt_at = sqlite3_column_int64(q, 6);
        h->deadline_at = sqlite3_column_int64(q, 7);
        h->last_error = column_strdup_or_null(q, 8);
        h->active_since = sqlite3_column_int64(q, 9);
        h->last_delivery_at = sqlite3_column_int64(q, 10);
        h->checked_at = sqlite3_column_int64(q, 11);
    }
    done_with(q);
    return rc == SQLITE_DONE ? 0 : op_failed(s, rc, "hook load");
}

static int run_hook_put(sq_store *s, lb_store_op *op)
{
    const lb_hook_rec *h = op->hook_put.rec;
    sqlite3_stmt *q = stmt(s, ST_HOOK_DELETE_OTHERS);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, h->tenant_id);
    bind_text(q, 2, h->id);
    int rc = sqlite3_step(q);
    done_with(q);
    if (rc != SQLITE_DONE) return op_failed(s, rc, "hook put");
    q = stmt(s, ST_HOOK_PUT);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, h->id);
    bind_text(q, 2, h->tenant_id);
    bind_text(q, 3, h->lever_webhook_id);
    bind_blob(q, 4, h->signature_token, h->token_len);
    bind_text(q, 5, h->status);
    sqlite3_bind_int(q, 6, h->attempts);
    bind_time(q, 7, h->next_attempt_at);
    bind_time(q, 8, h->deadline_at);
    bind_text(q, 9, h->last_error);
    bind_time(q, 10, h->active_since);
    bind_time(q, 11, h->last_delivery_at);
    bind_time(q, 12, h->checked_at);
    rc = sqlite3_step(q);
    done_with(q);
    return rc == SQLITE_DONE ? 0 : op_failed(s, rc, "hook put");
}

/* Candidates an event's Lever key may duplicate, read and compared whole. 1
 * and existing_id when one matches, 0 when none, or a negative code. */
#define RECENT_CANDIDATES 8

static int column_is(sqlite3_stmt *q, int i, const char *v)
{
    const unsigned char *t = sqlite3_column_text(q, i);
    return t != NULL && strcmp((const char *)t, v) == 0;
}

static int lever_duplicate(sq_store *s, const lb_event_rec *e, uint64_t hash, int64_t received,
                           lb_store_op *op)
{
    int64_t seqs[RECENT_CANDIDATES];
    size_t n = lb_recent_find(&s->recent, hash, seqs, RECENT_CANDIDATES, lb_time_now_ms());
    sqlite3_stmt *q;
    int rc;
    /* More candidates than we read (a pile of stale entries), or the table
     * cannot answer (LB_RECENT_SEARCH: a key of the window was not kept):
     * search the rows of the window. */
    if (n > RECENT_CANDIDATES) {
        q = stmt(s, ST_EVENT_FIND_RECENT);
        if (q == NULL) return LB_EIO;
        bind_text(q, 1, e->tenant_id);
        sqlite3_bind_int64(q, 2, received - s->recent.horizon_ms);
        bind_text(q, 3, e->dedupe_key);
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) column_id(q, 0, op->event_insert.existing_id, LB_EVENT_ID_MAX);
        done_with(q);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) return op_failed(s, rc, "event insert");
        return rc == SQLITE_ROW;
    }
    for (size_t i = 0; i < n; i++) {
        q = stmt(s, ST_EVENT_AT_SEQ);
        if (q == NULL) return LB_EIO;
        sqlite3_bind_int64(q, 1, seqs[i]);
        rc = sqlite3_step(q);
        int same = rc == SQLITE_ROW && column_is(q, 1, e->tenant_id) && column_is(q, 2, "lever") &&
                   column_is(q, 3, e->dedupe_key);
        if (same) column_id(q, 0, op->event_insert.existing_id, LB_EVENT_ID_MAX);
        done_with(q);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) return op_failed(s, rc, "event insert");
        if (same) return 1;
    }
    return 0;
}

/* Fills s->recent from the Lever events of the window, newest first; rows
 * are in arrival order give or take the seconds an op waits for its batch,
 * so the scan stops RECENT_LOAD_SLACK_MS past the window. Opening thread. */
#define RECENT_LOAD_SLACK_MS (10 * 60 * 1000)

int lb_sq_recent_load(sq_store *s, char *err, size_t errlen)
{
    int64_t now = lb_time_now_ms();
    int64_t cutoff = now - s->recent.horizon_ms;
    sqlite3_stmt *q = stmt(s, ST_EVENT_RECENT_LOAD);
    if (q == NULL) {
        snprintf(err, errlen, "database %s: %s", s->path, sqlite3_errmsg(s->db));
        return LB_EIO;
    }
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        int64_t at = sqlite3_column_int64(q, 3);
        if (at < cutoff - RECENT_LOAD_SLACK_MS) break;
        const char *tenant = (const char *)sqlite3_column_text(q, 1);
        const char *key = (const char *)sqlite3_column_text(q, 2);
        if (at >= cutoff && tenant != NULL && key != NULL)
            lb_recent_add(&s->recent, lb_recent_hash(&s->recent, tenant, key),
                          sqlite3_column_int64(q, 0), at, now);
    }
    done_with(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        snprintf(err, errlen, "database %s: loading recent events: %s", s->path,
                 sqlite3_errmsg(s->db));
        return map_rc(rc);
    }
    lb_info(MOD, "%zu Lever delivery keys of the last %lld s in memory (%zu KiB)", s->recent.count,
            (long long)(s->recent.horizon_ms / 1000), lb_recent_bytes(&s->recent) / 1024);
    return 0;
}

/* event_insert.stage_id's rule (store.h): 1 with existing_id when the
 * change is already an event of the other source, 0 when not, or a
 * negative code. */
static int stage_duplicate(sq_store *s, const lb_event_rec *e, int lever, int64_t received,
                           lb_store_op *op)
{
    const char *stage = op->event_insert.stage_id;
    int64_t w = op->event_insert.stage_window_ms;
    if (stage == NULL || e->opportunity_id == NULL) return 0;
    sqlite3_stmt *q = stmt(s, lever ? ST_EVENT_STAGE_RECONCILED : ST_EVENT_STAGE_DELIVERED);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, e->tenant_id);
    if (lever) {
        sqlite3_bind_int64(q, 2, received - w);
        bind_text(q, 3, e->opportunity_id);
        bind_text(q, 4, stage);
        sqlite3_bind_int64(q, 5, received - w);
        sqlite3_bind_int64(q, 6, received + w);
    } else {
        int64_t at = op->event_insert.changed_at;
        sqlite3_bind_int64(q, 2, at - w);
        sqlite3_bind_int64(q, 3, at + w);
        bind_text(q, 4, e->opportunity_id);
        bind_text(q, 5, stage);
    }
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) column_id(q, 0, op->event_insert.existing_id, LB_EVENT_ID_MAX);
    done_with(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return op_failed(s, rc, "event insert");
    return rc == SQLITE_ROW;
}

static int run_event_insert(sq_store *s, lb_store_op *op)
{
    const lb_event_rec *e = op->event_insert.event;
    int64_t received = e->received_at > 0 ? e->received_at : lb_time_now_ms();
    int lever = strcmp(e->source, "lever") == 0;
    uint64_t hash = 0;
    if (lever) {
        hash = lb_recent_hash(&s->recent, e->tenant_id, e->dedupe_key);
        int dup = lever_duplicate(s, e, hash, received, op);
        if (dup < 0) return dup;
        if (dup) {
            op->event_insert.duplicate = 1;
            return 0;
        }
    }
    /* Other sources: the key of a pruned event first (a small table), then
     * insert: the unique index finds a duplicate in the same descent, and
     * only then is the earlier event's id read. */
    if (!lever) {
        sqlite3_stmt *k = stmt(s, ST_EVENT_KEY_FIND);
        if (k == NULL) return LB_EIO;
        bind_text(k, 1, e->tenant_id);
        bind_text(k, 2, e->source);
        bind_text(k, 3, e->dedupe_key);
        int krc = sqlite3_step(k);
        if (krc == SQLITE_ROW) {
            column_id(k, 0, op->event_insert.existing_id, LB_EVENT_ID_MAX);
            op->event_insert.duplicate = 1;
        }
        done_with(k);
        if (krc == SQLITE_ROW) return 0;
        if (krc != SQLITE_DONE) return op_failed(s, krc, "event insert");
    }
    int seen = stage_duplicate(s, e, lever, received, op);
    if (seen < 0) return seen;
    if (seen) {
        op->event_insert.duplicate = 1;
        return 0;
    }
    sqlite3_stmt *q = stmt(s, lever ? ST_EVENT_INSERT : ST_EVENT_INSERT_UNIQUE);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, e->id);
    bind_text(q, 2, e->tenant_id);
    bind_text(q, 3, e->source);
    bind_text(q, 4, e->type);
    bind_text(q, 5, e->dedupe_key);
    bind_text(q, 6, e->status);
    bind_text(q, 7, e->opportunity_id);
    bind_text(q, 8, e->payload);
    sqlite3_bind_int64(q, 9, received);
    int rc = sqlite3_step(q);
    done_with(q);
    if (rc != SQLITE_DONE) return op_failed(s, rc, "event insert");
    if (lever) {
        /* Added now, before the commit: a later op of this batch with the
         * same key must find it. Should this op or the batch roll back, the
         * entry points at a row that is gone or another one, which the
         * comparison above tells apart. */
        lb_recent_add(&s->recent, hash, sqlite3_last_insert_rowid(s->db), received,
                      lb_time_now_ms());
    } else if (sqlite3_changes(s->db) == 0) { /* (tenant, source, dedupe_key) was there */
        q = stmt(s, ST_EVENT_FIND);
        if (q == NULL) return LB_EIO;
        bind_text(q, 1, e->tenant_id);
        bind_text(q, 2, e->source);
        bind_text(q, 3, e->dedupe_key);
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            column_id(q, 0, op->event_insert.existing_id, LB_EVENT_ID_MAX);
            op->event_insert.duplicate = 1;
        }
        done_with(q);
        return rc == SQLITE_ROW ? 0 : op_failed(s, rc, "event insert");
    }
    if (op->event_insert.njobs > 0) {
        lb_store_op jobs = {.kind = LB_STORE_JOB_INSERT};
        jobs.job_insert.recs = op->event_insert.jobs;
        jobs.job_insert.count = op->event_insert.njobs;
        int st = run_job_insert(s, &jobs);
        if (st != 0) return st;
    }
    if (op->event_insert.hook_id != NULL) {
        q = stmt(s, ST_HOOK_DELIVERED);
        if (q == NULL) return LB_EIO;
        bind_text(q, 1, op->event_insert.hook_id);
        sqlite3_bind_int64(q, 2, received);
        rc = sqlite3_step(q);
        done_with(q);
        if (rc != SQLITE_DONE) return op_failed(s, rc, "event insert");
    }
    return 0;
}

/* ---- workflows, listings, invitations -------------------------------------- */

static int run_workflow_put(sq_store *s, lb_store_op *op)
{
    const lb_workflow_rec *r = op->workflow_put.rec;
    int64_t now = r->updated_at > 0 ? r->updated_at : lb_time_now_ms();
    sqlite3_stmt *q = stmt(s, ST_WF_CREATED_AT);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, r->id);
    bind_text(q, 2, r->tenant_id);
    int rc = sqlite3_step(q);
    int exists = rc == SQLITE_ROW;
    int64_t created =
        exists ? sqlite3_column_int64(q, 0) : (r->created_at > 0 ? r->created_at : now);
    done_with(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return op_failed(s, rc, "workflow put");
    q = stmt(s, exists ? ST_WF_UPDATE : ST_WF_INSERT);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, r->id);
    bind_text(q, 2, r->tenant_id);
    bind_text(q, 3, r->body);
    sqlite3_bind_int(q, 4, r->enabled ? 1 : 0);
    sqlite3_bind_int64(q, 5, exists ? now : created);
    rc = sqlite3_step(q);
    done_with(q);
    if (rc != SQLITE_DONE) return op_failed(s, rc, "workflow put");
    op->workflow_put.created = !exists;
    op->workflow_put.created_at = created;
    op->workflow_put.updated_at = exists ? now : created;
    return 0;
}

static int run_workflow_delete(sq_store *s, lb_store_op *op)
{
    sqlite3_stmt *q = stmt(s, ST_WF_DELETE);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, op->workflow_delete.id);
    bind_text(q, 2, op->workflow_delete.tenant_id);
    int rc = sqlite3_step(q);
    done_with(q);
    if (rc != SQLITE_DONE) return op_failed(s, rc, "workflow delete");
    return sqlite3_changes(s->db) > 0 ? 0 : LB_ENOTFOUND;
}

static int run_workflow_load_all(sq_store *s, lb_store_op *op)
{
    sqlite3_stmt *q = stmt(s, ST_WF_ALL);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, op->workflow_load_all.tenant_id);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        op->workflow_load_all.recs = grow(op->workflow_load_all.recs, op->workflow_load_all.count,
                                          &cap, sizeof(lb_workflow_rec), 16);
        lb_workflow_rec *r = &op->workflow_load_all.recs[op->workflow_load_all.count++];
        memset(r, 0, sizeof(*r));
        column_id(q, 0, r->id, LB_WORKFLOW_ID_MAX);
        column_id(q, 1, r->tenant_id, LB_TENANT_ID_MAX);
        r->body = column_strdup(q, 2);
        r->enabled = sqlite3_column_int(q, 3) != 0;
        r->created_at = sqlite3_column_int64(q, 4);
        r->updated_at = sqlite3_column_int64(q, 5);
    }
    done_with(q);
    return rc == SQLITE_DONE ? 0 : op_failed(s, rc, "workflow load");
}

static void event_row_read(sqlite3_stmt *q, lb_event_row *r)
{
    memset(r, 0, sizeof(*r));
    column_id(q, 0, r->id, LB_EVENT_ID_MAX);
    column_id(q, 1, r->tenant_id, LB_TENANT_ID_MAX);
    r->source = column_strdup(q, 2);
    r->type = column_strdup(q, 3);
    r->status = column_strdup(q, 4);
    r->opportunity_id = column_strdup_or_null(q, 5);
    r->received_at = sqlite3_column_int64(q, 6);
}

static int event_jobs(sq_store *s, lb_event_row *r)
{
    sqlite3_stmt *q = stmt(s, ST_EVENT_JOBS);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, r->id);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW && r->njobs < 1000) {
        r->jobs = grow(r->jobs, r->njobs, &cap, sizeof(char *), 8);
        r->jobs[r->njobs++] = column_strdup(q, 0);
    }
    done_with(q);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : op_failed(s, rc, "event jobs");
}

static int run_event_list(sq_store *s, lb_store_op *op)
{
    int before = op->event_list.before_at > 0;
    sqlite3_stmt *q = stmt(s, before ? ST_EVENT_LIST_BEFORE : ST_EVENT_LIST);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, op->event_list.tenant_id);
    sqlite3_bind_int64(q, 2, (int64_t)op->event_list.limit + 1);
    if (before) {
        sqlite3_bind_int64(q, 3, op->event_list.before_at);
        bind_text(q, 4, op->event_list.before_id);
    }
    op->event_list.rows = lb_calloc(op->event_list.limit + 1, sizeof(lb_event_row));
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (op->event_list.count == op->event_list.limit) {
            op->event_list.more = 1;
            break;
        }
        event_row_read(q, &op->event_list.rows[op->event_list.count++]);
    }
    done_with(q);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return op_failed(s, rc, "event list");
    for (size_t i = 0; i < op->event_list.count; i++) {
        int st = event_jobs(s, &op->event_list.rows[i]);
        if (st != 0) return st;
    }
    return 0;
}

static int run_event_get(sq_store *s, lb_store_op *op)
{
    sqlite3_stmt *q = stmt(s, ST_EVENT_ONE);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, op->event_get.tenant_id);
    bind_text(q, 2, op->event_get.id);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        event_row_read(q, &op->event_get.row);
        op->event_get.row.payload = column_strdup_or_null(q, 7);
    }
    done_with(q);
    if (rc == SQLITE_DONE) return LB_ENOTFOUND;
    if (rc != SQLITE_ROW) return op_failed(s, rc, "event get");
    return event_jobs(s, &op->event_get.row);
}

static void job_read(sqlite3_stmt *q, lb_job_rec *r)
{
    memset(r, 0, sizeof(*r));
    column_id(q, 0, r->id, LB_JOB_ID_MAX);
    column_id(q, 1, r->tenant_id, LB_TENANT_ID_MAX);
    r->event_id = column_strdup_or_null(q, 2);
    r->workflow_id = column_strdup_or_null(q, 3);
    r->action = column_strdup(q, 4);
    r->opportunity_id = column_strdup_or_null(q, 5);
    r->seq = sqlite3_column_int(q, 6);
    r->status = lb_job_status_parse((const char *)sqlite3_column_text(q, 7));
    r->attempts = sqlite3_column_int(q, 8);
    r->next_run_at = sqlite3_column_int64(q, 9);
    r->last_error = column_strdup_or_null(q, 10);
    r->steps = column_strdup_or_null(q, 11);
    r->created_at = sqlite3_column_int64(q, 12);
    r->updated_at = sqlite3_column_int64(q, 13);
}

static int run_job_list(sq_store *s, lb_store_op *op)
{
    int before = op->job_list.before_at > 0;
    int by_status = op->job_list.status >= 0;
    int id = by_status ? (before ? ST_JOB_LIST_STATUS_BEFORE : ST_JOB_LIST_STATUS)
                       : (before ? ST_JOB_LIST_BEFORE : ST_JOB_LIST);
    sqlite3_stmt *q = stmt(s, id);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, op->job_list.tenant_id);
    sqlite3_bind_int64(q, 2, (int64_t)op->job_list.limit + 1);
    if (before) {
        sqlite3_bind_int64(q, 3, op->job_list.before_at);
        bind_text(q, 4, op->job_list.before_id);
    }
    if (by_status) bind_text(q, 5, lb_job_status_name(op->job_list.status));
    op->job_list.recs = lb_calloc(op->job_list.limit + 1, sizeof(lb_job_rec));
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (op->job_list.count == op->job_list.limit) {
            op->job_list.more = 1;
            break;
        }
        job_read(q, &op->job_list.recs[op->job_list.count++]);
    }
    done_with(q);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : op_failed(s, rc, "job list");
}

static int run_job_get(sq_store *s, lb_store_op *op)
{
    sqlite3_stmt *q = stmt(s, ST_JOB_ONE);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, op->job_get.tenant_id);
    bind_text(q, 2, op->job_get.id);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) job_read(q, &op->job_get.rec);
    done_with(q);
    if (rc == SQLITE_DONE) return LB_ENOTFOUND;
    return rc == SQLITE_ROW ? 0 : op_failed(s, rc, "job get");
}

/* Reads the invitation (tenant, opportunity, assessment) into out. */
static int inv_read(sq_store *s, const char *tenant, const char *opp, const char *assessment,
                    lb_invitation_rec *out)
{
    sqlite3_stmt *q = stmt(s, ST_INV_GET);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, tenant);
    bind_text(q, 2, opp);
    bind_text(q, 3, assessment);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof(*out));
        snprintf(out->tenant_id, sizeof(out->tenant_id), "%s", tenant);
        out->opportunity_id = column_strdup(q, 0);
        out->assessment = column_strdup(q, 1);
        out->job_id = column_strdup_or_null(q, 2);
        out->invitation_id = column_strdup_or_null(q, 3);
        out->url = column_strdup_or_null(q, 4);
        out->note_id = column_strdup_or_null(q, 5);
        out->created_at = sqlite3_column_int64(q, 6);
        out->stage_id = column_strdup_or_null(q, 7);
    }
    done_with(q);
    if (rc == SQLITE_DONE) return LB_ENOTFOUND;
    return rc == SQLITE_ROW ? 0 : op_failed(s, rc, "invitation get");
}

/* A fenced write's check (store.h job_update): 0 while the tenant's lease
 * names node with epoch (or node is NULL: unfenced), else LB_ECONFLICT. One
 * connection runs every op in turn, so nothing changes the lease between
 * the check and the write. */
static int lease_held(sq_store *s, const char *tenant, const char *node, int64_t epoch)
{
    if (node == NULL) return 0;
    sqlite3_stmt *q = stmt(s, ST_LEASE_HELD);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, tenant);
    bind_text(q, 2, node);
    sqlite3_bind_int64(q, 3, epoch);
    int rc = sqlite3_step(q);
    done_with(q);
    if (rc == SQLITE_ROW) return 0;
    return rc == SQLITE_DONE ? LB_ECONFLICT : op_failed(s, rc, "lease check");
}

static int run_invitation_claim(sq_store *s, lb_store_op *op)
{
    const lb_invitation_rec *r = op->invitation_claim.rec;
    lb_invitation_rec *ex = &op->invitation_claim.existing;
    int st = lease_held(s, r->tenant_id, op->invitation_claim.lease_node,
                        op->invitation_claim.lease_epoch);
    if (st != 0) return st;
    st = inv_read(s, r->tenant_id, r->opportunity_id, r->assessment, ex);
    if (st == 0) {
        op->invitation_claim.owned = ex->job_id != NULL && strcmp(ex->job_id, r->job_id) == 0;
        return 0;
    }
    if (st != LB_ENOTFOUND) return st;
    sqlite3_stmt *q = stmt(s, ST_INV_INSERT);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, r->tenant_id);
    bind_text(q, 2, r->opportunity_id);
    bind_text(q, 3, r->assessment);
    bind_text(q, 4, r->job_id);
    sqlite3_bind_int64(q, 5, lb_time_now_ms());
    int rc = sqlite3_step(q);
    done_with(q);
    if (rc != SQLITE_DONE) return op_failed(s, rc, "invitation claim");
    op->invitation_claim.owned = 1;
    return inv_read(s, r->tenant_id, r->opportunity_id, r->assessment, ex);
}

static int run_invitation_update(sq_store *s, lb_store_op *op)
{
    const lb_invitation_rec *r = op->invitation_update.rec;
    int st = lease_held(s, r->tenant_id, op->invitation_update.lease_node,
                        op->invitation_update.lease_epoch);
    if (st != 0) return st;
    sqlite3_stmt *q = stmt(s, ST_INV_UPDATE);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, r->tenant_id);
    bind_text(q, 2, r->opportunity_id);
    bind_text(q, 3, r->assessment);
    bind_text(q, 4, r->invitation_id);
    bind_text(q, 5, r->url);
    bind_text(q, 6, r->note_id);
    bind_text(q, 7, r->stage_id);
    int rc = sqlite3_step(q);
    done_with(q);
    if (rc != SQLITE_DONE) return op_failed(s, rc, "invitation update");
    return sqlite3_changes(s->db) > 0 ? 0 : LB_ENOTFOUND;
}

static int run_invitation_get(sq_store *s, lb_store_op *op)
{
    return inv_read(s, op->invitation_get.tenant_id, op->invitation_get.opportunity_id,
                    op->invitation_get.assessment, &op->invitation_get.rec);
}

static int run_job_failed_counts(sq_store *s, lb_store_op *op)
{
    sqlite3_stmt *q = stmt(s, ST_JOB_FAILED_COUNTS);
    if (q == NULL) return LB_EIO;
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (op->job_failed_counts.n == cap) {
            cap = cap ? cap * 2 : 16;
            op->job_failed_counts.tenants =
                lb_realloc(op->job_failed_counts.tenants, cap * (LB_TENANT_ID_MAX + 1));
            op->job_failed_counts.counts =
                lb_realloc(op->job_failed_counts.counts, cap * sizeof(size_t));
        }
        size_t i = op->job_failed_counts.n++;
        memset(op->job_failed_counts.tenants[i], 0, LB_TENANT_ID_MAX + 1);
        column_id(q, 0, op->job_failed_counts.tenants[i], LB_TENANT_ID_MAX);
        op->job_failed_counts.counts[i] = (size_t)sqlite3_column_int64(q, 1);
    }
    done_with(q);
    return rc == SQLITE_DONE ? 0 : op_failed(s, rc, "failed job counts");
}

/* ---- retention ------------------------------------------------------------- */

static int prune_step(sq_store *s, int which, int64_t before, int64_t limit, const char *source,
                      size_t *n)
{
    sqlite3_stmt *q = stmt(s, which);
    if (q == NULL) return LB_EIO;
    sqlite3_bind_int64(q, 1, before);
    sqlite3_bind_int64(q, 2, limit);
    if (source != NULL) bind_text(q, 3, source);
    int rc = sqlite3_step(q);
    done_with(q);
    if (rc != SQLITE_DONE) return op_failed(s, rc, "prune");
    if (n != NULL) *n += (size_t)sqlite3_changes(s->db);
    return 0;
}

/* Finished jobs first, so that their events are free to go in the same op.
 * Lever deliveries stay while their keys are inside the dedupe window
 * (whatever the retention); a result's key moves to event_keys as its event
 * goes, so posting it again still finds the duplicate. */
static int run_prune(sq_store *s, lb_store_op *op)
{
    int64_t before = op->prune.before, limit = op->prune.limit;
    int64_t lever_before = lb_time_now_ms() - s->recent.horizon_ms;
    if (lever_before > before) lever_before = before;
    int rc = prune_step(s, ST_PRUNE_JOBS, before, limit, NULL, &op->prune.jobs);
    if (rc == 0)
        rc = prune_step(s, ST_PRUNE_EVENTS, lever_before, limit, "lever", &op->prune.events);
    int64_t left = limit - (int64_t)op->prune.events;
    if (rc == 0 && left > 0) rc = prune_step(s, ST_PRUNE_KEYS, before, left, "platform", NULL);
    if (rc == 0 && left > 0)
        rc = prune_step(s, ST_PRUNE_EVENTS, before, left, "platform", &op->prune.events);
    return rc;
}

/* ---- hourly counts ----------------------------------------------------------- */

static int run_stats_put(sq_store *s, lb_store_op *op)
{
    for (size_t i = 0; i < op->stats_put.count; i++) {
        const lb_stats_rec *r = &op->stats_put.recs[i];
        sqlite3_stmt *q = stmt(s, ST_STATS_PUT);
        if (q == NULL) return LB_EIO;
        bind_text(q, 1, r->tenant_id);
        sqlite3_bind_int64(q, 2, r->hour);
        for (int k = 0; k < LB_STATS_KINDS; k++)
            sqlite3_bind_int64(q, 3 + k, r->count[k]);
        int rc = sqlite3_step(q);
        done_with(q);
        if (rc != SQLITE_DONE) return op_failed(s, rc, "stats put");
    }
    sqlite3_stmt *q = stmt(s, ST_STATS_FORGET);
    if (q == NULL) return LB_EIO;
    sqlite3_bind_int64(q, 1, op->stats_put.forget_before);
    int rc = sqlite3_step(q);
    done_with(q);
    return rc == SQLITE_DONE ? 0 : op_failed(s, rc, "stats put");
}

static int run_stats_load(sq_store *s, lb_store_op *op)
{
    sqlite3_stmt *q = stmt(s, ST_STATS_LOAD);
    if (q == NULL) return LB_EIO;
    sqlite3_bind_int64(q, 1, op->stats_load.since);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (op->stats_load.count == cap) {
            cap = cap ? cap * 2 : 64;
            op->stats_load.recs = lb_realloc(op->stats_load.recs, cap * sizeof(lb_stats_rec));
        }
        lb_stats_rec *r = &op->stats_load.recs[op->stats_load.count++];
        memset(r, 0, sizeof(*r));
        column_id(q, 0, r->tenant_id, LB_TENANT_ID_MAX);
        r->hour = sqlite3_column_int64(q, 1);
        for (int k = 0; k < LB_STATS_KINDS; k++) {
            int64_t v = sqlite3_column_int64(q, 2 + k);
            r->count[k] = v < 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
        }
    }
    done_with(q);
    return rc == SQLITE_DONE ? 0 : op_failed(s, rc, "stats load");
}

static int run_reconciled_counts(sq_store *s, lb_store_op *op)
{
    sqlite3_stmt *q = stmt(s, ST_RECONCILED_COUNTS);
    if (q == NULL) return LB_EIO;
    sqlite3_bind_int64(q, 1, op->reconciled_counts.since);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (op->reconciled_counts.count == LB_STORE_HOUR_COUNTS_MAX) {
            done_with(q);
            return LB_ETOOBIG;
        }
        if (op->reconciled_counts.count == cap) {
            cap = cap ? cap * 2 : 64;
            op->reconciled_counts.recs =
                lb_realloc(op->reconciled_counts.recs, cap * sizeof(lb_hour_count_rec));
        }
        lb_hour_count_rec *r = &op->reconciled_counts.recs[op->reconciled_counts.count++];
        memset(r, 0, sizeof(*r));
        column_id(q, 0, r->tenant_id, LB_TENANT_ID_MAX);
        r->hour = sqlite3_column_int64(q, 1);
        int64_t v = sqlite3_column_int64(q, 2);
        r->count = v < 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    }
    done_with(q);
    return rc == SQLITE_DONE ? 0 : op_failed(s, rc, "reconciled counts");
}

/* ---- nodes and leases (temporary tables: see ST_NODE_BEAT) -------------- */

static int run_node_beat(sq_store *s, lb_store_op *op)
{
    int64_t now = lb_time_now_ms();
    sqlite3_stmt *q = stmt(s, op->node_beat.leave ? ST_NODE_LEAVE : ST_NODE_BEAT);
    if (q == NULL) return LB_EIO;
    if (op->node_beat.leave) {
        bind_text(q, 1, op->node_beat.node);
        int rc = sqlite3_step(q);
        done_with(q);
        return rc == SQLITE_DONE ? 0 : op_failed(s, rc, "node leave");
    }
    bind_text(q, 1, op->node_beat.node);
    bind_text(q, 2, op->node_beat.advertise_url);
    sqlite3_bind_int64(q, 3, now);
    int rc = sqlite3_step(q);
    done_with(q);
    if (rc != SQLITE_DONE) return op_failed(s, rc, "node beat");
    if (op->node_beat.forget_ms <= 0) return 0;
    if ((q = stmt(s, ST_NODE_FORGET)) == NULL) return LB_EIO;
    bind_text(q, 1, op->node_beat.node);
    sqlite3_bind_int64(q, 2, op->node_beat.forget_ms);
    sqlite3_bind_int64(q, 3, now);
    rc = sqlite3_step(q);
    done_with(q);
    return rc == SQLITE_DONE ? 0 : op_failed(s, rc, "node forget");
}

static int run_cluster_read(sq_store *s, lb_store_op *op)
{
    int64_t now = lb_time_now_ms();
    op->cluster_read.now = now;
    sqlite3_stmt *q = stmt(s, ST_NODES);
    if (q == NULL) return LB_EIO;
    sqlite3_bind_int64(q, 1, now);
    sqlite3_bind_int64(q, 2, op->cluster_read.live_ms);
    size_t cap = 0;
    int rc, status = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (op->cluster_read.nnodes == LB_STORE_NODES_MAX) {
            status = LB_ETOOBIG;
            break;
        }
        op->cluster_read.nodes =
            grow(op->cluster_read.nodes, op->cluster_read.nnodes, &cap, sizeof(lb_node_rec), 8);
        lb_node_rec *n = &op->cluster_read.nodes[op->cluster_read.nnodes++];
        memset(n, 0, sizeof(*n));
        column_id(q, 0, n->id, LB_NODE_ID_MAX);
        n->advertise_url = column_strdup(q, 1);
        n->last_seen_at = sqlite3_column_int64(q, 2);
        n->live = sqlite3_column_int(q, 3) != 0;
    }
    if (status == 0 && rc != SQLITE_DONE) status = op_failed(s, rc, "nodes");
    done_with(q);
    if (status != 0) return status;
    if ((q = stmt(s, ST_LEASES)) == NULL) return LB_EIO;
    sqlite3_bind_int64(q, 1, now);
    cap = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (op->cluster_read.nleases == LB_STORE_TENANTS_MAX) {
            status = LB_ETOOBIG;
            break;
        }
        op->cluster_read.leases =
            grow(op->cluster_read.leases, op->cluster_read.nleases, &cap, sizeof(lb_lease_rec), 64);
        lb_lease_rec *l = &op->cluster_read.leases[op->cluster_read.nleases++];
        memset(l, 0, sizeof(*l));
        column_id(q, 0, l->tenant_id, LB_TENANT_ID_MAX);
        if (sqlite3_column_type(q, 1) != SQLITE_NULL) column_id(q, 1, l->node, LB_NODE_ID_MAX);
        l->epoch = sqlite3_column_int64(q, 2);
        l->expires_at = sqlite3_column_int64(q, 3);
        l->expired = sqlite3_column_int(q, 4) != 0;
    }
    if (status == 0 && rc != SQLITE_DONE) status = op_failed(s, rc, "leases");
    done_with(q);
    return status;
}

static int run_lease_write(sq_store *s, lb_store_op *op)
{
    int64_t now = lb_time_now_ms();
    for (size_t k = 0; k < op->lease_write.count; k++) {
        lb_lease_item *it = &op->lease_write.items[k];
        int id = it->action == LB_LEASE_RENEW     ? ST_LEASE_RENEW
                 : it->action == LB_LEASE_RELEASE ? ST_LEASE_RELEASE
                 : it->epoch == 0                 ? ST_LEASE_TAKE_NEW
                                                  : ST_LEASE_TAKE;
        sqlite3_stmt *q = stmt(s, id);
        if (q == NULL) return LB_EIO;
        bind_text(q, 1, it->tenant_id);
        bind_text(q, 2, op->lease_write.node);
        sqlite3_bind_int64(q, 3, op->lease_write.ttl_ms);
        sqlite3_bind_int64(q, 4, it->epoch);
        sqlite3_bind_int64(q, 5, now);
        int rc = sqlite3_step(q);
        it->ok = rc == SQLITE_ROW;
        if (it->ok) {
            it->epoch = sqlite3_column_int64(q, 0);
            it->expires_at = sqlite3_column_int64(q, 1);
            rc = sqlite3_step(q);
        }
        done_with(q);
        if (rc != SQLITE_DONE) {
            for (size_t j = 0; j <= k; j++)
                op->lease_write.items[j].ok = 0;
            return op_failed(s, rc, "lease write");
        }
    }
    return 0;
}

/* ---- backfills ------------------------------------------------------------ */

static int run_backfill_put(sq_store *s, lb_store_op *op)
{
    const lb_backfill_rec *r = op->backfill_put.rec;
    sqlite3_stmt *q = stmt(s, ST_BF_INSERT);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, r->id);
    bind_text(q, 2, r->tenant_id);
    bind_text(q, 3, r->workflow_id);
    bind_text(q, 4, r->status);
    sqlite3_bind_int64(q, 5, r->created_at > 0 ? r->created_at : lb_time_now_ms());
    int rc = sqlite3_step(q);
    done_with(q);
    return rc == SQLITE_DONE ? 0 : op_failed(s, rc, "backfill put");
}

/* 1 when the opportunity has an invitation for every assessment (none: 0). */
static int invited_to_all(sq_store *s, const char *tenant, const char *opp,
                          const char *const *assessments, size_t n)
{
    if (n == 0 || opp == NULL) return 0;
    for (size_t i = 0; i < n; i++) {
        lb_invitation_rec inv;
        int rc = inv_read(s, tenant, opp, assessments[i], &inv);
        if (rc == LB_ENOTFOUND) return 0;
        if (rc != 0) return rc;
        lb_invitation_rec_free(&inv);
    }
    return 1;
}

static int run_backfill_page(sq_store *s, lb_store_op *op)
{
    const char *tenant = op->backfill_page.tenant_id;
    sqlite3_stmt *q = stmt(s, ST_BF_STATUS);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, op->backfill_page.id);
    bind_text(q, 2, tenant);
    int rc = sqlite3_step(q);
    int running = rc == SQLITE_ROW && column_is(q, 0, "running");
    done_with(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return op_failed(s, rc, "backfill page");
    if (!running) return LB_EINVAL; /* absent, or not running any more */
    int64_t queued = 0, skipped = 0;
    for (size_t i = 0; i < op->backfill_page.nevents; i++) {
        lb_store_op *e = &op->backfill_page.events[i];
        int st = run_event_insert(s, e);
        e->status = st;
        if (st != 0) return st;
        int done = e->event_insert.duplicate;
        if (!done) {
            done = invited_to_all(s, tenant, e->event_insert.event->opportunity_id,
                                  op->backfill_page.assessments, op->backfill_page.nassessments);
            if (done < 0) return done;
        }
        if (done)
            skipped++;
        else
            queued++;
    }
    q = stmt(s, ST_BF_PAGE);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, op->backfill_page.id);
    bind_text(q, 2, tenant);
    bind_text(q, 3, op->backfill_page.done ? NULL : op->backfill_page.offset);
    bind_text(q, 4, op->backfill_page.done ? "done" : "running");
    sqlite3_bind_int64(q, 5, (int64_t)op->backfill_page.nevents);
    sqlite3_bind_int64(q, 6, queued);
    sqlite3_bind_int64(q, 7, skipped);
    sqlite3_bind_int64(q, 8, lb_time_now_ms());
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        op->backfill_page.listed = sqlite3_column_int64(q, 0);
        op->backfill_page.queued = sqlite3_column_int64(q, 1);
        op->backfill_page.skipped = sqlite3_column_int64(q, 2);
        rc = sqlite3_step(q);
    }
    done_with(q);
    return rc == SQLITE_DONE ? 0 : op_failed(s, rc, "backfill page");
}

static int run_backfill_finish(sq_store *s, lb_store_op *op)
{
    sqlite3_stmt *q = stmt(s, ST_BF_FINISH);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, op->backfill_finish.id);
    bind_text(q, 2, op->backfill_finish.tenant_id);
    bind_text(q, 3, op->backfill_finish.status);
    bind_text(q, 4, op->backfill_finish.last_error);
    sqlite3_bind_int64(q, 5, lb_time_now_ms());
    int rc = sqlite3_step(q);
    done_with(q);
    if (rc != SQLITE_DONE) return op_failed(s, rc, "backfill finish");
    op->backfill_finish.changed = sqlite3_changes(s->db) > 0;
    return 0;
}

static void backfill_read(sqlite3_stmt *q, lb_backfill_rec *r)
{
    memset(r, 0, sizeof(*r));
    column_id(q, 0, r->id, LB_BACKFILL_ID_MAX);
    column_id(q, 1, r->tenant_id, LB_TENANT_ID_MAX);
    column_id(q, 2, r->workflow_id, LB_WORKFLOW_ID_MAX);
    column_id(q, 3, r->status, LB_BACKFILL_STATUS_MAX - 1);
    r->offset = column_strdup_or_null(q, 4);
    r->listed = sqlite3_column_int64(q, 5);
    r->queued = sqlite3_column_int64(q, 6);
    r->skipped = sqlite3_column_int64(q, 7);
    r->last_error = column_strdup_or_null(q, 8);
    r->created_at = sqlite3_column_int64(q, 9);
    r->updated_at = sqlite3_column_int64(q, 10);
}

static int run_backfill_get(sq_store *s, lb_store_op *op)
{
    sqlite3_stmt *q = stmt(s, ST_BF_ONE);
    if (q == NULL) return LB_EIO;
    bind_text(q, 1, op->backfill_get.tenant_id);
    bind_text(q, 2, op->backfill_get.id);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) backfill_read(q, &op->backfill_get.rec);
    done_with(q);
    if (rc == SQLITE_DONE) return LB_ENOTFOUND;
    return rc == SQLITE_ROW ? 0 : op_failed(s, rc, "backfill get");
}

static int run_backfill_list(sq_store *s, lb_store_op *op)
{
    int all = op->backfill_list.tenant_id[0] == '\0';
    sqlite3_stmt *q = stmt(s, all ? ST_BF_RUNNING : ST_BF_LIST);
    if (q == NULL) return LB_EIO;
    if (!all) {
        bind_text(q, 1, op->backfill_list.tenant_id);
        sqlite3_bind_int64(q, 2, (int64_t)op->backfill_list.limit);
    }
    lb_backfill_rec *recs = NULL;
    size_t n = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        recs = grow(recs, n, &cap, sizeof(*recs), 8);
        backfill_read(q, &recs[n++]);
    }
    done_with(q);
    if (rc != SQLITE_DONE) {
        lb_backfill_recs_free(recs, n);
        return op_failed(s, rc, "backfill list");
    }
    op->backfill_list.recs = recs;
    op->backfill_list.count = n;
    return 0;
}

static int (*const runners[LB_STORE_OP_KIND_END])(sq_store *, lb_store_op *) = {
    [LB_STORE_TENANT_UPSERT] = run_tenant_upsert,
    [LB_STORE_TENANT_DELETE] = run_tenant_delete,
    [LB_STORE_TENANT_LOAD_ALL] = run_tenant_load_all,
    [LB_STORE_META_GET] = run_meta_get,
    [LB_STORE_META_PUT] = run_meta_put,
    [LB_STORE_JOB_INSERT] = run_job_insert,
    [LB_STORE_JOB_UPDATE] = run_job_update,
    [LB_STORE_JOB_LOAD_ACTIVE] = run_job_load_active,
    [LB_STORE_CONN_PUT] = run_conn_put,
    [LB_STORE_CONN_DELETE] = run_conn_delete,
    [LB_STORE_CONN_LOAD_ALL] = run_conn_load_all,
    [LB_STORE_HOOK_PUT] = run_hook_put,
    [LB_STORE_EVENT_INSERT] = run_event_insert,
    [LB_STORE_WORKFLOW_PUT] = run_workflow_put,
    [LB_STORE_WORKFLOW_DELETE] = run_workflow_delete,
    [LB_STORE_WORKFLOW_LOAD_ALL] = run_workflow_load_all,
    [LB_STORE_EVENT_LIST] = run_event_list,
    [LB_STORE_EVENT_GET] = run_event_get,
    [LB_STORE_JOB_LIST] = run_job_list,
    [LB_STORE_JOB_GET] = run_job_get,
    [LB_STORE_INVITATION_CLAIM] = run_invitation_claim,
    [LB_STORE_INVITATION_UPDATE] = run_invitation_update,
    [LB_STORE_INVITATION_GET] = run_invitation_get,
    [LB_STORE_JOB_FAILED_COUNTS] = run_job_failed_counts,
    [LB_STORE_PRUNE] = run_prune,
    [LB_STORE_STATS_PUT] = run_stats_put,
    [LB_STORE_STATS_LOAD] = run_stats_load,
    [LB_STORE_RECONCILED_COUNTS] = run_reconciled_counts,
    [LB_STORE_NODE_BEAT] = run_node_beat,
    [LB_STORE_CLUSTER_READ] = run_cluster_read,
    [LB_STORE_LEASE_WRITE] = run_lease_write,
    [LB_STORE_BACKFILL_PUT] = run_backfill_put,
    [LB_STORE_BACKFILL_PAGE] = run_backfill_page,
    [LB_STORE_BACKFILL_FINISH] = run_backfill_finish,
    [LB_STORE_BACKFILL_GET] = run_backfill_get,
    [LB_STORE_BACKFILL_LIST] = run_backfill_list,
};

int lb_sq_run(sq_store *s, lb_store_op *op)
{
    if (op->kind <= 0 || op->kind >= LB_STORE_OP_KIND_END || runners[op->kind] == NULL)
        return LB_EINVAL;
    return runners[op->kind](s, op);
}
