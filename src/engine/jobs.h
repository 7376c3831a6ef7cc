/* Durable jobs: one outbound action for one opportunity, run to an end
 * (succeeded, failed, skipped, cancelled) through retries, restarts and
 * crashes.
 *
 * State lives in the store; the engine keeps every unfinished job in memory
 * and schedules it: per-tenant FIFOs of due jobs served round-robin under a
 * global cap of running jobs (and a per-tenant one), a heap of retry times
 * behind one timer. The jobs of one event form a chain and run in `seq`
 * order: a job starts only when the one before it has ended.
 *
 * A job's kind (its action "type") runs it step by step. Each call of
 * kind->run() looks at the recorded steps and issues exactly one of:
 * lb_job_lever() / lb_job_http() (a call, whose callback then continues),
 * lb_job_record() (store a step's result durably, then run() again),
 * lb_job_finish(), lb_job_retry(). A step recorded is never repeated, even
 * after a restart.
 *
 * Owner: main creates one lb_jobs; loop thread only. */
#ifndef LB_ENGINE_JOBS_H
#define LB_ENGINE_JOBS_H

#include "engine/gate.h"
#include "engine/outbound.h"
#include "http/client.h"
#include "lever/lever.h"
#include "store/store.h"

#include <stdint.h>
#include <uv.h>
#include <yajl/yajl_tree.h>

#define LB_JOBS_MAX 1000000
#define LB_JOBS_MAX_STEPS 16

typedef struct lb_jobs lb_jobs;
typedef struct lb_job lb_job;

/* What the engine needs from the rest of the server, wired by main. */
typedef struct {
    /* Credentials for the tenant's Lever calls: 0 with *auth filled (its
     * strings are valid only until the callback returns: the engine copies
     * them),
     * or a negative code when the connection cannot be used now (needs
     * re-authorization, disconnected, refreshing): the job then waits for
     * lb_jobs_tenant_resume(). */
    int (*lever_auth)(void *data, const char *tenant, lb_lever_auth *auth);
    /* A 401 from Lever: the connection needs re-authorization. */
    void (*lever_unauthorized)(void *data, const char *tenant);
    /* What a call needing `permission` (Lever's words) found: granted 0 on a
     * 403, 1 on a 2xx (the customer may have fixed the key in Lever since). */
    void (*lever_permission)(void *data, const char *tenant, const char *permission, int granted);
    /* The tenant's limits (rate <= 0: unlimited). */
    void (*tenant_rate)(void *data, const char *tenant, double *rate, int *burst);
    void *data;
    /* The tenant's failure tag (api.md "Failures visible in Lever"), valid
     * until the callback returns, or NULL: off. NULL callback: off. */
    const char *(*failure_tag)(void *data, const char *tenant);
} lb_jobs_env;

typedef struct {
    int64_t retry_base_ms;
    int64_t retry_cap_ms;
    int64_t max_age_ms;
    int max_running;        /* jobs running at once, all tenants */
    int max_running_tenant; /* jobs running at once, one tenant */
    int max_running_notify; /* notify_platform jobs running at once, all
                               tenants (one per tenant at most): bounds the
                               HTTP client's calls a slow events endpoint
                               can hold, so Lever calls keep room; 0: 64 */
    /* The assessment platform (LEVERBRIDGE_PLATFORM_URL, _TOKEN) for
     * send_assessment; borrowed, they must outlive the engine. NULL: not
     * configured (send_assessment jobs fail). */
    const char *platform_url;
    const char *platform_token;
    /* Where finished jobs are counted for the console (state/stats.h);
     * borrowed, NULL: not counted. */
    struct lb_stats *stats;
    /* Events to the platform (LEVERBRIDGE_PLATFORM_EVENTS_URL, _SECRET
     * decoded): borrowed. NULL/0: off, and lb_jobs_notify makes nothing. */
    const char *events_url;
    const uint8_t *events_key;
    size_t events_key_len;
    /* Several replicas: jobs run only for tenants the gate holds (borrowed;
     * NULL: every tenant). Jobs of other tenants are neither kept in memory
     * nor started: their holder runs them. */
    const lb_gate *gate;
} lb_jobs_config;

