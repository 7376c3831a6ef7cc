#include "core/log.h"

#include "core/error.h"
#include "core/strbuf.h"
#include "core/time.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static lb_log_level min_level = LB_LOG_INFO;
static const char *const names[] = {"debug", "info", "warn", "error"};

int lb_log_level_parse(const char *s, lb_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (lb_log_level)i;
            return 0;
        }
    }
    return LB_EPARSE;
}

void lb_log_set_level(lb_log_level level)
{
    min_level = level;
}

int lb_log_enabled(lb_log_level level)
{
    return level >= min_level;
}

void lb_log(lb_log_level level, const char *mod, const char *fmt, ...)
{
    if (level < min_level) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    char ts[LB_TIME_STR_SIZE];
    lb_time_format(lb_time_now_ms(), ts);

    char line[8 * 1024];
    lb_strbuf b;
    lb_strbuf_init_fixed(&b, line, sizeof(line) - 2);
    lb_strbuf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"mod\":", ts, names[level]);
    lb_strbuf_json_str(&b, mod, strlen(mod));
    lb_strbuf_cat(&b, ",\"msg\":");
    lb_strbuf_json_str(&b, msg, strlen(msg));
    lb_strbuf_cat(&b, "}");
    size_t n = b.len;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
