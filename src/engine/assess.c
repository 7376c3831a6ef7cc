#include "engine/assess.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strbuf.h"
#include "core/time.h"
#include "engine/template.h"
#include "json/json.h"
#include "platform/platform.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Pages of the opportunity's notes (100 each) looked through for a note
 * that an earlier try may have created, before creating it again. */
#define NOTE_PAGES_MAX 20
/* A note found there counts only if Lever dates it at most this long
 * before our first try (clocks differ). */
#define NOTE_SKEW_MS (5 * 60 * 1000)
#define TEXT_SIZE (LB_TEMPLATE_OUT_MAX + 1)
#define MSG_MAX 512
#define URL_MAX 2048

/* ---- helpers ------------------------------------------------------------- */

static yajl_val context(lb_job *job)
{
    return lb_json_get_obj(lb_job_action(job), "context");
}

/* The action's assessment, else the event's. */
static const char *assessment_of(lb_job *job)
{
    const char *a = lb_json_get_str(lb_job_action(job), "assessment");
    if (a == NULL || *a == '\0') a = lb_json_get_str(context(job), "assessment");
    return a != NULL && *a != '\0' ? a : NULL;
}

/* 1 when the job names an opportunity; otherwise it fails the job. */
static int opportunity_named(lb_job *job)
{
    const char *opp = lb_job_opportunity(job);
    if (opp != NULL && *opp != '\0') return 1;
    lb_job_finish(job, LB_JOB_FAILED, "the job has no opportunity");
    return 0;
}

/* A recorded step holding a JSON object: its member key, or NULL. The tree
 * is the caller's to free. */
static yajl_val step_json(lb_job *job, const char *step)
{
    const char *v = lb_job_step(job, step);
    if (v == NULL) return NULL;
    char err[64];
    yajl_val t = lb_json_parse(v, strlen(v), err, sizeof(err));
    if (t != NULL && !YAJL_IS_OBJECT(t)) {
        yajl_tree_free(t);
        t = NULL;
    }
    return t;
}

static char *gen_steal(yajl_gen g)
{
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(g, &buf, &len);
    return lb_strndup((const char *)buf, len);
}

void lb_assess_number_text(yajl_val v, char *buf, size_t size)
{
    if (size == 0) return;
    buf[0] = '\0';
    if (v == NULL) return;
    if (YAJL_IS_STRING(v))
        snprintf(buf, size, "%s", v->u.string);
    else if (YAJL_IS_INTEGER(v))
        snprintf(buf, size, "%lld", v->u.number.i);
    else if (YAJL_IS_DOUBLE(v))
        snprintf(buf, size, "%.10g", v->u.number.d);
}

void lb_assess_sent_text(char *buf, size_t size, const char *assessment, const char *url)
{
    snprintf(buf, size, "Assessment %s sent: %s", assessment, url);
}

void lb_assess_outcome_text(char *buf, size_t size, const char *assessment, const char *status,
                            const char *score, const char *max_score, const char *report_url)
{
    if (strcmp(status, "completed") != 0) {
        snprintf(buf, size, "Assessment %s %s", assessment, status);
        return;
    }
    int n = snprintf(buf, size, "Assessment %s completed: %s/%s", assessment, score ? score : "",
                     max_score ? max_score : "");
    if (report_url != NULL && *report_url != '\0' && n > 0 && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, " %s", report_url);
}

/* ---- invitations in the store -------------------------------------------- */

/* One invitation operation of a job: the op and the strings it reads.
 * Owned by the kind from submission to its done callback. */
typedef struct {
    lb_store_op op; /* first: the callback gets &op */
    lb_invitation_rec rec;
    char *opp, *assessment, *invitation_id, *url, *note_id, *stage_id;
    lb_job_rec notify; /* invitation.sent, written with the invitation */
} inv_op;

static char *dup_or_null(const char *s)
{
    return s != NULL ? lb_strdup(s) : NULL;
}

