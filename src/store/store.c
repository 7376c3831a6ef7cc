/* The backend-independent part of the store: URL dispatch, argument checks,
 * the in-flight bound, statistics, completion and close; and the hand-off
 * between the loop and the store thread that every backend runs on (its
 * thread's loop included). Loop thread, but the store thread's own part
 * (thread_main, post_batch), marked. */
#include "store/backend.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "store/fault.h"

#include <math.h>
#include <sodium.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Per-kind rules shared by every backend. check: is the input valid (before
 * queueing). clear: empty the outputs without freeing (they hold garbage at
 * submit). discard: free the outputs of an op that failed, then clear them
 * (pure memory work: a backend's thread may call it, see backend.h).
 * NULL: nothing to do. readonly: the kind writes nothing, so it need not
 * share the fate of the batch's writes. A new kind adds one line here. */
typedef struct {
    int (*check)(const lb_store_op *op);
    void (*clear)(lb_store_op *op);
    void (*discard)(lb_store_op *op);
    int readonly;
} kind_rules;

static int check_id(const char *id)
{
    size_t n = strnlen(id, LB_TENANT_ID_MAX + 1);
    return n >= 1 && n <= LB_TENANT_ID_MAX ? 0 : LB_EINVAL;
}

static int check_failure_tag(const char *tag)
{
    size_t n = strnlen(tag, LB_FAILURE_TAG_MAX + 1);
    return n >= 1 && n <= LB_FAILURE_TAG_MAX ? 0 : LB_EINVAL;
}

static int check_tenant_upsert(const lb_store_op *op)
{
    const lb_tenant_rec *r = &op->tenant_upsert.rec;
    if (check_id(r->id) != 0 || r->name == NULL) return LB_EINVAL;
    if (r->api_addon != 0 && r->api_addon != 1) return LB_EINVAL;
    if (!isfinite(r->lever_rate) || r->lever_rate < 0 || r->lever_burst < 0) return LB_EINVAL;
    if (r->updated_at < 0) return LB_EINVAL;
    if (r->failure_tag != NULL && check_failure_tag(r->failure_tag) != 0) return LB_EINVAL;
    return 0;
}

static void clear_tenant_upsert(lb_store_op *op)
{
    op->tenant_upsert.created = 0;
}

static int check_tenant_delete(const lb_store_op *op)
{
    return check_id(op->tenant_delete.id);
}

static void clear_tenant_load_all(lb_store_op *op)
{
    op->tenant_load_all.recs = NULL;
    op->tenant_load_all.count = 0;
}

/* The loads' optional tenant filter. */
static int check_tenant_load_all(const lb_store_op *op)
{
    const char *t = op->tenant_load_all.tenant_id;
    return t == NULL ? 0 : check_id(t);
}

static int check_conn_load_all(const lb_store_op *op)
{
    const char *t = op->conn_load_all.tenant_id;
    return t == NULL ? 0 : check_id(t);
}

static int check_workflow_load_all(const lb_store_op *op)
{
    const char *t = op->workflow_load_all.tenant_id;
    return t == NULL ? 0 : check_id(t);
}

static void discard_tenant_load_all(lb_store_op *op)
{
    lb_tenant_recs_free(op->tenant_load_all.recs, op->tenant_load_all.count);
    clear_tenant_load_all(op);
}

static int check_meta_key(const char *key)
{
    if (key == NULL) return LB_EINVAL;
    size_t n = strnlen(key, LB_STORE_META_KEY_MAX + 1);
    return n >= 1 && n <= LB_STORE_META_KEY_MAX ? 0 : LB_EINVAL;
}

static int check_meta_get(const lb_store_op *op)
{
    return check_meta_key(op->meta_get.key);
}

static void clear_meta_get(lb_store_op *op)
{
    op->meta_get.value = NULL;
    op->meta_get.len = 0;
}

static void discard_meta_get(lb_store_op *op)
{
    lb_free(op->meta_get.value);
    clear_meta_get(op);
}

static int check_meta_put(const lb_store_op *op)
{
    if (op->meta_put.value == NULL && op->meta_put.len > 0) return LB_EINVAL;
    return check_meta_key(op->meta_put.key);
}

static int check_job(const lb_job_rec *r)
{
    size_t n = strnlen(r->id, LB_JOB_ID_MAX + 1);
    if (n < 1 || n > LB_JOB_ID_MAX || check_id(r->tenant_id) != 0) return LB_EINVAL;
    if (r->status < 0 || r->status >= LB_JOB_STATUS_END || r->attempts < 0) return LB_EINVAL;
    return 0;
}

static int check_job_insert(const lb_store_op *op)
{
    if (op->job_insert.recs == NULL || op->job_insert.count == 0) return LB_EINVAL;
    for (size_t i = 0; i < op->job_insert.count; i++)
        if (check_job(&op->job_insert.recs[i]) != 0 || op->job_insert.recs[i].action == NULL)
            return LB_EINVAL;
    return 0;
}

static int check_lease_node(const char *id);

static int check_job_update(const lb_store_op *op)
{
    if (op->job_update.lease_node != NULL &&
        (check_lease_node(op->job_update.lease_node) != 0 || op->job_update.lease_epoch < 1))
        return LB_EINVAL;
    if (op->job_update.rec == NULL || check_job(op->job_update.rec) != 0) return LB_EINVAL;
    const lb_job_rec *t = op->job_update.tag_job;
    if (t == NULL) return op->job_update.tag == NULL ? 0 : LB_EINVAL;
    if (check_job(t) != 0 || t->action == NULL || t->opportunity_id == NULL ||
        op->job_update.tag == NULL || check_failure_tag(op->job_update.tag) != 0)
        return LB_EINVAL;
    return 0;
}

static void clear_job_update(lb_store_op *op)
{
    op->job_update.tag_added = 0;
}

static void clear_job_load_active(lb_store_op *op)
{
    op->job_load_active.recs = NULL;
    op->job_load_active.count = 0;
}

static void discard_job_load_active(lb_store_op *op)
{
    lb_job_recs_free(op->job_load_active.recs, op->job_load_active.count);
    clear_job_load_active(op);
}

static int check_conn_put(const lb_store_op *op)
{
    const lb_conn_rec *r = op->conn_put.rec;
    return r != NULL && r->status != NULL ? check_id(r->tenant_id) : LB_EINVAL;
}

static int check_conn_delete(const lb_store_op *op)
{
    return check_id(op->conn_delete.tenant_id);
}

static void clear_conn_load_all(lb_store_op *op)
{
    const char *tenant = op->conn_load_all.tenant_id; /* an input */
    memset(&op->conn_load_all, 0, sizeof(op->conn_load_all));
    op->conn_load_all.tenant_id = tenant;
}

static void discard_conn_load_all(lb_store_op *op)
{
    for (size_t i = 0; i < op->conn_load_all.nconns; i++)
        lb_conn_rec_free(&op->conn_load_all.conns[i]);
    for (size_t i = 0; i < op->conn_load_all.nhooks; i++)
        lb_hook_rec_free(&op->conn_load_all.hooks[i]);
    lb_free(op->conn_load_all.conns);
    lb_free(op->conn_load_all.hooks);
    clear_conn_load_all(op);
}

static int check_hook_put(const lb_store_op *op)
{
    const lb_hook_rec *r = op->hook_put.rec;
    if (r == NULL || r->status == NULL || check_id(r->tenant_id) != 0) return LB_EINVAL;
    size_t n = strnlen(r->id, LB_HOOK_ID_MAX + 1);
    return n >= 1 && n <= LB_HOOK_ID_MAX ? 0 : LB_EINVAL;
}

static int check_event_insert(const lb_store_op *op)
{
    const lb_event_rec *e = op->event_insert.event;
    if (e == NULL || e->source == NULL || e->type == NULL || e->dedupe_key == NULL ||
        e->status == NULL || check_id(e->tenant_id) != 0)
        return LB_EINVAL;
    size_t n = strnlen(e->id, LB_EVENT_ID_MAX + 1);
    if (n < 1 || n > LB_EVENT_ID_MAX) return LB_EINVAL;
    for (size_t i = 0; i < op->event_insert.njobs; i++)
        if (check_job(&op->event_insert.jobs[i]) != 0) return LB_EINVAL;
    return 0;
}

static void clear_event_insert(lb_store_op *op)
{
    op->event_insert.duplicate = 0;
    op->event_insert.existing_id[0] = '\0';
}

static int check_workflow_put(const lb_store_op *op)
{
    const lb_workflow_rec *r = op->workflow_put.rec;
    if (r == NULL || r->body == NULL || check_id(r->tenant_id) != 0) return LB_EINVAL;
    size_t n = strnlen(r->id, LB_WORKFLOW_ID_MAX + 1);
    return n >= 1 && n <= LB_WORKFLOW_ID_MAX ? 0 : LB_EINVAL;
}

static int check_workflow_delete(const lb_store_op *op)
{
    return check_id(op->workflow_delete.tenant_id);
}

static void clear_workflow_load_all(lb_store_op *op)
{
    op->workflow_load_all.recs = NULL;
    op->workflow_load_all.count = 0;
}

static void discard_workflow_load_all(lb_store_op *op)
{
    lb_workflow_recs_free(op->workflow_load_all.recs, op->workflow_load_all.count);
    clear_workflow_load_all(op);
}

static int check_event_list(const lb_store_op *op)
{
    if (op->event_list.limit < 1 || op->event_list.limit > LB_STORE_LIST_MAX) return LB_EINVAL;
    return check_id(op->event_list.tenant_id);
}

static void clear_event_list(lb_store_op *op)
{
    op->event_list.rows = NULL;
    op->event_list.count = 0;
    op->event_list.more = 0;
}

static void discard_event_list(lb_store_op *op)
{
    lb_event_rows_free(op->event_list.rows, op->event_list.count);
    clear_event_list(op);
}

static int check_event_get(const lb_store_op *op)
{
    return check_id(op->event_get.tenant_id);
}

static void clear_event_get(lb_store_op *op)
{
    memset(&op->event_get.row, 0, sizeof(op->event_get.row));
}

static void discard_event_get(lb_store_op *op)
{
    lb_event_row_free(&op->event_get.row);
}

static int check_job_list(const lb_store_op *op)
{
    if (op->job_list.limit < 1 || op->job_list.limit > LB_STORE_LIST_MAX) return LB_EINVAL;
    if (op->job_list.status < -1 || op->job_list.status >= LB_JOB_STATUS_END) return LB_EINVAL;
    return check_id(op->job_list.tenant_id);
}

static void clear_job_list(lb_store_op *op)
{
    op->job_list.recs = NULL;
    op->job_list.count = 0;
    op->job_list.more = 0;
}

static void discard_job_list(lb_store_op *op)
{
    lb_job_recs_free(op->job_list.recs, op->job_list.count);
    clear_job_list(op);
}

static int check_job_get(const lb_store_op *op)
{
    return check_id(op->job_get.tenant_id);
}

static void clear_job_get(lb_store_op *op)
{
    memset(&op->job_get.rec, 0, sizeof(op->job_get.rec));
}

static void discard_job_get(lb_store_op *op)
{
    lb_job_rec_free(&op->job_get.rec);
}

static int check_invitation(const lb_invitation_rec *r)
{
    if (r == NULL || r->opportunity_id == NULL || r->assessment == NULL) return LB_EINVAL;
    return check_id(r->tenant_id);
}

/* A fenced write's lease: none, or a node id and an epoch of 1 or more. */
static int check_fence(const char *node, int64_t epoch)
{
    return node == NULL || (check_lease_node(node) == 0 && epoch >= 1) ? 0 : LB_EINVAL;
}

static int check_invitation_claim(const lb_store_op *op)
{
    const lb_invitation_rec *r = op->invitation_claim.rec;
    if (check_fence(op->invitation_claim.lease_node, op->invitation_claim.lease_epoch) != 0)
        return LB_EINVAL;
    return check_invitation(r) == 0 && r->job_id != NULL ? 0 : LB_EINVAL;
}

static void clear_invitation_claim(lb_store_op *op)
{
    op->invitation_claim.owned = 0;
    memset(&op->invitation_claim.existing, 0, sizeof(op->invitation_claim.existing));
}

static void discard_invitation_claim(lb_store_op *op)
{
    lb_invitation_rec_free(&op->invitation_claim.existing);
    clear_invitation_claim(op);
}

static int check_invitation_update(const lb_store_op *op)
{
    if (check_fence(op->invitation_update.lease_node, op->invitation_update.lease_epoch) != 0)
        return LB_EINVAL;
    return check_invitation(op->invitation_update.rec);
}

static int check_invitation_get(const lb_store_op *op)
{
    if (op->invitation_get.opportunity_id == NULL || op->invitation_get.assessment == NULL)
        return LB_EINVAL;
    return check_id(op->invitation_get.tenant_id);
}

static void clear_invitation_get(lb_store_op *op)
{
    memset(&op->invitation_get.rec, 0, sizeof(op->invitation_get.rec));
}

static void discard_invitation_get(lb_store_op *op)
{
    lb_invitation_rec_free(&op->invitation_get.rec);
}

static void clear_job_failed_counts(lb_store_op *op)
{
    memset(&op->job_failed_counts, 0, sizeof(op->job_failed_counts));
}

static void discard_job_failed_counts(lb_store_op *op)
{
    lb_free(op->job_failed_counts.tenants);
    lb_free(op->job_failed_counts.counts);
    clear_job_failed_counts(op);
}

static int check_prune(const lb_store_op *op)
{
    if (op->prune.before <= 0 || op->prune.limit == 0 || op->prune.limit > LB_STORE_PRUNE_MAX)
        return LB_EINVAL;
    return 0;
}

static void clear_prune(lb_store_op *op)
{
    op->prune.jobs = op->prune.events = 0;
}

static int check_stats_put(const lb_store_op *op)
{
    if (op->stats_put.count > LB_STORE_STATS_MAX ||
        (op->stats_put.count > 0 && op->stats_put.recs == NULL))
        return LB_EINVAL;
    for (size_t i = 1; i < op->stats_put.count; i++) {
        const lb_stats_rec *a = &op->stats_put.recs[i - 1], *b = &op->stats_put.recs[i];
        int c = strcmp(a->tenant_id, b->tenant_id);
        if (c > 0 || (c == 0 && a->hour >= b->hour)) return LB_EINVAL;
    }
    return 0;
}

static void clear_stats_load(lb_store_op *op)
{
    op->stats_load.recs = NULL;
    op->stats_load.count = 0;
}

static void discard_stats_load(lb_store_op *op)
{
    lb_free(op->stats_load.recs);
    clear_stats_load(op);
}

static void clear_reconciled_counts(lb_store_op *op)
{
    op->reconciled_counts.recs = NULL;
    op->reconciled_counts.count = 0;
}

static void discard_reconciled_counts(lb_store_op *op)
{
    lb_free(op->reconciled_counts.recs);
    clear_reconciled_counts(op);
}

static int check_node_id(const char *id)
{
    if (id == NULL) return LB_EINVAL;
    size_t n = strnlen(id, LB_NODE_ID_MAX + 1);
    return n >= 1 && n <= LB_NODE_ID_MAX ? 0 : LB_EINVAL;
}

static int check_lease_node(const char *id)
{
    return check_node_id(id);
}

static int check_job_load_active(const lb_store_op *op)
{
    if (op->job_load_active.lease_node != NULL &&
        check_node_id(op->job_load_active.lease_node) != 0)
        return LB_EINVAL;
    return op->job_load_active.changed_since >= 0 ? 0 : LB_EINVAL;
}

static int check_node_beat(const lb_store_op *op)
{
    if (check_node_id(op->node_beat.node) != 0 || op->node_beat.advertise_url == NULL)
        return LB_EINVAL;
    return op->node_beat.forget_ms >= 0 ? 0 : LB_EINVAL;
}

static int check_cluster_read(const lb_store_op *op)
{
    return op->cluster_read.live_ms > 0 ? 0 : LB_EINVAL;
}

static void clear_cluster_read(lb_store_op *op)
{
    op->cluster_read.nodes = NULL;
    op->cluster_read.nnodes = 0;
    op->cluster_read.leases = NULL;
    op->cluster_read.nleases = 0;
    op->cluster_read.now = 0;
}

static void discard_cluster_read(lb_store_op *op)
{
    lb_node_recs_free(op->cluster_read.nodes, op->cluster_read.nnodes);
    lb_free(op->cluster_read.leases);
    clear_cluster_read(op);
}

static int check_lease_write(const lb_store_op *op)
{
    const lb_store_op *o = op;
    if (check_node_id(o->lease_write.node) != 0 || o->lease_write.ttl_ms <= 0) return LB_EINVAL;
    if (o->lease_write.items == NULL || o->lease_write.count == 0 ||
        o->lease_write.count > LB_STORE_LEASE_ITEMS_MAX)
        return LB_EINVAL;
    for (size_t i = 0; i < o->lease_write.count; i++) {
        const lb_lease_item *it = &o->lease_write.items[i];
        if (check_id(it->tenant_id) != 0 || it->epoch < 0) return LB_EINVAL;
        if (it->action != LB_LEASE_TAKE && it->action != LB_LEASE_RENEW &&
            it->action != LB_LEASE_RELEASE)
            return LB_EINVAL;
        /* Ascending tenant ids: every replica locks lease rows in one order,
         * so two batches never deadlock on them. */
        if (i > 0 && strcmp(o->lease_write.items[i - 1].tenant_id, it->tenant_id) >= 0)
            return LB_EINVAL;
    }
    return 0;
}

static void clear_lease_write(lb_store_op *op)
{
    for (size_t i = 0; i < op->lease_write.count; i++)
        op->lease_write.items[i].ok = 0;
}

void lb_node_recs_free(lb_node_rec *recs, size_t count)
{
    if (recs == NULL) return;
    for (size_t i = 0; i < count; i++)
        lb_free(recs[i].advertise_url);
    lb_free(recs);
}

static int check_backfill_id(const char *id)
{
    size_t n = strnlen(id, LB_BACKFILL_ID_MAX + 1);
    return n >= 1 && n <= LB_BACKFILL_ID_MAX ? 0 : LB_EINVAL;
}

static int check_backfill_put(const lb_store_op *op)
{
    const lb_backfill_rec *r = op->backfill_put.rec;
    if (r == NULL || check_id(r->tenant_id) != 0 || check_backfill_id(r->id) != 0) return LB_EINVAL;
    size_t n = strnlen(r->workflow_id, LB_WORKFLOW_ID_MAX + 1);
    if (n < 1 || n > LB_WORKFLOW_ID_MAX || r->status[0] == '\0') return LB_EINVAL;
    return 0;
}

static int check_backfill_page(const lb_store_op *op)
{
    if (check_id(op->backfill_page.tenant_id) != 0 || check_backfill_id(op->backfill_page.id) != 0)
        return LB_EINVAL;
    if (op->backfill_page.nevents > LB_STORE_BACKFILL_EVENTS_MAX ||
        (op->backfill_page.nevents > 0 && op->backfill_page.events == NULL))
        return LB_EINVAL;
    if (op->backfill_page.nassessments > LB_STORE_BACKFILL_ASSESSMENTS_MAX ||
        (op->backfill_page.nassessments > 0 && op->backfill_page.assessments == NULL))
        return LB_EINVAL;
    for (size_t i = 0; i < op->backfill_page.nassessments; i++)
        if (op->backfill_page.assessments[i] == NULL) return LB_EINVAL;
    for (size_t i = 0; i < op->backfill_page.nevents; i++) {
        const lb_store_op *e = &op->backfill_page.events[i];
        if (e->kind != LB_STORE_EVENT_INSERT || e->nnotify != 0 || check_event_insert(e) != 0 ||
            strcmp(e->event_insert.event->tenant_id, op->backfill_page.tenant_id) != 0)
            return LB_EINVAL;
    }
    return 0;
}

static void clear_backfill_page(lb_store_op *op)
{
    op->backfill_page.listed = op->backfill_page.queued = op->backfill_page.skipped = 0;
    for (size_t i = 0; i < op->backfill_page.nevents; i++) {
        op->backfill_page.events[i].status = 0;
        clear_event_insert(&op->backfill_page.events[i]);
    }
}

static int check_backfill_finish(const lb_store_op *op)
{
    if (op->backfill_finish.status == NULL) return LB_EINVAL;
    if (check_id(op->backfill_finish.tenant_id) != 0) return LB_EINVAL;
    return check_backfill_id(op->backfill_finish.id);
}

static void clear_backfill_finish(lb_store_op *op)
{
    op->backfill_finish.changed = 0;
}

static int check_backfill_get(const lb_store_op *op)
{
    return check_id(op->backfill_get.tenant_id);
}

static void clear_backfill_get(lb_store_op *op)
{
    memset(&op->backfill_get.rec, 0, sizeof(op->backfill_get.rec));
}

static void discard_backfill_get(lb_store_op *op)
{
    lb_backfill_rec_free(&op->backfill_get.rec);
}

static int check_backfill_list(const lb_store_op *op)
{
    if (op->backfill_list.tenant_id[0] == '\0') return op->backfill_list.running ? 0 : LB_EINVAL;
    if (op->backfill_list.limit < 1 || op->backfill_list.limit > LB_STORE_LIST_MAX)
        return LB_EINVAL;
    return check_id(op->backfill_list.tenant_id);
}

static void clear_backfill_list(lb_store_op *op)
{
    op->backfill_list.recs = NULL;
    op->backfill_list.count = 0;
}

static void discard_backfill_list(lb_store_op *op)
{
    lb_backfill_recs_free(op->backfill_list.recs, op->backfill_list.count);
    clear_backfill_list(op);
}

/* The notify_platform jobs a write may carry (store.h, lb_store_op.notify). */
static int check_notify(const lb_store_op *op)
{
    if (op->nnotify == 0) return op->notify == NULL ? 0 : LB_EINVAL;
    switch (op->kind) {
    case LB_STORE_CONN_PUT:
    case LB_STORE_CONN_DELETE:
    case LB_STORE_HOOK_PUT:
    case LB_STORE_INVITATION_UPDATE:
    case LB_STORE_JOB_UPDATE:
    case LB_STORE_META_PUT:
        break;
    default:
        return LB_EINVAL;
    }
    if (op->notify == NULL || op->nnotify > LB_STORE_NOTIFY_MAX) return LB_EINVAL;
    for (size_t i = 0; i < op->nnotify; i++)
        if (check_job(&op->notify[i]) != 0 || op->notify[i].action == NULL) return LB_EINVAL;
    return 0;
}

static const kind_rules rules[LB_STORE_OP_KIND_END] = {
    [LB_STORE_TENANT_UPSERT] = {check_tenant_upsert, clear_tenant_upsert, clear_tenant_upsert},
    [LB_STORE_TENANT_DELETE] = {check_tenant_delete, NULL, NULL},
    [LB_STORE_TENANT_LOAD_ALL] = {check_tenant_load_all, clear_tenant_load_all,
                                  discard_tenant_load_all, 1},
    [LB_STORE_META_GET] = {check_meta_get, clear_meta_get, discard_meta_get, 1},
    [LB_STORE_META_PUT] = {check_meta_put, NULL, NULL},
    [LB_STORE_JOB_INSERT] = {check_job_insert, NULL, NULL},
    [LB_STORE_JOB_UPDATE] = {check_job_update, clear_job_update, clear_job_update},
    [LB_STORE_JOB_LOAD_ACTIVE] = {check_job_load_active, clear_job_load_active,
                                  discard_job_load_active, 1},
    [LB_STORE_CONN_PUT] = {check_conn_put, NULL, NULL},
    [LB_STORE_CONN_DELETE] = {check_conn_delete, NULL, NULL},
    [LB_STORE_CONN_LOAD_ALL] = {check_conn_load_all, clear_conn_load_all, discard_conn_load_all, 1},
    [LB_STORE_HOOK_PUT] = {check_hook_put, NULL, NULL},
    [LB_STORE_EVENT_INSERT] = {check_event_insert, clear_event_insert, clear_event_insert},
    [LB_STORE_WORKFLOW_PUT] = {check_workflow_put, NULL, NULL},
    [LB_STORE_WORKFLOW_DELETE] = {check_workflow_delete, NULL, NULL},
    [LB_STORE_WORKFLOW_LOAD_ALL] = {check_workflow_load_all, clear_workflow_load_all,
                                    discard_workflow_load_all, 1},
    [LB_STORE_EVENT_LIST] = {check_event_list, clear_event_list, discard_event_list, 1},
    [LB_STORE_EVENT_GET] = {check_event_get, clear_event_get, discard_event_get, 1},
    [LB_STORE_JOB_LIST] = {check_job_list, clear_job_list, discard_job_list, 1},
    [LB_STORE_JOB_GET] = {check_job_get, clear_job_get, discard_job_get, 1},
    [LB_STORE_INVITATION_CLAIM] = {check_invitation_claim, clear_invitation_claim,
                                   discard_invitation_claim},
    [LB_STORE_INVITATION_UPDATE] = {check_invitation_update, NULL, NULL},
    [LB_STORE_INVITATION_GET] = {check_invitation_get, clear_invitation_get, discard_invitation_get,
                                 1},
    [LB_STORE_JOB_FAILED_COUNTS] = {NULL, clear_job_failed_counts, discard_job_failed_counts, 1},
    [LB_STORE_PRUNE] = {check_prune, clear_prune, clear_prune},
    [LB_STORE_STATS_PUT] = {check_stats_put, NULL, NULL},
    [LB_STORE_STATS_LOAD] = {NULL, clear_stats_load, discard_stats_load, 1},
    [LB_STORE_RECONCILED_COUNTS] = {NULL, clear_reconciled_counts, discard_reconciled_counts, 1},
    [LB_STORE_NODE_BEAT] = {check_node_beat, NULL, NULL},
    [LB_STORE_CLUSTER_READ] = {check_cluster_read, clear_cluster_read, discard_cluster_read, 1},
    [LB_STORE_LEASE_WRITE] = {check_lease_write, clear_lease_write, clear_lease_write},
    [LB_STORE_BACKFILL_PUT] = {check_backfill_put, NULL, NULL},
    [LB_STORE_BACKFILL_PAGE] = {check_backfill_page, clear_backfill_page, clear_backfill_page},
    [LB_STORE_BACKFILL_FINISH] = {check_backfill_finish, clear_backfill_finish,
                                  clear_backfill_finish},
    [LB_STORE_BACKFILL_GET] = {check_backfill_get, clear_backfill_get, discard_backfill_get, 1},
    [LB_STORE_BACKFILL_LIST] = {check_backfill_list, clear_backfill_list, discard_backfill_list, 1},
};

void lb_workflow_rec_free(lb_workflow_rec *r)
{
    lb_free(r->body);
    r->body = NULL;
}

void lb_workflow_recs_free(lb_workflow_rec *recs, size_t count)
{
    if (recs == NULL) return;
    for (size_t i = 0; i < count; i++)
        lb_workflow_rec_free(&recs[i]);
    lb_free(recs);
}

void lb_event_row_free(lb_event_row *r)
{
    lb_free(r->source);
    lb_free(r->type);
    lb_free(r->status);
    lb_free(r->opportunity_id);
    lb_free(r->payload);
    for (size_t i = 0; i < r->njobs; i++)
        lb_free(r->jobs[i]);
    lb_free(r->jobs);
    memset(r, 0, sizeof(*r));
}

void lb_event_rows_free(lb_event_row *rows, size_t count)
{
    if (rows == NULL) return;
    for (size_t i = 0; i < count; i++)
        lb_event_row_free(&rows[i]);
    lb_free(rows);
}

void lb_backfill_rec_free(lb_backfill_rec *r)
{
    lb_free(r->offset);
    lb_free(r->last_error);
    r->offset = r->last_error = NULL;
}

void lb_backfill_recs_free(lb_backfill_rec *recs, size_t count)
{
    if (recs == NULL) return;
    for (size_t i = 0; i < count; i++)
        lb_backfill_rec_free(&recs[i]);
    lb_free(recs);
}

void lb_invitation_rec_free(lb_invitation_rec *r)
{
    lb_free(r->opportunity_id);
    lb_free(r->assessment);
    lb_free(r->job_id);
    lb_free(r->invitation_id);
    lb_free(r->url);
    lb_free(r->note_id);
    lb_free(r->stage_id);
    r->opportunity_id = r->assessment = r->job_id = r->invitation_id = r->url = r->note_id = NULL;
    r->stage_id = NULL;
}

void lb_conn_rec_free(lb_conn_rec *r)
{
    lb_free(r->status);
    lb_free(r->auth);
    if (r->secret != NULL) sodium_memzero(r->secret, r->secret_len);
    lb_free(r->secret);
    lb_free(r->permissions_missing);
    r->status = r->auth = r->permissions_missing = NULL;
    r->secret = NULL;
}

void lb_hook_rec_free(lb_hook_rec *r)
{
    lb_free(r->lever_webhook_id);
    lb_free(r->signature_token);
    lb_free(r->status);
    lb_free(r->last_error);
    r->lever_webhook_id = r->status = r->last_error = NULL;
    r->signature_token = NULL;
}

static const char *const job_status_names[LB_JOB_STATUS_END] = {
    "queued", "running", "retrying", "succeeded", "failed", "skipped", "cancelled"};

const char *lb_job_status_name(int status)
{
    return status >= 0 && status < LB_JOB_STATUS_END ? job_status_names[status] : NULL;
}

int lb_job_status_parse(const char *s)
{
    for (int i = 0; s != NULL && i < LB_JOB_STATUS_END; i++)
        if (strcmp(s, job_status_names[i]) == 0) return i;
    return -1;
}

void lb_job_rec_free(lb_job_rec *r)
{
    lb_free(r->event_id);
    lb_free(r->workflow_id);
    lb_free(r->action);
    lb_free(r->opportunity_id);
    lb_free(r->last_error);
    lb_free(r->steps);
    r->event_id = r->workflow_id = r->action = r->opportunity_id = r->last_error = r->steps = NULL;
}

void lb_job_recs_free(lb_job_rec *recs, size_t count)
{
    if (recs == NULL) return;
    for (size_t i = 0; i < count; i++)
        lb_job_rec_free(&recs[i]);
    lb_free(recs);
}

void lb_tenant_rec_free(lb_tenant_rec *r)
{
    lb_free(r->name);
    lb_free(r->failure_tag);
    r->name = r->failure_tag = NULL;
}

void lb_tenant_recs_free(lb_tenant_rec *recs, size_t count)
{
    if (recs == NULL) return;
    for (size_t i = 0; i < count; i++)
        lb_tenant_rec_free(&recs[i]);
    lb_free(recs);
}

int lb_store_open(uv_loop_t *loop, const char *url, const lb_store_options *opt, lb_store **out,
                  char *err, size_t errlen)
{
    lb_store_options o = opt ? *opt : (lb_store_options){0};
    if (o.lever_dedupe_ms <= 0) o.lever_dedupe_ms = LB_STORE_LEVER_DEDUPE_DEFAULT_MS;
    *out = NULL;
    if (err != NULL && errlen > 0) err[0] = '\0';
    if (strncmp(url, "sqlite:", 7) == 0) {
        const char *path = url + 7;
        if (path[0] == '\0') {
            snprintf(err, errlen, "store URL \"%s\" names no file", url);
            return LB_EINVAL;
        }
        return lb_store_sqlite_open(loop, path, &o, out, err, errlen);
    }
    if (lb_store__is_pg_url(url)) return lb_store_pg_open(loop, url, &o, out, err, errlen);
    snprintf(err, errlen,
             "unknown store URL scheme (expected sqlite:<path>, postgres://... or a libpq "
             "conninfo string)");
    return LB_EINVAL;
}

int lb_store__is_pg_url(const char *url)
{
    if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0) return 1;
    /* key=value conninfo ("host=db dbname=lb"): a keyword, then '=' */
    size_t k = strspn(url, "abcdefghijklmnopqrstuvwxyz_");
    while (url[k] == ' ')
        k++;
    return k > 0 && url[k] == '=';
}

