
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * The API's JSON writer: straight into a chain of nginx buffers.
 */


#ifndef _NGX_HTTP_PRESENCE_JSON_H_INCLUDED_
#define _NGX_HTTP_PRESENCE_JSON_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* the API's JSON writer */

typedef struct {
    ngx_pool_t                     *pool;
    ngx_chain_t                    *out;
    ngx_chain_t                   **last;
    ngx_buf_t                      *buf;
    off_t                           len;
    ngx_uint_t                      error;
} ngx_http_presence_json_t;


/* a literal: inlined when it fits the current buffer */

#define ngx_http_presence_json_lit(w, s)                                      \
    if ((w)->buf                                                              \
        && (size_t) ((w)->buf->end - (w)->buf->last) >= sizeof(s) - 1)       \
    {                                                                         \
        (w)->buf->last = ngx_cpymem((w)->buf->last, s "", sizeof(s) - 1);   \
        (w)->len += sizeof(s) - 1;                                            \
                                                                              \
    } else {                                                                  \
        ngx_http_presence_json_raw(w, s, sizeof(s) - 1);                      \
    }


void ngx_http_presence_json_init(ngx_http_presence_json_t *w,
    ngx_pool_t *pool, size_t hint);
void ngx_http_presence_json_raw(ngx_http_presence_json_t *w, const char *s,
    size_t len);
void ngx_http_presence_json_str(ngx_http_presence_json_t *w, u_char *s,
    size_t len);
void ngx_http_presence_json_int(ngx_http_presence_json_t *w, int64_t v);
void ngx_http_presence_json_time(ngx_http_presence_json_t *w, int64_t ms);
void ngx_http_presence_json_now(ngx_http_presence_json_t *w);
void ngx_http_presence_json_day(ngx_http_presence_json_t *w, int64_t days);


#endif /* _NGX_HTTP_PRESENCE_JSON_H_INCLUDED_ */
