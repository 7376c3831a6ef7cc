/* The PostgreSQL backend: one store thread owns a libpq connection and runs
 * every pending operation of a batch in one transaction, sent in libpq's
 * pipeline mode: BEGIN, every op's statements, COMMIT and one Sync go out
 * together and come back in one round trip (group commit, as SQLite's).
 *
 * Threads and queues are those of the SQLite backend, and the same code
 * (store.c's hand-off; sqlite.c has the picture): the loop appends to
 * `local`, an idle handle moves it to `in` once per loop turn, the store
 * thread takes `in` (at most BATCH_MAX ops), runs it (pg_run), appends it
 * to `done` and wakes the loop with uv_async_send; the loop completes the
 * batches in order. docs/internals/store.md.
 *
 * One op failing must not fail its batch. In a pipeline the server skips
 * everything after an error up to the Sync, so ops are written not to fail
 * on expected outcomes (duplicates are ON CONFLICT DO NOTHING, "not found"
 * is a row count); when one does fail anyway (a unique or foreign key
 * violation, a trigger), the transaction is rolled back, that op keeps its
 * error and the batch is sent again without it: as if the op had run in a
 * savepoint of its own and been rolled back alone. A failure of the
 * transaction itself (the connection, the COMMIT, a timeout) fails the
 * batch's writes; its reads are run again alone (store.c's readonly rule).
 *
 * Losing the database: the batch's ops fail, readiness drops, the thread
 * reconnects with backoff (BACKOFF_MIN_MS doubling to BACKOFF_MAX_MS) and a
 * write probe restores readiness. Nothing is answered before its COMMIT has
 * returned. */
#include "store/backend.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/time.h"
#include "store/fault.h"
#include "store/pg_migrate.h"

#include <libpq-fe.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdatomic.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MOD "store"
/* Most ops in one batch (one transaction); the rest wait for the next. */
#define BATCH_MAX 4096
/* Most parameters of one statement (Q_EVENT_INSERT_MANY has 26). */
#define MAXP 26
/* Most event inserts coalesced into one Q_EVENT_INSERT_MANY; a longer run
 * of them is sent as several, in order. */
#define GROUP_MAX 256
/* After a stored key refused a Q_EVENT_INSERT_MANY_FAST, how long runs are
 * sent as Q_EVENT_INSERT_MANY (a stream of Lever's redeliveries would
 * otherwise send each batch twice). */
#define FAST_PAUSE_MS 1000
/* The store thread's idle wait, and the write probe's period while writes
 * fail. */
#define IDLE_WAIT_MS 1000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
/* Defaults that the URL or conninfo may override (libpq's keywords). */
#define CONNECT_TIMEOUT_S "5"
/* Applied after connecting unless the session already has one (options=-c
 * statement_timeout=... in the URL, or the role's or database's setting). */
#define STATEMENT_TIMEOUT "10s"

/* ---- statements ---------------------------------------------------------- */

enum {
    Q_TENANT_UPSERT,
    Q_TENANT_DELETE,
    Q_TENANT_ALL,
    Q_META_GET,
    Q_META_PUT,
    Q_JOB_INSERT,
    Q_JOB_INSERT_EVENT,
    Q_JOB_UPDATE,
    Q_FAILURE_TAG_JOB,
    Q_JOB_ACTIVE,
    Q_CONN_PUT,
    Q_CONN_DELETE,
    Q_HOOK_DELETE_TENANT,
    Q_CONN_ALL,
    Q_HOOK_ALL,
    Q_HOOK_DELETE_OTHERS,
    Q_HOOK_PUT,
    Q_EVENT_INSERT,
    Q_WF_PUT,
    Q_WF_DELETE,
    Q_WF_ALL,
    Q_EVENT_LIST,
    Q_EVENT_LIST_BEFORE,
    Q_EVENT_ONE,
    Q_JOB_LIST,
    Q_JOB_LIST_BEFORE,
    Q_JOB_LIST_STATUS,
    Q_JOB_LIST_STATUS_BEFORE,
    Q_JOB_ONE,
    Q_INV_INSERT,
    Q_INV_GET,
    Q_INV_UPDATE,
    Q_JOB_FAILED_COUNTS,
    Q_PRUNE_JOBS,
    Q_PRUNE_EVENTS,
    Q_STATS_PUT,
    Q_STATS_FORGET,
    Q_STATS_LOAD,
    Q_EVENT_INSERT_STAGE,
    Q_RECONCILED_COUNTS,
    Q_JOB_ACTIVE_SOME,
    Q_JOB_UPDATE_FENCED,
    Q_INV_INSERT_FENCED,
    Q_INV_UPDATE_FENCED,
    Q_NODE_BEAT,
    Q_NODE_FORGET,
    Q_NODE_LEAVE,
    Q_NODES,
    Q_LEASES,
    Q_DB_NOW,
    Q_LEASE_TAKE_NEW,
    Q_LEASE_TAKE,
    Q_LEASE_RENEW,
    Q_LEASE_RELEASE,
    Q_BF_INSERT,
    Q_BF_GUARD,
    Q_BF_PAGE,
    Q_BF_FINISH,
    Q_BF_ONE,
    Q_BF_LIST,
    Q_BF_RUNNING,
    Q_EVENT_INSERT_MANY,
    Q_EVENT_INSERT_MANY_FAST,
    Q_NOTIFY,
    Q_COUNT
};

/* State sync (docs/internals/cluster.md): the channels of the notifications
 * sent in the transaction of a change, each naming a tenant. */
#define CHANNEL_STATE "leverbridge_state"
#define CHANNEL_JOBS "leverbridge_jobs"

#define JOB_COLS                                                                                   \
    "id, tenant_id, event_id, workflow_id, action, opportunity_id, seq, status, attempts,"         \
    " next_run_at, last_error, steps, created_at, updated_at"
#define JOB_VALS                                                                                   \
    "$1::text, $2::text, $3::text, $4::text, $5::json, $6::text, $7::int, $8::text, $9::int,"      \
    " $10::bigint, $11::text, $12::jsonb, $13::bigint, $13::bigint"
#define EVENT_COLS                                                                                 \
    "e.id, e.tenant_id, e.source, e.type, e.status, e.opportunity_id, e.received_at,"              \
    " ARRAY(SELECT j.id FROM jobs j WHERE j.event_id = e.id ORDER BY j.seq, j.created_at, j.id"    \
    " LIMIT 1000)"
#define JOB_BEFORE " AND (created_at < $3::bigint OR (created_at = $3::bigint AND id < $4::text))"
#define JOB_ORDER " ORDER BY created_at DESC, id DESC LIMIT $2::bigint"
/* The database's clock in ms: the one clock every replica's leases are
 * judged by (the transaction's start, the same for the whole batch). */
#define DB_NOW "(extract(epoch FROM now()) * 1000)::bigint"
#define LEASE_RET " RETURNING epoch, expires_at"
#define NOT_REFERENCED " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.event_id = e.id)"

/* Q_EVENT_INSERT and the events' Q_JOB_INSERT_EVENT for a run of
 * event-insert ops of one batch (coalescable()), in one statement: arrays
 * with one element per op ($1..$10, Q_EVENT_INSERT's parameters; $25, $26
 * the stage and its window, NULL for none) and per job ($11..$23, a job's
 * parameters; $24 the id of its op's event). The stage rule is
 * Q_EVENT_INSERT_STAGE's for source "lever" (the other sources' stage ops
 * are not coalesced): a "reconcile" event of the change, read in the
 * statement's snapshot, which holds every event of the batch's earlier ops
 * (a run breaks before a stage op that follows another source's). Rows are
 * inserted in the ops' order, so of two ops with one key the first is
 * inserted and the second is its duplicate; each op's jobs only when its
 * event was inserted; each hook's last delivery time raised to its newest
 * inserted event, unless another transaction holds the hook's row (SKIP
 * LOCKED: another replica's delivery to that hook, committing now with a
 * time as recent; waiting for it queued the replicas' batches behind one
 * another, and two that locked two hooks in opposite orders deadlocked).
 * One row per op, in order: inserted, and for a duplicate
 * the earlier event's id, read in the statement's snapshot (NULL when that
 * event is one of this statement's: parse_event_row finds it among the
 * earlier ops).
 *
 * Q_EVENT_INSERT_MANY_FAST is the same without ON CONFLICT, for a run whose
 * keys are distinct: the unique index still refuses a stored key, with an
 * error instead of the pre-check that ON CONFLICT makes for every row
 * (about 14% of the backend's CPU in ingest). That error sends the run
 * again as Q_EVENT_INSERT_MANY (attempt(), FAST_PAUSE_MS). */