/* ---- the hand-off (docs/internals/store.md, "Threads") ------------------ */

static void complete(lb_store *s, lb_store_op *head, size_t count, double seconds, int committed,
                     int error);

int lb_store__init(lb_store *s, const lb_store_vtable *vt, uv_loop_t *loop, char *err,
                   size_t errlen)
{
    memset(s, 0, sizeof(*s));
    s->vt = vt;
    s->loop = loop;
    int rc = uv_mutex_init(&s->h.mu);
    if (rc != 0) {
        snprintf(err, errlen, "store: mutex: %s", uv_strerror(rc));
        return rc;
    }
    if ((rc = uv_cond_init(&s->h.cond)) != 0) {
        snprintf(err, errlen, "store: condition variable: %s", uv_strerror(rc));
        uv_mutex_destroy(&s->h.mu);
        return rc;
    }
    return 0;
}

void lb_store__release(lb_store *s)
{
    uv_cond_destroy(&s->h.cond);
    uv_mutex_destroy(&s->h.mu);
}

double lb_store__mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void lb_store__one_line(char *s)
{
    for (char *p = s; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == ' ')
        s[--n] = '\0';
}

int lb_store__schema_check(int current, int latest, char *err, size_t errlen)
{
    if (current <= latest) return 0;
    snprintf(err, errlen,
             "database schema version %d is newer than this leverbridge knows (%d): "
             "upgrade leverbridge",
             current, latest);
    return LB_EINVAL;
}

