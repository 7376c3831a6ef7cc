#include "engine/backoff.h"

#include <sodium.h>

int64_t lb_backoff_ceiling(int64_t base_ms, int64_t cap_ms, unsigned attempt)
{
    if (base_ms <= 0) return 0;
    int64_t c = base_ms;
    for (unsigned i = 0; i < attempt && c < cap_ms; i++)
        c = c > INT64_MAX / 2 ? INT64_MAX : c * 2;
    return c < cap_ms ? c : cap_ms;
}

int64_t lb_backoff_pick(int64_t base_ms, int64_t cap_ms, unsigned attempt, uint32_t rnd)
{
    int64_t c = lb_backoff_ceiling(base_ms, cap_ms, attempt);
    /* (rnd + 1) / 2^32 is in (0, 1]: scaled onto [0, c], never above c. */
    return (int64_t)((double)c * ((double)rnd + 1.0) / 4294967296.0);
}

int64_t lb_backoff_delay(int64_t base_ms, int64_t cap_ms, unsigned attempt)
{
    return lb_backoff_pick(base_ms, cap_ms, attempt, randombytes_random());
}
