/* What reconciliation (engine/reconcile.h) and backfills (engine/backfill.h)
 * share: one page of Lever's opportunity list through the tenant's
 * outbound queue (its rate limit, 429s absorbed there), parsed into briefs
 * (lever.h, lb_lever_parse_opp_page), and the stage-change event, with its
 * jobs, made of one opportunity of such a page.
 *
 * Owner: the caller embeds both structs; loop thread only. */
#ifndef LB_ENGINE_OPPLIST_H
#define LB_ENGINE_OPPLIST_H

#include "engine/jobs.h"
#include "engine/outbound.h"
#include "lever/lever.h"
#include "state/workflows.h"
#include "store/store.h"

#include <stdint.h>

/* The Lever permission a list needs (in Lever's words). */
#define LB_OPPLIST_PERMISSION "find all opportunities"

typedef struct lb_opp_list lb_opp_list;

/* status 0: *page is the caller's (lb_lever_opp_page_free); otherwise
 * page is NULL and error says why (Lever's answer, or an unreadable page).
 * A 401 has already been reported (env.lever_unauthorized), and so has
 * what a 2xx or 403 says of the permission. */
typedef void (*lb_opp_list_cb)(lb_opp_list *l, int status, const char *error,
                               lb_lever_opp_page *page);

/* One page in flight. Embedded in its owner; untouched from
 * lb_opp_list_get until its callback runs. */
struct lb_opp_list {
    lb_opp_list_cb cb;
    void *data;
    /* private */
    lb_ob_call call;
    lb_lever_req req;
    const lb_jobs_env *env;
    char tenant[LB_TENANT_ID_MAX + 1];
    int64_t since; /* stageChanges kept: those at or after it */
};

/* Asks for GET /opportunities?<query>[&offset=<offset>] (offset: Lever's
 * `next` of the page before, NULL for the first). env must outlive the
 * call. 0, and cb runs once; or a negative code with *why set (cb never
 * runs): the connection cannot be used now, the offset is too long, the
 * tenant's queue is full. */
int lb_opp_list_get(lb_opp_list *l, lb_outbound *ob, const lb_jobs_env *env, const char *tenant,
                    const char *query, const char *offset, int64_t since, lb_opp_list_cb cb,
                    void *data, const char **why);
/* 1 when the call was still queued and is cancelled (cb never runs), 0
 * when it is on the wire (cb runs, perhaps with an error). */
int lb_opp_list_cancel(lb_opp_list *l);
/* Frees the request of the last get. */
void lb_opp_list_clear(lb_opp_list *l);

/* A stage-change event ready for LB_STORE_EVENT_INSERT, with the jobs its
 * workflows derive. Owner: its caller; lb_stage_event_clear frees it. */
typedef struct {
    lb_store_op op; /* kind and event_insert set; cb, data and stage_id are the caller's */
    lb_event_rec ev;
    lb_job_rec *jobs;
    size_t njobs;
    char *payload, *key, *opp, *stage;
} lb_stage_event;

typedef struct {
    const char *tenant;
    const char *source; /* "reconcile", "backfill" */
    const lb_lever_opp_brief *opp;
    const char *to_stage, *from_stage; /* from_stage may be NULL */
    int64_t at;                        /* the payload's triggeredAt (ms); 0: none */
    const char *key;                   /* the event's dedupe key */
    /* Where the jobs come from: `only`, with its postings known to match
     * (a backfill); or, when NULL, every enabled workflow of the tenant
     * that matches (lb_workflows_derive). */
    const lb_workflows *workflows;
    const lb_workflow *only;
    /* One more member of the payload (NULL: none), e.g. the backfill id. */
    const char *extra_name, *extra_value;
} lb_stage_event_in;

/* Builds *e (zeroed first). 0, or a negative code (e is cleared). */
int lb_stage_event_make(lb_stage_event *e, const lb_stage_event_in *in, int64_t now);
void lb_stage_event_clear(lb_stage_event *e);

#endif
