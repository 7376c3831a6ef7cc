/* The static files of the connect page and the operator console, built into
 * the binary: cmake/embed.cmake turns src/api/pages/ into a C table at build
 * time (pages_data.c in the build directory). Immutable; any thread. */
#ifndef LB_API_PAGES_H
#define LB_API_PAGES_H

#include <stddef.h>

typedef struct {
    const char *name;         /* "connect.js" */
    const char *content_type; /* "text/javascript; charset=utf-8" */
    const char *hash;         /* 16 hex digits of the SHA-256 of the content */
    const unsigned char *data;
    size_t len;
} lb_page_file;

/* Sorted by name. HTML files refer to assets as "/assets/<name>?v=<hash>". */
extern const lb_page_file lb_page_files[];
extern const size_t lb_page_nfiles;

/* The API description, src/api/openapi.json (cmake/embed_file.cmake). */
extern const lb_page_file lb_openapi_file;

#endif
