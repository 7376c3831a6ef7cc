/* lever-sim: accounts and their objects, permissions, statistics, Lever's
 * JSON shapes, and seeding. */
#include "lever_sim.h"

#include "core/alloc.h"
#include "core/time.h"
#include "json/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- permissions ------------------------------------------------------------- */

const char *const lv_perm_names[LV_P_COUNT] = {
    [LV_P_FIND_OPP] = "find an opportunity",
    [LV_P_FIND_ALL_OPPS] = "find all opportunities",
    [LV_P_FIND_CAND] = "find a candidate",
    [LV_P_FIND_ALL_CANDS] = "find all candidates",
    [LV_P_FIND_OPP_APP] = "find an opportunity application",
    [LV_P_FIND_ALL_OPP_APPS] = "find all opportunity applications",
    [LV_P_FIND_ALL_CAND_APPS] = "find all candidate applications",
    [LV_P_FIND_OPP_NOTE] = "find an opportunity note",
    [LV_P_FIND_ALL_OPP_NOTES] = "find all opportunity notes",
    [LV_P_CREATE_OPP_NOTE] = "create an opportunity note",
    [LV_P_UPDATE_OPP_NOTE] = "update an opportunity note",
    [LV_P_CREATE_CAND_NOTE] = "create a candidate note",
    [LV_P_FIND_ALL_TAGS] = "find all tags",
    [LV_P_ADD_OPP_TAGS] = "add opportunity tags",
    [LV_P_REMOVE_OPP_TAGS] = "remove opportunity tags",
    [LV_P_ADD_CAND_TAGS] = "add candidate tags",
    [LV_P_FIND_STAGE] = "find a stage",
    [LV_P_FIND_ALL_STAGES] = "find all stages",
    [LV_P_FIND_POSTING] = "find a posting",
    [LV_P_FIND_ALL_POSTINGS] = "find all postings",
    [LV_P_UPDATE_OPP_STAGE] = "update an opportunity's stage",
    [LV_P_UPDATE_CAND_STAGE] = "update a candidate stage",
    [LV_P_FIND_ALL_WEBHOOKS] = "find all webhooks",
    [LV_P_ADD_WEBHOOK] = "add a webhook",
    [LV_P_UPDATE_WEBHOOK] = "update a webhook",
    [LV_P_DELETE_WEBHOOK] = "delete a webhook",
};

int lv_perm_find(const char *words)
{
    char norm[128];
    size_t o = 0;
    for (const char *p = words; *p && o + 1 < sizeof(norm); p++) {
        /* A typographic apostrophe (U+2019) counts as ASCII '. */
        if ((unsigned char)p[0] == 0xE2 && (unsigned char)p[1] == 0x80 &&
            (unsigned char)p[2] == 0x99) {
            norm[o++] = '\'';
            p += 2;
            continue;
        }
        norm[o++] = *p;
    }
    norm[o] = '\0';
    for (int i = 0; i < LV_P_COUNT; i++)
        if (strcasecmp(norm, lv_perm_names[i]) == 0) return i;
    return -1;
}

static int perms_list(yajl_val v, uint64_t *out, char *bad, size_t badsz)
{
    *out = 0;
    if (YAJL_IS_STRING(v)) {
        if (strcasecmp(v->u.string, "all") == 0) {
            *out = LV_PERMS_ALL;
            return 0;
        }
        int i = lv_perm_find(v->u.string);
        if (i < 0) {
            snprintf(bad, badsz, "%s", v->u.string);
            return -1;
        }
        *out = LV_PERM(i);
        return 0;
    }
    if (!YAJL_IS_ARRAY(v)) {
        snprintf(bad, badsz, "permissions must be \"all\" or a list of strings");
        return -1;
    }
    for (size_t k = 0; k < v->u.array.len; k++) {
        yajl_val e = v->u.array.values[k];
        int i = YAJL_IS_STRING(e) ? lv_perm_find(e->u.string) : -1;
        if (i < 0) {
            snprintf(bad, badsz, "%s", YAJL_IS_STRING(e) ? e->u.string : "(not a string)");
            return -1;
        }
        *out |= LV_PERM(i);
    }
    return 0;
}

int lv_perms_parse(yajl_val v, yajl_val except, uint64_t *out, char *bad, size_t badsz)
{
    uint64_t p = LV_PERMS_ALL, x = 0;
    if (v != NULL && perms_list(v, &p, bad, badsz) != 0) return -1;
    if (except != NULL && perms_list(except, &x, bad, badsz) != 0) return -1;
    *out = p & ~x;
    return 0;
}

void lv_perms_gen(yajl_gen g, uint64_t perms)
{
    yajl_gen_array_open(g);
    for (int i = 0; i < LV_P_COUNT; i++)
        if (perms & LV_PERM(i)) lb_json_str(g, lv_perm_names[i]);
    yajl_gen_array_close(g);
}

