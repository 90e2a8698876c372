
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


#include <string.h>

#include "ngx_http_presence_args.h"


static size_t ngx_http_presence_args_decode(const u_char *src, size_t len,
    u_char *dst, int plus);
static int ngx_http_presence_args_hex(u_char c);


static int
ngx_http_presence_args_hex(u_char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


/* %XX decoded, a lone "%" kept; in values "+" is a space */

static size_t
ngx_http_presence_args_decode(const u_char *src, size_t len, u_char *dst,
    int plus)
{
    int      h, l;
    size_t   i;
    u_char  *d;

    d = dst;

    for (i = 0; i < len; i++) {

        if (src[i] == '%' && i + 2 < len) {
            h = ngx_http_presence_args_hex(src[i + 1]);
            l = ngx_http_presence_args_hex(src[i + 2]);

            if (h >= 0 && l >= 0) {
                *d++ = (u_char) (h << 4 | l);
                i += 2;
                continue;
            }
        }

        *d++ = (plus && src[i] == '+') ? ' ' : src[i];
    }

    return d - dst;
}


/*
 * The last value of "name" (FastAPI takes the last of repeated
 * parameters), decoded into dst, which has room for len bytes.
 * Returns 1 when found.
 */

int
ngx_http_presence_args_get(const u_char *args, size_t len, const char *name,
    u_char *dst, size_t *dlen)
{
    int            found;
    u_char         key[NGX_HTTP_PRESENCE_ARG_NAME_MAX];
    size_t         nlen, n;
    const u_char  *p, *end, *amp, *eq, *v;

    nlen = strlen(name);
    found = 0;
    *dlen = 0;

    p = args;
    end = args + len;

    while (p < end) {
        amp = memchr(p, '&', end - p);
        if (amp == NULL) {
            amp = end;
        }

        eq = memchr(p, '=', amp - p);
        if (eq == NULL) {
            eq = amp;
        }

        /* a name of more than 3 bytes a character cannot be ours */

        if ((size_t) (eq - p) <= 3 * nlen && (size_t) (eq - p) <= sizeof(key))
        {
            n = ngx_http_presence_args_decode(p, eq - p, key, 0);

            if (n == nlen && memcmp(key, name, nlen) == 0) {
                v = (eq < amp) ? eq + 1 : amp;
                *dlen = ngx_http_presence_args_decode(v, amp - v, dst, 1);
                found = 1;
            }
        }

        p = amp + 1;
    }

    return found;
}


/*
 * An integer as pydantic reads a query parameter: an optional sign and
 * digits; a number beyond any integer type is out of range, not
 * malformed.  max < min means no upper bound (then too large a number is
 * the largest int64).
 */

int
ngx_http_presence_args_int(const u_char *s, size_t len, int64_t min,
    int64_t max, int64_t *value)
{
    int            neg, over;
    int64_t        v;
    const u_char  *p, *end;

    p = s;
    end = s + len;
    neg = 0;

    if (p < end && (*p == '-' || *p == '+')) {
        neg = (*p == '-');
        p++;
    }

    if (p == end) {
        return NGX_HTTP_PRESENCE_ARG_PARSING;
    }

    v = 0;
    over = 0;

    for ( /* void */ ; p < end; p++) {
        if (*p < '0' || *p > '9') {
            return NGX_HTTP_PRESENCE_ARG_PARSING;
        }

        if (v > (INT64_MAX - 9) / 10) {
            over = 1;

        } else {
            v = v * 10 + (*p - '0');
        }
    }

    if (neg) {
        v = -v;
    }

    if ((over && neg) || v < min) {
        return NGX_HTTP_PRESENCE_ARG_LOW;
    }

    if (max < min) {
        *value = over ? INT64_MAX : v;
        return NGX_HTTP_PRESENCE_ARG_OK;
    }

    if (over || v > max) {
        return NGX_HTTP_PRESENCE_ARG_HIGH;
    }

    *value = v;

    return NGX_HTTP_PRESENCE_ARG_OK;
}


/* "1,2,3": at most "max" positive int64s, spaces around, duplicates once */

int
ngx_http_presence_args_ids(const u_char *s, size_t len, int64_t *ids,
    size_t max, size_t *n)
{
    size_t         i, count;
    int64_t        v;
    const u_char  *p, *end, *start, *last, *d;

    *n = 0;

    if (len == 0) {
        return NGX_HTTP_PRESENCE_IDS_EMPTY;
    }

    p = s;
    end = s + len;
    count = 0;

    for ( ;; ) {
        start = p;
        last = memchr(p, ',', end - p);
        if (last == NULL) {
            last = end;
        }

        if (++count > max) {
            return NGX_HTTP_PRESENCE_IDS_TOO_MANY;
        }

        while (start < last && *start == ' ') {
            start++;
        }

        while (last > start && last[-1] == ' ') {
            last--;
        }

        if (start == last || last - start > 19) {
            return NGX_HTTP_PRESENCE_IDS_JUNK;
        }

        for (v = 0, d = start; d < last; d++) {
            if (*d < '0' || *d > '9' || v > (INT64_MAX - (*d - '0')) / 10) {
                return NGX_HTTP_PRESENCE_IDS_JUNK;
            }

            v = v * 10 + (*d - '0');
        }

        if (v == 0) {
            return NGX_HTTP_PRESENCE_IDS_JUNK;
        }

        for (i = 0; i < *n; i++) {
            if (ids[i] == v) {
                break;
            }
        }

        if (i == *n) {
            ids[(*n)++] = v;
        }

        p = memchr(p, ',', end - p);

        if (p == NULL) {
            break;
        }

        p++;
    }

    return NGX_HTTP_PRESENCE_IDS_OK;
}


/*
 * Valid UTF-8 of at most "size" bytes, cut on a character boundary; an
 * invalid byte, a control character (C0, DEL, C1) or a surrogate becomes
 * '?'.  What is stored is always safe for JSON and PostgreSQL.
 */

size_t
ngx_http_presence_sanitize(u_char *dst, size_t size, u_char *src, size_t len)
{
    u_char    *p, *end, *d;
    size_t     n, i;
    uint32_t   c, min;

    p = src;
    end = src + len;
    d = dst;

    while (p < end && d < dst + size) {

        c = *p;
        n = 1;
        min = 0;

        if (c >= 0x80) {
            if ((c & 0xe0) == 0xc0) {
                n = 2;
                c &= 0x1f;
                min = 0x80;

            } else if ((c & 0xf0) == 0xe0) {
                n = 3;
                c &= 0x0f;
                min = 0x800;

            } else if ((c & 0xf8) == 0xf0) {
                n = 4;
                c &= 0x07;
                min = 0x10000;

            } else {
                n = 0;
            }

            for (i = 1; n && i < n; i++) {
                if (p + i == end || (p[i] & 0xc0) != 0x80) {
                    n = 0;
                    break;
                }

                c = (c << 6) | (p[i] & 0x3f);
            }

            if (n && (c < min || c > 0x10ffff
                      || (c >= 0xd800 && c <= 0xdfff)))
            {
                n = 0;
            }
        }

        if (n == 0) {
            /* not UTF-8: this byte becomes '?' */
            *d++ = '?';
            p++;
            continue;
        }

        if (c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0)) {
            *d++ = '?';
            p += n;
            continue;
        }

        if (d + n > dst + size) {
            break;
        }

        memcpy(d, p, n);
        d += n;
        p += n;
    }

    return d - dst;
}