/* Names the calling thread (top -H, /proc/<pid>/task/<tid>/comm), at most 15
 * characters. */
static void name_thread(const char *name)
{
#ifdef __linux__
    prctl(PR_SET_NAME, name, 0, 0, 0);
#else
    (void)name;
#endif
}

/* Store thread: appends a finished batch to `done` and wakes the loop.
 * Called with mu held; returns with it held. */
static void post_batch(lb_store *s, lb_store_batch *b)
{
    lb_store_handoff *h = &s->h;
    if (h->done_tail != NULL)
        h->done_tail->next = b;
    else
        h->done_head = b;
    h->done_tail = b;
    int notify = h->notify;
    uv_mutex_unlock(&h->mu);
    if (notify) uv_async_send(&h->async);
    uv_mutex_lock(&h->mu);
}

/* Store thread: waits for ops (the backend's idle work on each timeout),
 * takes at most batch_max of them, runs them as one batch and posts it;
 * once stopping and `in` is empty, closes the connection and says so. */
static void thread_main(void *arg)
{
    lb_store *s = arg;
    lb_store_handoff *h = &s->h;
    name_thread(s->vt->thread_name);
    uv_mutex_lock(&h->mu);
    for (;;) {
        while (h->in_head == NULL && !h->stop) {
            uint64_t ms = s->vt->idle_wait_ms(s);
            int rc = uv_cond_timedwait(&h->cond, &h->mu, ms * 1000000ull);
            if (rc != UV_ETIMEDOUT || h->in_head != NULL || h->stop) continue;
            uv_mutex_unlock(&h->mu);
            lb_store_batch p = {0};
            s->vt->idle(s, &p);
            uv_mutex_lock(&h->mu);
            if (p.wrote || p.reached) {
                lb_store_batch *b = LB_NEW(lb_store_batch);
                *b = p;
                post_batch(s, b);
            }
        }
        if (h->in_head == NULL) break; /* stopping, and nothing left */
        lb_store_batch *b = LB_NEW(lb_store_batch);
        b->head = h->in_head;
        size_t n = 1;
        lb_store_op *last = h->in_head;
        while ((s->vt->batch_max == 0 || n < s->vt->batch_max) && last->next != NULL) {
            last = last->next;
            n++;
        }
        h->in_head = last->next;
        if (h->in_head == NULL) h->in_tail = NULL;
        last->next = NULL;
        h->in_count -= n;
        b->count = n;
        b->error = LB_EIO;
        for (lb_store_op *op = b->head; op != NULL; op = op->next)
            b->wrote |= !lb_store__op_readonly(op->kind);
        uv_mutex_unlock(&h->mu);

        s->vt->run(s, b);

        uv_mutex_lock(&h->mu);
        post_batch(s, b);
    }
    uv_mutex_unlock(&h->mu);

    s->vt->thread_end(s);

    uv_mutex_lock(&h->mu);
    h->stopped = 1;
    int notify = h->notify;
    uv_mutex_unlock(&h->mu);
    /* The loop joins this thread before closing the handle, so the handle is
     * alive until this call returns. */
    if (notify) uv_async_send(&h->async);
}

