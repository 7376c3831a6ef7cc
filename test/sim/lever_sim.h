/* lever-sim: Lever's Data API (/v1), its OAuth server and its webhook
 * deliveries, simulated in memory for the integration tests and benchmarks.
 * See README.md for the behaviour and the control API.
 *
 * Ownership: one lv_sim per process (in main) owns every account, key,
 * OAuth client, grant, token and delivery; nothing is ever shared with
 * another thread. Accounts own their stages, postings, opportunities and
 * webhooks. Objects are freed only by POST /_sim/reset or at exit. */
#ifndef LB_LEVER_SIM_H
#define LB_LEVER_SIM_H

#include "core/map.h"
#include "sim.h"

#include <stdint.h>

/* ---- permissions (Lever's words) ------------------------------------------ */

enum {
    LV_P_FIND_OPP,
    LV_P_FIND_ALL_OPPS,
    LV_P_FIND_CAND,
    LV_P_FIND_ALL_CANDS,
    LV_P_FIND_OPP_APP,
    LV_P_FIND_ALL_OPP_APPS,
    LV_P_FIND_ALL_CAND_APPS,
    LV_P_FIND_OPP_NOTE,
    LV_P_FIND_ALL_OPP_NOTES,
    LV_P_CREATE_OPP_NOTE,
    LV_P_UPDATE_OPP_NOTE,
    LV_P_CREATE_CAND_NOTE,
    LV_P_FIND_ALL_TAGS,
    LV_P_ADD_OPP_TAGS,
    LV_P_REMOVE_OPP_TAGS,
    LV_P_ADD_CAND_TAGS,
    LV_P_FIND_STAGE,
    LV_P_FIND_ALL_STAGES,
    LV_P_FIND_POSTING,
    LV_P_FIND_ALL_POSTINGS,
    LV_P_UPDATE_OPP_STAGE,
    LV_P_UPDATE_CAND_STAGE,
    LV_P_FIND_ALL_WEBHOOKS,
    LV_P_ADD_WEBHOOK,
    LV_P_UPDATE_WEBHOOK,
    LV_P_DELETE_WEBHOOK,
    LV_P_COUNT
};
#define LV_PERM(p) ((uint64_t)1 << (p))
#define LV_PERMS_ALL (LV_PERM(LV_P_COUNT) - 1)

extern const char *const lv_perm_names[LV_P_COUNT];
/* Index of a permission by its words (case-insensitive), or -1. */
int lv_perm_find(const char *words);
/* Permissions from "all", a list of words, or {"all":true,"except":[...]}:
 * 0 and *out, or -1 with the unknown words in bad. */
int lv_perms_parse(yajl_val v, yajl_val except, uint64_t *out, char *bad, size_t badsz);
void lv_perms_gen(yajl_gen g, uint64_t perms);
/* Permissions granted by an OAuth scope string (space separated). */
uint64_t lv_scope_perms(const char *scope, int *offline);

/* ---- rate limiting and statistics ------------------------------------------- */

typedef struct {
    double tokens;
    uint64_t last_ns;
    int init;
} lv_bucket;

typedef struct {
    uint64_t requests, ok, c4xx, c5xx, r401, r403, r404, r429;
    sim_window all, accepted;
    int64_t first_ms, last_ms;
} lv_stats;

/* ---- Lever's objects ------------------------------------------------------------ */

typedef struct {
    char *id, *text;
} lv_stage;

typedef struct {
    char *id, *text, *state;
    int64_t created, updated;
    yajl_val extra; /* other seeded fields (an object, owned) or NULL */
} lv_posting;

typedef struct {
    char *id, *posting;
    int64_t created;
} lv_app;

typedef struct {
    char *id, *value;
    int secret, has_score, api, notify;
    int64_t score, created, updated;
    char *author; /* key or "oauth:<client>" that wrote it, or NULL */
} lv_note;

typedef struct {
    char *to;
    int index;
    int64_t at;
    char *user;
} lv_change;

