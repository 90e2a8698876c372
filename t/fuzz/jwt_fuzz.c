
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * libFuzzer target for the JWT verifier: every input is verified as a
 * token against HMAC, RSA, EC and Ed25519 keys with every algorithm
 * allowed; an input that starts with '{' or '-' is also loaded as a key
 * file (JWKS / PEM).  "make fuzz" builds and runs it.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_presence_jwt.h"


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static ngx_http_presence_jwt_t  jwt;


/* RFC 7515 A.3's P-256 key, and a fuzzing secret */

static const char  ngx_http_presence_fuzz_jwks[] =
    "{\"keys\":["
    "{\"kty\":\"EC\",\"crv\":\"P-256\","
    "\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
    "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"},"
    "{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
    "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"},"
    "{\"kty\":\"RSA\",\"kid\":\"r1\",\"e\":\"AQAB\","
    "\"n\":\"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1Wl"
    "UzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknT"
    "cQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiI"
    "oLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKj"
    "TTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0"
    "KQB0GaDWFLN-aEAw3vRw\"}"
    "]}";


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char  err[NGX_HTTP_PRESENCE_JWT_ERRLEN];

    ngx_http_presence_jwt_init(&jwt);

    jwt.algorithms = (1u << NGX_HTTP_PRESENCE_JWT_NALGS) - 1;
    jwt.leeway = 10000000000LL;
    jwt.max_size = 65536;

    if (!ngx_http_presence_jwt_add_secret(&jwt, (u_char *) "fuzz-secret",
                                          11, err)
        || !ngx_http_presence_jwt_add_keys(&jwt,
                              (u_char *) ngx_http_presence_fuzz_jwks,
                              sizeof(ngx_http_presence_fuzz_jwks) - 1, err))
    {
        fprintf(stderr, "jwt_fuzz: %s\n", err);
        abort();
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                             err[NGX_HTTP_PRESENCE_JWT_ERRLEN];
    ngx_http_presence_jwt_t          keys;
    ngx_http_presence_jwt_result_t   res;
    ngx_http_presence_jwt_status_e   status;

    status = ngx_http_presence_jwt_verify(&jwt, data, size, 1700000000,
                                          &res);

    if (status == NGX_HTTP_PRESENCE_JWT_VALID && res.user_id <= 0) {
        abort();
    }

    if (size > 0 && (data[0] == '{' || data[0] == '-')) {
        ngx_http_presence_jwt_init(&keys);
        keys.algorithms = (1u << NGX_HTTP_PRESENCE_JWT_NALGS) - 1;

        if (ngx_http_presence_jwt_add_keys(&keys, data, size, err)) {
            (void) ngx_http_presence_jwt_check(&keys, err);
        }

        ngx_http_presence_jwt_free(&keys);
    }

    return 0;
}