/*
 * UTF-8 as Python decodes it with errors="replace" (FastAPI's query
 * strings): each maximal ill-formed subpart becomes one U+FFFD (Unicode
 * 3.9, table 3-7).  "dst" has room for 3 * len bytes.
 */

size_t
ngx_http_presence_utf8_replace(u_char *dst, const u_char *src, size_t len)
{
    u_char        lo, hi, *d;
    size_t        n, k;
    const u_char  *p, *end;

    p = src;
    end = src + len;
    d = dst;

    while (p < end) {

        if (*p < 0x80) {
            *d++ = *p++;
            continue;
        }

        lo = 0x80;
        hi = 0xbf;

        if (*p >= 0xc2 && *p <= 0xdf) {
            n = 2;

        } else if (*p >= 0xe0 && *p <= 0xef) {
            n = 3;
            lo = (*p == 0xe0) ? 0xa0 : 0x80;
            hi = (*p == 0xed) ? 0x9f : 0xbf;

        } else if (*p >= 0xf0 && *p <= 0xf4) {
            n = 4;
            lo = (*p == 0xf0) ? 0x90 : 0x80;
            hi = (*p == 0xf4) ? 0x8f : 0xbf;

        } else {
            n = 0;
        }

        /* how much of the sequence is well formed */

        k = 1;

        if (n && p + 1 < end && p[1] >= lo && p[1] <= hi) {
            for (k = 2; k < n && p + k < end && (p[k] & 0xc0) == 0x80; k++) {
                /* void */
            }
        }

        if (n && k == n) {
            memcpy(d, p, n);
            d += n;

        } else {
            *d++ = 0xef;
            *d++ = 0xbf;
            *d++ = 0xbd;
        }

        p += k;
    }

    return d - dst;
}


