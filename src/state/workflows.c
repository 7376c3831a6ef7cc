#include "state/workflows.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/time.h"
#include "json/json.h"

#include <stdio.h>
#include <string.h>

#define NAME_MAX_BYTES 200
#define TEXT_MAX_BYTES 10000
#define ID_MAX_BYTES 200
#define MAX_TAGS 50

/* ---- validation ---------------------------------------------------------- */

typedef struct {
    char *field;
    size_t flen;
    char *msg;
    size_t mlen;
    lb_template_check_fn check_template;
} verr;

static int fail(verr *e, const char *field, const char *msg)
{
    snprintf(e->field, e->flen, "%s", field);
    snprintf(e->msg, e->mlen, "%s", msg);
    return LB_EINVAL;
}

/* Every key of obj must be one of `known`. */
static int only_known(verr *e, yajl_val obj, const char *prefix, const char *const *known, size_t n)
{
    for (size_t i = 0; i < obj->u.object.len; i++) {
        const char *k = obj->u.object.keys[i];
        size_t j = 0;
        while (j < n && strcmp(k, known[j]) != 0)
            j++;
        if (j == n) {
            char f[128];
            snprintf(f, sizeof(f), "%s%s", prefix, k);
            return fail(e, f, "Unknown field.");
        }
    }
    return 0;
}

static int id_string(verr *e, yajl_val obj, const char *key, const char *field, int required)
{
    yajl_val v = lb_json_get(obj, key);
    if (v == NULL) return required ? fail(e, field, "This field is required.") : 0;
    if (!YAJL_IS_STRING(v) || v->u.string[0] == '\0' || strlen(v->u.string) > ID_MAX_BYTES)
        return fail(e, field, "Expected a non-empty string of at most 200 bytes.");
    return 0;
}

static int number(verr *e, yajl_val obj, const char *key, const char *field)
{
    yajl_val v = lb_json_get(obj, key);
    if (v != NULL && !YAJL_IS_NUMBER(v)) return fail(e, field, "Expected a number.");
    return 0;
}

static int check_trigger(verr *e, yajl_val t)
{
    if (t == NULL) return fail(e, "trigger", "This field is required.");
    if (!YAJL_IS_OBJECT(t)) return fail(e, "trigger", "Expected an object.");
    const char *ev = lb_json_get_str(t, "event");
    if (lb_json_get(t, "event") == NULL) return fail(e, "trigger.event", "This field is required.");
    if (ev == NULL) return fail(e, "trigger.event", "Expected a string.");
    if (strcmp(ev, "stage_changed") == 0) {
        static const char *const known[] = {"event", "to_stage", "from_stage", "postings", "delay"};
        int rc = only_known(e, t, "trigger.", known, LB_COUNTOF(known));
        if (rc == 0) rc = id_string(e, t, "to_stage", "trigger.to_stage", 1);
        if (rc == 0) rc = id_string(e, t, "from_stage", "trigger.from_stage", 0);
        if (rc != 0) return rc;
        yajl_val d = lb_json_get(t, "delay");
        int64_t ms;
        if (d != NULL && (!YAJL_IS_STRING(d) || lb_duration_parse(d->u.string, &ms) != 0 ||
                          ms < 0 || ms > LB_WF_DELAY_MAX_MS))
            return fail(e, "trigger.delay",
                        "Expected a duration such as \"30m\" (ms, s, m, h, d), from 0 to 7d.");
        yajl_val p = lb_json_get(t, "postings");
        if (p != NULL) {
            if (!YAJL_IS_ARRAY(p) || p->u.array.len == 0 || p->u.array.len > 100)
                return fail(e, "trigger.postings", "Expected a non-empty array of posting ids.");
            for (size_t i = 0; i < p->u.array.len; i++) {
                yajl_val x = p->u.array.values[i];
                if (!YAJL_IS_STRING(x) || x->u.string[0] == '\0' ||
                    strlen(x->u.string) > ID_MAX_BYTES) {
                    char f[64];
                    snprintf(f, sizeof(f), "trigger.postings[%zu]", i);
                    return fail(e, f, "Expected a posting id.");
                }
            }
        }
        return 0;
    }
    if (strcmp(ev, "assessment_completed") == 0) {
        static const char *const known[] = {"event", "assessment", "min_score", "max_score"};
        int rc = only_known(e, t, "trigger.", known, LB_COUNTOF(known));
        if (rc == 0) rc = id_string(e, t, "assessment", "trigger.assessment", 0);
        if (rc == 0) rc = number(e, t, "min_score", "trigger.min_score");
        if (rc == 0) rc = number(e, t, "max_score", "trigger.max_score");
        yajl_val lo = lb_json_get(t, "min_score"), hi = lb_json_get(t, "max_score");
        if (rc == 0 && lo && hi && YAJL_GET_DOUBLE(lo) > YAJL_GET_DOUBLE(hi))
            return fail(e, "trigger.min_score", "min_score is above max_score.");
        return rc;
    }
    if (strcmp(ev, "assessment_expired") == 0) {
        static const char *const known[] = {"event", "assessment"};
        int rc = only_known(e, t, "trigger.", known, LB_COUNTOF(known));
        return rc == 0 ? id_string(e, t, "assessment", "trigger.assessment", 0) : rc;
    }
    return fail(e, "trigger.event",
                "Expected stage_changed, assessment_completed or assessment_expired.");
}