uint64_t lv_scope_perms(const char *scope, int *offline)
{
    uint64_t p = 0;
    *offline = 0;
    const char *s = scope;
    while (*s) {
        while (*s == ' ' || *s == '+')
            s++;
        const char *e = s;
        while (*e && *e != ' ' && *e != '+')
            e++;
        char word[96];
        size_t n = (size_t)(e - s) < sizeof(word) - 1 ? (size_t)(e - s) : sizeof(word) - 1;
        memcpy(word, s, n);
        word[n] = '\0';
        s = e;
        if (n == 0) continue;
        if (strcmp(word, "offline_access") == 0) {
            *offline = 1;
            continue;
        }
        char *c1 = strchr(word, ':');
        if (c1 == NULL) continue;
        *c1 = '\0';
        char *action = c1 + 1;
        char *c2 = strchr(action, ':');
        if (c2 != NULL) *c2 = '\0';
        int write = strcmp(action, "write") == 0;
        if (!write && strcmp(action, "read") != 0) continue;
        if (strcmp(word, "opportunities") == 0) {
            p |= LV_PERM(LV_P_FIND_OPP) | LV_PERM(LV_P_FIND_ALL_OPPS) | LV_PERM(LV_P_FIND_CAND) |
                 LV_PERM(LV_P_FIND_ALL_CANDS);
            if (write)
                p |= LV_PERM(LV_P_UPDATE_OPP_STAGE) | LV_PERM(LV_P_UPDATE_CAND_STAGE) |
                     LV_PERM(LV_P_ADD_OPP_TAGS) | LV_PERM(LV_P_REMOVE_OPP_TAGS) |
                     LV_PERM(LV_P_ADD_CAND_TAGS);
        } else if (strcmp(word, "applications") == 0) {
            p |= LV_PERM(LV_P_FIND_OPP_APP) | LV_PERM(LV_P_FIND_ALL_OPP_APPS) |
                 LV_PERM(LV_P_FIND_ALL_CAND_APPS);
        } else if (strcmp(word, "notes") == 0) {
            p |= LV_PERM(LV_P_FIND_OPP_NOTE) | LV_PERM(LV_P_FIND_ALL_OPP_NOTES);
            if (write)
                p |= LV_PERM(LV_P_CREATE_OPP_NOTE) | LV_PERM(LV_P_UPDATE_OPP_NOTE) |
                     LV_PERM(LV_P_CREATE_CAND_NOTE);
        } else if (strcmp(word, "stages") == 0) {
            p |= LV_PERM(LV_P_FIND_STAGE) | LV_PERM(LV_P_FIND_ALL_STAGES);
        } else if (strcmp(word, "postings") == 0) {
            p |= LV_PERM(LV_P_FIND_POSTING) | LV_PERM(LV_P_FIND_ALL_POSTINGS);
        } else if (strcmp(word, "tags") == 0) {
            p |= LV_PERM(LV_P_FIND_ALL_TAGS);
        } else if (strcmp(word, "webhooks") == 0) {
            p |= LV_PERM(LV_P_FIND_ALL_WEBHOOKS);
            if (write)
                p |= LV_PERM(LV_P_ADD_WEBHOOK) | LV_PERM(LV_P_UPDATE_WEBHOOK) |
                     LV_PERM(LV_P_DELETE_WEBHOOK);
        }
    }
    return p;
}

/* ---- statistics ----------------------------------------------------------------- */

void lv_stats_count(lv_stats *st, int accepted)
{
    uint64_t now = sim_mono_ms();
    int64_t wall = lb_time_now_ms();
    st->requests++;
    if (st->first_ms == 0) st->first_ms = wall;
    st->last_ms = wall;
    sim_window_add(&st->all, now);
    if (accepted)
        sim_window_add(&st->accepted, now);
    else
        st->r429++;
}

void lv_stats_status(lv_stats *st, int status)
{
    if (status >= 200 && status < 300)
        st->ok++;
    else if (status >= 500)
        st->c5xx++;
    else if (status >= 400)
        st->c4xx++;
    if (status == 401)
        st->r401++;
    else if (status == 403)
        st->r403++;
    else if (status == 404)
        st->r404++;
}

void lv_stats_gen(yajl_gen g, const lv_stats *st)
{
    lb_json_kv_int(g, "requests", (int64_t)st->requests);
    lb_json_kv_int(g, "ok", (int64_t)st->ok);
    lb_json_kv_int(g, "client_errors", (int64_t)st->c4xx);
    lb_json_kv_int(g, "server_errors", (int64_t)st->c5xx);
    lb_json_kv_int(g, "unauthorized", (int64_t)st->r401);
    lb_json_kv_int(g, "forbidden", (int64_t)st->r403);
    lb_json_kv_int(g, "not_found", (int64_t)st->r404);
    lb_json_kv_int(g, "violations", (int64_t)st->r429);
    lb_json_kv_int(g, "max_per_second", (int64_t)st->all.max);
    lb_json_kv_int(g, "max_accepted_per_second", (int64_t)st->accepted.max);
    lb_json_kv_int(g, "first_ms", st->first_ms);
    lb_json_kv_int(g, "last_ms", st->last_ms);
}

/* ---- accounts --------------------------------------------------------------------- */

char *lv_new_id(void)
{
    char id[37];
    sim_uuid(id);
    return lb_strdup(id);
}

lv_account *lv_account_get(lv_sim *s, const char *name, int create)
{
    lv_account *a = lb_map_get(&s->accounts, name);
    if (a != NULL || !create) return a;
    a = LB_NEW(lv_account);
    a->name = lb_strdup(name);
    a->deliveries_enabled = 1;
    lb_map_init(&a->stage_by_id);
    lb_map_init(&a->posting_by_id);
    lb_map_init(&a->opp_by_id);
    lb_map_put(&s->accounts, a->name, a);
    SIM_PUSH(s->account_list, a);
    return a;
}

lv_opp *lv_opp_find(lv_account *a, const char *id)
{
    return lb_map_get(&a->opp_by_id, id);
}