#define EVENT_MANY_A                                                                               \
    "WITH d AS (SELECT u.id COLLATE \"C\" AS id, u.tenant_id COLLATE \"C\" AS tenant_id,"          \
    " u.source, u.type, u.dedupe_key COLLATE \"C\" AS dedupe_key, u.status, u.opportunity_id,"     \
    " u.payload, u.received_at, u.hook_id COLLATE \"C\" AS hook_id, u.stage, u.w, u.n"             \
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"         \
    " $7::text[], $8::text[], $9::bigint[], $10::text[], $25::text[], $26::bigint[])"              \
    " WITH ORDINALITY AS u(id, tenant_id, source, type, dedupe_key, status, opportunity_id,"       \
    " payload, received_at, hook_id, stage, w, n)),"                                               \
    " st AS (SELECT d.n, (SELECT r.id FROM events r WHERE r.tenant_id = d.tenant_id"               \
    " AND r.received_at >= d.received_at - d.w AND r.source = 'reconcile'"                         \
    " AND r.opportunity_id = d.opportunity_id"                                                     \
    " AND r.payload->'data'->>'toStageId' = d.stage"                                               \
    " AND CASE WHEN r.source = 'reconcile' THEN (r.payload->>'triggeredAt')::bigint"               \
    " BETWEEN d.received_at - d.w AND d.received_at + d.w ELSE true END LIMIT 1) AS id"            \
    " FROM d WHERE d.stage IS NOT NULL),"                                                          \
    " ins AS (INSERT INTO events(id, tenant_id, source, type, dedupe_key, status,"                 \
    " opportunity_id, payload, received_at)"                                                       \
    " SELECT d.id, d.tenant_id, d.source, d.type, d.dedupe_key, d.status, d.opportunity_id,"       \
    " d.payload::json, d.received_at FROM d WHERE NOT EXISTS (SELECT 1 FROM event_keys k"          \
    " WHERE k.tenant_id = d.tenant_id AND k.source = d.source"                                     \
    " AND k.dedupe_key = d.dedupe_key)"                                                            \
    " AND NOT EXISTS (SELECT 1 FROM st WHERE st.n = d.n AND st.id IS NOT NULL) ORDER BY d.n"
#define EVENT_MANY_B                                                                               \
    " RETURNING id),"                                                                              \
    " m AS (SELECT d.hook_id, max(d.received_at) AS at FROM d WHERE d.hook_id IS NOT NULL"         \
    " AND d.id IN (SELECT id FROM ins) GROUP BY d.hook_id),"                                       \
    " hl AS (SELECT x.id FROM hooks x WHERE x.id IN (SELECT hook_id FROM m)"                       \
    " FOR UPDATE SKIP LOCKED),"                                                                    \
    " h AS (UPDATE hooks SET last_delivery_at = m.at FROM m WHERE hooks.id = m.hook_id"            \
    " AND hooks.id IN (SELECT id FROM hl) AND COALESCE(hooks.last_delivery_at, 0) < m.at),"        \
    " jb AS (INSERT INTO jobs(" JOB_COLS ")"                                                       \
    " SELECT j.id, j.tenant_id, j.event_id, j.workflow_id, j.action::json, j.opportunity_id,"      \
    " j.seq, j.status, j.attempts, j.next_run_at, j.last_error, j.steps::jsonb, j.created_at,"     \
    " j.created_at FROM unnest($11::text[], $12::text[], $13::text[], $14::text[],"                \
    " $15::text[], $16::text[], $17::bigint[], $18::text[], $19::bigint[], $20::bigint[],"         \
    " $21::text[], $22::text[], $23::bigint[], $24::text[]) WITH ORDINALITY"                       \
    " AS j(id, tenant_id, event_id, workflow_id, action, opportunity_id, seq, status,"             \
    " attempts, next_run_at, last_error, steps, created_at, owner, n)"                             \
    " WHERE j.owner COLLATE \"C\" IN (SELECT id FROM ins) ORDER BY j.n)"                           \
    " SELECT d.id IN (SELECT id FROM ins), CASE WHEN d.id NOT IN (SELECT id FROM ins)"             \
    " THEN COALESCE((SELECT k.event_id FROM event_keys k WHERE k.tenant_id = d.tenant_id"          \
    " AND k.source = d.source AND k.dedupe_key = d.dedupe_key),"                                   \
    " (SELECT st.id FROM st WHERE st.n = d.n), (SELECT e.id FROM events e WHERE e.tenant_id = "    \
    "d.tenant_id AND e.source = d.source"                                                          \
    " AND e.dedupe_key = d.dedupe_key)) END FROM d ORDER BY d.n"

static const char *const q_sql[Q_COUNT] = {
    [Q_TENANT_UPSERT] =
        "INSERT INTO tenants(id, name, api_addon, lever_rate, lever_burst, created_at, updated_at,"
        " failure_tag)"
        " VALUES ($1::text, $2::text, $3::smallint, $4::float8, $5::int, $6::bigint, $6::bigint,"
        " $7::text)"
        " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, api_addon = EXCLUDED.api_addon,"
        " lever_rate = EXCLUDED.lever_rate, lever_burst = EXCLUDED.lever_burst,"
        " updated_at = EXCLUDED.updated_at, failure_tag = EXCLUDED.failure_tag"
        " RETURNING created_at, updated_at, xmax = 0",
    [Q_TENANT_DELETE] = "DELETE FROM tenants WHERE id = $1::text",
    [Q_TENANT_ALL] =
        "SELECT id, name, api_addon, lever_rate, lever_burst, created_at, updated_at,"
        " failure_tag FROM tenants WHERE $1::text IS NULL OR id = $1::text ORDER BY id",
    [Q_META_GET] = "SELECT value FROM meta WHERE key = $1::text",
    [Q_META_PUT] =
        "INSERT INTO meta(key, value, updated_at) VALUES ($1::text, $2::bytea, $3::bigint)"
        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value,"
        " updated_at = EXCLUDED.updated_at",
    [Q_JOB_INSERT] = "INSERT INTO jobs(" JOB_COLS ") VALUES (" JOB_VALS ")",
    /* An event's jobs: only when this op inserted the event (a duplicate
     * leaves no event row with the new id). */
    [Q_JOB_INSERT_EVENT] = "INSERT INTO jobs(" JOB_COLS ") SELECT " JOB_VALS
                           " WHERE EXISTS (SELECT 1 FROM events WHERE id = $14::text)",
    [Q_JOB_UPDATE] = "UPDATE jobs SET status = $2::text, attempts = $3::int,"
                     " next_run_at = $4::bigint, last_error = $5::text, steps = $6::jsonb,"
                     " updated_at = $7::bigint WHERE id = $1::text",
    /* job_update's tag job: the failure-tag ledger's row for a new (tenant,
     * opportunity, tag $14) while the updated job ($15) exists, and the job
     * only when that row was written. */
    [Q_FAILURE_TAG_JOB] =
        "WITH l AS (INSERT INTO failure_tags(tenant_id, opportunity_id, tag, job_id, created_at)"
        " SELECT $2::text, $6::text, $14::text, $1::text, $13::bigint"
        " WHERE EXISTS (SELECT 1 FROM jobs WHERE id = $15::text)"
        " ON CONFLICT (tenant_id, opportunity_id, tag) DO NOTHING RETURNING 1)"
        " INSERT INTO jobs(" JOB_COLS ") SELECT " JOB_VALS " WHERE EXISTS (SELECT 1 FROM l)"
        " RETURNING id",
    [Q_JOB_ACTIVE] =
        "SELECT " JOB_COLS " FROM jobs WHERE status IN ('queued', 'running', 'retrying')"
        " ORDER BY created_at, event_id NULLS FIRST, seq",
    [Q_CONN_PUT] =
        "INSERT INTO connections(tenant_id, status, auth, secret, token_expires_at,"
        " permissions_missing, permissions_checked_at, connected_at, updated_at)"
        " VALUES ($1::text, $2::text, $3::text, $4::bytea, $5::bigint, $6::text, $7::bigint,"
        " $8::bigint, $9::bigint)"
        " ON CONFLICT (tenant_id) DO UPDATE SET status = EXCLUDED.status, auth = EXCLUDED.auth,"
        " secret = EXCLUDED.secret, token_expires_at = EXCLUDED.token_expires_at,"
        " permissions_missing = EXCLUDED.permissions_missing,"
        " permissions_checked_at = EXCLUDED.permissions_checked_at,"
        " connected_at = EXCLUDED.connected_at, updated_at = EXCLUDED.updated_at",
    [Q_CONN_DELETE] = "DELETE FROM connections WHERE tenant_id = $1::text",
    [Q_HOOK_DELETE_TENANT] = "DELETE FROM hooks WHERE tenant_id = $1::text",
    [Q_CONN_ALL] = "SELECT tenant_id, status, auth, secret, token_expires_at, permissions_missing,"
                   " permissions_checked_at, connected_at, updated_at FROM connections"
                   " WHERE $1::text IS NULL OR tenant_id = $1::text ORDER BY tenant_id",
    [Q_HOOK_ALL] = "SELECT id, tenant_id, lever_webhook_id, signature_token, status, attempts,"
                   " next_attempt_at, deadline_at, last_error, active_since, last_delivery_at,"
                   " checked_at FROM hooks WHERE $1::text IS NULL OR tenant_id = $1::text"
                   " ORDER BY tenant_id",
    [Q_HOOK_DELETE_OTHERS] = "DELETE FROM hooks WHERE tenant_id = $1::text AND id <> $2::text",
    [Q_HOOK_PUT] =
        "INSERT INTO hooks(id, tenant_id, lever_webhook_id, signature_token, status, attempts,"
        " next_attempt_at, deadline_at, last_error, active_since, last_delivery_at, checked_at)"
        " VALUES ($1::text, $2::text, $3::text, $4::bytea, $5::text, $6::int, $7::bigint,"
        " $8::bigint, $9::text, $10::bigint, $11::bigint, $12::bigint)"
        " ON CONFLICT (id) DO UPDATE SET lever_webhook_id = EXCLUDED.lever_webhook_id,"
        " signature_token = EXCLUDED.signature_token, status = EXCLUDED.status,"
        " attempts = EXCLUDED.attempts, next_attempt_at = EXCLUDED.next_attempt_at,"
        " deadline_at = EXCLUDED.deadline_at, last_error = EXCLUDED.last_error,"
        " active_since = EXCLUDED.active_since,"
        " last_delivery_at = GREATEST(COALESCE(hooks.last_delivery_at, 0),"
        " COALESCE(EXCLUDED.last_delivery_at, 0)), checked_at = EXCLUDED.checked_at",
    /* One statement: the key of a pruned result first, then the insert,
     * which the unique index turns into nothing for a duplicate (also one
     * committed meanwhile by another replica: ON CONFLICT waits for it),
     * the hook's last delivery time when it inserted ($10, NULL for none;
     * not when another transaction holds the hook's row: EVENT_MANY_B),
     * and for a duplicate only the earlier event's id, read in the
     * statement's snapshot (the CASE evaluates it only then; NULL for the
     * one another replica committed meanwhile: late_duplicates). */
    [Q_EVENT_INSERT] =
        "WITH k AS (SELECT event_id FROM event_keys WHERE tenant_id = $2::text"
        " AND source = $3::text AND dedupe_key = $5::text),"
        " ins AS (INSERT INTO events(id, tenant_id, source, type, dedupe_key, status,"
        " opportunity_id, payload, received_at)"
        " SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $8::json,"
        " $9::bigint WHERE NOT EXISTS (SELECT 1 FROM k)"
        " ON CONFLICT (tenant_id, source, dedupe_key) DO NOTHING RETURNING id),"
        " h AS (UPDATE hooks SET last_delivery_at = $9::bigint WHERE id = $10::text"
        " AND COALESCE(last_delivery_at, 0) < $9::bigint AND EXISTS (SELECT 1 FROM ins)"
        " AND id IN (SELECT x.id FROM hooks x WHERE x.id = $10::text FOR UPDATE SKIP LOCKED))"
        " SELECT i.id, CASE WHEN i.id IS NULL THEN COALESCE((SELECT event_id FROM k),"
        " (SELECT id FROM events WHERE tenant_id = $2::text AND source = $3::text"
        " AND dedupe_key = $5::text)) END FROM (SELECT (SELECT id FROM ins) AS id) i",
    /* Q_EVENT_INSERT for an event that reports a stage change (store.h,
     * event_insert.stage_id): the change already an event of the other
     * source counts as a duplicate too. $11 stage, $12..$13 the window of
     * the other event's received_at, $14 its source, $15..$16 the window
     * of a reconcile event's triggeredAt (the CASE keeps the cast to rows
     * that leverbridge wrote). */
    [Q_EVENT_INSERT_STAGE] =
        "WITH k AS ((SELECT event_id FROM event_keys WHERE tenant_id = $2::text"
        " AND source = $3::text AND dedupe_key = $5::text)"
        " UNION ALL (SELECT id FROM events WHERE tenant_id = $2::text"
        " AND received_at BETWEEN $12::bigint AND $13::bigint AND source = $14::text"
        " AND opportunity_id = $7::text AND (source <> 'lever' OR status = 'accepted')"
        " AND payload->'data'->>'toStageId' = $11::text"
        " AND CASE WHEN source = 'reconcile' THEN (payload->>'triggeredAt')::bigint"
        " BETWEEN $15::bigint AND $16::bigint ELSE true END LIMIT 1)),"
        " ins AS (INSERT INTO events(id, tenant_id, source, type, dedupe_key, status,"
        " opportunity_id, payload, received_at)"
        " SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $8::json,"
        " $9::bigint WHERE NOT EXISTS (SELECT 1 FROM k)"
        " ON CONFLICT (tenant_id, source, dedupe_key) DO NOTHING RETURNING id),"
        " h AS (UPDATE hooks SET last_delivery_at = $9::bigint WHERE id = $10::text"
        " AND COALESCE(last_delivery_at, 0) < $9::bigint AND EXISTS (SELECT 1 FROM ins)"
        " AND id IN (SELECT x.id FROM hooks x WHERE x.id = $10::text FOR UPDATE SKIP LOCKED))"
        " SELECT i.id, CASE WHEN i.id IS NULL THEN COALESCE((SELECT event_id FROM k LIMIT 1),"
        " (SELECT id FROM events WHERE tenant_id = $2::text AND source = $3::text"
        " AND dedupe_key = $5::text)) END FROM (SELECT (SELECT id FROM ins) AS id) i",
    [Q_EVENT_INSERT_MANY] =
        EVENT_MANY_A " ON CONFLICT (tenant_id, source, dedupe_key) DO NOTHING" EVENT_MANY_B,
    [Q_EVENT_INSERT_MANY_FAST] = EVENT_MANY_A EVENT_MANY_B,
    /* One notification per tenant ($2: distinct ids); delivered at COMMIT,
     * and only if it commits. */
    [Q_NOTIFY] = "SELECT count(pg_notify($1::text, t)) FROM unnest($2::text[]) t",
    [Q_RECONCILED_COUNTS] = "SELECT tenant_id, received_at / 3600000, count(*) FROM events"
                            " WHERE source = 'reconcile' AND received_at >= $1::bigint"
                            " GROUP BY 1, 2 ORDER BY 1, 2",
#define BF_COLS                                                                                    \
    "id, tenant_id, workflow_id, status, page_offset, listed, queued, skipped, last_error,"        \
    " created_at, updated_at"
    [Q_BF_INSERT] = "INSERT INTO backfills(id, tenant_id, workflow_id, status, created_at,"
                    " updated_at) VALUES ($1::text, $2::text, $3::text, $4::text, $5::bigint,"
                    " $5::bigint)",
    /* A page of a backfill that is not running (any more) must write
     * nothing: this fails the op alone (division by zero, 22012) before
     * its events are inserted. */
    [Q_BF_GUARD] = "SELECT 1 / (SELECT count(*)::int FROM backfills WHERE id = $1::text"
                   " AND tenant_id = $2::text AND status = 'running')",
    /* The page's counts: of its events ($7, the ids it tried), those
     * inserted now whose opportunity is not invited to every one of the
     * assessments $8 are queued, the rest skipped. */
    [Q_BF_PAGE] =
        "UPDATE backfills SET page_offset = $3::text, status = $4::text,"
        " listed = listed + $5::bigint, queued = queued + q.n,"
        " skipped = skipped + $5::bigint - q.n, updated_at = $6::bigint"
        " FROM (SELECT count(*) AS n FROM events e WHERE e.id = ANY($7::text[])"
        " AND NOT (cardinality($8::text[]) > 0 AND NOT EXISTS (SELECT 1 FROM unnest($8::text[])"
        " a(x) WHERE NOT EXISTS (SELECT 1 FROM invitations i WHERE i.tenant_id = $2::text"
        " AND i.opportunity_id = e.opportunity_id AND i.assessment = a.x)))) q"
        " WHERE backfills.id = $1::text AND backfills.tenant_id = $2::text"
        " RETURNING listed, queued, skipped",
    [Q_BF_FINISH] = "UPDATE backfills SET status = $3::text, last_error = $4::text,"
                    " updated_at = $5::bigint WHERE id = $1::text AND tenant_id = $2::text"
                    " AND status = 'running'",
    [Q_BF_ONE] = "SELECT " BF_COLS " FROM backfills WHERE tenant_id = $1::text AND id = $2::text",
    [Q_BF_LIST] = "SELECT " BF_COLS " FROM backfills WHERE tenant_id = $1::text"
                  " ORDER BY created_at DESC, id DESC LIMIT $2::bigint",
    [Q_BF_RUNNING] = "SELECT " BF_COLS " FROM backfills WHERE status = 'running'"
                     " ORDER BY created_at, id",
    /* Updates only the tenant's own workflow: an id of another tenant's is
     * a conflict, as the primary key makes it in SQLite. */
    [Q_WF_PUT] = "INSERT INTO workflows(id, tenant_id, body, enabled, created_at, updated_at)"
                 " VALUES ($1::text, $2::text, $3::json, $4::boolean, $5::bigint, $5::bigint)"
                 " ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body,"
                 " enabled = EXCLUDED.enabled, updated_at = $6::bigint"
                 " WHERE workflows.tenant_id = EXCLUDED.tenant_id"
                 " RETURNING created_at, updated_at, xmax = 0",
    [Q_WF_DELETE] = "DELETE FROM workflows WHERE id = $1::text AND tenant_id = $2::text",
    [Q_WF_ALL] =
        "SELECT id, tenant_id, body, enabled, created_at, updated_at FROM workflows"
        " WHERE $1::text IS NULL OR tenant_id = $1::text ORDER BY tenant_id, created_at, id",
    [Q_EVENT_LIST] = "SELECT " EVENT_COLS " FROM events e WHERE e.tenant_id = $1::text"
                     " ORDER BY e.received_at DESC, e.id DESC LIMIT $2::bigint",
    [Q_EVENT_LIST_BEFORE] =
        "SELECT " EVENT_COLS " FROM events e WHERE e.tenant_id = $1::text"
        " AND (e.received_at < $3::bigint OR (e.received_at = $3::bigint AND e.id < $4::text))"
        " ORDER BY e.received_at DESC, e.id DESC LIMIT $2::bigint",
    [Q_EVENT_ONE] = "SELECT " EVENT_COLS ", e.payload FROM events e"
                    " WHERE e.tenant_id = $1::text AND e.id = $2::text",
    [Q_JOB_LIST] = "SELECT " JOB_COLS " FROM jobs WHERE tenant_id = $1::text" JOB_ORDER,
    [Q_JOB_LIST_BEFORE] =
        "SELECT " JOB_COLS " FROM jobs WHERE tenant_id = $1::text" JOB_BEFORE JOB_ORDER,
    [Q_JOB_LIST_STATUS] = "SELECT " JOB_COLS " FROM jobs WHERE tenant_id = $1::text"
                          " AND status = $3::text" JOB_ORDER,
    [Q_JOB_LIST_STATUS_BEFORE] = "SELECT " JOB_COLS " FROM jobs WHERE tenant_id = $1::text"
                                 " AND status = $5::text" JOB_BEFORE JOB_ORDER,
    [Q_JOB_ONE] = "SELECT " JOB_COLS " FROM jobs WHERE tenant_id = $1::text AND id = $2::text",
    [Q_INV_INSERT] = "INSERT INTO invitations(tenant_id, opportunity_id, assessment, job_id,"
                     " created_at) VALUES ($1::text, $2::text, $3::text, $4::text, $5::bigint)"
                     " ON CONFLICT DO NOTHING",
    [Q_INV_GET] = "SELECT opportunity_id, assessment, job_id, invitation_id, url, note_id,"
                  " created_at, stage_id FROM invitations WHERE tenant_id = $1::text"
                  " AND opportunity_id = $2::text AND assessment = $3::text",
    [Q_INV_UPDATE] = "UPDATE invitations SET invitation_id = COALESCE($4::text, invitation_id),"
                     " url = COALESCE($5::text, url), note_id = COALESCE($6::text, note_id),"
                     " stage_id = COALESCE($7::text, stage_id)"
                     " WHERE tenant_id = $1::text AND opportunity_id = $2::text"
                     " AND assessment = $3::text",
    [Q_JOB_FAILED_COUNTS] = "SELECT tenant_id, count(*) FROM jobs WHERE status = 'failed'"
                            " GROUP BY tenant_id ORDER BY tenant_id",
    /* Retention, oldest first. */
    [Q_PRUNE_JOBS] = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs"
                     " WHERE status IN ('succeeded', 'failed', 'skipped', 'cancelled')"
                     " AND updated_at < $1::bigint ORDER BY updated_at LIMIT $2::bigint)",
    /* Events no job refers to: Lever deliveries received before $2 (the
     * dedupe window's start, or earlier) first, then the others before $1,
     * at most $3 together; the keys of the others move to event_keys. */
    [Q_PRUNE_EVENTS] =
        "WITH cand AS ((SELECT id, tenant_id, source, dedupe_key, 0 AS pri, received_at"
        " FROM events e WHERE source = 'lever' AND received_at < $2::bigint" NOT_REFERENCED
        " ORDER BY received_at LIMIT $3::bigint)"
        " UNION ALL (SELECT id, tenant_id, source, dedupe_key, 1, received_at"
        " FROM events e WHERE source <> 'lever' AND received_at < $1::bigint" NOT_REFERENCED
        " ORDER BY received_at LIMIT $3::bigint)),"
        " pick AS (SELECT * FROM cand ORDER BY pri, received_at LIMIT $3::bigint),"
        " keys AS (INSERT INTO event_keys(tenant_id, source, dedupe_key, event_id)"
        " SELECT tenant_id, source, dedupe_key, id FROM pick WHERE source <> 'lever'"
        " ON CONFLICT DO NOTHING)"
        " DELETE FROM events WHERE id IN (SELECT id FROM pick)",
    [Q_STATS_PUT] = "INSERT INTO stats_hourly(tenant_id, hour, accepted, duplicate, refused,"
                    " succeeded, failed) VALUES ($1::text, $2::bigint, $3::bigint, $4::bigint,"
                    " $5::bigint, $6::bigint, $7::bigint)"
                    " ON CONFLICT (tenant_id, hour) DO UPDATE SET"
                    " accepted = stats_hourly.accepted + EXCLUDED.accepted,"
                    " duplicate = stats_hourly.duplicate + EXCLUDED.duplicate,"
                    " refused = stats_hourly.refused + EXCLUDED.refused,"
                    " succeeded = stats_hourly.succeeded + EXCLUDED.succeeded,"
                    " failed = stats_hourly.failed + EXCLUDED.failed",
    [Q_STATS_FORGET] = "DELETE FROM stats_hourly WHERE hour < $1::bigint",
    [Q_STATS_LOAD] = "SELECT tenant_id, hour, accepted, duplicate, refused, succeeded, failed"
                     " FROM stats_hourly WHERE hour >= $1::bigint ORDER BY tenant_id, hour",
    /* 1 written, 0 no such job; a lease moved on: SQLSTATE P0L01. */
    [Q_JOB_UPDATE_FENCED] =
        "WITH u AS (UPDATE jobs SET status = $2::text, attempts = $3::int,"
        " next_run_at = $4::bigint, last_error = $5::text, steps = $6::jsonb,"
        " updated_at = $7::bigint WHERE id = $1::text AND EXISTS (SELECT 1 FROM leases l"
        " WHERE l.tenant_id = jobs.tenant_id AND l.node = $8::text AND l.epoch = $9::bigint)"
        " RETURNING 1)"
        " SELECT CASE WHEN EXISTS (SELECT 1 FROM u) THEN 1"
        " WHEN EXISTS (SELECT 1 FROM jobs WHERE id = $1::text) THEN lb_lease_moved_on()"
        " ELSE 0 END",
    /* The invitation ledger's writes of a job, fenced as Q_JOB_UPDATE_FENCED
     * (the lease check and the write in one statement: one snapshot): $6
     * node, $7 epoch (claim) or $8, $9 (update). Claim: 1 (inserted or
     * there); update: the rows written; a lease moved on: SQLSTATE P0L01. */
    [Q_INV_INSERT_FENCED] =
        "WITH f AS (SELECT EXISTS (SELECT 1 FROM leases WHERE tenant_id = $1::text"
        " AND node = $6::text AND epoch = $7::bigint) AS ok),"
        " i AS (INSERT INTO invitations(tenant_id, opportunity_id, assessment, job_id, created_at)"
        " SELECT $1::text, $2::text, $3::text, $4::text, $5::bigint WHERE (SELECT ok FROM f)"
        " ON CONFLICT DO NOTHING RETURNING 1)"
        " SELECT CASE WHEN (SELECT ok FROM f) THEN 1 ELSE lb_lease_moved_on() END",
    [Q_INV_UPDATE_FENCED] =
        "WITH f AS (SELECT EXISTS (SELECT 1 FROM leases WHERE tenant_id = $1::text"
        " AND node = $8::text AND epoch = $9::bigint) AS ok),"
        " u AS (UPDATE invitations SET invitation_id = COALESCE($4::text, invitation_id),"
        " url = COALESCE($5::text, url), note_id = COALESCE($6::text, note_id),"
        " stage_id = COALESCE($7::text, stage_id)"
        " WHERE tenant_id = $1::text AND opportunity_id = $2::text"
        " AND assessment = $3::text AND (SELECT ok FROM f) RETURNING 1)"
        " SELECT CASE WHEN (SELECT ok FROM f) THEN (SELECT count(*) FROM u)"
        " ELSE lb_lease_moved_on() END",
    [Q_JOB_ACTIVE_SOME] =
        "SELECT " JOB_COLS " FROM jobs WHERE status IN ('queued', 'running', 'retrying')"
        " AND updated_at >= $2::bigint AND ($1::text IS NULL OR tenant_id IN"
        " (SELECT tenant_id FROM leases WHERE node = $1::text))"
        " ORDER BY created_at, event_id NULLS FIRST, seq",
    /* Several replicas (docs/internals/cluster.md). */
    [Q_NODE_BEAT] = "INSERT INTO nodes(id, advertise_url, started_at, last_seen_at)"
                    " VALUES ($1::text, $2::text, " DB_NOW ", " DB_NOW ")"
                    " ON CONFLICT (id) DO UPDATE SET advertise_url = EXCLUDED.advertise_url,"
                    " last_seen_at = EXCLUDED.last_seen_at",
    [Q_NODE_FORGET] =
        "DELETE FROM nodes WHERE id <> $1::text AND last_seen_at < " DB_NOW " - $2::bigint",
    [Q_NODE_LEAVE] = "DELETE FROM nodes WHERE id = $1::text",
    [Q_NODES] = "SELECT id, advertise_url, last_seen_at, last_seen_at > " DB_NOW " - $1::bigint"
                " FROM nodes ORDER BY id LIMIT 1001",
    [Q_LEASES] = "SELECT t.id, l.node, l.epoch, l.expires_at,"
                 " l.expires_at IS NULL OR l.expires_at <= " DB_NOW
                 " FROM tenants t LEFT JOIN leases l ON l.tenant_id = t.id ORDER BY t.id",
    [Q_DB_NOW] = "SELECT " DB_NOW,
    /* Compare and set on the epoch; a tenant being deleted is skipped
     * rather than failing on its foreign key. */
    [Q_LEASE_TAKE_NEW] = "INSERT INTO leases(tenant_id, node, epoch, expires_at)"
                         " SELECT $1::text, $2::text, 1, " DB_NOW " + $3::bigint"
                         " WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $1::text)"
                         " ON CONFLICT (tenant_id) DO NOTHING" LEASE_RET,
    [Q_LEASE_TAKE] = "UPDATE leases SET node = $2::text, epoch = epoch + 1,"
                     " expires_at = " DB_NOW " + $3::bigint"
                     " WHERE tenant_id = $1::text AND epoch = $4::bigint"
                     " AND (expires_at <= " DB_NOW " OR node = $2::text)" LEASE_RET,
    [Q_LEASE_RENEW] = "UPDATE leases SET expires_at = " DB_NOW " + $3::bigint"
                      " WHERE tenant_id = $1::text AND node = $2::text AND epoch = $4::bigint"
                      " AND $3::bigint > 0" LEASE_RET,
    [Q_LEASE_RELEASE] = "UPDATE leases SET expires_at = " DB_NOW
                        " WHERE tenant_id = $1::text AND node = $2::text AND epoch = $4::bigint"
                        " AND $3::bigint > 0" LEASE_RET,
};

/* One statement of a batch: which, its parameters (text, or binary for
 * bytea), and, once read, its result. Owner: the batch's call vector. */
typedef struct {
    int q;           /* Q_*, or -1: the unnamed statement `sql` */
    const char *sql; /* BEGIN, COMMIT */
    int op;          /* index of its op in the batch; -1: BEGIN, COMMIT */
    size_t gend;     /* a coalesced statement: ops [op, gend); else 0 */
    int n;
    const char *v[MAXP]; /* NULL: SQL NULL (unless isnum) */
    int len[MAXP];
    int fmt[MAXP];
    char isnum[MAXP];
    char num[MAXP][24];
    PGresult *res;
} pcall;

/* A batch on its way back to the loop. Owner: the store thread until it is
 * on `done`, then the loop thread, which frees it after completing it. */
/* Owner: the caller of lb_store_open, through lb_store; freed by destroy
 * after both handles are closed and the thread is joined. */
typedef struct {
    lb_store base; /* first */

    /* Set at open, then read-only. */
    char *conninfo;
    int64_t dedupe_ms;

    /* The store thread only (the opening thread until it starts). */
    PGconn *conn;     /* NULL while disconnected */
    int64_t retry_at; /* monotonic ms of the next connection attempt */
    int64_t backoff_ms;
    int degraded; /* the last write failed: probe while idle */
    int lost_logged;
    int migrated; /* the schema is this binary's (at open, or at first contact) */
    int unusable; /* reached, and refused for good: no more attempts */
    int migrate_logged;
    int news; /* for the next batch's `reached` (lb_store_waiting) */
    char *news_err;
    int generic_plans;      /* the session uses cached generic plans */
    int64_t plans_check_at; /* monotonic ms of the next plans_check */
    pcall *calls;           /* the batch's statements, reused */
    size_t ncalls, capcalls;
    lb_store_op **ops; /* the batch's ops by index, and per op: */
    size_t *first;     /* index of its first call */
    size_t *nc;        /* its number of calls */
    char *skip;        /* failed alone: not sent again */
    char *solo;        /* after its coalesced statement failed: 1 not FAST, 2 not coalesced */
    size_t *grp;       /* the call of its coalesced statement, or SIZE_MAX */
    int *grow;         /* and its row there */
    size_t capops;
    /* Tests only (fault.h), for the batch being run: the op to fail alone
     * (SIZE_MAX: none), and whether its transaction must fail. */
    size_t fault_op;
    int fault_commit;
    char **scratch; /* parameters built for the batch's calls, freed with them */
    size_t nscratch, capscratch;
    int64_t fast_after; /* monotonic ms: no Q_EVENT_INSERT_MANY_FAST before */
    const char **tids;  /* a batch's tenants to notify, reused */
    size_t captids;

    /* The store connection's server process: the listener ignores the
     * notifications it sent (this process applied those changes). Written
     * by the store thread, read by the listener's. */
    atomic_int own_pid;
    struct pg_listener *listener; /* NULL until lb_store_listen */
} pg_store;

/* State sync's listener (lb_store_listen): a connection of its own, on a
 * thread of its own, that LISTENs on both channels and hands what it hears
 * to the loop. Owner: its pg_store; freed by pg_destroy after its handle
 * closed and its thread was joined. */
#define LISTEN_POLL_MS 30000
typedef struct {
    int what;
    char tenant[LB_TENANT_ID_MAX + 1];
} pg_note;

typedef struct pg_listener {
    pg_store *s;
    lb_store_listen_cb cb; /* loop thread */
    void *cb_data;
    uv_async_t async; /* listener thread -> loop: notes, or stopped */
    uv_thread_t thread;
    int wake[2]; /* a pipe: the loop wakes the thread's poll to stop it */
    int joined;  /* loop thread */
    /* Guarded by mu. */
    uv_mutex_t mu;
    pg_note *notes; /* LB_STORE_NOTES_MAX */
    size_t nnotes;
    int all;  /* something may have been missed: report LB_STORE_CHANGED_ANY */
    int stop; /* loop -> thread */
    int stopped;
    /* The listener thread only. */
    PGconn *conn;
    int64_t backoff_ms;
    int lost_logged;
} pg_listener;

/* ---- helpers ------------------------------------------------------------- */

static int64_t mono_ms(void)
{
    return (int64_t)(lb_store__mono_seconds() * 1000.0);
}

static const char *flat(const char *msg, char *buf, size_t n)
{
    snprintf(buf, n, "%s", msg != NULL ? msg : "");
    lb_store__one_line(buf);
    return buf;
}

static int map_state(const char *st)
{
    if (st == NULL) return LB_EIO;
    if (strcmp(st, "23505") == 0) return LB_ECONFLICT; /* unique_violation */
    if (strcmp(st, "P0L01") == 0) return LB_ECONFLICT; /* lb_lease_moved_on() */
    if (strcmp(st, "23503") == 0) return LB_ENOTFOUND; /* foreign_key_violation */
    if (strcmp(st, "53100") == 0) return UV_ENOSPC;    /* disk_full */
    if (strncmp(st, "54", 2) == 0) return LB_ETOOBIG;  /* program_limit_exceeded */
    if (strncmp(st, "23", 2) == 0 || strncmp(st, "22", 2) == 0 || strncmp(st, "P0", 2) == 0)
        return LB_EINVAL; /* other constraints, bad data, a trigger's RAISE */
    return LB_EIO;
}

/* Errors that belong to the op (its input, its constraints, its SQL): it
 * fails alone. Everything else (connection, resources, timeouts,
 * serialization, shutdown) is the transaction's: the batch fails. */
static int op_level(const char *st)
{
    if (st == NULL) return 0;
    return strncmp(st, "22", 2) == 0 || strncmp(st, "23", 2) == 0 || strncmp(st, "42", 2) == 0 ||
           strncmp(st, "54", 2) == 0 || strncmp(st, "P0", 2) == 0 || strncmp(st, "2F", 2) == 0 ||
           strncmp(st, "39", 2) == 0;
}

static void *grow(void *v, size_t count, size_t *cap, size_t size, size_t first)
{
    if (count < *cap) return v;
    *cap = *cap ? *cap * 2 : first;
    return lb_realloc(v, *cap * size);
}

/* ---- parameters ---------------------------------------------------------- */

static pcall *call_add(pg_store *s, int q, int op)
{
    s->calls = grow(s->calls, s->ncalls, &s->capcalls, sizeof(pcall), 64);
    pcall *c = &s->calls[s->ncalls++];
    c->q = q;
    c->sql = NULL;
    c->op = op;
    c->gend = 0;
    c->n = 0;
    c->res = NULL;
    return c;
}

static void p_text(pcall *c, const char *v)
{
    int i = c->n++;
    c->v[i] = v;
    c->len[i] = 0;
    c->fmt[i] = 0;
    c->isnum[i] = 0;
}

static void p_i64(pcall *c, int64_t v)
{
    int i = c->n++;
    snprintf(c->num[i], sizeof(c->num[i]), "%" PRId64, v);
    c->v[i] = NULL;
    c->len[i] = 0;
    c->fmt[i] = 0;
    c->isnum[i] = 1;
}

/* A time: NULL when 0 (unset), as the SQLite backend stores it. */
static void p_time(pcall *c, int64_t v)
{
    if (v > 0)
        p_i64(c, v);
    else
        p_text(c, NULL);
}

static void p_double(pcall *c, double v)
{
    int i = c->n++;
    snprintf(c->num[i], sizeof(c->num[i]), "%.17g", v);
    c->v[i] = NULL;
    c->len[i] = 0;
    c->fmt[i] = 0;
    c->isnum[i] = 1;
}

static void p_bytea(pcall *c, const uint8_t *v, size_t n)
{
    int i = c->n++;
    c->v[i] = v != NULL ? (const char *)v : NULL;
    if (v != NULL && n == 0) c->v[i] = "";
    c->len[i] = (int)n;
    c->fmt[i] = 1;
    c->isnum[i] = 0;
}

/* ---- values -------------------------------------------------------------- */

static int is_null(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col);
}

