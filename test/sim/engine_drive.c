/* engine-drive: the real outbound engine against a Lever URL (lever-sim in
 * the tests and benchmarks), over real sockets.
 *
 * One loop runs the production modules as main.c wires them: the HTTP
 * client (curl multi on libuv), the outbound queue (per-tenant FIFO, GCRA
 * limiter, round-robin, 429 absorption), the durable jobs with the action
 * kinds, and a SQLite store in a temporary directory. The driver creates N
 * tenants, inserts M add_tags jobs per tenant durably (LB_STORE_JOB_INSERT,
 * then lb_jobs_add, as the webhook path does), runs the loop until every job
 * ended, closes everything and prints ONE JSON object on stdout (figures
 * below). Exit status: 0 when every job ended and uv_loop_close() returned
 * 0; 1 on a timeout or a leaked handle; 2 on bad usage.
 *
 * Measurements. The driver wraps lb_http_client_start at link time
 * (-Wl,--wrap, see CMakeLists.txt) without touching src/: every call it sees
 * comes from the outbound (this driver runs no lb_job_http kind), so `data`
 * is the lb_ob_call, whose queued_ns (set by lb_outbound_submit) gives the
 * scheduling delay (queued -> handed to the HTTP client, the same figure the
 * outbound sums in delay_sum_s), and whose `data` is the lb_job, which names
 * the tenant. The callback is wrapped the same way (no allocation: the
 * outbound's callback is one function, kept once) to time each answer.
 * Attempts, final statuses and errors are read from the store's SQLite file
 * after the store closed.
 *
 * Jobs are handed to lb_jobs_add interleaved across tenants by default
 * (--order tenant: one tenant after the other). A timeout (--timeout) closes
 * the engine with jobs unfinished.
 *
 * Output (times in seconds from the first lb_jobs_add unless named _ms):
 *   seconds, add_seconds (the initial lb_jobs_add calls, which hold the loop),
 *   jobs{total,succeeded,failed,other}, attempts{max,sum,retried_jobs},
 *   delay_ms{p50,p99,max,mean,outbound_mean,samples}, dispatched,
 *   calls_per_second, throttled (429s the outbound absorbed),
 *   responses{ok,r429,r5xx,other,transport}, late{...} or null,
 *   tenants[{id,key,jobs,succeeded,failed,max_attempts,dispatched,r429,
 *            first_dispatch,first_done,last_done}], loop_closed, timed_out,
 *   start_epoch_ms, max_loop_lag_ms (sim.h), errors (up to 5 distinct
 *   last_error texts). */
#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/time.h"
#include "engine/actions.h"
#include "engine/jobs.h"
#include "engine/outbound.h"
#include "http/client.h"
#include "json/json.h"
#include "sim.h"
#include "store/store.h"

#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DRIVE_TENANTS_MAX 10000
#define DRIVE_JOBS_MAX 1000000    /* per tenant */
#define DRIVE_DELAYS_MAX 20000000 /* delay samples kept; more are only counted */
#define DRIVE_INSERT_BATCH 1000   /* jobs per LB_STORE_JOB_INSERT */
#define DRIVE_ERRORS_MAX 5
#define LATE_ID "late"

/* ---- options ------------------------------------------------------------- */

typedef struct {
    const char *lever_url; /* API root, no trailing '/' */
    const char *key_prefix;
    const char *opportunity;
    const char *tag;
    const char *db_dir;
    const char *samples_file; /* one line per dispatch: seconds, delay ms, tenant */
    int tenants;
    int jobs;
    double rate;
    int burst;
    int late;
    int64_t late_after_ms;
    int late_after_done;   /* > 0: add the late tenant once this many jobs succeeded */
    int late_after_queued; /* > 0: ... and this many calls wait in the outbound queue */
    int64_t retry_base_ms, retry_cap_ms, max_age_ms, timeout_ms;
    int max_inflight, max_running, max_running_tenant;
    int keep_db;
    int by_tenant; /* --order tenant: each tenant's jobs added in one block */
    lb_log_level log_level;
} options;

