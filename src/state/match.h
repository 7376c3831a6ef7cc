/* From an event to the jobs a tenant's workflows derive from it, matched in
 * memory (state/workflows.h). Each action becomes one job whose `action` is
 * the workflow's action plus a "context" object with what the event knows;
 * the jobs of one event run in order (seq). A workflow with a postings
 * filter starts with a check_postings job that reads the opportunity and,
 * when it applied to none of the postings, skips the workflow's other jobs.
 * A workflow with a trigger delay starts with a check_stage job instead
 * (postings included), and all its jobs are due at the event's time plus
 * the delay (next_run_at); the workflows' jobs are ordered by delay, so a
 * delayed one never holds back the event's other jobs.
 * Loop thread only. */
#ifndef LB_STATE_MATCH_H
#define LB_STATE_MATCH_H

#include <stddef.h>
#include <yajl/yajl_tree.h>

#include "state/workflows.h"
#include "store/store.h"

/* Most jobs one event may make. Saving a workflow that could make an event
 * exceed it is refused (lb_workflows_jobs_bound), so matching never meets it
 * but for a database written before the bound; it then fails, never drops. */
#define LB_EVENT_JOBS_MAX 200

/* trigger: "stage_changed", "assessment_completed", "assessment_expired";
 * data: the delivery's data (Lever's keys) or the result. 0 with *jobs
 * (lb_malloc'd records ready to insert with the event, NULL when none; free
 * with lb_job_recs_free) and *n; LB_ETOOBIG, with nothing, when they would
 * be more than LB_EVENT_JOBS_MAX. */
int lb_workflows_derive(const lb_workflows *ws, const char *tenant, const char *event_id,
                        const char *trigger, yajl_val data, lb_job_rec **jobs, size_t *n);

/* The jobs that workflow w (stage_changed, enabled or not) derives from a
 * stage change `data` (opportunityId, toStageId, ...), as
 * lb_workflows_derive would for it alone, without its from_stage check (a
 * backfill applies it to opportunities already in its to_stage);
 * postings_checked: the caller knows the opportunity applied to one of the
 * workflow's postings, so no check_postings job comes first (a delayed
 * workflow still starts with check_stage, which re-checks them). 0 with *jobs
 * and *n; LB_EINVAL for another trigger; LB_ETOOBIG as above. */
int lb_workflow_derive_stage(const lb_workflow *w, const char *event_id, yajl_val data,
                             int postings_checked, lb_job_rec **jobs, size_t *n);

/* The most jobs one event could make from the tenant's enabled workflows
 * if `with` (parsed from a body that validates; may be NULL) replaced the
 * workflow `replacing` (NULL: none): the largest sum over the workflows one
 * event can match together (the same to_stage; results of the same or an
 * unnamed assessment), each counting its actions and its postings check,
 * plus a result's own status-note job. */
size_t lb_workflows_jobs_bound(const lb_workflows *ws, const char *tenant, yajl_val with,
                               const char *replacing);

#endif
