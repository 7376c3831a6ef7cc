/* Credentials: the whole life of a tenant's Lever credentials, an API key
 * or OAuth tokens, from connecting to forgetting (docs/internals/
 * credentials.md).
 *
 * - Connecting with an API key: every read permission of lever.md's table
 *   is probed with a cheap GET before the connection is stored.
 * - Connecting by OAuth: the authorize URL with its MAC'd single-use state,
 *   then the code exchange.
 * - Either way the connection is stored with a pending hook (the hook id
 *   kept from before, so provisioning can clean up), then the tenant's
 *   waiting jobs resume and provisioning starts.
 * - Use: lb_cred_auth hands out the credentials for a call. An OAuth token
 *   that expires within 5 minutes (or half its life) is refreshed, one
 *   refresh per tenant at a time (single flight); the rotated refresh token
 *   is stored before the new access token is used. A refresh that fails in
 *   transit (lb_lever_classify: LB_LEVER_RETRY) is retried by one timer 30 s
 *   later; one Lever refuses turns the connection needs_reauth.
 * - A 401: an API key (or OAuth tokens a refresh just replaced) needs
 *   re-authorization at once; otherwise one refresh is tried first.
 * - A 403 adds the call's permission to the connection's missing list, a
 *   2xx removes it.
 * - Disconnecting: the row is deleted with its event; then the tenant is
 *   forgotten: its jobs cancelled, provisioning, reconciliation and the
 *   stages/postings cache dropped, a refresh in flight ignored, the Lever webhook deleted
 *   (best effort).
 *
 * Memory (lb_conns) changes once the store confirmed the write, but for one
 * thing: a connection that needs re-authorization stops handing out its
 * credentials at once (lb_conns_stop), before its row is written.
 *
 * Owner: main creates one lb_cred, closes it (its timer) before the loop
 * ends and frees it after. Loop thread only. */
#ifndef LB_ENGINE_CREDENTIALS_H
#define LB_ENGINE_CREDENTIALS_H

#include "crypto/crypto.h"
#include "engine/gate.h"
#include "engine/jobs.h"
#include "engine/outbound.h"
#include "http/client.h"
#include "state/connections.h"
#include "state/tenants.h"
#include "store/store.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct lb_cred lb_cred;
typedef struct lb_provision lb_provision;
typedef struct lb_catalog lb_catalog;
typedef struct lb_reconcile lb_reconcile;
typedef struct lb_backfill lb_backfill;

/* Borrowed strings: they must outlive the module. */
typedef struct {
    const char *lever_api_url;
    const char *lever_auth_url; /* OAuth: /authorize and /oauth/token */
    const char *client_id;      /* NULL (or no secret): OAuth is off */
    const char *client_secret;
    const char *public_url;      /* the OAuth redirect URI's base */
    int64_t webhook_deadline_ms; /* a pending hook's deadline from now */
    double lever_rate;           /* a tenant's default limits */
    int lever_burst;
    int64_t refresh_retry_ms; /* after a refresh that failed in transit;
                                 0: LB_CRED_REFRESH_RETRY_MS */
    /* The tenants whose failed refreshes this replica retries (NULL: all):
     * the lease holder's, as every other Lever call of the tenant. */
    const lb_gate *gate;
} lb_cred_config;

#define LB_CRED_REFRESH_RETRY_MS (30 * 1000)
/* A 401 within this long after the refresh another 401 asked for means
 * the grant is gone. */
#define LB_CRED_REFRESH_401_MS (60 * 1000)

int lb_cred_new(uv_loop_t *loop, lb_store *store, lb_conns *conns, const lb_tenants *tenants,
                lb_outbound *ob, lb_http_client *http, const lb_master_key *key,
                const lb_cred_config *cfg, lb_cred **out);
/* The parts that use the credentials and that a change of them moves on;
 * made after this module (they take its lb_cred_env). Each may be NULL
 * (unit tests): then nothing is asked of it. */
void lb_cred_attach(lb_cred *cr, lb_jobs *jobs, lb_provision *provision, lb_catalog *catalog,
                    lb_reconcile *reconcile);
/* Backfills (engine/backfill.h): a disconnect ends the tenant's. May be
 * NULL. */
void lb_cred_attach_backfill(lb_cred *cr, lb_backfill *backfill);
/* The narrow interface through which jobs, provisioning and the catalog
 * ask for credentials (lb_jobs_env, with cr as its data). */
void lb_cred_env(lb_cred *cr, lb_jobs_env *env);
/* Closes the refresh retry timer (before the loop ends). */
void lb_cred_close(lb_cred *cr);
/* Frees everything (after the loop ended; a refresh still in flight was
 * cancelled with the HTTP client). NULL: nothing. */
void lb_cred_free(lb_cred *cr);

/* ---- use (lb_jobs_env) ----------------------------------------------------- */

/* 0 with *auth filled (borrowed strings, valid until the connection
 * changes), or LB_ENOTFOUND (not connected, or no credentials) or UV_EAGAIN
 * (an OAuth token too close to expiry: a refresh runs, the tenant's jobs
 * resume after it). May start a refresh. */
int lb_cred_auth(lb_cred *cr, const char *tenant, lb_lever_auth *auth);
/* Lever answered 401 to the tenant's credentials. */
void lb_cred_unauthorized(lb_cred *cr, const char *tenant);
/* A call needing `permission` got a 403 (granted 0) or a 2xx (granted 1). */
void lb_cred_permission(lb_cred *cr, const char *tenant, const char *permission, int granted);
/* The tenant's Lever limits: its own, or the configured defaults. */
void lb_cred_rate(const lb_cred *cr, const char *tenant, double *rate, int *burst);
/* The tenant's failure tag (api.md "Failures visible in Lever"), or NULL:
 * a tenant setting that rides on the same interface (lb_jobs_env). */
