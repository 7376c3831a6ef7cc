/* Error codes: functions return 0 or a negative code. Negative errno values
 * and libuv's UV_E* (which are negative errno on Unix) pass through as they
 * are; the LB_E* set below covers what neither names. */
#ifndef LB_CORE_ERROR_H
#define LB_CORE_ERROR_H

enum {
    LB_EINVAL = -22, /* same value as -EINVAL: bad argument or input */
    LB_EBASE = -10000,
    LB_ETOOBIG,   /* a bounded buffer, list or queue is full */
    LB_ENOTFOUND, /* no such object */
    LB_ECONFLICT, /* unique constraint or state conflict */
    LB_ECORRUPT,  /* stored data failed authentication or parsing */
    LB_EIO,       /* storage or network failure */
    LB_ECLOSED,   /* the object is shutting down */
    LB_EPARSE,    /* malformed input */
};

/* A static, human-readable description of code (never NULL). */
const char *lb_strerror(int code);

#endif
