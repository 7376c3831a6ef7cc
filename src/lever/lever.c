#include "lever/lever.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/strbuf.h"
#include "json/json.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <ctype.h>
#include <string.h>

#define URL_MAX 4096

lb_lever_outcome lb_lever_classify(const lb_http_response *res)
{
    int s = res->status;
    if (s >= 200 && s < 300) return LB_LEVER_OK;
    if (s == 0 && res->tls_setup)
        return LB_LEVER_FAILED; /* no CA bundle, bad certificate: retrying will not help */
    if (s == 0 || s >= 500 || s == 408 || s == 429) return LB_LEVER_RETRY;
    if (s == 401) return LB_LEVER_REAUTH;
    if (s == 403) return LB_LEVER_FORBIDDEN;
    if (s == 404) return LB_LEVER_NOT_FOUND;
    return LB_LEVER_FAILED;
}

void lb_lever_describe(const lb_http_response *res, char *buf, size_t size)
{
    if (res->status == 0 && res->tls_setup) {
        snprintf(buf, size,
                 "TLS setup failed: %s. Install the CA certificates (Debian: ca-certificates) "
                 "or fix the server's certificate; retrying will not help",
                 res->error_text ? res->error_text : "certificate problem");
        return;
    }
    if (res->status == 0) {
        snprintf(buf, size, "Lever unreachable: %s",
                 res->error_text ? res->error_text : "no response");
        return;
    }
    char err[64];
    yajl_val v = lb_json_parse(res->body, res->body_len, err, sizeof(err));
    const char *msg = v ? lb_json_get_str(v, "message") : NULL;
    if (msg != NULL && *msg != '\0')
        snprintf(buf, size, "Lever answered %d: %s", res->status, msg);
    else
        snprintf(buf, size, "Lever answered %d", res->status);
    if (v != NULL) yajl_tree_free(v);
}

/* ---- requests ------------------------------------------------------------ */

void lb_lever_url_escape(lb_strbuf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            lb_strbuf_add(b, s, 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            lb_strbuf_add(b, e, 3);
        }
    }
}

void lb_lever_req_init(lb_lever_req *r, const lb_lever_auth *auth, const char *method,
                       const char *query, const char *path_fmt, ...)
{
    memset(r, 0, sizeof(*r));
    lb_strbuf b;
    lb_strbuf_init(&b, URL_MAX);
    lb_strbuf_cat(&b, auth->api_url);
    va_list ap;
    va_start(ap, path_fmt);
    for (const char *p = path_fmt; *p; p++) {
        if (p[0] == '%' && p[1] == 's') {
            lb_lever_url_escape(&b, va_arg(ap, const char *));
            p++;
        } else {
            lb_strbuf_add(&b, p, 1);
        }
    }
    va_end(ap);
    if (query != NULL && *query != '\0') {
        lb_strbuf_cat(&b, "?");
        lb_strbuf_cat(&b, query);
    }
    r->url = lb_strbuf_steal(&b, NULL);
    int n = 0;
    if (auth->access_token != NULL) {
        size_t len = strlen(auth->access_token) + 32;
        r->auth_header = lb_malloc(len);
        snprintf(r->auth_header, len, "Authorization: Bearer %s", auth->access_token);
        r->headers[n++] = r->auth_header;
    } else if (auth->api_key != NULL) {
        size_t len = strlen(auth->api_key) + 2;
        r->userpwd = lb_malloc(len);
        snprintf(r->userpwd, len, "%s:", auth->api_key);
    }
    r->headers[n] = NULL;
    r->http.method = method;
    r->http.url = r->url;
    r->http.userpwd = r->userpwd;
    r->http.headers = r->headers;
}

void lb_lever_req_json(lb_lever_req *r, yajl_gen g)
{
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(g, &buf, &len);
    lb_free(r->body);
    r->body = lb_strndup((const char *)buf, len);
    r->http.body = r->body;
    r->http.body_len = len;
    int n = r->auth_header ? 1 : 0;
    r->headers[n++] = "Content-Type: application/json";
    r->headers[n] = NULL;
}

void lb_lever_req_free(lb_lever_req *r)
{
    lb_free(r->url);
    lb_free(r->body);
    if (r->userpwd) sodium_memzero(r->userpwd, strlen(r->userpwd));
    lb_free(r->userpwd);
    if (r->auth_header) sodium_memzero(r->auth_header, strlen(r->auth_header));
    lb_free(r->auth_header);
    memset(r, 0, sizeof(*r));
}

