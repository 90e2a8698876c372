
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * A small JSON writer for the API's answers, straight into a chain of
 * nginx buffers: no tree of values, no allocation per value.  Strings are
 * UTF-8 already (sanitised before they reach the zone, or from
 * PostgreSQL); quotes, backslashes and control characters are escaped.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_json.h"


#define NGX_HTTP_PRESENCE_JSON_CHUNK  4096


static u_char *ngx_http_presence_json_reserve(ngx_http_presence_json_t *w,
    size_t size);


void
ngx_http_presence_json_init(ngx_http_presence_json_t *w, ngx_pool_t *pool,
    size_t hint)
{
    ngx_memzero(w, sizeof(ngx_http_presence_json_t));

    w->pool = pool;
    w->last = &w->out;

    /* one buffer of about the answer's size */

    (void) ngx_http_presence_json_reserve(w, hint);
}


/* room for "size" bytes in the current buffer, or a new one */

static u_char *
ngx_http_presence_json_reserve(ngx_http_presence_json_t *w, size_t size)
{
    ngx_chain_t  *cl;

    if (w->error) {
        return NULL;
    }

    if (w->buf && (size_t) (w->buf->end - w->buf->last) >= size) {
        return w->buf->last;
    }

    w->buf = ngx_create_temp_buf(w->pool,
                                 ngx_max(size, NGX_HTTP_PRESENCE_JSON_CHUNK));
    cl = ngx_alloc_chain_link(w->pool);

    if (w->buf == NULL || cl == NULL) {
        w->error = 1;
        return NULL;
    }

    cl->buf = w->buf;
    cl->next = NULL;

    *w->last = cl;
    w->last = &cl->next;

    return w->buf->last;
}


void
ngx_http_presence_json_raw(ngx_http_presence_json_t *w, const char *s,
    size_t len)
{
    u_char  *p;

    p = ngx_http_presence_json_reserve(w, len);
    if (p == NULL) {
        return;
    }

    w->buf->last = ngx_cpymem(p, s, len);
    w->len += len;
}


void
ngx_http_presence_json_str(ngx_http_presence_json_t *w, u_char *s,
    size_t len)
{
    u_char      *p, *start, c;
    size_t       i, size;
    static char  hex[] = "0123456789abcdef";

    /* the quotes, and 1 more byte for '"' and '\', 5 for the others */

    size = len + 2;

    for (i = 0; i < len; i++) {
        if (s[i] < 0x20) {
            size += 5;

        } else if (s[i] == '"' || s[i] == '\\') {
            size++;
        }
    }

    p = ngx_http_presence_json_reserve(w, size);
    if (p == NULL) {
        return;
    }

    start = p;
    *p++ = '"';

    for (i = 0; i < len; i++) {
        c = s[i];

        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = c;

        } else if (c < 0x20) {
            *p++ = '\\';
            *p++ = 'u';
            *p++ = '0';
            *p++ = '0';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0xf];

        } else {
            *p++ = c;
        }
    }

    *p++ = '"';

    w->len += p - start;
    w->buf->last = p;
}


void
ngx_http_presence_json_int(ngx_http_presence_json_t *w, int64_t v)
{
    u_char    *p, digits[NGX_INT64_LEN], *d;
    uint64_t   u;

    p = ngx_http_presence_json_reserve(w, NGX_INT64_LEN);
    if (p == NULL) {
        return;
    }

    if (v < 0) {
        *p++ = '-';
        w->len++;
        u = (uint64_t) -(v + 1) + 1;

    } else {
        u = (uint64_t) v;
    }

    d = digits + NGX_INT64_LEN;

    do {
        *--d = (u_char) ('0' + u % 10);
        u /= 10;
    } while (u);

    w->len += digits + NGX_INT64_LEN - d;
    w->buf->last = ngx_cpymem(p, d, digits + NGX_INT64_LEN - d);
}


/*
 * "YYYY-MM-DDTHH:MM:SS.ffffff", UTC, six fraction digits always; the
 * seconds part is kept for the next time of the same second
 */

void
ngx_http_presence_json_time(ngx_http_presence_json_t *w, int64_t ms)
{
    u_char          *p;
    time_t           sec;
    ngx_uint_t       m;
    ngx_tm_t         tm;
    static time_t    cached = -1;
    static u_char    date[sizeof("\"YYYY-MM-DDTHH:MM:SS")];

    p = ngx_http_presence_json_reserve(w, 28);
    if (p == NULL) {
        return;
    }

    sec = (time_t) (ms / 1000);

    if (sec != cached) {
        ngx_gmtime(sec, &tm);
        (void) ngx_sprintf(date, "\"%04d-%02d-%02dT%02d:%02d:%02d",
                           tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                           tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);
        cached = sec;
    }

    m = (ngx_uint_t) (ms % 1000);

    p = ngx_cpymem(p, date, sizeof(date) - 1);
    *p++ = '.';
    *p++ = (u_char) ('0' + m / 100);
    *p++ = (u_char) ('0' + m / 10 % 10);
    *p++ = (u_char) ('0' + m % 10);
    *p++ = '0';
    *p++ = '0';
    *p++ = '0';
    *p++ = '"';

    w->len += 28;
    w->buf->last = p;
}


void
ngx_http_presence_json_now(ngx_http_presence_json_t *w)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    ngx_http_presence_json_time(w, (int64_t) tp->sec * 1000 + tp->msec);
}