/* The async handle is referenced only while ops are in flight (or the store
 * is closing): an idle store does not keep the loop alive. */
static void update_ref(lb_store *s)
{
    if (s->stats.pending > 0 || s->closing)
        uv_ref((uv_handle_t *)&s->h.async);
    else
        uv_unref((uv_handle_t *)&s->h.async);
}

/* Moves this turn's ops to the store thread: one lock and one wake-up. */
static void flush_local(lb_store *s)
{
    lb_store_handoff *h = &s->h;
    if (h->local_head == NULL) return;
    uv_mutex_lock(&h->mu);
    if (h->in_tail != NULL)
        h->in_tail->next = h->local_head;
    else
        h->in_head = h->local_head;
    h->in_tail = h->local_tail;
    h->in_count += h->local_count;
    uv_cond_signal(&h->cond);
    uv_mutex_unlock(&h->mu);
    h->local_head = h->local_tail = NULL;
    h->local_count = 0;
}

static void flush_cb(uv_idle_t *idle)
{
    lb_store *s = idle->data;
    flush_local(s);
    uv_idle_stop(idle);
}

/* Both handles closed: the backend is destroyed, then the close callback. */
void lb_store__handle_closed_cb(uv_handle_t *handle)
{
    lb_store *s = handle->data;
    if (--s->h.handles_open > 0) return;
    void (*cb)(void *) = s->close_cb;
    void *data = s->close_data;
    s->vt->destroy(s);
    if (cb != NULL) cb(data);
}