static void inv_op_free(inv_op *c)
{
    lb_free(c->opp);
    lb_free(c->assessment);
    lb_free(c->invitation_id);
    lb_free(c->url);
    lb_free(c->note_id);
    lb_free(c->stage_id);
    lb_job_rec_free(&c->notify);
    lb_free(c);
}

/* invitation.sent (api.md "Events to the platform"), on the write that
 * stores the platform's invitation id and URL. */
static void sent_event(lb_job *job, inv_op *c)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "opportunity_id", c->opp);
    lb_json_kv_str(g, "assessment", c->assessment);
    lb_json_kv_str(g, "invitation_id", c->invitation_id);
    lb_json_kv_str(g, "url", c->url);
    lb_json_kv_str(g, "job_id", lb_job_id(job));
    yajl_gen_map_close(g);
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(g, &buf, &len);
    char *data = lb_strndup((const char *)buf, len);
    yajl_gen_free(g);
    if (lb_job_notify(job, "invitation.sent", data, &c->notify)) {
        c->op.notify = &c->notify;
        c->op.nnotify = 1;
    }
    lb_free(data);
}

/* Submits one invitation op (CLAIM, UPDATE or GET) of the job's
 * (tenant, opportunity, assessment). On a refused submission the job
 * retries. stage_id: the stage recorded with the invitation (UPDATE; NULL
 * keeps the stored one). */
static void inv_submit_at(lb_job *job, int kind, const char *assessment, const char *invitation_id,
                          const char *url, const char *note_id, const char *stage_id,
                          lb_job_store_cb done)
{
    inv_op *c = LB_NEW(inv_op);
    c->opp = lb_strdup(lb_job_opportunity(job));
    c->assessment = lb_strdup(assessment);
    c->invitation_id = dup_or_null(invitation_id);
    c->url = dup_or_null(url);
    c->note_id = dup_or_null(note_id);
    c->stage_id = stage_id != NULL && *stage_id != '\0' ? lb_strdup(stage_id) : NULL;
    snprintf(c->rec.tenant_id, sizeof(c->rec.tenant_id), "%s", lb_job_tenant(job));
    c->rec.opportunity_id = c->opp;
    c->rec.assessment = c->assessment;
    c->rec.job_id = (char *)lb_job_id(job);
    c->rec.invitation_id = c->invitation_id;
    c->rec.url = c->url;
    c->rec.note_id = c->note_id;
    c->rec.stage_id = c->stage_id;
    c->op.kind = kind;
    if (kind == LB_STORE_INVITATION_CLAIM) {
        c->op.invitation_claim.rec = &c->rec;
    } else if (kind == LB_STORE_INVITATION_UPDATE) {
        c->op.invitation_update.rec = &c->rec;
        if (invitation_id != NULL && url != NULL) sent_event(job, c);
    } else {
        memcpy(c->op.invitation_get.tenant_id, c->rec.tenant_id, sizeof(c->rec.tenant_id));
        c->op.invitation_get.opportunity_id = c->opp;
        c->op.invitation_get.assessment = c->assessment;
    }
    if (lb_job_store(job, &c->op, done) != 0) {
        inv_op_free(c);
        lb_job_retry(job, "the store is not taking operations");
    }
}

static void inv_submit(lb_job *job, int kind, const char *assessment, const char *invitation_id,
                       const char *url, const char *note_id, lb_job_store_cb done)
{
    inv_submit_at(job, kind, assessment, invitation_id, url, note_id, NULL, done);
}

/* ---- notes: create once -------------------------------------------------- */

/* Steps: "note_at" (our clock, ms, recorded just before the first POST)
 * and "note" (Lever's note id). The job's scratch pointer holds no memory:
 * it points into the static marks below to say where this process stands.
 * &note_fresh: "note_at" was recorded by this process and nothing was sent
 * since, so the POST goes out without looking; &note_page[n]: page n of
 * the listing is being read; anything else (a retry, or the first run
 * after a restart): the notes are listed first. */
