/* Is this opportunity still where the workflow wants it? The checks a job
 * makes just before it writes, and a dry run makes without writing
 * (api.md "Delayed, re-validated triggers", "Guarded stage moves"). Pure:
 * the caller read the opportunity (and the invitation) and passes what it
 * found. */
#ifndef LB_STATE_GUARD_H
#define LB_STATE_GUARD_H

#include <stddef.h>
#include <yajl/yajl_tree.h>

/* The opportunity as a guard sees it; strings borrowed. */
typedef struct {
    const char *stage; /* its current stage id, NULL when Lever did not say */
    int archived;
    const char *const *postings; /* posting ids of its applications */
    size_t npostings;
} lb_guard_opp;

/* Why a stage_changed workflow no longer applies to the opportunity: NULL
 * when it does; "archived"; `moved` (the caller's word: "moved_on" for a
 * delayed job, "not_in_to_stage" for a dry run) when it is not in to_stage
 * (to_stage NULL: not checked); "postings_not_matched" when postings (an
 * array, or NULL: not checked) names none of its applications. Checked in
 * that order. */
const char *lb_guard_trigger(const lb_guard_opp *o, const char *to_stage, yajl_val postings,
                             const char *moved);

/* What a move_stage action does with the opportunity as it is now. */
typedef enum {
    LB_GUARD_MOVE,    /* PUT the stage */
    LB_GUARD_ALREADY, /* already in the target stage: success, no write */
    LB_GUARD_SKIP,    /* skipped: stage_changed_meanwhile */
} lb_guard_move_outcome;

/* action: the move_stage action ({"stage","only_from"?}). Its guard is
 * only_from (a list of stage ids, or "any": none); without it, a move fired
 * by a result (by_result) is guarded by invited_stage, the stage the
 * opportunity was in when its invitation was sent (NULL: not known, no
 * guard). A move to the current stage is LB_GUARD_ALREADY whatever the
 * guard says. */
lb_guard_move_outcome lb_guard_move(const lb_guard_opp *o, yajl_val action, int by_result,
                                    const char *invited_stage);

/* 1 when the trigger event named is a result (assessment_completed or
 * assessment_expired). */
int lb_guard_by_result(const char *event);

#endif
