/* The durable store: an asynchronous, batched interface over a database
 * backend (SQLite now, PostgreSQL later), used only from the loop thread.
 *
 * A caller fills an lb_store_op (usually embedded in its own request context)
 * and submits it. The backend runs every pending operation in one transaction
 * and commits once (group commit); then, on the loop thread, each operation's
 * callback runs exactly once, in submission order, with op->status set.
 * Nothing on the loop thread waits for the disk. See docs/internals/store.md.
 *
 * Ownership: the op belongs to the caller and must stay valid, untouched,
 * from lb_store_submit until its callback runs. Inputs (strings, BLOBs) are
 * read by the store and never freed or kept after the callback. Outputs that
 * the store allocates (marked "lb_malloc'd" below) are set only when status is
 * 0 and then belong to the caller, who releases them with the free functions
 * named next to them; on any error they are NULL/0. */
#ifndef LB_STORE_STORE_H
#define LB_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Most operations submitted and not yet completed; past it, LB_ETOOBIG. */
#define LB_STORE_QUEUE_MAX 65536
/* Longest tenant id (api.md: [A-Za-z0-9._-]{1,64}). */
#define LB_TENANT_ID_MAX 64
/* Longest key of the meta operations. */
#define LB_STORE_META_KEY_MAX 128
/* Most tenants LB_STORE_TENANT_LOAD_ALL returns; more is LB_ETOOBIG. */
#define LB_STORE_TENANTS_MAX 1000000

/* Longest failure tag (api.md "Failures visible in Lever"), in bytes. */
#define LB_FAILURE_TAG_MAX 100

/* A tenant as stored. Owner: whoever holds it; lb_tenant_rec_free releases
 * the name and the failure tag. Times are ms since the Unix epoch. */
typedef struct {
    char id[LB_TENANT_ID_MAX + 1];
    char *name;
    int api_addon;     /* 0 or 1 */
    double lever_rate; /* requests/s; 0: use the configured default */
    int lever_burst;   /* 0: use the configured default */
    char *failure_tag; /* added in Lever to a failed job's opportunity; NULL: off */
    int64_t created_at;
    int64_t updated_at;
} lb_tenant_rec;

/* Frees r->name and r->failure_tag (not r itself) and sets them to NULL. */
void lb_tenant_rec_free(lb_tenant_rec *r);
/* Frees every record's name and the array. NULL is allowed. */
void lb_tenant_recs_free(lb_tenant_rec *recs, size_t count);

/* Jobs (api.md "Events and jobs"). */
#define LB_JOB_ID_MAX 40
#define LB_STORE_JOBS_MAX 1000000

typedef enum {
    LB_JOB_QUEUED,
    LB_JOB_RUNNING,
    LB_JOB_RETRYING,
    LB_JOB_SUCCEEDED,
    LB_JOB_FAILED,
    LB_JOB_SKIPPED,
    LB_JOB_CANCELLED,
    LB_JOB_STATUS_END
} lb_job_status;

/* "queued", ...; NULL for a bad value. */
const char *lb_job_status_name(int status);
/* The status named s, or -1. */
int lb_job_status_parse(const char *s);

/* A job as stored. Strings lb_malloc'd (NULL allowed except action);
 * lb_job_rec_free releases them. */
typedef struct {
    char id[LB_JOB_ID_MAX + 1];
    char tenant_id[LB_TENANT_ID_MAX + 1];
    char *event_id;
    char *workflow_id;
    char *action; /* JSON object: {"type":..., ...} */
    char *opportunity_id;
    char *last_error;
    char *steps; /* JSON object: results of finished steps */
    int seq;     /* order among its event's jobs */
    int status;  /* lb_job_status */
    int attempts;
    int64_t next_run_at; /* ms; 0: now */
    int64_t created_at;
    int64_t updated_at;
} lb_job_rec;

void lb_job_rec_free(lb_job_rec *r);
void lb_job_recs_free(lb_job_rec *recs, size_t count);

/* A tenant's Lever connection as stored. The secret is sealed by the caller
 * (the store never sees credentials in the clear). Strings and the secret
 * lb_malloc'd; lb_conn_rec_free releases them. */
typedef struct {
    char tenant_id[LB_TENANT_ID_MAX + 1];
    char *status;    /* "disconnected", "connected", "needs_reauth" */
    char *auth;      /* "api_key", "oauth", or NULL */
    uint8_t *secret; /* sealed credentials, or NULL */
    size_t secret_len;
    int64_t token_expires_at;
    char *permissions_missing; /* JSON array, or NULL */
    int64_t permissions_checked_at;
    int64_t connected_at;
    int64_t updated_at;
} lb_conn_rec;

#define LB_HOOK_ID_MAX 64