static void usage(FILE *f)
{
    fputs("usage: engine-drive --lever-url URL [options]\n"
          "  --lever-url URL          Lever API root, e.g. http://127.0.0.1:PORT/v1\n"
          "  --tenants N              tenants t0..t(N-1) (default 1)\n"
          "  --jobs M                 add_tags jobs per tenant (default 10)\n"
          "  --key-prefix P           tenant i uses API key P<i>, the late one P" LATE_ID
          " (default key-)\n"
          "  --opportunity ID         the opportunity every job tags (default opp-1)\n"
          "  --tag T                  the tag added (default engine-drive)\n"
          "  --rate R                 per-tenant requests/s; 0 = unlimited (default 10)\n"
          "  --burst B                per-tenant burst (default 20)\n"
          "  --late-tenant            one more tenant (\"" LATE_ID "\") with one job, added\n"
          "                           --late-after after the start (default 200ms)\n"
          "  --late-after-done N      ... or once N jobs have succeeded (its row is stored\n"
          "                           at the start): a backlog whatever the machine's speed\n"
          "  --late-after-queued N    ... and N calls wait in the outbound queue (a slow\n"
          "                           machine may start the backlog's jobs late)\n"
          "  --retry-base D, --retry-cap D, --max-age D   job backoff (default 1s, 10m, 72h)\n"
          "  --max-inflight N         HTTP calls at once (default 256)\n"
          "  --max-running N          jobs running at once (default 4 x max-inflight)\n"
          "  --max-running-tenant N   jobs running at once per tenant (default 2 x burst,\n"
          "                           at least 1)\n"
          "  --timeout D              give up after D (default 120s)\n"
          "  --db-dir DIR             where the temporary store goes (default /tmp)\n"
          "  --order O                how the jobs are handed to lb_jobs_add: interleaved\n"
          "                           (default: job k of every tenant, then k+1, in one\n"
          "                           call) or tenant (one call per tenant, in turn)\n"
          "  --keep-db                leave the store's directory behind\n"
          "  --samples FILE           write \"<dispatch s> <delay ms> <tenant>\" per call\n"
          "  --log-level L            engine log level on stderr (default warn)\n",
          f);
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static int parse_options(int argc, char **argv, options *o)
{
    *o = (options){.key_prefix = "key-",
                   .opportunity = "opp-1",
                   .tag = "engine-drive",
                   .db_dir = "/tmp",
                   .tenants = 1,
                   .jobs = 10,
                   .rate = 10,
                   .burst = 20,
                   .late_after_ms = 200,
                   .retry_base_ms = 1000,
                   .retry_cap_ms = 600000,
                   .max_age_ms = 72LL * 3600 * 1000,
                   .timeout_ms = 120000,
                   .max_inflight = 256,
                   .log_level = LB_LOG_WARN};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0, flag = 1;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--late-tenant") == 0) {
            o->late = 1;
        } else if (strcmp(a, "--keep-db") == 0) {
            o->keep_db = 1;
        } else {
            flag = 0;
        }
        if (flag) continue;
        if (v == NULL) {
            fprintf(stderr, "engine-drive: %s needs a value\n", a);
            return -1;
        }
        i++;
        if (strcmp(a, "--lever-url") == 0)
            o->lever_url = v;
        else if (strcmp(a, "--key-prefix") == 0)
            o->key_prefix = v;
        else if (strcmp(a, "--opportunity") == 0)
            o->opportunity = v;
        else if (strcmp(a, "--tag") == 0)
            o->tag = v;
        else if (strcmp(a, "--db-dir") == 0)
            o->db_dir = v;
        else if (strcmp(a, "--samples") == 0)
            o->samples_file = v;
        else if (strcmp(a, "--order") == 0) {
            o->by_tenant = strcmp(v, "tenant") == 0;
            rc = o->by_tenant || strcmp(v, "interleaved") == 0 ? 0 : -1;
        } else if (strcmp(a, "--tenants") == 0)
            rc = parse_int(v, 1, DRIVE_TENANTS_MAX, &o->tenants);
        else if (strcmp(a, "--jobs") == 0)
            rc = parse_int(v, 1, DRIVE_JOBS_MAX, &o->jobs);
        else if (strcmp(a, "--burst") == 0)
            rc = parse_int(v, 1, 1000000, &o->burst);
        else if (strcmp(a, "--max-inflight") == 0)
            rc = parse_int(v, 1, 100000, &o->max_inflight);
        else if (strcmp(a, "--max-running") == 0)
            rc = parse_int(v, 1, 100000000, &o->max_running);
        else if (strcmp(a, "--max-running-tenant") == 0)
            rc = parse_int(v, 1, 100000000, &o->max_running_tenant);
        else if (strcmp(a, "--rate") == 0) {
            char *end;
            o->rate = strtod(v, &end);
            rc = (*v == '\0' || *end != '\0' || !(o->rate >= 0) || o->rate > 1e6) ? -1 : 0;
        } else if (strcmp(a, "--late-after") == 0)
            rc = lb_duration_parse(v, &o->late_after_ms);
        else if (strcmp(a, "--late-after-done") == 0)
            rc = parse_int(v, 1, 100000000, &o->late_after_done);
        else if (strcmp(a, "--late-after-queued") == 0)
            rc = parse_int(v, 1, 100000000, &o->late_after_queued);
        else if (strcmp(a, "--retry-base") == 0)
            rc = lb_duration_parse(v, &o->retry_base_ms);
        else if (strcmp(a, "--retry-cap") == 0)
            rc = lb_duration_parse(v, &o->retry_cap_ms);
        else if (strcmp(a, "--max-age") == 0)
            rc = lb_duration_parse(v, &o->max_age_ms);
        else if (strcmp(a, "--timeout") == 0)
            rc = lb_duration_parse(v, &o->timeout_ms);
        else if (strcmp(a, "--log-level") == 0)
            rc = lb_log_level_parse(v, &o->log_level);
        else {
            fprintf(stderr, "engine-drive: unknown option %s\n", a);
            usage(stderr);
            return -1;
        }
        if (rc != 0) {
            fprintf(stderr, "engine-drive: bad value for %s: %s\n", a, v);
            return -1;
        }
    }
    if (o->lever_url == NULL) {
        fprintf(stderr, "engine-drive: --lever-url is required\n");
        usage(stderr);
        return -1;
    }
    if (o->retry_base_ms > o->retry_cap_ms) {
        fprintf(stderr, "engine-drive: --retry-base must not exceed --retry-cap\n");
        return -1;
    }
    if (o->max_running == 0) o->max_running = o->max_inflight * 4;
    if (o->max_running_tenant == 0) o->max_running_tenant = o->burst * 2;
    return 0;
}

