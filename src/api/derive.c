/* From an event to the jobs that the tenant's workflows derive from it.
 * Workflows arrive with the workflows issue; until then no event derives
 * any job, and the event is still recorded. */
#include "api/api.h"

#include "store/store.h"

void lb_api_derive_jobs(lb_api *api, const char *tenant, const char *event_id,
                        const char *trigger, yajl_val data, lb_job_rec **jobs, size_t *n)
{
    (void)api;
    (void)tenant;
    (void)event_id;
    (void)trigger;
    (void)data;
    *jobs = NULL;
    *n = 0;
}

void lb_api_jobs_free(lb_job_rec *jobs, size_t n)
{
    lb_job_recs_free(jobs, n);
}