static char *val_dup(const PGresult *r, int row, int col)
{
    return lb_strndup(PQgetvalue(r, row, col), (size_t)PQgetlength(r, row, col));
}

static char *val_dup_or_null(const PGresult *r, int row, int col)
{
    return is_null(r, row, col) ? NULL : val_dup(r, row, col);
}

static int64_t val_i64(const PGresult *r, int row, int col)
{
    return is_null(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static int val_int(const PGresult *r, int row, int col)
{
    return (int)val_i64(r, row, col);
}

static int val_bool(const PGresult *r, int row, int col)
{
    return !is_null(r, row, col) && PQgetvalue(r, row, col)[0] == 't';
}

static void val_id(const PGresult *r, int row, int col, char *out, size_t max)
{
    size_t n = (size_t)PQgetlength(r, row, col);
    if (!is_null(r, row, col) && n <= max) {
        memcpy(out, PQgetvalue(r, row, col), n);
        out[n] = '\0';
    }
}

/* bytea in text form ("\x..."), decoded into lb_malloc'd memory. */
static uint8_t *val_bytea(const PGresult *r, int row, int col, size_t *len)
{
    *len = 0;
    if (is_null(r, row, col)) return NULL;
    size_t n = 0;
    unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col), &n);
    if (raw == NULL) {
        lb_error(MOD, "out of memory decoding a bytea value");
        abort();
    }
    uint8_t *p = lb_malloc(n ? n : 1);
    if (n > 0) memcpy(p, raw, n);
    PQfreemem(raw);
    *len = n;
    return p;
}

/* A text[] in PostgreSQL's output form ({a,"b c"}) into an array of
 * strings. */
static void val_text_array(const PGresult *r, int row, int col, char ***out, size_t *n)
{
    const char *p = PQgetvalue(r, row, col);
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    if (is_null(r, row, col) || *p != '{') return;
    p++;
    size_t room = strlen(p) + 1;
    char *buf = lb_malloc(room);
    while (*p != '\0' && *p != '}') {
        size_t k = 0;
        if (*p == '"') {
            p++;
            while (*p != '\0' && *p != '"') {
                if (*p == '\\' && p[1] != '\0') p++;
                buf[k++] = *p++;
            }
            if (*p == '"') p++;
        } else {
            while (*p != '\0' && *p != ',' && *p != '}')
                buf[k++] = *p++;
        }
        *out = grow(*out, *n, &cap, sizeof(char *), 8);
        (*out)[(*n)++] = lb_strndup(buf, k);
        if (*p == ',') p++;
    }
    lb_free(buf);
}

static size_t affected(const PGresult *r)
{
    const char *t = PQcmdTuples((PGresult *)r);
    return t != NULL && *t ? (size_t)strtoull(t, NULL, 10) : 0;
}

/* ---- operations: build (statements and parameters) and parse (results) -- */

/* build appends the op's statements; parse reads their results (r[0..]),
 * which all succeeded, sets the op's outputs and returns its status. A new
 * kind adds a pair here and a line in kinds[]. */

static void build_tenant_upsert(pg_store *s, lb_store_op *op, int i)
{
    lb_tenant_rec *t = &op->tenant_upsert.rec;
    pcall *c = call_add(s, Q_TENANT_UPSERT, i);
    p_text(c, t->id);
    p_text(c, t->name);
    p_i64(c, t->api_addon ? 1 : 0);
    if (t->lever_rate > 0)
        p_double(c, t->lever_rate);
    else
        p_text(c, NULL);
    if (t->lever_burst > 0)
        p_i64(c, t->lever_burst);
    else
        p_text(c, NULL);
    /* The time to record is fixed when built, so a batch sent again (one
     * op failed) records the same. */
    if (t->updated_at <= 0) t->updated_at = lb_time_now_ms();
    p_i64(c, t->updated_at);
    p_text(c, t->failure_tag);
}

static int parse_tenant_upsert(pg_store *s, lb_store_op *op, PGresult **r)
{
    if (PQntuples(r[0]) != 1) return LB_EIO;
    op->tenant_upsert.rec.created_at = val_i64(r[0], 0, 0);
    op->tenant_upsert.rec.updated_at = val_i64(r[0], 0, 1);
    op->tenant_upsert.created = val_bool(r[0], 0, 2);
    return 0;
}

static void build_tenant_delete(pg_store *s, lb_store_op *op, int i)
{
    p_text(call_add(s, Q_TENANT_DELETE, i), op->tenant_delete.id);
}

static int parse_deleted(pg_store *s, lb_store_op *op, PGresult **r)
{
    return affected(r[0]) > 0 ? 0 : LB_ENOTFOUND;
}

static void build_tenant_load_all(pg_store *s, lb_store_op *op, int i)
{
    p_text(call_add(s, Q_TENANT_ALL, i), op->tenant_load_all.tenant_id);
}

static int parse_tenant_load_all(pg_store *s, lb_store_op *op, PGresult **r)
{
    int n = PQntuples(r[0]);
    if ((size_t)n > LB_STORE_TENANTS_MAX) return LB_ETOOBIG;
    lb_tenant_rec *recs = n > 0 ? lb_calloc((size_t)n, sizeof(*recs)) : NULL;
    for (int k = 0; k < n; k++) {
        lb_tenant_rec *t = &recs[k];
        val_id(r[0], k, 0, t->id, LB_TENANT_ID_MAX);
        t->name = val_dup(r[0], k, 1);
        t->api_addon = val_int(r[0], k, 2) != 0;
        t->lever_rate = is_null(r[0], k, 3) ? 0 : strtod(PQgetvalue(r[0], k, 3), NULL);
        t->lever_burst = val_int(r[0], k, 4);
        t->created_at = val_i64(r[0], k, 5);
        t->updated_at = val_i64(r[0], k, 6);
        t->failure_tag = val_dup_or_null(r[0], k, 7);
    }
    op->tenant_load_all.recs = recs;
    op->tenant_load_all.count = (size_t)n;
    return 0;
}

static void build_meta_get(pg_store *s, lb_store_op *op, int i)
{
    p_text(call_add(s, Q_META_GET, i), op->meta_get.key);
}

static int parse_meta_get(pg_store *s, lb_store_op *op, PGresult **r)
{
    if (PQntuples(r[0]) == 0) return LB_ENOTFOUND;
    size_t n = 0;
    uint8_t *v = val_bytea(r[0], 0, 0, &n);
    if (v == NULL) v = lb_malloc(1);
    op->meta_get.value = v;
    op->meta_get.len = n;
    return 0;
}

static void build_meta_put(pg_store *s, lb_store_op *op, int i)
{
    pcall *c = call_add(s, Q_META_PUT, i);
    p_text(c, op->meta_put.key);
    p_bytea(c, op->meta_put.len ? op->meta_put.value : (const uint8_t *)"", op->meta_put.len);
    p_i64(c, lb_time_now_ms());
}

static int parse_ok(pg_store *s, lb_store_op *op, PGresult **r)
{
    return 0;
}

