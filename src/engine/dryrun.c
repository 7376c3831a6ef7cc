/* The dry run of a workflow for one opportunity: see dryrun.h. */
#include "engine/dryrun.h"

#include "core/alloc.h"
#include "core/error.h"
#include "json/json.h"
#include "lever/lever.h"
#include "state/guard.h"

#include <stdio.h>
#include <string.h>

/* One invitation read: the op first, so the callback finds its read. */
typedef struct {
    lb_store_op op;
    struct dryrun *run;
    const char *assessment; /* into the run's tree */
    int found;
    char *stage_id; /* the stage recorded with it, or NULL */
} inv_read;

typedef struct dryrun {
    lb_store *store;
    lb_jobs_env env;
    char tenant[LB_TENANT_ID_MAX + 1];
    char *opp;
    yajl_val tree; /* the workflow as it was when the run started */
    int platform;
    lb_dryrun_cb cb;
    void *data;
    lb_ob_call call;
    lb_lever_req req;
    lb_lever_opportunity o;
    inv_read reads[LB_WF_MAX_ACTIONS + 1];
    size_t nreads;
    size_t pending;
} dryrun;

static void run_free(dryrun *r)
{
    for (size_t i = 0; i < r->nreads; i++)
        lb_free(r->reads[i].stage_id);
    lb_lever_opportunity_free(&r->o);
    lb_lever_req_free(&r->req);
    if (r->tree != NULL) yajl_tree_free(r->tree);
    lb_free(r->opp);
    lb_free(r);
}

static void fail(dryrun *r, int status, const char *code, const char *msg, const char *field)
{
    lb_dryrun_result res = {status, code, msg, field, NULL, 0};
    r->cb(r->data, &res);
    run_free(r);
}

static const inv_read *invitation(const dryrun *r, const char *assessment)
{
    for (size_t i = 0; assessment != NULL && i < r->nreads; i++)
        if (strcmp(r->reads[i].assessment, assessment) == 0) return &r->reads[i];
    return NULL;
}

static void outcome(yajl_gen g, const char *type, int run, const char *reason)
{
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "type", type);
    lb_json_kv_str(g, "outcome", run ? "would_run" : "would_skip");
    lb_json_kv_str(g, "reason", reason);
    yajl_gen_map_close(g);
}

/* Everything is read: the answer. */
static void answer(dryrun *r)
{
    yajl_val t = lb_json_get(r->tree, "trigger");
    const char *event = lb_json_get_str(t, "event");
    int by_result = lb_guard_by_result(event);
    lb_guard_opp g = {r->o.stage_id, r->o.archived, (const char *const *)r->o.postings,
                      r->o.npostings};
    const char *why = NULL;
    if (!by_result)
        why = lb_guard_trigger(&g, lb_json_get_str(t, "to_stage"), lb_json_get(t, "postings"),
                               "not_in_to_stage");
    int matches = why == NULL;
    const char *trigger_assessment = lb_json_get_str(t, "assessment");
    const inv_read *tinv = invitation(r, trigger_assessment);
    yajl_gen out = lb_json_gen_new();
    yajl_gen_map_open(out);
    lb_json_kv_bool(out, "matches", matches);
    lb_json_kv_str(out, "reason", why ? why : by_result ? "result_trigger" : "in_to_stage");
    lb_json_key(out, "actions");
    yajl_gen_array_open(out);
    yajl_val actions = lb_json_get(r->tree, "actions");
    for (size_t i = 0; actions != NULL && i < actions->u.array.len; i++) {
        yajl_val a = actions->u.array.values[i];
        const char *type = lb_json_get_str(a, "type");
        if (type == NULL) continue;
        if (!matches) {
            outcome(out, type, 0, why);
        } else if (strcmp(type, "send_assessment") == 0) {
            const inv_read *inv = invitation(r, lb_json_get_str(a, "assessment"));
            if (inv != NULL && inv->found)
                outcome(out, type, 0, "already_invited");
            else if (!r->platform)
                outcome(out, type, 0, "platform_not_configured");
            else if (r->o.email == NULL || *r->o.email == '\0')
                outcome(out, type, 0, "no_email");
            else
                outcome(out, type, 1, "not_invited");
        } else if (strcmp(type, "move_stage") == 0) {
            const char *invited = tinv != NULL && tinv->found ? tinv->stage_id : NULL;
            switch (lb_guard_move(&g, a, by_result, invited)) {
            case LB_GUARD_ALREADY:
                outcome(out, type, 1, "already_in_stage");
                break;
            case LB_GUARD_SKIP:
                outcome(out, type, 0, "stage_changed_meanwhile");
                break;
            default:
                outcome(out, type, 1, "moves");
                g.stage = lb_json_get_str(a, "stage"); /* where the next move starts */
                break;
            }
        } else if (strcmp(type, "add_note") == 0) {
            outcome(out, type, 1, "writes_note");
        } else {
            outcome(out, type, 1, "adds_tags");
        }
    }
    yajl_gen_array_close(out);
    yajl_gen_map_close(out);
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(out, &buf, &len);
    lb_dryrun_result res = {200, NULL, NULL, NULL, (const char *)buf, len};
    r->cb(r->data, &res);
    yajl_gen_free(out);
    run_free(r);
}

