/* The HTTP API: admin routes, hook routes, operations endpoints. Each file
 * registers its routes on the router; all of them run on the loop thread. */
#ifndef LB_API_API_H
#define LB_API_API_H

#include "core/config.h"
#include "crypto/crypto.h"
#include "engine/catalog.h"
#include "http/router.h"
#include "http/server.h"
#include "lever/lever.h"
#include "state/links.h"
#include "store/store.h"

#include <uv.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

typedef struct lb_store lb_store;
typedef struct lb_jobs lb_jobs;
typedef struct lb_conns lb_conns;
typedef struct lb_workflows lb_workflows;
typedef struct lb_outbound lb_outbound;
typedef struct lb_provision lb_provision;
typedef struct lb_http_client lb_http_client;
typedef struct lb_conn lb_conn;
typedef struct lb_tenant lb_tenant;
typedef struct lb_tenants lb_tenants;
typedef struct lb_stats lb_stats;
typedef struct lb_reconcile lb_reconcile;
typedef struct lb_backfill lb_backfill;
typedef struct lb_missed lb_missed;
typedef struct lb_cred lb_cred;
typedef struct lb_catalog lb_catalog;
typedef struct lb_cluster lb_cluster;
typedef struct lb_cluster_fwd lb_cluster_fwd;

/* List paging (api.md "Lists"). */
#define LB_API_LIMIT_DEFAULT 50
#define LB_API_LIMIT_MAX 200

/* What the routes need, wired by main. Owned by main; outlives the server. */
typedef struct lb_api {
    const lb_config *cfg;
    uv_loop_t *loop;
    lb_http_server *server; /* set once listening */
    lb_store *store;
    lb_tenants *tenants;
    lb_jobs *jobs;
    lb_conns *conns;
    lb_workflows *workflows;
    lb_outbound *outbound;
    lb_provision *provision;
    lb_cred *cred;       /* a tenant's Lever credentials (engine/credentials.h) */
    lb_catalog *catalog; /* stages and postings (engine/catalog.h) */
    lb_http_client *http;
    lb_stats *stats; /* the console's hourly counts */
    lb_reconcile *reconcile;
    lb_missed *missed;       /* changes found only by reconciliation */
    lb_cluster *cluster;     /* leases (src/cluster/); NULL once closed */
    lb_cluster_fwd *forward; /* to the lease holder (cluster/forward.h); NULL: serve here */
    lb_backfill *backfill;
    const lb_master_key *key;
    lb_links links; /* connect links' key, derived from key by lb_api_register */
    const char *admin_token;
    int draining;
} lb_api;

int lb_api_register(lb_api *api, lb_router *r);

/* How far back a Lever delivery can have a duplicate (lb_store_options):
 * the replay window plus the clock skew the hook allows. */
int64_t lb_api_lever_dedupe_ms(const lb_config *cfg);

/* Route groups (one file each). */
void lb_api_ops_register(lb_api *api, lb_router *r);
void lb_api_stats_register(lb_api *api, lb_router *r);
void lb_api_tenants_register(lb_api *api, lb_router *r);
void lb_api_hooks_register(lb_api *api, lb_router *r);
void lb_api_lever_register(lb_api *api, lb_router *r);
void lb_api_workflows_register(lb_api *api, lb_router *r);
void lb_api_dryrun_register(lb_api *api, lb_router *r);
void lb_api_events_register(lb_api *api, lb_router *r);
void lb_api_results_register(lb_api *api, lb_router *r);
void lb_api_reconcile_register(lb_api *api, lb_router *r);
void lb_api_backfill_register(lb_api *api, lb_router *r);
void lb_api_catalog_register(lb_api *api, lb_router *r);
void lb_api_oauth_register(lb_api *api, lb_router *r);
/* The kinds of the engine's catalog, by the names the routes use. */
enum { LB_API_STAGES = LB_CATALOG_STAGES, LB_API_POSTINGS = LB_CATALOG_POSTINGS };
void lb_api_cluster_register(lb_api *api, lb_router *r);
/* First thing of a handler that calls Lever for tenant (after the auth
 * and tenant checks): 0 to serve here; 1 when the request went to the
 * tenant's lease holder, or waits for the lease and then runs self again
 * (cluster/forward.h), and is answered. (cluster.c) */
int lb_api_forwarded(lb_api *api, lb_http_req *req, const char *tenant, lb_http_handler self);
/* The same for a route that answers its 503s itself (a page): fail(req,
 * msg). (cluster.c) */
int lb_api_forwarded_as(lb_api *api, lb_http_req *req, const char *tenant, lb_http_handler self,
                        void (*fail)(lb_http_req *req, const char *msg));