/* A tenant's Lever webhook as stored; the signature token sealed. */
typedef struct {
    char id[LB_HOOK_ID_MAX + 1];
    char tenant_id[LB_TENANT_ID_MAX + 1];
    char *lever_webhook_id;
    uint8_t *signature_token;
    size_t token_len;
    char *status; /* "none", "pending", "active", "failed" */
    int attempts;
    int64_t next_attempt_at;
    int64_t deadline_at;
    char *last_error;
    int64_t active_since;
    int64_t last_delivery_at;
    int64_t checked_at;
} lb_hook_rec;

void lb_conn_rec_free(lb_conn_rec *r);
void lb_hook_rec_free(lb_hook_rec *r);

/* An event as stored (api.md "Events and jobs"). */
#define LB_EVENT_ID_MAX 40
typedef struct {
    char id[LB_EVENT_ID_MAX + 1];
    char tenant_id[LB_TENANT_ID_MAX + 1];
    const char *source; /* "lever", "platform" */
    const char *type;
    const char *dedupe_key;
    const char *status; /* "accepted", "ignored" */
    const char *opportunity_id;
    const char *payload; /* JSON */
    int64_t received_at;
} lb_event_rec;

/* A workflow as stored: its JSON body is validated above the store. */
#define LB_WORKFLOW_ID_MAX 40
typedef struct {
    char id[LB_WORKFLOW_ID_MAX + 1];
    char tenant_id[LB_TENANT_ID_MAX + 1];
    char *body; /* the workflow as JSON */
    int enabled;
    int64_t created_at;
    int64_t updated_at;
} lb_workflow_rec;

void lb_workflow_rec_free(lb_workflow_rec *r);
void lb_workflow_recs_free(lb_workflow_rec *recs, size_t count);

/* An event as read back, with the ids of its jobs. */
typedef struct {
    char id[LB_EVENT_ID_MAX + 1];
    char tenant_id[LB_TENANT_ID_MAX + 1];
    char *source, *type, *status, *opportunity_id, *payload;
    int64_t received_at;
    char **jobs;
    size_t njobs;
} lb_event_row;

void lb_event_row_free(lb_event_row *r);
void lb_event_rows_free(lb_event_row *rows, size_t count);

/* An invitation: one per tenant, opportunity and assessment. */
typedef struct {
    char tenant_id[LB_TENANT_ID_MAX + 1];
    char *opportunity_id;
    char *assessment;
    char *job_id;        /* the send_assessment job that owns it */
    char *invitation_id; /* the platform's, once invited */
    char *url;
    char *note_id;  /* the Lever status note, once written */
    char *stage_id; /* the opportunity's stage when the invitation was sent */
    int64_t created_at;
} lb_invitation_rec;

void lb_invitation_rec_free(lb_invitation_rec *r);

/* Most rows one list operation returns. */
#define LB_STORE_LIST_MAX 200
/* Most rows of each table one prune operation deletes. */
#define LB_STORE_PRUNE_MAX 10000

/* One hour of one tenant's counts (state/stats.h); tenant "" for what no
 * tenant owns (a delivery to an unknown hook). hour: ms since the epoch / 1h. */
#define LB_STATS_KINDS 5
typedef struct {
    char tenant_id[LB_TENANT_ID_MAX + 1];
    int64_t hour;
    uint32_t count[LB_STATS_KINDS];
} lb_stats_rec;
/* Reconcile events of one tenant in one hour (LB_STORE_RECONCILED_COUNTS). */
typedef struct {
    char tenant_id[LB_TENANT_ID_MAX + 1];
    int64_t hour; /* ms since the epoch / 1h */
    uint32_t count;
} lb_hour_count_rec;
/* Most rows LB_STORE_RECONCILED_COUNTS returns; more is LB_ETOOBIG. */
#define LB_STORE_HOUR_COUNTS_MAX 1000000

/* A backfill (api.md "Dry run and backfill"): one workflow applied to the
 * opportunities waiting in its stage, page by page. Strings lb_malloc'd
 * (NULL allowed); lb_backfill_rec_free releases them. */
#define LB_BACKFILL_ID_MAX 40
#define LB_BACKFILL_STATUS_MAX 16
typedef struct {
    char id[LB_BACKFILL_ID_MAX + 1];
    char tenant_id[LB_TENANT_ID_MAX + 1];
    char workflow_id[LB_WORKFLOW_ID_MAX + 1];
    char status[LB_BACKFILL_STATUS_MAX]; /* running|done|failed|cancelled */
    char *offset;                        /* Lever's offset of the next page; NULL: the first */
    char *last_error;
    int64_t listed, queued, skipped;
    int64_t created_at, updated_at;
} lb_backfill_rec;

