
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * Verifications per second of the JWT verifier alone (no cache):
 *
 *     jwt_bench ALG KEY TOKEN_FILE SECONDS
 *
 * KEY is a secret for HS*, a public key file otherwise.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ngx_http_presence_jwt.h"


static u_char *ngx_http_presence_bench_read(const char *path, size_t *len);


static u_char *
ngx_http_presence_bench_read(const char *path, size_t *len)
{
    long     n;
    FILE    *f;
    u_char  *p;

    f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        exit(1);
    }

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);

    p = malloc(n + 1);
    if (p == NULL || fread(p, 1, n, f) != (size_t) n) {
        perror(path);
        exit(1);
    }

    fclose(f);

    while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r')) {
        n--;
    }

    *len = n;

    return p;
}


int
main(int argc, char **argv)
{
    int                              alg;
    char                             err[NGX_HTTP_PRESENCE_JWT_ERRLEN];
    double                           secs, elapsed;
    size_t                           klen, tlen;
    u_char                          *key, *token;
    uint64_t                         n;
    struct timespec                  t0, t1;
    ngx_http_presence_jwt_t          jwt;
    ngx_http_presence_jwt_result_t   res;

    if (argc != 5) {
        fprintf(stderr, "usage: jwt_bench ALG KEY TOKEN_FILE SECONDS\n");
        return 2;
    }

    alg = ngx_http_presence_jwt_alg((u_char *) argv[1], strlen(argv[1]));
    if (alg < 0) {
        fprintf(stderr, "jwt_bench: unknown algorithm %s\n", argv[1]);
        return 2;
    }

    ngx_http_presence_jwt_init(&jwt);
    jwt.algorithms = 1u << alg;

    if (argv[1][0] == 'H') {
        key = (u_char *) argv[2];
        klen = strlen(argv[2]);

        if (!ngx_http_presence_jwt_add_secret(&jwt, key, klen, err)) {
            fprintf(stderr, "jwt_bench: %s\n", err);
            return 1;
        }

    } else {
        key = ngx_http_presence_bench_read(argv[2], &klen);

        if (!ngx_http_presence_jwt_add_keys(&jwt, key, klen, err)) {
            fprintf(stderr, "jwt_bench: %s\n", err);
            return 1;
        }
    }

    token = ngx_http_presence_bench_read(argv[3], &tlen);
    secs = atof(argv[4]);

    if (ngx_http_presence_jwt_verify(&jwt, token, tlen, time(NULL), &res)
        != NGX_HTTP_PRESENCE_JWT_VALID)
    {
        fprintf(stderr, "jwt_bench: the token does not verify: %s\n",
                res.reason);
        return 1;
    }

    clock_gettime(CLOCK_MONOTONIC, &t0);
    n = 0;

    do {
        ngx_http_presence_jwt_verify(&jwt, token, tlen, time(NULL), &res);
        n++;

        clock_gettime(CLOCK_MONOTONIC, &t1);
        elapsed = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;

    } while (elapsed < secs);

    printf("%.0f\n", n / elapsed);

    ngx_http_presence_jwt_free(&jwt);

    return 0;
}