/* Takes all of `done` (sends coalesce) and completes the batches in order. */
static void async_cb(uv_async_t *async)
{
    lb_store *s = async->data;
    lb_store_handoff *h = &s->h;
    uv_mutex_lock(&h->mu);
    lb_store_batch *b = h->done_head;
    h->done_head = h->done_tail = NULL;
    int stopped = h->stopped;
    uv_mutex_unlock(&h->mu);

    while (b != NULL) {
        lb_store_batch *next = b->next;
        if (b->reached != 0 && s->waiting > 0) {
            s->waiting = b->reached > 0 ? 0 : b->reached;
            snprintf(s->wait_err, sizeof(s->wait_err), "%s",
                     b->reached_err != NULL ? b->reached_err : "");
        }
        lb_free(b->reached_err);
        /* While waiting for its database the store is unready anyway: the
         * ops' failures are not news of the disk. */
        if (b->wrote && s->waiting == 0) lb_store__health(s, b->health);
        if (b->head != NULL) /* else a probe: nothing to complete */
            complete(s, b->head, b->count, b->seconds, b->committed, b->error);
        lb_free(b);
        b = next;
    }
    update_ref(s);

    /* `stopped` is set after the last batch was queued, so every batch has
     * been completed above. */
    if (stopped && !h->joined) {
        uv_thread_join(&h->thread);
        h->joined = 1;
        uv_close((uv_handle_t *)&h->flush, lb_store__handle_closed_cb);
        uv_close((uv_handle_t *)&h->async, lb_store__handle_closed_cb);
    }
}