/* The tenant body's "lease" key and value (null: none known). */
void lb_api_lease_json(lb_api *api, yajl_gen g, const char *tenant);

/* Writes a tenant's <connection> object (api.md) into g. */
void lb_api_connection_json(lb_api *api, yajl_gen g, const lb_tenant *t);

/* 1 when req carries the admin bearer token; otherwise answers 401 and
 * returns 0. Constant time in the token's content. */
int lb_api_require_admin(lb_api *api, lb_http_req *req);
/* For routes under /v1/tenants/{tenant}/...: 1 for the admin token, or for
 * a connect link's token (Authorization: Bearer <token>) granted for the
 * route's tenant. Otherwise it answers and returns 0: 401 for no, a wrong or
 * an expired token; 403 forbidden for a link of another tenant, or for any
 * link when flags has LB_API_ADMIN_ONLY. */
#define LB_API_ADMIN_ONLY 1
int lb_api_require_tenant(lb_api *api, lb_http_req *req, int flags);

/* Connect links (connect.c) and the pages (pages.c). */
#define LB_CONNECT_LINK_TTL_DEFAULT_MS (60 * 60 * 1000)
#define LB_CONNECT_LINK_TTL_MIN_MS 1000
#define LB_CONNECT_LINK_TTL_MAX_MS (24 * 60 * 60 * 1000)
void lb_api_connect_register(lb_api *api, lb_router *r);
void lb_api_pages_register(lb_api *api, lb_router *r);
/* The URL of a built-in asset with its content hash ("/assets/style.css?v=..."),
 * for pages made in C (the OAuth callback's). */
void lb_api_page_asset_href(const char *name, char *out, size_t size);
/* The headers every page goes out with: no caching, the pages' strict CSP
 * (styles and scripts from this origin only), no referrer, no framing. */
extern const char lb_api_page_headers[];
/* When req carries a connect link's token (Authorization: Bearer) that is
 * valid now: 1 with its expiry (ms). Otherwise 0. (common.c) */
int lb_api_connect_grant_expiry(lb_api *api, lb_http_req *req, int64_t *expiry);
/* The connect page URL of the tenant's link that expires at `expiry`: the
 * same link that was minted then (links are not stored, only MAC'd).
 * (common.c) */
void lb_api_connect_url(lb_api *api, const char *tenant, int64_t expiry, char *out, size_t size);
/* GET /openapi.json (openapi.c). */
void lb_api_openapi_register(lb_api *api, lb_router *r);
/* 1 when req's If-None-Match names the quoted hash (or is "*"). */
int lb_api_etag_match(const lb_http_req *req, const char *hash);

/* The tenant named by the route's {tenant}, or NULL after answering 404. */
lb_tenant *lb_api_tenant_or_404(lb_api *api, lb_http_req *req);
/* Both checks of a /v1/tenants/{tenant}/... route: lb_api_require_tenant
 * with flags, then the tenant; NULL after answering 401/403/404. */
lb_tenant *lb_api_tenant_for(lb_api *api, lb_http_req *req, int flags);
/* Writes "next_cursor": "<at>_<id>" when more follow, else null. */
void lb_api_next_cursor(yajl_gen g, int more, int64_t at, const char *id);
/* 500 internal: an event would make more than LB_EVENT_JOBS_MAX jobs
 * (state/match.h; only a database from before that bound can hold such
 * workflows). Nothing is stored; the caller may try again once the
 * workflows are fewer. */
void lb_api_too_many_jobs(lb_http_req *req);
/* 503 unavailable: the store refused or failed an operation. */
void lb_api_store_unavailable(lb_http_req *req);
/* Submits op for req: 0, or, when the store refuses it, answers 503
 * unavailable, frees the request's context with free_ctx(ctx) (which the
 * op's callback would otherwise have done) and returns the error. The one
 * way the route files hand a write to the store. */
int lb_api_submit(lb_api *api, lb_http_req *req, lb_store_op *op, void (*free_ctx)(void *ctx),
                  void *ctx);

/* Parses req's JSON body into a tree: checks Content-Type (415) and syntax
 * (400 invalid_json, with yajl's reason). On failure it has answered and
 * returns NULL. An empty body is a 400 as well. */
yajl_val lb_api_json_body(lb_http_req *req);

/* Reads ?limit= (1..200, default 50) and ?cursor= (copied into buf; *cursor
 * NULL when absent). On a bad value it answers 400 with the field and returns
 * LB_EINVAL. */
int lb_api_page_params(lb_http_req *req, size_t *limit, char *buf, size_t size,
                       const char **cursor);

/* Value of a query parameter, percent-decoded into buf; NULL when absent or
 * too long. */
const char *lb_api_query(const lb_http_req *req, const char *name, char *buf, size_t size);

#endif