/* One job's parameters ($1..$13). */
static void job_params(pcall *c, const lb_job_rec *j, int64_t now)
{
    p_text(c, j->id);
    p_text(c, j->tenant_id);
    p_text(c, j->event_id);
    p_text(c, j->workflow_id);
    p_text(c, j->action);
    p_text(c, j->opportunity_id);
    p_i64(c, j->seq);
    p_text(c, lb_job_status_name(j->status));
    p_i64(c, j->attempts);
    p_i64(c, j->next_run_at);
    p_text(c, j->last_error);
    p_text(c, j->steps);
    p_i64(c, j->created_at > 0 ? j->created_at : now);
}

static void build_job_insert(pg_store *s, lb_store_op *op, int i)
{
    int64_t now = lb_time_now_ms();
    for (size_t k = 0; k < op->job_insert.count; k++)
        job_params(call_add(s, Q_JOB_INSERT, i), &op->job_insert.recs[k], now);
}

static void build_job_update(pg_store *s, lb_store_op *op, int i)
{
    const lb_job_rec *j = op->job_update.rec;
    int fenced = op->job_update.lease_node != NULL;
    pcall *c = call_add(s, fenced ? Q_JOB_UPDATE_FENCED : Q_JOB_UPDATE, i);
    p_text(c, j->id);
    p_text(c, lb_job_status_name(j->status));
    p_i64(c, j->attempts);
    p_i64(c, j->next_run_at);
    p_text(c, j->last_error);
    p_text(c, j->steps);
    p_i64(c, j->updated_at > 0 ? j->updated_at : lb_time_now_ms());
    if (fenced) {
        p_text(c, op->job_update.lease_node);
        p_i64(c, op->job_update.lease_epoch);
    }
    if (op->job_update.tag_job != NULL) {
        c = call_add(s, Q_FAILURE_TAG_JOB, i);
        job_params(c, op->job_update.tag_job, lb_time_now_ms());
        p_text(c, op->job_update.tag);
        p_text(c, j->id);
    }
}

static int parse_updated(pg_store *s, lb_store_op *op, PGresult **r)
{
    return affected(r[0]) > 0 ? 0 : LB_ENOTFOUND;
}

static int parse_job_update(pg_store *s, lb_store_op *op, PGresult **r)
{
    if (op->job_update.lease_node != NULL) { /* fenced: 1 written, 0 absent */
        if (PQntuples(r[0]) != 1 || val_int(r[0], 0, 0) != 1) return LB_ENOTFOUND;
    } else if (affected(r[0]) == 0) {
        return LB_ENOTFOUND;
    }
    if (op->job_update.tag_job != NULL) op->job_update.tag_added = PQntuples(r[1]) == 1;
    return 0;
}

static void job_read(const PGresult *r, int k, lb_job_rec *j)
{
    memset(j, 0, sizeof(*j));
    val_id(r, k, 0, j->id, LB_JOB_ID_MAX);
    val_id(r, k, 1, j->tenant_id, LB_TENANT_ID_MAX);
    j->event_id = val_dup_or_null(r, k, 2);
    j->workflow_id = val_dup_or_null(r, k, 3);
    j->action = val_dup(r, k, 4);
    j->opportunity_id = val_dup_or_null(r, k, 5);
    j->seq = val_int(r, k, 6);
    j->status = lb_job_status_parse(PQgetvalue(r, k, 7));
    j->attempts = val_int(r, k, 8);
    j->next_run_at = val_i64(r, k, 9);
    j->last_error = val_dup_or_null(r, k, 10);
    j->steps = val_dup_or_null(r, k, 11);
    j->created_at = val_i64(r, k, 12);
    j->updated_at = val_i64(r, k, 13);
}

static lb_job_rec *jobs_read(const PGresult *r, size_t max, size_t *count)
{
    size_t n = (size_t)PQntuples(r);
    if (n > max) n = max;
    lb_job_rec *recs = n > 0 ? lb_calloc(n, sizeof(*recs)) : NULL;
    for (size_t k = 0; k < n; k++)
        job_read(r, (int)k, &recs[k]);
    *count = n;
    return recs;
}

static void build_job_load_active(pg_store *s, lb_store_op *op, int i)
{
    if (op->job_load_active.lease_node == NULL && op->job_load_active.changed_since == 0) {
        call_add(s, Q_JOB_ACTIVE, i);
        return;
    }
    pcall *c = call_add(s, Q_JOB_ACTIVE_SOME, i);
    p_text(c, op->job_load_active.lease_node);
    p_i64(c, op->job_load_active.changed_since);
}

static int parse_job_load_active(pg_store *s, lb_store_op *op, PGresult **r)
{
    if ((size_t)PQntuples(r[0]) > LB_STORE_JOBS_MAX) return LB_ETOOBIG;
    op->job_load_active.recs = jobs_read(r[0], LB_STORE_JOBS_MAX, &op->job_load_active.count);
    return 0;
}

static void build_conn_put(pg_store *s, lb_store_op *op, int i)
{
    const lb_conn_rec *r = op->conn_put.rec;
    pcall *c = call_add(s, Q_CONN_PUT, i);
    p_text(c, r->tenant_id);
    p_text(c, r->status);
    p_text(c, r->auth);
    p_bytea(c, r->secret, r->secret_len);
    p_time(c, r->token_expires_at);
    p_text(c, r->permissions_missing);
    p_time(c, r->permissions_checked_at);
    p_time(c, r->connected_at);
    p_i64(c, r->updated_at > 0 ? r->updated_at : lb_time_now_ms());
}

static void build_conn_delete(pg_store *s, lb_store_op *op, int i)
{
    p_text(call_add(s, Q_HOOK_DELETE_TENANT, i), op->conn_delete.tenant_id);
    p_text(call_add(s, Q_CONN_DELETE, i), op->conn_delete.tenant_id);
}

static void build_conn_load_all(pg_store *s, lb_store_op *op, int i)
{
    p_text(call_add(s, Q_CONN_ALL, i), op->conn_load_all.tenant_id);
    p_text(call_add(s, Q_HOOK_ALL, i), op->conn_load_all.tenant_id);
}

static int parse_conn_load_all(pg_store *s, lb_store_op *op, PGresult **r)
{
    size_t n = (size_t)PQntuples(r[0]);
    op->conn_load_all.conns = n > 0 ? lb_calloc(n, sizeof(lb_conn_rec)) : NULL;
    op->conn_load_all.nconns = n;
    for (size_t k = 0; k < n; k++) {
        lb_conn_rec *c = &op->conn_load_all.conns[k];
        int row = (int)k;
        val_id(r[0], row, 0, c->tenant_id, LB_TENANT_ID_MAX);
        c->status = val_dup(r[0], row, 1);
        c->auth = val_dup_or_null(r[0], row, 2);
        c->secret = val_bytea(r[0], row, 3, &c->secret_len);
        c->token_expires_at = val_i64(r[0], row, 4);
        c->permissions_missing = val_dup_or_null(r[0], row, 5);
        c->permissions_checked_at = val_i64(r[0], row, 6);
        c->connected_at = val_i64(r[0], row, 7);
        c->updated_at = val_i64(r[0], row, 8);
    }
    n = (size_t)PQntuples(r[1]);
    op->conn_load_all.hooks = n > 0 ? lb_calloc(n, sizeof(lb_hook_rec)) : NULL;
    op->conn_load_all.nhooks = n;
    for (size_t k = 0; k < n; k++) {
        lb_hook_rec *h = &op->conn_load_all.hooks[k];
        int row = (int)k;
        val_id(r[1], row, 0, h->id, LB_HOOK_ID_MAX);
        val_id(r[1], row, 1, h->tenant_id, LB_TENANT_ID_MAX);
        h->lever_webhook_id = val_dup_or_null(r[1], row, 2);
        h->signature_token = val_bytea(r[1], row, 3, &h->token_len);
        h->status = val_dup(r[1], row, 4);
        h->attempts = val_int(r[1], row, 5);
        h->next_attempt_at = val_i64(r[1], row, 6);
        h->deadline_at = val_i64(r[1], row, 7);
        h->last_error = val_dup_or_null(r[1], row, 8);
        h->active_since = val_i64(r[1], row, 9);
        h->last_delivery_at = val_i64(r[1], row, 10);
        h->checked_at = val_i64(r[1], row, 11);
    }
    return 0;
}

static void build_hook_put(pg_store *s, lb_store_op *op, int i)
{
    const lb_hook_rec *h = op->hook_put.rec;
    pcall *c = call_add(s, Q_HOOK_DELETE_OTHERS, i);
    p_text(c, h->tenant_id);
    p_text(c, h->id);
    c = call_add(s, Q_HOOK_PUT, i);
    p_text(c, h->id);
    p_text(c, h->tenant_id);
    p_text(c, h->lever_webhook_id);
    p_bytea(c, h->signature_token, h->token_len);
    p_text(c, h->status);
    p_i64(c, h->attempts);
    p_time(c, h->next_attempt_at);
    p_time(c, h->deadline_at);
    p_text(c, h->last_error);
    p_time(c, h->active_since);
    p_time(c, h->last_delivery_at);
    p_time(c, h->checked_at);
}

static void build_event_insert(pg_store *s, lb_store_op *op, int i)
{
    const lb_event_rec *e = op->event_insert.event;
    int64_t now = lb_time_now_ms();
    int64_t received = e->received_at > 0 ? e->received_at : now;
    const char *stage = e->opportunity_id ? op->event_insert.stage_id : NULL;
    pcall *c = call_add(s, stage ? Q_EVENT_INSERT_STAGE : Q_EVENT_INSERT, i);
    p_text(c, e->id);
    p_text(c, e->tenant_id);
    p_text(c, e->source);
    p_text(c, e->type);
    p_text(c, e->dedupe_key);
    p_text(c, e->status);
    p_text(c, e->opportunity_id);
    p_text(c, e->payload);
    p_i64(c, received);
    p_text(c, op->event_insert.hook_id);
    if (stage != NULL) {
        int64_t w = op->event_insert.stage_window_ms, at = op->event_insert.changed_at;
        int lever = strcmp(e->source, "lever") == 0;
        p_text(c, stage);
        p_i64(c, lever ? received - w : at - w);
        p_i64(c, lever ? INT64_MAX : at + w);
        p_text(c, lever ? "reconcile" : "lever");
        p_i64(c, lever ? received - w : INT64_MIN);
        p_i64(c, lever ? received + w : INT64_MAX);
    }
    for (size_t k = 0; k < op->event_insert.njobs; k++) {
        c = call_add(s, Q_JOB_INSERT_EVENT, i);
        job_params(c, &op->event_insert.jobs[k], now);
        p_text(c, e->id);
    }
}

static int parse_event_insert(pg_store *s, lb_store_op *op, PGresult **r)
{
    if (PQntuples(r[0]) != 1) return LB_EIO;
    op->event_insert.duplicate = 0;
    op->event_insert.existing_id[0] = '\0';
    if (is_null(r[0], 0, 0)) {
        /* The earlier event's id may be unknown here (one committed by
         * another replica after this statement's snapshot): still a
         * duplicate, whose id late_duplicates reads after the commit. */
        op->event_insert.duplicate = 1;
        val_id(r[0], 0, 1, op->event_insert.existing_id, LB_EVENT_ID_MAX);
    }
    return 0;
}

/* ---- coalesced event inserts --------------------------------------------- */

/* An array parameter in PostgreSQL's binary form (array_recv): a header
 * (dimensions, null flag, element type, length, lower bound), then each
 * element as a length (-1: NULL) and its bytes, integers in network order.
 * No text to escape and parse. */
#define OID_INT8 20
#define OID_TEXT 25
#define AB_HEAD 20

typedef struct {
    char *p;
    size_t n, cap;
    uint32_t count, oid;
    int nulls;
} abuf;

static void ab_put(abuf *b, const void *v, size_t n)
{
    if (b->n + n > b->cap) {
        while (b->n + n > b->cap)
            b->cap = b->cap ? b->cap * 2 : 256;
        b->p = lb_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, v, n);
    b->n += n;
}

static void be32(char *out, uint32_t v)
{
    for (int k = 0; k < 4; k++)
        out[k] = (char)(v >> (24 - 8 * k));
}

static void ab_init(abuf *b, uint32_t oid)
{
    memset(b, 0, sizeof(*b));
    b->oid = oid;
    char head[AB_HEAD] = {0};
    ab_put(b, head, sizeof(head)); /* filled by ab_param */
}

static void ab_len(abuf *b, int32_t len)
{
    char l[4];
    be32(l, (uint32_t)len);
    ab_put(b, l, 4);
    b->count++;
}

static void ab_text(abuf *b, const char *v)
{
    if (v == NULL) {
        ab_len(b, -1);
        b->nulls = 1;
        return;
    }
    size_t n = strlen(v);
    ab_len(b, (int32_t)n);
    ab_put(b, v, n);
}

static void ab_i64(abuf *b, int64_t v)
{
    char x[8];
    be32(x, (uint32_t)((uint64_t)v >> 32));
    be32(x + 4, (uint32_t)v);
    ab_len(b, 8);
    ab_put(b, x, 8);
}

/* Writes the header and hands the array to the call, which the batch frees
 * with its calls (calls_clear). */
static void ab_param(pg_store *s, pcall *c, abuf *b)
{
    s->scratch = grow(s->scratch, s->nscratch, &s->capscratch, sizeof(char *), 8);
    s->scratch[s->nscratch++] = b->p;
    char *h = b->p;
    size_t skip = 0;
    if (b->count == 0) { /* no dimensions: ndim 0, no dimension fields */
        skip = 8;
        h += skip;
        be32(h, 0);
        be32(h + 4, 0);
        be32(h + 8, b->oid);
    } else {
        be32(h, 1);
        be32(h + 4, b->nulls ? 1 : 0);
        be32(h + 8, b->oid);
        be32(h + 12, b->count);
        be32(h + 16, 1);
    }
    p_bytea(c, (const uint8_t *)h, b->n - skip);
}

/* The stage op's stage (build_event_insert's rule), or NULL. */
static const char *op_stage(const lb_store_op *op)
{
    return op->event_insert.event->opportunity_id ? op->event_insert.stage_id : NULL;
}

static int is_lever(const lb_store_op *op)
{
    return strcmp(op->event_insert.event->source, "lever") == 0;
}

/* An op whose event insert can share a Q_EVENT_INSERT_MANY: an event
 * insert without a stage rule or of source "lever", no platform events,
 * not the op a test fails, not set apart after its coalesced statement
 * failed. */
static int coalescable(const pg_store *s, size_t i)
{
    const lb_store_op *op = s->ops[i];
    if (op->kind != LB_STORE_EVENT_INSERT || op->nnotify > 0 || s->solo[i] > 1 || i == s->fault_op)
        return 0;
    return op_stage(op) == NULL || is_lever(op);
}

/* One Q_EVENT_INSERT_MANY for the ops [from, to) that are not skipped (all
 * coalescable), as build_event_insert would send them one by one. */
static int same_key(const lb_event_rec *a, const lb_event_rec *b)
{
    return strcmp(a->dedupe_key, b->dedupe_key) == 0 && strcmp(a->tenant_id, b->tenant_id) == 0 &&
           strcmp(a->source, b->source) == 0;
}

/* Q_EVENT_INSERT_MANY_FAST for ops [from, to): none of them set back to
 * Q_EVENT_INSERT_MANY, no pause, no key twice. */
static int group_fast(pg_store *s, size_t from, size_t to)
{
    if (mono_ms() < s->fast_after) return 0;
    for (size_t i = from; i < to; i++) {
        if (s->skip[i]) continue;
        if (s->solo[i] != 0) return 0;
        for (size_t k = from; k < i; k++)
            if (!s->skip[k] &&
                same_key(s->ops[k]->event_insert.event, s->ops[i]->event_insert.event))
                return 0;
    }
    return 1;
}

static void build_event_group(pg_store *s, size_t from, size_t to)
{
    /* $1..$26: bigint for $9, $17, $19, $20, $23, $26, else text. */
    abuf a[26];
    for (int k = 0; k < 26; k++)
        ab_init(&a[k], k == 8 || k == 16 || k == 18 || k == 19 || k == 22 || k == 25 ? OID_INT8
                                                                                     : OID_TEXT);
    int64_t now = lb_time_now_ms();
    int q = group_fast(s, from, to) ? Q_EVENT_INSERT_MANY_FAST : Q_EVENT_INSERT_MANY;
    pcall *c = call_add(s, q, (int)from);
    c->gend = to;
    int row = 0;
    for (size_t i = from; i < to; i++) {
        if (s->skip[i]) continue;
        lb_store_op *op = s->ops[i];
        const lb_event_rec *e = op->event_insert.event;
        s->grp[i] = s->ncalls - 1;
        s->grow[i] = row++;
        ab_text(&a[0], e->id);
        ab_text(&a[1], e->tenant_id);
        ab_text(&a[2], e->source);
        ab_text(&a[3], e->type);
        ab_text(&a[4], e->dedupe_key);
        ab_text(&a[5], e->status);
        ab_text(&a[6], e->opportunity_id);
        ab_text(&a[7], e->payload);
        ab_i64(&a[8], e->received_at > 0 ? e->received_at : now);
        ab_text(&a[9], op->event_insert.hook_id);
        ab_text(&a[24], op_stage(op));
        ab_i64(&a[25], op->event_insert.stage_window_ms);
        for (size_t k = 0; k < op->event_insert.njobs; k++) {
            const lb_job_rec *j = &op->event_insert.jobs[k];
            ab_text(&a[10], j->id);
            ab_text(&a[11], j->tenant_id);
            ab_text(&a[12], j->event_id);
            ab_text(&a[13], j->workflow_id);
            ab_text(&a[14], j->action);
            ab_text(&a[15], j->opportunity_id);
            ab_i64(&a[16], j->seq);
            ab_text(&a[17], lb_job_status_name(j->status));
            ab_i64(&a[18], j->attempts);
            ab_i64(&a[19], j->next_run_at);
            ab_text(&a[20], j->last_error);
            ab_text(&a[21], j->steps);
            ab_i64(&a[22], j->created_at > 0 ? j->created_at : now);
            ab_text(&a[23], e->id);
        }
    }
    for (int k = 0; k < 26; k++) /* $1..$26 */
        ab_param(s, c, &a[k]);
}