typedef struct {
    char *id, *candidate_id, *contact, *name, *headline, *location, *origin;
    sim_strv emails, phones, tags, sources;
    char *stage;
    SIM_VEC(lv_app) apps;
    SIM_VEC(lv_note) notes;
    SIM_VEC(lv_change) changes;
    int archived;
    char *archive_reason;
    int64_t archived_at, created, updated, advanced;
} lv_opp;

typedef struct {
    char *id, *url, *event, *token;
    yajl_val conditions; /* configuration.conditions (owned) or NULL */
    int api;
    int64_t created, updated;
} lv_webhook;

typedef struct {
    char *name;
    SIM_VEC(lv_stage *) stages;
    lb_map stage_by_id;
    SIM_VEC(lv_posting *) postings;
    lb_map posting_by_id;
    SIM_VEC(lv_opp *) opps;
    lb_map opp_by_id; /* ids and candidate ids */
    SIM_VEC(lv_webhook *) hooks;
    int webhook_nested;     /* POST /webhooks answers {"data":{"data":{...}}} */
    int deliveries_enabled; /* the "Candidate state change" toggle */
    uint64_t gen_seq;
} lv_account;

/* ---- credentials -------------------------------------------------------------- */

typedef struct {
    char *key;
    int postings; /* a Postings API key */
    uint64_t perms;
    lv_account *account;
    double rate; /* < 0: the global default */
    int burst;   /* < 0: the global default */
    int revoked;
    lv_bucket bucket;
    lv_stats stats;
} lv_key;

typedef struct {
    char *client_id, *secret, *account;
    sim_strv redirect_uris; /* empty: any */
    int64_t access_ttl_ms;
    int deny, check_audience, reuse_detection;
    int invalid_grant_status;
    uint64_t default_perms;
    double rate;
    int burst;
} lv_client;

typedef struct {
    char *id;
    lv_client *client;
    lv_account *account;
    uint64_t perms;
    char *scope;
    char *refresh;        /* the current refresh token, or NULL */
    sim_strv old_refresh; /* rotated ones (keys of lv_sim.refresh) */
    int revoked, offline;
    int64_t created, refreshed;
    uint64_t refreshes;
    lv_bucket bucket;
    lv_stats stats;
} lv_grant;

typedef struct {
    char *token;
    lv_grant *grant;
    int64_t expires_ms; /* wall clock */
} lv_access;

typedef struct {
    char *code, *redirect_uri;
    lv_client *client;
    lv_account *account;
    uint64_t perms;
    char *scope;
    int offline, used;
    int64_t expires_ms;
} lv_code;

typedef struct lv_delivery lv_delivery;

typedef struct lv_sim {
    sim_app app;
    lb_map accounts;
    SIM_VEC(lv_account *) account_list;
    lb_map keys;
    SIM_VEC(lv_key *) key_list;
    lb_map clients;
    SIM_VEC(lv_client *) client_list;
    SIM_VEC(lv_grant *) grant_list;
    lb_map grants;  /* id -> grant */
    lb_map access;  /* token -> lv_access (owned) */
    lb_map refresh; /* refresh token (current or rotated) -> grant */
    lb_map codes;   /* code -> lv_code (owned) */
    double rate;    /* default for keys and grants; 0: unlimited */
    int burst;
    char *retry_after_429; /* Retry-After on rate-limit 429s, or NULL */
    char *audience;        /* expected audience */
    uint64_t unauthenticated;
    uint64_t grant_seq;
    lv_delivery *deliveries; /* running */
    sim_strv finished;       /* rendered results of finished deliveries */
    uint64_t delivery_seq;
    uint64_t deliveries_sent;
    SIM_VEC(void *) owned; /* route data, freed at exit */
} lv_sim;

/* ---- lever_state.c ------------------------------------------------------------ */