static int check_action(verr *e, yajl_val a, size_t i)
{
    char p[32], f[96];
    snprintf(p, sizeof(p), "actions[%zu].", i);
    if (!YAJL_IS_OBJECT(a)) {
        snprintf(f, sizeof(f), "actions[%zu]", i);
        return fail(e, f, "Expected an object.");
    }
    const char *type = lb_json_get_str(a, "type");
    snprintf(f, sizeof(f), "%stype", p);
    if (type == NULL)
        return fail(e, f, "Expected one of send_assessment, add_note, add_tags, move_stage.");
    if (strcmp(type, "send_assessment") == 0) {
        static const char *const known[] = {"type", "assessment"};
        int rc = only_known(e, a, p, known, LB_COUNTOF(known));
        snprintf(f, sizeof(f), "%sassessment", p);
        return rc == 0 ? id_string(e, a, "assessment", f, 1) : rc;
    }
    if (strcmp(type, "add_note") == 0) {
        static const char *const known[] = {"type", "text", "secret"};
        int rc = only_known(e, a, p, known, LB_COUNTOF(known));
        if (rc != 0) return rc;
        snprintf(f, sizeof(f), "%stext", p);
        yajl_val t = lb_json_get(a, "text");
        if (t == NULL || !YAJL_IS_STRING(t) || t->u.string[0] == '\0' ||
            strlen(t->u.string) > TEXT_MAX_BYTES)
            return fail(e, f, "Expected a non-empty string of at most 10000 bytes.");
        char bad[64], msg[160];
        if (e->check_template != NULL && e->check_template(t->u.string, bad, sizeof(bad)) != 0) {
            snprintf(msg, sizeof(msg), "Unknown placeholder %s in the note template.", bad);
            return fail(e, f, msg);
        }
        yajl_val s = lb_json_get(a, "secret");
        snprintf(f, sizeof(f), "%ssecret", p);
        if (s != NULL && !YAJL_IS_TRUE(s) && !YAJL_IS_FALSE(s))
            return fail(e, f, "Expected true or false.");
        return 0;
    }
    if (strcmp(type, "add_tags") == 0) {
        static const char *const known[] = {"type", "tags"};
        int rc = only_known(e, a, p, known, LB_COUNTOF(known));
        if (rc != 0) return rc;
        snprintf(f, sizeof(f), "%stags", p);
        yajl_val t = lb_json_get(a, "tags");
        if (t == NULL || !YAJL_IS_ARRAY(t) || t->u.array.len == 0 || t->u.array.len > MAX_TAGS)
            return fail(e, f, "Expected a non-empty array of at most 50 tags.");
        for (size_t k = 0; k < t->u.array.len; k++) {
            yajl_val x = t->u.array.values[k];
            if (!YAJL_IS_STRING(x) || x->u.string[0] == '\0' ||
                strlen(x->u.string) > ID_MAX_BYTES) {
                snprintf(f, sizeof(f), "%stags[%zu]", p, k);
                return fail(e, f, "Expected a non-empty string of at most 200 bytes.");
            }
        }
        return 0;
    }
    if (strcmp(type, "move_stage") == 0) {
        static const char *const known[] = {"type", "stage", "only_from"};
        int rc = only_known(e, a, p, known, LB_COUNTOF(known));
        snprintf(f, sizeof(f), "%sstage", p);
        if (rc == 0) rc = id_string(e, a, "stage", f, 1);
        if (rc != 0) return rc;
        yajl_val o = lb_json_get(a, "only_from");
        snprintf(f, sizeof(f), "%sonly_from", p);
        if (o == NULL || (YAJL_IS_STRING(o) && strcmp(o->u.string, "any") == 0)) return 0;
        if (!YAJL_IS_ARRAY(o) || o->u.array.len == 0 || o->u.array.len > LB_WF_ONLY_FROM_MAX)
            return fail(e, f, "Expected \"any\" or a non-empty array of at most 50 stage ids.");
        for (size_t k = 0; k < o->u.array.len; k++) {
            yajl_val x = o->u.array.values[k];
            if (!YAJL_IS_STRING(x) || x->u.string[0] == '\0' ||
                strlen(x->u.string) > ID_MAX_BYTES) {
                snprintf(f, sizeof(f), "%sonly_from[%zu]", p, k);
                return fail(e, f, "Expected a stage id.");
            }
        }
        return 0;
    }
    return fail(e, f, "Expected one of send_assessment, add_note, add_tags, move_stage.");
}

