/* Events to the platform (api.md "Events to the platform"): the
 * notify_platform job kind, which POSTs one event to
 * LEVERBRIDGE_PLATFORM_EVENTS_URL signed as the Standard Webhooks spec says,
 * and the records of such jobs.
 *
 * An event is made where the change it reports is written: its job record
 * rides on that store write (lb_store_op.notify) and reaches the engine
 * (lb_jobs_add) once committed. The engine runs a tenant's notify_platform
 * jobs one at a time in the order they were made (LB_JOB_KIND_NOTIFY),
 * each through the HTTP client directly, never through Lever's queue. The
 * event's id (`pe_...`, the `webhook-id`), its time and its data are in the
 * job's action, so every attempt sends the same event. The signing key is
 * never logged. See docs/internals/jobs.md. Loop thread only. */
#ifndef LB_ENGINE_NOTIFY_H
#define LB_ENGINE_NOTIFY_H

#include "engine/jobs.h"
#include "platform/platform.h"

#include <stddef.h>
#include <stdint.h>

/* Longest event type and event id. */
#define LB_NOTIFY_TYPE_MAX 40
#define LB_NOTIFY_ID_MAX 40

/* Fills rec (zeroed first) with a queued notify_platform job of the tenant
 * for an event of `type` with `data` (a JSON object's text; NULL: {}) made
 * at created_at (ms), whose id is `id` (at most LB_NOTIFY_ID_MAX; NULL: a
 * new "pe_..."). Its action is
 * {"type":"notify_platform","event":type,"id":"pe_...","created_at":"...",
 *  "data":{...}}. Release with lb_job_rec_free. */
void lb_notify_rec(lb_job_rec *rec, const char *tenant, const char *type, const char *data,
                   int64_t created_at, const char *id);

/* The body sent for a notify_platform job's action:
 * {"type","tenant_id","created_at","data"}; lb_malloc'd, NUL-terminated,
 * its length in *len. NULL when the action lacks a field. */
char *lb_notify_body(yajl_val action, const char *tenant, size_t *len);

/* The kind, for lb_jobs_register. */
extern const lb_job_kind lb_notify_kinds[];
extern const size_t lb_notify_nkinds;

#endif