/* ---- bodies ---------------------------------------------------------------- */

void lb_lever_note_body(yajl_gen g, const char *text, int secret)
{
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "value", text);
    if (secret) lb_json_kv_bool(g, "secret", 1);
    yajl_gen_map_close(g);
}

void lb_lever_note_update_body(yajl_gen g, const char *text)
{
    yajl_gen_map_open(g);
    lb_json_key(g, "values");
    yajl_gen_array_open(g);
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "value", text);
    yajl_gen_map_close(g);
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
}

void lb_lever_tags_body(yajl_gen g, const char *const *tags, size_t n)
{
    yajl_gen_map_open(g);
    lb_json_key(g, "tags");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < n; i++)
        lb_json_str(g, tags[i]);
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
}

void lb_lever_stage_body(yajl_gen g, const char *stage_id)
{
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "stage", stage_id);
    yajl_gen_map_close(g);
}

void lb_lever_webhook_body(yajl_gen g, const char *url, const char *event)
{
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "url", url);
    lb_json_kv_str(g, "event", event);
    yajl_gen_map_close(g);
}

/* ---- parsing --------------------------------------------------------------- */

static char *dup_str(yajl_val v)
{
    return v != NULL && YAJL_IS_STRING(v) ? lb_strdup(v->u.string) : NULL;
}

/* A field that may be a string id or an object with an "id". */
static char *dup_id(yajl_val v)
{
    if (v == NULL) return NULL;
    if (YAJL_IS_STRING(v)) return lb_strdup(v->u.string);
    if (YAJL_IS_OBJECT(v)) return dup_str(lb_json_get(v, "id"));
    return NULL;
}

static yajl_val parse_data(const char *body, size_t len, yajl_val *root)
{
    char err[64];
    *root = lb_json_parse(body, len, err, sizeof(err));
    if (*root == NULL) return NULL;
    yajl_val data = lb_json_get(*root, "data");
    return data != NULL ? data : *root;
}

int lb_lever_parse_opportunity(const char *body, size_t len, lb_lever_opportunity *o)
{
    memset(o, 0, sizeof(*o));
    yajl_val root;
    yajl_val d = parse_data(body, len, &root);
    if (d == NULL || !YAJL_IS_OBJECT(d)) {
        if (root) yajl_tree_free(root);
        return LB_EPARSE;
    }
    o->id = dup_str(lb_json_get(d, "id"));
    o->name = dup_str(lb_json_get(d, "name"));
    yajl_val emails = lb_json_get(d, "emails");
    if (emails && YAJL_IS_ARRAY(emails) && emails->u.array.len > 0)
        o->email = dup_str(emails->u.array.values[0]);
    o->stage_id = dup_id(lb_json_get(d, "stage"));
    o->candidate_id = dup_id(lb_json_get(d, "contact"));
    yajl_val arch = lb_json_get(d, "archived");
    o->archived = arch != NULL && (YAJL_IS_OBJECT(arch) || YAJL_IS_TRUE(arch));
    yajl_val apps = lb_json_get(d, "applications");
    if (apps && YAJL_IS_ARRAY(apps) && apps->u.array.len > 0) {
        size_t n = apps->u.array.len < 64 ? apps->u.array.len : 64;
        o->postings = lb_calloc(n, sizeof(char *));
        for (size_t i = 0; i < n; i++) {
            yajl_val a = apps->u.array.values[i];
            /* Expanded applications carry "posting"; bare ones are ids. */
            char *p = YAJL_IS_OBJECT(a) ? dup_id(lb_json_get(a, "posting")) : NULL;
            if (p != NULL) o->postings[o->npostings++] = p;
        }
    }
    yajl_tree_free(root);
    return o->id != NULL ? 0 : LB_EPARSE;
}

void lb_lever_opportunity_free(lb_lever_opportunity *o)
{
    lb_free(o->id);
    lb_free(o->name);
    lb_free(o->email);
    lb_free(o->stage_id);
    lb_free(o->candidate_id);
    for (size_t i = 0; i < o->npostings; i++)
        lb_free(o->postings[i]);
    lb_free(o->postings);
    memset(o, 0, sizeof(*o));
}

