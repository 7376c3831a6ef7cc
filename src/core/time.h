/* Wall-clock time, RFC 3339 formatting, and the duration and size syntax of
 * the configuration ("250ms", "10s", "5m", "48h"; "1MiB", "512KiB"). */
#ifndef LB_CORE_TIME_H
#define LB_CORE_TIME_H

#include <stddef.h>
#include <stdint.h>

/* Size of an RFC 3339 UTC timestamp with milliseconds, NUL included:
 * "2026-11-27T03:36:20.123Z". */
#define LB_TIME_STR_SIZE 25

/* Milliseconds since the Unix epoch (wall clock). */
int64_t lb_time_now_ms(void);

/* Formats ms since the epoch as RFC 3339 UTC with milliseconds. */
void lb_time_format(int64_t ms, char out[LB_TIME_STR_SIZE]);

/* Parses RFC 3339 (any offset, optional fraction) of a real calendar date
 * (leap years counted) no earlier than 1970-01-01T00:00:00Z. 0 or LB_EPARSE. */
int lb_time_parse(const char *s, size_t len, int64_t *ms);

/* "250ms", "10s", "5m", "48h", "2d"; a bare number is seconds. 0 or LB_EPARSE. */
int lb_duration_parse(const char *s, int64_t *ms);

/* "1048576", "512KiB", "1MiB", "1GiB" (also KB/MB/GB as powers of 1000, "k"/"m"
 * as powers of 1024). 0 or LB_EPARSE. */
int lb_size_parse(const char *s, uint64_t *bytes);

#endif