static char note_fresh;
static char note_page[NOTE_PAGES_MAX];

/* The text the kind writes as its note, into buf; 0, or the job has ended
 * (then the caller stops). */
typedef int (*note_text_fn)(lb_job *job, char *buf, size_t size, int *secret);

static int send_note_text(lb_job *job, char *buf, size_t size, int *secret);
static int add_note_text(lb_job *job, char *buf, size_t size, int *secret);

static note_text_fn text_fn(lb_job *job)
{
    const char *type = lb_json_get_str(lb_job_action(job), "type");
    return type != NULL && strcmp(type, "send_assessment") == 0 ? send_note_text : add_note_text;
}

static void note_posted(lb_job *job, const lb_http_response *res)
{
    if (lb_lever_classify(res) != LB_LEVER_OK) {
        lb_job_lever_failed(job, res);
        return;
    }
    char *id = NULL;
    if (lb_lever_parse_note_id(res->body, res->body_len, &id) != 0 || id == NULL || *id == '\0') {
        lb_free(id);
        /* Created, probably: the retry finds it in the listing. */
        lb_job_retry(job, "Lever's answer to the new note has no noteId");
        return;
    }
    lb_job_record(job, "note", id);
    lb_free(id);
}

static void note_post(lb_job *job)
{
    char *text = lb_malloc(TEXT_SIZE);
    int secret = 0;
    if (text_fn(job)(job, text, TEXT_SIZE, &secret) == 0) {
        *lb_job_scratch(job) = NULL;
        yajl_gen g = lb_json_gen_new();
        lb_lever_note_body(g, text, secret);
        lb_job_lever(job, "create an opportunity note", "POST", NULL, g, note_posted,
                     "/opportunities/%s/notes", lb_job_opportunity(job));
        yajl_gen_free(g);
    }
    lb_free(text);
}

static size_t trimmed_len(const char *s, size_t n)
{
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == '\t'))
        n--;
    return n;
}

/* A listed note with our text, dated since `since` (when Lever dates it). */
static int note_matches(yajl_val note, const char *text, size_t tlen, int64_t since)
{
    int64_t created;
    if (lb_json_get_int(note, "createdAt", &created) == 0 && created < since) return 0;
    yajl_val fields = lb_json_get_array(note, "fields");
    for (size_t i = 0; fields != NULL && i < fields->u.array.len; i++) {
        const char *v = lb_json_get_str(fields->u.array.values[i], "value");
        if (v != NULL && trimmed_len(v, strlen(v)) == tlen && memcmp(v, text, tlen) == 0) return 1;
    }
    const char *v = lb_json_get_str(note, "value"); /* a flatter shape, if Lever sends one */
    return v != NULL && trimmed_len(v, strlen(v)) == tlen && memcmp(v, text, tlen) == 0;
}

static void note_list(lb_job *job, const char *offset, int page);