int lb_store__start(lb_store *s, char *err, size_t errlen)
{
    lb_store_handoff *h = &s->h;
    int rc = uv_thread_create(&h->thread, thread_main, s);
    if (rc != 0) {
        snprintf(err, errlen, "store: cannot start its thread: %s", uv_strerror(rc));
        s->vt->thread_end(s);
        return rc;
    }
    /* The thread has no way to signal until `notify`: if the handle cannot
     * be made, it is stopped and joined and nothing is left behind. */
    if ((rc = uv_async_init(s->loop, &h->async, async_cb)) != 0) {
        snprintf(err, errlen, "store: uv_async_init: %s", uv_strerror(rc));
        uv_mutex_lock(&h->mu);
        h->stop = 1;
        uv_cond_signal(&h->cond);
        uv_mutex_unlock(&h->mu);
        uv_thread_join(&h->thread);
        return rc;
    }
    h->async.data = s;
    uv_unref((uv_handle_t *)&h->async); /* referenced only while ops are in flight */
    uv_idle_init(s->loop, &h->flush);
    h->flush.data = s;
    h->handles_open = 2;
    uv_mutex_lock(&h->mu);
    h->notify = 1;
    uv_mutex_unlock(&h->mu);
    return 0;
}

int lb_store_submit(lb_store *s, lb_store_op *op)
{
    if (op == NULL || op->cb == NULL || op->kind <= 0 || op->kind >= LB_STORE_OP_KIND_END)
        return LB_EINVAL;
    if (s->closing) return LB_ECLOSED;
    if (s->stats.pending >= LB_STORE_QUEUE_MAX) return LB_ETOOBIG;
    const kind_rules *k = &rules[op->kind];
    int rc = k->check != NULL ? k->check(op) : 0;
    if (rc != 0) return rc;
    if ((rc = check_notify(op)) != 0) return rc;
    if (k->clear != NULL) k->clear(op);
    op->status = 0;
    op->next = NULL;
    lb_store__fault_submit(op, 0); /* tests only (fault.h): may pick op to fail */
    lb_store_handoff *h = &s->h;
    if (h->local_tail != NULL)
        h->local_tail->next = op;
    else
        h->local_head = op;
    h->local_tail = op;
    if (h->local_count++ == 0) uv_idle_start(&h->flush, flush_cb);
    uv_ref((uv_handle_t *)&h->async);
    s->stats.pending++;
    return 0;
}

