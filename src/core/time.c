#include "core/time.h"

#include "core/error.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

int64_t lb_time_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void lb_time_format(int64_t ms, char out[LB_TIME_STR_SIZE])
{
    time_t secs = (time_t)(ms / 1000);
    int frac = (int)(ms % 1000);
    if (frac < 0) {
        frac += 1000;
        secs--;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, LB_TIME_STR_SIZE, "%Y-%m-%dT%H:%M:%S", &tm);
    if (n != 19) { /* years outside 0..9999 */
        memcpy(out, "0000-00-00T00:00:00.000Z", LB_TIME_STR_SIZE);
        return;
    }
    out[19] = '.';
    out[20] = (char)('0' + frac / 100);
    out[21] = (char)('0' + frac / 10 % 10);
    out[22] = (char)('0' + frac % 10);
    out[23] = 'Z';
    out[24] = '\0';
}

static int digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) return LB_EPARSE;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int lb_time_parse(const char *s, size_t len, int64_t *ms)
{
    /* YYYY-MM-DDTHH:MM:SS[.fff...](Z|+HH:MM|-HH:MM) */
    int y, mo, d, h, mi, se, frac = 0, off = 0;
    if (len < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
        s[16] != ':')
        return LB_EPARSE;
    if (digits(s, 4, &y) || digits(s + 5, 2, &mo) || digits(s + 8, 2, &d) ||
        digits(s + 11, 2, &h) || digits(s + 14, 2, &mi) || digits(s + 17, 2, &se))
        return LB_EPARSE;
    /* A real calendar date (month lengths, Gregorian leap years), and
     * nothing before 1970: times here are milliseconds since then. */
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap) || h > 23 ||
        mi > 59 || se > 60)
        return LB_EPARSE;
    size_t i = 19;
    if (i < len && s[i] == '.') {
        int scale = 100;
        size_t start = ++i;
        while (i < len && isdigit((unsigned char)s[i])) {
            frac += (s[i] - '0') * scale;
            scale /= 10;
            i++;
        }
        if (i == start) return LB_EPARSE;
    }
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i + 6 == len && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        int oh, om;
        if (digits(s + i + 1, 2, &oh) || digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
            return LB_EPARSE;
        off = (oh * 60 + om) * (s[i] == '-' ? -1 : 1);
        i += 6;
    } else {
        return LB_EPARSE;
    }
    if (i != len) return LB_EPARSE;
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    time_t t = timegm(&tm);
    int64_t v = ((int64_t)t - (int64_t)off * 60) * 1000 + frac;
    if (v < 0) /* 1970-01-01 with an offset east of UTC */
        return LB_EPARSE;
    *ms = v;
    return 0;
}

int lb_duration_parse(const char *s, int64_t *ms)
{
    /* A plain decimal number (no sign, exponent or hex; no leading zero but
     * in "0" or "0.5"), then an optional unit. */
    if (s == NULL || !isdigit((unsigned char)*s)) return LB_EPARSE;
    const char *p = s;
    while (isdigit((unsigned char)*p))
        p++;
    if (s[0] == '0' && p - s > 1) return LB_EPARSE;
    if (p - s > 15) return LB_EPARSE;
    if (*p == '.') {
        const char *f = ++p;
        while (isdigit((unsigned char)*p))
            p++;
        if (p == f || p - f > 9) return LB_EPARSE;
    }
    const char *end = p;
    double v = strtod(s, NULL); /* only digits and one '.' are left for it */
    double mul;
    if (*end == '\0' || strcmp(end, "s") == 0)
        mul = 1000;
    else if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "m") == 0)
        mul = 60e3;
    else if (strcmp(end, "h") == 0)
        mul = 3600e3;
    else if (strcmp(end, "d") == 0)
        mul = 86400e3;
    else
        return LB_EPARSE;
    double r = v * mul;
    if (r > 9.2e15) return LB_EPARSE;
    *ms = (int64_t)r;
    return 0;
}

int lb_size_parse(const char *s, uint64_t *bytes)
{
    char *end;
    if (s == NULL || !isdigit((unsigned char)*s)) return LB_EPARSE;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s) return LB_EPARSE;
    static const struct {
        const char *suffix;
        uint64_t mul;
    } units[] = {
        {"", 1},
        {"b", 1},
        {"k", 1024},
        {"kib", 1024},
        {"kb", 1000},
        {"m", 1048576},
        {"mib", 1048576},
        {"mb", 1000000},
        {"g", 1073741824},
        {"gib", 1073741824},
        {"gb", 1000000000},
    };
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(end, units[i].suffix) == 0) {
            if (v > UINT64_MAX / units[i].mul) return LB_EPARSE;
            *bytes = (uint64_t)v * units[i].mul;
            return 0;
        }
    }
    return LB_EPARSE;
}
