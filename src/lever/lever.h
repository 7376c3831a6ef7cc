/* Lever's Data API: requests built, answers classified and parsed. No I/O
 * here: a request is an lb_http_request that the engine sends through the
 * tenant's outbound queue, and the answer comes back to the parsers below.
 * Lever as this code expects it is what lever-sim plays (test/sim/README.md,
 * "lever-sim behaviour"); parsing is tolerant
 * (unknown fields ignored, lists with or without next/hasNext, the webhook
 * signature token under data or data.data). */
#ifndef LB_LEVER_LEVER_H
#define LB_LEVER_LEVER_H

#include "core/strbuf.h"
#include "http/client.h"

#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

/* A tenant's credentials for one call. Exactly one of api_key and
 * access_token is set. The strings are borrowed. */
typedef struct {
    const char *api_url;      /* LEVERBRIDGE_LEVER_API_URL, no trailing '/' */
    const char *api_key;      /* HTTP Basic, key as user, empty password */
    const char *access_token; /* OAuth bearer */
} lb_lever_auth;

/* api.md's error mapping, from an answer. */
typedef enum {
    LB_LEVER_OK,        /* 2xx */
    LB_LEVER_RETRY,     /* 5xx, 408, 429, timeouts, resets: back off and retry */
    LB_LEVER_REAUTH,    /* 401: the connection needs re-authorization */
    LB_LEVER_FORBIDDEN, /* 403: a permission is missing */
    LB_LEVER_NOT_FOUND, /* 404 */
    LB_LEVER_FAILED,    /* any other answer: fail with Lever's message */
} lb_lever_outcome;

lb_lever_outcome lb_lever_classify(const lb_http_response *res);
/* A sentence for last_error: Lever's "message" when it sent one, else the
 * status or the transport failure. Never contains credentials. */
void lb_lever_describe(const lb_http_response *res, char *buf, size_t size);

/* One request with the strings it needs. Owner: its caller; free with
 * lb_lever_req_free. */
typedef struct {
    lb_http_request http;
    char *url;
    char *body;
    char *userpwd;
    char *auth_header;
    const char *headers[3];
} lb_lever_req;

/* method and a path under the API root; "%s" arguments are percent-encoded
 * (ids), so the format must use only %s. Query strings are passed in
 * `query` ("limit=1&expand=applications", unescaped values must already be
 * safe) or NULL. */
void lb_lever_req_init(lb_lever_req *r, const lb_lever_auth *auth, const char *method,
                       const char *query, const char *path_fmt, ...);
/* Sets a JSON body from a generator (copied; the generator stays the caller's). */
void lb_lever_req_json(lb_lever_req *r, yajl_gen g);
void lb_lever_req_free(lb_lever_req *r);

/* Bodies. */
void lb_lever_note_body(yajl_gen g, const char *text, int secret);
void lb_lever_note_update_body(yajl_gen g, const char *text);
void lb_lever_tags_body(yajl_gen g, const char *const *tags, size_t n);
void lb_lever_stage_body(yajl_gen g, const char *stage_id);
void lb_lever_webhook_body(yajl_gen g, const char *url, const char *event);

/* An opportunity as the integration uses it. Strings lb_malloc'd, NULL when
 * absent; free with lb_lever_opportunity_free. */
typedef struct {
    char *id;
    char *name;
    char *email; /* the first of emails[] */
    char *stage_id;
    char *candidate_id; /* contact */
    char **postings;    /* posting ids of its applications */
    size_t npostings;
    int archived; /* 1 when "archived" is an object (Lever: null when not) */
} lb_lever_opportunity;

int lb_lever_parse_opportunity(const char *body, size_t len, lb_lever_opportunity *out);
void lb_lever_opportunity_free(lb_lever_opportunity *o);

