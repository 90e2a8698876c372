
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

#include "ngx_http_presence_module.h"
#include "ngx_http_presence_json.h"


#define NGX_HTTP_PRESENCE_JSON_CHUNK  4096

/* 0001-01-01T00:00:00 and 9999-12-31T23:59:59.999, as Python allows */
#define NGX_HTTP_PRESENCE_JSON_MS_MIN  (-62135596800000LL)
#define NGX_HTTP_PRESENCE_JSON_MS_MAX  253402300799999LL


static u_char *ngx_http_presence_json_reserve(ngx_http_presence_json_t *w,
    size_t size);
static void ngx_http_presence_json_date(u_char *date, int64_t days,
    int64_t rem);
static void ngx_http_presence_json_civil(int64_t days, int64_t *y,
    int64_t *m, int64_t *d);


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
 * A time as Python's isoformat() with six fraction digits, for any value:
 * before 1970 too, and within Python's years 1 to 9999.  The date of the
 * last second written is kept: most answers write the same second again.
 */

void
ngx_http_presence_json_time(ngx_http_presence_json_t *w, int64_t ms)
{
    u_char          *p;
    int64_t          sec, days, rem;
    ngx_uint_t       m;
    static int64_t   cached = INT64_MIN;
    static u_char    date[sizeof("\"YYYY-MM-DDTHH:MM:SS")];

    p = ngx_http_presence_json_reserve(w, 28);
    if (p == NULL) {
        return;
    }

    ms = ngx_max(ms, NGX_HTTP_PRESENCE_JSON_MS_MIN);
    ms = ngx_min(ms, NGX_HTTP_PRESENCE_JSON_MS_MAX);

    /* floor division: -1 ms is 23:59:59.999 of the day before */

    sec = ms / 1000 - (ms % 1000 < 0);
    m = (ngx_uint_t) (ms - sec * 1000);

    if (sec != cached) {
        days = sec / NGX_HTTP_PRESENCE_DAY
               - (sec % NGX_HTTP_PRESENCE_DAY < 0);
        rem = sec - days * NGX_HTTP_PRESENCE_DAY;

        ngx_http_presence_json_date(date, days, rem);
        cached = sec;
    }

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


/* "YYYY-MM-DDTHH:MM:SS after a quote */

static void
ngx_http_presence_json_date(u_char *date, int64_t days, int64_t rem)
{
    int64_t  y, mo, d;

    ngx_http_presence_json_civil(days, &y, &mo, &d);

    (void) ngx_sprintf(date, "\"%04L-%02L-%02LT%02L:%02L:%02L",
                       y, mo, d, rem / NGX_HTTP_PRESENCE_HOUR,
                       rem / 60 % 60, rem % 60);
}


/* "YYYY-MM-DD" of a day counted from 1970-01-01, quoted */

void
ngx_http_presence_json_day(ngx_http_presence_json_t *w, int64_t days)
{
    u_char   buf[sizeof("\"YYYY-MM-DD\"")];
    int64_t  y, m, d;

    ngx_http_presence_json_civil(days, &y, &m, &d);
    ngx_sprintf(buf, "\"%04L-%02L-%02L\"", y, m, d);

    ngx_http_presence_json_raw(w, (char *) buf, sizeof(buf) - 1);
}


/*
 * The civil date of a day counted from 1970-01-01 (Howard Hinnant's
 * days_from_civil, inverted), any sign, proleptic Gregorian
 */

static void
ngx_http_presence_json_civil(int64_t days, int64_t *y, int64_t *m,
    int64_t *d)
{
    int64_t  z, era, doe, yoe, doy, mp;

    z = days + 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yoe + era * 400 + (*m <= 2);
}


void
ngx_http_presence_json_now(ngx_http_presence_json_t *w)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    ngx_http_presence_json_time(w, (int64_t) tp->sec * 1000 + tp->msec);
}
