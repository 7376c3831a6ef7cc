/* leverbridge: wires the modules together. Start-up order: configuration,
 * secrets, store, in-memory state, tenant leases (src/cluster/: several
 * replicas on PostgreSQL; on SQLite this node holds every tenant), outbound
 * engine (and the jobs it resumes), routes, listener, signals. A PostgreSQL
 * database that cannot be reached at start is waited for
 * (lb_store_waiting), the listener serving only the operations routes
 * meanwhile (/healthz 200, /readyz 503), and the start goes on once it is
 * reached. Shutdown (SIGTERM/SIGINT): stop accepting, let requests and
 * running jobs finish (DRAIN_TIMEOUT at most), release the leases, stop the
 * engine (jobs stay in the store and resume at the next start, here or on
 * another replica), close the store (it commits what was submitted), close
 * every handle, exit 0. */
#include "api/api.h"
#include "cluster/cluster.h"
#include "cluster/forward.h"
#include "cluster/sync.h"
#include "core/alloc.h"
#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/time.h"
#include "crypto/crypto.h"
#include "engine/actions.h"
#include "engine/catalog.h"
#include "engine/credentials.h"
#include "engine/jobs.h"
#include "engine/notify.h"
#include "engine/outbound.h"
#include "engine/provision.h"
#include "engine/backfill.h"
#include "engine/reconcile.h"
#include "http/client.h"
#include "http/response.h"
#include "http/router.h"
#include "http/server.h"
#include "state/connections.h"
#include "state/missed.h"
#include "state/stats.h"
#include "state/tenants.h"
#include "state/workflows.h"
#include "store/prune.h"
#include "store/store.h"

#include <errno.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

typedef struct {
    uv_loop_t loop;
    lb_config cfg;
    lb_master_key key;
    char *admin_token;
    uint8_t events_key[LB_PLATFORM_KEY_MAX]; /* PLATFORM_EVENTS_SECRET decoded */
    size_t events_key_len;                   /* 0: events to the platform off */
    lb_store *store;
    lb_tenants tenants;
    lb_conns conns;
    lb_workflows workflows;
    lb_http_client *client;
    lb_outbound *outbound;
    lb_jobs *jobs;
    lb_provision *provision;
    lb_reconcile *reconcile;
    lb_backfill *backfill;
    lb_missed missed;
    lb_cred *cred;       /* closed with the store, freed after the loop */
    lb_catalog *catalog; /* freed after the loop */
    lb_pruner *pruner;   /* NULL with RETENTION=0 */
    lb_stats *stats;
    lb_cluster *cluster; /* tenant leases; disabled on SQLite */
    lb_sync *sync;       /* the state kept in step with the store */
    int engine_open;     /* engine parts not yet closed */
    /* To the lease holders: closed before the cluster, freed after the loop. */
    lb_cluster_fwd *forward;
    lb_router *router;
    lb_router *boot; /* the operations routes, while the state is not loaded */
    int serving;     /* the state and the routes are in place: router serves */
    lb_http_server *server;
    lb_api api;
    uv_signal_t sigterm, sigint;
    uv_timer_t drain_timer;
    int stopping;
    int http_drained, leases_drained, finishing;
} app;

static void die(int status, const char *msg)
{
    fprintf(stderr, "leverbridge: %s\n", msg);
    exit(status);
}

static void on_commit(double seconds, size_t ops, void *data)
{
    static lb_metric *hist;
    (void)ops;
    (void)data;
    if (hist == NULL)
        hist = lb_metrics_histogram("leverbridge_store_commit_seconds",
                                    "Duration of one group commit.", "", lb_metrics_latency_bounds,
                                    lb_metrics_latency_nbounds);
    lb_metric_observe(hist, seconds);
}

/* ---- shutdown ------------------------------------------------------------ */

static void store_closed_cb(void *data)
{
    app *a = data;
    a->store = NULL;
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->drain_timer, NULL);
    lb_cred_close(a->cred);
    lb_info("main", "stopped");
}