static void run_done_cb(lb_store_op *op)
{
    *(int *)op->data = 1;
}

int lb_store_run(lb_store *s, lb_store_op *op)
{
    int done = 0;
    op->cb = run_done_cb;
    op->data = &done;
    int rc = lb_store_submit(s, op);
    if (rc != 0) return rc;
    while (!done)
        uv_run(s->loop, UV_RUN_ONCE);
    return op->status;
}

void lb_store__health(lb_store *s, int error)
{
    if (error != 0 && s->write_error == 0)
        lb_error("store",
                 "writes fail: %s; serving reads only (writes and /readyz answer 503) until "
                 "they succeed again",
                 lb_strerror(error));
    else if (error != 0 && error != s->write_error)
        lb_error("store", "writes fail: %s", lb_strerror(error));
    else if (error == 0 && s->write_error != 0)
        lb_info("store", "writes succeed again (they failed with \"%s\"): the store is ready",
                lb_strerror(s->write_error));
    s->write_error = error;
}

/* Hands a finished batch back: head..(count ops) linked by next, in
 * submission order, each with status set. committed == 0 means the batch's
 * transaction failed as a whole: the status of every op that writes is
 * forced to error (UV_ENOSPC on a full disk, else LB_EIO; 0 means LB_EIO),
 * while read-only ops (lb_store__op_readonly) keep the status the backend
 * set, having been run again on their own. Updates the statistics, calls
 * on_commit, then each op's callback. */