static int64_t time_of(yajl_val v)
{
    if (v == NULL) return 0;
    if (YAJL_IS_INTEGER(v)) return YAJL_GET_INTEGER(v);
    if (YAJL_IS_DOUBLE(v)) return (int64_t)YAJL_GET_DOUBLE(v);
    return 0;
}

static void brief_changes(lb_lever_opp_brief *o, yajl_val changes, int64_t since)
{
    if (changes == NULL || !YAJL_IS_ARRAY(changes)) return;
    size_t n = changes->u.array.len, first = n, kept = 0;
    /* Lever lists them oldest first; keep the newest LB_LEVER_CHANGES_MAX at
     * or after since. */
    for (size_t i = n; i-- > 0;) {
        yajl_val c = changes->u.array.values[i];
        if (!YAJL_IS_OBJECT(c) || time_of(lb_json_get(c, "updatedAt")) < since) break;
        if (kept == LB_LEVER_CHANGES_MAX) break;
        first = i;
        kept++;
    }
    if (kept == 0) return;
    o->changes = lb_calloc(kept, sizeof(*o->changes));
    for (size_t i = first; i < n; i++) {
        yajl_val c = changes->u.array.values[i];
        char *to = dup_id(lb_json_get(c, "toStageId"));
        if (to == NULL) continue;
        lb_lever_stage_change *x = &o->changes[o->nchanges++];
        x->to_stage = to;
        x->at = time_of(lb_json_get(c, "updatedAt"));
        yajl_val prev = i > 0 ? changes->u.array.values[i - 1] : NULL;
        x->from_stage =
            prev && YAJL_IS_OBJECT(prev) ? dup_id(lb_json_get(prev, "toStageId")) : NULL;
    }
}

int lb_lever_parse_opp_page(const char *body, size_t len, int64_t since, lb_lever_opp_page *p)
{
    memset(p, 0, sizeof(*p));
    char err[64];
    yajl_val root = lb_json_parse(body, len, err, sizeof(err));
    yajl_val data = root ? lb_json_get(root, "data") : NULL;
    if (data == NULL || !YAJL_IS_ARRAY(data)) {
        if (root) yajl_tree_free(root);
        return LB_EPARSE;
    }
    p->items = lb_calloc(data->u.array.len ? data->u.array.len : 1, sizeof(*p->items));
    for (size_t i = 0; i < data->u.array.len; i++) {
        yajl_val it = data->u.array.values[i];
        char *id = YAJL_IS_OBJECT(it) ? dup_str(lb_json_get(it, "id")) : NULL;
        if (id == NULL) continue;
        lb_lever_opp_brief *o = &p->items[p->count++];
        o->id = id;
        o->candidate_id = dup_id(lb_json_get(it, "contact"));
        o->stage_id = dup_id(lb_json_get(it, "stage"));
        yajl_val a = lb_json_get(it, "archived");
        o->archived = a != NULL && !YAJL_IS_NULL(a) && !YAJL_IS_FALSE(a);
        brief_changes(o, lb_json_get(it, "stageChanges"), since);
    }
    int more = 0;
    if (lb_json_get_bool(root, "hasNext", &more) == 0 && more)
        p->next = dup_str(lb_json_get(root, "next"));
    yajl_tree_free(root);
    return 0;
}

void lb_lever_opp_page_free(lb_lever_opp_page *p)
{
    for (size_t i = 0; i < p->count; i++) {
        lb_lever_opp_brief *o = &p->items[i];
        for (size_t k = 0; k < o->nchanges; k++) {
            lb_free(o->changes[k].to_stage);
            lb_free(o->changes[k].from_stage);
        }
        lb_free(o->changes);
        lb_free(o->id);
        lb_free(o->candidate_id);
        lb_free(o->stage_id);
    }
    lb_free(p->items);
    lb_free(p->next);
    memset(p, 0, sizeof(*p));
}

/* Appends "name=value" to q (size bytes), after '&' unless q is empty, the
 * value percent-encoded; keep_pct leaves a %XX already there as it is. On
 * LB_ETOOBIG q is left as it was. */