int lb_workflow_validate(yajl_val body, lb_template_check_fn check_template, char *field,
                         size_t flen, char *msg, size_t mlen)
{
    verr e = {field, flen, msg, mlen, check_template};
    if (body == NULL || !YAJL_IS_OBJECT(body))
        return fail(&e, "", "The workflow must be a JSON object.");
    static const char *const known[] = {"name", "enabled", "trigger", "actions"};
    int rc = only_known(&e, body, "", known, LB_COUNTOF(known));
    if (rc != 0) return rc;
    yajl_val name = lb_json_get(body, "name");
    if (name == NULL) return fail(&e, "name", "This field is required.");
    if (!YAJL_IS_STRING(name) || name->u.string[0] == '\0' ||
        strlen(name->u.string) > NAME_MAX_BYTES)
        return fail(&e, "name", "Expected a non-empty string of at most 200 bytes.");
    yajl_val en = lb_json_get(body, "enabled");
    if (en != NULL && !YAJL_IS_TRUE(en) && !YAJL_IS_FALSE(en))
        return fail(&e, "enabled", "Expected true or false.");
    if ((rc = check_trigger(&e, lb_json_get(body, "trigger"))) != 0) return rc;
    yajl_val actions = lb_json_get(body, "actions");
    if (actions == NULL) return fail(&e, "actions", "This field is required.");
    if (!YAJL_IS_ARRAY(actions) || actions->u.array.len == 0)
        return fail(&e, "actions", "Expected a non-empty array of actions.");
    if (actions->u.array.len > LB_WF_MAX_ACTIONS) return fail(&e, "actions", "At most 20 actions.");
    for (size_t i = 0; i < actions->u.array.len; i++)
        if ((rc = check_action(&e, actions->u.array.values[i], i)) != 0) return rc;
    return 0;
}

int64_t lb_workflow_delay(yajl_val trigger)
{
    const char *d = lb_json_get_str(trigger, "delay");
    int64_t ms = 0;
    if (d == NULL || lb_duration_parse(d, &ms) != 0 || ms < 0) return 0;
    return ms > LB_WF_DELAY_MAX_MS ? LB_WF_DELAY_MAX_MS : ms;
}

/* ---- registry ---------------------------------------------------------- */

void lb_workflows_init(lb_workflows *ws)
{
    lb_map_init(&ws->by_id);
    lb_map_init(&ws->by_tenant);
}

static void wf_free(lb_workflow *w)
{
    if (w->tree) yajl_tree_free(w->tree);
    lb_free(w->body);
    lb_free(w);
}

void lb_workflows_free(lb_workflows *ws)
{
    size_t pos = 0;
    void *w;
    while ((w = lb_map_next(&ws->by_id, &pos)) != NULL)
        wf_free(w);
    lb_map_free(&ws->by_id);
    lb_map_free(&ws->by_tenant);
}

lb_workflow *lb_workflows_of(const lb_workflows *ws, const char *tenant)
{
    return lb_map_get(&ws->by_tenant, tenant);
}

size_t lb_workflows_count(const lb_workflows *ws, const char *tenant)
{
    size_t n = 0;
    for (lb_workflow *w = lb_workflows_of(ws, tenant); w != NULL; w = w->next)
        n++;
    return n;
}

lb_workflow *lb_workflows_get(const lb_workflows *ws, const char *tenant, const char *id)
{
    lb_workflow *w = lb_map_get(&ws->by_id, id);
    return w != NULL && strcmp(w->tenant_id, tenant) == 0 ? w : NULL;
}

