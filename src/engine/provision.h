/* Hook provisioning: for each connected tenant, one Lever webhook for
 * candidateStageChange pointing at <PUBLIC_URL>/hooks/lever/<hook id>.
 *
 * An attempt lists the tenant's webhooks, deletes any earlier one at our URL
 * (its signature token is lost), creates a new one and stores its id and
 * signature token (sealed) with the hook `active`. A failed attempt retries
 * after a full-jitter backoff (PROVISION_RETRY_BASE..CAP) until the hook's
 * deadline, then the hook is `failed` with the last error; a 401 turns the
 * connection `needs_reauth` and provisioning waits for a new connection.
 * Every 6 hours an active hook is looked up in Lever and provisioned again if
 * it was deleted there. Hook state is durable: a restart picks up where the
 * last attempt left off.
 *
 * Owner: main; loop thread only. All Lever calls go through the tenant's
 * outbound queue (its rate limit). */
#ifndef LB_ENGINE_PROVISION_H
#define LB_ENGINE_PROVISION_H

#include "engine/jobs.h"
#include "engine/outbound.h"
#include "state/connections.h"
#include "store/store.h"

#include <stdint.h>
#include <uv.h>

#define LB_PROVISION_CHECK_MS (6LL * 3600 * 1000)

typedef struct lb_provision lb_provision;

typedef struct {
    const char *public_url; /* hook URLs: <public_url>/hooks/lever/<id> */
    int64_t deadline_ms;    /* WEBHOOK_DEADLINE */
    int64_t retry_base_ms;  /* PROVISION_RETRY_BASE */
    int64_t retry_cap_ms;   /* PROVISION_RETRY_CAP */
    int64_t check_ms;       /* LB_PROVISION_CHECK_MS unless a test says otherwise */
    lb_jobs *jobs;          /* where the hook's platform events go; NULL: none */
    const lb_gate *gate;    /* tenants this replica provisions (NULL: all) */
} lb_provision_config;

int lb_provision_new(uv_loop_t *loop, lb_store *store, lb_outbound *ob, lb_conns *conns,
                     const lb_provision_config *cfg, const lb_jobs_env *env, lb_provision **out);
/* Schedules every hook found in conns (pending: at next_attempt_at; active:
 * at its next check). Call after the connections are loaded. */
void lb_provision_resume(lb_provision *p);
/* (Re)starts provisioning of the tenant's hook now: it must exist in conns
 * as `pending` with its deadline set. */
void lb_provision_start(lb_provision *p, const char *tenant);
/* Runs a pending hook's attempt now unless one is already under way (after
 * credentials came back, say). */
void lb_provision_kick(lb_provision *p, const char *tenant);
/* Forgets the tenant (its attempt in flight completes without effect). */
void lb_provision_forget(lb_provision *p, const char *tenant);
/* Several replicas (engine/gate.h): the gate now holds the tenant, whose
 * hook is looked after again from its stored state; or no longer holds it:
 * its call in flight is cancelled and nothing more is done for it here. */
void lb_provision_tenant_gained(lb_provision *p, const char *tenant);
void lb_provision_tenant_lost(lb_provision *p, const char *tenant);
void lb_provision_close(lb_provision *p, void (*cb)(void *data), void *data);

/* The hook's URL for a hook id into out. */
void lb_provision_hook_url(const lb_provision *p, const char *hook_id, char *out, size_t size);

#endif
