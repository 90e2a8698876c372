
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * libFuzzer target for the nginx-free helpers: the input is a query
 * string; every parameter the API reads is looked up, decoded and
 * validated, and the results are checked for what must always hold.  The
 * same bytes, as a User-Agent, go through the sanitiser: what it keeps is
 * valid UTF-8 without control characters, within its room.
 */


#include <stdlib.h>
#include <string.h>

#include "ngx_http_presence_args.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static void check_sanitized(const u_char *p, size_t len);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int          rc;
    u_char      *value;
    size_t       len, n, i, j, k;
    int64_t      v, ids[100];
    const char  *names[] = { "limit", "offset", "threshold_minutes",
                             "user_ids" };

    value = malloc(size + 1);
    if (value == NULL) {
        return 0;
    }

    for (i = 0; i < 4; i++) {
        if (!ngx_http_presence_args_get(data, size, names[i], value, &len)) {
            continue;
        }

        if (len > size) {
            abort();
        }

        rc = ngx_http_presence_args_int(value, len, 1, 100, &v);
        if (rc == NGX_HTTP_PRESENCE_ARG_OK && (v < 1 || v > 100)) {
            abort();
        }

        rc = ngx_http_presence_args_int(value, len, 0, -1, &v);
        if (rc == NGX_HTTP_PRESENCE_ARG_OK && v < 0) {
            abort();
        }

        rc = ngx_http_presence_args_ids(value, len, ids, 100, &n);

        if (rc == NGX_HTTP_PRESENCE_IDS_OK) {
            if (n == 0 || n > 100) {
                abort();
            }

            /* positive, and each once */

            for (j = 0; j < n; j++) {
                if (ids[j] <= 0) {
                    abort();
                }

                for (k = 0; k < j; k++) {
                    if (ids[k] == ids[j]) {
                        abort();
                    }
                }
            }
        }
    }

    len = ngx_http_presence_sanitize(value, size < 512 ? size : 512,
                                     (u_char *) data, size);
    if (len > 512 || len > size) {
        abort();
    }

    check_sanitized(value, len);

    free(value);

    return 0;
}


static void
check_sanitized(const u_char *p, size_t len)
{
    size_t    i, n;
    uint32_t  c;

    for (i = 0; i < len; i += n) {
        c = p[i];

        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f) {
                abort();
            }

            n = 1;
            continue;
        }

        n = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
            : (c & 0xf8) == 0xf0 ? 4 : 0;

        if (n == 0 || i + n > len) {
            abort();
        }

        c &= 0x7f >> n;

        for (size_t k = 1; k < n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                abort();
            }

            c = (c << 6) | (p[i + k] & 0x3f);
        }

        if ((n == 2 && c < 0x80) || (n == 3 && c < 0x800)
            || (n == 4 && c < 0x10000) || c > 0x10ffff
            || (c >= 0xd800 && c <= 0xdfff) || (c >= 0x80 && c < 0xa0))
        {
            abort();
        }
    }
}
