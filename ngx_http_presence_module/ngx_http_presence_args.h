
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * The module's nginx-free helpers: the API's query-string parsers, as
 * FastAPI validates, the UTF-8 sanitiser of what is stored, and the
 * device class of a User-Agent; no nginx here, so the fuzz target links
 * this file alone.
 */


#ifndef _NGX_HTTP_PRESENCE_ARGS_H_INCLUDED_
#define _NGX_HTTP_PRESENCE_ARGS_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>


/* the longest parameter name looked up */
#define NGX_HTTP_PRESENCE_ARG_NAME_MAX   64

#define NGX_HTTP_PRESENCE_ARG_OK         0
#define NGX_HTTP_PRESENCE_ARG_PARSING    1   /* not an integer */
#define NGX_HTTP_PRESENCE_ARG_LOW        2   /* below the minimum */
#define NGX_HTTP_PRESENCE_ARG_HIGH       3   /* above the maximum */

#define NGX_HTTP_PRESENCE_IDS_OK         0
#define NGX_HTTP_PRESENCE_IDS_EMPTY      1
#define NGX_HTTP_PRESENCE_IDS_TOO_MANY   2
#define NGX_HTTP_PRESENCE_IDS_JUNK       3


int ngx_http_presence_args_get(const u_char *args, size_t len,
    const char *name, u_char *dst, size_t *dlen);
int ngx_http_presence_args_int(const u_char *s, size_t len, int64_t min,
    int64_t max, int64_t *value);
int ngx_http_presence_args_ids(const u_char *s, size_t len, int64_t *ids,
    size_t max, size_t *n);
size_t ngx_http_presence_sanitize(u_char *dst, size_t size, u_char *src,
    size_t len);
size_t ngx_http_presence_utf8_replace(u_char *dst, const u_char *src,
    size_t len);


/* a session's device class, from its User-Agent */
#define NGX_HTTP_PRESENCE_DEVICE_OTHER    0
#define NGX_HTTP_PRESENCE_DEVICE_MOBILE   1
#define NGX_HTTP_PRESENCE_DEVICE_TABLET   2
#define NGX_HTTP_PRESENCE_DEVICE_DESKTOP  3
#define NGX_HTTP_PRESENCE_DEVICE_BOT      4
#define NGX_HTTP_PRESENCE_DEVICES         5

extern const char  *ngx_http_presence_device_names[];

unsigned ngx_http_presence_device(const u_char *ua, size_t len);


#endif /* _NGX_HTTP_PRESENCE_ARGS_H_INCLUDED_ */
