/* Lever's opportunity list page by page, and stage-change events made of
 * its entries: see opplist.h. */
#include "engine/opplist.h"

#include "core/alloc.h"
#include "core/error.h"
#include "crypto/crypto.h"
#include "json/json.h"
#include "state/match.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define QUERY_MAX 2048
#define ERR_MAX 512

static void listed_cb(lb_ob_call *call, const lb_http_response *res)
{
    lb_opp_list *l = call->data;
    const lb_jobs_env *env = l->env;
    lb_lever_outcome o = lb_lever_classify(res);
    if (env->lever_permission != NULL && (o == LB_LEVER_OK || o == LB_LEVER_FORBIDDEN))
        env->lever_permission(env->data, l->tenant, LB_OPPLIST_PERMISSION, o == LB_LEVER_OK);
    if (o != LB_LEVER_OK) {
        if (o == LB_LEVER_REAUTH) env->lever_unauthorized(env->data, l->tenant);
        char msg[ERR_MAX];
        lb_lever_describe(res, msg, sizeof(msg));
        l->cb(l, LB_EIO, msg, NULL);
        return;
    }
    lb_lever_opp_page page;
    if (lb_lever_parse_opp_page(res->body, res->body_len, l->since, &page) != 0) {
        l->cb(l, LB_EPARSE, "Lever's opportunity list is unreadable", NULL);
        return;
    }
    l->cb(l, 0, NULL, &page);
}

int lb_opp_list_get(lb_opp_list *l, lb_outbound *ob, const lb_jobs_env *env, const char *tenant,
                    const char *query, const char *offset, int64_t since, lb_opp_list_cb cb,
                    void *data, const char **why)
{
    lb_lever_auth auth = {0};
    if (env->lever_auth(env->data, tenant, &auth) != 0) {
        *why = "the connection cannot be used now";
        return LB_ENOTFOUND;
    }
    char q[QUERY_MAX];
    if ((size_t)snprintf(q, sizeof(q), "%s", query) >= sizeof(q)) {
        *why = "the list's query is too long";
        return LB_ETOOBIG;
    }
    if (offset != NULL && lb_lever_offset_query(q, sizeof(q), offset) != 0) {
        *why = "Lever's next offset is too long";
        return LB_ETOOBIG;
    }
    l->cb = cb;
    l->data = data;
    l->env = env;
    l->since = since;
    snprintf(l->tenant, sizeof(l->tenant), "%s", tenant);
    lb_lever_req_free(&l->req);
    lb_lever_req_init(&l->req, &auth, "GET", q, "/opportunities");
    memset(&l->call, 0, sizeof(l->call));
    l->call.req = l->req.http;
    l->call.cb = listed_cb;
    l->call.data = l;
    double rate = 0;
    int burst = 0;
    env->tenant_rate(env->data, tenant, &rate, &burst);
    int rc = lb_outbound_submit(lb_outbound_tenant(ob, tenant, rate, burst), &l->call);
    if (rc != 0) {
        *why = "the tenant's Lever queue is full";
        return rc;
    }
    return 0;
}

int lb_opp_list_cancel(lb_opp_list *l)
{
    return lb_outbound_cancel(&l->call);
}

void lb_opp_list_clear(lb_opp_list *l)
{
    lb_lever_req_free(&l->req);
}

/* ---- the event of one opportunity ------------------------------------ */

void lb_stage_event_clear(lb_stage_event *e)
{
    lb_job_recs_free(e->jobs, e->njobs);
    lb_free(e->payload);
    lb_free(e->key);
    lb_free(e->opp);
    lb_free(e->stage);
    memset(e, 0, sizeof(*e));
}

int lb_stage_event_make(lb_stage_event *e, const lb_stage_event_in *in, int64_t now)
{
    const lb_lever_opp_brief *o = in->opp;
    memset(e, 0, sizeof(*e));
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "event", "candidateStageChange");
    if (in->at > 0) lb_json_kv_int(g, "triggeredAt", in->at);
    lb_json_kv_str(g, "source", in->source);
    if (in->extra_name != NULL) lb_json_kv_str(g, in->extra_name, in->extra_value);
    lb_json_key(g, "data");
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "opportunityId", o->id);
    if (o->candidate_id) {
        lb_json_kv_str(g, "candidateId", o->candidate_id);
        lb_json_kv_str(g, "contactId", o->candidate_id);
    }
    lb_json_kv_str(g, "toStageId", in->to_stage);
    if (in->from_stage) lb_json_kv_str(g, "fromStageId", in->from_stage);
    yajl_gen_map_close(g);
    yajl_gen_map_close(g);
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(g, &buf, &len);
    e->payload = lb_strndup((const char *)buf, len);
    yajl_gen_free(g);
    char err[64];
    yajl_val tree = lb_json_parse(e->payload, len, err, sizeof(err));
    if (tree == NULL) {
        lb_stage_event_clear(e);
        return LB_EPARSE;
    }
    e->key = lb_strdup(in->key);
    e->opp = lb_strdup(o->id);
    e->stage = lb_strdup(in->to_stage);
    lb_sortable_id_buf(e->ev.id, sizeof(e->ev.id), "ev_", now, 12);
    snprintf(e->ev.tenant_id, sizeof(e->ev.tenant_id), "%s", in->tenant);
    e->ev.source = in->source;
    e->ev.type = "candidateStageChange";
    e->ev.dedupe_key = e->key;
    e->ev.status = "accepted";
    e->ev.opportunity_id = e->opp;
    e->ev.payload = e->payload;
    e->ev.received_at = now;
    yajl_val data = lb_json_get(tree, "data");
    int rc = in->only != NULL
                 ? lb_workflow_derive_stage(in->only, e->ev.id, data, 1, &e->jobs, &e->njobs)
                 : lb_workflows_derive(in->workflows, in->tenant, e->ev.id, "stage_changed", data,
                                       &e->jobs, &e->njobs);
    yajl_tree_free(tree);
    if (rc != 0) {
        lb_stage_event_clear(e);
        return rc;
    }
    e->op.kind = LB_STORE_EVENT_INSERT;
    e->op.event_insert.event = &e->ev;
    e->op.event_insert.jobs = e->jobs;
    e->op.event_insert.njobs = e->njobs;
    return 0;
}
