/* The assessment kinds (api.md "Workflows", "Outbound: the assessment
 * platform", "Inbound: assessment results"), registered in
 * lb_action_kinds[]:
 *
 * - send_assessment {"assessment"}: claims the invitation (tenant,
 *   opportunity, assessment) for the job, reads the opportunity, invites
 *   through the platform (Idempotency-Key: the job id), stores the
 *   invitation, writes the status note "Assessment <a> sent: <url>".
 * - add_note {"text","secret"?}: renders the template over the event's
 *   context and writes the note.
 * - update_status_note: made by POST /results, not by a workflow: rewrites
 *   the invitation's status note with the outcome.
 *
 * Every step with an effect outside is recorded (lb_job_record) before the
 * next one starts, so a restart never repeats it. Lever has no idempotency
 * keys: before a note is created again (a retry, or a restart after the
 * POST may have gone out), the opportunity's notes are listed and one with
 * the same text, created since the first try, is taken instead. See
 * docs/internals/assess.md. */
#ifndef LB_ENGINE_ASSESS_H
#define LB_ENGINE_ASSESS_H

#include "engine/jobs.h"

void lb_assess_send_run(lb_job *job);
void lb_assess_add_note_run(lb_job *job);
void lb_assess_update_note_run(lb_job *job);

/* The status note texts, into buf (cut to size). */
void lb_assess_sent_text(char *buf, size_t size, const char *assessment, const char *url);
/* status "completed" or "expired"; score, max_score, report_url may be NULL. */
void lb_assess_outcome_text(char *buf, size_t size, const char *assessment, const char *status,
                            const char *score, const char *max_score, const char *report_url);

/* A number of the event's context as text ("87", "87.5"); a string is taken
 * as it is; "" when absent. */
void lb_assess_number_text(yajl_val v, char *buf, size_t size);

#endif