static void engine_closed_cb(void *data)
{
    app *a = data;
    if (--a->engine_open > 0) return;
    a->jobs = NULL;
    a->pruner = NULL;
    a->stats = NULL;
    a->api.stats = NULL;
    a->provision = NULL;
    a->reconcile = NULL;
    a->api.reconcile = NULL;
    a->backfill = NULL;
    a->api.backfill = NULL;
    a->outbound = NULL;
    a->client = NULL;
    if (a->store != NULL)
        lb_store_close(a->store, store_closed_cb, a);
    else
        store_closed_cb(a);
}

static void server_closed_cb(void *data)
{
    app *a = data;
    a->server = NULL;
    a->api.server = NULL;
    /* Jobs and provisioning first (their calls stop), then the queue, then
     * the client. */
    a->engine_open = 7 + (a->pruner != NULL);
    lb_reconcile_close(a->reconcile, engine_closed_cb, a);
    lb_backfill_close(a->backfill, engine_closed_cb, a);
    if (a->pruner != NULL) lb_pruner_close(a->pruner, engine_closed_cb, a);
    lb_stats_close(a->stats, engine_closed_cb, a);
    lb_jobs_close(a->jobs, engine_closed_cb, a);
    lb_provision_close(a->provision, engine_closed_cb, a);
    lb_outbound_close(a->outbound, engine_closed_cb, a);
    lb_http_client_close(a->client, engine_closed_cb, a);
}

/* The leases are released (or given up): then the server closes. */
static void cluster_closed_cb(void *data)
{
    app *a = data;
    a->cluster = NULL;
    a->api.cluster = NULL;
    if (a->server != NULL) lb_http_server_close(a->server, server_closed_cb, a);
}

/* No more reloads of the state: then the leases go. */
static void sync_closed_cb(void *data)
{
    app *a = data;
    a->sync = NULL;
    lb_cluster_close(a->cluster, cluster_closed_cb, a);
}

static void finish_stop(app *a)
{
    if (a->finishing) return;
    a->finishing = 1;
    uv_timer_stop(&a->drain_timer);
    lb_cluster_fwd_close(a->forward); /* its requests answered before the server closes */
    lb_sync_close(a->sync, sync_closed_cb, a);
}

static void drained_cb(void *data)
{
    app *a = data;
    a->http_drained = 1;
    if (a->leases_drained) finish_stop(a);
}

/* The running jobs ended and the leases went back (several replicas). */
static void leases_drained_cb(void *data)
{
    app *a = data;
    a->leases_drained = 1;
    if (a->http_drained) finish_stop(a);
}

static void drain_timeout_cb(uv_timer_t *t)
{
    app *a = t->data;
    lb_warn("main", "drain timeout: closing %zu connection(s)",
            a->server ? lb_http_server_connections(a->server) : 0);
    finish_stop(a);
}

