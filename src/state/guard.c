/* The guards of delayed triggers and stage moves: see guard.h. */
#include "state/guard.h"

#include "json/json.h"

#include <string.h>

static int same(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

const char *lb_guard_trigger(const lb_guard_opp *o, const char *to_stage, yajl_val postings,
                             const char *moved)
{
    if (o->archived) return "archived";
    if (to_stage != NULL && !same(o->stage, to_stage)) return moved;
    if (postings == NULL || !YAJL_IS_ARRAY(postings)) return NULL;
    for (size_t i = 0; i < postings->u.array.len; i++) {
        yajl_val p = postings->u.array.values[i];
        for (size_t k = 0; YAJL_IS_STRING(p) && k < o->npostings; k++)
            if (same(p->u.string, o->postings[k])) return NULL;
    }
    return "postings_not_matched";
}

lb_guard_move_outcome lb_guard_move(const lb_guard_opp *o, yajl_val action, int by_result,
                                    const char *invited_stage)
{
    if (same(o->stage, lb_json_get_str(action, "stage"))) return LB_GUARD_ALREADY;
    yajl_val only = lb_json_get(action, "only_from");
    if (only != NULL && YAJL_IS_STRING(only)) return LB_GUARD_MOVE; /* "any" */
    if (only != NULL && YAJL_IS_ARRAY(only)) {
        for (size_t i = 0; i < only->u.array.len; i++)
            if (YAJL_IS_STRING(only->u.array.values[i]) &&
                same(o->stage, only->u.array.values[i]->u.string))
                return LB_GUARD_MOVE;
        return LB_GUARD_SKIP;
    }
    if (!by_result || invited_stage == NULL || *invited_stage == '\0') return LB_GUARD_MOVE;
    return same(o->stage, invited_stage) ? LB_GUARD_MOVE : LB_GUARD_SKIP;
}

int lb_guard_by_result(const char *event)
{
    return event != NULL &&
           (strcmp(event, "assessment_completed") == 0 || strcmp(event, "assessment_expired") == 0);
}
