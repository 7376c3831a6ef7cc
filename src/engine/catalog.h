/* The catalog: a tenant's Lever stages and postings, as workflow forms and
 * workflow validation need them ({"data":[{"id","text"}...]}), fetched
 * through the tenant's rate limit (every page, 50 pages at most) and cached
 * 5 minutes per tenant and kind. Askers that come while a fetch is in
 * flight wait for it (64 at most per list).
 *
 * Owner: main creates one lb_catalog and frees it after the loop ended; the
 * credentials module drops a tenant's lists when it forgets the tenant.
 * Loop thread only. */
#ifndef LB_ENGINE_CATALOG_H
#define LB_ENGINE_CATALOG_H

#include "engine/jobs.h"
#include "engine/outbound.h"
#include "state/connections.h"

#include <stddef.h>

typedef struct lb_catalog lb_catalog;

enum { LB_CATALOG_STAGES = 0, LB_CATALOG_POSTINGS = 1 };

/* status 200 with the body (valid during the call only), or an error
 * status with its code and message (409 not_connected, 502
 * lever_unavailable, 503 unavailable). */
typedef void (*lb_catalog_cb)(void *data, int status, const char *code, const char *msg,
                              const char *body, size_t len);

/* env: the credentials (lb_cred_env), copied. */
int lb_catalog_new(lb_outbound *ob, const lb_conns *conns, const lb_jobs_env *env,
                   lb_catalog **out);
/* Frees every list (after the loop ended: no fetch is in flight). */
void lb_catalog_free(lb_catalog *cat);
/* The tenant's stages or postings, from the cache or one fetch; refresh
 * fetches again unless the cached list is younger than 2 s. cb runs once,
 * maybe before this returns. 0; LB_ENOTFOUND when the tenant is not
 * connected, LB_ETOOBIG when too many wait, LB_EINVAL for a kind that is
 * neither: then cb never runs. */
int lb_catalog_get(lb_catalog *cat, const char *tenant, int kind, int refresh, lb_catalog_cb cb,
                   void *data);
/* Drops the tenant's lists; a fetch in flight answers its askers 503. */
void lb_catalog_drop(lb_catalog *cat, const char *tenant);

#endif
