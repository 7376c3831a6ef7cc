/* lever-sim: the control API under /_sim (no auth): keys, seeding, settings,
 * statistics, state, reset. Answers {"error","message"} on errors. */
#include "lever_sim.h"

#include "core/alloc.h"
#include "core/time.h"
#include "json/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void ctl_bad(lb_http_req *req, const char *msg)
{
    sim_control_error(req, 400, "bad_request", msg);
}

lv_account *lv_control_account(lv_sim *s, lb_http_req *req, yajl_val body, int create)
{
    char name[256];
    const char *n = YAJL_IS_OBJECT(body) ? sim_json_str(body, "account") : NULL;
    if (n == NULL && sim_query_get(req, "account", name, sizeof(name)) && name[0] != '\0') n = name;
    return lv_account_get(s, n ? n : "default", create);
}

/* The list inside a body: an array, {"data":[...]}, {"<plural>":[...]}, or one object. */
static yajl_val body_list(yajl_val b, const char *plural, size_t *count, int *single)
{
    yajl_val list = NULL;
    if (YAJL_IS_ARRAY(b))
        list = b;
    else if (lb_json_get_array(b, "data") != NULL)
        list = lb_json_get_array(b, "data");
    else if (plural != NULL && lb_json_get_array(b, plural) != NULL)
        list = lb_json_get_array(b, plural);
    *single = list == NULL;
    *count = list ? list->u.array.len : 1;
    return list ? list : b;
}

static yajl_val item_at(yajl_val list, int single, size_t i)
{
    return single ? list : list->u.array.values[i];
}

/* ---- keys ------------------------------------------------------------------------ */

static void gen_key(yajl_gen g, lv_sim *s, const lv_key *k)
{
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "key", k->key);
    lb_json_kv_str(g, "kind", k->postings ? "postings" : "api");
    lb_json_kv_str(g, "account", k->account->name);
    lb_json_key(g, "permissions");
    lv_perms_gen(g, k->perms);
    lb_json_kv_double(g, "rate", k->rate >= 0 ? k->rate : s->rate);
    lb_json_kv_int(g, "burst", k->burst >= 0 ? k->burst : s->burst);
    lb_json_kv_bool(g, "revoked", k->revoked);
    yajl_gen_map_close(g);
}

/* Creates or updates one key from its JSON. NULL with msg on error. */
lv_key *lv_key_put(lv_sim *s, const char *def_account, yajl_val o, char *msg, size_t msz)
{
    if (!YAJL_IS_OBJECT(o)) {
        snprintf(msg, msz, "a key must be an object");
        return NULL;
    }
    const char *name = sim_json_str(o, "key");
    const char *kind = sim_json_str(o, "kind");
    if (kind != NULL && strcmp(kind, "api") != 0 && strcmp(kind, "postings") != 0) {
        snprintf(msg, msz, "kind must be \"api\" or \"postings\"");
        return NULL;
    }
    uint64_t perms = LV_PERMS_ALL;
    char bad[160];
    yajl_val pv = lb_json_get(o, "permissions"), ex = lb_json_get(o, "except");
    if ((pv || ex) && lv_perms_parse(pv, ex, &perms, bad, sizeof(bad)) != 0) {
        snprintf(msg, msz, "unknown permission: %s", bad);
        return NULL;
    }
    lv_key *k = name ? lb_map_get(&s->keys, name) : NULL;
    if (k == NULL) {
        char gen[33];
        if (name == NULL || name[0] == '\0') {
            sim_random_chars(gen, 32);
            name = gen;
        }
        k = LB_NEW(lv_key);
        k->key = lb_strdup(name);
        k->rate = -1;
        k->burst = -1;
        k->perms = perms;
        const char *an = sim_json_str(o, "account");
        k->account = lv_account_get(s, an ? an : def_account, 1);
        lb_map_put(&s->keys, k->key, k);
        SIM_PUSH(s->key_list, k);
    } else {
        if (pv || ex) k->perms = perms;
        if (sim_json_str(o, "account") != NULL)
            k->account = lv_account_get(s, sim_json_str(o, "account"), 1);
    }
    if (kind != NULL) k->postings = strcmp(kind, "postings") == 0;
    double d;
    int64_t n;
    if (sim_json_num(o, "rate", &d))
        k->rate = d;
    else if (YAJL_IS_NULL(lb_json_get(o, "rate")))
        k->rate = -1;
    if (lb_json_get_int(o, "burst", &n) == 0)
        k->burst = (int)n;
    else if (YAJL_IS_NULL(lb_json_get(o, "burst")))
        k->burst = -1;
    k->revoked = sim_json_bool(o, "revoked", 0);
    return k;
}