lv_account *lv_account_get(lv_sim *s, const char *name, int create);
void lv_sim_init(lv_sim *s);
void lv_sim_free(lv_sim *s); /* everything but the app */
void lv_stats_count(lv_stats *st, int accepted);
void lv_stats_status(lv_stats *st, int status);
void lv_stats_gen(yajl_gen g, const lv_stats *st);

lv_opp *lv_opp_find(lv_account *a, const char *id);
lv_stage *lv_stage_find(lv_account *a, const char *id);
int lv_stage_index(lv_account *a, const char *id);
lv_posting *lv_posting_find(lv_account *a, const char *id);
lv_webhook *lv_hook_find(lv_account *a, const char *id, size_t *index);
void lv_hook_free(lv_webhook *w);

/* Emitters of Lever's JSON shapes. expand: LV_EXPAND_* bits. */
enum { LV_EXPAND_APPS = 1, LV_EXPAND_STAGE = 2, LV_EXPAND_CONTACT = 4 };
void lv_gen_opp(yajl_gen g, lv_account *a, const lv_opp *o, int expand);
void lv_gen_app(yajl_gen g, const lv_opp *o, const lv_app *ap);
void lv_gen_note(yajl_gen g, const lv_note *n);
void lv_gen_stage(yajl_gen g, const lv_stage *st);
void lv_gen_posting(yajl_gen g, const lv_posting *p);
void lv_gen_hook(yajl_gen g, const lv_webhook *w, int with_token);

/* Seeding: objects from JSON (ids made when absent). NULL/0 with msg on error. */
lv_stage *lv_seed_stage(lv_account *a, yajl_val o, char *msg, size_t msz);
lv_posting *lv_seed_posting(lv_account *a, yajl_val o, char *msg, size_t msz);
lv_opp *lv_seed_opp(lv_account *a, yajl_val o, char *msg, size_t msz);
/* What a recruiter does in Lever's screens: {"stage"?: id or text (a change
 * appends a stageChanges entry, "user"? as its userId), "archived"?: bool or
 * {"reason"}}. 0, or -1 with msg (nothing changed). */
int lv_opp_update(lv_account *a, lv_opp *o, yajl_val body, char *msg, size_t msz);
/* api: made through POST /v1/webhooks (fresh id and token; changeable through
 * the API); otherwise "id" and "signatureToken" may be given. */
lv_webhook *lv_seed_hook(lv_account *a, yajl_val o, int api, char *msg, size_t msz);
void lv_generate(lv_account *a, int64_t stages, int64_t postings, int64_t opps);
/* Loads a whole seed document (see README); 0 or -1 with msg. */
int lv_seed_doc(lv_sim *s, yajl_val doc, yajl_gen out, char *msg, size_t msz);

lv_note *lv_note_add(lv_opp *o, const char *value, int api);
/* Creates or updates a key from {"key"?,"permissions"?,"except"?,"kind"?,
 * "account"?,"rate"?,"burst"?,"revoked"?}; NULL with msg on error. */
lv_key *lv_key_put(lv_sim *s, const char *def_account, yajl_val o, char *msg, size_t msz);
char *lv_new_id(void);

/* ---- lever_api.c / lever_oauth.c / lever_control.c / lever_deliver.c -------------- */

void lv_api_register(lv_sim *s);
void lv_oauth_register(lv_sim *s);
void lv_control_register(lv_sim *s);
void lv_deliver_register(lv_sim *s);
void lv_deliver_shutdown(lv_sim *s);

/* Lever-style error {"code","message"}. */
void lv_error(lb_http_req *req, int status, const char *code, const char *message);
void lv_error_ex(lb_http_req *req, int status, const char *code, const char *message,
                 const char *extra_headers);
/* OAuth token endpoint error {"error","error_description"}. */
void lv_oauth_error(lb_http_req *req, int status, const char *error, const char *description);

/* The control API's "account" (body member or ?account=), default "default". */
lv_account *lv_control_account(lv_sim *s, lb_http_req *req, yajl_val body, int create);

#endif