static void signal_cb(uv_signal_t *sig, int signum)
{
    app *a = sig->data;
    if (a->stopping) {
        lb_info("main", "second signal: stopping now");
        finish_stop(a);
        return;
    }
    a->stopping = 1;
    a->api.draining = 1;
    lb_info("main", "%s: draining", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    uv_timer_start(&a->drain_timer, drain_timeout_cb, (uint64_t)a->cfg.drain_timeout_ms, 0);
    lb_cluster_drain(a->cluster, leases_drained_cb, a);
    lb_http_server_drain(a->server, drained_cb, a);
}

/* ---- start-up ------------------------------------------------------------ */

/* Before the state is loaded (the listener opens early only while the
 * store waits for its database): /healthz and /metrics from the boot
 * router, 503 unavailable for everything else, /readyz included (the store
 * may be ready before the state is loaded). */
static void dispatch(lb_http_req *req, void *data)
{
    app *a = data;
    if (a->serving) {
        lb_router_dispatch(req, a->router);
    } else if (strcmp(req->path, "/healthz") == 0 || strcmp(req->path, "/metrics") == 0) {
        lb_router_dispatch(req, a->boot);
    } else {
        lb_http_respond_error(req, 503, "unavailable",
                              "The server is starting: its database is not reached yet.", NULL);
    }
}

static int check(lb_http_req *req, void *data)
{
    app *a = data;
    return a->serving ? lb_router_check(req, a->router) : 1;
}

/* The store opened without its database (PostgreSQL unreachable): serve
 * the operations routes and run the loop until the store has reached it.
 * A database reached but unusable (a newer schema) stops start-up. */
static void wait_for_store(app *a)
{
    char err[512];
    a->api = (lb_api){.cfg = &a->cfg, .loop = &a->loop, .store = a->store};
    a->boot = lb_router_new();
    lb_api_ops_register(&a->api, a->boot);
    lb_http_server_serve(a->server);
    lb_info("main",
            "listening on %s:%d for /healthz and /readyz while the database is "
            "not reached",
            a->cfg.listen_host, lb_http_server_port(a->server));
    int rc;
    while ((rc = lb_store_waiting(a->store, err, sizeof(err))) > 0)
        uv_run(&a->loop, UV_RUN_ONCE);
    if (rc < 0) die(2, err);
}

/* A sealed marker in the store proves the master key is the one the stored
 * secrets were sealed with; a wrong key stops start-up before it can write
 * anything. */
static void check_master_key(app *a)
{
    static const char context[] = "meta:master_key_check";
    static const char marker[] = "leverbridge master key check";
    lb_store_op op = {.kind = LB_STORE_META_GET, .meta_get.key = "master_key_check"};
    int rc = lb_store_run(a->store, &op);
    if (rc == 0) {
        uint8_t plain[128];
        long n = op.meta_get.len <= sizeof(plain)
                     ? lb_open(&a->key, context, op.meta_get.value, op.meta_get.len, plain)
                     : LB_ECORRUPT;
        lb_free(op.meta_get.value);
        if (n != (long)(sizeof(marker) - 1) || memcmp(plain, marker, (size_t)n) != 0)
            die(2, "LEVERBRIDGE_MASTER_KEY: not the key this database was written with "
                   "(nothing was changed)");
        return;
    }
    if (rc != LB_ENOTFOUND) die(2, "LEVERBRIDGE_DB: cannot read the store");
    uint8_t sealed[sizeof(marker) + LB_SEAL_OVERHEAD + sizeof(context)];
    size_t len = lb_seal(&a->key, context, marker, sizeof(marker) - 1, sealed);
    lb_store_op put = {.kind = LB_STORE_META_PUT,
                       .meta_put = {.key = "master_key_check", .value = sealed, .len = len}};
    if (lb_store_run(a->store, &put) != 0) die(2, "LEVERBRIDGE_DB: cannot write to the store");
}

static void load_secrets(app *a)
{
    char err[512], path[4096];
    if (mkdir(a->cfg.data_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, sizeof(err), "LEVERBRIDGE_DATA_DIR: cannot create %s: %s", a->cfg.data_dir,
                 strerror(errno));
        die(2, err);
    }
    snprintf(path, sizeof(path), "%s/master.key", a->cfg.data_dir);
    if (lb_key_load(a->cfg.master_key, path, &a->key, err, sizeof(err)) != 0) die(2, err);
    snprintf(path, sizeof(path), "%s/admin-token", a->cfg.data_dir);
    if (lb_token_load(a->cfg.admin_token, path, &a->admin_token, err, sizeof(err)) != 0)
        die(2, err);
    if (a->cfg.admin_token == NULL) lb_info("main", "admin token is in %s", path);
}

/* The signing key of events to the platform, checked before anything is
 * made; the secret's text is wiped once decoded. */
static void load_events_key(app *a)
{
    if (a->cfg.platform_events_secret == NULL) return;
    if (lb_platform_secret_decode(a->cfg.platform_events_secret, a->events_key,
                                  &a->events_key_len) != 0)
        die(2, "LEVERBRIDGE_PLATFORM_EVENTS_SECRET: expected whsec_ and the base64 of "
               "16 to 64 bytes");
    sodium_memzero(a->cfg.platform_events_secret, strlen(a->cfg.platform_events_secret));
}

/* Each connection is a descriptor: take the whole hard limit, and say so
 * when MAX_CONNECTIONS cannot fit in it. */
static void raise_fd_limit(app *a)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    rlim_t need = (rlim_t)a->cfg.max_connections + (rlim_t)a->cfg.max_inflight + 64;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
        lb_warn("main",
                "open file limit %llu is below LEVERBRIDGE_MAX_CONNECTIONS + "
                "LEVERBRIDGE_MAX_INFLIGHT + 64 = %llu: connections past it will be refused",
                (unsigned long long)rl.rlim_cur, (unsigned long long)need);
}