static void r_keys_post(lb_http_req *req, void *data)
{
    lv_sim *s = data;
    yajl_val b = sim_body_json(req, ctl_bad);
    if (b == NULL) return;
    size_t count;
    int single;
    yajl_val list = body_list(b, "keys", &count, &single);
    lv_account *def = lv_control_account(s, req, single ? NULL : b, 1);
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "data");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < count; i++) {
        char msg[200];
        lv_key *k = lv_key_put(s, def->name, item_at(list, single, i), msg, sizeof(msg));
        if (k == NULL) {
            yajl_gen_free(g);
            yajl_tree_free(b);
            ctl_bad(req, msg);
            return;
        }
        gen_key(g, s, k);
    }
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    yajl_tree_free(b);
    sim_respond_json(req, 201, g);
}

static void r_keys_get(lb_http_req *req, void *data)
{
    lv_sim *s = data;
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "data");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < s->key_list.n; i++)
        gen_key(g, s, s->key_list.v[i]);
    yajl_gen_array_close(g);
    lb_json_key(g, "permission_names");
    lv_perms_gen(g, LV_PERMS_ALL);
    yajl_gen_map_close(g);
    sim_respond_json(req, 200, g);
}

static void r_key_delete(lb_http_req *req, void *data)
{
    lv_sim *s = data;
    lv_key *k = lb_map_get(&s->keys, lb_http_req_param(req, "key"));
    if (k == NULL) {
        sim_control_error(req, 404, "not_found", "No such key.");
        return;
    }
    k->revoked = 1;
    sim_respond(req, 204, NULL, NULL, NULL, 0, NULL, NULL);
}

/* ---- objects and seed -------------------------------------------------------------- */

typedef enum { K_STAGES, K_POSTINGS, K_OPPS, K_HOOKS } kind;

static void create_objects(lb_http_req *req, lv_sim *s, kind k)
{
    static const char *const plural[] = {"stages", "postings", "opportunities", "webhooks"};
    yajl_val b = sim_body_json(req, ctl_bad);
    if (b == NULL) return;
    size_t count;
    int single;
    yajl_val list = body_list(b, plural[k], &count, &single);
    lv_account *a = lv_control_account(s, req, single ? NULL : b, 1);
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "data");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < count; i++) {
        yajl_val o = item_at(list, single, i);
        char msg[200] = "invalid object";
        int ok = 0;
        switch (k) {
        case K_STAGES: {
            lv_stage *st = lv_seed_stage(a, o, msg, sizeof(msg));
            if ((ok = st != NULL)) lv_gen_stage(g, st);
            break;
        }
        case K_POSTINGS: {
            lv_posting *p = lv_seed_posting(a, o, msg, sizeof(msg));
            if ((ok = p != NULL)) lv_gen_posting(g, p);
            break;
        }
        case K_OPPS: {
            lv_opp *op = lv_seed_opp(a, o, msg, sizeof(msg));
            if ((ok = op != NULL)) lv_gen_opp(g, a, op, LV_EXPAND_APPS);
            break;
        }
        case K_HOOKS: {
            lv_webhook *w = YAJL_IS_OBJECT(o)
                                ? lv_seed_hook(a, o, sim_json_bool(o, "api", 0), msg, sizeof(msg))
                                : NULL;
            if ((ok = w != NULL)) {
                lv_gen_hook(g, w, 1);
            }
            break;
        }
        }
        if (!ok) {
            yajl_gen_free(g);
            yajl_tree_free(b);
            ctl_bad(req, msg);
            return;
        }
    }
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    yajl_tree_free(b);
    sim_respond_json(req, 201, g);
}

