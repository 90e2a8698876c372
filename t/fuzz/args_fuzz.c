
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * libFuzzer target for the API's query-string parsers: the input is a
 * query string; every parameter the API reads is looked up, decoded and
 * validated, and the results are checked for what must always hold.
 */


#include <stdlib.h>
#include <string.h>

#include "ngx_http_presence_args.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


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

    free(value);

    return 0;
}