void lb_backfill_rec_free(lb_backfill_rec *r);
void lb_backfill_recs_free(lb_backfill_rec *recs, size_t count);
/* Most assessments one backfill page checks the invitation ledger for. */
#define LB_STORE_BACKFILL_ASSESSMENTS_MAX 20
/* Most events one backfill page inserts. */
#define LB_STORE_BACKFILL_EVENTS_MAX 100

/* Most rows one stats operation writes. */
#define LB_STORE_STATS_MAX 4096

/* Several replicas (docs/internals/cluster.md): the nodes and the tenant
 * leases. On PostgreSQL they are tables shared by every replica; on SQLite
 * (one process) they are temporary tables of the store's connection, gone
 * at close. Times are the database's clock, ms since the Unix epoch. */
#define LB_NODE_ID_MAX 220
/* Most items of one LB_STORE_LEASE_WRITE. */
#define LB_STORE_LEASE_ITEMS_MAX 100000
/* Most nodes LB_STORE_CLUSTER_READ returns. */
#define LB_STORE_NODES_MAX 1000

typedef struct {
    char id[LB_NODE_ID_MAX + 1];
    char *advertise_url; /* lb_malloc'd */
    int64_t last_seen_at;
    int live; /* seen within the read's live_ms */
} lb_node_rec;

void lb_node_recs_free(lb_node_rec *recs, size_t count);

/* A tenant's lease: node "" and epoch 0 when it never had one. */
typedef struct {
    char tenant_id[LB_TENANT_ID_MAX + 1];
    char node[LB_NODE_ID_MAX + 1];
    int64_t epoch;
    int64_t expires_at;
    int expired; /* expires_at <= the database's now (or no lease) */
} lb_lease_rec;

typedef enum {
    LB_LEASE_TAKE = 1, /* a lease that expired (or none), or this node's own
                          (a previous process of the same NODE_ID): epoch + 1 */
    LB_LEASE_RENEW,    /* this node's, of that epoch: expires_at = now + ttl */
    LB_LEASE_RELEASE,  /* this node's, of that epoch: expires_at = now */
} lb_lease_action;

/* One item of LB_STORE_LEASE_WRITE: in action, tenant_id, epoch (the one
 * read: what a take expects to replace, 0 for none; what a renew or release
 * expects to hold); out ok (1 when done), epoch and expires_at as stored. */
typedef struct {
    char tenant_id[LB_TENANT_ID_MAX + 1];
    int action;
    int64_t epoch;
    int64_t expires_at;
    int ok;
} lb_lease_item;

typedef enum {
    LB_STORE_TENANT_UPSERT = 1,
    LB_STORE_TENANT_DELETE,
    LB_STORE_TENANT_LOAD_ALL,
    LB_STORE_META_GET,
    LB_STORE_META_PUT,
    LB_STORE_JOB_INSERT,
    LB_STORE_JOB_UPDATE,
    LB_STORE_JOB_LOAD_ACTIVE,
    LB_STORE_CONN_PUT,
    LB_STORE_CONN_DELETE,
    LB_STORE_CONN_LOAD_ALL,
    LB_STORE_HOOK_PUT,
    LB_STORE_EVENT_INSERT,
    LB_STORE_WORKFLOW_PUT,
    LB_STORE_WORKFLOW_DELETE,
    LB_STORE_WORKFLOW_LOAD_ALL,
    LB_STORE_EVENT_LIST,
    LB_STORE_EVENT_GET,
    LB_STORE_JOB_LIST,
    LB_STORE_JOB_GET,
    LB_STORE_INVITATION_CLAIM,
    LB_STORE_INVITATION_UPDATE,
    LB_STORE_INVITATION_GET,
    LB_STORE_JOB_FAILED_COUNTS,
    LB_STORE_PRUNE,
    LB_STORE_STATS_PUT,
    LB_STORE_STATS_LOAD,
    LB_STORE_RECONCILED_COUNTS,
    LB_STORE_NODE_BEAT,
    LB_STORE_CLUSTER_READ,
    LB_STORE_LEASE_WRITE,
    LB_STORE_BACKFILL_PUT,
    LB_STORE_BACKFILL_PAGE,
    LB_STORE_BACKFILL_FINISH,
    LB_STORE_BACKFILL_GET,
    LB_STORE_BACKFILL_LIST,
    LB_STORE_OP_KIND_END /* not a kind: one past the last */
} lb_store_op_kind;

/* Most notify_platform jobs one write carries (lb_store_op.notify). */
#define LB_STORE_NOTIFY_MAX 4

typedef struct lb_store_op lb_store_op;
typedef void (*lb_store_op_cb)(lb_store_op *op);