/* Op i's row of its Q_EVENT_INSERT_MANY; the ops before it are parsed. */
static int parse_event_row(pg_store *s, size_t i)
{
    lb_store_op *op = s->ops[i];
    const PGresult *r = s->calls[s->grp[i]].res;
    int row = s->grow[i];
    if (PQntuples(r) <= row) return LB_EIO;
    op->event_insert.duplicate = 0;
    op->event_insert.existing_id[0] = '\0';
    if (val_bool(r, row, 0)) return 0;
    op->event_insert.duplicate = 1;
    val_id(r, row, 1, op->event_insert.existing_id, LB_EVENT_ID_MAX);
    if (op->event_insert.existing_id[0] != '\0') return 0;
    /* Not in the snapshot: an event of this statement (an earlier op of
     * the same key), or one another replica committed meanwhile (then,
     * as parse_event_insert, a duplicate whose id late_duplicates reads). */
    const lb_event_rec *e = op->event_insert.event;
    for (size_t k = s->calls[s->grp[i]].op; k < i; k++) {
        const lb_store_op *o = s->ops[k];
        const lb_event_rec *x = o->event_insert.event;
        if (s->skip[k] || s->grp[k] != s->grp[i] || o->status != 0 || o->event_insert.duplicate)
            continue;
        if (same_key(x, e)) {
            snprintf(op->event_insert.existing_id, sizeof(op->event_insert.existing_id), "%s",
                     x->id);
            break;
        }
    }
    return 0;
}

static void build_workflow_put(pg_store *s, lb_store_op *op, int i)
{
    const lb_workflow_rec *w = op->workflow_put.rec;
    int64_t now = w->updated_at > 0 ? w->updated_at : lb_time_now_ms();
    pcall *c = call_add(s, Q_WF_PUT, i);
    p_text(c, w->id);
    p_text(c, w->tenant_id);
    p_text(c, w->body);
    p_text(c, w->enabled ? "true" : "false");
    p_i64(c, w->created_at > 0 ? w->created_at : now);
    p_i64(c, now);
}

static int parse_workflow_put(pg_store *s, lb_store_op *op, PGresult **r)
{
    if (PQntuples(r[0]) != 1) return LB_ECONFLICT; /* the id is another tenant's */
    op->workflow_put.created_at = val_i64(r[0], 0, 0);
    op->workflow_put.updated_at = val_i64(r[0], 0, 1);
    op->workflow_put.created = val_bool(r[0], 0, 2);
    return 0;
}

static void build_workflow_delete(pg_store *s, lb_store_op *op, int i)
{
    pcall *c = call_add(s, Q_WF_DELETE, i);
    p_text(c, op->workflow_delete.id);
    p_text(c, op->workflow_delete.tenant_id);
}

static void build_workflow_load_all(pg_store *s, lb_store_op *op, int i)
{
    p_text(call_add(s, Q_WF_ALL, i), op->workflow_load_all.tenant_id);
}

static int parse_workflow_load_all(pg_store *s, lb_store_op *op, PGresult **r)
{
    size_t n = (size_t)PQntuples(r[0]);
    op->workflow_load_all.recs = n > 0 ? lb_calloc(n, sizeof(lb_workflow_rec)) : NULL;
    op->workflow_load_all.count = n;
    for (size_t k = 0; k < n; k++) {
        lb_workflow_rec *w = &op->workflow_load_all.recs[k];
        int row = (int)k;
        val_id(r[0], row, 0, w->id, LB_WORKFLOW_ID_MAX);
        val_id(r[0], row, 1, w->tenant_id, LB_TENANT_ID_MAX);
        w->body = val_dup(r[0], row, 2);
        w->enabled = val_bool(r[0], row, 3);
        w->created_at = val_i64(r[0], row, 4);
        w->updated_at = val_i64(r[0], row, 5);
    }
    return 0;
}

static void event_row_read(const PGresult *r, int k, lb_event_row *e)
{
    memset(e, 0, sizeof(*e));
    val_id(r, k, 0, e->id, LB_EVENT_ID_MAX);
    val_id(r, k, 1, e->tenant_id, LB_TENANT_ID_MAX);
    e->source = val_dup(r, k, 2);
    e->type = val_dup(r, k, 3);
    e->status = val_dup(r, k, 4);
    e->opportunity_id = val_dup_or_null(r, k, 5);
    e->received_at = val_i64(r, k, 6);
    val_text_array(r, k, 7, &e->jobs, &e->njobs);
}

static void build_event_list(pg_store *s, lb_store_op *op, int i)
{
    int before = op->event_list.before_at > 0;
    pcall *c = call_add(s, before ? Q_EVENT_LIST_BEFORE : Q_EVENT_LIST, i);
    p_text(c, op->event_list.tenant_id);
    p_i64(c, (int64_t)op->event_list.limit + 1);
    if (before) {
        p_i64(c, op->event_list.before_at);
        p_text(c, op->event_list.before_id);
    }
}

static int parse_event_list(pg_store *s, lb_store_op *op, PGresult **r)
{
    size_t n = (size_t)PQntuples(r[0]);
    op->event_list.more = n > op->event_list.limit;
    if (n > op->event_list.limit) n = op->event_list.limit;
    op->event_list.rows = lb_calloc(op->event_list.limit + 1, sizeof(lb_event_row));
    for (size_t k = 0; k < n; k++)
        event_row_read(r[0], (int)k, &op->event_list.rows[k]);
    op->event_list.count = n;
    return 0;
}

static void build_event_get(pg_store *s, lb_store_op *op, int i)
{
    pcall *c = call_add(s, Q_EVENT_ONE, i);
    p_text(c, op->event_get.tenant_id);
    p_text(c, op->event_get.id);
}

static int parse_event_get(pg_store *s, lb_store_op *op, PGresult **r)
{
    if (PQntuples(r[0]) == 0) return LB_ENOTFOUND;
    event_row_read(r[0], 0, &op->event_get.row);
    op->event_get.row.payload = val_dup_or_null(r[0], 0, 8);
    return 0;
}

static void build_job_list(pg_store *s, lb_store_op *op, int i)
{
    int before = op->job_list.before_at > 0;
    int by_status = op->job_list.status >= 0;
    int q = by_status ? (before ? Q_JOB_LIST_STATUS_BEFORE : Q_JOB_LIST_STATUS)
                      : (before ? Q_JOB_LIST_BEFORE : Q_JOB_LIST);
    pcall *c = call_add(s, q, i);
    p_text(c, op->job_list.tenant_id);
    p_i64(c, (int64_t)op->job_list.limit + 1);
    if (before) {
        p_i64(c, op->job_list.before_at);
        p_text(c, op->job_list.before_id);
    }
    if (by_status) p_text(c, lb_job_status_name(op->job_list.status)); /* $3, or $5 */
}

static int parse_job_list(pg_store *s, lb_store_op *op, PGresult **r)
{
    size_t n = (size_t)PQntuples(r[0]);
    op->job_list.more = n > op->job_list.limit;
    if (n > op->job_list.limit) n = op->job_list.limit;
    op->job_list.recs = lb_calloc(op->job_list.limit + 1, sizeof(lb_job_rec));
    for (size_t k = 0; k < n; k++)
        job_read(r[0], (int)k, &op->job_list.recs[k]);
    op->job_list.count = n;
    return 0;
}

static void build_job_get(pg_store *s, lb_store_op *op, int i)
{
    pcall *c = call_add(s, Q_JOB_ONE, i);
    p_text(c, op->job_get.tenant_id);
    p_text(c, op->job_get.id);
}

static int parse_job_get(pg_store *s, lb_store_op *op, PGresult **r)
{
    if (PQntuples(r[0]) == 0) return LB_ENOTFOUND;
    job_read(r[0], 0, &op->job_get.rec);
    return 0;
}

static void inv_get_params(pcall *c, const char *tenant, const char *opp, const char *assessment)
{
    p_text(c, tenant);
    p_text(c, opp);
    p_text(c, assessment);
}

static int inv_read(const PGresult *r, const char *tenant, lb_invitation_rec *out)
{
    if (PQntuples(r) == 0) return LB_ENOTFOUND;
    memset(out, 0, sizeof(*out));
    snprintf(out->tenant_id, sizeof(out->tenant_id), "%s", tenant);
    out->opportunity_id = val_dup(r, 0, 0);
    out->assessment = val_dup(r, 0, 1);
    out->job_id = val_dup_or_null(r, 0, 2);
    out->invitation_id = val_dup_or_null(r, 0, 3);
    out->url = val_dup_or_null(r, 0, 4);
    out->note_id = val_dup_or_null(r, 0, 5);
    out->created_at = val_i64(r, 0, 6);
    out->stage_id = val_dup_or_null(r, 0, 7);
    return 0;
}

static void build_invitation_claim(pg_store *s, lb_store_op *op, int i)
{
    const lb_invitation_rec *v = op->invitation_claim.rec;
    int fenced = op->invitation_claim.lease_node != NULL;
    pcall *c = call_add(s, fenced ? Q_INV_INSERT_FENCED : Q_INV_INSERT, i);
    inv_get_params(c, v->tenant_id, v->opportunity_id, v->assessment);
    p_text(c, v->job_id);
    p_i64(c, lb_time_now_ms());
    if (fenced) {
        p_text(c, op->invitation_claim.lease_node);
        p_i64(c, op->invitation_claim.lease_epoch);
    }
    inv_get_params(call_add(s, Q_INV_GET, i), v->tenant_id, v->opportunity_id, v->assessment);
}

static int parse_invitation_claim(pg_store *s, lb_store_op *op, PGresult **r)
{
    const lb_invitation_rec *v = op->invitation_claim.rec;
    lb_invitation_rec *ex = &op->invitation_claim.existing;
    int st = inv_read(r[1], v->tenant_id, ex);
    if (st != 0) return LB_EIO; /* inserted or there: it must be readable */
    op->invitation_claim.owned = ex->job_id != NULL && strcmp(ex->job_id, v->job_id) == 0;
    return 0;
}

static void build_invitation_update(pg_store *s, lb_store_op *op, int i)
{
    const lb_invitation_rec *v = op->invitation_update.rec;
    int fenced = op->invitation_update.lease_node != NULL;
    pcall *c = call_add(s, fenced ? Q_INV_UPDATE_FENCED : Q_INV_UPDATE, i);
    inv_get_params(c, v->tenant_id, v->opportunity_id, v->assessment);
    p_text(c, v->invitation_id);
    p_text(c, v->url);
    p_text(c, v->note_id);
    p_text(c, v->stage_id);
    if (fenced) {
        p_text(c, op->invitation_update.lease_node);
        p_i64(c, op->invitation_update.lease_epoch);
    }
}

static int parse_invitation_update(pg_store *s, lb_store_op *op, PGresult **r)
{
    if (op->invitation_update.lease_node == NULL) return parse_updated(s, op, r);
    return PQntuples(r[0]) == 1 && val_int(r[0], 0, 0) > 0 ? 0 : LB_ENOTFOUND;
}

static void build_invitation_get(pg_store *s, lb_store_op *op, int i)
{
    inv_get_params(call_add(s, Q_INV_GET, i), op->invitation_get.tenant_id,
                   op->invitation_get.opportunity_id, op->invitation_get.assessment);
}

static int parse_invitation_get(pg_store *s, lb_store_op *op, PGresult **r)
{
    return inv_read(r[0], op->invitation_get.tenant_id, &op->invitation_get.rec);
}

static void build_job_failed_counts(pg_store *s, lb_store_op *op, int i)
{
    call_add(s, Q_JOB_FAILED_COUNTS, i);
}

static int parse_job_failed_counts(pg_store *s, lb_store_op *op, PGresult **r)
{
    size_t n = (size_t)PQntuples(r[0]);
    if (n == 0) return 0;
    op->job_failed_counts.tenants = lb_calloc(n, LB_TENANT_ID_MAX + 1);
    op->job_failed_counts.counts = lb_calloc(n, sizeof(size_t));
    for (size_t k = 0; k < n; k++) {
        val_id(r[0], (int)k, 0, op->job_failed_counts.tenants[k], LB_TENANT_ID_MAX);
        op->job_failed_counts.counts[k] = (size_t)val_i64(r[0], (int)k, 1);
    }
    op->job_failed_counts.n = n;
    return 0;
}

/* Finished jobs first, so that their events are free to go in the same op;
 * Lever deliveries stay while inside the dedupe window (their keys are the
 * unique index's rows); a result's key moves to event_keys as its event
 * goes, so posting it again still finds the duplicate. */
static void build_prune(pg_store *s, lb_store_op *op, int i)
{
    int64_t before = op->prune.before;
    int64_t lever_before = lb_time_now_ms() - s->dedupe_ms;
    if (lever_before > before) lever_before = before;
    pcall *c = call_add(s, Q_PRUNE_JOBS, i);
    p_i64(c, before);
    p_i64(c, op->prune.limit);
    c = call_add(s, Q_PRUNE_EVENTS, i);
    p_i64(c, before);
    p_i64(c, lever_before);
    p_i64(c, op->prune.limit);
}

static int parse_prune(pg_store *s, lb_store_op *op, PGresult **r)
{
    op->prune.jobs = affected(r[0]);
    op->prune.events = affected(r[1]);
    return 0;
}

/* The console's hourly counts (state/stats.h). */
static void build_stats_put(pg_store *s, lb_store_op *op, int i)
{
    for (size_t k = 0; k < op->stats_put.count; k++) {
        const lb_stats_rec *r = &op->stats_put.recs[k];
        pcall *c = call_add(s, Q_STATS_PUT, i);
        p_text(c, r->tenant_id);
        p_i64(c, r->hour);
        for (int n = 0; n < LB_STATS_KINDS; n++)
            p_i64(c, r->count[n]);
    }
    p_i64(call_add(s, Q_STATS_FORGET, i), op->stats_put.forget_before);
}

static void build_stats_load(pg_store *s, lb_store_op *op, int i)
{
    p_i64(call_add(s, Q_STATS_LOAD, i), op->stats_load.since);
}

static int parse_stats_load(pg_store *s, lb_store_op *op, PGresult **r)
{
    size_t n = (size_t)PQntuples(r[0]);
    op->stats_load.recs = n > 0 ? lb_calloc(n, sizeof(lb_stats_rec)) : NULL;
    op->stats_load.count = n;
    for (size_t k = 0; k < n; k++) {
        lb_stats_rec *rec = &op->stats_load.recs[k];
        val_id(r[0], (int)k, 0, rec->tenant_id, LB_TENANT_ID_MAX);
        rec->hour = val_i64(r[0], (int)k, 1);
        for (int c = 0; c < LB_STATS_KINDS; c++) {
            int64_t v = val_i64(r[0], (int)k, 2 + c);
            rec->count[c] = v < 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
        }
    }
    return 0;
}

static void build_reconciled_counts(pg_store *s, lb_store_op *op, int i)
{
    p_i64(call_add(s, Q_RECONCILED_COUNTS, i), op->reconciled_counts.since);
}

static int parse_reconciled_counts(pg_store *s, lb_store_op *op, PGresult **r)
{
    size_t n = (size_t)PQntuples(r[0]);
    if (n > LB_STORE_HOUR_COUNTS_MAX) return LB_ETOOBIG;
    op->reconciled_counts.recs = n > 0 ? lb_calloc(n, sizeof(lb_hour_count_rec)) : NULL;
    op->reconciled_counts.count = n;
    for (size_t k = 0; k < n; k++) {
        lb_hour_count_rec *rec = &op->reconciled_counts.recs[k];
        val_id(r[0], (int)k, 0, rec->tenant_id, LB_TENANT_ID_MAX);
        rec->hour = val_i64(r[0], (int)k, 1);
        int64_t v = val_i64(r[0], (int)k, 2);
        rec->count = v < 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    }
    return 0;
}

static void build_node_beat(pg_store *s, lb_store_op *op, int i)
{
    if (op->node_beat.leave) {
        p_text(call_add(s, Q_NODE_LEAVE, i), op->node_beat.node);
        return;
    }
    pcall *c = call_add(s, Q_NODE_BEAT, i);
    p_text(c, op->node_beat.node);
    p_text(c, op->node_beat.advertise_url);
    if (op->node_beat.forget_ms > 0) {
        c = call_add(s, Q_NODE_FORGET, i);
        p_text(c, op->node_beat.node);
        p_i64(c, op->node_beat.forget_ms);
    }
}

static void build_cluster_read(pg_store *s, lb_store_op *op, int i)
{
    p_i64(call_add(s, Q_NODES, i), op->cluster_read.live_ms);
    call_add(s, Q_LEASES, i);
    call_add(s, Q_DB_NOW, i);
}

