/* Tenants' workflows in memory, validated and parsed, for matching events
 * on the hot path without touching the disk. Loaded at start; changed only
 * after the store confirmed the write. Loop thread only. Owner: main,
 * through lb_api. */
#ifndef LB_STATE_WORKFLOWS_H
#define LB_STATE_WORKFLOWS_H

#include "core/map.h"
#include "store/store.h"

#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_tree.h>

#define LB_WF_MAX_ACTIONS 20
#define LB_WF_MAX_PER_TENANT 1000
/* The longest trigger.delay (api.md: 0 to 7d). */
#define LB_WF_DELAY_MAX_MS (7LL * 24 * 60 * 60 * 1000)
/* Most stage ids in a move's only_from. */
#define LB_WF_ONLY_FROM_MAX 50

typedef enum {
    LB_TRIGGER_STAGE_CHANGED,
    LB_TRIGGER_ASSESSMENT_COMPLETED,
    LB_TRIGGER_ASSESSMENT_EXPIRED,
} lb_trigger;

typedef struct lb_workflow {
    char id[LB_WORKFLOW_ID_MAX + 1];
    char tenant_id[LB_TENANT_ID_MAX + 1];
    char *body;    /* the stored JSON */
    yajl_val tree; /* body parsed */
    int enabled;
    lb_trigger trigger;
    const char *to_stage, *from_stage, *assessment; /* into tree, NULL when unset */
    yajl_val postings;                              /* array or NULL */
    int64_t delay_ms;                               /* stage_changed: trigger.delay */
    int has_min, has_max;
    double min_score, max_score;
    yajl_val actions; /* array */
    int64_t created_at, updated_at;
    struct lb_workflow *next; /* the tenant's list, oldest first */
} lb_workflow;

typedef struct lb_workflows {
    lb_map by_id;     /* workflow id -> lb_workflow */
    lb_map by_tenant; /* tenant id -> first lb_workflow */
} lb_workflows;

void lb_workflows_init(lb_workflows *ws);
void lb_workflows_free(lb_workflows *ws);

/* Checks a note template: 0, or nonzero with the offending placeholder. */
typedef int (*lb_template_check_fn)(const char *text, char *bad, size_t badlen);

/* Validates a workflow body (api.md "Workflows"). 0, or LB_EINVAL with the
 * offending field's path ("trigger.to_stage", "actions[1].text") and a
 * sentence in msg. Note templates are checked with check_template. */
int lb_workflow_validate(yajl_val body, lb_template_check_fn check_template, char *field,
                         size_t flen, char *msg, size_t mlen);

/* A trigger's "delay" in ms (0 when absent or not valid). */
int64_t lb_workflow_delay(yajl_val trigger);

/* Inserts or replaces from a committed record (the body must validate). */
lb_workflow *lb_workflows_apply(lb_workflows *ws, const lb_workflow_rec *rec);
void lb_workflows_remove(lb_workflows *ws, const char *id);
lb_workflow *lb_workflows_get(const lb_workflows *ws, const char *tenant, const char *id);
/* The tenant's workflows, oldest first (NULL: none). */
lb_workflow *lb_workflows_of(const lb_workflows *ws, const char *tenant);
size_t lb_workflows_count(const lb_workflows *ws, const char *tenant);
void lb_workflows_remove_tenant(lb_workflows *ws, const char *tenant);

#endif