static void notes_listed(lb_job *job, const lb_http_response *res)
{
    if (lb_lever_classify(res) != LB_LEVER_OK) {
        lb_job_lever_failed(job, res);
        return;
    }
    void **scratch = lb_job_scratch(job);
    int page = 0;
    if (*scratch != NULL && (char *)*scratch >= note_page &&
        (char *)*scratch < note_page + NOTE_PAGES_MAX)
        page = (int)((char *)*scratch - note_page);
    char err[64];
    yajl_val root = lb_json_parse(res->body, res->body_len, err, sizeof(err));
    yajl_val data = root != NULL && YAJL_IS_ARRAY(root) ? root : lb_json_get_array(root, "data");
    if (data == NULL) {
        if (root != NULL) yajl_tree_free(root);
        lb_job_retry(job, "Lever's list of notes could not be read");
        return;
    }
    char *text = lb_malloc(TEXT_SIZE);
    int secret;
    if (text_fn(job)(job, text, TEXT_SIZE, &secret) != 0) {
        lb_free(text);
        yajl_tree_free(root);
        return;
    }
    size_t tlen = trimmed_len(text, strlen(text));
    const char *at = lb_job_step(job, "note_at");
    int64_t since = (at != NULL ? strtoll(at, NULL, 10) : 0) - NOTE_SKEW_MS;
    const char *found = NULL;
    for (size_t i = 0; i < data->u.array.len && found == NULL; i++) {
        yajl_val n = data->u.array.values[i];
        const char *id = lb_json_get_str(n, "id");
        if (id != NULL && *id != '\0' && note_matches(n, text, tlen, since)) found = id;
    }
    lb_free(text);
    int more = 0;
    const char *next = NULL;
    if (YAJL_IS_OBJECT(root) && lb_json_get_bool(root, "hasNext", &more) == 0 && more)
        next = lb_json_get_str(root, "next");
    if (found != NULL) {
        lb_debug("assess", "tenant=%s job=%s: the note %s from an earlier try is taken",
                 lb_job_tenant(job), lb_job_id(job), found);
        lb_job_record(job, "note", found);
    } else if (next != NULL && *next != '\0' && page + 1 < NOTE_PAGES_MAX) {
        note_list(job, next, page + 1);
    } else {
        note_post(job);
    }
    yajl_tree_free(root);
}

static void note_list(lb_job *job, const char *offset, int page)
{
    *lb_job_scratch(job) = &note_page[page];
    lb_strbuf q;
    lb_strbuf_init(&q, URL_MAX);
    lb_strbuf_cat(&q, "limit=100");
    if (offset != NULL) {
        /* Passed back as Lever sent it; only what a URL cannot carry is escaped. */
        static const char hex[] = "0123456789ABCDEF";
        lb_strbuf_cat(&q, "&offset=");
        for (const unsigned char *p = (const unsigned char *)offset; *p; p++) {
            if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                strchr("-._~%", *p) != NULL) {
                lb_strbuf_add(&q, p, 1);
            } else {
                char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
                lb_strbuf_add(&q, e, 3);
            }
        }
    }
    if (q.failed) {
        lb_strbuf_free(&q);
        note_post(job);
        return;
    }
    lb_job_lever(job, "find an opportunity note", "GET", q.data, NULL, notes_listed,
                 "/opportunities/%s/notes", lb_job_opportunity(job));
    lb_strbuf_free(&q);
}

/* Runs the note steps while "note" is not recorded. */
static void note_run(lb_job *job)
{
    void **scratch = lb_job_scratch(job);
    if (lb_job_step(job, "note_at") == NULL) {
        char at[24];
        snprintf(at, sizeof(at), "%" PRId64, lb_time_now_ms());
        *scratch = &note_fresh;
        lb_job_record(job, "note_at", at);
    } else if (*scratch == &note_fresh) {
        note_post(job);
    } else {
        note_list(job, NULL, 0);
    }
}

/* ---- opportunity reads --------------------------------------------------- */

static void opportunity_get(lb_job *job, lb_job_call_cb done)
{
    lb_job_lever(job, "find an opportunity", "GET", "expand=applications", NULL, done,
                 "/opportunities/%s", lb_job_opportunity(job));
}

/* 0 and o filled from a 2xx, or the job was ended (o is empty then). */
static int opportunity_read(lb_job *job, const lb_http_response *res, lb_lever_opportunity *o)
{
    memset(o, 0, sizeof(*o));
    if (lb_lever_classify(res) != LB_LEVER_OK) {
        lb_job_lever_failed(job, res);
        return LB_EIO;
    }
    if (lb_lever_parse_opportunity(res->body, res->body_len, o) != 0) {
        lb_lever_opportunity_free(o);
        lb_job_finish(job, LB_JOB_FAILED, "Lever's opportunity could not be read");
        return LB_EPARSE;
    }
    return 0;
}

/* ---- send_assessment ----------------------------------------------------- */

