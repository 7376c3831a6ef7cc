#include "engine/jobs.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/heap.h"
#include "core/log.h"
#include "core/map.h"
#include "core/metrics.h"
#include "core/strbuf.h"
#include "core/time.h"
#include "crypto/crypto.h"
#include "engine/backoff.h"
#include "engine/notify.h"
#include "json/json.h"
#include "state/stats.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define ERROR_MAX 1024
/* Most ids remembered while a reload is in flight. */
#define ENDED_MAX 100000
/* How long a notify_platform job waits when max_running_notify are running. */
#define NOTIFY_WAIT_MS 100

typedef enum {
    J_BLOCKED,  /* behind an earlier job of its event */
    J_DUE,      /* in its tenant's FIFO */
    J_SLEEPING, /* in the retry heap */
    J_RUNNING,  /* holds a running slot */
    J_WAITING,  /* for its tenant's connection */
    J_DONE,     /* ended; freed once its store writes are back */
} jstate;

typedef struct jtenant jtenant;

typedef struct {
    char *name;
    char *value;
} step;

/* One unfinished job. Owned by the engine's map; freed when it ended (or at
 * close) and none of its store writes is in flight. */
struct lb_job {
    lb_job_rec rec; /* strings owned */
    lb_jobs *js;
    jtenant *t;
    const lb_job_kind *kind;
    yajl_val action;
    step steps[LB_JOBS_MAX_STEPS];
    int nsteps;
    jstate state;
    lb_heap_node sleep;
    lb_job *next;       /* tenant FIFO or wait list */
    lb_job *chain_next; /* the next job of the same chain */
    char *chain;        /* its chain: the event id, or (notify jobs)
                           "\x1f" and the tenant; NULL: none */
    void *scratch;
    int writes;    /* store writes in flight */
    int64_t epoch; /* its tenant's lease when it started here (0: unfenced) */
    /* the call in flight */
    lb_ob_call ob;
    lb_lever_req lreq;
    lb_http_call *hcall;
    lb_job_call_cb done;
    const char *permission; /* what a 403 on the current call means */
    int in_call;
};

/* A tenant's due jobs. Owned by the engine's tenant map. */
struct jtenant {
    char *id;
    lb_job *head, *tail; /* due FIFO */
    lb_job *waiting;     /* waiting for the connection */
    jtenant *ring_next;
    int in_ring;
    int running;
    size_t failed; /* jobs of the tenant in status failed */
};

struct lb_jobs {
    uv_loop_t *loop;
    lb_store *store;
    lb_outbound *ob;
    lb_http_client *http;
    lb_jobs_config cfg;
    lb_jobs_env env;
    const lb_job_kind *kinds[LB_JOBS_KIND_SETS];
    size_t nkinds[LB_JOBS_KIND_SETS];
    size_t nsets;
    int64_t notify_last; /* created_at of the last event made */
    lb_map jobs;         /* id -> lb_job */
    lb_map tenants;      /* id -> jtenant */
    lb_map chains;       /* event id -> last job of its chain */
    jtenant *ring_head, *ring_tail;
    lb_heap sleepers;
    uv_timer_t timer;
    int running;
    int notify_running; /* notify_platform jobs among them */
    int pumping, again;
    int closing;
    int writes;
    lb_jobs_stats stats;
    int reloads;    /* lb_jobs_reload ops in flight */
    lb_map ended;   /* while one is: ids of jobs that ended or left (keys owned) */
    int ended_full; /* more than ENDED_MAX: the reloads in flight are ignored */
    void (*close_cb)(void *);
    void *close_data;
};

static void pump(lb_jobs *js);
static void job_free(lb_job *j);
static void maybe_closed(lb_jobs *js);

/* ---- small helpers ----------------------------------------------------- */

static int64_t now_ms(void)
{
    return lb_time_now_ms();
}

const char *lb_job_id(const lb_job *job)
{
    return job->rec.id;
}

const char *lb_job_tenant(const lb_job *job)
{
    return job->rec.tenant_id;
}

const char *lb_job_opportunity(const lb_job *job)
{
    return job->rec.opportunity_id;
}

const char *lb_job_event(const lb_job *job)
{
    return job->rec.event_id;
}

int64_t lb_job_created_at(const lb_job *job)
{
    return job->rec.created_at;
}

static int is_notify(const lb_job *j)
{
    return j->kind != NULL && (j->kind->flags & LB_JOB_KIND_NOTIFY) != 0;
}

yajl_val lb_job_action(const lb_job *job)
{
    return job->action;
}

void **lb_job_scratch(lb_job *job)
{
    return &job->scratch;
}

const lb_jobs_config *lb_job_config(const lb_job *job)
{
    return &job->js->cfg;
}

const char *lb_job_step(const lb_job *job, const char *name)
{
    for (int i = 0; i < job->nsteps; i++)
        if (strcmp(job->steps[i].name, name) == 0) return job->steps[i].value;
    return NULL;
}

static char *steps_json(const lb_job *j)
{
    lb_strbuf b;
    lb_strbuf_init(&b, 64 * 1024);
    lb_strbuf_cat(&b, "{");
    for (int i = 0; i < j->nsteps; i++) {
        if (i > 0) lb_strbuf_cat(&b, ",");
        lb_strbuf_json_str(&b, j->steps[i].name, strlen(j->steps[i].name));
        lb_strbuf_cat(&b, ":");
        lb_strbuf_json_str(&b, j->steps[i].value, strlen(j->steps[i].value));
    }
    lb_strbuf_cat(&b, "}");
    return lb_strbuf_steal(&b, NULL);
}

static void steps_load(lb_job *j)
{
    if (j->rec.steps == NULL) return;
    char err[64];
    yajl_val v = lb_json_parse(j->rec.steps, strlen(j->rec.steps), err, sizeof(err));
    if (v == NULL || !YAJL_IS_OBJECT(v)) {
        lb_warn("jobs", "tenant=%s job=%s: unreadable steps ignored", j->rec.tenant_id, j->rec.id);
    } else {
        for (size_t i = 0; i < v->u.object.len && j->nsteps < LB_JOBS_MAX_STEPS; i++) {
            yajl_val x = v->u.object.values[i];
            if (!YAJL_IS_STRING(x)) continue;
            j->steps[j->nsteps].name = lb_strdup(v->u.object.keys[i]);
            j->steps[j->nsteps].value = lb_strdup(x->u.string);
            j->nsteps++;
        }
    }
    if (v != NULL) yajl_tree_free(v);
}