static void complete(lb_store *s, lb_store_op *head, size_t count, double seconds, int committed,
                     int error)
{
    if (error == 0) error = LB_EIO;
    s->stats.last_commit_seconds = seconds;
    s->stats.last_batch_ops = count;
    if (committed) {
        s->stats.commits++;
        s->stats.ops_committed += count;
    } else {
        s->stats.commit_failures++;
    }
    if (s->on_commit != NULL) s->on_commit(seconds, count, s->on_commit_data);

    lb_store_op *op = head;
    for (size_t i = 0; i < count && op != NULL; i++) {
        lb_store_op *next = op->next; /* the callback may free op */
        op->next = NULL;
        if (!committed && !rules[op->kind].readonly) op->status = error;
        if (op->status != 0 && rules[op->kind].discard != NULL) rules[op->kind].discard(op);
        s->stats.pending--;
        op->cb(op);
        op = next;
    }
}

void lb_store_close(lb_store *s, void (*cb)(void *data), void *data)
{
    if (s->closing) {
        lb_warn("store", "lb_store_close called twice");
        return;
    }
    s->closing = 1;
    s->close_cb = cb;
    s->close_data = data;
    if (s->listening) s->vt->listen_stop(s);
    lb_store_handoff *h = &s->h;
    flush_local(s);
    uv_idle_stop(&h->flush);
    update_ref(s); /* closing: keep the loop alive until the handles close */
    uv_mutex_lock(&h->mu);
    h->stop = 1;
    uv_cond_signal(&h->cond);
    uv_mutex_unlock(&h->mu);
}

int lb_store__op_readonly(int kind)
{
    return kind > 0 && kind < LB_STORE_OP_KIND_END && rules[kind].readonly;
}

void lb_store__op_discard(lb_store_op *op)
{
    if (rules[op->kind].discard != NULL) rules[op->kind].discard(op);
}

int lb_store_ready(const lb_store *s)
{
    return !s->closing && s->write_error == 0 && s->waiting == 0;
}

int lb_store_waiting(const lb_store *s, char *err, size_t errlen)
{
    if (s->waiting < 0) snprintf(err, errlen, "%s", s->wait_err);
    return s->waiting;
}

int lb_store_write_error(const lb_store *s)
{
    return s->write_error;
}

void lb_store_stats_get(const lb_store *s, lb_store_stats *out)
{
    *out = s->stats;
}

void lb_store_set_on_commit(lb_store *s, lb_store_commit_cb cb, void *data)
{
    s->on_commit = cb;
    s->on_commit_data = data;
}

/* The backend reports here, so that lb_store_unlisten can stop the
 * reports before the listener's data goes while the backend's listening
 * lasts until lb_store_close. */
static void heard(void *data, int what, const char *tenant)
{
    lb_store *s = data;
    if (s->listen_cb != NULL) s->listen_cb(s->listen_data, what, tenant);
}

int lb_store_listen(lb_store *s, lb_store_listen_cb cb, void *data)
{
    if (cb == NULL || s->listening || s->closing) return LB_EINVAL;
    if (s->vt->listen == NULL) return 0; /* one process: nothing to hear */
    s->listen_cb = cb;
    s->listen_data = data;
    int rc = s->vt->listen(s, heard, s);
    if (rc == 0)
        s->listening = 1;
    else
        s->listen_cb = NULL;
    return rc;
}

void lb_store_unlisten(lb_store *s)
{
    s->listen_cb = NULL;
    s->listen_data = NULL;
}

const char *lb_store_backend(const lb_store *s)
{
    return s->vt->name;
}