lv_stage *lv_stage_find(lv_account *a, const char *id)
{
    return lb_map_get(&a->stage_by_id, id);
}

int lv_stage_index(lv_account *a, const char *id)
{
    for (size_t i = 0; i < a->stages.n; i++)
        if (strcmp(a->stages.v[i]->id, id) == 0) return (int)i;
    return -1;
}

lv_posting *lv_posting_find(lv_account *a, const char *id)
{
    return lb_map_get(&a->posting_by_id, id);
}

lv_webhook *lv_hook_find(lv_account *a, const char *id, size_t *index)
{
    for (size_t i = 0; i < a->hooks.n; i++)
        if (strcmp(a->hooks.v[i]->id, id) == 0) {
            if (index != NULL) *index = i;
            return a->hooks.v[i];
        }
    return NULL;
}

void lv_hook_free(lv_webhook *w)
{
    lb_free(w->id);
    lb_free(w->url);
    lb_free(w->event);
    lb_free(w->token);
    if (w->conditions) yajl_tree_free(w->conditions);
    lb_free(w);
}

static void opp_free(lv_opp *o)
{
    lb_free(o->id);
    lb_free(o->candidate_id);
    lb_free(o->contact);
    lb_free(o->name);
    lb_free(o->headline);
    lb_free(o->location);
    lb_free(o->origin);
    lb_free(o->stage);
    lb_free(o->archive_reason);
    sim_strv_free(&o->emails);
    sim_strv_free(&o->phones);
    sim_strv_free(&o->tags);
    sim_strv_free(&o->sources);
    for (size_t i = 0; i < o->apps.n; i++) {
        lb_free(o->apps.v[i].id);
        lb_free(o->apps.v[i].posting);
    }
    SIM_VEC_FREE(o->apps);
    for (size_t i = 0; i < o->notes.n; i++) {
        lb_free(o->notes.v[i].id);
        lb_free(o->notes.v[i].value);
        lb_free(o->notes.v[i].author);
    }
    SIM_VEC_FREE(o->notes);
    for (size_t i = 0; i < o->changes.n; i++) {
        lb_free(o->changes.v[i].to);
        lb_free(o->changes.v[i].user);
    }
    SIM_VEC_FREE(o->changes);
    lb_free(o);
}

static void account_free(lv_account *a)
{
    for (size_t i = 0; i < a->stages.n; i++) {
        lb_free(a->stages.v[i]->id);
        lb_free(a->stages.v[i]->text);
        lb_free(a->stages.v[i]);
    }
    SIM_VEC_FREE(a->stages);
    for (size_t i = 0; i < a->postings.n; i++) {
        lv_posting *p = a->postings.v[i];
        lb_free(p->id);
        lb_free(p->text);
        lb_free(p->state);
        if (p->extra) yajl_tree_free(p->extra);
        lb_free(p);
    }
    SIM_VEC_FREE(a->postings);
    for (size_t i = 0; i < a->opps.n; i++)
        opp_free(a->opps.v[i]);
    SIM_VEC_FREE(a->opps);
    for (size_t i = 0; i < a->hooks.n; i++)
        lv_hook_free(a->hooks.v[i]);
    SIM_VEC_FREE(a->hooks);
    lb_map_free(&a->stage_by_id);
    lb_map_free(&a->posting_by_id);
    lb_map_free(&a->opp_by_id);
    lb_free(a->name);
    lb_free(a);
}

void lv_sim_init(lv_sim *s)
{
    lb_map_init(&s->accounts);
    lb_map_init(&s->keys);
    lb_map_init(&s->clients);
    lb_map_init(&s->grants);
    lb_map_init(&s->access);
    lb_map_init(&s->refresh);
    lb_map_init(&s->codes);
    lv_account_get(s, "default", 1);
}

static void stats_free(lv_stats *st)
{
    sim_window_free(&st->all);
    sim_window_free(&st->accepted);
}

void lv_sim_free(lv_sim *s)
{
    for (size_t i = 0; i < s->account_list.n; i++)
        account_free(s->account_list.v[i]);
    SIM_VEC_FREE(s->account_list);
    for (size_t i = 0; i < s->key_list.n; i++) {
        lb_free(s->key_list.v[i]->key);
        stats_free(&s->key_list.v[i]->stats);
        lb_free(s->key_list.v[i]);
    }
    SIM_VEC_FREE(s->key_list);
    for (size_t i = 0; i < s->client_list.n; i++) {
        lv_client *c = s->client_list.v[i];
        lb_free(c->client_id);
        lb_free(c->secret);
        lb_free(c->account);
        sim_strv_free(&c->redirect_uris);
        lb_free(c);
    }
    SIM_VEC_FREE(s->client_list);
    for (size_t i = 0; i < s->grant_list.n; i++) {
        lv_grant *g = s->grant_list.v[i];
        lb_free(g->id);
        lb_free(g->scope);
        lb_free(g->refresh);
        sim_strv_free(&g->old_refresh);
        stats_free(&g->stats);
        lb_free(g);
    }
    SIM_VEC_FREE(s->grant_list);
    for (size_t i = 0; i < s->access.cap; i++) {
        lv_access *t = s->access.slots[i].key ? s->access.slots[i].value : NULL;
        if (t != NULL) {
            lb_free(t->token);
            lb_free(t);
        }
    }
    for (size_t i = 0; i < s->codes.cap; i++) {
        lv_code *c = s->codes.slots[i].key ? s->codes.slots[i].value : NULL;
        if (c != NULL) {
            lb_free(c->code);
            lb_free(c->redirect_uri);
            lb_free(c->scope);
            lb_free(c);
        }
    }
    lb_map_free(&s->accounts);
    lb_map_free(&s->keys);
    lb_map_free(&s->clients);
    lb_map_free(&s->grants);
    lb_map_free(&s->access);
    lb_map_free(&s->refresh);
    lb_map_free(&s->codes);
    sim_strv_free(&s->finished);
}