static void r_stages_post(lb_http_req *req, void *data)
{
    create_objects(req, data, K_STAGES);
}

static void r_postings_post(lb_http_req *req, void *data)
{
    create_objects(req, data, K_POSTINGS);
}

static void r_opps_post(lb_http_req *req, void *data)
{
    create_objects(req, data, K_OPPS);
}

/* POST /_sim/opportunities/{id}: a recruiter's move or archive (lv_opp_update). */
static void r_opp_update(lb_http_req *req, void *data)
{
    lv_sim *s = data;
    yajl_val b = sim_body_json(req, ctl_bad);
    if (b == NULL) return;
    lv_account *a = lv_control_account(s, req, b, 0);
    lv_opp *o = a != NULL ? lv_opp_find(a, lb_http_req_param(req, "id")) : NULL;
    char msg[200];
    if (o == NULL) {
        sim_control_error(req, 404, "not_found", "No such opportunity.");
    } else if (lv_opp_update(a, o, b, msg, sizeof(msg)) != 0) {
        ctl_bad(req, msg);
    } else {
        yajl_gen g = lb_json_gen_new();
        yajl_gen_map_open(g);
        lb_json_key(g, "data");
        lv_gen_opp(g, a, o, LV_EXPAND_APPS);
        yajl_gen_map_close(g);
        sim_respond_json(req, 200, g);
    }
    yajl_tree_free(b);
}

static void r_hooks_post(lb_http_req *req, void *data)
{
    create_objects(req, data, K_HOOKS);
}

static void r_seed(lb_http_req *req, void *data)
{
    lv_sim *s = data;
    yajl_val b = sim_body_json(req, ctl_bad);
    if (b == NULL) return;
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    char msg[200];
    int rc = lv_seed_doc(s, b, g, msg, sizeof(msg));
    yajl_gen_map_close(g);
    yajl_tree_free(b);
    if (rc != 0) {
        yajl_gen_free(g);
        ctl_bad(req, msg);
        return;
    }
    sim_respond_json(req, 201, g);
}

/* ---- config ---------------------------------------------------------------------- */

static void config_state(lb_http_req *req, lv_sim *s, lv_account *a)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_double(g, "rate", s->rate);
    lb_json_kv_int(g, "burst", s->burst);
    lb_json_kv_str(g, "retry_after", s->retry_after_429);
    lb_json_kv_str(g, "account", a->name);
    lb_json_kv_bool(g, "webhook_nested", a->webhook_nested);
    lb_json_kv_bool(g, "deliveries_enabled", a->deliveries_enabled);
    lb_json_key(g, "accounts");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < s->account_list.n; i++)
        lb_json_str(g, s->account_list.v[i]->name);
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    sim_respond_json(req, 200, g);
}

static void r_config_get(lb_http_req *req, void *data)
{
    lv_sim *s = data;
    lv_account *a = lv_control_account(s, req, NULL, 1);
    config_state(req, s, a);
}

static void r_config_post(lb_http_req *req, void *data)
{
    lv_sim *s = data;
    yajl_val b = sim_body_json(req, ctl_bad);
    if (b == NULL) return;
    lv_account *a = lv_control_account(s, req, b, 1);
    double d;
    int64_t n;
    if (sim_json_num(b, "rate", &d) && d >= 0) s->rate = d;
    if (lb_json_get_int(b, "burst", &n) == 0 && n >= 1) s->burst = (int)n;
    yajl_val ra = lb_json_get(b, "retry_after");
    if (ra != NULL) {
        lb_free(s->retry_after_429);
        s->retry_after_429 = YAJL_IS_STRING(ra)   ? lb_strdup(ra->u.string)
                             : YAJL_IS_NUMBER(ra) ? lb_strdup(ra->u.number.r)
                                                  : NULL;
    }
    a->webhook_nested = sim_json_bool(b, "webhook_nested", a->webhook_nested);
    a->deliveries_enabled = sim_json_bool(b, "deliveries_enabled", a->deliveries_enabled);
    yajl_tree_free(b);
    config_state(req, s, a);
}

/* ---- stats ----------------------------------------------------------------------- */