static int query_append(char *q, size_t size, const char *name, const char *value, int keep_pct)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n0 = strlen(q), n = n0;
    int w = snprintf(q + n, size - n, "%s%s=", n > 0 ? "&" : "", name);
    if (w < 0 || (size_t)w >= size - n) {
        q[n0] = '\0';
        return LB_ETOOBIG;
    }
    n += (size_t)w;
    for (const unsigned char *c = (const unsigned char *)value; *c; c++) {
        int safe = isalnum(*c) || *c == '-' || *c == '.' || *c == '_' || *c == '~' ||
                   (keep_pct && *c == '%' && isxdigit(c[1]) && isxdigit(c[2]));
        if (n + (safe ? 1 : 3) >= size) {
            q[n0] = '\0';
            return LB_ETOOBIG;
        }
        if (safe) {
            q[n++] = (char)*c;
        } else {
            q[n++] = '%';
            q[n++] = hex[*c >> 4];
            q[n++] = hex[*c & 15];
        }
    }
    q[n] = '\0';
    return 0;
}

int lb_lever_query_add(char *q, size_t size, const char *name, const char *value)
{
    return query_append(q, size, name, value, 0);
}

int lb_lever_offset_query(char *q, size_t size, const char *next)
{
    return query_append(q, size, "offset", next, 1);
}

int lb_lever_parse_page(const char *body, size_t len, lb_lever_page *p)
{
    memset(p, 0, sizeof(*p));
    char err[64];
    yajl_val root = lb_json_parse(body, len, err, sizeof(err));
    if (root == NULL) return LB_EPARSE;
    /* {"data":[...]} or, for /tags and /stages in older docs, a bare array. */
    yajl_val data = YAJL_IS_ARRAY(root) ? root : lb_json_get(root, "data");
    if (data == NULL || !YAJL_IS_ARRAY(data)) {
        yajl_tree_free(root);
        return LB_EPARSE;
    }
    p->items = lb_calloc(data->u.array.len ? data->u.array.len : 1, sizeof(lb_lever_item));
    for (size_t i = 0; i < data->u.array.len; i++) {
        yajl_val it = data->u.array.values[i];
        if (!YAJL_IS_OBJECT(it)) continue;
        lb_lever_item *x = &p->items[p->count++];
        x->id = dup_str(lb_json_get(it, "id"));
        x->text = dup_str(lb_json_get(it, "text"));
        x->url = dup_str(lb_json_get(it, "url"));
        x->event = dup_str(lb_json_get(it, "event"));
    }
    int more = 0;
    if (YAJL_IS_OBJECT(root) && lb_json_get_bool(root, "hasNext", &more) == 0 && more)
        p->next = dup_str(lb_json_get(root, "next"));
    yajl_tree_free(root);
    return 0;
}

void lb_lever_page_free(lb_lever_page *p)
{
    for (size_t i = 0; i < p->count; i++) {
        lb_free(p->items[i].id);
        lb_free(p->items[i].text);
        lb_free(p->items[i].url);
        lb_free(p->items[i].event);
    }
    lb_free(p->items);
    lb_free(p->next);
    memset(p, 0, sizeof(*p));
}

int lb_lever_parse_note_id(const char *body, size_t len, char **id)
{
    yajl_val root;
    yajl_val d = parse_data(body, len, &root);
    *id = d ? dup_str(lb_json_get(d, "noteId")) : NULL;
    if (*id == NULL && d != NULL) *id = dup_str(lb_json_get(d, "id"));
    if (root) yajl_tree_free(root);
    return *id ? 0 : LB_EPARSE;
}

int lb_lever_parse_webhook(const char *body, size_t len, char **id, char **token)
{
    yajl_val root;
    yajl_val d = parse_data(body, len, &root);
    /* Lever's own example nests it once more: {"data":{"data":{...}}}. */
    if (d != NULL && YAJL_IS_OBJECT(d) && lb_json_get(d, "id") == NULL &&
        YAJL_IS_OBJECT(lb_json_get(d, "data")))
        d = lb_json_get(d, "data");
    *id = d ? dup_str(lb_json_get(d, "id")) : NULL;
    yajl_val conf = d ? lb_json_get(d, "configuration") : NULL;
    *token = conf ? dup_str(lb_json_get(conf, "signatureToken")) : NULL;
    if (root) yajl_tree_free(root);
    if (*id == NULL || *token == NULL) {
        lb_free(*id);
        lb_free(*token);
        *id = *token = NULL;
        return LB_EPARSE;
    }
    return 0;
}