/* One page of GET /opportunities as reconciliation and backfill read it:
 * per opportunity its id, contact, current stage, whether it is archived,
 * and the entries of its stageChanges at or after `since` (ms), each with
 * the stage it left (the entry before it; NULL for the first), oldest
 * first, at most LB_LEVER_CHANGES_MAX (the newest ones). Strings
 * lb_malloc'd; free with lb_lever_opp_page_free. */
#define LB_LEVER_CHANGES_MAX 32

typedef struct {
    char *to_stage;
    char *from_stage;
    int64_t at;
} lb_lever_stage_change;

typedef struct {
    char *id;
    char *candidate_id;
    char *stage_id;
    int archived;
    lb_lever_stage_change *changes;
    size_t nchanges;
} lb_lever_opp_brief;

typedef struct {
    lb_lever_opp_brief *items;
    size_t count;
    char *next; /* NULL at the end */
} lb_lever_opp_page;

int lb_lever_parse_opp_page(const char *body, size_t len, int64_t since, lb_lever_opp_page *out);
void lb_lever_opp_page_free(lb_lever_opp_page *p);

/* Appends "&offset=<next>" to q (size bytes), percent-encoding what is not
 * already safe in a query (Lever's own `next` passes unchanged). 0, or
 * LB_ETOOBIG when it does not fit. */
int lb_lever_offset_query(char *q, size_t size, const char *next);
/* Appends "name=value" to q (size bytes; '&' first unless q is empty), the
 * value percent-encoded. 0, or LB_ETOOBIG when it does not fit. */
int lb_lever_query_add(char *q, size_t size, const char *name, const char *value);
/* Appends s to b percent-encoded: all but RFC 3986's unreserved characters. */
void lb_lever_url_escape(lb_strbuf *b, const char *s);

/* One page of a list: {"data":[...],"next":"...","hasNext":true}. Items are
 * kept as {id, text, url, event} strings, enough for stages, postings and
 * webhooks. lb_malloc'd; free with lb_lever_page_free. */
typedef struct {
    char *id;
    char *text;  /* stages: text; postings: text */
    char *url;   /* webhooks */
    char *event; /* webhooks */
} lb_lever_item;

typedef struct {
    lb_lever_item *items;
    size_t count;
    char *next; /* NULL at the end (absent hasNext means the end) */
} lb_lever_page;

int lb_lever_parse_page(const char *body, size_t len, lb_lever_page *out);
void lb_lever_page_free(lb_lever_page *p);

/* POST /opportunities/:id/notes -> {"data":{"noteId":"..."}}: *id lb_malloc'd. */
int lb_lever_parse_note_id(const char *body, size_t len, char **id);
/* POST /webhooks -> the webhook with configuration.signatureToken, under data
 * or data.data. Both lb_malloc'd. */
int lb_lever_parse_webhook(const char *body, size_t len, char **id, char **token);

/* ---- inbound deliveries ---------------------------------------------------- */

#define LB_LEVER_TOKEN_MAX 256

/* A webhook delivery, checked. Strings point into `tree` (free it with
 * yajl_tree_free) except triggered_at, which is copied. */
typedef struct {
    yajl_val tree;
    const char *token;
    const char *event;
    const char *signature;
    char triggered_at[24]; /* as sent: the signature covers this text */
    int64_t triggered_ms;
    yajl_val data; /* "data", or NULL */
    const char *opportunity_id;
} lb_lever_delivery;

typedef enum {
    LB_DELIVERY_OK,
    LB_DELIVERY_NOT_JSON, /* not a JSON object */
    LB_DELIVERY_MISSING,  /* a required field is absent or malformed: see *field */
    LB_DELIVERY_BAD_SIGNATURE,
} lb_lever_delivery_result;

/* Parses body, extracts token, triggeredAt, signature and event, and checks
 * the signature with the hook's token in constant time. On anything but
 * LB_DELIVERY_OK nothing is left to free. Pure: no I/O, no clock. */
lb_lever_delivery_result lb_lever_delivery_parse(const char *body, size_t len,
                                                 const char *signature_token,
                                                 lb_lever_delivery *out, const char **field);

#endif