static void unlink_wf(lb_workflows *ws, lb_workflow *w)
{
    lb_workflow *head = lb_map_get(&ws->by_tenant, w->tenant_id);
    if (head == w) {
        /* The map's key is the head's tenant_id: re-key on the next one. */
        lb_map_del(&ws->by_tenant, w->tenant_id);
        if (w->next != NULL) lb_map_put(&ws->by_tenant, w->next->tenant_id, w->next);
        return;
    }
    for (lb_workflow *p = head; p != NULL; p = p->next) {
        if (p->next == w) {
            p->next = w->next;
            return;
        }
    }
}

static void parse(lb_workflow *w)
{
    yajl_val t = lb_json_get(w->tree, "trigger");
    const char *ev = lb_json_get_str(t, "event");
    w->trigger = ev && strcmp(ev, "assessment_completed") == 0 ? LB_TRIGGER_ASSESSMENT_COMPLETED
                 : ev && strcmp(ev, "assessment_expired") == 0 ? LB_TRIGGER_ASSESSMENT_EXPIRED
                                                               : LB_TRIGGER_STAGE_CHANGED;
    w->to_stage = lb_json_get_str(t, "to_stage");
    w->from_stage = lb_json_get_str(t, "from_stage");
    w->assessment = lb_json_get_str(t, "assessment");
    w->postings = lb_json_get(t, "postings");
    w->delay_ms = lb_workflow_delay(t);
    yajl_val lo = lb_json_get(t, "min_score"), hi = lb_json_get(t, "max_score");
    w->has_min = lo != NULL && YAJL_IS_NUMBER(lo);
    w->has_max = hi != NULL && YAJL_IS_NUMBER(hi);
    w->min_score = w->has_min ? YAJL_GET_DOUBLE(lo) : 0;
    w->max_score = w->has_max ? YAJL_GET_DOUBLE(hi) : 0;
    w->actions = lb_json_get(w->tree, "actions");
}

static int before(const lb_workflow *a, const lb_workflow *b)
{
    if (a->created_at != b->created_at) return a->created_at < b->created_at;
    return strcmp(a->id, b->id) < 0;
}

lb_workflow *lb_workflows_apply(lb_workflows *ws, const lb_workflow_rec *rec)
{
    char err[128];
    yajl_val tree = lb_json_parse(rec->body, strlen(rec->body), err, sizeof(err));
    if (tree == NULL) {
        lb_error("state", "workflow %s: stored body unreadable: %s", rec->id, err);
        return NULL;
    }
    lb_workflow *w = lb_map_get(&ws->by_id, rec->id);
    if (w == NULL) {
        w = LB_NEW(lb_workflow);
        snprintf(w->id, sizeof(w->id), "%s", rec->id);
        snprintf(w->tenant_id, sizeof(w->tenant_id), "%s", rec->tenant_id);
        lb_map_put(&ws->by_id, w->id, w);
        w->created_at = rec->created_at;
        /* Ordered by (created_at, id), oldest first: the order lists and
         * their cursors use. */
        lb_workflow *head = lb_map_get(&ws->by_tenant, w->tenant_id);
        if (head == NULL || before(w, head)) {
            if (head != NULL) lb_map_del(&ws->by_tenant, head->tenant_id);
            w->next = head;
            lb_map_put(&ws->by_tenant, w->tenant_id, w);
        } else {
            lb_workflow *p = head;
            while (p->next != NULL && !before(w, p->next))
                p = p->next;
            w->next = p->next;
            p->next = w;
        }
    } else {
        yajl_tree_free(w->tree);
        lb_free(w->body);
    }
    w->tree = tree;
    w->body = lb_strdup(rec->body);
    w->enabled = rec->enabled;
    w->created_at = rec->created_at;
    w->updated_at = rec->updated_at;
    parse(w);
    return w;
}

void lb_workflows_remove(lb_workflows *ws, const char *id)
{
    lb_workflow *w = lb_map_get(&ws->by_id, id);
    if (w == NULL) return;
    unlink_wf(ws, w);
    lb_map_del(&ws->by_id, id);
    wf_free(w);
}

void lb_workflows_remove_tenant(lb_workflows *ws, const char *tenant)
{
    lb_workflow *w;
    while ((w = lb_workflows_of(ws, tenant)) != NULL)
        lb_workflows_remove(ws, w->id);
}
