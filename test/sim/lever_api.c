/* lever-sim: the Data API under /v1. Every route runs through v1_entry:
 * authentication (401), the per-key token bucket (429), the permission
 * (403), then the handler. */
#include "lever_sim.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strbuf.h"
#include "core/time.h"
#include "json/json.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_FILTER_VALUES 32
#define FILTER_VALUE_SIZE 256

/* The caller of one /v1 request, resolved by v1_entry. */
typedef struct {
    lv_sim *s;
    lv_account *a;
    const char *who; /* the key, or "oauth:<client id>" */
} lv_call;

typedef void (*v1_fn)(lb_http_req *req, lv_call *c);

typedef struct {
    lv_sim *s;
    uint64_t perms; /* any one of them admits the call */
    v1_fn fn;
} v1_route;

/* ---- errors ------------------------------------------------------------------- */

void lv_error_ex(lb_http_req *req, int status, const char *code, const char *message,
                 const char *extra_headers)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "code", code);
    lb_json_kv_str(g, "message", message);
    yajl_gen_map_close(g);
    sim_respond_json_extra(req, status, g, extra_headers);
}

void lv_error(lb_http_req *req, int status, const char *code, const char *message)
{
    lv_error_ex(req, status, code, message, NULL);
}

static void bad_request(lb_http_req *req, const char *msg)
{
    lv_error(req, 400, "BadRequestError", msg);
}

static void not_found(lb_http_req *req, const char *what)
{
    char msg[96];
    snprintf(msg, sizeof(msg), "%s not found", what);
    lv_error(req, 404, "ResourceNotFound", msg);
}

/* ---- lists -------------------------------------------------------------------- */

typedef SIM_VEC(void *) item_vec;
typedef const char *(*id_of_fn)(const void *item);

/* Parses limit and offset for a list of n items; answers 400 itself and
 * returns -1 when they are bad. */
static int page_bounds(lb_http_req *req, void *const *items, size_t n, id_of_fn id_of,
                       size_t *start, size_t *end)
{
    char v[FILTER_VALUE_SIZE];
    long limit = 100;
    if (sim_query_get(req, "limit", v, sizeof(v))) {
        char *e;
        limit = strtol(v, &e, 10);
        if (*e != '\0' || v[0] == '\0' || limit < 1 || limit > 100) {
            bad_request(req, "limit must be an integer between 1 and 100");
            return -1;
        }
    }
    size_t from = 0;
    if (sim_query_get(req, "offset", v, sizeof(v)) && v[0] != '\0') {
        /* Our opaque offsets decode to [position,"id of the last item"]. */
        char *e;
        unsigned long long pos = v[0] == '[' ? strtoull(v + 1, &e, 10) : 0;
        size_t vl = strlen(v);
        if (v[0] != '[' || e == v + 1 || e[0] != ',' || e[1] != '"' || vl < 4 || v[vl - 1] != ']' ||
            v[vl - 2] != '"' || (size_t)(e + 2 - v) > vl - 2) {
            bad_request(req, "Invalid offset");
            return -1;
        }
        v[vl - 2] = '\0';
        const char *last = e + 2;
        if (pos >= 1 && pos <= n && strcmp(id_of(items[pos - 1]), last) == 0) {
            from = (size_t)pos;
        } else {
            from = pos <= n ? (size_t)pos : n;
            for (size_t i = 0; i < n; i++)
                if (strcmp(id_of(items[i]), last) == 0) {
                    from = i + 1;
                    break;
                }
        }
    }
    *start = from;
    *end = from + (size_t)limit < n ? from + (size_t)limit : n;
    return 0;
}

static void gen_list_tail(yajl_gen g, void *const *items, size_t n, size_t end, id_of_fn id_of)
{
    lb_json_kv_bool(g, "hasNext", end < n);
    if (end < n && end > 0) {
        lb_strbuf b;
        lb_strbuf_init(&b, 4096);
        lb_strbuf_printf(&b, "%%5B%zu%%2C%%22", end);
        sim_url_encode(&b, id_of(items[end - 1]));
        lb_strbuf_cat(&b, "%22%5D");
        lb_json_kv_str(g, "next", b.data);
        lb_strbuf_free(&b);
    }
}

/* Writes one list item; ctx is whatever the handler passed along. */
typedef void (*gen_item_fn)(yajl_gen g, const void *item, const void *ctx);

/* Answers the page of items that limit and offset ask for, in Lever's
 * envelope ({"data":[...],"hasNext","next"}), or 400 when they are bad. */