/* The outbound side: one HTTP client, the per-tenant queue, the jobs. */
static void start_engine(app *a)
{
    /* The node in the User-Agent: who made a call, seen from the peer. */
    char ua[64 + LB_CONFIG_NODE_ID_MAX];
    snprintf(ua, sizeof(ua), "leverbridge/%s (node %s)", LB_VERSION, a->cfg.node_id);
    lb_http_client_config cc = {.max_inflight = a->cfg.max_inflight, .user_agent = ua};
    lb_jobs_config jc = {.retry_base_ms = a->cfg.retry_base_ms,
                         .retry_cap_ms = a->cfg.retry_cap_ms,
                         .max_age_ms = a->cfg.job_max_age_ms,
                         .max_running = a->cfg.max_inflight * 4,
                         .max_running_tenant = a->cfg.lever_burst * 2,
                         .max_running_notify =
                             a->cfg.max_inflight / 4 > 0 ? a->cfg.max_inflight / 4 : 1,
                         .platform_url = a->cfg.platform_url,
                         .platform_token = a->cfg.platform_token,
                         .stats = a->stats,
                         .events_url = a->events_key_len ? a->cfg.platform_events_url : NULL,
                         .events_key = a->events_key,
                         .events_key_len = a->events_key_len,
                         .gate = lb_cluster_gate(a->cluster)};
    lb_cred_config crc = {.lever_api_url = a->cfg.lever_api_url,
                          .lever_auth_url = a->cfg.lever_auth_url,
                          .client_id = a->cfg.lever_client_id,
                          .client_secret = a->cfg.lever_client_secret,
                          .public_url = a->cfg.public_url,
                          .webhook_deadline_ms = a->cfg.webhook_deadline_ms,
                          .lever_rate = a->cfg.lever_rate,
                          .lever_burst = a->cfg.lever_burst,
                          .gate = lb_cluster_gate(a->cluster)};
    lb_jobs_env env;
    if (lb_http_client_new(&a->loop, &cc, &a->client) != 0 ||
        lb_outbound_new(&a->loop, a->client, &a->outbound) != 0 ||
        lb_cred_new(&a->loop, a->store, &a->conns, &a->tenants, a->outbound, a->client, &a->key,
                    &crc, &a->cred) != 0)
        die(1, "cannot start the outbound engine");
    lb_cred_env(a->cred, &env);
    if (lb_catalog_new(a->outbound, &a->conns, &env, &a->catalog) != 0 ||
        lb_jobs_new(&a->loop, a->store, a->outbound, a->client, &jc, &env, &a->jobs) != 0)
        die(1, "cannot start the outbound engine");
    lb_jobs_register(a->jobs, lb_action_kinds, lb_action_nkinds);
    lb_jobs_register(a->jobs, lb_notify_kinds, lb_notify_nkinds);
    a->api.jobs = a->jobs;
    a->api.outbound = a->outbound;
    a->api.http = a->client;
    a->api.cred = a->cred;
    a->api.catalog = a->catalog;
    lb_cluster_fwd_config fc = {.cluster = a->cluster,
                                .http = a->client,
                                .admin_token = a->admin_token,
                                .timeout_ms = a->cfg.forward_timeout_ms};
    if (lb_cluster_fwd_new(&fc, &a->forward) != 0) die(1, "cannot start forwarding");
    a->api.forward = a->forward;
    lb_provision_config pc = {.public_url = a->cfg.public_url,
                              .deadline_ms = a->cfg.webhook_deadline_ms,
                              .retry_base_ms = a->cfg.provision_retry_base_ms,
                              .retry_cap_ms = a->cfg.provision_retry_cap_ms,
                              .check_ms = a->cfg.webhook_check_ms,
                              .jobs = a->jobs,
                              .gate = lb_cluster_gate(a->cluster)};
    if (lb_provision_new(&a->loop, a->store, a->outbound, &a->conns, &pc, &env, &a->provision) != 0)
        die(1, "cannot start hook provisioning");
    a->api.provision = a->provision;
    lb_provision_resume(a->provision);
    lb_reconcile_config rc_cfg = {.interval_ms = a->cfg.reconcile_interval_ms,
                                  .jobs = a->jobs,
                                  .missed = &a->missed,
                                  .gate = lb_cluster_gate(a->cluster)};
    if (lb_reconcile_new(&a->loop, a->store, a->outbound, &a->conns, &a->workflows, &rc_cfg, &env,
                         &a->reconcile) != 0)
        die(1, "cannot start reconciliation");
    a->api.reconcile = a->reconcile;
    lb_backfill_config bf_cfg = {.jobs = a->jobs, .gate = lb_cluster_gate(a->cluster)};
    if (lb_backfill_new(&a->loop, a->store, a->outbound, &a->conns, &a->workflows, &bf_cfg, &env,
                        &a->backfill) != 0)
        die(1, "cannot start backfills");
    a->api.backfill = a->backfill;
    lb_cred_attach(a->cred, a->jobs, a->provision, a->catalog, a->reconcile);
    lb_cred_attach_backfill(a->cred, a->backfill);
    int rc = lb_jobs_load(a->jobs);
    if (rc != 0) {
        char err[256];
        snprintf(err, sizeof(err), "LEVERBRIDGE_DB: cannot load jobs: %s", lb_strerror(rc));
        die(2, err);
    }
    if ((rc = lb_backfill_load(a->backfill)) != 0) {
        char err[256];
        snprintf(err, sizeof(err), "LEVERBRIDGE_DB: cannot load backfills: %s", lb_strerror(rc));
        die(2, err);
    }
    if (a->cfg.retention_ms > 0 &&
        lb_pruner_start(&a->loop, a->store, a->cfg.retention_ms, &a->pruner) != 0)
        die(1, "cannot start the retention pruner");
    lb_cluster_start(a->cluster, a->jobs, a->provision, a->reconcile);
    lb_sync_parts sp = {.cluster = a->cluster,
                        .jobs = a->jobs,
                        .cred = a->cred,
                        .provision = a->provision,
                        .stats = a->stats,
                        .missed = &a->missed};
    lb_sync_start(a->sync, &sp);
}