static int send_note_text(lb_job *job, char *buf, size_t size, int *secret)
{
    yajl_val inv = step_json(job, "invitation");
    const char *url = lb_json_get_str(inv, "url");
    *secret = 0;
    if (url == NULL) {
        if (inv != NULL) yajl_tree_free(inv);
        lb_job_finish(job, LB_JOB_FAILED, "the recorded invitation is unreadable");
        return LB_ECORRUPT;
    }
    lb_assess_sent_text(buf, size, assessment_of(job), url);
    yajl_tree_free(inv);
    return 0;
}

static void send_finished(lb_job *job, lb_store_op *op, int live)
{
    int st = op->status;
    inv_op_free((inv_op *)op);
    if (!live) return;
    if (st != 0)
        lb_job_retry(job, "the store could not record the status note");
    else
        lb_job_finish(job, LB_JOB_SUCCEEDED, NULL);
}

static void send_stored(lb_job *job, lb_store_op *op, int live)
{
    int st = op->status;
    inv_op_free((inv_op *)op);
    if (!live) return;
    if (st != 0)
        lb_job_retry(job, "the store could not record the invitation");
    else
        lb_job_record(job, "stored", "1");
}

static void send_invited(lb_job *job, const lb_http_response *res)
{
    int s = res->status;
    if (s == 200 || s == 201) {
        char *id, *url;
        if (lb_platform_invitation_parse(res->body, res->body_len, &id, &url) != 0) {
            lb_job_finish(job, LB_JOB_FAILED, "the platform's answer has no invitation_id and url");
            return;
        }
        yajl_gen g = lb_json_gen_new();
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "invitation_id", id);
        lb_json_kv_str(g, "url", url);
        yajl_gen_map_close(g);
        lb_free(id);
        lb_free(url);
        char *rec = gen_steal(g);
        yajl_gen_free(g);
        lb_job_record(job, "invitation", rec);
        lb_free(rec);
        return;
    }
    char msg[MSG_MAX];
    lb_platform_describe(s, res->error_text, res->body, res->body_len, msg, sizeof(msg));
    if (lb_platform_transient(s))
        lb_job_retry(job, msg);
    else
        lb_job_finish(job, LB_JOB_FAILED, msg);
}

static void send_invite(lb_job *job, const char *assessment)
{
    const lb_jobs_config *cfg = lb_job_config(job);
    yajl_val o = step_json(job, "opportunity");
    if (o == NULL) {
        lb_job_finish(job, LB_JOB_FAILED, "the recorded opportunity is unreadable");
        return;
    }
    size_t blen;
    char *body = lb_platform_invite_body(lb_job_tenant(job), assessment, lb_json_get_str(o, "name"),
                                         lb_json_get_str(o, "email"), lb_job_opportunity(job),
                                         lb_json_get_str(o, "candidate_id"),
                                         lb_json_get_str(o, "posting_id"), &blen);
    yajl_tree_free(o);
    lb_platform_call c;
    lb_platform_invite_call(&c, cfg->platform_url, cfg->platform_token, lb_job_id(job));
    lb_http_request req = {
        .method = "POST", .url = c.url, .headers = c.headers, .body = body, .body_len = blen};
    lb_job_http(job, &req, send_invited); /* curl copied what it needs */
    lb_platform_call_clear(&c);
    lb_free(body);
}

static void send_opportunity_read(lb_job *job, const lb_http_response *res)
{
    lb_lever_opportunity o;
    if (opportunity_read(job, res, &o) != 0) return;
    if (o.email == NULL || *o.email == '\0') {
        lb_lever_opportunity_free(&o);
        lb_job_finish(job, LB_JOB_FAILED, "the candidate has no email address in Lever");
        return;
    }
    /* Recorded, so every try sends the platform the same body (it refuses
     * a reused Idempotency-Key with another email). */
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "name", o.name ? o.name : "");
    lb_json_kv_str(g, "email", o.email);
    if (o.candidate_id != NULL) lb_json_kv_str(g, "candidate_id", o.candidate_id);
    if (o.npostings > 0) lb_json_kv_str(g, "posting_id", o.postings[0]);
    /* Stored with the invitation: the guard of the moves its result fires. */
    if (o.stage_id != NULL) lb_json_kv_str(g, "stage_id", o.stage_id);
    yajl_gen_map_close(g);
    lb_lever_opportunity_free(&o);
    char *rec = gen_steal(g);
    yajl_gen_free(g);
    lb_job_record(job, "opportunity", rec);
    lb_free(rec);
}