static void respond_page(lb_http_req *req, const item_vec *items, id_of_fn id_of, gen_item_fn gen,
                         const void *ctx)
{
    size_t start, end;
    if (page_bounds(req, items->v, items->n, id_of, &start, &end) != 0) return;
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "data");
    yajl_gen_array_open(g);
    for (size_t i = start; i < end; i++)
        gen(g, items->v[i], ctx);
    yajl_gen_array_close(g);
    gen_list_tail(g, items->v, items->n, end, id_of);
    yajl_gen_map_close(g);
    sim_respond_json(req, 200, g);
}

static const char *opp_id(const void *x)
{
    return ((const lv_opp *)x)->id;
}

static const char *stage_id(const void *x)
{
    return ((const lv_stage *)x)->id;
}

static const char *posting_id(const void *x)
{
    return ((const lv_posting *)x)->id;
}

static const char *note_id(const void *x)
{
    return ((const lv_note *)x)->id;
}

static const char *app_id(const void *x)
{
    return ((const lv_app *)x)->id;
}

static const char *hook_id(const void *x)
{
    return ((const lv_webhook *)x)->id;
}

/* gen_item_fn adapters for the lv_gen_* writers. */
typedef struct {
    lv_account *a;
    int expand;
} opp_gen_ctx;

static void gen_opp(yajl_gen g, const void *item, const void *ctx)
{
    const opp_gen_ctx *c = ctx;
    lv_gen_opp(g, c->a, item, c->expand);
}

static void gen_app(yajl_gen g, const void *item, const void *opp)
{
    lv_gen_app(g, opp, item);
}

static void gen_note(yajl_gen g, const void *item, const void *ctx)
{
    (void)ctx;
    lv_gen_note(g, item);
}

static void gen_stage(yajl_gen g, const void *item, const void *ctx)
{
    (void)ctx;
    lv_gen_stage(g, item);
}

static void gen_posting(yajl_gen g, const void *item, const void *ctx)
{
    (void)ctx;
    lv_gen_posting(g, item);
}

static void gen_hook(yajl_gen g, const void *item, const void *ctx)
{
    (void)ctx;
    lv_gen_hook(g, item, 0); /* listings never show the signature token */
}

static int parse_expand(const lb_http_req *req)
{
    int expand = 0;
    const char *cur = req->query, *end = req->query + strlen(req->query);
    char name[32], val[FILTER_VALUE_SIZE];
    while (sim_form_next(&cur, end, name, sizeof(name), val, sizeof(val))) {
        if (strcmp(name, "expand") != 0) continue;
        char *save = NULL;
        for (char *w = strtok_r(val, ",", &save); w != NULL; w = strtok_r(NULL, ",", &save)) {
            if (strcmp(w, "applications") == 0)
                expand |= LV_EXPAND_APPS;
            else if (strcmp(w, "stage") == 0)
                expand |= LV_EXPAND_STAGE;
            else if (strcmp(w, "contact") == 0)
                expand |= LV_EXPAND_CONTACT;
        }
    }
    return expand;
}

/* ---- opportunities -------------------------------------------------------------- */

typedef struct {
    const char *v[MAX_FILTER_VALUES]; /* in the filter's arena */
    int n;
} filter_set;

typedef struct {
    filter_set stage, posting, tag, email, contact;
    int archived; /* -1: any */
    int64_t upd_start, upd_end, cr_start, cr_end;
    size_t used;
    char arena[16 * 1024];
} opp_filter;

static int filter_has(const filter_set *f, const char *x, int nocase)
{
    for (int i = 0; i < f->n; i++)
        if ((nocase ? strcasecmp(f->v[i], x) : strcmp(f->v[i], x)) == 0) return 1;
    return 0;
}

static int parse_ms(const char *v, int64_t *out)
{
    char *e;
    long long x = strtoll(v, &e, 10);
    if (*e != '\0' || v[0] == '\0') return -1;
    *out = x;
    return 0;
}

