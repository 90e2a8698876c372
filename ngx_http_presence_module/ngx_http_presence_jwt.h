
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * A small JWS verifier (compact serialisation only) on OpenSSL and
 * jansson.  It does not depend on nginx, so the fuzz target links it alone.
 */


#ifndef _NGX_HTTP_PRESENCE_JWT_H_INCLUDED_
#define _NGX_HTTP_PRESENCE_JWT_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/evp.h>


typedef enum {
    NGX_HTTP_PRESENCE_JWT_HS256 = 0,
    NGX_HTTP_PRESENCE_JWT_HS384,
    NGX_HTTP_PRESENCE_JWT_HS512,
    NGX_HTTP_PRESENCE_JWT_RS256,
    NGX_HTTP_PRESENCE_JWT_RS384,
    NGX_HTTP_PRESENCE_JWT_RS512,
    NGX_HTTP_PRESENCE_JWT_PS256,
    NGX_HTTP_PRESENCE_JWT_PS384,
    NGX_HTTP_PRESENCE_JWT_PS512,
    NGX_HTTP_PRESENCE_JWT_ES256,
    NGX_HTTP_PRESENCE_JWT_ES384,
    NGX_HTTP_PRESENCE_JWT_ES512,
    NGX_HTTP_PRESENCE_JWT_EDDSA,
    NGX_HTTP_PRESENCE_JWT_NALGS
} ngx_http_presence_jwt_alg_e;


typedef enum {
    NGX_HTTP_PRESENCE_JWT_UNKNOWN = 0,
    NGX_HTTP_PRESENCE_JWT_VALID,
    NGX_HTTP_PRESENCE_JWT_MISSING,
    NGX_HTTP_PRESENCE_JWT_INVALID,
    NGX_HTTP_PRESENCE_JWT_EXPIRED
} ngx_http_presence_jwt_status_e;


typedef enum {
    NGX_HTTP_PRESENCE_JWT_KEY_HMAC = 1,
    NGX_HTTP_PRESENCE_JWT_KEY_RSA,
    NGX_HTTP_PRESENCE_JWT_KEY_EC,
    NGX_HTTP_PRESENCE_JWT_KEY_ED25519
} ngx_http_presence_jwt_key_type_e;


#define NGX_HTTP_PRESENCE_JWT_ALG(a)  (1u << NGX_HTTP_PRESENCE_JWT_##a)

#define NGX_HTTP_PRESENCE_JWT_HS_ALGS                                        \
    (NGX_HTTP_PRESENCE_JWT_ALG(HS256) | NGX_HTTP_PRESENCE_JWT_ALG(HS384)     \
     | NGX_HTTP_PRESENCE_JWT_ALG(HS512))

#define NGX_HTTP_PRESENCE_JWT_RSA_ALGS                                       \
    (NGX_HTTP_PRESENCE_JWT_ALG(RS256) | NGX_HTTP_PRESENCE_JWT_ALG(RS384)     \
     | NGX_HTTP_PRESENCE_JWT_ALG(RS512) | NGX_HTTP_PRESENCE_JWT_ALG(PS256)   \
     | NGX_HTTP_PRESENCE_JWT_ALG(PS384) | NGX_HTTP_PRESENCE_JWT_ALG(PS512))

#define NGX_HTTP_PRESENCE_JWT_SESSION_ID_LEN  32

#define NGX_HTTP_PRESENCE_JWT_ERRLEN  256

#define NGX_HTTP_PRESENCE_JWT_MAX_CHECKS  32


typedef struct {
    ngx_http_presence_jwt_key_type_e   type;
    unsigned                           algs;   /* what it may verify */
    char                              *kid;    /* NULL: none */
    u_char                            *secret;
    size_t                             secret_len;
    EVP_PKEY                          *pkey;
} ngx_http_presence_jwt_key_t;


/* a claim whose value is noted in the result, e.g. an admin role */

typedef struct {
    const char                        *name;
    const char                        *value;
} ngx_http_presence_jwt_check_t;


typedef struct {
    ngx_http_presence_jwt_key_t       *keys;
    size_t                             nkeys;
    size_t                             nalloc;

    unsigned                           algorithms;
    int                                require_exp;
    int64_t                            leeway;
    size_t                             max_size;

    char                              *claim;
    char                              *issuer;
    char                             **audiences;
    size_t                             naudiences;

    ngx_http_presence_jwt_check_t      checks[NGX_HTTP_PRESENCE_JWT_MAX_CHECKS];
    size_t                             nchecks;
} ngx_http_presence_jwt_t;


typedef struct {
    int64_t                            user_id;
    int64_t                            exp;    /* INT64_MAX: none */
    uint32_t                           matched; /* checks that hold */
    u_char                             session_id[
                                         NGX_HTTP_PRESENCE_JWT_SESSION_ID_LEN];
    const char                        *reason; /* why it was refused */
} ngx_http_presence_jwt_result_t;


void ngx_http_presence_jwt_init(ngx_http_presence_jwt_t *jwt);
void ngx_http_presence_jwt_free(ngx_http_presence_jwt_t *jwt);

int ngx_http_presence_jwt_alg(const u_char *name, size_t len);
const char *ngx_http_presence_jwt_alg_name(int alg);

int ngx_http_presence_jwt_add_secret(ngx_http_presence_jwt_t *jwt,
    const u_char *secret, size_t len, char *err);
int ngx_http_presence_jwt_add_keys(ngx_http_presence_jwt_t *jwt,
    const u_char *data, size_t len, char *err);
int ngx_http_presence_jwt_check(ngx_http_presence_jwt_t *jwt, char *err);

ngx_http_presence_jwt_status_e ngx_http_presence_jwt_verify(
    ngx_http_presence_jwt_t *jwt, const u_char *token, size_t len,
    int64_t now, ngx_http_presence_jwt_result_t *res);


#endif /* _NGX_HTTP_PRESENCE_JWT_H_INCLUDED_ */
