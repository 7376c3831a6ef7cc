/* Retry delays: full jitter, random(0, min(cap, base * 2^attempt)). */
#ifndef LB_ENGINE_BACKOFF_H
#define LB_ENGINE_BACKOFF_H

#include <stdint.h>

/* The upper bound of the delay before retry number `attempt` (0-based). */
int64_t lb_backoff_ceiling(int64_t base_ms, int64_t cap_ms, unsigned attempt);
/* A delay drawn uniformly from [0, ceiling] using rnd (any 32-bit random
 * value; lb_backoff_delay draws its own). */
int64_t lb_backoff_pick(int64_t base_ms, int64_t cap_ms, unsigned attempt, uint32_t rnd);
int64_t lb_backoff_delay(int64_t base_ms, int64_t cap_ms, unsigned attempt);

#endif
