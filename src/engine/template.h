/* Note templates of the add_note action (api.md "Workflows"): plain text
 * with placeholders `{{candidate.name}} {{candidate.email}} {{assessment}}
 * {{score}} {{max_score}} {{report_url}} {{invitation_url}}`. Spaces inside
 * the braces are allowed (`{{ score }}`). Every other `{{` is an error: an
 * unknown name, an empty one, or a `{{` with no `}}` after it. A lone `{`
 * or `}}` is text. Pure functions: no I/O, no allocation. */
#ifndef LB_ENGINE_TEMPLATE_H
#define LB_ENGINE_TEMPLATE_H

#include <stddef.h>

/* Longest rendered note (bytes, NUL excluded); longer output is cut at a
 * UTF-8 character boundary. */
#define LB_TEMPLATE_OUT_MAX 16384
/* Longest placeholder reported by lb_template_check, NUL included. */
#define LB_TEMPLATE_BAD_MAX 64

typedef enum {
    LB_TPL_CANDIDATE_NAME,
    LB_TPL_CANDIDATE_EMAIL,
    LB_TPL_ASSESSMENT,
    LB_TPL_SCORE,
    LB_TPL_MAX_SCORE,
    LB_TPL_REPORT_URL,
    LB_TPL_INVITATION_URL,
    LB_TPL_NVARS
} lb_template_var;

/* The values to fill in, by lb_template_var; NULL renders as "". Borrowed. */
typedef struct {
    const char *v[LB_TPL_NVARS];
} lb_template_values;

/* 0 when every placeholder of text is known; otherwise LB_EINVAL with the
 * first offending one copied into bad (as written, braces included, cut to
 * badlen - 1 bytes; an unclosed `{{` is reported with what follows it, up to
 * 16 bytes). bad may be NULL when badlen is 0. */
int lb_template_check(const char *text, char *bad, size_t badlen);

/* Bit (1u << var) set for each variable text uses (unknown ones ignored). */
unsigned lb_template_uses(const char *text);

/* The placeholder name of var ("candidate.name"), or NULL. */
const char *lb_template_var_name(int var);

/* Renders text into out[0..size) (NUL-terminated when size > 0). Malformed
 * or unknown placeholders are copied as they are (lb_template_check refuses
 * them earlier). Returns the length written, or LB_ETOOBIG when the output
 * was cut to fit (at a UTF-8 character boundary; out still holds the cut
 * text). At most LB_TEMPLATE_OUT_MAX bytes are written, whatever size is. */
int lb_template_render(const char *text, const lb_template_values *vals, char *out, size_t size);

#endif