static void set_str(char **field, const char *value)
{
    lb_free(*field);
    *field = value ? lb_strdup(value) : NULL;
}

/* ---- store writes ------------------------------------------------------ */

/* One write of a job's state. Owns a snapshot of the record, so the job may
 * change (or end) while the write is in flight. */
typedef struct {
    lb_store_op op;
    lb_job_rec rec;
    lb_job *job; /* NULL: nobody waits for it */
    void (*then)(lb_job *job, int status);
    lb_job_rec notify;  /* job.failed, written with the end; id "": none */
    lb_job_rec tag_job; /* the failure tag's job, written with the end; action NULL: none */
    char *tag;
} jwrite;

static void write_done(lb_store_op *op)
{
    jwrite *w = op->data;
    lb_job *j = w->job;
    lb_jobs *js = j->js;
    /* Fenced out: another replica holds the tenant now; its work here ends. */
    int fenced = op->status == LB_ECONFLICT && op->job_update.lease_node != NULL;
    char tenant[LB_TENANT_ID_MAX + 1];
    snprintf(tenant, sizeof(tenant), "%s", w->rec.tenant_id);
    if (fenced)
        lb_warn("jobs", "tenant=%s job=%s: write refused, the lease moved on (epoch %lld)",
                w->rec.tenant_id, w->rec.id, (long long)op->job_update.lease_epoch);
    else if (op->status != 0)
        lb_error("jobs", "tenant=%s job=%s: store write failed: %s", w->rec.tenant_id, w->rec.id,
                 lb_strerror(op->status));
    js->writes--;
    j->writes--;
    if (w->then != NULL && j->state != J_DONE && !js->closing && !fenced) w->then(j, op->status);
    lb_jobs_notify_done(js, op, &w->notify);
    /* The ledger had no row for it: this write made the tag's job. */
    if (op->status == 0 && op->job_update.tag_added) lb_jobs_add(js, &w->tag_job, 1);
    lb_job_rec_free(&w->tag_job);
    lb_free(w->tag);
    lb_job_rec_free(&w->rec);
    lb_free(w);
    if (j->state == J_DONE && j->writes == 0) job_free(j);
    if (fenced && !js->closing) lb_jobs_tenant_lost(js, tenant);
    maybe_closed(js);
}

/* Writes the job's state; notify (may be NULL), a job.failed event made
 * with it, is taken and inserted in the same transaction; so is tag_job
 * (may be NULL) with its tag, the failure tag's job (store.h job_update:
 * inserted once per opportunity and tag). */
static void write_job_with(lb_job *j, void (*then)(lb_job *, int), lb_job_rec *notify,
                           lb_job_rec *tag_job, char **tag)
{
    lb_jobs *js = j->js;
    jwrite *w = LB_NEW(jwrite);
    w->rec = j->rec;
    w->rec.event_id = j->rec.event_id ? lb_strdup(j->rec.event_id) : NULL;
    w->rec.workflow_id = j->rec.workflow_id ? lb_strdup(j->rec.workflow_id) : NULL;
    w->rec.action = lb_strdup(j->rec.action);
    w->rec.opportunity_id = j->rec.opportunity_id ? lb_strdup(j->rec.opportunity_id) : NULL;
    w->rec.last_error = j->rec.last_error ? lb_strdup(j->rec.last_error) : NULL;
    w->rec.steps = j->nsteps ? steps_json(j) : NULL;
    w->rec.updated_at = 0;
    w->job = j;
    w->then = then;
    w->op.kind = LB_STORE_JOB_UPDATE;
    w->op.job_update.rec = &w->rec;
    if (j->epoch > 0) { /* fenced: refused once the lease moved on */
        w->op.job_update.lease_node = js->cfg.gate->node;
        w->op.job_update.lease_epoch = j->epoch;
    }
    if (notify != NULL && notify->action != NULL) {
        w->notify = *notify;
        memset(notify, 0, sizeof(*notify));
        w->op.notify = &w->notify;
        w->op.nnotify = 1;
    }
    if (tag_job != NULL && tag_job->action != NULL && tag != NULL && *tag != NULL) {
        w->tag_job = *tag_job;
        memset(tag_job, 0, sizeof(*tag_job));
        w->tag = *tag;
        *tag = NULL;
        w->op.job_update.tag_job = &w->tag_job;
        w->op.job_update.tag = w->tag;
    }
    w->op.cb = write_done;
    w->op.data = w;
    int rc = lb_store_submit(js->store, &w->op);
    if (rc != 0) {
        lb_error("jobs", "tenant=%s job=%s: store refused the write: %s", j->rec.tenant_id,
                 j->rec.id, lb_strerror(rc));
        lb_job_rec_free(&w->rec);
        lb_job_rec_free(&w->notify);
        lb_job_rec_free(&w->tag_job);
        lb_free(w->tag);
        lb_free(w);
        if (then != NULL) then(j, rc);
        return;
    }
    js->writes++;
    j->writes++;
}

static void write_job(lb_job *j, void (*then)(lb_job *, int))
{
    write_job_with(j, then, NULL, NULL, NULL);
}

/* A kind's own store operation: counted as a write of its job, so neither
 * the job nor the engine is freed before it is back. */
typedef struct {
    lb_job *job;
    lb_job_store_cb done;
} jstore;

/* The lease fields of a kind's own write that the store fences (the
 * invitation ledger's), or NULL for a kind of op it does not fence. */
static const char **fence_of(lb_store_op *op, int64_t **epoch)
{
    if (op->kind == LB_STORE_INVITATION_CLAIM) {
        *epoch = &op->invitation_claim.lease_epoch;
        return &op->invitation_claim.lease_node;
    }
    if (op->kind == LB_STORE_INVITATION_UPDATE) {
        *epoch = &op->invitation_update.lease_epoch;
        return &op->invitation_update.lease_node;
    }
    return NULL;
}