static void send_claimed(lb_job *job, lb_store_op *op, int live)
{
    int st = op->status;
    int owned = st == 0 && op->invitation_claim.owned;
    if (st == 0) lb_invitation_rec_free(&op->invitation_claim.existing);
    inv_op_free((inv_op *)op);
    if (!live) return;
    if (st != 0)
        lb_job_retry(job, "the store could not claim the invitation");
    else if (!owned)
        lb_job_finish(job, LB_JOB_SKIPPED, "already_invited");
    else
        lb_job_record(job, "claim", "1");
}

void lb_assess_send_run(lb_job *job)
{
    if (!opportunity_named(job)) return;
    const char *assessment = lb_json_get_str(lb_job_action(job), "assessment");
    if (assessment == NULL || *assessment == '\0') {
        lb_job_finish(job, LB_JOB_FAILED, "send_assessment needs an assessment");
        return;
    }
    const lb_jobs_config *cfg = lb_job_config(job);
    if (lb_job_step(job, "invitation") == NULL &&
        (cfg->platform_url == NULL || *cfg->platform_url == '\0' || cfg->platform_token == NULL)) {
        lb_job_finish(job, LB_JOB_FAILED, "platform not configured");
        return;
    }
    if (lb_job_step(job, "claim") == NULL) {
        inv_submit(job, LB_STORE_INVITATION_CLAIM, assessment, NULL, NULL, NULL, send_claimed);
    } else if (lb_job_step(job, "opportunity") == NULL) {
        opportunity_get(job, send_opportunity_read);
    } else if (lb_job_step(job, "invitation") == NULL) {
        send_invite(job, assessment);
    } else if (lb_job_step(job, "stored") == NULL) {
        yajl_val inv = step_json(job, "invitation");
        const char *id = lb_json_get_str(inv, "invitation_id");
        const char *url = lb_json_get_str(inv, "url");
        yajl_val o = step_json(job, "opportunity");
        if (id == NULL || url == NULL)
            lb_job_finish(job, LB_JOB_FAILED, "the recorded invitation is unreadable");
        else
            inv_submit_at(job, LB_STORE_INVITATION_UPDATE, assessment, id, url, NULL,
                          lb_json_get_str(o, "stage_id"), send_stored);
        if (inv != NULL) yajl_tree_free(inv);
        if (o != NULL) yajl_tree_free(o);
    } else if (lb_job_step(job, "note") == NULL) {
        note_run(job);
    } else {
        inv_submit(job, LB_STORE_INVITATION_UPDATE, assessment, NULL, NULL,
                   lb_job_step(job, "note"), send_finished);
    }
}

/* ---- add_note ------------------------------------------------------------ */

static int add_note_text(lb_job *job, char *buf, size_t size, int *secret)
{
    const char *text = lb_job_step(job, "text");
    int s = 0;
    *secret = lb_json_get_bool(lb_job_action(job), "secret", &s) == 0 && s;
    if (text == NULL) {
        lb_job_finish(job, LB_JOB_FAILED, "the rendered note was not recorded");
        return LB_ENOTFOUND;
    }
    snprintf(buf, size, "%s", text);
    return 0;
}