/* A kind's flags. LB_JOB_KIND_NOTIFY (notify_platform): the tenant's jobs
 * of such kinds form one chain and run one at a time in the order they were
 * made; they are not cancelled with the tenant's Lever jobs (a disconnect
 * is itself an event) and their failure makes no job.failed event. */
#define LB_JOB_KIND_NOTIFY 1
/* LB_JOB_KIND_NO_FAILURE_TAG: a failure of the kind's jobs adds no failure
 * tag (the failure_tag kind itself: it never tags again on its own
 * failure). Notify jobs add none either. */
#define LB_JOB_KIND_NO_FAILURE_TAG 2

/* An action type. */
typedef struct {
    const char *type;
    void (*run)(lb_job *job);
    int flags;
} lb_job_kind;

typedef struct {
    uint64_t started, succeeded, failed, retried, skipped, cancelled;
    size_t active; /* in memory: queued, running, retrying, waiting */
    size_t running;
    size_t retrying; /* waiting for their retry time */
} lb_jobs_stats;

int lb_jobs_new(uv_loop_t *loop, lb_store *store, lb_outbound *ob, lb_http_client *http,
                const lb_jobs_config *cfg, const lb_jobs_env *env, lb_jobs **out);
/* Registers kinds (up to LB_JOBS_KIND_SETS calls); `kinds` must outlive
 * the engine. */
#define LB_JOBS_KIND_SETS 4
void lb_jobs_register(lb_jobs *js, const lb_job_kind *kinds, size_t n);
/* Stops starting jobs, cancels the calls in flight (those jobs stay in the
 * store as they were and resume at the next start), waits for the store
 * writes in flight, frees everything and calls cb. */
void lb_jobs_close(lb_jobs *js, void (*cb)(void *data), void *data);

/* Loads every unfinished job from the store (start-up: running jobs run
 * again, from their first unrecorded step). 0 or a negative code; cb-less:
 * it runs the loop until the store answers. */
int lb_jobs_load(lb_jobs *js);
/* Takes jobs just committed to the store (the records are copied). */
void lb_jobs_add(lb_jobs *js, const lb_job_rec *recs, size_t n);
/* Platform events (engine/notify.h). With events configured, fills *rec
 * with a new notify_platform job of the tenant for an event of `type` with
 * `data` (a JSON object's text, NULL: {}) and returns 1: the caller puts it
 * on the store write that makes the change (lb_store_op.notify) and, once
 * that write succeeded, hands it to lb_jobs_add; then lb_job_rec_free.
 * Events off: returns 0 and *rec is zeroed. Jobs are made in order: each
 * one's created_at is later than the one before. */
int lb_jobs_notify(lb_jobs *js, const char *tenant, const char *type, const char *data,
                   lb_job_rec *rec);
/* What a write carrying rec (from lb_jobs_notify, or zeroed) found: hands
 * rec to the engine when op succeeded, then frees rec. NULL js: only frees. */
void lb_jobs_notify_done(lb_jobs *js, const lb_store_op *op, lb_job_rec *rec);
/* Jobs of the tenant that waited for its connection may run again. */
void lb_jobs_tenant_resume(lb_jobs *js, const char *tenant);
/* Cancels every unfinished job of the tenant (durably, status cancelled)
 * but its events to the platform (a disconnect is itself one). */
void lb_jobs_tenant_cancel(lb_jobs *js, const char *tenant);
/* Cancels the tenant's unfinished events to the platform (the tenant was
 * deleted: its rows are gone). */
void lb_jobs_tenant_cancel_events(lb_jobs *js, const char *tenant);
/* Several replicas (engine/gate.h). The gate now holds the tenant: its jobs
 * may start (those in memory; the store's are brought by lb_jobs_reload). */
void lb_jobs_tenant_gained(lb_jobs *js, const char *tenant);
/* The gate no longer holds the tenant: its jobs leave memory at once, their
 * calls in flight are cancelled and nothing more is written for them but
 * the writes already submitted (the store keeps them as they were; the new
 * holder resumes them from their recorded steps). */
void lb_jobs_tenant_lost(lb_jobs *js, const char *tenant);
/* Loads, without blocking, the unfinished jobs of the tenants whose lease
 * names `node`, written at or after `since` (0: all; new, or retried), and takes those that
 * the gate holds and memory does not have yet (a job that ended while the
 * load was in flight is not taken again). 0, or a negative code. */
