/* The assessment platform's API as leverbridge speaks it (api.md "Outbound:
 * the assessment platform", "Events to the platform"): requests, answers
 * and signatures, no I/O, as src/lever/ is for Lever. The engine's job
 * kinds (engine/assess.c, engine/notify.c) make the calls. */
#ifndef LB_PLATFORM_PLATFORM_H
#define LB_PLATFORM_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

/* ---- invitations: POST <PLATFORM_URL>/invitations ---------------------- */

#define LB_PLATFORM_URL_MAX 2048

/* One invitation request's URL and headers. The bearer token is copied in
 * and wiped by lb_platform_call_clear. */
typedef struct {
    char url[LB_PLATFORM_URL_MAX];
    char *auth;             /* "Authorization: Bearer <token>" */
    char idem[96];          /* "Idempotency-Key: <job id>" */
    const char *headers[5]; /* NULL-terminated, for lb_http_request */
} lb_platform_call;

/* base: PLATFORM_URL (trailing slashes ignored); token: PLATFORM_TOKEN;
 * key: the job's id, so that a retried invitation is the same one. */
void lb_platform_invite_call(lb_platform_call *c, const char *base, const char *token,
                             const char *key);
void lb_platform_call_clear(lb_platform_call *c);

/* The request body: {"tenant_id","assessment","candidate":{"name","email"},
 * "lever":{"opportunity_id"[,"candidate_id"][,"posting_id"]}}. lb_malloc'd,
 * NUL-terminated, its length in *len. name NULL: "". */
char *lb_platform_invite_body(const char *tenant, const char *assessment, const char *name,
                              const char *email, const char *opportunity, const char *candidate,
                              const char *posting, size_t *len);

/* A 200/201 answer's invitation_id and url (lb_malloc'd): 0, or LB_EPARSE
 * when either is missing or empty. */
int lb_platform_invitation_parse(const char *body, size_t len, char **id, char **url);

/* The platform's words for a failed call, for a job's last_error: its error
 * message when it sent one. status 0: no answer (error_text says why). */
void lb_platform_describe(int status, const char *error_text, const char *body, size_t len,
                          char *buf, size_t size);

/* 1 when a call that ended so is worth retrying: no answer, 5xx, 408, 429. */
int lb_platform_transient(int status);

/* ---- events: Standard Webhooks signatures ------------------------------- */

/* Longest signing key accepted (bytes, after base64 decoding). */
#define LB_PLATFORM_KEY_MAX 64
/* Shortest: the Standard Webhooks spec asks for 24 to 64 bytes; 16 is let
 * through for keys made by hand. */
#define LB_PLATFORM_KEY_MIN 16
/* "v1," + base64 of 32 bytes + NUL. */
#define LB_PLATFORM_SIG_SIZE 48

/* Decodes a `whsec_<base64>` secret into key[LB_PLATFORM_KEY_MAX]: 0 and
 * *len, or LB_EINVAL (no prefix, not base64, shorter than
 * LB_PLATFORM_KEY_MIN or longer than LB_PLATFORM_KEY_MAX bytes). */
int lb_platform_secret_decode(const char *secret, uint8_t *key, size_t *len);

/* The `webhook-signature` value of a delivery: "v1," and the base64 of
 * HMAC-SHA256(key, id "." timestamp "." body). */
void lb_platform_sign(const uint8_t *key, size_t keylen, const char *id, int64_t timestamp,
                      const char *body, size_t body_len, char out[LB_PLATFORM_SIG_SIZE]);

#endif