struct lb_store_op {
    int kind;          /* lb_store_op_kind; set by the caller */
    int status;        /* result: 0, LB_ENOTFOUND, LB_ECONFLICT, LB_EINVAL,
                          LB_ETOOBIG, LB_ECORRUPT, UV_ENOSPC (a write, on
                          a full disk) or LB_EIO */
    lb_store_op_cb cb; /* required; runs once on the loop thread */
    void *data;        /* the caller's */
    /* Platform events (api.md "Events to the platform"): notify_platform
     * jobs inserted in the same transaction as this write, and only when it
     * succeeds (job_insert's rules; a failing insert fails the op). Allowed
     * on CONN_PUT, CONN_DELETE, HOOK_PUT, INVITATION_UPDATE, JOB_UPDATE and
     * META_PUT (LB_EINVAL elsewhere); at most LB_STORE_NOTIFY_MAX. Read during the
     * op, not kept; once op->status is 0 the caller hands them to the
     * engine (lb_jobs_add). NULL/0: none. */
    const lb_job_rec *notify;
    size_t nnotify;
    union {
        /* Inserts or replaces the tenant rec.id.
         * in:  rec (id, name, api_addon, lever_rate, lever_burst,
         *      failure_tag); updated_at is the time to record, 0 for "now";
         *      created_at is ignored.
         * out: created (1 inserted, 0 updated); rec.created_at as stored (kept
         *      from the first insert), rec.updated_at as stored. rec.name and
         *      rec.failure_tag are the caller's and are never freed or
         *      replaced by the store. */
        struct {
            lb_tenant_rec rec;
            int created;
        } tenant_upsert;
        /* Deletes the tenant and, by cascade, all its rows (connection, hook,
         * workflows, events, jobs, invitations). LB_ENOTFOUND if absent. */
        struct {
            char id[LB_TENANT_ID_MAX + 1];
        } tenant_delete;
        /* out: every tenant, ordered by id, in an lb_malloc'd array: release
         * with lb_tenant_recs_free(recs, count). in (optional): tenant_id,
         * only that tenant (0 or 1 row; NULL: every tenant). */
        struct {
            lb_tenant_rec *recs;
            size_t count;
            const char *tenant_id;
        } tenant_load_all;
        /* A process-wide value by key (at most LB_STORE_META_KEY_MAX bytes).
         * out: value, an lb_malloc'd copy (lb_free it), and len; status
         * LB_ENOTFOUND when the key is absent. */
        struct {
            const char *key;
            uint8_t *value;
            size_t len;
        } meta_get;
        /* Inserts or replaces key's value (read during the op, not kept). */
        struct {
            const char *key;
            const uint8_t *value;
            size_t len;
        } meta_put;
        /* Inserts jobs (all or none). in: recs, count (read, not kept). A job
         * id that exists: LB_ECONFLICT. An unknown tenant: LB_ENOTFOUND. */
        struct {
            const lb_job_rec *recs;
            size_t count;
        } job_insert;
        /* Sets status, attempts, next_run_at, last_error, steps and
         * updated_at (0: now) of job rec->id. LB_ENOTFOUND if absent.
         * Optional tag_job (api.md "Failures visible in Lever"): a job
         * adding `tag` to tag_job->opportunity_id, inserted in the same
         * transaction only when the failure-tag ledger has no row yet for
         * (tag_job->tenant_id, its opportunity, tag); the row is written
         * with it, so a tenant's opportunity gets a tag's job once. A row
         * already there is not an error: out tag_added is 1 when the job
         * was inserted, else 0. A failing insert fails the op.
         * Fenced (several replicas): with lease_node set, only while the
         * job's tenant's lease names lease_node with lease_epoch; once it
         * moved on the write is refused, LB_ECONFLICT, and the platform
         * events and the tag job it carries are not written either. NULL:
         * unfenced. */
        struct {
            const lb_job_rec *rec;
            const lb_job_rec *tag_job;
            const char *tag;
            int tag_added;
            const char *lease_node;
            int64_t lease_epoch;
        } job_update;
        /* out: every queued, running or retrying job, oldest first (by
         * created_at, then seq), lb_malloc'd: free with lb_job_recs_free.
         * in (optional): lease_node, only the jobs of tenants whose lease
         * names that node (NULL: every tenant's), and changed_since, only
         * jobs written (updated_at) at or after it (0: all). */
        struct {
            lb_job_rec *recs;
            size_t count;
            const char *lease_node;
            int64_t changed_since;
        } job_load_active;
        /* Inserts or replaces the tenant's connection row. in: rec (read,
         * not kept); LB_ENOTFOUND for an unknown tenant. */
        struct {
            const lb_conn_rec *rec;
        } conn_put;
        /* Deletes the tenant's connection and hook rows (absent: still 0). */
        struct {
            char tenant_id[LB_TENANT_ID_MAX + 1];
        } conn_delete;
        /* out: every connection and every hook, lb_malloc'd arrays; free each
         * record with its free function and the arrays with lb_free. in
         * (optional): tenant_id, only that tenant's (NULL: every tenant's). */
        struct {
            lb_conn_rec *conns;
            size_t nconns;
            lb_hook_rec *hooks;
            size_t nhooks;
            const char *tenant_id;
        } conn_load_all;
        /* Inserts or replaces hook rec->id, first deleting any other hook row
         * of the same tenant (one hook per tenant). */
        struct {
            const lb_hook_rec *rec;
        } hook_put;
        /* Inserts an event and its jobs in one durable step, unless an event
         * with the same (tenant, source, dedupe_key) exists: then nothing is
         * written, `duplicate` is 1 and `existing_id` names the first one.
         * For source "lever", only events received within the last
         * lever_dedupe_ms (lb_store_options) count: the caller refuses
         * older deliveries as stale before they get here.
         * hook_id (optional) gets last_delivery_at = event.received_at.
         *
         * stage_id (optional, candidateStageChange events): the stage the
         * event reports the opportunity moved into, so that a change is one
         * event whether a delivery, a reconciliation pass or both saw it
         * (api.md "Reconciliation"). The payload of such events has
         * data.toStageId, and a "reconcile" one has triggeredAt = the
         * change's time in Lever (ms). With stage_id set, the event is a
         * duplicate (of the id in existing_id) when
         *   source "lever": a "reconcile" event of the same tenant,
         *     opportunity and stage exists whose triggeredAt lies within
         *     stage_window_ms of this event's received_at;
         *   source "reconcile": an accepted "lever" event of the same
         *     tenant, opportunity and stage was received within
         *     stage_window_ms of this event's triggeredAt (changed_at).
         * changed_at: the change's time for a "reconcile" event. */
        struct {
            const lb_event_rec *event;
            const lb_job_rec *jobs;
            size_t njobs;
            const char *hook_id;
            const char *stage_id;
            int64_t changed_at;
            int64_t stage_window_ms;
            int duplicate;
            char existing_id[LB_EVENT_ID_MAX + 1];
        } event_insert;
        /* Inserts or replaces workflow rec->id (of rec->tenant_id); on
         * update created_at is kept. out: created, created_at, updated_at. */
        struct {
            const lb_workflow_rec *rec;
            int created;
            int64_t created_at;
            int64_t updated_at;
        } workflow_put;
        /* LB_ENOTFOUND when the tenant has no such workflow. */
        struct {
            char tenant_id[LB_TENANT_ID_MAX + 1];
            char id[LB_WORKFLOW_ID_MAX + 1];
        } workflow_delete;
        /* out: every workflow, lb_malloc'd; lb_workflow_recs_free. in
         * (optional): tenant_id, only that tenant's (NULL: every tenant's). */
        struct {
            lb_workflow_rec *recs;
            size_t count;
            const char *tenant_id;
        } workflow_load_all;
        /* The tenant's events, newest first, strictly before the cursor
         * (before_at, before_id) when before_at > 0; at most limit (<=
         * LB_STORE_LIST_MAX). out: rows (lb_event_rows_free), more. */
        struct {
            char tenant_id[LB_TENANT_ID_MAX + 1];
            size_t limit;
            int64_t before_at;
            char before_id[LB_EVENT_ID_MAX + 1];
            lb_event_row *rows;
            size_t count;
            int more;
        } event_list;
        /* One event with its payload. out: row (lb_event_row_free). */
        struct {
            char tenant_id[LB_TENANT_ID_MAX + 1];
            char id[LB_EVENT_ID_MAX + 1];
            lb_event_row row;
        } event_get;
        /* The tenant's jobs, newest first, optionally of one status (-1:
         * any), before the cursor as event_list. out: recs (lb_job_recs_free). */
        struct {
            char tenant_id[LB_TENANT_ID_MAX + 1];
            int status;
            size_t limit;
            int64_t before_at;
            char before_id[LB_JOB_ID_MAX + 1];
            lb_job_rec *recs;
            size_t count;
            int more;
        } job_list;
        /* One job. out: rec (lb_job_rec_free). */
        struct {
            char tenant_id[LB_TENANT_ID_MAX + 1];
            char id[LB_JOB_ID_MAX + 1];
            lb_job_rec rec;
        } job_get;
        /* Claims (tenant, opportunity, assessment) for rec->job_id: inserted
         * when free. out: owned (1 when the claim is this job's, new or
         * earlier) and existing (the stored row; lb_invitation_rec_free).
         * Fenced as job_update: with lease_node set, only while the
         * tenant's lease names lease_node with lease_epoch, else
         * LB_ECONFLICT and nothing written. */
        struct {
            const lb_invitation_rec *rec;
            int owned;
            lb_invitation_rec existing;
            const char *lease_node;
            int64_t lease_epoch;
        } invitation_claim;
        /* Sets invitation_id, url, note_id and stage_id (NULL keeps the
         * stored value). Fenced as invitation_claim (the platform events
         * it carries are then not written either). */
        struct {
            const lb_invitation_rec *rec;
            const char *lease_node;
            int64_t lease_epoch;
        } invitation_update;
        /* out: for each tenant with failed jobs, its id and their number;
         * lb_malloc'd arrays (lb_free both). */
        struct {
            char (*tenants)[LB_TENANT_ID_MAX + 1];
            size_t *counts;
            size_t n;
        } job_failed_counts;
        /* out: rec (lb_invitation_rec_free); LB_ENOTFOUND when absent. */
        struct {
            char tenant_id[LB_TENANT_ID_MAX + 1];
            const char *opportunity_id;
            const char *assessment;
            lb_invitation_rec rec;
        } invitation_get;
        /* Retention: deletes up to `limit` (1..LB_STORE_PRUNE_MAX) finished
         * jobs (succeeded, failed, skipped, cancelled) last updated before
         * `before` (ms), then up to `limit` events received before it that
         * no job refers to any more. Kept whatever their age: the invitation
         * and failure-tag ledgers, the ids of results (a result posted again
         * is still a duplicate), and Lever deliveries inside the store's
         * dedupe window.
         * out: how many of each went. */
        struct {
            int64_t before;
            unsigned limit;
            size_t jobs, events;
        } prune;
        /* Adds each row's counts to the hour's stored ones (every replica
         * adds what it counted since its last write), then deletes the rows
         * of hours before `forget_before`. Rows in strictly ascending
         * (tenant_id by strcmp, hour) order, else LB_EINVAL: replicas lock
         * the rows they add to in one order, so two writes cannot
         * deadlock. */
        struct {
            const lb_stats_rec *recs;
            size_t count; /* 0..LB_STORE_STATS_MAX */
            int64_t forget_before;
        } stats_put;
        /* in: rows of hours >= since. out: recs (lb_free), count. */
        struct {
            int64_t since;
            lb_stats_rec *recs;
            size_t count;
        } stats_load;
        /* The events of source "reconcile" received at or after `since`
         * (ms), counted per tenant and hour (received_at / 1h), ordered by
         * tenant and hour. out: recs (lb_free), count. */
        struct {
            int64_t since;
            lb_hour_count_rec *recs;
            size_t count;
        } reconciled_counts;
        /* This node is alive: inserts or updates its row (last_seen_at =
         * the database's now), and deletes the rows of other nodes not seen
         * for forget_ms (> 0). leave 1: it is leaving (SIGTERM): its row is
         * deleted instead. */
        struct {
            const char *node;
            const char *advertise_url;
            int64_t forget_ms;
            int leave;
        } node_beat;
        /* out: every node (ordered by id; live: seen within live_ms), every
         * tenant's lease (ordered by tenant; a tenant without one has node
         * "", epoch 0, expired 1), and the database's now; lb_malloc'd:
         * lb_node_recs_free(nodes, nnodes), lb_free(leases). */
        struct {
            int64_t live_ms;
            lb_node_rec *nodes;
            size_t nnodes;
            lb_lease_rec *leases;
            size_t nleases;
            int64_t now;
        } cluster_read;
        /* Takes, renews and releases leases for node, each item on its own
         * (compare and set on the epoch: an item whose lease moved on, or
         * whose tenant is gone, gets ok 0). A take sets expires_at = now +
         * ttl_ms with the database's clock. items are the caller's, read
         * and written during the op (1..LB_STORE_LEASE_ITEMS_MAX), in strictly
         * ascending tenant_id order (bytewise; else LB_EINVAL). */
        struct {
            const char *node;
            int64_t ttl_ms;
            lb_lease_item *items;
            size_t count;
        } lease_write;
        /* Inserts a new backfill (rec: id, tenant_id, workflow_id, status,
         * created_at; counts 0, no offset). LB_ECONFLICT when the id
         * exists; LB_ENOTFOUND for an unknown tenant. */
        struct {
            const lb_backfill_rec *rec;
        } backfill_put;
        /* One page of a running backfill, all in this op's transaction:
         * the events (ops of kind LB_STORE_EVENT_INSERT, each run as if
         * submitted, its outputs set and its status in events[i].status;
         * their callbacks never run), then the backfill row: offset =
         * `offset` (the next page's; NULL with done), status "done" when
         * `done`, listed += nevents, and of those, queued += the ones that
         * made a new event whose opportunity is not already invited to
         * every one of `assessments` (none: no such check), skipped += the
         * others. Any failure rolls all of it back (op->status). LB_EINVAL
         * when the backfill is not running (cancelled meanwhile): nothing
         * written. out: the row's counts after the page. */
        struct {
            char tenant_id[LB_TENANT_ID_MAX + 1];
            char id[LB_BACKFILL_ID_MAX + 1];
            const char *offset;
            int done;
            lb_store_op *events; /* 0..LB_STORE_BACKFILL_EVENTS_MAX */
            size_t nevents;
            const char *const *assessments; /* 0..LB_STORE_BACKFILL_ASSESSMENTS_MAX */
            size_t nassessments;
            int64_t listed, queued, skipped;
        } backfill_page;
        /* A running backfill ends: status (done, failed or cancelled) and
         * last_error (NULL allowed). out: changed, 0 when it was not
         * running (or absent). */
        struct {
            char tenant_id[LB_TENANT_ID_MAX + 1];
            char id[LB_BACKFILL_ID_MAX + 1];
            const char *status;
            const char *last_error;
            int changed;
        } backfill_finish;
        /* out: rec (lb_backfill_rec_free); LB_ENOTFOUND when the tenant has
         * no such backfill. */
        struct {
            char tenant_id[LB_TENANT_ID_MAX + 1];
            char id[LB_BACKFILL_ID_MAX + 1];
            lb_backfill_rec rec;
        } backfill_get;
        /* The tenant's backfills, newest first, at most limit (1..
         * LB_STORE_LIST_MAX); tenant_id "" with running: every running
         * backfill of every tenant, oldest first, unbounded (start-up).
         * out: recs (lb_backfill_recs_free), count. */
        struct {
            char tenant_id[LB_TENANT_ID_MAX + 1];
            int running;
            size_t limit;
            lb_backfill_rec *recs;
            size_t count;
        } backfill_list;
    };
    lb_store_op *next; /* private to the store: queue link */
};