/* ---- Lever's JSON shapes ---------------------------------------------------------- */

static void gen_strv(yajl_gen g, const char *key, const sim_strv *v)
{
    lb_json_key(g, key);
    yajl_gen_array_open(g);
    for (size_t i = 0; i < v->n; i++)
        lb_json_str(g, v->v[i]);
    yajl_gen_array_close(g);
}

static void gen_phones(yajl_gen g, const sim_strv *v)
{
    lb_json_key(g, "phones");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < v->n; i++) {
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "type", "mobile");
        lb_json_kv_str(g, "value", v->v[i]);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
}

void lv_gen_app(yajl_gen g, const lv_opp *o, const lv_app *ap)
{
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "id", ap->id);
    lb_json_kv_str(g, "opportunityId", o->id);
    lb_json_kv_str(g, "candidateId", o->candidate_id);
    lb_json_kv_int(g, "createdAt", ap->created);
    lb_json_kv_str(g, "type", "posting");
    lb_json_kv_str(g, "posting", ap->posting);
    lb_json_kv_null(g, "postingHiringManager");
    lb_json_kv_null(g, "postingOwner");
    lb_json_kv_null(g, "user");
    lb_json_kv_str(g, "name", o->name);
    lb_json_kv_str(g, "email", o->emails.n ? o->emails.v[0] : NULL);
    lb_json_kv_null(g, "phone");
    lb_json_kv_null(g, "archived");
    yajl_gen_map_close(g);
}

void lv_gen_opp(yajl_gen g, lv_account *a, const lv_opp *o, int expand)
{
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "id", o->id);
    lb_json_kv_str(g, "name", o->name);
    lb_json_kv_str(g, "headline", o->headline ? o->headline : "");
    if (expand & LV_EXPAND_CONTACT) {
        lb_json_key(g, "contact");
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "id", o->contact);
        lb_json_kv_str(g, "name", o->name);
        lb_json_kv_str(g, "headline", o->headline ? o->headline : "");
        lb_json_kv_bool(g, "isAnonymized", 0);
        lb_json_key(g, "location");
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "name", o->location);
        yajl_gen_map_close(g);
        gen_strv(g, "emails", &o->emails);
        gen_phones(g, &o->phones);
        yajl_gen_map_close(g);
    } else {
        lb_json_kv_str(g, "contact", o->contact);
    }
    gen_strv(g, "emails", &o->emails);
    gen_phones(g, &o->phones);
    lb_json_kv_str(g, "confidentiality", "non-confidential");
    lb_json_kv_str(g, "location", o->location ? o->location : "");
    lv_stage *st = o->stage ? lv_stage_find(a, o->stage) : NULL;
    if ((expand & LV_EXPAND_STAGE) && st != NULL) {
        lb_json_key(g, "stage");
        lv_gen_stage(g, st);
    } else {
        lb_json_kv_str(g, "stage", o->stage);
    }
    lb_json_key(g, "stageChanges");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < o->changes.n; i++) {
        const lv_change *c = &o->changes.v[i];
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "toStageId", c->to);
        lb_json_kv_int(g, "toStageIndex", c->index);
        lb_json_kv_int(g, "updatedAt", c->at);
        lb_json_kv_str(g, "userId", c->user);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    lb_json_kv_str(g, "origin", o->origin ? o->origin : "applied");
    gen_strv(g, "sources", &o->sources);
    lb_json_kv_null(g, "owner");
    lb_json_key(g, "followers");
    yajl_gen_array_open(g);
    yajl_gen_array_close(g);
    gen_strv(g, "tags", &o->tags);
    lb_json_key(g, "applications");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < o->apps.n; i++) {
        if (expand & LV_EXPAND_APPS)
            lv_gen_app(g, o, &o->apps.v[i]);
        else
            lb_json_str(g, o->apps.v[i].id);
    }
    yajl_gen_array_close(g);
    if (o->archived) {
        lb_json_key(g, "archived");
        yajl_gen_map_open(g);
        lb_json_kv_int(g, "archivedAt", o->archived_at);
        lb_json_kv_str(g, "reason", o->archive_reason ? o->archive_reason : "archived");
        yajl_gen_map_close(g);
    } else {
        lb_json_kv_null(g, "archived");
    }
    lb_json_kv_int(g, "createdAt", o->created);
    lb_json_kv_int(g, "updatedAt", o->updated);
    lb_json_kv_int(g, "lastInteractionAt", o->updated);
    lb_json_kv_int(g, "lastAdvancedAt", o->advanced);
    lb_json_kv_null(g, "snoozedUntil");
    lb_json_kv_bool(g, "isAnonymized", 0);
    yajl_gen_map_close(g);
}