/* ---- state ----------------------------------------------------------------- */

/* One tenant as the driver sees it. Times are uv_hrtime() ns, 0: never. */
typedef struct {
    char id[LB_TENANT_ID_MAX + 1];
    char key[256];
    int njobs;
    uint64_t dispatched, ok, r429;
    uint64_t first_dispatch_ns, first_done_ns, last_done_ns;
    /* from the store, after the run */
    int succeeded, failed, other, max_attempts;
} dtenant;

typedef struct {
    options o;
    uv_loop_t loop;
    char dir[512], path[600], url[620];
    lb_store *store;
    lb_http_client *client;
    lb_outbound *ob;
    lb_jobs *jobs;
    dtenant *tenants; /* o.tenants, then the late one */
    int ntenants;
    uint64_t expected; /* jobs to end */
    uv_check_t check;
    uv_timer_t late_timer, deadline;
    sim_lag lag;
    int closing, closed_parts, timed_out;
    uint64_t t0_ns, end_ns, added_ns; /* added_ns: the initial lb_jobs_add calls returned */
    int64_t start_epoch_ms;
    /* samples of the scheduling delay, in seconds */
    float *delays;
    float *dispatch_at; /* with --samples: seconds since t0, per delay */
    uint16_t *sample_tenant;
    size_t ndelays, delays_cap;
    uint64_t delays_dropped;
    uint64_t resp_ok, resp_429, resp_5xx, resp_other, resp_transport;
    /* the late tenant */
    int late_added;
    int late_row_ready; /* --late-after-done: its row is stored */
    uint64_t late_insert_ns, late_added_ns;
    int64_t late_added_epoch_ms;
    uint64_t late_backlog_jobs, late_backlog_calls;
    lb_store_op late_op;
    lb_job_rec late_rec;
    char action[512];
    /* kept from the run, before the engine is freed */
    lb_outbound_stats ob_stats;
    lb_jobs_stats js_stats;
    /* from the store */
    int attempts_max;
    uint64_t attempts_sum, retried_jobs, st_succeeded, st_failed, st_other;
    char *errors[DRIVE_ERRORS_MAX];
    int nerrors;
    int loop_closed;
} drive;

static drive D;

static dtenant *tenant_of(const char *id)
{
    if (strcmp(id, LATE_ID) == 0) return D.o.late ? &D.tenants[D.o.tenants] : NULL;
    if (id[0] != 't') return NULL;
    int i;
    if (parse_int(id + 1, 0, D.o.tenants - 1, &i) != 0) return NULL;
    return &D.tenants[i];
}

/* ---- the seam: lb_http_client_start, wrapped at link time --------------------- */

int __real_lb_http_client_start(lb_http_client *c, const lb_http_request *req, lb_http_call_cb cb,
                                void *data, lb_http_call **out);
int __wrap_lb_http_client_start(lb_http_client *c, const lb_http_request *req, lb_http_call_cb cb,
                                void *data, lb_http_call **out);

static lb_http_call_cb outbound_cb; /* the outbound's completion callback */

static dtenant *call_tenant(void *data)
{
    lb_ob_call *call = data;
    return tenant_of(lb_job_tenant((lb_job *)call->data));
}

static void wrapped_cb(const lb_http_response *res, void *data)
{
    uint64_t now = uv_hrtime();
    dtenant *t = call_tenant(data); /* before the job may end and be freed */
    if (res->status >= 200 && res->status < 300) {
        D.resp_ok++;
        if (t != NULL) {
            t->ok++;
            if (t->first_done_ns == 0) t->first_done_ns = now;
            t->last_done_ns = now;
        }
    } else if (res->status == 429) {
        D.resp_429++;
        if (t != NULL) t->r429++;
    } else if (res->status >= 500) {
        D.resp_5xx++;
    } else if (res->status == 0) {
        D.resp_transport++;
    } else {
        D.resp_other++;
    }
    outbound_cb(res, data);
}