typedef struct lb_store lb_store;

/* 72 hours (api.md's default replay window) and 5 minutes of clock skew. */
#define LB_STORE_LEVER_DEDUPE_DEFAULT_MS ((72ll * 60 + 5) * 60 * 1000)

typedef struct {
    /* How far back, by arrival, an event of source "lever" can have a
     * duplicate: the replay window plus the clock skew the hook allows. A
     * backend may forget older keys of that source (the SQLite one keeps
     * this window of keys in memory, about 32 bytes per delivery). 0: the
     * default. */
    int64_t lever_dedupe_ms;
} lb_store_options;

/* Opens the store named by url and starts its backend (opt may be NULL):
 *   "sqlite:<path>"   SQLite file (created if missing; schema migrated here,
 *                     synchronously: call before serving)
 *   "postgres://...", "postgresql://..." or a key=value conninfo string
 *                     PostgreSQL through libpq (schema migrated here, under
 *                     an advisory lock; LB_EIO when it cannot connect)
 * Returns 0 and *out, or a negative code with one line in err. */
int lb_store_open(uv_loop_t *loop, const char *url, const lb_store_options *opt, lb_store **out,
                  char *err, size_t errlen);

/* Copies the SQLite store named by url to a new file at path, consistent as
 * of one moment, while a server may be writing it (src/store/backup.c).
 * Blocking; not on the loop. Never overwrites: LB_ECONFLICT when path exists.
 * Returns 0 (and the pages copied in *pages, which may be NULL) or a negative
 * code with one line in err; path then does not exist. */
