/* The workflow actions as job kinds (api.md "Workflows"): each runs one
 * action for one opportunity through lb_job_*. */
#ifndef LB_ENGINE_ACTIONS_H
#define LB_ENGINE_ACTIONS_H

#include "engine/jobs.h"

/* The kinds, to pass to lb_jobs_register. */
extern const lb_job_kind lb_action_kinds[];
extern const size_t lb_action_nkinds;

#endif