int __wrap_lb_http_client_start(lb_http_client *c, const lb_http_request *req, lb_http_call_cb cb,
                                void *data, lb_http_call **out)
{
    if (outbound_cb == NULL) outbound_cb = cb;
    if (cb != outbound_cb) { /* not the outbound's: not measured */
        return __real_lb_http_client_start(c, req, cb, data, out);
    }
    uint64_t now = uv_hrtime();
    int rc = __real_lb_http_client_start(c, req, wrapped_cb, data, out);
    if (rc != 0) return rc;
    const lb_ob_call *call = data;
    double delay = (double)(now - call->queued_ns) / 1e9;
    dtenant *t = call_tenant(data);
    if (D.ndelays < D.delays_cap) {
        if (D.dispatch_at != NULL) {
            D.dispatch_at[D.ndelays] = (float)((double)(now - D.t0_ns) / 1e9);
            D.sample_tenant[D.ndelays] = (uint16_t)(t != NULL ? t - D.tenants : 0xffff);
        }
        D.delays[D.ndelays++] = (float)delay;
    } else {
        D.delays_dropped++;
    }
    if (t != NULL) {
        t->dispatched++;
        if (t->first_dispatch_ns == 0) t->first_dispatch_ns = now;
    }
    return 0;
}

/* ---- env ------------------------------------------------------------------- */

static uint64_t n_unauthorized, n_forbidden;

static int env_auth(void *data, const char *tenant, lb_lever_auth *auth)
{
    (void)data;
    dtenant *t = tenant_of(tenant);
    if (t == NULL) return LB_ENOTFOUND;
    auth->api_url = D.o.lever_url;
    auth->api_key = t->key;
    return 0;
}

static void env_unauthorized(void *data, const char *tenant)
{
    (void)data;
    (void)tenant;
    n_unauthorized++;
}

static void env_permission(void *data, const char *tenant, const char *permission, int granted)
{
    (void)data;
    (void)tenant;
    (void)permission;
    if (!granted) n_forbidden++;
}

static void env_rate(void *data, const char *tenant, double *rate, int *burst)
{
    (void)data;
    (void)tenant;
    *rate = D.o.rate;
    *burst = D.o.burst;
}

/* ---- store helpers ------------------------------------------------------------ */

static void op_done(lb_store_op *op)
{
    (*(int *)op->data)++;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "engine-drive: %s: %s\n", what, lb_strerror(rc));
    exit(1);
}

/* Runs the loop until `n` ops of `done` completed. */
static void wait_ops(int *done, int n)
{
    while (*done < n)
        uv_run(&D.loop, UV_RUN_ONCE);
}

static void upsert_tenants(void)
{
    lb_store_op *ops = lb_calloc((size_t)D.ntenants, sizeof(*ops));
    int done = 0;
    for (int i = 0; i < D.ntenants; i++) {
        ops[i] = (lb_store_op){.kind = LB_STORE_TENANT_UPSERT, .cb = op_done, .data = &done};
        snprintf(ops[i].tenant_upsert.rec.id, sizeof(ops[i].tenant_upsert.rec.id), "%s",
                 D.tenants[i].id);
        ops[i].tenant_upsert.rec.name = D.tenants[i].id;
        ops[i].tenant_upsert.rec.lever_rate = D.o.rate;
        ops[i].tenant_upsert.rec.lever_burst = D.o.burst;
        int rc = lb_store_submit(D.store, &ops[i]);
        if (rc != 0) die("tenant upsert", rc);
    }
    wait_ops(&done, D.ntenants);
    for (int i = 0; i < D.ntenants; i++)
        if (ops[i].status != 0) die("tenant upsert", ops[i].status);
    lb_free(ops);
}

static void job_rec(lb_job_rec *r, const char *tenant, int k)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->id, sizeof(r->id), "j-%.16s-%d", tenant, k); /* ids are short */
    snprintf(r->tenant_id, sizeof(r->tenant_id), "%s", tenant);
    r->action = D.action;
    r->opportunity_id = (char *)D.o.opportunity;
    r->status = LB_JOB_QUEUED;
    r->created_at = lb_time_now_ms();
}

/* ---- the run ------------------------------------------------------------------- */

static void begin_close(void);

/* Hands the late tenant's job (its row stored) to the engine, noting the
 * backlog it meets. */
static void late_add(void)
{
    lb_jobs_stats js;
    lb_outbound_stats os;
    lb_jobs_stats_get(D.jobs, &js);
    lb_outbound_stats_get(D.ob, &os);
    D.late_backlog_jobs = js.active;
    D.late_backlog_calls = os.queued;
    D.late_added_ns = uv_hrtime();
    D.late_added_epoch_ms = lb_time_now_ms();
    D.late_added = 1;
    lb_jobs_add(D.jobs, &D.late_rec, 1);
}

static void late_inserted(lb_store_op *op)
{
    if (D.closing) /* the run ended (timeout) while the insert was pending */
        return;
    if (op->status != 0) {
        fprintf(stderr, "engine-drive: late job insert: %s\n", lb_strerror(op->status));
        D.timed_out = 1;
        begin_close();
        return;
    }
    if (D.o.late_after_done > 0)
        D.late_row_ready = 1; /* check_cb adds it once enough jobs succeeded */
    else
        late_add();
}