int lb_store_backup(const char *url, const char *path, uint64_t *pages, char *err, size_t errlen);

/* Rows copied by lb_store_copy, per table; skipped: rows the target
 * already had (a Lever key SQLite held twice, outside its window). */
typedef struct {
    size_t tenants, meta, connections, hooks, workflows, events, jobs, invitations, event_keys;
    size_t failure_tags;
    size_t backfills;
    size_t skipped;
} lb_store_copy_stats;

/* Copies the SQLite store `from` ("sqlite:PATH", no server running on it:
 * LB_ECONFLICT) into the PostgreSQL database `to` (a libpq URI or
 * conninfo), which must hold no store yet (LB_ECONFLICT otherwise); all or
 * nothing, in one transaction (src/store/copy.c). Blocking; not on the
 * loop. 0 and *out, or a negative code with one line in err. */
int lb_store_copy(const char *from, const char *to, lb_store_copy_stats *out, char *err,
                  size_t errlen);

/* Queues op. Returns 0, and op->cb runs later on the loop thread exactly once;
 * or a negative code and op->cb is never called: LB_EINVAL (bad op: unknown
 * kind, no cb, missing input), LB_ECLOSED (lb_store_close was called),
 * LB_ETOOBIG (LB_STORE_QUEUE_MAX operations in flight). Loop thread only. */