/* Tenant leases: shared with other replicas on PostgreSQL; on SQLite this
 * node holds every tenant and nothing is written. */
static void start_cluster(app *a)
{
    lb_cluster_config cc = {.node_id = a->cfg.node_id,
                            .advertise_url = a->cfg.advertise_url,
                            .ttl_ms = a->cfg.lease_ttl_ms,
                            .enabled = strcmp(lb_store_backend(a->store), "postgres") == 0,
                            .tenants = &a->tenants};
    if (lb_cluster_new(&a->loop, a->store, &cc, &a->cluster) != 0)
        die(1, "cannot start the tenant leases");
    a->api.cluster = a->cluster;
}

/* Loads the in-memory state before anything is served: tenants,
 * connections, hooks and workflows through the state sync (which keeps
 * them in step with the store from then on), then the counts. */
static void load_state(app *a)
{
    char why[512];
    lb_tenants_init(&a->tenants);
    lb_conns_init(&a->conns, &a->key);
    lb_workflows_init(&a->workflows);
    lb_sync_config yc = {.tenants = &a->tenants,
                         .conns = &a->conns,
                         .workflows = &a->workflows,
                         .shared = strcmp(lb_store_backend(a->store), "postgres") == 0};
    if (lb_sync_new(&a->loop, a->store, &yc, &a->sync) != 0) die(1, "cannot start the state sync");
    if (lb_sync_load(a->sync, why, sizeof(why)) != 0) die(2, why);
    int rc;
    int64_t now = lb_time_now_ms();
    lb_store_op sop = {.kind = LB_STORE_STATS_LOAD,
                       .stats_load.since = now / LB_HOUR_MS - LB_STATS_HOURS};
    int shared = strcmp(lb_store_backend(a->store), "postgres") == 0; /* replicas */
    if (lb_stats_new(&a->loop, a->store, 0, shared, &a->stats) != 0)
        die(1, "cannot start the hourly counts");
    a->api.stats = a->stats;
    rc = lb_store_run(a->store, &sop);
    if (rc != 0) {
        char err[256];
        snprintf(err, sizeof(err), "LEVERBRIDGE_DB: cannot load hourly counts: %s",
                 lb_strerror(rc));
        die(2, err);
    }
    lb_stats_load(a->stats, sop.stats_load.recs, sop.stats_load.count, now);
    lb_free(sop.stats_load.recs);
    lb_missed_init(&a->missed, now);
    a->api.missed = &a->missed;
    lb_store_op mop = {.kind = LB_STORE_RECONCILED_COUNTS,
                       .reconciled_counts.since =
                           (now / LB_HOUR_MS - LB_MISSED_HOURS + 1) * LB_HOUR_MS};
    rc = lb_store_run(a->store, &mop);
    if (rc != 0) {
        char err[256];
        snprintf(err, sizeof(err), "LEVERBRIDGE_DB: cannot load reconciliation counts: %s",
                 lb_strerror(rc));
        die(2, err);
    }
    lb_missed_load(&a->missed, mop.reconciled_counts.recs, mop.reconciled_counts.count, now);
    lb_free(mop.reconciled_counts.recs);
    lb_info("main", "loaded %zu tenant(s), %zu connection(s), %zu workflow(s)", a->tenants.count,
            a->conns.by_tenant.count, a->workflows.by_id.count);
}