static void stats_clear(lv_stats *st)
{
    sim_window_free(&st->all);
    sim_window_free(&st->accepted);
    memset(st, 0, sizeof(*st));
}

static void r_stats(lb_http_req *req, void *data)
{
    lv_sim *s = data;
    uint64_t total = 0, violations = 0;
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "keys");
    yajl_gen_map_open(g);
    for (size_t i = 0; i < s->key_list.n; i++) {
        lv_key *k = s->key_list.v[i];
        lb_json_key(g, k->key);
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "account", k->account->name);
        lb_json_kv_double(g, "rate", k->rate >= 0 ? k->rate : s->rate);
        lb_json_kv_int(g, "burst", k->burst >= 0 ? k->burst : s->burst);
        lv_stats_gen(g, &k->stats);
        yajl_gen_map_close(g);
        total += k->stats.requests;
        violations += k->stats.r429;
    }
    yajl_gen_map_close(g);
    lb_json_key(g, "grants");
    yajl_gen_map_open(g);
    for (size_t i = 0; i < s->grant_list.n; i++) {
        lv_grant *gr = s->grant_list.v[i];
        lb_json_key(g, gr->id);
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "client_id", gr->client->client_id);
        lb_json_kv_str(g, "account", gr->account->name);
        lv_stats_gen(g, &gr->stats);
        yajl_gen_map_close(g);
        total += gr->stats.requests;
        violations += gr->stats.r429;
    }
    yajl_gen_map_close(g);
    lb_json_kv_int(g, "requests", (int64_t)total);
    lb_json_kv_int(g, "violations", (int64_t)violations);
    lb_json_kv_int(g, "unauthenticated", (int64_t)s->unauthenticated);
    lb_json_kv_int(g, "deliveries_sent", (int64_t)s->deliveries_sent);
    lb_json_kv_double(g, "max_loop_lag_ms", sim_lag_max_ms(&s->app.lag));
    yajl_gen_map_close(g);
    if (sim_query_flag(req, "clear")) {
        sim_lag_reset(&s->app.lag);
        for (size_t i = 0; i < s->key_list.n; i++)
            stats_clear(&s->key_list.v[i]->stats);
        for (size_t i = 0; i < s->grant_list.n; i++)
            stats_clear(&s->grant_list.v[i]->stats);
        s->unauthenticated = 0;
    }
    sim_respond_json(req, 200, g);
}

/* ---- state ------------------------------------------------------------------------ */

static void gen_opp_state(yajl_gen g, const lv_opp *o)
{
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "id", o->id);
    lb_json_kv_str(g, "candidateId", o->candidate_id);
    lb_json_kv_str(g, "name", o->name);
    lb_json_kv_str(g, "stage", o->stage);
    lb_json_kv_bool(g, "archived", o->archived);
    lb_json_key(g, "emails");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < o->emails.n; i++)
        lb_json_str(g, o->emails.v[i]);
    yajl_gen_array_close(g);
    lb_json_key(g, "tags");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < o->tags.n; i++)
        lb_json_str(g, o->tags.v[i]);
    yajl_gen_array_close(g);
    lb_json_key(g, "postings");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < o->apps.n; i++)
        lb_json_str(g, o->apps.v[i].posting);
    yajl_gen_array_close(g);
    lb_json_key(g, "stageChanges");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < o->changes.n; i++) {
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "toStageId", o->changes.v[i].to);
        lb_json_kv_int(g, "updatedAt", o->changes.v[i].at);
        lb_json_kv_str(g, "userId", o->changes.v[i].user);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    lb_json_key(g, "notes");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < o->notes.n; i++) {
        const lv_note *n = &o->notes.v[i];
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "id", n->id);
        lb_json_kv_str(g, "value", n->value);
        lb_json_kv_bool(g, "secret", n->secret);
        if (n->has_score)
            lb_json_kv_int(g, "score", n->score);
        else
            lb_json_kv_null(g, "score");
        lb_json_kv_bool(g, "notifyFollowers", n->notify);
        lb_json_kv_bool(g, "api", n->api);
        lb_json_kv_str(g, "author", n->author);
        lb_json_kv_int(g, "createdAt", n->created);
        lb_json_kv_int(g, "updatedAt", n->updated);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    lb_json_kv_int(g, "createdAt", o->created);
    lb_json_kv_int(g, "updatedAt", o->updated);
    lb_json_kv_int(g, "lastAdvancedAt", o->advanced);
    yajl_gen_map_close(g);
}