int lb_store_submit(lb_store *s, lb_store_op *op);

/* Start-up only, before anything is served: submits op (its cb and data are
 * set here) and runs the store's loop until it completes. Returns the
 * submit's refusal or op->status; op's outputs are the caller's as after a
 * callback. */
int lb_store_run(lb_store *s, lb_store_op *op);

/* Stops accepting operations, completes every operation already submitted
 * (their callbacks run first), stops the backend, closes its handles, frees
 * the store and then calls cb(data) on the loop. Call once. */
void lb_store_close(lb_store *s, void (*cb)(void *data), void *data);

/* 1 while the database is open, the store is not closing and writes
 * succeed; else 0. For /readyz. Writes are known to fail after a batch
 * with writes failed (at open, the backend tries a write too) and to
 * succeed again after one committed; while they fail, the backend retries
 * a small write of its own about every second, so readiness returns by
 * itself when the disk has space again. Reads are served meanwhile. */
int lb_store_ready(const lb_store *s);

/* 1 while the store waits for its database at start: PostgreSQL could not
 * be reached when lb_store_open ran, which then succeeded all the same.
 * Meanwhile every op fails with LB_EIO, lb_store_ready() is 0, and the
 * store's thread keeps connecting with its backoff (100 ms doubling to
 * 5 s); once it gets through it migrates the schema and this turns 0. A
 * negative code (err gets one line): the database was reached but cannot
 * be used (its schema is newer than this binary, a migration step
 * failed); the store stays unusable and should be closed. 0 for a store
 * that had its database at open (SQLite always). Loop thread; the change
 * comes through the loop, so a caller waits with uv_run(UV_RUN_ONCE). */