const char  *ngx_http_presence_device_names[] = {
    "other", "mobile", "tablet", "desktop", "bot"
};


/* "word" (lowercase) in ua, whatever the case */

static int
ngx_http_presence_has(const u_char *ua, size_t len, const char *word)
{
    size_t  i, j, n;

    n = strlen(word);

    for (i = 0; i + n <= len; i++) {
        for (j = 0; j < n; j++) {
            u_char  c = ua[i + j];

            if (c >= 'A' && c <= 'Z') {
                c |= 0x20;
            }

            if (c != (u_char) word[j]) {
                break;
            }
        }

        if (j == n) {
            return 1;
        }
    }

    return 0;
}


/*
 * Robots first (Googlebot's smartphone agent says Android and Mobile),
 * then tablets (iPad; Android without "Mobile", as Android tablets send
 * it), phones, desktop systems; anything else (curl, none) is "other"
 */

unsigned
ngx_http_presence_device(const u_char *ua, size_t len)
{
    if (ngx_http_presence_has(ua, len, "bot")
        || ngx_http_presence_has(ua, len, "spider")
        || ngx_http_presence_has(ua, len, "crawl"))
    {
        return NGX_HTTP_PRESENCE_DEVICE_BOT;
    }

    if (ngx_http_presence_has(ua, len, "ipad")
        || ngx_http_presence_has(ua, len, "tablet")
        || (ngx_http_presence_has(ua, len, "android")
            && !ngx_http_presence_has(ua, len, "mobile")))
    {
        return NGX_HTTP_PRESENCE_DEVICE_TABLET;
    }

    if (ngx_http_presence_has(ua, len, "mobi")
        || ngx_http_presence_has(ua, len, "iphone")
        || ngx_http_presence_has(ua, len, "ipod")
        || ngx_http_presence_has(ua, len, "android"))
    {
        return NGX_HTTP_PRESENCE_DEVICE_MOBILE;
    }

    if (ngx_http_presence_has(ua, len, "windows")
        || ngx_http_presence_has(ua, len, "macintosh")
        || ngx_http_presence_has(ua, len, "x11")
        || ngx_http_presence_has(ua, len, "cros"))
    {
        return NGX_HTTP_PRESENCE_DEVICE_DESKTOP;
    }

    return NGX_HTTP_PRESENCE_DEVICE_OTHER;
}