static void kind_store_done(lb_store_op *op)
{
    jstore *w = op->data;
    lb_job *j = w->job;
    lb_jobs *js = j->js;
    lb_job_store_cb done = w->done;
    lb_free(w);
    int64_t *epoch;
    const char **node = fence_of(op, &epoch);
    /* Fenced out, as write_done: another replica holds the tenant now. */
    int fenced = op->status == LB_ECONFLICT && node != NULL && *node != NULL;
    char tenant[LB_TENANT_ID_MAX + 1];
    snprintf(tenant, sizeof(tenant), "%s", j->rec.tenant_id);
    if (fenced)
        lb_warn("jobs", "tenant=%s job=%s: write refused, the lease moved on (epoch %lld)", tenant,
                j->rec.id, (long long)*epoch);
    /* Events the write carried are committed: the engine takes them before
     * the kind frees their records. */
    if (op->status == 0 && op->nnotify > 0) lb_jobs_add(js, op->notify, op->nnotify);
    /* Still counted while done runs: ending the job there cannot free it. */
    done(j, op, j->state == J_RUNNING && !js->closing && !fenced);
    js->writes--;
    j->writes--;
    if (j->state == J_DONE && j->writes == 0) job_free(j);
    if (fenced && !js->closing) lb_jobs_tenant_lost(js, tenant);
    maybe_closed(js);
}

int lb_job_store(lb_job *job, lb_store_op *op, lb_job_store_cb done)
{
    int64_t *epoch;
    const char **node = fence_of(op, &epoch);
    if (node != NULL && job->epoch > 0) { /* refused once the lease moved on */
        *node = job->js->cfg.gate->node;
        *epoch = job->epoch;
    }
    jstore *w = LB_NEW(jstore);
    w->job = job;
    w->done = done;
    op->cb = kind_store_done;
    op->data = w;
    int rc = lb_store_submit(job->js->store, op);
    if (rc != 0) {
        lb_free(w);
        return rc;
    }
    job->js->writes++;
    job->writes++;
    return 0;
}

/* ---- tenants and scheduling ---------------------------------------------- */

static jtenant *tenant_get(lb_jobs *js, const char *id)
{
    jtenant *t = lb_map_get(&js->tenants, id);
    if (t == NULL) {
        t = LB_NEW(jtenant);
        t->id = lb_strdup(id);
        lb_map_put(&js->tenants, t->id, t);
    }
    return t;
}

static int held(const lb_jobs *js, const char *tenant)
{
    return lb_gate_holds(js->cfg.gate, tenant);
}

static int tenant_can_run(lb_jobs *js, jtenant *t)
{
    return t->head != NULL && t->running < js->cfg.max_running_tenant && held(js, t->id);
}

/* A job left memory: a reload in flight must not bring it back. */
static void note_ended(lb_jobs *js, const char *id)
{
    if (js->reloads == 0 || lb_map_get(&js->ended, id) != NULL) return;
    if (js->ended.count >= ENDED_MAX) {
        js->ended_full = 1;
        return;
    }
    char *k = lb_strdup(id);
    lb_map_put(&js->ended, k, k);
}

static void ended_clear(lb_jobs *js)
{
    size_t pos = 0;
    char *k;
    if (js->ended.count > 0) {
        /* The walk reads no key, so each may go as it is passed. */
        while ((k = lb_map_next(&js->ended, &pos)) != NULL)
            lb_free(k);
        lb_map_free(&js->ended);
        lb_map_init(&js->ended);
    }
    js->ended_full = 0;
}

static void ring_push(lb_jobs *js, jtenant *t)
{
    if (t->in_ring || !tenant_can_run(js, t)) return;
    t->in_ring = 1;
    t->ring_next = NULL;
    if (js->ring_tail)
        js->ring_tail->ring_next = t;
    else
        js->ring_head = t;
    js->ring_tail = t;
}

static jtenant *ring_pop(lb_jobs *js)
{
    jtenant *t = js->ring_head;
    if (t != NULL) {
        js->ring_head = t->ring_next;
        if (js->ring_head == NULL) js->ring_tail = NULL;
        t->in_ring = 0;
    }
    return t;
}

static void make_due(lb_job *j)
{
    jtenant *t = j->t;
    j->state = J_DUE;
    j->next = NULL;
    if (t->tail)
        t->tail->next = j;
    else
        t->head = j;
    t->tail = j;
    ring_push(j->js, t);
}

static void timer_cb(uv_timer_t *timer)
{
    lb_jobs *js = timer->data;
    int64_t now = now_ms();
    lb_heap_node *n;
    while ((n = lb_heap_min(&js->sleepers)) != NULL && n->key <= now) {
        lb_heap_pop(&js->sleepers);
        make_due(LB_CONTAINER_OF(n, lb_job, sleep));
    }
    pump(js);
}

static void arm_timer(lb_jobs *js)
{
    lb_heap_node *n = lb_heap_min(&js->sleepers);
    if (n == NULL || js->closing) {
        uv_timer_stop(&js->timer);
        return;
    }
    int64_t d = n->key - now_ms();
    uv_timer_start(&js->timer, timer_cb, d > 0 ? (uint64_t)d : 0, 0);
}

/* Puts a job that may run (head of its chain) where it belongs. */
static void schedule(lb_job *j)
{
    if (j->rec.next_run_at > now_ms()) {
        j->state = J_SLEEPING;
        j->sleep.key = j->rec.next_run_at;
        lb_heap_push(&j->js->sleepers, &j->sleep);
    } else {
        make_due(j);
    }
}

static void release_slot(lb_job *j)
{
    if (j->state != J_RUNNING) return;
    j->t->running--;
    j->js->running--;
    if (is_notify(j)) j->js->notify_running--;
    ring_push(j->js, j->t);
}

static void start(lb_job *j)
{
    lb_jobs *js = j->js;
    j->epoch = lb_gate_epoch(js->cfg.gate, j->rec.tenant_id);
    j->state = J_RUNNING;
    j->t->running++;
    js->running++;
    if (is_notify(j)) js->notify_running++;
    js->stats.started++;
    j->rec.attempts++;
    j->rec.status = LB_JOB_RUNNING;
    write_job(j, NULL);
    j->kind->run(j);
}

