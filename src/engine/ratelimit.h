/* Per-tenant rate limiter: GCRA (the generic cell rate algorithm). One
 * theoretical arrival time per tenant and no refill timer: a request at time
 * t is admitted when TAT - t <= tau, where T = 1/rate and tau = (burst-1)*T,
 * and then TAT = max(TAT, t) + T. So `burst` requests pass at once and then
 * one every T. A hold (Lever's 429) pushes the next admission out and leaves
 * the bucket empty, so traffic resumes at the steady rate.
 *
 * Times are milliseconds on any monotonic clock the caller chooses (tests use
 * a fake one). Plain data: embedded in its tenant, used on the loop thread. */
#ifndef LB_ENGINE_RATELIMIT_H
#define LB_ENGINE_RATELIMIT_H

typedef struct {
    double tat;      /* theoretical arrival time, ms */
    double interval; /* T, ms */
    double tau;      /* burst tolerance, ms */
} lb_rl;

/* rate > 0 requests/s, burst >= 1. */
void lb_rl_init(lb_rl *rl, double rate, int burst);
/* Changes rate and burst, keeping what was already spent. */
void lb_rl_set(lb_rl *rl, double rate, int burst);
/* Admits one request at now: returns 0 and consumes a token, or returns the
 * milliseconds (> 0) until one would be admitted and consumes nothing. */
double lb_rl_acquire(lb_rl *rl, double now);
/* Milliseconds until a request would be admitted (0: now), consuming nothing. */
double lb_rl_wait(const lb_rl *rl, double now);
/* Nothing is admitted before now + hold; then the steady rate, no burst. */
void lb_rl_hold(lb_rl *rl, double now, double hold);

#endif