static void r_state(lb_http_req *req, void *data)
{
    lv_sim *s = data;
    lv_account *a = lv_control_account(s, req, NULL, 0);
    if (a == NULL) {
        sim_control_error(req, 404, "not_found", "No such account.");
        return;
    }
    char only[256];
    int one = sim_query_get(req, "opportunity", only, sizeof(only));
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "account", a->name);
    lb_json_key(g, "stages");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < a->stages.n; i++)
        lv_gen_stage(g, a->stages.v[i]);
    yajl_gen_array_close(g);
    lb_json_key(g, "postings");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < a->postings.n; i++)
        lv_gen_posting(g, a->postings.v[i]);
    yajl_gen_array_close(g);
    lb_json_key(g, "opportunities");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < a->opps.n; i++) {
        const lv_opp *o = a->opps.v[i];
        if (!one || strcmp(o->id, only) == 0 || strcmp(o->candidate_id, only) == 0)
            gen_opp_state(g, o);
    }
    yajl_gen_array_close(g);
    lb_json_key(g, "webhooks");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < a->hooks.n; i++) {
        const lv_webhook *w = a->hooks.v[i];
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "id", w->id);
        lb_json_kv_str(g, "url", w->url);
        lb_json_kv_str(g, "event", w->event);
        lb_json_kv_str(g, "signatureToken", w->token);
        lb_json_kv_bool(g, "api", w->api);
        lb_json_key(g, "conditions");
        sim_json_emit(g, w->conditions);
        lb_json_kv_int(g, "createdAt", w->created);
        lb_json_kv_int(g, "updatedAt", w->updated);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    lb_json_kv_bool(g, "webhook_nested", a->webhook_nested);
    lb_json_kv_bool(g, "deliveries_enabled", a->deliveries_enabled);
    yajl_gen_map_close(g);
    sim_respond_json(req, 200, g);
}

/* ---- reset ------------------------------------------------------------------------ */

typedef struct {
    double rate;
    int burst;
} defaults;

static defaults initial;

static void r_reset(lb_http_req *req, void *data)
{
    lv_sim *s = data;
    lv_sim_free(s);
    lb_free(s->retry_after_429);
    lb_free(s->audience);
    s->retry_after_429 = s->audience = NULL;
    s->unauthenticated = 0;
    s->rate = initial.rate;
    s->burst = initial.burst;
    lv_sim_init(s);
    /* The app's faults and request log too. */
    sim_faults_clear(&s->app);
    sim_log_clear(&s->app);
    sim_respond(req, 204, NULL, NULL, NULL, 0, NULL, NULL);
}

void lv_control_register(lv_sim *s)
{
    initial.rate = s->rate;
    initial.burst = s->burst;
    lb_router *r = s->app.router;
    lb_router_add(r, "GET", "/_sim/keys", r_keys_get, s);
    lb_router_add(r, "POST", "/_sim/keys", r_keys_post, s);
    lb_router_add(r, "DELETE", "/_sim/keys/{key}", r_key_delete, s);
    lb_router_add(r, "POST", "/_sim/stages", r_stages_post, s);
    lb_router_add(r, "POST", "/_sim/postings", r_postings_post, s);
    lb_router_add(r, "POST", "/_sim/opportunities", r_opps_post, s);
    lb_router_add(r, "POST", "/_sim/opportunities/{id}", r_opp_update, s);
    lb_router_add(r, "POST", "/_sim/webhooks", r_hooks_post, s);
    lb_router_add(r, "POST", "/_sim/seed", r_seed, s);
    lb_router_add(r, "GET", "/_sim/config", r_config_get, s);
    lb_router_add(r, "POST", "/_sim/config", r_config_post, s);
    lb_router_add(r, "GET", "/_sim/stats", r_stats, s);
    lb_router_add(r, "GET", "/_sim/state", r_state, s);
    lb_router_add(r, "POST", "/_sim/reset", r_reset, s);
}