void lv_gen_note(yajl_gen g, const lv_note *n)
{
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "id", n->id);
    lb_json_kv_str(g, "text", "Note");
    lb_json_key(g, "fields");
    yajl_gen_array_open(g);
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "type", "note");
    lb_json_kv_str(g, "text", "Note");
    lb_json_kv_str(g, "value", n->value);
    yajl_gen_map_close(g);
    if (n->has_score) {
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "type", "score");
        lb_json_kv_str(g, "text", "Rating");
        lb_json_kv_int(g, "value", n->score);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    lb_json_kv_null(g, "user");
    lb_json_kv_bool(g, "secret", n->secret);
    lb_json_kv_int(g, "completedAt", n->created);
    lb_json_kv_int(g, "createdAt", n->created);
    lb_json_kv_null(g, "deletedAt");
    yajl_gen_map_close(g);
}

void lv_gen_stage(yajl_gen g, const lv_stage *st)
{
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "id", st->id);
    lb_json_kv_str(g, "text", st->text);
    yajl_gen_map_close(g);
}

void lv_gen_posting(yajl_gen g, const lv_posting *p)
{
    static const char *const own[] = {"id", "text", "state", "createdAt", "updatedAt"};
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "id", p->id);
    lb_json_kv_str(g, "text", p->text);
    lb_json_kv_str(g, "state", p->state);
    lb_json_kv_int(g, "createdAt", p->created);
    lb_json_kv_int(g, "updatedAt", p->updated);
    int has_categories = 0;
    if (p->extra != NULL) {
        for (size_t i = 0; i < p->extra->u.object.len; i++) {
            const char *k = p->extra->u.object.keys[i];
            int skip = 0;
            for (size_t j = 0; j < LB_COUNTOF(own); j++)
                skip |= strcmp(k, own[j]) == 0;
            if (skip) continue;
            has_categories |= strcmp(k, "categories") == 0;
            lb_json_key(g, k);
            sim_json_emit(g, p->extra->u.object.values[i]);
        }
    }
    if (!has_categories) {
        lb_json_key(g, "categories");
        yajl_gen_map_open(g);
        lb_json_kv_null(g, "team");
        lb_json_kv_null(g, "location");
        lb_json_kv_null(g, "commitment");
        yajl_gen_map_close(g);
    }
    yajl_gen_map_close(g);
}

void lv_gen_hook(yajl_gen g, const lv_webhook *w, int with_token)
{
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "id", w->id);
    lb_json_kv_str(g, "url", w->url);
    lb_json_kv_str(g, "event", w->event);
    lb_json_kv_int(g, "createdAt", w->created);
    lb_json_kv_int(g, "updatedAt", w->updated);
    lb_json_key(g, "configuration");
    yajl_gen_map_open(g);
    if (w->conditions != NULL) {
        lb_json_key(g, "conditions");
        sim_json_emit(g, w->conditions);
    }
    if (with_token) lb_json_kv_str(g, "signatureToken", w->token);
    yajl_gen_map_close(g);
    yajl_gen_map_close(g);
}

/* ---- seeding --------------------------------------------------------------------- */

static const char *const hook_events[] = {
    "applicationCreated", "candidateHired",   "candidateStageChange", "candidateArchiveChange",
    "candidateDeleted",   "interviewCreated", "interviewUpdated",     "interviewDeleted",
    "contactCreated",     "contactUpdated",
};

static char *id_or_new(yajl_val o)
{
    const char *id = YAJL_IS_OBJECT(o) ? sim_json_str(o, "id") : NULL;
    return id && *id ? lb_strdup(id) : lv_new_id();
}

static int64_t time_member(yajl_val o, const char *key, int64_t def)
{
    int64_t v;
    if (lb_json_get_int(o, key, &v) == 0) return v;
    const char *s = sim_json_str(o, key);
    if (s != NULL && lb_time_parse(s, strlen(s), &v) == 0) return v;
    return def;
}

lv_stage *lv_seed_stage(lv_account *a, yajl_val o, char *msg, size_t msz)
{
    const char *text = YAJL_IS_STRING(o) ? o->u.string : sim_json_str(o, "text");
    if (text == NULL || !*text) {
        snprintf(msg, msz, "a stage needs \"text\"");
        return NULL;
    }
    char *id = id_or_new(o);
    if (lv_stage_find(a, id) != NULL) {
        snprintf(msg, msz, "stage %s exists", id);
        lb_free(id);
        return NULL;
    }
    lv_stage *st = LB_NEW(lv_stage);
    st->id = id;
    st->text = lb_strdup(text);
    SIM_PUSH(a->stages, st);
    lb_map_put(&a->stage_by_id, st->id, st);
    return st;
}

lv_posting *lv_seed_posting(lv_account *a, yajl_val o, char *msg, size_t msz)
{
    const char *text = YAJL_IS_STRING(o) ? o->u.string : sim_json_str(o, "text");
    if (text == NULL || !*text) {
        snprintf(msg, msz, "a posting needs \"text\"");
        return NULL;
    }
    char *id = id_or_new(o);
    if (lv_posting_find(a, id) != NULL) {
        snprintf(msg, msz, "posting %s exists", id);
        lb_free(id);
        return NULL;
    }
    int64_t now = lb_time_now_ms();
    lv_posting *p = LB_NEW(lv_posting);
    p->id = id;
    p->text = lb_strdup(text);
    const char *state = YAJL_IS_OBJECT(o) ? sim_json_str(o, "state") : NULL;
    p->state = lb_strdup(state ? state : "published");
    p->created = YAJL_IS_OBJECT(o) ? time_member(o, "createdAt", now) : now;
    p->updated = YAJL_IS_OBJECT(o) ? time_member(o, "updatedAt", p->created) : now;
    p->extra = YAJL_IS_OBJECT(o) ? sim_json_clone(o) : NULL;
    SIM_PUSH(a->postings, p);
    lb_map_put(&a->posting_by_id, p->id, p);
    return p;
}