/* leverbridge backup PATH [flags]: the store's settings as a server would
 * read them, then one online copy (lb_store_backup). */
static int backup_main(int argc, char **argv)
{
    lb_config cfg;
    char err[512];
    if (argc < 3 || strncmp(argv[2], "--", 2) == 0)
        die(2, "usage: leverbridge backup PATH [--name value]...");
    const char *path = argv[2];
    argv[2] = argv[0]; /* the settings' flags follow PATH */
    int rc = lb_config_load(&cfg, argc - 2, argv + 2, NULL, err, sizeof(err));
    if (rc == LB_CONFIG_EXIT) return 0;
    if (rc != 0) die(2, err);
    uint64_t pages = 0;
    rc = lb_store_backup(cfg.db, path, &pages, err, sizeof(err));
    if (rc != 0) die(rc == LB_EINVAL || rc == LB_ECONFLICT ? 2 : 1, err);
    printf("leverbridge: backed up %s to %s (%llu pages)\n", cfg.db, path,
           (unsigned long long)pages);
    lb_config_free(&cfg);
    return 0;
}

/* leverbridge copy-store --from sqlite:PATH --to postgres://...: moves a
 * SQLite store into an empty PostgreSQL database (lb_store_copy). */
static int copy_store_main(int argc, char **argv)
{
    const char *from = NULL, *to = NULL;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--from") == 0)
            from = argv[i + 1];
        else if (strcmp(argv[i], "--to") == 0)
            to = argv[i + 1];
        else
            from = to = NULL, i = argc;
    }
    if (from == NULL || to == NULL || argc != 6)
        die(2, "usage: leverbridge copy-store --from sqlite:PATH --to postgres://...");
    char err[512];
    lb_store_copy_stats st;
    int rc = lb_store_copy(from, to, &st, err, sizeof(err));
    if (rc != 0) die(rc == LB_EINVAL || rc == LB_ECONFLICT ? 2 : 1, err);
    /* (the target is not printed: its URL may hold a password) */
    printf("leverbridge: copied %s to PostgreSQL: %zu tenant(s), %zu connection(s), %zu hook(s), "
           "%zu workflow(s), %zu event(s), %zu job(s), %zu invitation(s), %zu meta row(s), "
           "%zu pruned result key(s), %zu failure tag(s)%s\n",
           from, st.tenants, st.connections, st.hooks, st.workflows, st.events, st.jobs,
           st.invitations, st.meta, st.event_keys, st.failure_tags,
           st.skipped ? " (some duplicate Lever keys kept once)" : "");
    return 0;
}

