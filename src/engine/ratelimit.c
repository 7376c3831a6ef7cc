#include "engine/ratelimit.h"

void lb_rl_init(lb_rl *rl, double rate, int burst)
{
    rl->tat = 0;
    lb_rl_set(rl, rate, burst);
}

void lb_rl_set(lb_rl *rl, double rate, int burst)
{
    rl->interval = 1000.0 / rate;
    rl->tau = (burst > 1 ? burst - 1 : 0) * rl->interval;
}

double lb_rl_wait(const lb_rl *rl, double now)
{
    double wait = rl->tat - rl->tau - now;
    return wait > 0 ? wait : 0;
}

double lb_rl_acquire(lb_rl *rl, double now)
{
    double wait = lb_rl_wait(rl, now);
    if (wait > 0) return wait;
    rl->tat = (rl->tat > now ? rl->tat : now) + rl->interval;
    return 0;
}

void lb_rl_hold(lb_rl *rl, double now, double hold)
{
    double tat = now + hold + rl->tau;
    if (tat > rl->tat) rl->tat = tat;
}
