#include "engine/template.h"

#include "core/error.h"

#include <string.h>

/* An unclosed "{{" is reported with this many bytes of what follows. */
#define UNCLOSED_SHOWN 16

static const char *const names[LB_TPL_NVARS] = {
    [LB_TPL_CANDIDATE_NAME] = "candidate.name", [LB_TPL_CANDIDATE_EMAIL] = "candidate.email",
    [LB_TPL_ASSESSMENT] = "assessment",         [LB_TPL_SCORE] = "score",
    [LB_TPL_MAX_SCORE] = "max_score",           [LB_TPL_REPORT_URL] = "report_url",
    [LB_TPL_INVITATION_URL] = "invitation_url",
};

const char *lb_template_var_name(int var)
{
    return var >= 0 && var < LB_TPL_NVARS ? names[var] : NULL;
}

/* One "{{...}}" found at text[start]: its extent and variable. */
typedef struct {
    size_t start; /* offset of "{{" */
    size_t end;   /* offset just past "}}", or of the end of text when unclosed */
    int closed;
    int var; /* lb_template_var, or -1 when unknown */
} token;

static int var_of(const char *name, size_t len)
{
    while (len > 0 && *name == ' ') {
        name++;
        len--;
    }
    while (len > 0 && name[len - 1] == ' ')
        len--;
    for (int i = 0; i < LB_TPL_NVARS; i++)
        if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0) return i;
    return -1;
}

/* The next "{{" at or after *pos; 0 at the end of text. */
static int next_token(const char *text, size_t *pos, token *t)
{
    const char *open = strstr(text + *pos, "{{");
    if (open == NULL) return 0;
    t->start = (size_t)(open - text);
    const char *close = strstr(open + 2, "}}");
    if (close == NULL) {
        t->end = t->start + strlen(open);
        t->closed = 0;
        t->var = -1;
    } else {
        t->end = (size_t)(close - text) + 2;
        t->closed = 1;
        t->var = var_of(open + 2, (size_t)(close - open) - 2);
    }
    *pos = t->end;
    return 1;
}

int lb_template_check(const char *text, char *bad, size_t badlen)
{
    size_t pos = 0;
    token t;
    while (next_token(text, &pos, &t)) {
        if (t.var >= 0) continue;
        size_t n = t.end - t.start;
        if (!t.closed && n > 2 + UNCLOSED_SHOWN) n = 2 + UNCLOSED_SHOWN;
        if (badlen > 0) {
            if (n > badlen - 1) n = badlen - 1;
            memcpy(bad, text + t.start, n);
            bad[n] = '\0';
        }
        return LB_EINVAL;
    }
    if (badlen > 0) bad[0] = '\0';
    return 0;
}

unsigned lb_template_uses(const char *text)
{
    unsigned used = 0;
    size_t pos = 0;
    token t;
    while (next_token(text, &pos, &t))
        if (t.var >= 0) used |= 1u << t.var;
    return used;
}

/* Appends s[0..n) to out, cutting at a UTF-8 boundary when it does not fit. */
static int put(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
    if (n <= cap - *len) {
        memcpy(out + *len, s, n);
        *len += n;
        return 0;
    }
    size_t room = cap - *len;
    /* Back off over continuation bytes (10xxxxxx) to the start of a char. */
    while (room > 0 && ((unsigned char)s[room] & 0xC0) == 0x80)
        room--;
    memcpy(out + *len, s, room);
    *len += room;
    return LB_ETOOBIG;
}

int lb_template_render(const char *text, const lb_template_values *vals, char *out, size_t size)
{
    if (size == 0) return LB_ETOOBIG;
    size_t cap = size - 1;
    if (cap > LB_TEMPLATE_OUT_MAX) cap = LB_TEMPLATE_OUT_MAX;
    size_t len = 0, pos = 0, done = 0;
    int rc = 0;
    token t;
    while (rc == 0 && next_token(text, &pos, &t)) {
        rc = put(out, cap, &len, text + done, t.start - done);
        if (rc == 0) {
            const char *v = t.var >= 0 && vals != NULL ? vals->v[t.var] : NULL;
            if (t.var < 0)
                rc = put(out, cap, &len, text + t.start, t.end - t.start);
            else if (v != NULL)
                rc = put(out, cap, &len, v, strlen(v));
        }
        done = t.end;
    }
    if (rc == 0) rc = put(out, cap, &len, text + done, strlen(text + done));
    out[len] = '\0';
    return rc != 0 ? rc : (int)len;
}