static int parse_opp_filter(lb_http_req *req, opp_filter *f)
{
    memset(f, 0, offsetof(opp_filter, arena));
    f->archived = -1;
    f->upd_end = f->cr_end = INT64_MAX;
    const char *cur = req->query, *end = req->query + strlen(req->query);
    char name[64], val[FILTER_VALUE_SIZE];
    while (sim_form_next(&cur, end, name, sizeof(name), val, sizeof(val))) {
        filter_set *set = NULL;
        if (strcmp(name, "stage_id") == 0)
            set = &f->stage;
        else if (strcmp(name, "posting_id") == 0)
            set = &f->posting;
        else if (strcmp(name, "tag") == 0)
            set = &f->tag;
        else if (strcmp(name, "email") == 0)
            set = &f->email;
        else if (strcmp(name, "contact_id") == 0)
            set = &f->contact;
        if (set != NULL) {
            size_t len = strlen(val) + 1;
            if (set->n == MAX_FILTER_VALUES || f->used + len > sizeof(f->arena)) {
                bad_request(req, "Too many filter values");
                return -1;
            }
            memcpy(f->arena + f->used, val, len);
            set->v[set->n++] = f->arena + f->used;
            f->used += len;
            continue;
        }
        int64_t *t = NULL;
        if (strcmp(name, "updated_at_start") == 0)
            t = &f->upd_start;
        else if (strcmp(name, "updated_at_end") == 0)
            t = &f->upd_end;
        else if (strcmp(name, "created_at_start") == 0)
            t = &f->cr_start;
        else if (strcmp(name, "created_at_end") == 0)
            t = &f->cr_end;
        if (t != NULL && parse_ms(val, t) != 0) {
            char msg[128];
            snprintf(msg, sizeof(msg), "%s must be a timestamp in milliseconds", name);
            bad_request(req, msg);
            return -1;
        }
        if (strcmp(name, "archived") == 0) f->archived = strcmp(val, "true") == 0;
    }
    return 0;
}

static int opp_matches(const opp_filter *f, const lv_opp *o)
{
    if (f->stage.n && (o->stage == NULL || !filter_has(&f->stage, o->stage, 0))) return 0;
    if (f->posting.n) {
        int hit = 0;
        for (size_t i = 0; i < o->apps.n && !hit; i++)
            hit = filter_has(&f->posting, o->apps.v[i].posting, 0);
        if (!hit) return 0;
    }
    if (f->tag.n) {
        int hit = 0;
        for (size_t i = 0; i < o->tags.n && !hit; i++)
            hit = filter_has(&f->tag, o->tags.v[i], 0);
        if (!hit) return 0;
    }
    if (f->email.n) {
        int hit = 0;
        for (size_t i = 0; i < o->emails.n && !hit; i++)
            hit = filter_has(&f->email, o->emails.v[i], 1);
        if (!hit) return 0;
    }
    if (f->contact.n && !filter_has(&f->contact, o->contact, 0)) return 0;
    if (f->archived >= 0 && (o->archived != 0) != (f->archived != 0)) return 0;
    if (o->updated < f->upd_start || o->updated > f->upd_end) return 0;
    if (o->created < f->cr_start || o->created > f->cr_end) return 0;
    return 1;
}

static void h_opps_list(lb_http_req *req, lv_call *c)
{
    opp_filter filter, *f = &filter;
    if (parse_opp_filter(req, f) != 0) return;
    item_vec items = {0};
    for (size_t i = 0; i < c->a->opps.n; i++)
        if (opp_matches(f, c->a->opps.v[i])) SIM_PUSH(items, c->a->opps.v[i]);
    opp_gen_ctx ctx = {c->a, parse_expand(req)};
    respond_page(req, &items, opp_id, gen_opp, &ctx);
    SIM_VEC_FREE(items);
}

static lv_opp *opp_param(lb_http_req *req, lv_call *c)
{
    lv_opp *o = lv_opp_find(c->a, lb_http_req_param(req, "id"));
    if (o == NULL) not_found(req, "Opportunity");
    return o;
}

static void respond_opp(lb_http_req *req, lv_call *c, lv_opp *o, int status)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "data");
    lv_gen_opp(g, c->a, o, parse_expand(req));
    yajl_gen_map_close(g);
    sim_respond_json(req, status, g);
}

static void h_opp_get(lb_http_req *req, lv_call *c)
{
    lv_opp *o = opp_param(req, c);
    if (o != NULL) respond_opp(req, c, o, 200);
}

static void h_apps_list(lb_http_req *req, lv_call *c)
{
    lv_opp *o = opp_param(req, c);
    if (o == NULL) return;
    item_vec items = {0};
    for (size_t i = 0; i < o->apps.n; i++)
        SIM_PUSH(items, &o->apps.v[i]);
    respond_page(req, &items, app_id, gen_app, o);
    SIM_VEC_FREE(items);
}