const char *lb_cred_failure_tag(const lb_cred *cr, const char *tenant);
/* 1 while a refresh of the tenant's tokens is in flight. */
int lb_cred_refreshing(const lb_cred *cr, const char *tenant);

/* ---- connecting with an API key ------------------------------------------- */

typedef enum {
    LB_CRED_CONNECTED,   /* stored; jobs resumed, provisioning started */
    LB_CRED_REFUSED,     /* Lever refused the key (401) */
    LB_CRED_UNAVAILABLE, /* Lever unreachable or failing: message says why */
    LB_CRED_MISSING,     /* the key lacks read permissions: missing[] */
    LB_CRED_NOT_STORED,  /* the store refused or failed the write */
} lb_cred_outcome;

#define LB_CRED_PROBES 14 /* the read permissions probed */

typedef struct {
    lb_cred_outcome outcome;
    const char *message;                 /* LB_CRED_UNAVAILABLE */
    int tls_setup;                       /* LB_CRED_UNAVAILABLE for a reason waiting won't mend */
    const char *missing[LB_CRED_PROBES]; /* LB_CRED_MISSING, Lever's words */
    size_t nmissing;
} lb_cred_probe_result;

/* During the call only: r and its strings. */
typedef void (*lb_cred_connect_cb)(void *data, const lb_cred_probe_result *r);
/* Probes `key` (copied; the caller wipes its own) through the tenant's rate
 * limit and, when every read permission is there, stores the connection
 * with a pending hook. cb runs exactly once, maybe before this returns. */
void lb_cred_connect_key(lb_cred *cr, const char *tenant, const char *key, lb_cred_connect_cb cb,
                         void *data);

/* ---- connecting by OAuth --------------------------------------------------- */

int lb_cred_oauth_enabled(const lb_cred *cr);
/* Lever's authorize URL for the tenant (lb_malloc'd), with a fresh state
 * valid 10 minutes. link_expiry: the connect link OAuth was started from
 * (carried in the state, so the callback can link back to it), or 0. */
char *lb_cred_oauth_authorize_url(lb_cred *cr, const char *tenant, int64_t link_expiry);

typedef enum {
    LB_CRED_OAUTH_CONNECTED,   /* stored; jobs resumed, provisioning started */
    LB_CRED_OAUTH_BAD_STATE,   /* no code, or a state not valid: why says */
    LB_CRED_OAUTH_USED,        /* the state was used before */
    LB_CRED_OAUTH_BUSY,        /* the store refused or failed */
    LB_CRED_OAUTH_NO_CALL,     /* the call to Lever could not be made */
    LB_CRED_OAUTH_UNREACHABLE, /* Lever failed in transit */
    LB_CRED_OAUTH_REFUSED,     /* Lever refused the code */
    LB_CRED_OAUTH_NO_TENANT,   /* the tenant was deleted meanwhile */
    LB_CRED_OAUTH_NOT_STORED,  /* the connection could not be stored */
} lb_cred_oauth_outcome;

typedef struct {
    lb_cred_oauth_outcome outcome;
    const char *why;     /* LB_CRED_OAUTH_BAD_STATE */
    const char *tenant;  /* from a valid state, else NULL */
    int64_t link_expiry; /* from a valid state, else 0 */
} lb_cred_oauth_result;

typedef void (*lb_cred_oauth_cb)(void *data, const lb_cred_oauth_result *r);
/* The tenant a callback's state was issued for: 0 with tenant copied when
 * the state is one this server issued and has not expired (whether it was
 * used is not looked at), else LB_EINVAL. For routing the callback to the
 * tenant's lease holder before it is finished there. */
int lb_cred_oauth_state_tenant(const lb_cred *cr, const char *state, char *tenant, size_t size);
/* The callback's code and state (either NULL when absent): checks the state
 * (MAC, expiry, single use, also across restarts through the store),
 * exchanges the code and stores the connection with a pending hook. cb runs
 * exactly once, maybe before this returns. */
void lb_cred_oauth_finish(lb_cred *cr, const char *code, const char *state, lb_cred_oauth_cb cb,
                          void *data);

/* ---- the hook, and disconnecting ------------------------------------------ */

/* status: 0 or the store's error; deadline_at: the pending hook's. */
typedef void (*lb_cred_hook_cb)(void *data, int status, int64_t deadline_at);
/* Provisions the tenant's hook again: stores it pending (attempts 0, a new
 * deadline), then starts provisioning. 0, and cb runs later; LB_ENOTFOUND
 * when the tenant is not connected or has no hook, or the store's submit
 * error: then cb never runs. */
int lb_cred_reprovision(lb_cred *cr, const char *tenant, lb_cred_hook_cb cb, void *data);
/* status: 0 or the store's error. */
typedef void (*lb_cred_done_cb)(void *data, int status);
/* Deletes the tenant's connection (and its hook) from the store, with its
 * connection.disconnected event, and on success forgets it. 0, and cb runs
 * later; or the submit's error, and cb never runs. */
int lb_cred_disconnect(lb_cred *cr, const char *tenant, lb_cred_done_cb cb, void *data);
/* Forgets the tenant in memory (its store rows are already gone): cancels
 * its jobs, provisioning and catalog fetches, ignores a refresh in flight,
 * asks Lever (best effort, through the rate limit) to delete its webhook. */
void lb_cred_forget(lb_cred *cr, const char *tenant);
/* lb_cred_forget without the call to Lever: another replica removed the
 * connection (or the tenant) and deleted the webhook itself. */
void lb_cred_drop(lb_cred *cr, const char *tenant);

#endif
