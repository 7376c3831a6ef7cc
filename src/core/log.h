/* JSON-lines logging on stderr: {"ts","level","mod","msg"}. Each line is one
 * write(2), so lines from the loop and the store thread never interleave.
 * Secrets are never passed to the logger. */
#ifndef LB_CORE_LOG_H
#define LB_CORE_LOG_H

typedef enum { LB_LOG_DEBUG, LB_LOG_INFO, LB_LOG_WARN, LB_LOG_ERROR } lb_log_level;

/* "debug", "info", "warn", "error" -> level; 0 or LB_EPARSE. */
int lb_log_level_parse(const char *s, lb_log_level *out);
void lb_log_set_level(lb_log_level level);
int lb_log_enabled(lb_log_level level);

/* Formats the message printf-style; it is JSON-escaped and cut at 1 KiB. */
void lb_log(lb_log_level level, const char *mod, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define lb_debug(mod, ...)                                                                         \
    do {                                                                                           \
        if (lb_log_enabled(LB_LOG_DEBUG)) lb_log(LB_LOG_DEBUG, mod, __VA_ARGS__);                  \
    } while (0)
#define lb_info(mod, ...) lb_log(LB_LOG_INFO, mod, __VA_ARGS__)
#define lb_warn(mod, ...) lb_log(LB_LOG_WARN, mod, __VA_ARGS__)
#define lb_error(mod, ...) lb_log(LB_LOG_ERROR, mod, __VA_ARGS__)

#endif