static void h_app_get(lb_http_req *req, lv_call *c)
{
    lv_opp *o = opp_param(req, c);
    if (o == NULL) return;
    const char *id = lb_http_req_param(req, "app");
    for (size_t i = 0; i < o->apps.n; i++) {
        if (strcmp(o->apps.v[i].id, id) == 0) {
            yajl_gen g = lb_json_gen_new();
            yajl_gen_map_open(g);
            lb_json_key(g, "data");
            lv_gen_app(g, o, &o->apps.v[i]);
            yajl_gen_map_close(g);
            sim_respond_json(req, 200, g);
            return;
        }
    }
    not_found(req, "Application");
}

/* ---- notes -------------------------------------------------------------------- */

static void h_notes_list(lb_http_req *req, lv_call *c)
{
    lv_opp *o = opp_param(req, c);
    if (o == NULL) return;
    item_vec items = {0};
    for (size_t i = 0; i < o->notes.n; i++)
        SIM_PUSH(items, &o->notes.v[i]);
    respond_page(req, &items, note_id, gen_note, NULL);
    SIM_VEC_FREE(items);
}

static lv_note *note_param(lb_http_req *req, lv_opp *o)
{
    const char *id = lb_http_req_param(req, "note");
    for (size_t i = 0; i < o->notes.n; i++)
        if (strcmp(o->notes.v[i].id, id) == 0) return &o->notes.v[i];
    not_found(req, "Note");
    return NULL;
}

static void respond_note(lb_http_req *req, const lv_note *n)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "data");
    lv_gen_note(g, n);
    yajl_gen_map_close(g);
    sim_respond_json(req, 200, g);
}

static void h_note_get(lb_http_req *req, lv_call *c)
{
    lv_opp *o = opp_param(req, c);
    lv_note *n = o ? note_param(req, o) : NULL;
    if (n != NULL) respond_note(req, n);
}

static void h_note_create(lb_http_req *req, lv_call *c)
{
    lv_opp *o = opp_param(req, c);
    if (o == NULL) return;
    yajl_val body = sim_body_json(req, bad_request);
    if (body == NULL) return;
    const char *value = sim_json_str(body, "value");
    int64_t score = 0;
    int rc_score = lb_json_get_int(body, "score", &score);
    yajl_val sv = lb_json_get(body, "score");
    if (value == NULL || value[0] == '\0') {
        bad_request(req, "value is required");
    } else if (rc_score == LB_EINVAL && !YAJL_IS_NULL(sv)) {
        bad_request(req, "score must be an integer");
    } else {
        lv_note *n = lv_note_add(o, value, 1);
        n->secret = sim_json_bool(body, "secret", 0);
        n->notify = sim_json_bool(body, "notifyFollowers", 0);
        n->has_score = rc_score == 0;
        n->score = score;
        n->author = lb_strdup(c->who);
        o->updated = n->created;
        yajl_gen g = lb_json_gen_new();
        yajl_gen_map_open(g);
        lb_json_key(g, "data");
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "noteId", n->id);
        yajl_gen_map_close(g);
        yajl_gen_map_close(g);
        sim_respond_json(req, 201, g);
    }
    yajl_tree_free(body);
}

static void h_note_update(lb_http_req *req, lv_call *c)
{
    lv_opp *o = opp_param(req, c);
    lv_note *n = o ? note_param(req, o) : NULL;
    if (n == NULL) return;
    yajl_val body = sim_body_json(req, bad_request);
    if (body == NULL) return;
    yajl_val values = lb_json_get_array(body, "values");
    const char *value = NULL;
    if (values != NULL && values->u.array.len > 0)
        value = sim_json_str(values->u.array.values[0], "value");
    if (value == NULL || value[0] == '\0') {
        bad_request(req, "values must be a list of {\"value\": text}");
    } else if (!n->api) {
        bad_request(req, "Only notes created through the API can be updated");
    } else {
        lb_free(n->value);
        n->value = lb_strdup(value);
        n->updated = lb_time_now_ms();
        o->updated = n->updated;
        respond_note(req, n);
    }
    yajl_tree_free(body);
}

/* ---- tags and stage ------------------------------------------------------------- */