int main(int argc, char **argv)
{
    static app a;
    char err[512];

    lb_alloc_install();
    if (argc >= 2 && strcmp(argv[1], "backup") == 0) return backup_main(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "copy-store") == 0) return copy_store_main(argc, argv);
    int rc = lb_config_load(&a.cfg, argc, argv, NULL, err, sizeof(err));
    if (rc == LB_CONFIG_EXIT) return 0;
    if (rc != 0) die(2, err);
    lb_log_set_level((lb_log_level)a.cfg.log_level);
    if (lb_crypto_init() != 0) die(1, "libsodium failed to initialise");
    load_events_key(&a);
    if (lb_http_client_global_init() != 0) die(1, "libcurl failed to initialise");
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit(&a);

    /* Listen first: a busy port stops start-up before anything (data dir,
     * keys, database) is made. Paused: the loop runs while the state loads
     * (the store's answers come through it), and nothing is accepted until
     * the routes and the state are in place. */
    uv_loop_init(&a.loop);
    a.router = lb_router_new();
    lb_http_server_config hc = {.host = a.cfg.listen_host,
                                .port = a.cfg.listen_port,
                                .max_body = a.cfg.max_body,
                                .header_timeout_ms = a.cfg.header_timeout_ms,
                                .body_timeout_ms = a.cfg.body_timeout_ms,
                                .idle_timeout_ms = a.cfg.idle_timeout_ms,
                                .max_connections = a.cfg.max_connections,
                                .check = check,
                                .check_data = &a,
                                .paused = 1};
    rc = lb_http_server_start(&a.loop, &hc, dispatch, &a, &a.server);
    if (rc != 0) {
        snprintf(err, sizeof(err), "LEVERBRIDGE_LISTEN: cannot listen on %s: %s", a.cfg.listen,
                 uv_strerror(rc));
        die(2, err);
    }

    load_secrets(&a);
    lb_store_options so = {.lever_dedupe_ms = lb_api_lever_dedupe_ms(&a.cfg)};
    if (lb_store_open(&a.loop, a.cfg.db, &so, &a.store, err, sizeof(err)) != 0) die(2, err);
    lb_store_set_on_commit(a.store, on_commit, &a);
    int waited = lb_store_waiting(a.store, err, sizeof(err)) != 0;
    if (waited) wait_for_store(&a);
    check_master_key(&a);
    a.api = (lb_api){.cfg = &a.cfg,
                     .loop = &a.loop,
                     .store = a.store,
                     .tenants = &a.tenants,
                     .conns = &a.conns,
                     .workflows = &a.workflows,
                     .key = &a.key,
                     .admin_token = a.admin_token};
    load_state(&a);
    start_cluster(&a);
    start_engine(&a);

    lb_api_register(&a.api, a.router);
    a.api.server = a.server;

    uv_signal_init(&a.loop, &a.sigterm);
    uv_signal_init(&a.loop, &a.sigint);
    uv_timer_init(&a.loop, &a.drain_timer);
    a.sigterm.data = a.sigint.data = a.drain_timer.data = &a;
    uv_signal_start(&a.sigterm, signal_cb, SIGTERM);
    uv_signal_start(&a.sigint, signal_cb, SIGINT);

    a.serving = 1;
    if (!waited) lb_http_server_serve(a.server);
    lb_info("main", "leverbridge %s listening on %s:%d (public URL %s)", LB_VERSION,
            a.cfg.listen_host, lb_http_server_port(a.server), a.cfg.public_url);
    if (a.cfg.public_url_warning != NULL) lb_warn("main", "%s", a.cfg.public_url_warning);
    uv_run(&a.loop, UV_RUN_DEFAULT);

    rc = uv_loop_close(&a.loop);
    if (rc != 0) lb_error("main", "loop closed with handles still open: %s", uv_strerror(rc));
    lb_router_free(a.router);
    if (a.boot != NULL) lb_router_free(a.boot);
    lb_tenants_free(&a.tenants);
    lb_conns_free(&a.conns);
    lb_workflows_free(&a.workflows);
    lb_missed_free(&a.missed);
    lb_catalog_free(a.catalog);
    lb_cred_free(a.cred);
    lb_cluster_fwd_free(a.forward);
    lb_metrics_reset();
    lb_http_client_global_cleanup();
    lb_free(a.admin_token);
    sodium_memzero(a.events_key, sizeof(a.events_key));
    lb_config_free(&a.cfg);
    return rc == 0 ? 0 : 1;
}