static int parse_cluster_read(pg_store *s, lb_store_op *op, PGresult **r)
{
    int n = PQntuples(r[0]), m = PQntuples(r[1]);
    if ((size_t)n > LB_STORE_NODES_MAX || (size_t)m > LB_STORE_TENANTS_MAX) return LB_ETOOBIG;
    if (PQntuples(r[2]) != 1) return LB_EIO;
    lb_node_rec *nodes = n > 0 ? lb_calloc((size_t)n, sizeof(*nodes)) : NULL;
    for (int k = 0; k < n; k++) {
        val_id(r[0], k, 0, nodes[k].id, LB_NODE_ID_MAX);
        nodes[k].advertise_url = val_dup(r[0], k, 1);
        nodes[k].last_seen_at = val_i64(r[0], k, 2);
        nodes[k].live = val_bool(r[0], k, 3);
    }
    lb_lease_rec *leases = m > 0 ? lb_calloc((size_t)m, sizeof(*leases)) : NULL;
    for (int k = 0; k < m; k++) {
        val_id(r[1], k, 0, leases[k].tenant_id, LB_TENANT_ID_MAX);
        val_id(r[1], k, 1, leases[k].node, LB_NODE_ID_MAX);
        leases[k].epoch = val_i64(r[1], k, 2);
        leases[k].expires_at = val_i64(r[1], k, 3);
        leases[k].expired = val_bool(r[1], k, 4);
    }
    op->cluster_read.nodes = nodes;
    op->cluster_read.nnodes = (size_t)n;
    op->cluster_read.leases = leases;
    op->cluster_read.nleases = (size_t)m;
    op->cluster_read.now = val_i64(r[2], 0, 0);
    return 0;
}

static void build_lease_write(pg_store *s, lb_store_op *op, int i)
{
    for (size_t k = 0; k < op->lease_write.count; k++) {
        const lb_lease_item *it = &op->lease_write.items[k];
        int q = it->action == LB_LEASE_RENEW     ? Q_LEASE_RENEW
                : it->action == LB_LEASE_RELEASE ? Q_LEASE_RELEASE
                : it->epoch == 0                 ? Q_LEASE_TAKE_NEW
                                                 : Q_LEASE_TAKE;
        pcall *c = call_add(s, q, i);
        p_text(c, it->tenant_id);
        p_text(c, op->lease_write.node);
        p_i64(c, op->lease_write.ttl_ms);
        if (q != Q_LEASE_TAKE_NEW) p_i64(c, it->epoch);
    }
}

static int parse_lease_write(pg_store *s, lb_store_op *op, PGresult **r)
{
    for (size_t k = 0; k < op->lease_write.count; k++) {
        lb_lease_item *it = &op->lease_write.items[k];
        it->ok = PQntuples(r[k]) == 1;
        if (it->ok) {
            it->epoch = val_i64(r[k], 0, 0);
            it->expires_at = val_i64(r[k], 0, 1);
        }
    }
    return 0;
}

/* ---- backfills ------------------------------------------------------------ */

/* A text[] literal of v[0..n) ({"a","b"}), kept until the batch's calls
 * are cleared. */
static const char *text_array(pg_store *s, const char *const *v, size_t n, size_t stride)
{
    size_t len = 3;
    for (size_t i = 0; i < n; i++) {
        const char *x = *(const char *const *)((const char *)v + i * stride);
        len += 3 + 2 * strlen(x);
    }
    char *out = lb_malloc(len), *p = out;
    *p++ = '{';
    for (size_t i = 0; i < n; i++) {
        const char *x = *(const char *const *)((const char *)v + i * stride);
        if (i > 0) *p++ = ',';
        *p++ = '"';
        for (; *x; x++) {
            if (*x == '"' || *x == '\\') *p++ = '\\';
            *p++ = *x;
        }
        *p++ = '"';
    }
    *p++ = '}';
    *p = '\0';
    s->scratch = grow(s->scratch, s->nscratch, &s->capscratch, sizeof(char *), 8);
    s->scratch[s->nscratch++] = out;
    return out;
}

static void build_backfill_put(pg_store *s, lb_store_op *op, int i)
{
    const lb_backfill_rec *r = op->backfill_put.rec;
    pcall *c = call_add(s, Q_BF_INSERT, i);
    p_text(c, r->id);
    p_text(c, r->tenant_id);
    p_text(c, r->workflow_id);
    p_text(c, r->status);
    p_i64(c, r->created_at > 0 ? r->created_at : lb_time_now_ms());
}

static void build_backfill_page(pg_store *s, lb_store_op *op, int i)
{
    pcall *c = call_add(s, Q_BF_GUARD, i);
    p_text(c, op->backfill_page.id);
    p_text(c, op->backfill_page.tenant_id);
    size_t n = op->backfill_page.nevents;
    const char **ids = lb_calloc(n ? n : 1, sizeof(*ids));
    for (size_t k = 0; k < n; k++) {
        build_event_insert(s, &op->backfill_page.events[k], i);
        ids[k] = op->backfill_page.events[k].event_insert.event->id;
    }
    c = call_add(s, Q_BF_PAGE, i);
    p_text(c, op->backfill_page.id);
    p_text(c, op->backfill_page.tenant_id);
    p_text(c, op->backfill_page.done ? NULL : op->backfill_page.offset);
    p_text(c, op->backfill_page.done ? "done" : "running");
    p_i64(c, (int64_t)n);
    p_i64(c, lb_time_now_ms());
    p_text(c, text_array(s, ids, n, sizeof(*ids)));
    p_text(c, text_array(s, (const char *const *)op->backfill_page.assessments,
                         op->backfill_page.nassessments, sizeof(const char *)));
    lb_free(ids);
}

static int parse_backfill_page(pg_store *s, lb_store_op *op, PGresult **r)
{
    size_t k = 1; /* r[0]: the guard */
    for (size_t e = 0; e < op->backfill_page.nevents; e++) {
        lb_store_op *ev = &op->backfill_page.events[e];
        ev->status = parse_event_insert(s, ev, &r[k]);
        if (ev->status != 0) return ev->status;
        k += 1 + ev->event_insert.njobs;
    }
    if (PQntuples(r[k]) != 1) return LB_ENOTFOUND;
    op->backfill_page.listed = val_i64(r[k], 0, 0);
    op->backfill_page.queued = val_i64(r[k], 0, 1);
    op->backfill_page.skipped = val_i64(r[k], 0, 2);
    return 0;
}

static void build_backfill_finish(pg_store *s, lb_store_op *op, int i)
{
    pcall *c = call_add(s, Q_BF_FINISH, i);
    p_text(c, op->backfill_finish.id);
    p_text(c, op->backfill_finish.tenant_id);
    p_text(c, op->backfill_finish.status);
    p_text(c, op->backfill_finish.last_error);
    p_i64(c, lb_time_now_ms());
}

static int parse_backfill_finish(pg_store *s, lb_store_op *op, PGresult **r)
{
    op->backfill_finish.changed = affected(r[0]) > 0;
    return 0;
}

static void backfill_read(const PGresult *r, int k, lb_backfill_rec *b)
{
    memset(b, 0, sizeof(*b));
    val_id(r, k, 0, b->id, LB_BACKFILL_ID_MAX);
    val_id(r, k, 1, b->tenant_id, LB_TENANT_ID_MAX);
    val_id(r, k, 2, b->workflow_id, LB_WORKFLOW_ID_MAX);
    val_id(r, k, 3, b->status, LB_BACKFILL_STATUS_MAX - 1);
    b->offset = val_dup_or_null(r, k, 4);
    b->listed = val_i64(r, k, 5);
    b->queued = val_i64(r, k, 6);
    b->skipped = val_i64(r, k, 7);
    b->last_error = val_dup_or_null(r, k, 8);
    b->created_at = val_i64(r, k, 9);
    b->updated_at = val_i64(r, k, 10);
}

static void build_backfill_get(pg_store *s, lb_store_op *op, int i)
{
    pcall *c = call_add(s, Q_BF_ONE, i);
    p_text(c, op->backfill_get.tenant_id);
    p_text(c, op->backfill_get.id);
}

static int parse_backfill_get(pg_store *s, lb_store_op *op, PGresult **r)
{
    if (PQntuples(r[0]) != 1) return LB_ENOTFOUND;
    backfill_read(r[0], 0, &op->backfill_get.rec);
    return 0;
}

static void build_backfill_list(pg_store *s, lb_store_op *op, int i)
{
    if (op->backfill_list.tenant_id[0] == '\0') {
        call_add(s, Q_BF_RUNNING, i);
        return;
    }
    pcall *c = call_add(s, Q_BF_LIST, i);
    p_text(c, op->backfill_list.tenant_id);
    p_i64(c, (int64_t)op->backfill_list.limit);
}

static int parse_backfill_list(pg_store *s, lb_store_op *op, PGresult **r)
{
    int n = PQntuples(r[0]);
    op->backfill_list.recs = n > 0 ? lb_calloc((size_t)n, sizeof(lb_backfill_rec)) : NULL;
    for (int k = 0; k < n; k++)
        backfill_read(r[0], k, &op->backfill_list.recs[k]);
    op->backfill_list.count = (size_t)n;
    return 0;
}

typedef struct {
    void (*build)(pg_store *s, lb_store_op *op, int i);
    int (*parse)(pg_store *s, lb_store_op *op, PGresult **r);
} kind_impl;

static const kind_impl kinds[LB_STORE_OP_KIND_END] = {
    [LB_STORE_TENANT_UPSERT] = {build_tenant_upsert, parse_tenant_upsert},
    [LB_STORE_TENANT_DELETE] = {build_tenant_delete, parse_deleted},
    [LB_STORE_TENANT_LOAD_ALL] = {build_tenant_load_all, parse_tenant_load_all},
    [LB_STORE_META_GET] = {build_meta_get, parse_meta_get},
    [LB_STORE_META_PUT] = {build_meta_put, parse_ok},
    [LB_STORE_JOB_INSERT] = {build_job_insert, parse_ok},
    [LB_STORE_JOB_UPDATE] = {build_job_update, parse_job_update},
    [LB_STORE_JOB_LOAD_ACTIVE] = {build_job_load_active, parse_job_load_active},
    [LB_STORE_CONN_PUT] = {build_conn_put, parse_ok},
    [LB_STORE_CONN_DELETE] = {build_conn_delete, parse_ok},
    [LB_STORE_CONN_LOAD_ALL] = {build_conn_load_all, parse_conn_load_all},
    [LB_STORE_HOOK_PUT] = {build_hook_put, parse_ok},
    [LB_STORE_EVENT_INSERT] = {build_event_insert, parse_event_insert},
    [LB_STORE_WORKFLOW_PUT] = {build_workflow_put, parse_workflow_put},
    [LB_STORE_WORKFLOW_DELETE] = {build_workflow_delete, parse_deleted},
    [LB_STORE_WORKFLOW_LOAD_ALL] = {build_workflow_load_all, parse_workflow_load_all},
    [LB_STORE_EVENT_LIST] = {build_event_list, parse_event_list},
    [LB_STORE_EVENT_GET] = {build_event_get, parse_event_get},
    [LB_STORE_JOB_LIST] = {build_job_list, parse_job_list},
    [LB_STORE_JOB_GET] = {build_job_get, parse_job_get},
    [LB_STORE_INVITATION_CLAIM] = {build_invitation_claim, parse_invitation_claim},
    [LB_STORE_INVITATION_UPDATE] = {build_invitation_update, parse_invitation_update},
    [LB_STORE_INVITATION_GET] = {build_invitation_get, parse_invitation_get},
    [LB_STORE_JOB_FAILED_COUNTS] = {build_job_failed_counts, parse_job_failed_counts},
    [LB_STORE_PRUNE] = {build_prune, parse_prune},
    [LB_STORE_STATS_PUT] = {build_stats_put, parse_ok},
    [LB_STORE_STATS_LOAD] = {build_stats_load, parse_stats_load},
    [LB_STORE_RECONCILED_COUNTS] = {build_reconciled_counts, parse_reconciled_counts},
    [LB_STORE_NODE_BEAT] = {build_node_beat, parse_ok},
    [LB_STORE_CLUSTER_READ] = {build_cluster_read, parse_cluster_read},
    [LB_STORE_LEASE_WRITE] = {build_lease_write, parse_lease_write},
    [LB_STORE_BACKFILL_PUT] = {build_backfill_put, parse_ok},
    [LB_STORE_BACKFILL_PAGE] = {build_backfill_page, parse_backfill_page},
    [LB_STORE_BACKFILL_FINISH] = {build_backfill_finish, parse_backfill_finish},
    [LB_STORE_BACKFILL_GET] = {build_backfill_get, parse_backfill_get},
    [LB_STORE_BACKFILL_LIST] = {build_backfill_list, parse_backfill_list},
};

/* ---- the connection (store thread; the opening thread at open) ----------- */

static void notice_cb(void *arg, const char *msg)
{
    lb_debug(MOD, "postgres: %.*s", (int)strcspn(msg, "\n"), msg);
}

static int exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    PQclear(r);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* Opens a connection: the project's defaults first, then the user's URL or
 * conninfo (libpq keeps the last value of a keyword: theirs win). */