/* A stage or posting by id, else by text. */
static lv_stage *stage_ref(lv_account *a, const char *ref)
{
    lv_stage *st = lv_stage_find(a, ref);
    for (size_t i = 0; st == NULL && i < a->stages.n; i++)
        if (strcmp(a->stages.v[i]->text, ref) == 0) st = a->stages.v[i];
    return st;
}

static lv_posting *posting_ref(lv_account *a, const char *ref)
{
    lv_posting *p = lv_posting_find(a, ref);
    for (size_t i = 0; p == NULL && i < a->postings.n; i++)
        if (strcmp(a->postings.v[i]->text, ref) == 0) p = a->postings.v[i];
    return p;
}

static int strv_member(sim_strv *out, yajl_val o, const char *key, const char *single)
{
    yajl_val v = lb_json_get(o, key);
    if (v != NULL && !YAJL_IS_NULL(v)) {
        if (!YAJL_IS_ARRAY(v)) return -1;
        for (size_t i = 0; i < v->u.array.len; i++) {
            yajl_val e = v->u.array.values[i];
            const char *s = YAJL_IS_STRING(e) ? e->u.string : sim_json_str(e, "value");
            if (s == NULL) return -1;
            sim_strv_add_unique(out, s);
        }
    }
    const char *one = single ? sim_json_str(o, single) : NULL;
    if (one != NULL) sim_strv_add_unique(out, one);
    return 0;
}

lv_note *lv_note_add(lv_opp *o, const char *value, int api)
{
    lv_note n = {0};
    n.id = lv_new_id();
    n.value = lb_strdup(value);
    n.api = api;
    n.created = n.updated = lb_time_now_ms();
    SIM_PUSH(o->notes, n);
    return &o->notes.v[o->notes.n - 1];
}

static void app_add(lv_opp *o, const char *posting, const char *id, int64_t created)
{
    lv_app ap = {
        .id = id ? lb_strdup(id) : lv_new_id(), .posting = lb_strdup(posting), .created = created};
    SIM_PUSH(o->apps, ap);
}

lv_opp *lv_seed_opp(lv_account *a, yajl_val o, char *msg, size_t msz)
{
    if (!YAJL_IS_OBJECT(o)) {
        snprintf(msg, msz, "an opportunity must be an object");
        return NULL;
    }
    char *id = id_or_new(o);
    const char *cand = sim_json_str(o, "candidateId");
    if (lv_opp_find(a, id) != NULL || (cand && lv_opp_find(a, cand) != NULL)) {
        snprintf(msg, msz, "opportunity %s exists", id);
        lb_free(id);
        return NULL;
    }
    int64_t now = lb_time_now_ms();
    lv_opp *op = LB_NEW(lv_opp);
    op->id = id;
    op->candidate_id = lb_strdup(cand ? cand : id);
    const char *contact = sim_json_str(o, "contact");
    op->contact = contact ? lb_strdup(contact) : lv_new_id();
    const char *name = sim_json_str(o, "name");
    op->name = lb_strdup(name ? name : "Unnamed Candidate");
    const char *s;
    op->headline = (s = sim_json_str(o, "headline")) ? lb_strdup(s) : NULL;
    op->location = (s = sim_json_str(o, "location")) ? lb_strdup(s) : NULL;
    op->origin = (s = sim_json_str(o, "origin")) ? lb_strdup(s) : NULL;
    op->created = time_member(o, "createdAt", now);
    op->updated = time_member(o, "updatedAt", op->created);
    op->advanced = time_member(o, "lastAdvancedAt", op->created);
    if (strv_member(&op->emails, o, "emails", "email") != 0 ||
        strv_member(&op->phones, o, "phones", "phone") != 0 ||
        strv_member(&op->tags, o, "tags", NULL) != 0 ||
        strv_member(&op->sources, o, "sources", NULL) != 0) {
        snprintf(msg, msz, "emails, phones, tags and sources must be lists of strings");
        goto bad;
    }
    const char *stage = sim_json_str(o, "stage");
    if (stage != NULL) {
        lv_stage *st = stage_ref(a, stage);
        if (st == NULL) {
            snprintf(msg, msz, "unknown stage %s", stage);
            goto bad;
        }
        op->stage = lb_strdup(st->id);
    } else if (a->stages.n > 0) {
        op->stage = lb_strdup(a->stages.v[0]->id);
    }
    if (op->stage != NULL) {
        lv_change c = {
            .to = lb_strdup(op->stage), .index = lv_stage_index(a, op->stage), .at = op->advanced};
        SIM_PUSH(op->changes, c);
    }
    yajl_val apps = lb_json_get_array(o, "applications");
    const char *one = sim_json_str(o, "posting");
    if (one != NULL) {
        lv_posting *p = posting_ref(a, one);
        if (p == NULL) {
            snprintf(msg, msz, "unknown posting %s", one);
            goto bad;
        }
        app_add(op, p->id, NULL, op->created);
    }
    for (size_t i = 0; apps != NULL && i < apps->u.array.len; i++) {
        yajl_val e = apps->u.array.values[i];
        const char *ref = YAJL_IS_STRING(e) ? e->u.string : sim_json_str(e, "posting");
        lv_posting *p = ref ? posting_ref(a, ref) : NULL;
        if (p == NULL) {
            snprintf(msg, msz, "unknown posting %s", ref ? ref : "(missing)");
            goto bad;
        }
        app_add(op, p->id, YAJL_IS_OBJECT(e) ? sim_json_str(e, "id") : NULL, op->created);
    }
    yajl_val arch = lb_json_get(o, "archived");
    if (YAJL_IS_TRUE(arch) || YAJL_IS_OBJECT(arch)) {
        op->archived = 1;
        op->archived_at = now;
        const char *reason = YAJL_IS_OBJECT(arch) ? sim_json_str(arch, "reason") : NULL;
        op->archive_reason = reason ? lb_strdup(reason) : NULL;
    }
    yajl_val notes = lb_json_get_array(o, "notes");
    for (size_t i = 0; notes != NULL && i < notes->u.array.len; i++) {
        yajl_val e = notes->u.array.values[i];
        const char *v = YAJL_IS_STRING(e) ? e->u.string : sim_json_str(e, "value");
        if (v == NULL) {
            snprintf(msg, msz, "a note needs \"value\"");
            goto bad;
        }
        lv_note *n = lv_note_add(op, v, YAJL_IS_OBJECT(e) ? sim_json_bool(e, "api", 0) : 0);
        n->secret = YAJL_IS_OBJECT(e) ? sim_json_bool(e, "secret", 0) : 0;
    }
    SIM_PUSH(a->opps, op);
    lb_map_put(&a->opp_by_id, op->id, op);
    if (strcmp(op->candidate_id, op->id) != 0) lb_map_put(&a->opp_by_id, op->candidate_id, op);
    return op;
bad:
    opp_free(op);
    return NULL;
}