/* Renders the template and records it as step "text". */
static void add_note_render(lb_job *job, const char *invitation_url)
{
    yajl_val ctx = context(job);
    yajl_val cand = step_json(job, "candidate");
    char score[64], max_score[64];
    lb_assess_number_text(lb_json_get(ctx, "score"), score, sizeof(score));
    lb_assess_number_text(lb_json_get(ctx, "max_score"), max_score, sizeof(max_score));
    lb_template_values v = {{
        [LB_TPL_CANDIDATE_NAME] = lb_json_get_str(cand, "name"),
        [LB_TPL_CANDIDATE_EMAIL] = lb_json_get_str(cand, "email"),
        [LB_TPL_ASSESSMENT] = assessment_of(job),
        [LB_TPL_SCORE] = score,
        [LB_TPL_MAX_SCORE] = max_score,
        [LB_TPL_REPORT_URL] = lb_json_get_str(ctx, "report_url"),
        [LB_TPL_INVITATION_URL] = invitation_url,
    }};
    char *text = lb_malloc(TEXT_SIZE);
    int n = lb_template_render(lb_json_get_str(lb_job_action(job), "text"), &v, text, TEXT_SIZE);
    if (cand != NULL) yajl_tree_free(cand);
    if (n == LB_ETOOBIG)
        lb_warn("assess", "tenant=%s job=%s: the note was cut to %d bytes", lb_job_tenant(job),
                lb_job_id(job), LB_TEMPLATE_OUT_MAX);
    if (trimmed_len(text, strlen(text)) == 0)
        lb_job_finish(job, LB_JOB_FAILED, "the note's text is empty once rendered");
    else
        lb_job_record(job, "text", text);
    lb_free(text);
}

static void add_note_invitation(lb_job *job, lb_store_op *op, int live)
{
    int st = op->status;
    char *url = NULL;
    if (st == 0) {
        url = dup_or_null(op->invitation_get.rec.url);
        lb_invitation_rec_free(&op->invitation_get.rec);
    }
    inv_op_free((inv_op *)op);
    if (live) {
        if (st != 0 && st != LB_ENOTFOUND)
            lb_job_retry(job, "the store could not read the invitation");
        else
            add_note_render(job, url);
    }
    lb_free(url);
}

static void add_note_candidate(lb_job *job, const lb_http_response *res)
{
    lb_lever_opportunity o;
    if (opportunity_read(job, res, &o) != 0) return;
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "name", o.name ? o.name : "");
    lb_json_kv_str(g, "email", o.email ? o.email : "");
    yajl_gen_map_close(g);
    lb_lever_opportunity_free(&o);
    char *rec = gen_steal(g);
    yajl_gen_free(g);
    lb_job_record(job, "candidate", rec);
    lb_free(rec);
}

void lb_assess_add_note_run(lb_job *job)
{
    if (!opportunity_named(job)) return;
    const char *tpl = lb_json_get_str(lb_job_action(job), "text");
    char bad[LB_TEMPLATE_BAD_MAX];
    if (tpl == NULL || *tpl == '\0') {
        lb_job_finish(job, LB_JOB_FAILED, "add_note needs a text");
        return;
    }
    if (lb_template_check(tpl, bad, sizeof(bad)) != 0) {
        char msg[128];
        snprintf(msg, sizeof(msg), "the note's text has an unknown placeholder %s", bad);
        lb_job_finish(job, LB_JOB_FAILED, msg);
        return;
    }
    if (lb_job_step(job, "note") != NULL) {
        lb_job_finish(job, LB_JOB_SUCCEEDED, NULL);
        return;
    }
    if (lb_job_step(job, "text") != NULL) {
        note_run(job);
        return;
    }
    unsigned uses = lb_template_uses(tpl);
    unsigned cand = (1u << LB_TPL_CANDIDATE_NAME) | (1u << LB_TPL_CANDIDATE_EMAIL);
    const char *assessment = assessment_of(job);
    if ((uses & cand) != 0 && lb_job_step(job, "candidate") == NULL)
        opportunity_get(job, add_note_candidate);
    else if ((uses & (1u << LB_TPL_INVITATION_URL)) != 0 && assessment != NULL)
        inv_submit(job, LB_STORE_INVITATION_GET, assessment, NULL, NULL, NULL, add_note_invitation);
    else
        add_note_render(job, NULL);
}