static void change_tags(lb_http_req *req, lv_call *c, int add)
{
    lv_opp *o = opp_param(req, c);
    if (o == NULL) return;
    yajl_val body = sim_body_json(req, bad_request);
    if (body == NULL) return;
    yajl_val tags = lb_json_get_array(body, "tags");
    int ok = tags != NULL;
    for (size_t i = 0; ok && i < tags->u.array.len; i++)
        ok = YAJL_IS_STRING(tags->u.array.values[i]) && tags->u.array.values[i]->u.string[0];
    if (!ok) {
        bad_request(req, "tags must be a list of non-empty strings");
    } else {
        for (size_t i = 0; i < tags->u.array.len; i++) {
            const char *t = tags->u.array.values[i]->u.string;
            if (add) {
                sim_strv_add_unique(&o->tags, t);
            } else {
                int k = sim_strv_index(&o->tags, t);
                if (k >= 0) {
                    lb_free(o->tags.v[k]);
                    memmove(&o->tags.v[k], &o->tags.v[k + 1],
                            (o->tags.n - (size_t)k - 1) * sizeof(char *));
                    o->tags.n--;
                }
            }
        }
        o->updated = lb_time_now_ms();
        respond_opp(req, c, o, 200);
    }
    yajl_tree_free(body);
}

static void h_add_tags(lb_http_req *req, lv_call *c)
{
    change_tags(req, c, 1);
}

static void h_remove_tags(lb_http_req *req, lv_call *c)
{
    change_tags(req, c, 0);
}

static void h_stage_put(lb_http_req *req, lv_call *c)
{
    lv_opp *o = opp_param(req, c);
    if (o == NULL) return;
    yajl_val body = sim_body_json(req, bad_request);
    if (body == NULL) return;
    const char *stage = sim_json_str(body, "stage");
    if (stage == NULL || lv_stage_find(c->a, stage) == NULL) {
        bad_request(req, stage == NULL ? "stage is required" : "Invalid stage");
    } else {
        int64_t now = lb_time_now_ms();
        if (o->stage == NULL || strcmp(o->stage, stage) != 0) {
            lb_free(o->stage);
            o->stage = lb_strdup(stage);
            char user[FILTER_VALUE_SIZE];
            int has_user = sim_query_get(req, "perform_as", user, sizeof(user));
            lv_change ch = {.to = lb_strdup(stage),
                            .index = lv_stage_index(c->a, stage),
                            .at = now,
                            .user = has_user ? lb_strdup(user) : NULL};
            SIM_PUSH(o->changes, ch);
            o->advanced = now;
        }
        o->updated = now;
        respond_opp(req, c, o, 200);
    }
    yajl_tree_free(body);
}

/* ---- stages, postings, tags ---------------------------------------------------------- */

static void h_stages_list(lb_http_req *req, lv_call *c)
{
    item_vec items = {0};
    for (size_t i = 0; i < c->a->stages.n; i++)
        SIM_PUSH(items, c->a->stages.v[i]);
    respond_page(req, &items, stage_id, gen_stage, NULL);
    SIM_VEC_FREE(items);
}

static void h_stage_get(lb_http_req *req, lv_call *c)
{
    lv_stage *st = lv_stage_find(c->a, lb_http_req_param(req, "id"));
    if (st == NULL) {
        not_found(req, "Stage");
        return;
    }
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "data");
    lv_gen_stage(g, st);
    yajl_gen_map_close(g);
    sim_respond_json(req, 200, g);
}

static void h_postings_list(lb_http_req *req, lv_call *c)
{
    char state[64];
    int by_state = sim_query_get(req, "state", state, sizeof(state));
    item_vec items = {0};
    for (size_t i = 0; i < c->a->postings.n; i++)
        if (!by_state || strcmp(c->a->postings.v[i]->state, state) == 0)
            SIM_PUSH(items, c->a->postings.v[i]);
    respond_page(req, &items, posting_id, gen_posting, NULL);
    SIM_VEC_FREE(items);
}

static void h_posting_get(lb_http_req *req, lv_call *c)
{
    lv_posting *p = lv_posting_find(c->a, lb_http_req_param(req, "id"));
    if (p == NULL) {
        not_found(req, "Posting");
        return;
    }
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "data");
    lv_gen_posting(g, p);
    yajl_gen_map_close(g);
    sim_respond_json(req, 200, g);
}

typedef struct {
    const char *text;
    int64_t count;
} tag_count;

static const char *tag_text(const void *x)
{
    return ((const tag_count *)x)->text;
}

static void gen_tag(yajl_gen g, const void *item, const void *ctx)
{
    const tag_count *t = item;
    (void)ctx;
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "text", t->text);
    lb_json_kv_int(g, "count", t->count);
    yajl_gen_map_close(g);
}

