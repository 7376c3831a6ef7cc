#include "core/error.h"

#include <string.h>
#include <uv.h>

const char *lb_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
    case LB_ETOOBIG:
        return "limit exceeded";
    case LB_ENOTFOUND:
        return "not found";
    case LB_ECONFLICT:
        return "conflict";
    case LB_ECORRUPT:
        return "data failed authentication";
    case LB_EIO:
        return "input/output error";
    case LB_ECLOSED:
        return "closed";
    case LB_EPARSE:
        return "malformed input";
    default:
        break;
    }
    if (code < 0 && code > LB_EBASE) return uv_strerror(code);
    return "unknown error";
}