static void late_timer_cb(uv_timer_t *t)
{
    (void)t;
    if (D.closing) return;
    job_rec(&D.late_rec, LATE_ID, 0);
    D.late_op = (lb_store_op){.kind = LB_STORE_JOB_INSERT, .cb = late_inserted};
    D.late_op.job_insert.recs = &D.late_rec;
    D.late_op.job_insert.count = 1;
    D.late_insert_ns = uv_hrtime();
    int rc = lb_store_submit(D.store, &D.late_op);
    if (rc != 0) die("late job insert", rc);
}

static void deadline_cb(uv_timer_t *t)
{
    (void)t;
    fprintf(stderr, "engine-drive: timed out with jobs unfinished\n");
    D.timed_out = 1;
    begin_close();
}

static void check_cb(uv_check_t *c)
{
    (void)c;
    if (D.closing) return;
    lb_jobs_stats js;
    lb_jobs_stats_get(D.jobs, &js);
    if (D.late_row_ready && !D.late_added && js.succeeded >= (uint64_t)D.o.late_after_done) {
        lb_outbound_stats os;
        lb_outbound_stats_get(D.ob, &os);
        if (os.queued >= (uint64_t)D.o.late_after_queued) late_add();
    }
    if (D.o.late && !D.late_added) return;
    if (js.succeeded + js.failed + js.skipped + js.cancelled >= D.expected) begin_close();
}

static void store_closed_cb(void *data)
{
    (void)data;
    D.store = NULL;
}

static void part_closed_cb(void *data)
{
    (void)data;
    if (++D.closed_parts == 3) lb_store_close(D.store, store_closed_cb, NULL);
}

static void begin_close(void)
{
    if (D.closing) return;
    D.closing = 1;
    D.end_ns = uv_hrtime();
    lb_outbound_stats_get(D.ob, &D.ob_stats);
    lb_jobs_stats_get(D.jobs, &D.js_stats);
    uv_close((uv_handle_t *)&D.check, NULL);
    uv_close((uv_handle_t *)&D.late_timer, NULL);
    uv_close((uv_handle_t *)&D.deadline, NULL);
    sim_lag_close(&D.lag);
    /* The jobs first (they stop their calls; their store writes finish),
     * the HTTP client before the outbound frees its tenants (outbound.h),
     * the store once all three are closed. */
    lb_jobs_close(D.jobs, part_closed_cb, NULL);
    lb_http_client_close(D.client, part_closed_cb, NULL);
    lb_outbound_close(D.ob, part_closed_cb, NULL);
}

/* ---- results ------------------------------------------------------------------- */