static void inv_done(lb_store_op *op)
{
    inv_read *x = (inv_read *)op;
    dryrun *r = x->run;
    if (op->status == 0) {
        x->found = 1;
        if (op->invitation_get.rec.stage_id != NULL)
            x->stage_id = lb_strdup(op->invitation_get.rec.stage_id);
        lb_invitation_rec_free(&op->invitation_get.rec);
    } else if (op->status != LB_ENOTFOUND) {
        x->found = -1;
    }
    if (--r->pending > 0) return;
    for (size_t i = 0; i < r->nreads; i++) {
        if (r->reads[i].found < 0) {
            fail(r, 503, "unavailable", "The store could not read the invitations; try again.",
                 NULL);
            return;
        }
    }
    answer(r);
}

static void want(dryrun *r, const char *assessment)
{
    if (assessment == NULL || invitation(r, assessment) != NULL ||
        r->nreads == LB_COUNTOF(r->reads))
        return;
    inv_read *x = &r->reads[r->nreads++];
    x->run = r;
    x->assessment = assessment;
}

/* The opportunity is in: read the invitations the actions depend on. */
static void read_ledger(dryrun *r)
{
    yajl_val t = lb_json_get(r->tree, "trigger");
    yajl_val actions = lb_json_get(r->tree, "actions");
    for (size_t i = 0; actions != NULL && i < actions->u.array.len; i++) {
        yajl_val a = actions->u.array.values[i];
        const char *type = lb_json_get_str(a, "type");
        if (type != NULL && strcmp(type, "send_assessment") == 0)
            want(r, lb_json_get_str(a, "assessment"));
        if (type != NULL && strcmp(type, "move_stage") == 0)
            want(r, lb_json_get_str(t, "assessment"));
    }
    if (r->nreads == 0) {
        answer(r);
        return;
    }
    int refused = 0;
    r->pending = 0;
    for (size_t i = 0; i < r->nreads; i++) {
        inv_read *x = &r->reads[i];
        x->op.kind = LB_STORE_INVITATION_GET;
        memcpy(x->op.invitation_get.tenant_id, r->tenant, sizeof(r->tenant));
        x->op.invitation_get.opportunity_id = r->opp;
        x->op.invitation_get.assessment = x->assessment;
        x->op.cb = inv_done;
        x->op.data = x;
        if (refused || lb_store_submit(r->store, &x->op) != 0) {
            x->found = -1; /* answered by those in flight, if any */
            refused = 1;
        } else {
            r->pending++;
        }
    }
    if (r->pending == 0)
        fail(r, 503, "unavailable", "The store is not taking operations; try again.", NULL);
}

static void opportunity_read(lb_ob_call *call, const lb_http_response *res)
{
    dryrun *r = call->data;
    lb_lever_req_free(&r->req);
    if (res->status == 0 && res->error == LB_ECLOSED) {
        fail(r, 503, "unavailable", "The Lever connection went away; try again.", NULL);
        return;
    }
    lb_lever_outcome o = lb_lever_classify(res);
    if (o == LB_LEVER_NOT_FOUND) {
        fail(r, 404, "not_found", "Lever has no opportunity with this id.", "opportunity_id");
        return;
    }
    if (o != LB_LEVER_OK) {
        char msg[300], text[400];
        lb_lever_describe(res, msg, sizeof(msg));
        if (o == LB_LEVER_REAUTH) r->env.lever_unauthorized(r->env.data, r->tenant);
        if (o == LB_LEVER_FORBIDDEN)
            r->env.lever_permission(r->env.data, r->tenant, "find an opportunity", 0);
        snprintf(text, sizeof(text), "The opportunity could not be read from Lever: %s", msg);
        fail(r, 502, "lever_unavailable", text, NULL);
        return;
    }
    r->env.lever_permission(r->env.data, r->tenant, "find an opportunity", 1);
    if (lb_lever_parse_opportunity(res->body, res->body_len, &r->o) != 0) {
        fail(r, 502, "lever_unavailable", "Lever's opportunity could not be read.", NULL);
        return;
    }
    read_ledger(r);
}

int lb_dryrun_start(lb_outbound *ob, lb_store *store, const lb_jobs_env *env, const lb_workflow *w,
                    const char *opportunity, int platform, lb_dryrun_cb cb, void *data)
{
    lb_lever_auth auth = {0};
    if (env->lever_auth(env->data, w->tenant_id, &auth) != 0) return LB_ENOTFOUND;
    char err[64];
    yajl_val tree = lb_json_parse(w->body, strlen(w->body), err, sizeof(err));
    if (tree == NULL) return LB_EINVAL;
    dryrun *r = LB_NEW(dryrun);
    r->store = store;
    r->env = *env;
    snprintf(r->tenant, sizeof(r->tenant), "%s", w->tenant_id);
    r->opp = lb_strdup(opportunity);
    r->tree = tree;
    r->platform = platform;
    r->cb = cb;
    r->data = data;
    lb_lever_req_init(&r->req, &auth, "GET", "expand=applications", "/opportunities/%s",
                      opportunity);
    r->call.req = r->req.http;
    r->call.cb = opportunity_read;
    r->call.data = r;
    double rate = 0;
    int burst = 0;
    env->tenant_rate(env->data, r->tenant, &rate, &burst);
    if (lb_outbound_submit(lb_outbound_tenant(ob, r->tenant, rate, burst), &r->call) != 0) {
        run_free(r);
        return LB_ETOOBIG;
    }
    return 0;
}