static PGconn *pg_connect(const char *conninfo, char *err, size_t errlen)
{
    static const char *const kw[] = {
        "connect_timeout",  "keepalives",       "keepalives_idle", "keepalives_interval",
        "keepalives_count", "application_name", "dbname",          NULL};
    const char *val[] = {CONNECT_TIMEOUT_S, "1", "10", "5", "3", "leverbridge", conninfo, NULL};
    PGconn *c = PQconnectdbParams(kw, val, 1);
    if (c == NULL) {
        lb_error(MOD, "out of memory (libpq)");
        abort();
    }
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", PQerrorMessage(c));
        lb_store__one_line(err);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, notice_cb, NULL);
    /* plan_cache_mode: see plans_check(); custom plans until the tables
     * have statistics. */
    if (!exec_ok(c, "SELECT set_config('statement_timeout', '" STATEMENT_TIMEOUT "', false)"
                    " WHERE current_setting('statement_timeout') IN ('0', '0ms')") ||
        !exec_ok(c, "SET plan_cache_mode = force_custom_plan")) {
        snprintf(err, errlen, "PostgreSQL: session settings: %s", PQerrorMessage(c));
        lb_store__one_line(err);
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Prepares every statement on a new connection, in one pipeline. */
static int prepare_all(PGconn *c, char *err, size_t errlen)
{
    if (PQenterPipelineMode(c) != 1) goto fail;
    for (int q = 0; q < Q_COUNT; q++) {
        char name[16];
        snprintf(name, sizeof(name), "lb%d", q);
        if (PQsendPrepare(c, name, q_sql[q], 0, NULL) != 1) goto fail;
    }
    if (PQpipelineSync(c) != 1) goto fail;
    int bad = -1;
    for (int q = 0; q < Q_COUNT; q++) {
        PGresult *r = PQgetResult(c);
        if (r == NULL) goto fail;
        if (PQresultStatus(r) != PGRES_COMMAND_OK && bad < 0) {
            bad = q;
            snprintf(err, errlen, "PostgreSQL: preparing statement %d: %s", q,
                     PQresultErrorMessage(r));
            lb_store__one_line(err);
        }
        PQclear(r);
        while ((r = PQgetResult(c)) != NULL)
            PQclear(r);
    }
    PGresult *r = PQgetResult(c);
    int synced = r != NULL && PQresultStatus(r) == PGRES_PIPELINE_SYNC;
    PQclear(r);
    if (!synced || PQexitPipelineMode(c) != 1) goto fail;
    return bad < 0 ? 0 : LB_EIO;
fail:
    snprintf(err, errlen, "PostgreSQL: preparing statements: %s", PQerrorMessage(c));
    lb_store__one_line(err);
    return LB_EIO;
}

static void disconnect(pg_store *s)
{
    if (s->conn != NULL) PQfinish(s->conn);
    s->conn = NULL;
}

/* Generic or custom plans. A prepared statement's generic plan, made on
 * tables without statistics (a new database, until autoanalyze), can pick
 * the wrong index: the event insert's duplicate lookup went through
 * events_source_received and read every Lever event (ingest fell from
 * 5 ms to 25 ms a batch within 9,000 events). So a session starts with
 * plan_cache_mode = force_custom_plan (each execution planned with its
 * values: right, but planning cost about doubles a batch's time) and
 * switches to generic plans once `events` has been analyzed with
 * GENERIC_PLANS_MIN_ROWS rows, checked every PLANS_CHECK_MS. Store thread,
 * connected, outside pipeline mode. */
#define GENERIC_PLANS_MIN_ROWS 10000
#define PLANS_CHECK_MS 2000

static void plans_check(pg_store *s)
{
    int64_t now = mono_ms();
    if (s->generic_plans || now < s->plans_check_at) return;
    s->plans_check_at = now + PLANS_CHECK_MS;
    PGresult *r = PQexec(s->conn, "SELECT reltuples FROM pg_class WHERE oid = 'events'::regclass");
    double rows = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
                      ? strtod(PQgetvalue(r, 0, 0), NULL)
                      : 0;
    PQclear(r);
    if (rows < GENERIC_PLANS_MIN_ROWS) return;
    if (exec_ok(s->conn, "SET plan_cache_mode = auto")) {
        s->generic_plans = 1;
        lb_debug(MOD, "events analyzed (%.0f rows): generic plans from now on", rows);
    }
}

/* The settings that matter, said once a connection is made at start. */
static void warn_settings(PGconn *c)
{
    PGresult *sc = PQexec(c, "SHOW synchronous_commit");
    if (PQresultStatus(sc) == PGRES_TUPLES_OK && strcmp(PQgetvalue(sc, 0, 0), "off") == 0)
        lb_warn(MOD, "synchronous_commit is off: a delivery answered 2xx can be lost if "
                     "PostgreSQL crashes (docs/running.md)");
    PQclear(sc);
}

/* The first connection of a store opened waiting for its database: the
 * migrations, which open would have run. 0; else the database answered
 * with a schema newer than this binary (the store is unusable, and the
 * loop is told), or a step failed (no privilege, no schema yet) or the
 * connection broke meanwhile: tried again on the backoff, as a connection
 * that failed. */
static int first_contact(pg_store *s, PGconn *c, char *err, size_t errlen)
{
    int from = 0, to = 0;
    int rc = lb_store_pg_migrate(c, &from, &to, err, errlen);
    if (rc != 0) {
        if (rc != LB_EINVAL || PQstatus(c) != CONNECTION_OK) {
            if (!s->migrate_logged) lb_error(MOD, "%s; trying again", err);
            s->migrate_logged = 1;
            return rc;
        }
        lb_error(MOD, "%s", err);
        s->unusable = 1;
        s->news = rc;
        lb_free(s->news_err);
        s->news_err = lb_strdup(err);
        return rc;
    }
    const char *host = PQhost(c);
    lb_info(MOD, "reached postgres database %s on %s (schema version %d%s)", PQdb(c),
            host ? host : "?", to, from != to ? ", migrated just now" : "");
    warn_settings(c);
    s->migrated = 1;
    s->news = 1;
    s->lost_logged = 0; /* "reached" said it */
    return 0;
}

/* Moves what the loop must learn of the first contact into b. */
static void take_news(pg_store *s, lb_store_batch *b)
{
    if (s->news == 0) return;
    b->reached = s->news;
    b->reached_err = s->news_err;
    s->news = 0;
    s->news_err = NULL;
}

/* Connects when disconnected and the backoff allows; 1 when connected. */
static int ensure_conn(pg_store *s)
{
    if (s->conn != NULL && PQstatus(s->conn) == CONNECTION_OK) return 1;
    if (s->conn != NULL) disconnect(s);
    if (s->unusable) return 0;
    int64_t now = mono_ms();
    if (now < s->retry_at) return 0;
    char err[512];
    PGconn *c = pg_connect(s->conninfo, err, sizeof(err));
    if (c != NULL && !s->migrated && first_contact(s, c, err, sizeof(err)) != 0) {
        PQfinish(c);
        c = NULL;
        if (s->unusable) return 0;
    }
    if (c != NULL && prepare_all(c, err, sizeof(err)) != 0) {
        PQfinish(c);
        c = NULL;
    }
    if (c == NULL) {
        s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
        if (s->backoff_ms > BACKOFF_MAX_MS) s->backoff_ms = BACKOFF_MAX_MS;
        s->retry_at = mono_ms() + s->backoff_ms;
        if (!s->lost_logged)
            lb_error(MOD, "%s; retrying every %d ms at most", err, BACKOFF_MAX_MS);
        else
            lb_debug(MOD, "%s", err);
        s->lost_logged = 1;
        return 0;
    }
    if (s->lost_logged) lb_info(MOD, "connected to PostgreSQL again");
    s->conn = c;
    atomic_store(&s->own_pid, PQbackendPID(c));
    s->generic_plans = 0; /* pg_connect set force_custom_plan */
    s->plans_check_at = 0;
    s->backoff_ms = 0;
    s->retry_at = 0;
    s->lost_logged = 0;
    return 1;
}

/* The connection broke: forget it; the next attempt comes after the first
 * backoff step. */
static void connection_lost(pg_store *s, const char *what)
{
    if (!s->lost_logged) {
        char m[512];
        lb_error(MOD, "%s: lost the PostgreSQL connection: %s", what,
                 flat(s->conn ? PQerrorMessage(s->conn) : "(none)", m, sizeof(m)));
    }
    s->lost_logged = 1;
    disconnect(s);
    s->backoff_ms = BACKOFF_MIN_MS;
    s->retry_at = mono_ms() + BACKOFF_MIN_MS;
}

/* ---- the batch (store thread) ------------------------------------------- */

static void calls_clear(pg_store *s)
{
    for (size_t k = 0; k < s->ncalls; k++)
        PQclear(s->calls[k].res);
    s->ncalls = 0;
    for (size_t k = 0; k < s->nscratch; k++)
        lb_free(s->scratch[k]);
    s->nscratch = 0;
}

static int send_call(PGconn *c, pcall *p)
{
    if (p->q < 0) return PQsendQueryParams(c, p->sql, 0, NULL, NULL, NULL, NULL, 0);
    const char *vals[MAXP];
    for (int k = 0; k < p->n; k++)
        vals[k] = p->isnum[k] ? p->num[k] : p->v[k];
    char name[16];
    snprintf(name, sizeof(name), "lb%d", p->q);
    return PQsendQueryPrepared(c, name, p->n, vals, p->len, p->fmt, 0);
}

/* ---- notifications of changes (state sync) ------------------------------ */

/* The tenant whose in-memory state (its row, connection, hook, workflows)
 * op changes, or NULL. */
static const char *state_tenant(const lb_store_op *op, size_t k)
{
    if (k > 0) return NULL;
    switch (op->kind) {
    case LB_STORE_TENANT_UPSERT:
        return op->tenant_upsert.rec.id;
    case LB_STORE_TENANT_DELETE:
        return op->tenant_delete.id;
    case LB_STORE_CONN_PUT:
        return op->conn_put.rec->tenant_id;
    case LB_STORE_CONN_DELETE:
        return op->conn_delete.tenant_id;
    case LB_STORE_HOOK_PUT:
        return op->hook_put.rec->tenant_id;
    case LB_STORE_WORKFLOW_PUT:
        return op->workflow_put.rec->tenant_id;
    case LB_STORE_WORKFLOW_DELETE:
        return op->workflow_delete.tenant_id;
    default:
        return NULL;
    }
}

/* The k-th tenant for which op makes jobs runnable (inserted, or a failed
 * one queued again by an unfenced write: an API retry), or NULL past the
 * last. The holder's own fenced progress writes say nothing. */
static const char *jobs_tenant(const lb_store_op *op, size_t k)
{
    if (k < op->nnotify) return op->notify[k].tenant_id;
    k -= op->nnotify;
    switch (op->kind) {
    case LB_STORE_JOB_INSERT:
        return k < op->job_insert.count ? op->job_insert.recs[k].tenant_id : NULL;
    case LB_STORE_EVENT_INSERT:
        return k == 0 && op->event_insert.njobs > 0 ? op->event_insert.event->tenant_id : NULL;
    case LB_STORE_JOB_UPDATE:
        if (k > 0 || op->job_update.lease_node != NULL) return NULL;
        return op->job_update.rec->status == LB_JOB_QUEUED || op->job_update.tag_job != NULL
                   ? op->job_update.rec->tenant_id
                   : NULL;
    case LB_STORE_BACKFILL_PAGE:
        for (size_t e = 0; k == 0 && e < op->backfill_page.nevents; e++)
            if (op->backfill_page.events[e].event_insert.njobs > 0)
                return op->backfill_page.tenant_id;
        return NULL;
    default:
        return NULL;
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* One Q_NOTIFY on channel for the distinct tenants that `of` names in the
 * ops [0, n) that run; none: nothing sent. A statement of the
 * transaction's own (op -1): it cannot fail one op alone. */
static void notify_add(pg_store *s, size_t n, const char *channel,
                       const char *(*of)(const lb_store_op *, size_t))
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        if (s->skip[i]) continue;
        const char *t;
        for (size_t k = 0; (t = of(s->ops[i], k)) != NULL; k++) {
            if (count > 0 && strcmp(s->tids[count - 1], t) == 0) continue; /* a run */
            s->tids = grow(s->tids, count, &s->captids, sizeof(*s->tids), 64);
            s->tids[count++] = t;
        }
    }
    if (count == 0) return;
    qsort(s->tids, count, sizeof(*s->tids), cmp_str);
    size_t u = 1;
    for (size_t k = 1; k < count; k++)
        if (strcmp(s->tids[k], s->tids[u - 1]) != 0) s->tids[u++] = s->tids[k];
    pcall *c = call_add(s, Q_NOTIFY, -1);
    p_text(c, channel);
    p_text(c, text_array(s, s->tids, u, sizeof(*s->tids)));
}

/* Outcomes of one attempt. */
#define ATTEMPT_COMMITTED 0
#define ATTEMPT_OP_FAILED 1    /* *failed names the op; its status is set */
#define ATTEMPT_FAILED 2       /* the transaction failed; *code says how */
#define ATTEMPT_GROUP_FAILED 3 /* a coalesced statement failed: its ops are set solo */

/* Sends ops[0..n) that are not skipped as one transaction in one pipeline
 * and reads every result. On commit each op's outputs are parsed. */
static int attempt(pg_store *s, size_t n, int read_only, size_t *failed, int *code)
{
    PGconn *c = s->conn;
    *code = LB_EIO;
    calls_clear(s);
    pcall *b = call_add(s, -1, -1);
    b->sql = read_only ? "BEGIN READ ONLY" : "BEGIN";
    for (size_t i = 0; i < n; i++) {
        s->first[i] = s->ncalls;
        s->grp[i] = SIZE_MAX;
        if (!read_only && !s->skip[i] && coalescable(s, i)) {
            /* A run of event inserts: one statement for up to GROUP_MAX. */
            size_t end = i, count = 0;
            int other = 0; /* an op of another source than "lever" is in the run */
            for (; end < n && count < GROUP_MAX; end++) {
                if (s->skip[end]) continue;
                if (!coalescable(s, end)) break;
                if (other && op_stage(s->ops[end]) != NULL) break;
                other |= !is_lever(s->ops[end]);
                count++;
            }
            if (count >= 2) {
                build_event_group(s, i, end);
                for (size_t k = i; k < end; k++) {
                    s->first[k] = s->ncalls;
                    s->nc[k] = 0;
                }
                i = end - 1;
                continue;
            }
        }
        if (!s->skip[i]) {
            lb_store_op *op = s->ops[i];
            kinds[op->kind].build(s, op, (int)i);
            /* Platform events of the change, in its transaction: after the
             * op's own statements, so its parser's results come first. */
            int64_t now = lb_time_now_ms();
            for (size_t k = 0; k < op->nnotify; k++)
                job_params(call_add(s, Q_JOB_INSERT, (int)i), &op->notify[k], now);
            /* Fault injection: an error of the op's own, after its work. */
            if (i == s->fault_op) call_add(s, -1, (int)i)->sql = "SELECT 1/0";
        }
        s->nc[i] = s->ncalls - s->first[i];
    }
    if (!read_only) {
        notify_add(s, n, CHANNEL_STATE, state_tenant);
        notify_add(s, n, CHANNEL_JOBS, jobs_tenant);
    }
    /* Fault injection: an error of the transaction's, before COMMIT. */
    if (s->fault_commit && !read_only) call_add(s, -1, -1)->sql = "SELECT 1/0";
    call_add(s, -1, -1)->sql = "COMMIT";

    if (PQenterPipelineMode(c) != 1) return ATTEMPT_FAILED;
    int broken = 0;
    for (size_t k = 0; k < s->ncalls && !broken; k++)
        broken = send_call(c, &s->calls[k]) != 1;
    if (!broken) broken = PQpipelineSync(c) != 1;
    size_t bad = SIZE_MAX;
    for (size_t k = 0; k < s->ncalls && !broken; k++) {
        PGresult *r = PQgetResult(c);
        if (r == NULL) {
            broken = 1;
            break;
        }
        s->calls[k].res = r;
        ExecStatusType st = PQresultStatus(r);
        if (bad == SIZE_MAX && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) bad = k;
        while ((r = PQgetResult(c)) != NULL) /* the NULL that ends each query's results */
            PQclear(r);
    }
    if (!broken) {
        PGresult *r = PQgetResult(c);
        broken = r == NULL || PQresultStatus(r) != PGRES_PIPELINE_SYNC;
        PQclear(r);
    }
    if (broken || PQexitPipelineMode(c) != 1 || PQstatus(c) != CONNECTION_OK) {
        /* The protocol state is unknown (results unread, a pipeline still
         * open): the connection cannot be used again. */
        calls_clear(s);
        connection_lost(s, "a batch");
        return ATTEMPT_FAILED;
    }
    if (bad == SIZE_MAX) {
        for (size_t i = 0; i < n; i++) {
            if (s->skip[i]) continue;
            if (s->grp[i] != SIZE_MAX) {
                s->ops[i]->status = parse_event_row(s, i);
                continue;
            }
            PGresult *res[MAXP * 4];
            PGresult **rp = s->nc[i] <= sizeof(res) / sizeof(res[0]) ? res : NULL;
            if (rp == NULL) rp = lb_malloc(s->nc[i] * sizeof(*rp));
            for (size_t k = 0; k < s->nc[i]; k++)
                rp[k] = s->calls[s->first[i] + k].res;
            s->ops[i]->status = kinds[s->ops[i]->kind].parse(s, s->ops[i], rp);
            if (rp != res) lb_free(rp);
        }
        calls_clear(s);
        return ATTEMPT_COMMITTED;
    }
    /* An error: the server skipped the rest, COMMIT included. */
    pcall *p = &s->calls[bad];
    const char *state = PQresultErrorField(p->res, PG_DIAG_SQLSTATE);
    int level_op = p->op >= 0 && op_level(state);
    int mapped = map_state(state);
    char m[512];
    flat(PQresultErrorMessage(p->res), m, sizeof(m));
    if (level_op && p->gend > 0) {
        /* One of its ops is at fault: they run one by one, so that only
         * that one fails. */
        lb_debug(MOD, "coalesced event inserts failed (%s): %s; again one by one",
                 state ? state : "?", m);
    } else if (level_op) {
        int lvl = mapped == LB_EIO ? LB_LOG_ERROR : LB_LOG_DEBUG;
        lb_log(lvl, MOD, "op %d failed alone (%s): %s", s->ops[p->op]->kind, state ? state : "?",
               m);
    } else {
        lb_error(MOD, "transaction of %zu operations failed (%s): %s", n, state ? state : "?", m);
    }
    size_t opi = (size_t)p->op, gend = p->gend;
    /* A stored key refused the FAST form: again with ON CONFLICT. */
    char level =
        p->q == Q_EVENT_INSERT_MANY_FAST && state != NULL && strcmp(state, "23505") == 0 ? 1 : 2;
    calls_clear(s);
    if (PQtransactionStatus(c) != PQTRANS_IDLE && !exec_ok(c, "ROLLBACK")) {
        connection_lost(s, "a rollback");
        return ATTEMPT_FAILED;
    }
    if (level_op && gend > 0) {
        memset(s->solo + opi, level, gend - opi);
        if (level == 1) s->fast_after = mono_ms() + FAST_PAUSE_MS;
        return ATTEMPT_GROUP_FAILED;
    }
    if (level_op) {
        *failed = opi;
        s->ops[opi]->status = opi == s->fault_op ? LB_EIO : mapped;
        return ATTEMPT_OP_FAILED;
    }
    *code = mapped == UV_ENOSPC ? UV_ENOSPC : LB_EIO;
    return ATTEMPT_FAILED;
}

static void ops_room(pg_store *s, size_t n)
{
    if (n <= s->capops) return;
    s->capops = n;
    s->ops = lb_realloc(s->ops, n * sizeof(*s->ops));
    s->first = lb_realloc(s->first, n * sizeof(*s->first));
    s->nc = lb_realloc(s->nc, n * sizeof(*s->nc));
    s->skip = lb_realloc(s->skip, n);
    s->solo = lb_realloc(s->solo, n);
    s->grp = lb_realloc(s->grp, n * sizeof(*s->grp));
    s->grow = lb_realloc(s->grow, n * sizeof(*s->grow));
}

/* Runs ops[0..n) (already in s->ops) until it commits, each op that fails
 * alone set aside; ATTEMPT_COMMITTED or ATTEMPT_FAILED with *code. */
static int run_ops(pg_store *s, size_t n, int read_only, int *code)
{
    memset(s->skip, 0, n);
    memset(s->solo, 0, n);
    for (size_t i = 0; i < n; i++)
        s->ops[i]->status = 0;
    /* Each op fails alone at most once, and each coalesced statement
     * fails at most once before its ops go one by one. */
    for (size_t tries = 0; tries <= 2 * n; tries++) {
        size_t failed = 0;
        int rc = attempt(s, n, read_only, &failed, code);
        if (rc == ATTEMPT_GROUP_FAILED) continue;
        if (rc != ATTEMPT_OP_FAILED) return rc;
        s->skip[failed] = 1;
        /* Outputs of the aborted attempt were never parsed. */
    }
    *code = LB_EIO;
    return ATTEMPT_FAILED;
}

/* The batch failed: its writes are void, but each read runs again on its
 * own (as if submitted just before the failed writes). Without a
 * connection, reads fail too. */
static void rerun_reads(pg_store *s, lb_store_batch *b)
{
    for (lb_store_op *op = b->head; op != NULL; op = op->next) {
        if (!lb_store__op_readonly(op->kind)) continue;
        lb_store__op_discard(op);
        if (s->conn == NULL || PQstatus(s->conn) != CONNECTION_OK) {
            op->status = LB_EIO;
            continue;
        }
        s->ops[0] = op;
        int code = LB_EIO;
        if (run_ops(s, 1, 1, &code) != ATTEMPT_COMMITTED) {
            lb_store__op_discard(op);
            op->status = code;
            if (s->conn != NULL && PQstatus(s->conn) != CONNECTION_OK) connection_lost(s, "a read");
        }
    }
}

/* A duplicate whose earlier event another replica committed after this
 * batch's statement took its snapshot: ON CONFLICT waited for that commit,
 * but the statement could not read the row, so its id came back NULL (the
 * same delivery to two replicas at once). A statement after the commit
 * reads it; without an answer the op fails (503: Lever's retry finds it),
 * as the contract's duplicate names its event. */
static void late_duplicates(pg_store *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        lb_store_op *op = s->ops[i];
        if (s->skip[i] || op->kind != LB_STORE_EVENT_INSERT || op->status != 0 ||
            !op->event_insert.duplicate || op->event_insert.existing_id[0] != '\0')
            continue;
        const lb_event_rec *e = op->event_insert.event;
        const char *v[3] = {e->tenant_id, e->source, e->dedupe_key};
        PGresult *r = PQexecParams(
            s->conn,
            "SELECT COALESCE((SELECT event_id FROM event_keys WHERE tenant_id = $1::text"
            " AND source = $2::text AND dedupe_key = $3::text), (SELECT id FROM events"
            " WHERE tenant_id = $1::text AND source = $2::text AND dedupe_key = $3::text))",
            3, NULL, v, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            val_id(r, 0, 0, op->event_insert.existing_id, LB_EVENT_ID_MAX);
        PQclear(r);
        if (op->event_insert.existing_id[0] == '\0') {
            lb_warn(MOD, "a duplicate event's first copy could not be read");
            op->status = LB_EIO;
        }
        if (PQstatus(s->conn) != CONNECTION_OK) {
            connection_lost(s, "a duplicate's lookup");
            for (size_t k = i + 1; k < n; k++)
                if (s->ops[k]->kind == LB_STORE_EVENT_INSERT && s->ops[k]->event_insert.duplicate &&
                    s->ops[k]->event_insert.existing_id[0] == '\0')
                    s->ops[k]->status = LB_EIO;
            return;
        }
    }
}

static void pg_run(lb_store *base, lb_store_batch *b)
{
    pg_store *s = (pg_store *)base;
    const lb_store_op *fail_op;
    lb_store__fault_batch(b->head, &fail_op, &s->fault_commit);
    double t0 = lb_store__mono_seconds();
    if (!ensure_conn(s)) {
        s->fault_commit = 0;
        take_news(s, b);
        for (lb_store_op *op = b->head; op != NULL; op = op->next)
            op->status = LB_EIO;
        b->wrote = 1; /* readiness follows the database */
        b->health = LB_EIO;
        b->seconds = lb_store__mono_seconds() - t0;
        return;
    }
    plans_check(s);
    ops_room(s, b->count);
    size_t n = 0;
    for (lb_store_op *op = b->head; op != NULL; op = op->next) {
        if (op == fail_op) s->fault_op = n;
        s->ops[n++] = op;
    }
    take_news(s, b);
    int code = LB_EIO;
    int rc = run_ops(s, n, 0, &code);
    s->fault_op = SIZE_MAX; /* reads run again are not failed again */
    s->fault_commit = 0;
    if (rc == ATTEMPT_COMMITTED) {
        b->committed = 1;
        late_duplicates(s, n);
    } else {
        b->error = code;
        /* Outputs of ops parsed before a failed COMMIT cannot exist (parsing
         * follows the commit), so only reads need work. */
        if (s->conn == NULL || PQstatus(s->conn) != CONNECTION_OK) {
            if (s->conn != NULL) connection_lost(s, "a batch");
            b->wrote = 1; /* readiness follows the database */
        }
        rerun_reads(s, b);
    }
    b->health = b->committed ? 0 : b->error;
    for (lb_store_op *op = b->head; op != NULL && b->health == 0; op = op->next)
        if (op->status == UV_ENOSPC) b->health = UV_ENOSPC;
    if (b->wrote) s->degraded = b->health != 0;
    b->seconds = lb_store__mono_seconds() - t0;
}

/* A small write of the store's own: a meta row written and deleted in one
 * transaction. 0, or the failure's code. */
static int probe_write(pg_store *s)
{
    if (!ensure_conn(s)) return LB_EIO;
    char sql[256];
    snprintf(sql, sizeof(sql),
             "BEGIN; INSERT INTO meta(key, value, updated_at) VALUES ('write_probe', '\\x00', %lld)"
             " ON CONFLICT (key) DO UPDATE SET updated_at = EXCLUDED.updated_at;"
             " DELETE FROM meta WHERE key = 'write_probe'; COMMIT",
             (long long)lb_time_now_ms());
    PGresult *r = PQexec(s->conn, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    int code = state != NULL && strcmp(state, "53100") == 0 ? UV_ENOSPC : LB_EIO;
    PQclear(r);
    if (ok) return 0;
    if (PQstatus(s->conn) != CONNECTION_OK)
        connection_lost(s, "the write probe");
    else if (PQtransactionStatus(s->conn) != PQTRANS_IDLE)
        (void)exec_ok(s->conn, "ROLLBACK");
    return code;
}

/* ---- the store thread's idle work and end ------------------------------- */

static uint64_t pg_idle_wait_ms(lb_store *base)
{
    pg_store *s = (pg_store *)base;
    if (s->conn != NULL || s->unusable) return IDLE_WAIT_MS;
    int64_t d = s->retry_at - mono_ms();
    return d <= 0 ? 1 : d < IDLE_WAIT_MS ? (uint64_t)d : IDLE_WAIT_MS;
}

/* Idle while the database is lost or writes fail: try to get it back. A
 * probe that commits tells the loop (an empty batch). */
static void pg_idle(lb_store *base, lb_store_batch *p)
{
    pg_store *s = (pg_store *)base;
    if (s->unusable || (!s->degraded && s->conn != NULL)) return;
    if (s->conn == NULL && mono_ms() < s->retry_at) return;
    int h = probe_write(s);
    take_news(s, p);
    if (h != 0) return;
    s->degraded = 0;
    p->wrote = 1;
}

/* ---- the listener (state sync; its own thread) ---------------------------- */

/* Listener thread: a note for the loop (mu held by the caller). Past the
 * bound the queue is dropped for one "reload everything". */
static void note_put(pg_listener *l, int what, const char *tenant)
{
    if (l->all) return;
    if (l->nnotes == LB_STORE_NOTES_MAX) {
        l->all = 1;
        l->nnotes = 0;
        return;
    }
    pg_note *n = &l->notes[l->nnotes++];
    n->what = what;
    snprintf(n->tenant, sizeof(n->tenant), "%s", tenant);
}

/* Listener thread: waits up to ms for the connection's socket (fd >= 0)
 * or the wake pipe. 1 when the socket is readable. */
static int listener_wait(pg_listener *l, int fd, int ms)
{
    struct pollfd p[2] = {{.fd = l->wake[0], .events = POLLIN}, {.fd = fd, .events = POLLIN}};
    int rc = poll(p, fd >= 0 ? 2 : 1, ms);
    if (rc <= 0) return 0;
    if (p[0].revents) {
        char buf[16];
        while (read(l->wake[0], buf, sizeof(buf)) > 0) {
        }
    }
    return fd >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
}

static int listener_stopping(pg_listener *l)
{
    uv_mutex_lock(&l->mu);
    int stop = l->stop;
    uv_mutex_unlock(&l->mu);
    return stop;
}

/* Listener thread: connects and LISTENs; on success the loop is told to
 * reload everything (what happened before, or while it was away, was not
 * heard). 1 when connected. */
static int listener_connect(pg_listener *l)
{
    char err[512];
    PGconn *c = pg_connect(l->s->conninfo, err, sizeof(err));
    if (c != NULL && !exec_ok(c, "LISTEN " CHANNEL_STATE "; LISTEN " CHANNEL_JOBS)) {
        snprintf(err, sizeof(err), "PostgreSQL: LISTEN: %s", PQerrorMessage(c));
        lb_store__one_line(err);
        PQfinish(c);
        c = NULL;
    }
    if (c == NULL) {
        l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : BACKOFF_MIN_MS;
        if (l->backoff_ms > BACKOFF_MAX_MS) l->backoff_ms = BACKOFF_MAX_MS;
        if (!l->lost_logged) lb_warn(MOD, "state sync: %s; retrying", err);
        l->lost_logged = 1;
        return 0;
    }
    if (l->lost_logged) lb_info(MOD, "state sync: listening again");
    l->lost_logged = 0;
    l->backoff_ms = 0;
    l->conn = c;
    uv_mutex_lock(&l->mu);
    l->all = 1;
    l->nnotes = 0;
    uv_mutex_unlock(&l->mu);
    uv_async_send(&l->async);
    return 1;
}

static void listener_main(void *arg)
{
    pg_listener *l = arg;
    while (!listener_stopping(l)) {
        if (l->conn == NULL && !listener_connect(l)) {
            listener_wait(l, -1, (int)l->backoff_ms);
            continue;
        }
        int fd = PQsocket(l->conn);
        if (!listener_wait(l, fd, LISTEN_POLL_MS)) continue;
        if (PQconsumeInput(l->conn) != 1 || PQstatus(l->conn) != CONNECTION_OK) {
            char m[512];
            lb_warn(MOD, "state sync: lost the listening connection: %s",
                    flat(PQerrorMessage(l->conn), m, sizeof(m)));
            PQfinish(l->conn);
            l->conn = NULL;
            l->lost_logged = 1;
            l->backoff_ms = BACKOFF_MIN_MS;
            listener_wait(l, -1, BACKOFF_MIN_MS);
            continue;
        }
        int own = atomic_load(&l->s->own_pid), heard = 0;
        PGnotify *n;
        uv_mutex_lock(&l->mu);
        while ((n = PQnotifies(l->conn)) != NULL) {
            if (n->be_pid != own && n->extra != NULL && *n->extra != '\0' &&
                strlen(n->extra) <= LB_TENANT_ID_MAX) {
                note_put(l,
                         strcmp(n->relname, CHANNEL_JOBS) == 0 ? LB_STORE_CHANGED_JOBS
                                                               : LB_STORE_CHANGED_STATE,
                         n->extra);
                heard = 1;
            }
            PQfreemem(n);
        }
        uv_mutex_unlock(&l->mu);
        if (heard) uv_async_send(&l->async);
    }
    if (l->conn != NULL) PQfinish(l->conn);
    l->conn = NULL;
    uv_mutex_lock(&l->mu);
    l->stopped = 1;
    uv_mutex_unlock(&l->mu);
    uv_async_send(&l->async);
}

/* Loop thread: what the listener heard, in order; then, once it stopped,
 * its handle closes. */
static void listener_async_cb(uv_async_t *a)
{
    pg_listener *l = ((pg_store *)a->data)->listener;
    static pg_note batch[LB_STORE_NOTES_MAX];
    uv_mutex_lock(&l->mu);
    size_t n = l->nnotes;
    int all = l->all, stopped = l->stopped;
    memcpy(batch, l->notes, n * sizeof(*batch));
    l->nnotes = 0;
    l->all = 0;
    uv_mutex_unlock(&l->mu);
    if (stopped) {
        if (!l->joined) {
            uv_thread_join(&l->thread);
            l->joined = 1;
            uv_close((uv_handle_t *)&l->async, lb_store__handle_closed_cb);
        }
        return;
    }
    if (all) l->cb(l->cb_data, LB_STORE_CHANGED_ANY, NULL);
    for (size_t i = 0; i < n && !all; i++)
        l->cb(l->cb_data, batch[i].what, batch[i].tenant);
}

static int pg_listen(lb_store *base, lb_store_listen_cb cb, void *data)
{
    pg_store *s = (pg_store *)base;
    pg_listener *l = LB_NEW(pg_listener);
    l->s = s;
    l->cb = cb;
    l->cb_data = data;
    l->notes = lb_calloc(LB_STORE_NOTES_MAX, sizeof(*l->notes));
    if (pipe(l->wake) != 0) {
        lb_free(l->notes);
        lb_free(l);
        return -errno;
    }
    fcntl(l->wake[0], F_SETFL, O_NONBLOCK);
    fcntl(l->wake[1], F_SETFL, O_NONBLOCK);
    uv_mutex_init(&l->mu);
    uv_async_init(base->loop, &l->async, listener_async_cb);
    l->async.data = s;
    uv_unref((uv_handle_t *)&l->async); /* it never keeps the loop alive by itself */
    s->listener = l;
    base->h.handles_open++;
    uv_thread_options_t opt = {.flags = UV_THREAD_HAS_STACK_SIZE, .stack_size = 256 * 1024};
    if (uv_thread_create_ex(&l->thread, &opt, listener_main, l) != 0) {
        /* No thread: the handle closes now, as a stopped listener's. */
        l->stopped = 1;
        l->joined = 1;
        uv_close((uv_handle_t *)&l->async, lb_store__handle_closed_cb);
        return 0;
    }
    return 0;
}

/* Loop thread (lb_store_close): the thread ends at its next wake-up; its
 * handle holds the loop until it has closed. */
static void pg_listen_stop(lb_store *base)
{
    pg_listener *l = ((pg_store *)base)->listener;
    if (l == NULL || l->joined) return;
    uv_ref((uv_handle_t *)&l->async);
    uv_mutex_lock(&l->mu);
    l->stop = 1;
    uv_mutex_unlock(&l->mu);
    ssize_t w = write(l->wake[1], "x", 1);
    (void)w;
}

static void pg_thread_end(lb_store *base)
{
    disconnect((pg_store *)base);
}

static void pg_destroy(lb_store *base)
{
    pg_store *s = (pg_store *)base;
    disconnect(s);
    calls_clear(s);
    lb_free(s->calls);
    lb_free(s->scratch);
    lb_free(s->ops);
    lb_free(s->first);
    lb_free(s->nc);
    lb_free(s->skip);
    lb_free(s->solo);
    lb_free(s->grp);
    lb_free(s->grow);
    lb_free(s->tids);
    if (s->listener != NULL) {
        pg_listener *l = s->listener;
        close(l->wake[0]);
        close(l->wake[1]);
        uv_mutex_destroy(&l->mu);
        lb_free(l->notes);
        lb_free(l);
    }
    lb_store__release(&s->base);
    lb_free(s->news_err);
    if (s->conninfo != NULL) {
        memset(s->conninfo, 0, strlen(s->conninfo)); /* may hold a password */
        lb_free(s->conninfo);
    }
    lb_free(s);
}

static const lb_store_vtable pg_vtable = {
    .name = "postgres",
    .thread_name = "lb-store-pg",
    .batch_max = BATCH_MAX,
    .run = pg_run,
    .idle_wait_ms = pg_idle_wait_ms,
    .idle = pg_idle,
    .thread_end = pg_thread_end,
    .destroy = pg_destroy,
    .listen = pg_listen,
    .listen_stop = pg_listen_stop,
};

/* ---- open (calling thread) ---------------------------------------------- */

/* libpq checks a port's syntax only when it connects, and says so as a
 * connection failure: "5432", "5432,5433", "" are ports; "notaport" is
 * configuration. */
static int ports_ok(const char *v)
{
    for (;;) {
        size_t n = strspn(v, "0123456789");
        if (n > 5 || (n > 0 && strtol(v, NULL, 10) > 65535)) return 0;
        v += n;
        if (*v == '\0') return 1;
        if (*v++ != ',') return 0;
    }
}

int lb_store_pg_open(uv_loop_t *loop, const char *conninfo, const lb_store_options *opt,
                     lb_store **out, char *err, size_t errlen)
{
    if (PQisthreadsafe() != 1) {
        snprintf(err, errlen, "this libpq is not thread-safe");
        return LB_EINVAL;
    }
    /* A URL libpq cannot parse is configuration: refused now. */
    char *perr = NULL;
    PQconninfoOption *parsed = PQconninfoParse(conninfo, &perr);
    if (parsed == NULL) {
        snprintf(err, errlen, "LEVERBRIDGE_DB: not a PostgreSQL URL or conninfo string: %s",
                 perr != NULL ? perr : "out of memory");
        lb_store__one_line(err);
        PQfreemem(perr);
        return LB_EINVAL;
    }
    const char *bad_port = NULL;
    for (PQconninfoOption *o = parsed; o->keyword != NULL && bad_port == NULL; o++)
        if (strcmp(o->keyword, "port") == 0 && o->val != NULL && !ports_ok(o->val))
            bad_port = o->val;
    if (bad_port != NULL) {
        snprintf(err, errlen,
                 "LEVERBRIDGE_DB: not a PostgreSQL URL or conninfo string: port \"%s\"", bad_port);
        PQconninfoFree(parsed);
        return LB_EINVAL;
    }
    PQconninfoFree(parsed);
    /* A database that cannot be reached is waited for (lb_store_waiting);
     * one that answers is migrated now, and refusing it stops start-up. */
    char cerr[512];
    PGconn *c = pg_connect(conninfo, cerr, sizeof(cerr));
    int from = 0, to = 0, rc = 0;
    if (c != NULL) {
        rc = lb_store_pg_migrate(c, &from, &to, err, errlen);
        if (rc == 0) rc = prepare_all(c, err, errlen);
        if (rc != 0) {
            PQfinish(c);
            return rc;
        }
        if (from != to)
            lb_info(MOD, "PostgreSQL database %s migrated from schema version %d to %d", PQdb(c),
                    from, to);
        warn_settings(c);
    } else {
        lb_error(MOD,
                 "%s; waiting for it (retrying every %d ms at most; not ready until it is "
                 "reached)",
                 cerr, BACKOFF_MAX_MS);
    }

    pg_store *s = LB_NEW(pg_store);
    if ((rc = lb_store__init(&s->base, &pg_vtable, loop, err, errlen)) != 0) {
        PQfinish(c);
        lb_free(s);
        return rc;
    }
    s->fault_op = SIZE_MAX;
    s->conn = c;
    atomic_init(&s->own_pid, c != NULL ? PQbackendPID(c) : 0);
    s->conninfo = lb_strdup(conninfo);
    s->dedupe_ms = opt->lever_dedupe_ms;
    if (c == NULL) {
        s->base.waiting = 1;
        s->lost_logged = 1;
        s->backoff_ms = BACKOFF_MIN_MS;
        s->retry_at = mono_ms() + BACKOFF_MIN_MS;
    } else {
        s->migrated = 1;
        const char *host = PQhost(c);
        lb_info(MOD, "opened postgres database %s on %s (schema version %d)", PQdb(c),
                host ? host : "?", to);
        int health = probe_write(s); /* may lose c */
        if (health != 0) {
            s->degraded = 1;
            lb_store__health(&s->base, health);
        }
    }
    if ((rc = lb_store__start(&s->base, err, errlen)) != 0) {
        pg_destroy(&s->base);
        return rc;
    }
    *out = &s->base;
    return 0;
}