static void pump(lb_jobs *js)
{
    if (js->pumping) {
        js->again = 1;
        return;
    }
    js->pumping = 1;
    do {
        js->again = 0;
        while (!js->closing && js->running < js->cfg.max_running && js->ring_head != NULL) {
            jtenant *t = ring_pop(js);
            if (!tenant_can_run(js, t)) continue;
            lb_job *j = t->head;
            t->head = j->next;
            if (t->head == NULL) t->tail = NULL;
            j->next = NULL;
            ring_push(js, t);
            if (is_notify(j) && js->notify_running >= js->cfg.max_running_notify) {
                /* Events wait a moment (no attempt counted, nothing written)
                 * rather than take the room of Lever calls. */
                j->rec.next_run_at = now_ms() + NOTIFY_WAIT_MS;
                schedule(j);
                continue;
            }
            start(j);
        }
    } while (js->again);
    arm_timer(js);
    js->pumping = 0;
}

/* ---- ending ------------------------------------------------------------ */

static void chain_advance(lb_job *j)
{
    lb_jobs *js = j->js;
    if (j->chain == NULL) return;
    if (lb_map_get(&js->chains, j->chain) == j) lb_map_del(&js->chains, j->chain);
    lb_job *next = j->chain_next;
    j->chain_next = NULL;
    if (next != NULL) schedule(next);
}

/* The job.failed event of a job that failed for good (api.md: data job
 * id, action type, opportunity_id, last_error). */
static void failed_event(lb_job *j, lb_job_rec *out)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "job_id", j->rec.id);
    lb_json_kv_str(g, "action_type", lb_json_get_str(j->action, "type"));
    lb_json_kv_str(g, "opportunity_id", j->rec.opportunity_id);
    lb_json_kv_str(g, "last_error", j->rec.last_error);
    yajl_gen_map_close(g);
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(g, &buf, &len);
    char *data = lb_strndup((const char *)buf, len);
    yajl_gen_free(g);
    lb_jobs_notify(j->js, j->rec.tenant_id, "job.failed", data, out);
    lb_free(data);
}

/* The failure tag's job for a job that failed for good (api.md "Failures
 * visible in Lever"): when the tenant has a tag, the job an opportunity
 * and a kind that tags. 1 with *rec and *tag (lb_malloc'd) filled, else 0.
 * Its action: {"type":"failure_tag","tag":...,"failed_job":"job_..."}. */
static int failure_tag_job(lb_job *j, lb_job_rec *rec, char **tag)
{
    lb_jobs *js = j->js;
    memset(rec, 0, sizeof(*rec));
    *tag = NULL;
    if (js->env.failure_tag == NULL || j->rec.opportunity_id == NULL) return 0;
    if (is_notify(j) || (j->kind != NULL && (j->kind->flags & LB_JOB_KIND_NO_FAILURE_TAG) != 0))
        return 0;
    const char *t = js->env.failure_tag(js->env.data, j->rec.tenant_id);
    if (t == NULL || *t == '\0') return 0;
    int64_t now = now_ms();
    lb_sortable_id_buf(rec->id, sizeof(rec->id), "job_", now, 12);
    memcpy(rec->tenant_id, j->rec.tenant_id, sizeof(rec->tenant_id));
    rec->opportunity_id = lb_strdup(j->rec.opportunity_id);
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "type", "failure_tag");
    lb_json_kv_str(g, "tag", t);
    lb_json_kv_str(g, "failed_job", j->rec.id);
    yajl_gen_map_close(g);
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(g, &buf, &len);
    rec->action = lb_strndup((const char *)buf, len);
    yajl_gen_free(g);
    rec->status = LB_JOB_QUEUED;
    rec->created_at = rec->updated_at = now;
    *tag = lb_strdup(t);
    return 1;
}

static void end(lb_job *j, int status, const char *error)
{
    lb_jobs *js = j->js;
    release_slot(j);
    j->rec.status = status;
    j->rec.next_run_at = 0;
    set_str(&j->rec.last_error, error);
    switch (status) {
    case LB_JOB_SUCCEEDED:
        js->stats.succeeded++;
        lb_stats_add(js->cfg.stats, j->rec.tenant_id, LB_STAT_SUCCEEDED, lb_time_now_ms());
        break;
    case LB_JOB_FAILED:
        js->stats.failed++;
        j->t->failed++;
        lb_stats_add(js->cfg.stats, j->rec.tenant_id, LB_STAT_FAILED, lb_time_now_ms());
        break;
    case LB_JOB_SKIPPED:
        js->stats.skipped++;
        break;
    default:
        js->stats.cancelled++;
        break;
    }
    lb_job_rec notify = {0}, tag_job = {0};
    char *tag = NULL;
    if (status == LB_JOB_FAILED) {
        lb_warn("jobs", "tenant=%s job=%s (%s) failed: %s", j->rec.tenant_id, j->rec.id,
                j->kind ? j->kind->type : "?", error ? error : "");
        if (!is_notify(j)) failed_event(j, &notify);
        failure_tag_job(j, &tag_job, &tag);
    }
    write_job_with(j, NULL, &notify, &tag_job, &tag);
    lb_job_rec_free(&notify);
    lb_job_rec_free(&tag_job);
    lb_free(tag);
    lb_map_del(&js->jobs, j->rec.id);
    note_ended(js, j->rec.id);
    j->state = J_DONE;
    chain_advance(j);
    if (j->writes == 0) job_free(j);
    pump(js);
}

void lb_job_finish(lb_job *job, int status, const char *error)
{
    end(job, status, error);
}

void lb_job_skip_workflow(lb_job *job, const char *reason)
{
    lb_jobs *js = job->js;
    const char *wf = job->rec.workflow_id;
    lb_job *prev = job;
    while (wf != NULL && prev->chain_next != NULL) {
        lb_job *cur = prev->chain_next;
        if (cur->rec.workflow_id == NULL || strcmp(cur->rec.workflow_id, wf) != 0) {
            prev = cur;
            continue;
        }
        prev->chain_next = cur->chain_next;
        cur->chain_next = NULL;
        if (cur->chain != NULL && lb_map_get(&js->chains, cur->chain) == cur)
            lb_map_put(&js->chains, prev->chain, prev);
        end(cur, LB_JOB_SKIPPED, reason); /* blocked: no slot, no chain to advance */
    }
    end(job, LB_JOB_SKIPPED, reason);
}