int lv_opp_update(lv_account *a, lv_opp *o, yajl_val body, char *msg, size_t msz)
{
    int64_t now = lb_time_now_ms();
    const char *stage = sim_json_str(body, "stage");
    yajl_val arch = lb_json_get(body, "archived");
    lv_stage *st = stage != NULL ? stage_ref(a, stage) : NULL;
    if (stage != NULL && st == NULL) {
        snprintf(msg, msz, "unknown stage %s", stage);
        return -1;
    }
    if (arch != NULL && !YAJL_IS_TRUE(arch) && !YAJL_IS_FALSE(arch) && !YAJL_IS_OBJECT(arch)) {
        snprintf(msg, msz, "archived must be true, false or {\"reason\"}");
        return -1;
    }
    if (st != NULL && (o->stage == NULL || strcmp(o->stage, st->id) != 0)) {
        lb_free(o->stage);
        o->stage = lb_strdup(st->id);
        const char *user = sim_json_str(body, "user");
        lv_change c = {.to = lb_strdup(st->id),
                       .index = lv_stage_index(a, st->id),
                       .at = now,
                       .user = user ? lb_strdup(user) : NULL};
        SIM_PUSH(o->changes, c);
        o->advanced = now;
    }
    if (arch != NULL) {
        lb_free(o->archive_reason);
        o->archive_reason = NULL;
        o->archived = !YAJL_IS_FALSE(arch);
        o->archived_at = o->archived ? now : 0;
        const char *reason = YAJL_IS_OBJECT(arch) ? sim_json_str(arch, "reason") : NULL;
        if (reason != NULL) o->archive_reason = lb_strdup(reason);
    }
    o->updated = now;
    return 0;
}

lv_webhook *lv_seed_hook(lv_account *a, yajl_val o, int api, char *msg, size_t msz)
{
    const char *url = sim_json_str(o, "url");
    const char *event = sim_json_str(o, "event");
    if (url == NULL || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)) {
        snprintf(msg, msz, "url must be an http(s) URL");
        return NULL;
    }
    int known = 0;
    for (size_t i = 0; event != NULL && i < LB_COUNTOF(hook_events); i++)
        known |= strcmp(event, hook_events[i]) == 0;
    if (!known) {
        snprintf(msg, msz, "event must be one of Lever's webhook events");
        return NULL;
    }
    yajl_val conf = lb_json_get(o, "configuration");
    yajl_val cond = NULL;
    if (conf != NULL && !YAJL_IS_NULL(conf)) {
        if (!YAJL_IS_OBJECT(conf)) {
            snprintf(msg, msz, "configuration must be an object");
            return NULL;
        }
        cond = lb_json_get(conf, "conditions");
        if (cond != NULL && !YAJL_IS_OBJECT(cond) && !YAJL_IS_NULL(cond)) {
            snprintf(msg, msz, "configuration.conditions must be an object");
            return NULL;
        }
        if (YAJL_IS_NULL(cond)) cond = NULL;
    }
    char *id = api ? lv_new_id() : id_or_new(o);
    if (lv_hook_find(a, id, NULL) != NULL) {
        snprintf(msg, msz, "webhook %s exists", id);
        lb_free(id);
        return NULL;
    }
    lv_webhook *w = LB_NEW(lv_webhook);
    w->id = id;
    w->url = lb_strdup(url);
    w->event = lb_strdup(event);
    const char *tok = api ? NULL : sim_json_str(o, "signatureToken");
    if (tok == NULL && conf != NULL && !api) tok = sim_json_str(conf, "signatureToken");
    if (tok != NULL) {
        w->token = lb_strdup(tok);
    } else {
        char t[41];
        sim_random_chars(t, 40);
        w->token = lb_strdup(t);
    }
    w->conditions = cond ? sim_json_clone(cond) : NULL;
    w->api = api;
    w->created = w->updated = lb_time_now_ms();
    SIM_PUSH(a->hooks, w);
    return w;
}