static void read_store(void)
{
    sqlite3 *db;
    if (sqlite3_open_v2(D.path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fprintf(stderr, "engine-drive: cannot open %s\n", D.path);
        exit(1);
    }
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db,
                           "SELECT tenant_id, status, attempts, COALESCE(last_error, '')"
                           " FROM jobs",
                           -1, &q, NULL) != SQLITE_OK) {
        fprintf(stderr, "engine-drive: %s\n", sqlite3_errmsg(db));
        exit(1);
    }
    while (sqlite3_step(q) == SQLITE_ROW) {
        dtenant *t = tenant_of((const char *)sqlite3_column_text(q, 0));
        const char *status = (const char *)sqlite3_column_text(q, 1);
        int attempts = sqlite3_column_int(q, 2);
        const char *err = (const char *)sqlite3_column_text(q, 3);
        if (attempts > D.attempts_max) D.attempts_max = attempts;
        D.attempts_sum += (uint64_t)attempts;
        if (attempts > 1) D.retried_jobs++;
        if (strcmp(status, "succeeded") == 0) {
            D.st_succeeded++;
            if (t) t->succeeded++;
        } else if (strcmp(status, "failed") == 0) {
            D.st_failed++;
            if (t) t->failed++;
        } else {
            D.st_other++;
            if (t) t->other++;
        }
        if (t && attempts > t->max_attempts) t->max_attempts = attempts;
        if (*err && strcmp(status, "succeeded") != 0 && D.nerrors < DRIVE_ERRORS_MAX) {
            int seen = 0;
            for (int i = 0; i < D.nerrors; i++)
                seen |= strcmp(D.errors[i], err) == 0;
            if (!seen) D.errors[D.nerrors++] = lb_strdup(err);
        }
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* Nearest rank, in ms. */
static double pct_ms(double p)
{
    if (D.ndelays == 0) return 0;
    size_t k = (size_t)ceil(p * (double)D.ndelays);
    if (k < 1) k = 1;
    return (double)D.delays[k - 1] * 1000.0;
}

static double since_s(uint64_t ns)
{
    return ns == 0 ? -1.0 : (double)(ns - D.t0_ns) / 1e9;
}

static void kv_since(yajl_gen g, const char *key, uint64_t ns)
{
    if (ns == 0)
        lb_json_kv_null(g, key);
    else
        lb_json_kv_double(g, key, since_s(ns));
}

static void write_samples(void)
{
    FILE *f = fopen(D.o.samples_file, "w");
    if (f == NULL) {
        perror("engine-drive: --samples");
        return;
    }
    for (size_t i = 0; i < D.ndelays; i++) {
        unsigned k = D.sample_tenant[i];
        fprintf(f, "%.6f %.3f %s\n", (double)D.dispatch_at[i], (double)D.delays[i] * 1000.0,
                k < (unsigned)D.ntenants ? D.tenants[k].id : "?");
    }
    fclose(f);
}

static void print_results(void)
{
    if (D.dispatch_at != NULL) write_samples();
    qsort(D.delays, D.ndelays, sizeof(*D.delays), cmp_float);
    double sum = 0;
    for (size_t i = 0; i < D.ndelays; i++)
        sum += D.delays[i];
    double secs = (double)(D.end_ns - D.t0_ns) / 1e9;

    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_double(g, "seconds", secs);
    lb_json_kv_int(g, "start_epoch_ms", D.start_epoch_ms);
    /* how long the initial lb_jobs_add calls held the loop */
    lb_json_kv_double(g, "add_seconds", since_s(D.added_ns));
    lb_json_kv_bool(g, "timed_out", D.timed_out);
    lb_json_kv_bool(g, "loop_closed", D.loop_closed);
    /* the longest the loop could not run (sim.h) */
    lb_json_kv_double(g, "max_loop_lag_ms", sim_lag_max_ms(&D.lag));

    lb_json_key(g, "config");
    yajl_gen_map_open(g);
    lb_json_kv_int(g, "tenants", D.o.tenants);
    lb_json_kv_int(g, "jobs_per_tenant", D.o.jobs);
    lb_json_kv_double(g, "rate", D.o.rate);
    lb_json_kv_int(g, "burst", D.o.burst);
    lb_json_kv_int(g, "max_inflight", D.o.max_inflight);
    lb_json_kv_int(g, "max_running", D.o.max_running);
    lb_json_kv_int(g, "max_running_tenant", D.o.max_running_tenant);
    lb_json_kv_int(g, "retry_base_ms", D.o.retry_base_ms);
    lb_json_kv_int(g, "retry_cap_ms", D.o.retry_cap_ms);
    lb_json_kv_str(g, "order", D.o.by_tenant ? "tenant" : "interleaved");
    yajl_gen_map_close(g);

    lb_json_key(g, "jobs");
    yajl_gen_map_open(g);
    lb_json_kv_int(g, "total", (int64_t)D.expected);
    lb_json_kv_int(g, "succeeded", (int64_t)D.st_succeeded);
    lb_json_kv_int(g, "failed", (int64_t)D.st_failed);
    lb_json_kv_int(g, "other", (int64_t)D.st_other);
    lb_json_kv_int(g, "engine_succeeded", (int64_t)D.js_stats.succeeded);
    lb_json_kv_int(g, "engine_failed", (int64_t)D.js_stats.failed);
    lb_json_kv_int(g, "engine_retried", (int64_t)D.js_stats.retried);
    lb_json_kv_int(g, "engine_started", (int64_t)D.js_stats.started);
    yajl_gen_map_close(g);

    lb_json_key(g, "attempts");
    yajl_gen_map_open(g);
    lb_json_kv_int(g, "max", D.attempts_max);
    lb_json_kv_int(g, "sum", (int64_t)D.attempts_sum);
    lb_json_kv_int(g, "retried_jobs", (int64_t)D.retried_jobs);
    yajl_gen_map_close(g);

    lb_json_key(g, "delay_ms");
    yajl_gen_map_open(g);
    lb_json_kv_double(g, "p50", pct_ms(0.50));
    lb_json_kv_double(g, "p99", pct_ms(0.99));
    lb_json_kv_double(g, "max", D.ndelays ? (double)D.delays[D.ndelays - 1] * 1000.0 : 0);
    lb_json_kv_double(g, "mean", D.ndelays ? sum / (double)D.ndelays * 1000.0 : 0);
    lb_json_kv_double(g, "outbound_mean",
                      D.ob_stats.dispatched
                          ? D.ob_stats.delay_sum_s / (double)D.ob_stats.dispatched * 1000.0
                          : 0);
    lb_json_kv_int(g, "samples", (int64_t)D.ndelays);
    lb_json_kv_int(g, "dropped", (int64_t)D.delays_dropped);
    yajl_gen_map_close(g);

    lb_json_kv_int(g, "dispatched", (int64_t)D.ob_stats.dispatched);
    lb_json_kv_double(g, "calls_per_second", secs > 0 ? (double)D.ob_stats.dispatched / secs : 0);
    lb_json_kv_int(g, "throttled", (int64_t)D.ob_stats.throttled);
    lb_json_kv_int(g, "unauthorized", (int64_t)n_unauthorized);
    lb_json_kv_int(g, "forbidden", (int64_t)n_forbidden);

    lb_json_key(g, "responses");
    yajl_gen_map_open(g);
    lb_json_kv_int(g, "ok", (int64_t)D.resp_ok);
    lb_json_kv_int(g, "r429", (int64_t)D.resp_429);
    lb_json_kv_int(g, "r5xx", (int64_t)D.resp_5xx);
    lb_json_kv_int(g, "other", (int64_t)D.resp_other);
    lb_json_kv_int(g, "transport", (int64_t)D.resp_transport);
    yajl_gen_map_close(g);

    lb_json_key(g, "late");
    if (!D.o.late) {
        yajl_gen_null(g);
    } else {
        dtenant *t = &D.tenants[D.o.tenants];
        yajl_gen_map_open(g);
        lb_json_kv_bool(g, "added", D.late_added);
        lb_json_kv_int(g, "added_epoch_ms", D.late_added_epoch_ms);
        kv_since(g, "added_at", D.late_added_ns);
        lb_json_kv_int(g, "backlog_jobs", (int64_t)D.late_backlog_jobs);
        lb_json_kv_int(g, "backlog_calls", (int64_t)D.late_backlog_calls);
        if (t->first_dispatch_ns && D.late_added_ns) {
            lb_json_kv_double(g, "first_call_delay_ms",
                              (double)(t->first_dispatch_ns - D.late_added_ns) / 1e6);
            lb_json_kv_double(g, "first_call_delay_from_insert_ms",
                              (double)(t->first_dispatch_ns - D.late_insert_ns) / 1e6);
        } else {
            lb_json_kv_null(g, "first_call_delay_ms");
            lb_json_kv_null(g, "first_call_delay_from_insert_ms");
        }
        if (t->first_done_ns && D.late_added_ns)
            lb_json_kv_double(g, "done_delay_ms",
                              (double)(t->first_done_ns - D.late_added_ns) / 1e6);
        else
            lb_json_kv_null(g, "done_delay_ms");
        yajl_gen_map_close(g);
    }

    lb_json_key(g, "tenants");
    yajl_gen_array_open(g);
    for (int i = 0; i < D.ntenants; i++) {
        dtenant *t = &D.tenants[i];
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "id", t->id);
        lb_json_kv_str(g, "key", t->key);
        lb_json_kv_int(g, "jobs", t->njobs);
        lb_json_kv_int(g, "succeeded", t->succeeded);
        lb_json_kv_int(g, "failed", t->failed);
        lb_json_kv_int(g, "max_attempts", t->max_attempts);
        lb_json_kv_int(g, "dispatched", (int64_t)t->dispatched);
        lb_json_kv_int(g, "r429", (int64_t)t->r429);
        kv_since(g, "first_dispatch", t->first_dispatch_ns);
        kv_since(g, "first_done", t->first_done_ns);
        kv_since(g, "last_done", t->last_done_ns);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);

    lb_json_key(g, "errors");
    yajl_gen_array_open(g);
    for (int i = 0; i < D.nerrors; i++)
        lb_json_str(g, D.errors[i]);
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);

    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(g, &buf, &len);
    fwrite(buf, 1, len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    yajl_gen_free(g);
}