void lb_job_retry(lb_job *job, const char *error)
{
    lb_jobs *js = job->js;
    int64_t now = now_ms();
    /* The age counts from when the job was due: a delayed job's due time
     * rides in its context (state/match.c). */
    int64_t since = job->rec.created_at, due;
    if (lb_json_get_int(lb_json_get_obj(job->action, "context"), "due_at", &due) == 0 &&
        due > since)
        since = due;
    if (now - since >= js->cfg.max_age_ms) {
        char msg[ERROR_MAX];
        snprintf(msg, sizeof(msg), "gave up after %d attempts: %s", job->rec.attempts,
                 error ? error : "");
        end(job, LB_JOB_FAILED, msg);
        return;
    }
    release_slot(job);
    js->stats.retried++;
    unsigned attempt = job->rec.attempts > 0 ? (unsigned)job->rec.attempts - 1 : 0;
    job->rec.next_run_at =
        now + lb_backoff_delay(js->cfg.retry_base_ms, js->cfg.retry_cap_ms, attempt);
    if (job->rec.next_run_at <= now) job->rec.next_run_at = now + 1;
    job->rec.status = LB_JOB_RETRYING;
    set_str(&job->rec.last_error, error);
    lb_debug("jobs", "tenant=%s job=%s retries in %lld ms: %s", job->rec.tenant_id, job->rec.id,
             (long long)(job->rec.next_run_at - now), error ? error : "");
    write_job(job, NULL);
    schedule(job);
    pump(js);
}

/* The job waits for its tenant's connection: it gives its slot back and
 * runs its current step again on lb_jobs_tenant_resume. */
static void wait_for_connection(lb_job *j, const char *why)
{
    release_slot(j);
    j->state = J_WAITING;
    j->rec.status = LB_JOB_QUEUED;
    set_str(&j->rec.last_error, why);
    j->next = j->t->waiting;
    j->t->waiting = j;
    write_job(j, NULL);
    pump(j->js);
}

static void record_written(lb_job *j, int status)
{
    if (status != 0) {
        lb_job_retry(j, "the store could not record a step");
        return;
    }
    j->kind->run(j);
}

void lb_job_record(lb_job *job, const char *name, const char *value)
{
    int i;
    for (i = 0; i < job->nsteps; i++)
        if (strcmp(job->steps[i].name, name) == 0) break;
    if (i == LB_JOBS_MAX_STEPS) {
        end(job, LB_JOB_FAILED, "too many steps");
        return;
    }
    if (i == job->nsteps) {
        job->steps[i].name = lb_strdup(name);
        job->steps[i].value = NULL;
        job->nsteps++;
    }
    set_str(&job->steps[i].value, value ? value : "");
    write_job(job, record_written);
}

/* ---- calls --------------------------------------------------------------- */

static void call_reset(lb_job *j)
{
    lb_lever_req_free(&j->lreq);
    j->in_call = 0;
    j->hcall = NULL;
}

static void ob_done(lb_ob_call *call, const lb_http_response *res)
{
    lb_job *j = call->data;
    j->in_call = 0;
    if (res->status == 0 && res->error == LB_ECLOSED) { /* the queue let go of the call */
        if (!j->js->closing) lb_job_retry(j, "the call was cancelled");
        return;
    }
    if (res->status >= 200 && res->status < 300 && j->permission != NULL)
        j->js->env.lever_permission(j->js->env.data, j->rec.tenant_id, j->permission, 1);
    j->done(j, res);
    /* done() issued the next action; the request strings were copied by it
     * or are no longer needed. */
}

void lb_job_lever(lb_job *job, const char *permission, const char *method, const char *query,
                  yajl_gen body, lb_job_call_cb done, const char *path_fmt, ...)
{
    lb_jobs *js = job->js;
    lb_lever_auth auth = {0};
    int rc = js->env.lever_auth(js->env.data, job->rec.tenant_id, &auth);
    if (rc != 0) {
        wait_for_connection(job, "waiting for the Lever connection");
        return;
    }
    call_reset(job);
    /* Format the path with the job's own %s arguments. */
    const char *args[4] = {0};
    va_list ap;
    va_start(ap, path_fmt);
    int nargs = 0;
    for (const char *p = path_fmt; *p && nargs < 4; p++)
        if (p[0] == '%' && p[1] == 's') args[nargs++] = va_arg(ap, const char *);
    va_end(ap);
    lb_lever_req_init(&job->lreq, &auth, method, query, path_fmt, args[0], args[1], args[2],
                      args[3]);
    if (body != NULL) lb_lever_req_json(&job->lreq, body);
    job->permission = permission;
    job->done = done;
    job->in_call = 1;
    memset(&job->ob, 0, sizeof(job->ob));
    job->ob.req = job->lreq.http;
    job->ob.cb = ob_done;
    job->ob.data = job;
    double rate = 0;
    int burst = 0;
    js->env.tenant_rate(js->env.data, job->rec.tenant_id, &rate, &burst);
    lb_ob_tenant *t = lb_outbound_tenant(js->ob, job->rec.tenant_id, rate, burst);
    rc = lb_outbound_submit(t, &job->ob);
    if (rc != 0) {
        call_reset(job);
        lb_job_retry(job, "the outbound queue is full");
    }
}

static void http_done(const lb_http_response *res, void *data)
{
    lb_job *j = data;
    j->hcall = NULL;
    j->in_call = 0;
    j->done(j, res);
}

void lb_job_http(lb_job *job, const lb_http_request *req, lb_job_call_cb done)
{
    call_reset(job);
    job->done = done;
    int rc = lb_http_client_start(job->js->http, req, http_done, job, &job->hcall);
    if (rc != 0) {
        lb_job_retry(job, rc == LB_ETOOBIG ? "too many calls in flight" : "cannot start the call");
        return;
    }
    job->in_call = 1;
}