static void h_tags_list(lb_http_req *req, lv_call *c)
{
    lb_map idx;
    lb_map_init(&idx);
    SIM_VEC(tag_count) tags = {0};
    for (size_t i = 0; i < c->a->opps.n; i++) {
        const lv_opp *o = c->a->opps.v[i];
        for (size_t k = 0; k < o->tags.n; k++) {
            uintptr_t at = (uintptr_t)lb_map_get(&idx, o->tags.v[k]);
            if (at == 0) {
                tag_count t = {.text = o->tags.v[k], .count = 0};
                SIM_PUSH(tags, t);
                at = tags.n;
                lb_map_put(&idx, o->tags.v[k], (void *)at);
            }
            tags.v[at - 1].count++;
        }
    }
    lb_map_free(&idx);
    item_vec items = {0};
    for (size_t i = 0; i < tags.n; i++)
        SIM_PUSH(items, &tags.v[i]);
    respond_page(req, &items, tag_text, gen_tag, NULL);
    SIM_VEC_FREE(items);
    SIM_VEC_FREE(tags);
}

/* ---- webhooks -------------------------------------------------------------------- */

static void h_hooks_list(lb_http_req *req, lv_call *c)
{
    item_vec items = {0};
    for (size_t i = 0; i < c->a->hooks.n; i++)
        SIM_PUSH(items, c->a->hooks.v[i]);
    respond_page(req, &items, hook_id, gen_hook, NULL);
    SIM_VEC_FREE(items);
}

static void h_hook_create(lb_http_req *req, lv_call *c)
{
    yajl_val body = sim_body_json(req, bad_request);
    if (body == NULL) return;
    char msg[128];
    lv_webhook *w = YAJL_IS_OBJECT(body) ? lv_seed_hook(c->a, body, 1, msg, sizeof(msg)) : NULL;
    if (w == NULL) {
        bad_request(req, YAJL_IS_OBJECT(body) ? msg : "The body must be an object");
    } else {
        lb_debug("lever-sim", "webhook %s created for %s", w->id, w->url);
        yajl_gen g = lb_json_gen_new();
        yajl_gen_map_open(g);
        lb_json_key(g, "data");
        if (c->a->webhook_nested) {
            yajl_gen_map_open(g);
            lb_json_key(g, "data");
        }
        lv_gen_hook(g, w, 1);
        if (c->a->webhook_nested) yajl_gen_map_close(g);
        yajl_gen_map_close(g);
        sim_respond_json(req, 201, g);
    }
    yajl_tree_free(body);
}

static void h_hooks_update(lb_http_req *req, lv_call *c)
{
    yajl_val body = sim_body_json(req, bad_request);
    if (body == NULL) return;
    yajl_val list = lb_json_get_array(body, "data");
    const char *err = list == NULL ? "data must be a list of webhooks" : NULL;
    int missing = 0;
    /* Validate everything, then apply. */
    for (size_t i = 0; err == NULL && i < list->u.array.len; i++) {
        yajl_val o = list->u.array.values[i];
        const char *id = sim_json_str(o, "id");
        const char *url = sim_json_str(o, "url");
        lv_webhook *w = id ? lv_hook_find(c->a, id, NULL) : NULL;
        yajl_val conf = lb_json_get(o, "configuration");
        if (id == NULL)
            err = "each webhook needs an id";
        else if (w == NULL)
            err = "Webhook not found", missing = 1;
        else if (!w->api)
            err = "Only webhooks created through the API can be changed through the API";
        else if (url != NULL && strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
            err = "url must be an http(s) URL";
        else if (conf != NULL && !YAJL_IS_NULL(conf) && !YAJL_IS_OBJECT(conf))
            err = "configuration must be an object";
    }
    if (err != NULL) {
        if (missing)
            lv_error(req, 404, "ResourceNotFound", err);
        else
            bad_request(req, err);
        yajl_tree_free(body);
        return;
    }
    int64_t now = lb_time_now_ms();
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "data");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < list->u.array.len; i++) {
        yajl_val o = list->u.array.values[i];
        lv_webhook *w = lv_hook_find(c->a, sim_json_str(o, "id"), NULL);
        const char *url = sim_json_str(o, "url");
        if (url != NULL) {
            lb_free(w->url);
            w->url = lb_strdup(url);
        }
        yajl_val conf = lb_json_get(o, "configuration");
        if (YAJL_IS_OBJECT(conf)) {
            yajl_val cond = lb_json_get(conf, "conditions");
            if (w->conditions) yajl_tree_free(w->conditions);
            w->conditions = YAJL_IS_OBJECT(cond) ? sim_json_clone(cond) : NULL;
        }
        w->updated = now;
        lv_gen_hook(g, w, 0);
    }
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    yajl_tree_free(body);
    sim_respond_json(req, 200, g);
}