/* ---- main ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    lb_alloc_install();
    if (parse_options(argc, argv, &D.o) != 0) return 2;
    lb_log_set_level(D.o.log_level);
    if (lb_http_client_global_init() != 0) {
        fprintf(stderr, "engine-drive: libcurl failed to initialise\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&D.loop);

    snprintf(D.dir, sizeof(D.dir), "%s/engine-drive-XXXXXX", D.o.db_dir);
    if (mkdtemp(D.dir) == NULL) {
        perror("engine-drive: mkdtemp");
        return 1;
    }
    snprintf(D.path, sizeof(D.path), "%s/store.db", D.dir);
    snprintf(D.url, sizeof(D.url), "sqlite:%s", D.path);
    char err[256];
    int rc = lb_store_open(&D.loop, D.url, NULL, &D.store, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "engine-drive: store: %s\n", err);
        return 1;
    }

    D.ntenants = D.o.tenants + (D.o.late ? 1 : 0);
    D.tenants = lb_calloc((size_t)D.ntenants, sizeof(*D.tenants));
    for (int i = 0; i < D.ntenants; i++) {
        dtenant *t = &D.tenants[i];
        if (i < D.o.tenants) {
            snprintf(t->id, sizeof(t->id), "t%d", i);
            snprintf(t->key, sizeof(t->key), "%s%d", D.o.key_prefix, i);
            t->njobs = D.o.jobs;
        } else {
            snprintf(t->id, sizeof(t->id), LATE_ID);
            snprintf(t->key, sizeof(t->key), "%s" LATE_ID, D.o.key_prefix);
            t->njobs = 1;
        }
        D.expected += (uint64_t)t->njobs;
    }
    D.delays_cap = D.expected * 2 + 1024;
    if (D.delays_cap > DRIVE_DELAYS_MAX) D.delays_cap = DRIVE_DELAYS_MAX;
    D.delays = lb_malloc(D.delays_cap * sizeof(*D.delays));
    if (D.o.samples_file != NULL) {
        D.dispatch_at = lb_malloc(D.delays_cap * sizeof(*D.dispatch_at));
        D.sample_tenant = lb_malloc(D.delays_cap * sizeof(*D.sample_tenant));
    }
    snprintf(D.action, sizeof(D.action), "{\"type\":\"add_tags\",\"tags\":[\"%s\"]}", D.o.tag);

    /* Durable first: tenants, then every job, in batches. */
    upsert_tenants();
    size_t nrecs = (size_t)D.o.tenants * (size_t)D.o.jobs;
    lb_job_rec *recs = lb_calloc(nrecs, sizeof(*recs));
    size_t nops = (nrecs + DRIVE_INSERT_BATCH - 1) / DRIVE_INSERT_BATCH;
    lb_store_op *ops = lb_calloc(nops, sizeof(*ops));
    for (int i = 0; i < D.o.tenants; i++)
        for (int k = 0; k < D.o.jobs; k++)
            job_rec(&recs[(size_t)i * (size_t)D.o.jobs + (size_t)k], D.tenants[i].id, k);
    int done = 0;
    for (size_t b = 0; b < nops; b++) {
        size_t first = b * DRIVE_INSERT_BATCH;
        size_t n = nrecs - first < DRIVE_INSERT_BATCH ? nrecs - first : DRIVE_INSERT_BATCH;
        ops[b] = (lb_store_op){.kind = LB_STORE_JOB_INSERT, .cb = op_done, .data = &done};
        ops[b].job_insert.recs = &recs[first];
        ops[b].job_insert.count = n;
        rc = lb_store_submit(D.store, &ops[b]);
        if (rc != 0) die("job insert", rc);
    }
    wait_ops(&done, (int)nops);
    for (size_t b = 0; b < nops; b++)
        if (ops[b].status != 0) die("job insert", ops[b].status);
    lb_free(ops);

    /* The engine, wired as main.c wires it. */
    lb_http_client_config cc = {.max_inflight = D.o.max_inflight};
    if ((rc = lb_http_client_new(&D.loop, &cc, &D.client)) != 0) die("http client", rc);
    if ((rc = lb_outbound_new(&D.loop, D.client, &D.ob)) != 0) die("outbound", rc);
    lb_jobs_config jc = {.retry_base_ms = D.o.retry_base_ms,
                         .retry_cap_ms = D.o.retry_cap_ms,
                         .max_age_ms = D.o.max_age_ms,
                         .max_running = D.o.max_running,
                         .max_running_tenant = D.o.max_running_tenant};
    lb_jobs_env env = {env_auth, env_unauthorized, env_permission, env_rate, NULL, NULL};
    if ((rc = lb_jobs_new(&D.loop, D.store, D.ob, D.client, &jc, &env, &D.jobs)) != 0)
        die("jobs", rc);
    lb_jobs_register(D.jobs, lb_action_kinds, lb_action_nkinds);

    uv_check_init(&D.loop, &D.check);
    uv_check_start(&D.check, check_cb);
    uv_timer_init(&D.loop, &D.late_timer);
    uv_timer_init(&D.loop, &D.deadline);
    uv_timer_start(&D.deadline, deadline_cb, (uint64_t)D.o.timeout_ms, 0);
    sim_lag_start(&D.loop, &D.lag);

    uv_update_time(&D.loop);
    D.t0_ns = uv_hrtime();
    D.start_epoch_ms = lb_time_now_ms();
    if (D.o.late)
        uv_timer_start(&D.late_timer, late_timer_cb,
                       D.o.late_after_done > 0 ? 0 : (uint64_t)D.o.late_after_ms, 0);
    if (D.o.by_tenant) {
        for (int i = 0; i < D.o.tenants; i++)
            lb_jobs_add(D.jobs, &recs[(size_t)i * (size_t)D.o.jobs], (size_t)D.o.jobs);
    } else {
        lb_job_rec *il = lb_malloc(nrecs * sizeof(*il));
        for (size_t k = 0, n = 0; k < (size_t)D.o.jobs; k++)
            for (size_t i = 0; i < (size_t)D.o.tenants; i++)
                il[n++] = recs[i * (size_t)D.o.jobs + k];
        lb_jobs_add(D.jobs, il, nrecs);
        lb_free(il);
    }
    D.added_ns = uv_hrtime();
    lb_free(recs); /* lb_jobs_add copied them */

    uv_run(&D.loop, UV_RUN_DEFAULT);
    D.loop_closed = uv_loop_close(&D.loop) == 0;
    if (!D.loop_closed) fprintf(stderr, "engine-drive: uv_loop_close: handles left open\n");

    read_store();
    print_results();

    for (int i = 0; i < D.nerrors; i++)
        lb_free(D.errors[i]);
    lb_free(D.delays);
    lb_free(D.dispatch_at);
    lb_free(D.sample_tenant);
    lb_free(D.tenants);
    lb_http_client_global_cleanup();
    if (!D.o.keep_db) {
        char p[700];
        const char *suffix[] = {"", "-wal", "-shm"};
        for (size_t i = 0; i < LB_COUNTOF(suffix); i++) {
            snprintf(p, sizeof(p), "%s%s", D.path, suffix[i]);
            unlink(p);
        }
        rmdir(D.dir);
    } else {
        fprintf(stderr, "engine-drive: store kept in %s\n", D.dir);
    }
    return D.timed_out || !D.loop_closed ? 1 : 0;
}