int lb_jobs_reload(lb_jobs *js, const char *node, int64_t since);
/* Jobs running now (their tenants' slots), for a drain. */
size_t lb_jobs_running(const lb_jobs *js);

/* Counts of the tenant's jobs in memory by status (queued counts waiting). */
void lb_jobs_tenant_backlog(lb_jobs *js, const char *tenant, size_t *queued, size_t *retrying);
/* The tenant's failed jobs (loaded at start, kept since); a retry of a
 * failed job calls lb_jobs_tenant_failed_add(js, tenant, -1). */
size_t lb_jobs_tenant_failed(lb_jobs *js, const char *tenant);
void lb_jobs_tenant_failed_add(lb_jobs *js, const char *tenant, long delta);
void lb_jobs_stats_get(const lb_jobs *js, lb_jobs_stats *out);

/* ---- for kinds ----------------------------------------------------------- */

const char *lb_job_id(const lb_job *job);
const char *lb_job_tenant(const lb_job *job);
const char *lb_job_opportunity(const lb_job *job);
const char *lb_job_event(const lb_job *job);
int64_t lb_job_created_at(const lb_job *job);
/* lb_jobs_notify for a kind, for its one event: the event's id is "pe_" and
 * the job id's unique part, so a step run again (after a crash) makes an
 * event with the same webhook-id, which the receiver ignores as seen. The
 * record rides on an op given to lb_job_store, which hands it to the engine
 * once the op succeeded; the kind frees rec in done. */
int lb_job_notify(lb_job *job, const char *type, const char *data, lb_job_rec *rec);
/* The parsed action object. */
yajl_val lb_job_action(const lb_job *job);
/* A recorded step's value, or NULL. */
const char *lb_job_step(const lb_job *job, const char *name);
/* The kind's scratch pointer (freed by the kind before it ends the job). */
void **lb_job_scratch(lb_job *job);
/* The engine's configuration (the platform's URL and token). */
const lb_jobs_config *lb_job_config(const lb_job *job);

/* A store operation on the job's behalf (invitations, another job's row):
 * op's kind and inputs are the caller's, op->cb and op->data are set here;
 * op must stay valid until done runs. done runs exactly once, when the store
 * has answered; the job stays allocated until it returns. live is 1 when
 * the job may go on (issue its next action); 0 when it was cancelled or the
 * engine is closing: then done only releases what the op returned. Returns
 * 0, or a negative code and done never runs (the caller then retries). */
typedef void (*lb_job_store_cb)(lb_job *job, lb_store_op *op, int live);
int lb_job_store(lb_job *job, lb_store_op *op, lb_job_store_cb done);

/* Sends a Lever call through the tenant's queue with its credentials:
 * method, query and path as lb_lever_req_init, plus an optional JSON body
 * (copied). `permission` names what a 403 means. done runs with Lever's
 * answer (never a 429). */
typedef void (*lb_job_call_cb)(lb_job *job, const lb_http_response *res);
void lb_job_lever(lb_job *job, const char *permission, const char *method, const char *query,
                  yajl_gen body, lb_job_call_cb done, const char *path_fmt, ...);
/* A call to another service (the platform): not rate limited. */
void lb_job_http(lb_job *job, const lb_http_request *req, lb_job_call_cb done);

/* Records a step's result durably, then calls run() again. */
void lb_job_record(lb_job *job, const char *step, const char *value);
/* Ends the job: LB_JOB_SUCCEEDED, LB_JOB_FAILED or LB_JOB_SKIPPED. */
void lb_job_finish(lb_job *job, int status, const char *error);
/* Ends the job as skipped with `reason`, and the jobs after it that came
 * from the same workflow too (a workflow's filter did not match). */
void lb_job_skip_workflow(lb_job *job, const char *reason);
/* A transient failure: retried after a full-jitter backoff, or failed once
 * the job is older than max_age (counted from its context's "due_at" when
 * it was delayed). */
void lb_job_retry(lb_job *job, const char *error);
/* Applies api.md's mapping to a Lever answer that is not a success: 5xx,
 * 408 and transport failures retry; 401 makes the job wait for the
 * connection; 403 fails it with missing_permission; anything else fails it
 * with Lever's message. */
void lb_job_lever_failed(lb_job *job, const lb_http_response *res);

#endif
