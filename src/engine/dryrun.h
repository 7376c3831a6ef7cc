/* A dry run (api.md "Dry run and backfill"): what one workflow would do to
 * one opportunity now, found by reading only. One Lever read of the
 * opportunity through the tenant's outbound queue (so its rate limit), and
 * the invitation ledger from the store; nothing is written anywhere, no
 * event or job is made. The checks are the jobs' own (state/guard.h): a
 * delayed workflow is judged as if its delay had passed now.
 *
 * Owner: each run owns itself from lb_dryrun_start until its callback has
 * returned. Loop thread only. */
#ifndef LB_ENGINE_DRYRUN_H
#define LB_ENGINE_DRYRUN_H

#include "engine/jobs.h"
#include "engine/outbound.h"
#include "state/workflows.h"
#include "store/store.h"

#include <stddef.h>

/* What a run found. status 200: body is the answer's JSON
 * ({"matches","reason","actions":[{"type","outcome","reason"}]}); any other
 * status: the error's code, message and field (NULL: none), as the route
 * answers them (404 not_found for an opportunity Lever does not know, 502
 * lever_unavailable, 503 unavailable). Valid during the callback only. */
typedef struct {
    int status;
    const char *code, *message, *field;
    const char *body;
    size_t len;
} lb_dryrun_result;

typedef void (*lb_dryrun_cb)(void *data, const lb_dryrun_result *res);

/* Starts a dry run of workflow w (copied: it may change meanwhile) for the
 * opportunity. env: the engine's questions about Lever (credentials, the
 * tenant's rate; a 401 is reported to it); platform: 1 when
 * send_assessment can run (the platform is configured). 0, and cb runs
 * once, later; LB_ENOTFOUND when the tenant's connection cannot be used
 * now (not connected), LB_ETOOBIG when its queue is full: cb never runs. */
int lb_dryrun_start(lb_outbound *ob, lb_store *store, const lb_jobs_env *env, const lb_workflow *w,
                    const char *opportunity, int platform, lb_dryrun_cb cb, void *data);

#endif