static void h_hook_delete(lb_http_req *req, lv_call *c)
{
    size_t idx;
    lv_webhook *w = lv_hook_find(c->a, lb_http_req_param(req, "id"), &idx);
    if (w == NULL) {
        not_found(req, "Webhook");
        return;
    }
    if (!w->api) {
        bad_request(req, "Only webhooks created through the API can be deleted through the API");
        return;
    }
    memmove(&c->a->hooks.v[idx], &c->a->hooks.v[idx + 1],
            (c->a->hooks.n - idx - 1) * sizeof(*c->a->hooks.v));
    c->a->hooks.n--;
    lv_hook_free(w);
    sim_respond(req, 204, NULL, NULL, NULL, 0, NULL, NULL);
}

/* ---- authentication, rate limit, permission ------------------------------------------ */

static int bucket_take(lv_bucket *b, double rate, int burst)
{
    if (rate <= 0) return 1;
    if (burst < 1) burst = 1;
    uint64_t now = uv_hrtime();
    if (!b->init) {
        b->tokens = burst;
        b->last_ns = now;
        b->init = 1;
    }
    b->tokens += (double)(now - b->last_ns) / 1e9 * rate;
    if (b->tokens > burst) b->tokens = burst;
    b->last_ns = now;
    if (b->tokens >= 1) {
        b->tokens -= 1;
        return 1;
    }
    return 0;
}

static void unauthorized(lb_http_req *req, lv_sim *s, const char *msg)
{
    s->unauthenticated++;
    lv_error_ex(req, 401, "UnauthorizedError", msg, "WWW-Authenticate: Basic realm=\"Lever\"\r\n");
}

static void v1_entry(lb_http_req *req, void *data)
{
    const v1_route *rt = data;
    lv_sim *s = rt->s;
    sim_rctx *rc = req->ctx;
    lv_call call = {.s = s};
    uint64_t perms;
    lv_bucket *bucket;
    lv_stats *stats;
    double rate;
    int burst;
    char who[160];

    if (strcmp(rc->auth, "basic") == 0) {
        lv_key *k = rc->cred && *rc->cred ? lb_map_get(&s->keys, rc->cred) : NULL;
        if (k == NULL || k->revoked) {
            unauthorized(req, s, "Invalid API key");
            return;
        }
        rc->principal = lb_strdup(k->key);
        if (k->postings) {
            rc->stats = &k->stats;
            lv_stats_count(&k->stats, 1);
            unauthorized(req, s,
                         "This is a Postings API key: it only works on the public postings API");
            return;
        }
        perms = k->perms;
        call.a = k->account;
        bucket = &k->bucket;
        stats = &k->stats;
        rate = k->rate >= 0 ? k->rate : s->rate;
        burst = k->burst >= 0 ? k->burst : s->burst;
        snprintf(who, sizeof(who), "%s", k->key);
    } else if (strcmp(rc->auth, "bearer") == 0) {
        lv_access *t = rc->cred ? lb_map_get(&s->access, rc->cred) : NULL;
        if (t == NULL) {
            unauthorized(req, s, "Invalid access token");
            return;
        }
        lv_grant *gr = t->grant;
        char p[96];
        snprintf(p, sizeof(p), "grant:%s", gr->id);
        rc->principal = lb_strdup(p);
        if (gr->revoked) {
            unauthorized(req, s, "The access token has been revoked");
            return;
        }
        if (lb_time_now_ms() >= t->expires_ms) {
            unauthorized(req, s, "The access token has expired");
            return;
        }
        perms = gr->perms;
        call.a = gr->account;
        bucket = &gr->bucket;
        stats = &gr->stats;
        rate = gr->client->rate >= 0 ? gr->client->rate : s->rate;
        burst = gr->client->burst >= 0 ? gr->client->burst : s->burst;
        snprintf(who, sizeof(who), "oauth:%s", gr->client->client_id);
    } else {
        unauthorized(req, s, "Missing API credentials: use HTTP Basic auth with your API key");
        return;
    }
    rc->stats = stats;
    if (!bucket_take(bucket, rate, burst)) {
        lv_stats_count(stats, 0);
        rc->note = lb_strdup("rate_limited");
        char hdr[96] = "";
        if (s->retry_after_429 != NULL)
            snprintf(hdr, sizeof(hdr), "Retry-After: %s\r\n", s->retry_after_429);
        lv_error_ex(req, 429, "TooManyRequests", "Rate limit exceeded", hdr[0] ? hdr : NULL);
        return;
    }
    lv_stats_count(stats, 1);
    if ((perms & rt->perms) == 0) {
        const char *name = "this";
        for (int i = 0; i < LV_P_COUNT; i++)
            if (rt->perms & LV_PERM(i)) {
                name = lv_perm_names[i];
                break;
            }
        char msg[256];
        snprintf(msg, sizeof(msg),
                 "This %s does not have the permission to %s. Please ask a Super Admin "
                 "to update the API settings.",
                 strcmp(rc->auth, "basic") == 0 ? "API key" : "access token", name);
        lv_error(req, 403, "ForbiddenError", msg);
        return;
    }
    call.who = who;
    rt->fn(req, &call);
}