void lb_job_lever_failed(lb_job *job, const lb_http_response *res)
{
    lb_jobs *js = job->js;
    char msg[ERROR_MAX - 64];
    lb_lever_describe(res, msg, sizeof(msg));
    switch (lb_lever_classify(res)) {
    case LB_LEVER_RETRY:
        lb_job_retry(job, msg);
        return;
    case LB_LEVER_REAUTH:
        js->env.lever_unauthorized(js->env.data, job->rec.tenant_id);
        wait_for_connection(job, msg);
        return;
    case LB_LEVER_FORBIDDEN: {
        const char *perm = job->permission ? job->permission : "unknown";
        char err[ERROR_MAX];
        snprintf(err, sizeof(err), "missing_permission: %s (%s)", perm, msg);
        js->env.lever_permission(js->env.data, job->rec.tenant_id, perm, 0);
        end(job, LB_JOB_FAILED, err);
        return;
    }
    default:
        end(job, LB_JOB_FAILED, msg);
        return;
    }
}

/* ---- adding, loading --------------------------------------------------- */

static const lb_job_kind *kind_of(lb_jobs *js, yajl_val action)
{
    const char *type = lb_json_get_str(action, "type");
    for (size_t s = 0; type != NULL && s < js->nsets; s++)
        for (size_t i = 0; i < js->nkinds[s]; i++)
            if (strcmp(js->kinds[s][i].type, type) == 0) return &js->kinds[s][i];
    return NULL;
}

static void job_free(lb_job *j)
{
    for (int i = 0; i < j->nsteps; i++) {
        lb_free(j->steps[i].name);
        lb_free(j->steps[i].value);
    }
    call_reset(j);
    lb_free(j->chain);
    if (j->action) yajl_tree_free(j->action);
    lb_job_rec_free(&j->rec);
    lb_free(j);
}

static lb_job *job_new(lb_jobs *js, const lb_job_rec *r)
{
    lb_job *j = LB_NEW(lb_job);
    j->js = js;
    j->rec = *r;
    j->rec.event_id = r->event_id ? lb_strdup(r->event_id) : NULL;
    j->rec.workflow_id = r->workflow_id ? lb_strdup(r->workflow_id) : NULL;
    j->rec.action = lb_strdup(r->action ? r->action : "{}");
    j->rec.opportunity_id = r->opportunity_id ? lb_strdup(r->opportunity_id) : NULL;
    j->rec.last_error = r->last_error ? lb_strdup(r->last_error) : NULL;
    j->rec.steps = r->steps ? lb_strdup(r->steps) : NULL;
    char err[64];
    j->action = lb_json_parse(j->rec.action, strlen(j->rec.action), err, sizeof(err));
    j->kind = j->action ? kind_of(js, j->action) : NULL;
    if (is_notify(j)) {
        size_t n = strlen(r->tenant_id) + 2;
        j->chain = lb_malloc(n);
        snprintf(j->chain, n, "\x1f%s", r->tenant_id);
    } else if (r->event_id != NULL) {
        j->chain = lb_strdup(r->event_id);
    }
    steps_load(j);
    j->t = tenant_get(js, r->tenant_id);
    return j;
}

void lb_jobs_add(lb_jobs *js, const lb_job_rec *recs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (js->closing || lb_map_get(&js->jobs, recs[i].id) != NULL) continue;
        if (!held(js, recs[i].tenant_id)) continue; /* its holder runs it */
        if (js->jobs.count >= LB_JOBS_MAX) {
            lb_error("jobs", "more than %d unfinished jobs: tenant=%s job=%s waits for a restart",
                     LB_JOBS_MAX, recs[i].tenant_id, recs[i].id);
            continue;
        }
        lb_job *j = job_new(js, &recs[i]);
        lb_map_put(&js->jobs, j->rec.id, j);
        if (j->kind == NULL) {
            end(j, LB_JOB_FAILED, "unknown action type");
            continue;
        }
        lb_job *tail = j->chain ? lb_map_get(&js->chains, j->chain) : NULL;
        if (j->chain != NULL) lb_map_put(&js->chains, j->chain, j);
        if (tail != NULL) {
            tail->chain_next = j;
            j->state = J_BLOCKED;
        } else {
            schedule(j);
        }
    }
    pump(js);
}

static int notify_make(lb_jobs *js, const char *tenant, const char *type, const char *data,
                       const char *id, lb_job_rec *rec)
{
    memset(rec, 0, sizeof(*rec));
    if (js == NULL || js->cfg.events_url == NULL || js->cfg.events_key_len == 0) return 0;
    int64_t at = now_ms();
    if (at <= js->notify_last)
        at = js->notify_last + 1; /* strictly later: the order survives a restart */
    js->notify_last = at;
    lb_notify_rec(rec, tenant, type, data, at, id);
    return 1;
}

int lb_jobs_notify(lb_jobs *js, const char *tenant, const char *type, const char *data,
                   lb_job_rec *rec)
{
    return notify_make(js, tenant, type, data, NULL, rec);
}

void lb_jobs_notify_done(lb_jobs *js, const lb_store_op *op, lb_job_rec *rec)
{
    if (js != NULL && op->status == 0 && rec->action != NULL) lb_jobs_add(js, rec, 1);
    lb_job_rec_free(rec);
    memset(rec, 0, sizeof(*rec));
}

int lb_job_notify(lb_job *job, const char *type, const char *data, lb_job_rec *rec)
{
    /* "pe_" and the job id's unique part: the same on a rerun of the step. */
    const char *u = strncmp(job->rec.id, "job_", 4) == 0 ? job->rec.id + 4 : job->rec.id;
    char id[LB_NOTIFY_ID_MAX + 1];
    snprintf(id, sizeof(id), "pe_%.*s", LB_NOTIFY_ID_MAX - 3, u);
    return notify_make(job->js, job->rec.tenant_id, type, data, id, rec);
}