/* ---- update_status_note -------------------------------------------------- */

static void update_done(lb_job *job, const lb_http_response *res)
{
    if (lb_lever_classify(res) == LB_LEVER_OK)
        lb_job_finish(job, LB_JOB_SUCCEEDED, NULL);
    else
        lb_job_lever_failed(job, res);
}

static void update_put(lb_job *job, const char *note_id)
{
    yajl_val ctx = context(job);
    char score[64], max_score[64], *text = lb_malloc(TEXT_SIZE);
    lb_assess_number_text(lb_json_get(ctx, "score"), score, sizeof(score));
    lb_assess_number_text(lb_json_get(ctx, "max_score"), max_score, sizeof(max_score));
    lb_assess_outcome_text(text, TEXT_SIZE, assessment_of(job), lb_json_get_str(ctx, "status"),
                           score, max_score, lb_json_get_str(ctx, "report_url"));
    yajl_gen g = lb_json_gen_new();
    lb_lever_note_update_body(g, text);
    lb_job_lever(job, "update an opportunity note", "PUT", NULL, g, update_done,
                 "/opportunities/%s/notes/%s", lb_job_opportunity(job), note_id);
    yajl_gen_free(g);
    lb_free(text);
}

static void update_owner_read(lb_job *job, lb_store_op *op, int live)
{
    int st = op->status;
    int status = st == 0 ? op->job_get.rec.status : -1;
    if (st == 0) lb_job_rec_free(&op->job_get.rec);
    lb_free(op);
    if (!live) return;
    if (st == LB_ENOTFOUND || status == LB_JOB_FAILED || status == LB_JOB_SKIPPED ||
        status == LB_JOB_CANCELLED)
        lb_job_finish(job, LB_JOB_SKIPPED, "no_status_note"); /* the invitation never got one */
    else
        lb_job_retry(job, "waiting for the invitation's status note");
}

static void update_invitation_read(lb_job *job, lb_store_op *op, int live)
{
    int st = op->status;
    lb_invitation_rec rec;
    memset(&rec, 0, sizeof(rec));
    if (st == 0) rec = op->invitation_get.rec;
    inv_op_free((inv_op *)op);
    if (live) {
        if (st == LB_ENOTFOUND) {
            lb_job_finish(job, LB_JOB_SKIPPED, "no_invitation");
        } else if (st != 0) {
            lb_job_retry(job, "the store could not read the invitation");
        } else if (rec.note_id != NULL && *rec.note_id != '\0') {
            update_put(job, rec.note_id);
        } else if (rec.job_id == NULL) {
            lb_job_finish(job, LB_JOB_SKIPPED, "no_status_note");
        } else {
            /* The send_assessment job has not written the note yet: wait for
             * it while it may still do so. */
            lb_store_op *q = LB_NEW(lb_store_op);
            q->kind = LB_STORE_JOB_GET;
            snprintf(q->job_get.tenant_id, sizeof(q->job_get.tenant_id), "%s", lb_job_tenant(job));
            snprintf(q->job_get.id, sizeof(q->job_get.id), "%s", rec.job_id);
            if (lb_job_store(job, q, update_owner_read) != 0) {
                lb_free(q);
                lb_job_retry(job, "the store is not taking operations");
            }
        }
    }
    lb_invitation_rec_free(&rec);
}

void lb_assess_update_note_run(lb_job *job)
{
    if (!opportunity_named(job)) return;
    yajl_val ctx = context(job);
    const char *assessment = assessment_of(job);
    const char *status = lb_json_get_str(ctx, "status");
    if (assessment == NULL || status == NULL ||
        (strcmp(status, "completed") != 0 && strcmp(status, "expired") != 0)) {
        lb_job_finish(job, LB_JOB_FAILED,
                      "update_status_note needs an assessment and a status in its context");
        return;
    }
    inv_submit(job, LB_STORE_INVITATION_GET, assessment, NULL, NULL, NULL, update_invitation_read);
}