/* ---- registration ----------------------------------------------------------------- */

#define P(x) LV_PERM(LV_P_##x)

static void add(lv_sim *s, const char *method, const char *pattern, uint64_t perms, v1_fn fn)
{
    v1_route *rt = LB_NEW(v1_route);
    rt->s = s;
    rt->perms = perms;
    rt->fn = fn;
    SIM_PUSH(s->owned, rt);
    lb_router_add(s->app.router, method, pattern, v1_entry, rt);
}

void lv_api_register(lv_sim *s)
{
    add(s, "GET", "/v1/opportunities", P(FIND_ALL_OPPS), h_opps_list);
    add(s, "GET", "/v1/opportunities/{id}", P(FIND_OPP), h_opp_get);
    add(s, "GET", "/v1/opportunities/{id}/applications",
        P(FIND_ALL_OPP_APPS) | P(FIND_ALL_CAND_APPS), h_apps_list);
    add(s, "GET", "/v1/opportunities/{id}/applications/{app}", P(FIND_OPP_APP), h_app_get);
    add(s, "GET", "/v1/opportunities/{id}/notes", P(FIND_OPP_NOTE) | P(FIND_ALL_OPP_NOTES),
        h_notes_list);
    add(s, "POST", "/v1/opportunities/{id}/notes", P(CREATE_OPP_NOTE), h_note_create);
    add(s, "GET", "/v1/opportunities/{id}/notes/{note}", P(FIND_OPP_NOTE), h_note_get);
    add(s, "PUT", "/v1/opportunities/{id}/notes/{note}", P(UPDATE_OPP_NOTE), h_note_update);
    add(s, "POST", "/v1/opportunities/{id}/addTags", P(ADD_OPP_TAGS), h_add_tags);
    add(s, "POST", "/v1/opportunities/{id}/removeTags", P(REMOVE_OPP_TAGS), h_remove_tags);
    add(s, "PUT", "/v1/opportunities/{id}/stage", P(UPDATE_OPP_STAGE), h_stage_put);
    add(s, "GET", "/v1/candidates", P(FIND_ALL_CANDS), h_opps_list);
    add(s, "GET", "/v1/candidates/{id}", P(FIND_CAND), h_opp_get);
    add(s, "GET", "/v1/candidates/{id}/applications", P(FIND_ALL_CAND_APPS), h_apps_list);
    add(s, "POST", "/v1/candidates/{id}/notes", P(CREATE_CAND_NOTE), h_note_create);
    add(s, "POST", "/v1/candidates/{id}/addTags", P(ADD_CAND_TAGS), h_add_tags);
    add(s, "PUT", "/v1/candidates/{id}/stage", P(UPDATE_CAND_STAGE), h_stage_put);
    add(s, "GET", "/v1/stages", P(FIND_ALL_STAGES), h_stages_list);
    add(s, "GET", "/v1/stages/{id}", P(FIND_STAGE), h_stage_get);
    add(s, "GET", "/v1/postings", P(FIND_ALL_POSTINGS), h_postings_list);
    add(s, "GET", "/v1/postings/{id}", P(FIND_POSTING), h_posting_get);
    add(s, "GET", "/v1/tags", P(FIND_ALL_TAGS), h_tags_list);
    add(s, "GET", "/v1/webhooks", P(FIND_ALL_WEBHOOKS), h_hooks_list);
    add(s, "POST", "/v1/webhooks", P(ADD_WEBHOOK), h_hook_create);
    add(s, "PUT", "/v1/webhooks", P(UPDATE_WEBHOOK), h_hooks_update);
    add(s, "DELETE", "/v1/webhooks/{id}", P(DELETE_WEBHOOK), h_hook_delete);
}