int lb_jobs_load(lb_jobs *js)
{
    lb_store_op op = {.kind = LB_STORE_JOB_LOAD_ACTIVE};
    int rc = lb_store_run(js->store, &op);
    if (rc != 0) return rc;
    lb_jobs_add(js, op.job_load_active.recs, op.job_load_active.count);
    lb_info("jobs", "resumed %zu unfinished job(s)", op.job_load_active.count);
    lb_job_recs_free(op.job_load_active.recs, op.job_load_active.count);

    lb_store_op fc = {.kind = LB_STORE_JOB_FAILED_COUNTS};
    if ((rc = lb_store_run(js->store, &fc)) != 0) return rc;
    for (size_t i = 0; i < fc.job_failed_counts.n; i++)
        tenant_get(js, fc.job_failed_counts.tenants[i])->failed = fc.job_failed_counts.counts[i];
    lb_free(fc.job_failed_counts.tenants);
    lb_free(fc.job_failed_counts.counts);
    return 0;
}

void lb_jobs_tenant_resume(lb_jobs *js, const char *tenant)
{
    jtenant *t = lb_map_get(&js->tenants, tenant);
    if (t == NULL) return;
    lb_job *list = t->waiting;
    t->waiting = NULL;
    /* Keep their order: the list is newest first. */
    lb_job *rev = NULL;
    while (list != NULL) {
        lb_job *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    while (rev != NULL) {
        lb_job *next = rev->next;
        make_due(rev);
        rev = next;
    }
    pump(js);
}

void lb_jobs_tenant_gained(lb_jobs *js, const char *tenant)
{
    jtenant *t = lb_map_get(&js->tenants, tenant);
    if (t != NULL) ring_push(js, t);
    pump(js);
}

/* Takes the job out of every list, without writing anything. */
static void unlink_job(lb_job *j)
{
    lb_jobs *js = j->js;
    jtenant *t = j->t;
    if (j->state == J_SLEEPING) lb_heap_remove(&js->sleepers, &j->sleep);
    if (j->state == J_DUE || j->state == J_WAITING) {
        lb_job **pp = j->state == J_DUE ? &t->head : &t->waiting;
        lb_job *prev = NULL;
        while (*pp != NULL && *pp != j) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        if (*pp == j) {
            *pp = j->next;
            if (j->state == J_DUE && t->tail == j) t->tail = prev;
        }
    }
}

void lb_jobs_tenant_lost(lb_jobs *js, const char *tenant)
{
    size_t n = 0, cap = 64;
    lb_job **list = lb_malloc(cap * sizeof(*list));
    size_t pos = 0;
    lb_job *j;
    while ((j = lb_map_next(&js->jobs, &pos)) != NULL) {
        if (strcmp(j->rec.tenant_id, tenant) != 0) continue;
        if (n == cap) {
            cap *= 2;
            list = lb_realloc(list, cap * sizeof(*list));
        }
        list[n++] = j;
    }
    for (size_t i = 0; i < n; i++) {
        j = list[i];
        if (j->in_call) {
            if (j->hcall != NULL)
                lb_http_call_cancel(j->hcall);
            else
                lb_outbound_cancel(&j->ob);
            call_reset(j);
        }
        release_slot(j);
        unlink_job(j);
        if (j->chain != NULL && lb_map_get(&js->chains, j->chain) == j)
            lb_map_del(&js->chains, j->chain);
        j->chain_next = NULL;
        lb_map_del(&js->jobs, j->rec.id);
        note_ended(js, j->rec.id);
        j->state = J_DONE;
        if (j->writes == 0) job_free(j);
    }
    lb_free(list);
    if (n > 0) lb_info("jobs", "tenant=%s: %zu job(s) left to the lease's next holder", tenant, n);
    pump(js);
}

typedef struct {
    lb_store_op op;
    lb_jobs *js;
    char node[LB_NODE_ID_MAX + 1];
} reload_ctx;

static void reload_cb(lb_store_op *op)
{
    reload_ctx *c = op->data;
    lb_jobs *js = c->js;
    js->writes--;
    js->reloads--;
    if (op->status == 0) {
        size_t taken = 0;
        for (size_t i = 0; i < op->job_load_active.count && !js->closing && !js->ended_full; i++) {
            const lb_job_rec *r = &op->job_load_active.recs[i];
            if (lb_map_get(&js->ended, r->id) != NULL || lb_map_get(&js->jobs, r->id) != NULL ||
                !held(js, r->tenant_id))
                continue;
            lb_jobs_add(js, r, 1);
            taken++;
        }
        if (taken > 0) lb_info("jobs", "took %zu unfinished job(s) from the store", taken);
        lb_job_recs_free(op->job_load_active.recs, op->job_load_active.count);
    } else {
        lb_warn("jobs", "cannot load the jobs of this node's tenants: %s", lb_strerror(op->status));
    }
    if (js->reloads == 0) ended_clear(js);
    lb_free(c);
    maybe_closed(js);
}

int lb_jobs_reload(lb_jobs *js, const char *node, int64_t since)
{
    if (js->closing) return LB_ECLOSED;
    reload_ctx *c = LB_NEW(reload_ctx);
    c->js = js;
    snprintf(c->node, sizeof(c->node), "%s", node);
    c->op.kind = LB_STORE_JOB_LOAD_ACTIVE;
    c->op.job_load_active.lease_node = c->node;
    c->op.job_load_active.changed_since = since;
    c->op.cb = reload_cb;
    c->op.data = c;
    int rc = lb_store_submit(js->store, &c->op);
    if (rc != 0) {
        lb_free(c);
        return rc;
    }
    js->writes++;
    js->reloads++;
    return 0;
}

size_t lb_jobs_running(const lb_jobs *js)
{
    return (size_t)js->running;
}

static void cancel_job(lb_job *j)
{
    lb_jobs *js = j->js;
    if (j->in_call) {
        if (j->hcall != NULL)
            lb_http_call_cancel(j->hcall);
        else
            lb_outbound_cancel(&j->ob);
        call_reset(j);
    }
    jtenant *t = j->t;
    if (j->state == J_SLEEPING) lb_heap_remove(&js->sleepers, &j->sleep);
    if (j->state == J_DUE || j->state == J_WAITING) {
        lb_job **pp = j->state == J_DUE ? &t->head : &t->waiting;
        lb_job *prev = NULL;
        while (*pp != NULL && *pp != j) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        if (*pp == j) {
            *pp = j->next;
            if (j->state == J_DUE && t->tail == j) t->tail = prev;
        }
    }
    j->chain_next = NULL; /* its successors are cancelled too */
    if (j->chain != NULL && lb_map_get(&js->chains, j->chain) == j)
        lb_map_del(&js->chains, j->chain);
    end(j, LB_JOB_CANCELLED, "cancelled");
}

static void cancel_tenant(lb_jobs *js, const char *tenant, int notify);

void lb_jobs_tenant_cancel(lb_jobs *js, const char *tenant)
{
    cancel_tenant(js, tenant, 0);
}

void lb_jobs_tenant_cancel_events(lb_jobs *js, const char *tenant)
{
    cancel_tenant(js, tenant, 1);
}

/* Cancels the tenant's unfinished jobs: its notify_platform jobs (notify 1)
 * or all the others (0). */
static void cancel_tenant(lb_jobs *js, const char *tenant, int notify)
{
    /* Collect first: ending a job changes the map. */
    size_t n = 0, cap = 64;
    lb_job **list = lb_malloc(cap * sizeof(*list));
    size_t pos = 0;
    lb_job *j;
    while ((j = lb_map_next(&js->jobs, &pos)) != NULL) {
        if (strcmp(j->rec.tenant_id, tenant) != 0 || is_notify(j) != notify) continue;
        if (n == cap) {
            cap *= 2;
            list = lb_realloc(list, cap * sizeof(*list));
        }
        list[n++] = j;
    }
    for (size_t i = 0; i < n; i++)
        cancel_job(list[i]);
    lb_free(list);
}

void lb_jobs_tenant_backlog(lb_jobs *js, const char *tenant, size_t *queued, size_t *retrying)
{
    *queued = *retrying = 0;
    size_t pos = 0;
    lb_job *j;
    while ((j = lb_map_next(&js->jobs, &pos)) != NULL) {
        if (strcmp(j->rec.tenant_id, tenant) != 0) continue;
        if (j->rec.status == LB_JOB_RETRYING)
            (*retrying)++;
        else
            (*queued)++;
    }
}

size_t lb_jobs_tenant_failed(lb_jobs *js, const char *tenant)
{
    jtenant *t = lb_map_get(&js->tenants, tenant);
    return t ? t->failed : 0;
}

void lb_jobs_tenant_failed_add(lb_jobs *js, const char *tenant, long delta)
{
    jtenant *t = tenant_get(js, tenant);
    if (delta < 0 && (size_t)-delta > t->failed)
        t->failed = 0;
    else
        t->failed = (size_t)((long)t->failed + delta);
}

void lb_jobs_stats_get(const lb_jobs *js, lb_jobs_stats *out)
{
    *out = js->stats;
    out->active = js->jobs.count;
    out->running = (size_t)js->running;
    out->retrying = js->sleepers.count;
}

/* ---- life -------------------------------------------------------------- */

int lb_jobs_new(uv_loop_t *loop, lb_store *store, lb_outbound *ob, lb_http_client *http,
                const lb_jobs_config *cfg, const lb_jobs_env *env, lb_jobs **out)
{
    lb_jobs *js = LB_NEW(lb_jobs);
    js->loop = loop;
    js->store = store;
    js->ob = ob;
    js->http = http;
    js->cfg = *cfg;
    if (js->cfg.max_running <= 0) js->cfg.max_running = 1024;
    if (js->cfg.max_running_tenant <= 0) js->cfg.max_running_tenant = 64;
    if (js->cfg.max_running_notify <= 0) js->cfg.max_running_notify = 64;
    if (js->cfg.events_url != NULL)
        lb_metrics_declare_counter("leverbridge_platform_events_total",
                                   "Events sent to the platform, by type and result.");
    js->env = *env;
    lb_map_init(&js->jobs);
    lb_map_init(&js->tenants);
    lb_map_init(&js->chains);
    lb_map_init(&js->ended);
    lb_heap_init(&js->sleepers);
    uv_timer_init(loop, &js->timer);
    js->timer.data = js;
    *out = js;
    return 0;
}

void lb_jobs_register(lb_jobs *js, const lb_job_kind *kinds, size_t n)
{
    if (js->nsets == LB_JOBS_KIND_SETS) {
        lb_error("jobs", "more than %d sets of kinds: %s... not registered", LB_JOBS_KIND_SETS,
                 n > 0 ? kinds[0].type : "");
        return;
    }
    js->kinds[js->nsets] = kinds;
    js->nkinds[js->nsets] = n;
    js->nsets++;
}

static void timer_closed_cb(uv_handle_t *h)
{
    lb_jobs *js = h->data;
    js->timer.data = NULL;
    maybe_closed(js);
}

static void maybe_closed(lb_jobs *js)
{
    if (!js->closing || js->writes > 0 || js->timer.data != NULL) return;
    size_t pos = 0;
    jtenant *t;
    while ((t = lb_map_next(&js->tenants, &pos)) != NULL) {
        lb_free(t->id);
        lb_free(t);
    }
    lb_map_free(&js->tenants);
    lb_map_free(&js->jobs);
    lb_map_free(&js->chains);
    ended_clear(js);
    lb_map_free(&js->ended);
    lb_heap_free(&js->sleepers);
    void (*cb)(void *) = js->close_cb;
    void *data = js->close_data;
    lb_free(js);
    if (cb != NULL) cb(data);
}

void lb_jobs_close(lb_jobs *js, void (*cb)(void *data), void *data)
{
    js->closing = 1;
    js->close_cb = cb;
    js->close_data = data;
    /* Unfinished jobs stay in the store as they are and resume at the next
     * start; here their calls stop and their memory goes. */
    size_t pos = 0;
    lb_job *j;
    while ((j = lb_map_next(&js->jobs, &pos)) != NULL) {
        if (j->in_call) {
            if (j->hcall != NULL)
                lb_http_call_cancel(j->hcall);
            else
                lb_outbound_cancel(&j->ob);
            call_reset(j);
        }
        if (j->state == J_SLEEPING) lb_heap_remove(&js->sleepers, &j->sleep);
        j->state = J_DONE;
        if (j->writes == 0) job_free(j);
    }
    uv_close((uv_handle_t *)&js->timer, timer_closed_cb);
}