int lb_store_waiting(const lb_store *s, char *err, size_t errlen);

/* 0 while writes succeed; else the code of the last write failure:
 * UV_ENOSPC (no space left on device: SQLITE_FULL) or LB_EIO. Loop
 * thread. */
int lb_store_write_error(const lb_store *s);

/* Counters since open, read on the loop thread (for /metrics). */
typedef struct {
    uint64_t commits;           /* batches committed */
    uint64_t commit_failures;   /* batches that failed as a whole (ops got LB_EIO) */
    uint64_t ops_committed;     /* operations in committed batches */
    double last_commit_seconds; /* duration of the last batch's transaction */
    size_t last_batch_ops;      /* operations in the last batch */
    size_t pending;             /* submitted, callback not run yet */
} lb_store_stats;

void lb_store_stats_get(const lb_store *s, lb_store_stats *out);

/* Called on the loop thread once per batch (committed or failed), before the
 * batch's op callbacks, with the duration of its transaction (BEGIN to end of
 * COMMIT) and its number of operations: feeds
 * leverbridge_store_commit_seconds. NULL turns it off. */
typedef void (*lb_store_commit_cb)(double seconds, size_t ops, void *data);
void lb_store_set_on_commit(lb_store *s, lb_store_commit_cb cb, void *data);

/* Several replicas (docs/internals/cluster.md "State sync"): what other
 * processes on the same database committed. The PostgreSQL backend sends,
 * in the transaction of each change, a notification naming the tenant:
 *   LB_STORE_CHANGED_STATE  the tenant's row, connection, hook or
 *                           workflows changed (or were deleted);
 *   LB_STORE_CHANGED_JOBS   jobs of the tenant were inserted or made
 *                           runnable again (an event's, a retry, a
 *                           platform event);
 *   LB_STORE_CHANGED_ANY    tenant NULL: notifications may have been
 *                           missed (the listener connected, reconnected,
 *                           or its queue overflowed): reload everything.
 * This process's own changes are not reported (it applied them). */
enum { LB_STORE_CHANGED_STATE = 1, LB_STORE_CHANGED_JOBS, LB_STORE_CHANGED_ANY };
typedef void (*lb_store_listen_cb)(void *data, int what, const char *tenant);

/* Starts reporting changes to cb on the loop thread until lb_store_close.
 * PostgreSQL: a second connection, on a thread of its own, LISTENs and
 * reconnects with the store's backoff; at most LB_STORE_NOTES_MAX reports
 * wait for the loop (past it: one LB_STORE_CHANGED_ANY). SQLite (one
 * process): nothing is ever reported. 0, or LB_EINVAL (called twice, or
 * no cb). Loop thread. */
#define LB_STORE_NOTES_MAX 4096
int lb_store_listen(lb_store *s, lb_store_listen_cb cb, void *data);
/* No more reports to the cb given to lb_store_listen (call before its data
 * is freed; the listening itself ends with lb_store_close). Loop thread. */
void lb_store_unlisten(lb_store *s);

/* The backend's name ("sqlite", "postgres"), for logs. */
const char *lb_store_backend(const lb_store *s);

#endif