void lv_generate(lv_account *a, int64_t stages, int64_t postings, int64_t opps)
{
    static const char *const names[] = {
        "New lead",         "Reached out",     "Responded",  "New applicant",
        "Recruiter screen", "Phone interview", "Assessment", "On-site interview",
        "Reference check",  "Offer",           "Hired",
    };
    char msg[128], text[96];
    for (int64_t i = 0; i < stages; i++) {
        if ((size_t)i < LB_COUNTOF(names))
            snprintf(text, sizeof(text), "%s", names[i]);
        else
            snprintf(text, sizeof(text), "Stage %lld", (long long)i + 1);
        lv_seed_stage(a, &(struct yajl_val_s){.type = yajl_t_string, .u.string = text}, msg,
                      sizeof(msg));
    }
    for (int64_t i = 0; i < postings; i++) {
        snprintf(text, sizeof(text), "Software Engineer %llu", (unsigned long long)++a->gen_seq);
        lv_seed_posting(a, &(struct yajl_val_s){.type = yajl_t_string, .u.string = text}, msg,
                        sizeof(msg));
    }
    int64_t now = lb_time_now_ms();
    for (int64_t i = 0; i < opps; i++) {
        uint64_t n = ++a->gen_seq;
        lv_opp *op = LB_NEW(lv_opp);
        op->id = lv_new_id();
        op->candidate_id = lb_strdup(op->id);
        op->contact = lv_new_id();
        snprintf(text, sizeof(text), "Candidate %llu", (unsigned long long)n);
        op->name = lb_strdup(text);
        snprintf(text, sizeof(text), "candidate%llu@example.com", (unsigned long long)n);
        SIM_PUSH(op->emails, lb_strdup(text));
        op->created = op->updated = op->advanced = now;
        if (a->stages.n > 0) {
            op->stage = lb_strdup(a->stages.v[0]->id);
            lv_change c = {.to = lb_strdup(op->stage), .index = 0, .at = now};
            SIM_PUSH(op->changes, c);
        }
        if (a->postings.n > 0) app_add(op, a->postings.v[(size_t)i % a->postings.n]->id, NULL, now);
        SIM_PUSH(a->opps, op);
        lb_map_put(&a->opp_by_id, op->id, op);
    }
}

static void gen_ids_open(yajl_gen out, const char *key)
{
    if (out != NULL) {
        lb_json_key(out, key);
        yajl_gen_array_open(out);
    }
}

static void gen_ids_close(yajl_gen out)
{
    if (out != NULL) yajl_gen_array_close(out);
}

int lv_seed_doc(lv_sim *s, yajl_val doc, yajl_gen out, char *msg, size_t msz)
{
    if (!YAJL_IS_OBJECT(doc)) {
        snprintf(msg, msz, "the seed document must be an object");
        return -1;
    }
    const char *acct = sim_json_str(doc, "account");
    lv_account *a = lv_account_get(s, acct ? acct : "default", 1);
    if (out != NULL) lb_json_kv_str(out, "account", a->name);
    static const char *const kinds[] = {"stages", "postings", "opportunities", "webhooks"};
    for (size_t k = 0; k < LB_COUNTOF(kinds); k++) {
        yajl_val list = lb_json_get(doc, kinds[k]);
        if (list == NULL) continue;
        if (!YAJL_IS_ARRAY(list)) {
            snprintf(msg, msz, "%s must be a list", kinds[k]);
            return -1;
        }
        gen_ids_open(out, kinds[k]);
        for (size_t i = 0; i < list->u.array.len; i++) {
            yajl_val o = list->u.array.values[i];
            const char *id = NULL;
            switch (k) {
            case 0: {
                lv_stage *st = lv_seed_stage(a, o, msg, msz);
                id = st ? st->id : NULL;
                break;
            }
            case 1: {
                lv_posting *p = lv_seed_posting(a, o, msg, msz);
                id = p ? p->id : NULL;
                break;
            }
            case 2: {
                lv_opp *op = lv_seed_opp(a, o, msg, msz);
                id = op ? op->id : NULL;
                break;
            }
            default: {
                lv_webhook *w = lv_seed_hook(a, o, sim_json_bool(o, "api", 0), msg, msz);
                id = w ? w->id : NULL;
                break;
            }
            }
            if (id == NULL) return -1;
            if (out != NULL) lb_json_str(out, id);
        }
        gen_ids_close(out);
    }
    yajl_val gen = lb_json_get_obj(doc, "generate");
    if (gen != NULL) {
        int64_t ns = 0, np = 0, no = 0;
        lb_json_get_int(gen, "stages", &ns);
        lb_json_get_int(gen, "postings", &np);
        lb_json_get_int(gen, "opportunities", &no);
        if (ns < 0 || np < 0 || no < 0 || ns > 1000 || np > 100000 || no > 10000000) {
            snprintf(msg, msz, "generate: counts out of range");
            return -1;
        }
        lv_generate(a, ns, np, no);
    }
    yajl_val keys = lb_json_get(doc, "keys");
    if (keys != NULL) {
        if (!YAJL_IS_ARRAY(keys)) {
            snprintf(msg, msz, "keys must be a list");
            return -1;
        }
        gen_ids_open(out, "keys");
        for (size_t i = 0; i < keys->u.array.len; i++) {
            lv_key *k = lv_key_put(s, a->name, keys->u.array.values[i], msg, msz);
            if (k == NULL) return -1;
            if (out != NULL) lb_json_str(out, k->key);
        }
        gen_ids_close(out);
    }
    return 0;
}
