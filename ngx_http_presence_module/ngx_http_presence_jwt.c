
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "ngx_http_presence_jwt.h"


#define NGX_HTTP_PRESENCE_JWT_MAX_DEPTH  64
#define NGX_HTTP_PRESENCE_JWT_MAX_SID    256

/* the longest ECDSA signature, ES512's R || S */
#define NGX_HTTP_PRESENCE_JWT_ES_MAX     132

/* the largest double below 2^63 */
#define NGX_HTTP_PRESENCE_JWT_DBL_MAX63  9223372036854774784.0


typedef struct {
    const char                        *name;
    ngx_http_presence_jwt_key_type_e   key_type;
    size_t                             sig_len;   /* HS, ES, EdDSA */
    int                                pss;
    const EVP_MD                    *(*md)(void);
} ngx_http_presence_jwt_alg_t;


/* a token as the steps of verification see it */

typedef struct {
    const u_char                      *token;
    size_t                             len;
    const u_char                      *dot2;     /* the signed part's end */
    u_char                            *buf;      /* the decoded segments */
    u_char                            *hdr;
    u_char                            *pay;
    u_char                            *sig;
    ssize_t                            hdr_len;
    ssize_t                            pay_len;
    ssize_t                            sig_len;
    json_t                            *header;
    json_t                            *payload;
    int                                alg;
    const char                        *kid;
} ngx_http_presence_jwt_parts_t;


static const ngx_http_presence_jwt_alg_t  ngx_http_presence_jwt_algs[] = {
    { "HS256", NGX_HTTP_PRESENCE_JWT_KEY_HMAC, 32, 0, EVP_sha256 },
    { "HS384", NGX_HTTP_PRESENCE_JWT_KEY_HMAC, 48, 0, EVP_sha384 },
    { "HS512", NGX_HTTP_PRESENCE_JWT_KEY_HMAC, 64, 0, EVP_sha512 },
    { "RS256", NGX_HTTP_PRESENCE_JWT_KEY_RSA, 0, 0, EVP_sha256 },
    { "RS384", NGX_HTTP_PRESENCE_JWT_KEY_RSA, 0, 0, EVP_sha384 },
    { "RS512", NGX_HTTP_PRESENCE_JWT_KEY_RSA, 0, 0, EVP_sha512 },
    { "PS256", NGX_HTTP_PRESENCE_JWT_KEY_RSA, 0, 1, EVP_sha256 },
    { "PS384", NGX_HTTP_PRESENCE_JWT_KEY_RSA, 0, 1, EVP_sha384 },
    { "PS512", NGX_HTTP_PRESENCE_JWT_KEY_RSA, 0, 1, EVP_sha512 },
    { "ES256", NGX_HTTP_PRESENCE_JWT_KEY_EC, 64, 0, EVP_sha256 },
    { "ES384", NGX_HTTP_PRESENCE_JWT_KEY_EC, 96, 0, EVP_sha384 },
    { "ES512", NGX_HTTP_PRESENCE_JWT_KEY_EC, 132, 0, EVP_sha512 },
    { "EdDSA", NGX_HTTP_PRESENCE_JWT_KEY_ED25519, 64, 0, NULL }
};


static const signed char  ngx_http_presence_jwt_b64url[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,
    -1,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, 63,
    -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1
};


static int ngx_http_presence_jwt_header(ngx_http_presence_jwt_t *jwt,
    ngx_http_presence_jwt_parts_t *t, ngx_http_presence_jwt_result_t *res);
static int ngx_http_presence_jwt_signature(ngx_http_presence_jwt_t *jwt,
    ngx_http_presence_jwt_parts_t *t, ngx_http_presence_jwt_result_t *res);
static ngx_http_presence_jwt_status_e ngx_http_presence_jwt_claims(
    ngx_http_presence_jwt_t *jwt, ngx_http_presence_jwt_parts_t *t,
    int64_t now, ngx_http_presence_jwt_result_t *res);
static int ngx_http_presence_jwt_session(ngx_http_presence_jwt_parts_t *t,
    ngx_http_presence_jwt_result_t *res);
static int ngx_http_presence_jwt_token_id(ngx_http_presence_jwt_parts_t *t,
    ngx_http_presence_jwt_result_t *res);
static size_t ngx_http_presence_jwt_b64url_encode(const u_char *src,
    size_t len, u_char *dst);
static ssize_t ngx_http_presence_jwt_decode(const u_char *src, size_t len,
    u_char *dst);
static u_char *ngx_http_presence_jwt_prepare(const u_char *p, size_t len,
    size_t *out);
static int ngx_http_presence_jwt_int_overflows(const u_char *p, size_t len);
static json_t *ngx_http_presence_jwt_json(const u_char *p, size_t len);
static int ngx_http_presence_jwt_verify_sig(ngx_http_presence_jwt_t *jwt,
    int alg, const char *kid, const u_char *msg, size_t msg_len,
    const u_char *sig, size_t sig_len);
static int ngx_http_presence_jwt_verify_key(ngx_http_presence_jwt_key_t *key,
    const ngx_http_presence_jwt_alg_t *a, const u_char *msg, size_t msg_len,
    const u_char *sig, size_t sig_len);
static int ngx_http_presence_jwt_ecdsa_der(const u_char *sig, size_t len,
    u_char **der, int *der_len);
static int ngx_http_presence_jwt_number(json_t *v, int64_t *n);
static int ngx_http_presence_jwt_user_id(json_t *v, int64_t *id);
static int ngx_http_presence_jwt_aud_ok(ngx_http_presence_jwt_t *jwt,
    json_t *aud);
static int ngx_http_presence_jwt_claim_is(json_t *v, const char *value);
static ngx_http_presence_jwt_key_t *ngx_http_presence_jwt_new_key(
    ngx_http_presence_jwt_t *jwt, char *err);
static int ngx_http_presence_jwt_add_pkey(ngx_http_presence_jwt_t *jwt,
    EVP_PKEY *pkey, const char *kid, unsigned algs, char *err);
static int ngx_http_presence_jwt_add_pem(ngx_http_presence_jwt_t *jwt,
    const u_char *data, size_t len, char *err);
static int ngx_http_presence_jwt_add_jwks(ngx_http_presence_jwt_t *jwt,
    const u_char *data, size_t len, char *err);
static int ngx_http_presence_jwt_add_jwk(ngx_http_presence_jwt_t *jwt,
    json_t *jwk, size_t n, char *err);
static u_char *ngx_http_presence_jwt_member(json_t *jwk, const char *name,
    size_t *len);
static EVP_PKEY *ngx_http_presence_jwt_jwk_rsa(json_t *jwk, size_t n,
    char *err);
static EVP_PKEY *ngx_http_presence_jwt_jwk_ec(json_t *jwk, size_t n,
    char *err);
static EVP_PKEY *ngx_http_presence_jwt_jwk_okp(json_t *jwk, size_t n,
    char *err);


void
ngx_http_presence_jwt_init(ngx_http_presence_jwt_t *jwt)
{
    memset(jwt, 0, sizeof(ngx_http_presence_jwt_t));

    jwt->algorithms = NGX_HTTP_PRESENCE_JWT_ALG(HS256);
    jwt->require_exp = 1;
    jwt->max_size = 8192;
}


void
ngx_http_presence_jwt_free(ngx_http_presence_jwt_t *jwt)
{
    size_t                        i;
    ngx_http_presence_jwt_key_t  *key;

    for (i = 0; i < jwt->nkeys; i++) {
        key = &jwt->keys[i];

        if (key->secret) {
            OPENSSL_cleanse(key->secret, key->secret_len);
            free(key->secret);
        }

        EVP_PKEY_free(key->pkey);
        free(key->kid);
    }

    free(jwt->keys);

    jwt->keys = NULL;
    jwt->nkeys = 0;
    jwt->nalloc = 0;
}


int
ngx_http_presence_jwt_alg(const u_char *name, size_t len)
{
    int  i;

    for (i = 0; i < NGX_HTTP_PRESENCE_JWT_NALGS; i++) {
        if (strlen(ngx_http_presence_jwt_algs[i].name) == len
            && memcmp(ngx_http_presence_jwt_algs[i].name, name, len) == 0)
        {
            return i;
        }
    }

    return -1;
}


const char *
ngx_http_presence_jwt_alg_name(int alg)
{
    return ngx_http_presence_jwt_algs[alg].name;
}


/*
 * strict base64url: the URL-safe alphabet only, no padding, no whitespace,
 * no length of 1 mod 4 and no bits set beyond the last byte, so that one
 * byte string has exactly one encoding
 */

static ssize_t
ngx_http_presence_jwt_decode(const u_char *src, size_t len, u_char *dst)
{
    int           v[4];
    size_t        i, j, rest;
    u_char       *d;
    const u_char *s;

    if (len % 4 == 1) {
        return -1;
    }

    for (i = 0; i < len; i++) {
        if (ngx_http_presence_jwt_b64url[src[i]] < 0) {
            return -1;
        }
    }

    s = src;
    d = dst;

    for (i = 0; i + 4 <= len; i += 4) {
        for (j = 0; j < 4; j++) {
            v[j] = ngx_http_presence_jwt_b64url[s[i + j]];
        }

        *d++ = (u_char) (v[0] << 2 | v[1] >> 4);
        *d++ = (u_char) (v[1] << 4 | v[2] >> 2);
        *d++ = (u_char) (v[2] << 6 | v[3]);
    }

    rest = len - i;

    if (rest == 2) {
        v[0] = ngx_http_presence_jwt_b64url[s[i]];
        v[1] = ngx_http_presence_jwt_b64url[s[i + 1]];

        if (v[1] & 0x0f) {
            return -1;
        }

        *d++ = (u_char) (v[0] << 2 | v[1] >> 4);

    } else if (rest == 3) {
        v[0] = ngx_http_presence_jwt_b64url[s[i]];
        v[1] = ngx_http_presence_jwt_b64url[s[i + 1]];
        v[2] = ngx_http_presence_jwt_b64url[s[i + 2]];

        if (v[2] & 0x03) {
            return -1;
        }

        *d++ = (u_char) (v[0] << 2 | v[1] >> 4);
        *d++ = (u_char) (v[1] << 4 | v[2] >> 2);
    }

    return d - dst;
}


/*
 * A copy of the JSON text to parse: nesting deeper than the bound is
 * refused, and an integer literal beyond int64 gets ".0" so that jansson
 * reads it, and it alone, as a real (a far-future "exp" stays a far-future
 * time) while every other integer, the user id's too, stays exact.
 */

static u_char *
ngx_http_presence_jwt_prepare(const u_char *p, size_t len, size_t *out)
{
    int            depth, in_string, escaped;
    u_char        *copy, *d;
    const u_char  *end, *start;

    /* at most one ".0" for every two bytes ("1,") */

    copy = malloc(2 * len + 2);
    if (copy == NULL) {
        return NULL;
    }

    depth = 0;
    in_string = 0;
    escaped = 0;
    end = p + len;
    d = copy;

    while (p < end) {

        if (in_string) {
            if (escaped) {
                escaped = 0;

            } else if (*p == '\\') {
                escaped = 1;

            } else if (*p == '"') {
                in_string = 0;
            }

            *d++ = *p++;
            continue;
        }

        if (*p == '-' || (*p >= '0' && *p <= '9')) {
            start = p;

            while (p < end && (*p == '-' || *p == '+' || *p == '.'
                               || *p == 'e' || *p == 'E'
                               || (*p >= '0' && *p <= '9')))
            {
                p++;
            }

            memcpy(d, start, p - start);
            d += p - start;

            if (ngx_http_presence_jwt_int_overflows(start, p - start)) {
                *d++ = '.';
                *d++ = '0';
            }

            continue;
        }

        switch (*p) {

        case '"':
            in_string = 1;
            break;

        case '{':
        case '[':
            if (++depth > NGX_HTTP_PRESENCE_JWT_MAX_DEPTH) {
                free(copy);
                return NULL;
            }
            break;

        case '}':
        case ']':
            depth--;
            break;
        }

        *d++ = *p++;
    }

    *out = d - copy;

    return copy;
}


/* an integer literal (no fraction, no exponent) that int64 cannot hold */

static int
ngx_http_presence_jwt_int_overflows(const u_char *p, size_t len)
{
    size_t       i, n;
    const char  *max;

    i = (len && p[0] == '-') ? 1 : 0;
    max = i ? "9223372036854775808" : "9223372036854775807";

    for (n = i; n < len; n++) {
        if (p[n] < '0' || p[n] > '9') {
            return 0;       /* a real, or not a number: jansson decides */
        }
    }

    while (i + 1 < len && p[i] == '0') {
        i++;
    }

    n = len - i;

    return n > 19 || (n == 19 && memcmp(p + i, max, 19) > 0);
}


/*
 * a JSON object: duplicate keys, NUL bytes and invalid UTF-8 are refused
 */

static json_t *
ngx_http_presence_jwt_json(const u_char *p, size_t len)
{
    size_t         n;
    u_char        *copy;
    json_t        *json;
    json_error_t   error;

    copy = ngx_http_presence_jwt_prepare(p, len, &n);
    if (copy == NULL) {
        return NULL;
    }

    json = json_loadb((const char *) copy, n, JSON_REJECT_DUPLICATES, &error);

    free(copy);

    if (json != NULL && !json_is_object(json)) {
        json_decref(json);
        return NULL;
    }

    return json;
}


ngx_http_presence_jwt_status_e
ngx_http_presence_jwt_verify(ngx_http_presence_jwt_t *jwt,
    const u_char *token, size_t len, int64_t now,
    ngx_http_presence_jwt_result_t *res)
{
    ngx_http_presence_jwt_parts_t   t;
    ngx_http_presence_jwt_status_e  status;

    memset(res, 0, sizeof(ngx_http_presence_jwt_result_t));
    res->exp = INT64_MAX;

    if (len == 0) {
        res->reason = "empty token";
        return NGX_HTTP_PRESENCE_JWT_MISSING;
    }

    if (len > jwt->max_size) {
        res->reason = "token longer than presence_jwt_max_size";
        return NGX_HTTP_PRESENCE_JWT_INVALID;
    }

    memset(&t, 0, sizeof(ngx_http_presence_jwt_parts_t));
    t.token = token;
    t.len = len;

    status = NGX_HTTP_PRESENCE_JWT_INVALID;

    if (ngx_http_presence_jwt_header(jwt, &t, res)
        && ngx_http_presence_jwt_signature(jwt, &t, res))
    {
        status = ngx_http_presence_jwt_claims(jwt, &t, now, res);
    }

    if (status == NGX_HTTP_PRESENCE_JWT_VALID
        && !ngx_http_presence_jwt_session(&t, res))
    {
        status = NGX_HTTP_PRESENCE_JWT_INVALID;
    }

    json_decref(t.header);
    json_decref(t.payload);
    free(t.buf);

    return status;
}


/*
 * The first step: three base64url segments, a header that is a JSON
 * object, an allowed "alg", no "crit", a string "kid" if any.
 */

static int
ngx_http_presence_jwt_header(ngx_http_presence_jwt_t *jwt,
    ngx_http_presence_jwt_parts_t *t, ngx_http_presence_jwt_result_t *res)
{
    json_t        *v;
    const u_char  *dot1, *end;

    end = t->token + t->len;

    dot1 = memchr(t->token, '.', t->len);
    t->dot2 = dot1 ? memchr(dot1 + 1, '.', end - dot1 - 1) : NULL;

    if (t->dot2 == NULL || memchr(t->dot2 + 1, '.', end - t->dot2 - 1))
    {
        res->reason = "not a compact JWS of three segments";
        return 0;
    }

    t->buf = malloc(t->len);
    if (t->buf == NULL) {
        res->reason = "out of memory";
        return 0;
    }

    t->hdr = t->buf;
    t->hdr_len = ngx_http_presence_jwt_decode(t->token, dot1 - t->token,
                                              t->hdr);

    t->pay = t->hdr + (t->hdr_len > 0 ? t->hdr_len : 0);
    t->pay_len = ngx_http_presence_jwt_decode(dot1 + 1, t->dot2 - dot1 - 1,
                                              t->pay);

    t->sig = t->pay + (t->pay_len > 0 ? t->pay_len : 0);
    t->sig_len = ngx_http_presence_jwt_decode(t->dot2 + 1,
                                              end - t->dot2 - 1, t->sig);

    if (t->hdr_len <= 0 || t->pay_len <= 0 || t->sig_len <= 0) {
        res->reason = "bad base64url or an empty segment";
        return 0;
    }

    t->header = ngx_http_presence_jwt_json(t->hdr, t->hdr_len);
    if (t->header == NULL) {
        res->reason = "header is not a JSON object";
        return 0;
    }

    v = json_object_get(t->header, "alg");
    if (!json_is_string(v)) {
        res->reason = "no \"alg\"";
        return 0;
    }

    t->alg = ngx_http_presence_jwt_alg((u_char *) json_string_value(v),
                                       json_string_length(v));

    if (t->alg < 0 || !(jwt->algorithms & (1u << t->alg))) {
        res->reason = "\"alg\" not in presence_jwt_algorithms";
        return 0;
    }

    if (json_object_get(t->header, "crit") != NULL) {
        res->reason = "unsupported \"crit\" header";
        return 0;
    }

    v = json_object_get(t->header, "kid");
    if (v != NULL && !json_is_string(v)) {
        res->reason = "\"kid\" is not a string";
        return 0;
    }

    t->kid = v ? json_string_value(v) : NULL;

    return 1;
}


/* the second: the signature over the first two segments */

static int
ngx_http_presence_jwt_signature(ngx_http_presence_jwt_t *jwt,
    ngx_http_presence_jwt_parts_t *t, ngx_http_presence_jwt_result_t *res)
{
    if (!ngx_http_presence_jwt_verify_sig(jwt, t->alg, t->kid, t->token,
                                          t->dot2 - t->token, t->sig,
                                          t->sig_len))
    {
        res->reason = "signature does not verify";
        return 0;
    }

    return 1;
}


/*
 * The third, once the signature holds: the claims, as python-jose checks
 * them, then the user id; the checks of presence_api_admin_claim are
 * noted.
 */

static ngx_http_presence_jwt_status_e
ngx_http_presence_jwt_claims(ngx_http_presence_jwt_t *jwt,
    ngx_http_presence_jwt_parts_t *t, int64_t now,
    ngx_http_presence_jwt_result_t *res)
{
    size_t   n;
    json_t  *payload, *v;
    int64_t  exp, nbf, iat;

    t->payload = ngx_http_presence_jwt_json(t->pay, t->pay_len);
    if (t->payload == NULL) {
        res->reason = "payload is not a JSON object";
        return NGX_HTTP_PRESENCE_JWT_INVALID;
    }

    payload = t->payload;

    v = json_object_get(payload, "exp");
    if (v != NULL && !ngx_http_presence_jwt_number(v, &exp)) {
        res->reason = "\"exp\" is not a number";
        return NGX_HTTP_PRESENCE_JWT_INVALID;
    }

    if (v == NULL) {
        if (jwt->require_exp) {
            res->reason = "no \"exp\"";
            return NGX_HTTP_PRESENCE_JWT_INVALID;
        }

        exp = INT64_MAX;
    }

    v = json_object_get(payload, "nbf");
    if (v != NULL && !ngx_http_presence_jwt_number(v, &nbf)) {
        res->reason = "\"nbf\" is not a number";
        return NGX_HTTP_PRESENCE_JWT_INVALID;
    }

    if (v != NULL && nbf > now + jwt->leeway) {
        res->reason = "not valid yet (\"nbf\")";
        return NGX_HTTP_PRESENCE_JWT_INVALID;
    }

    v = json_object_get(payload, "iat");
    if (v != NULL && !ngx_http_presence_jwt_number(v, &iat)) {
        res->reason = "\"iat\" is not a number";
        return NGX_HTTP_PRESENCE_JWT_INVALID;
    }

    if (jwt->issuer) {
        v = json_object_get(payload, "iss");

        if (!json_is_string(v) || strcmp(json_string_value(v), jwt->issuer))
        {
            res->reason = "\"iss\" does not match presence_jwt_issuer";
            return NGX_HTTP_PRESENCE_JWT_INVALID;
        }
    }

    if (!ngx_http_presence_jwt_aud_ok(jwt, json_object_get(payload, "aud")))
    {
        res->reason = "\"aud\" does not match presence_jwt_audience";
        return NGX_HTTP_PRESENCE_JWT_INVALID;
    }

    v = json_object_get(payload, jwt->claim ? jwt->claim : "sub");

    if (!ngx_http_presence_jwt_user_id(v, &res->user_id)) {
        res->reason = "the user claim is not a positive integer";
        return NGX_HTTP_PRESENCE_JWT_INVALID;
    }

    /* python-jose: expired when exp < now - leeway */

    if (exp < now - jwt->leeway) {
        res->reason = "expired";
        return NGX_HTTP_PRESENCE_JWT_EXPIRED;
    }

    res->exp = exp;

    for (n = 0; n < jwt->nchecks; n++) {
        if (ngx_http_presence_jwt_claim_is(
                json_object_get(payload, jwt->checks[n].name),
                jwt->checks[n].value))
        {
            res->matched |= 1u << n;
        }
    }

    res->reason = NULL;

    return NGX_HTTP_PRESENCE_JWT_VALID;
}


/*
 * The session id of a token without "sid": SHA-256 of the token in its
 * canonical form.  ECDSA signatures are malleable: (r, n - s) verifies as
 * (r, s) does, and signers (OpenSSL among them) emit either, so the id is
 * taken over the low-s spelling.  A token already in that form (every
 * other algorithm's, and about half of the ECDSA ones) is hashed as it is.
 */

static int
ngx_http_presence_jwt_token_id(ngx_http_presence_jwt_parts_t *t,
    ngx_http_presence_jwt_result_t *res)
{
    int          nid, ok;
    u_char       sig[NGX_HTTP_PRESENCE_JWT_ES_MAX];
    size_t       half, n;
    BIGNUM      *s, *order, *low;
    EC_GROUP    *group;
    EVP_MD_CTX  *ctx;

    half = (size_t) t->sig_len / 2;

    switch (t->alg) {
    case NGX_HTTP_PRESENCE_JWT_ES256:
        nid = NID_X9_62_prime256v1;
        break;
    case NGX_HTTP_PRESENCE_JWT_ES384:
        nid = NID_secp384r1;
        break;
    case NGX_HTTP_PRESENCE_JWT_ES512:
        nid = NID_secp521r1;
        break;
    default:
        nid = NID_undef;
    }

    ok = 0;
    s = NULL;
    low = NULL;
    group = NULL;

    if (nid == NID_undef || (size_t) t->sig_len > sizeof(sig)) {
        goto whole;
    }

    group = EC_GROUP_new_by_curve_name(nid);
    s = BN_bin2bn(t->sig + half, (int) half, NULL);
    low = BN_new();

    if (group == NULL || s == NULL || low == NULL) {
        goto failed;
    }

    order = (BIGNUM *) EC_GROUP_get0_order(group);

    /* high s: n - s instead */

    if (!BN_rshift1(low, order)) {
        goto failed;
    }

    if (BN_cmp(s, low) <= 0) {
        goto whole;
    }

    if (!BN_sub(low, order, s)
        || BN_bn2binpad(low, sig + half, (int) half) < 0)
    {
        goto failed;
    }

    memcpy(sig, t->sig, half);

    ctx = EVP_MD_CTX_new();
    if (ctx == NULL) {
        goto failed;
    }

    n = ngx_http_presence_jwt_b64url_encode(sig, t->sig_len, t->buf);

    ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)
         && EVP_DigestUpdate(ctx, t->token, t->dot2 - t->token + 1)
         && EVP_DigestUpdate(ctx, t->buf, n)
         && EVP_DigestFinal_ex(ctx, res->session_id, NULL);

    EVP_MD_CTX_free(ctx);

    goto done;

whole:

    ok = EVP_Digest(t->token, t->len, res->session_id, NULL, EVP_sha256(),
                    NULL);

    goto done;

failed:

    res->reason = "out of memory";

done:

    BN_free(s);
    BN_free(low);
    EC_GROUP_free(group);

    return ok;
}


/* base64url without padding; "dst" has room for 4/3 of "len" */

static size_t
ngx_http_presence_jwt_b64url_encode(const u_char *src, size_t len,
    u_char *dst)
{
    size_t       i, n;
    uint32_t     v;
    const char  *a;

    a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    n = 0;

    for (i = 0; i + 2 < len; i += 3) {
        v = (uint32_t) src[i] << 16 | (uint32_t) src[i + 1] << 8 | src[i + 2];
        dst[n++] = a[v >> 18 & 63];
        dst[n++] = a[v >> 12 & 63];
        dst[n++] = a[v >> 6 & 63];
        dst[n++] = a[v & 63];
    }

    if (len - i == 1) {
        v = (uint32_t) src[i] << 16;
        dst[n++] = a[v >> 18 & 63];
        dst[n++] = a[v >> 12 & 63];

    } else if (len - i == 2) {
        v = (uint32_t) src[i] << 16 | (uint32_t) src[i + 1] << 8;
        dst[n++] = a[v >> 18 & 63];
        dst[n++] = a[v >> 12 & 63];
        dst[n++] = a[v >> 6 & 63];
    }

    return n;
}


/*
 * The session id: SHA-256 of the user id and the "sid" claim when there
 * is one, else of the token
 */

static int
ngx_http_presence_jwt_session(ngx_http_presence_jwt_parts_t *t,
    ngx_http_presence_jwt_result_t *res)
{
    int          n;
    size_t       sid_len;
    json_t      *v;
    const char  *sid;

    v = json_object_get(t->payload, "sid");
    sid = json_is_string(v) ? json_string_value(v) : NULL;
    sid_len = sid ? json_string_length(v) : 0;

    if (sid_len == 0 || sid_len > NGX_HTTP_PRESENCE_JWT_MAX_SID) {
        return ngx_http_presence_jwt_token_id(t, res);
    }

    n = snprintf((char *) t->buf, t->len, "%lld:", (long long) res->user_id);

    if (n < 0 || (size_t) n + sid_len > t->len) {
        res->reason = "\"sid\" too long";
        return 0;
    }

    memcpy(t->buf + n, sid, sid_len);

    EVP_Digest(t->buf, n + sid_len, res->session_id, NULL, EVP_sha256(),
               NULL);

    return 1;
}


/*
 * the key decides: an algorithm is tried only with keys of its own type,
 * so an HMAC secret never checks an RSA token and a public key is never
 * an HMAC secret
 */

static int
ngx_http_presence_jwt_verify_sig(ngx_http_presence_jwt_t *jwt, int alg,
    const char *kid, const u_char *msg, size_t msg_len, const u_char *sig,
    size_t sig_len)
{
    int                                 with_kid;
    size_t                              i;
    ngx_http_presence_jwt_key_t        *key;
    const ngx_http_presence_jwt_alg_t  *a;

    a = &ngx_http_presence_jwt_algs[alg];

    /* a "kid" picks among keys that have one; keys without are tried all */

    with_kid = 0;

    if (kid != NULL) {
        for (i = 0; i < jwt->nkeys; i++) {
            key = &jwt->keys[i];

            if (key->type == a->key_type && key->kid != NULL) {
                with_kid = 1;
                break;
            }
        }
    }

    for (i = 0; i < jwt->nkeys; i++) {
        key = &jwt->keys[i];

        if (key->type != a->key_type || !(key->algs & (1u << alg))) {
            continue;
        }

        if (with_kid && (key->kid == NULL || strcmp(key->kid, kid) != 0)) {
            continue;
        }

        if (ngx_http_presence_jwt_verify_key(key, a, msg, msg_len,
                                             sig, sig_len))
        {
            return 1;
        }
    }

    return 0;
}


static int
ngx_http_presence_jwt_verify_key(ngx_http_presence_jwt_key_t *key,
    const ngx_http_presence_jwt_alg_t *a, const u_char *msg, size_t msg_len,
    const u_char *sig, size_t sig_len)
{
    int            ok, der_len;
    u_char        *der;
    u_char         mac[EVP_MAX_MD_SIZE];
    unsigned       mac_len;
    EVP_MD_CTX    *ctx;
    EVP_PKEY_CTX  *pctx;

    if (a->sig_len && sig_len != a->sig_len) {
        return 0;
    }

    if (a->key_type == NGX_HTTP_PRESENCE_JWT_KEY_HMAC) {
        if (HMAC(a->md(), key->secret, (int) key->secret_len, msg, msg_len,
                 mac, &mac_len)
            == NULL)
        {
            return 0;
        }

        return mac_len == sig_len && CRYPTO_memcmp(mac, sig, sig_len) == 0;
    }

    /*
     * an RSA signature is as long as the modulus (RFC 8017, I2OSP): one
     * missing its leading zero bytes would be another spelling of a token
     */

    if (a->key_type == NGX_HTTP_PRESENCE_JWT_KEY_RSA
        && sig_len != (size_t) EVP_PKEY_get_size(key->pkey))
    {
        return 0;
    }

    der = NULL;

    if (a->key_type == NGX_HTTP_PRESENCE_JWT_KEY_EC) {
        if (!ngx_http_presence_jwt_ecdsa_der(sig, sig_len, &der, &der_len)) {
            return 0;
        }

        sig = der;
        sig_len = der_len;
    }

    ctx = EVP_MD_CTX_new();
    if (ctx == NULL) {
        OPENSSL_free(der);
        return 0;
    }

    ok = 0;
    pctx = NULL;

    if (EVP_DigestVerifyInit(ctx, &pctx, a->md ? a->md() : NULL, NULL,
                             key->pkey)
        != 1)
    {
        goto done;
    }

    if (a->pss
        && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1
            || EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST)
               != 1
            || EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, a->md()) != 1))
    {
        goto done;
    }

    ok = EVP_DigestVerify(ctx, sig, sig_len, msg, msg_len) == 1;

done:

    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    ERR_clear_error();

    return ok;
}


/* JOSE's ECDSA signature is R || S; OpenSSL wants DER */

static int
ngx_http_presence_jwt_ecdsa_der(const u_char *sig, size_t len, u_char **der,
    int *der_len)
{
    BIGNUM     *r, *s;
    ECDSA_SIG  *es;

    es = ECDSA_SIG_new();
    if (es == NULL) {
        return 0;
    }

    r = BN_bin2bn(sig, (int) len / 2, NULL);
    s = BN_bin2bn(sig + len / 2, (int) len / 2, NULL);

    if (r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return 0;
    }

    *der = NULL;
    *der_len = i2d_ECDSA_SIG(es, der);

    ECDSA_SIG_free(es);

    return *der_len > 0;
}


/* a NumericDate: an integer, or a real clamped to int64 */

static int
ngx_http_presence_jwt_number(json_t *v, int64_t *n)
{
    double  d;

    if (json_is_integer(v)) {
        *n = json_integer_value(v);
        return 1;
    }

    if (!json_is_real(v)) {
        return 0;
    }

    d = floor(json_real_value(v));

    if (d >= NGX_HTTP_PRESENCE_JWT_DBL_MAX63) {
        *n = INT64_MAX;

    } else if (d <= -NGX_HTTP_PRESENCE_JWT_DBL_MAX63) {
        *n = INT64_MIN;

    } else {
        *n = (int64_t) d;
    }

    return 1;
}


/*
 * the user id: an integer or a string of digits, positive, within int64;
 * a real (5.0, or an integer beyond int64) is not one
 */

static int
ngx_http_presence_jwt_user_id(json_t *v, int64_t *id)
{
    size_t       i, len;
    uint64_t     n;
    const char  *s;

    if (json_is_integer(v)) {
        *id = json_integer_value(v);
        return *id > 0;
    }

    if (!json_is_string(v)) {
        return 0;
    }

    s = json_string_value(v);
    len = json_string_length(v);

    if (len == 0 || len > 19) {
        return 0;
    }

    n = 0;

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }

        n = n * 10 + (s[i] - '0');
    }

    if (n == 0 || n > INT64_MAX) {
        return 0;
    }

    *id = (int64_t) n;

    return 1;
}


/*
 * with presence_jwt_audience, "aud" (a string or an array of strings) must
 * name one of them; without, a token that has "aud" is refused
 * (RFC 7519 section 4.1.3, as python-jose does)
 */

static int
ngx_http_presence_jwt_aud_ok(ngx_http_presence_jwt_t *jwt, json_t *aud)
{
    size_t   i, j, n;
    json_t  *v;

    if (jwt->naudiences == 0) {
        return aud == NULL;
    }

    if (json_is_string(aud)) {
        for (j = 0; j < jwt->naudiences; j++) {
            if (strcmp(json_string_value(aud), jwt->audiences[j]) == 0) {
                return 1;
            }
        }

        return 0;
    }

    if (!json_is_array(aud)) {
        return 0;
    }

    n = json_array_size(aud);

    for (i = 0; i < n; i++) {
        v = json_array_get(aud, i);

        if (!json_is_string(v)) {
            return 0;
        }
    }

    for (i = 0; i < n; i++) {
        v = json_array_get(aud, i);

        for (j = 0; j < jwt->naudiences; j++) {
            if (strcmp(json_string_value(v), jwt->audiences[j]) == 0) {
                return 1;
            }
        }
    }

    return 0;
}


/* a claim equals the value: a string, a number or true, or an array of them */

static int
ngx_http_presence_jwt_claim_is(json_t *v, const char *value)
{
    char    buf[32];
    size_t  i;

    if (json_is_array(v)) {
        for (i = 0; i < json_array_size(v); i++) {
            if (!json_is_array(json_array_get(v, i))
                && ngx_http_presence_jwt_claim_is(json_array_get(v, i),
                                                  value))
            {
                return 1;
            }
        }

        return 0;
    }

    if (json_is_string(v)) {
        return strcmp(json_string_value(v), value) == 0;
    }

    if (json_is_integer(v)) {
        snprintf(buf, sizeof(buf), "%lld", (long long) json_integer_value(v));
        return strcmp(buf, value) == 0;
    }

    if (json_is_true(v)) {
        return strcmp(value, "true") == 0;
    }

    return 0;
}


/* keys */

static ngx_http_presence_jwt_key_t *
ngx_http_presence_jwt_new_key(ngx_http_presence_jwt_t *jwt, char *err)
{
    size_t                        n;
    ngx_http_presence_jwt_key_t  *keys;

    if (jwt->nkeys == jwt->nalloc) {
        n = jwt->nalloc ? jwt->nalloc * 2 : 4;

        keys = realloc(jwt->keys, n * sizeof(ngx_http_presence_jwt_key_t));
        if (keys == NULL) {
            snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN, "out of memory");
            return NULL;
        }

        jwt->keys = keys;
        jwt->nalloc = n;
    }

    keys = &jwt->keys[jwt->nkeys];
    memset(keys, 0, sizeof(ngx_http_presence_jwt_key_t));

    return keys;
}


int
ngx_http_presence_jwt_add_secret(ngx_http_presence_jwt_t *jwt,
    const u_char *secret, size_t len, char *err)
{
    ngx_http_presence_jwt_key_t  *key;

    if (len == 0) {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN, "the secret is empty");
        return 0;
    }

    key = ngx_http_presence_jwt_new_key(jwt, err);
    if (key == NULL) {
        return 0;
    }

    key->secret = malloc(len);
    if (key->secret == NULL) {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN, "out of memory");
        return 0;
    }

    memcpy(key->secret, secret, len);
    key->secret_len = len;
    key->type = NGX_HTTP_PRESENCE_JWT_KEY_HMAC;
    key->algs = NGX_HTTP_PRESENCE_JWT_HS_ALGS;

    jwt->nkeys++;

    return 1;
}


/* a PEM public key (or certificate) file, or a JWKS / JWK file */

int
ngx_http_presence_jwt_add_keys(ngx_http_presence_jwt_t *jwt,
    const u_char *data, size_t len, char *err)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (data[i] != ' ' && data[i] != '\t' && data[i] != '\r'
            && data[i] != '\n')
        {
            break;
        }
    }

    if (i < len && data[i] == '{') {
        return ngx_http_presence_jwt_add_jwks(jwt, data, len, err);
    }

    return ngx_http_presence_jwt_add_pem(jwt, data, len, err);
}


static int
ngx_http_presence_jwt_add_pkey(ngx_http_presence_jwt_t *jwt, EVP_PKEY *pkey,
    const char *kid, unsigned algs, char *err)
{
    int                                id, bits;
    char                               group[32];
    unsigned                           usable;
    ngx_http_presence_jwt_key_t       *key;
    ngx_http_presence_jwt_key_type_e   type;

    id = EVP_PKEY_get_base_id(pkey);
    bits = EVP_PKEY_get_bits(pkey);

    switch (id) {

    case EVP_PKEY_RSA:
        type = NGX_HTTP_PRESENCE_JWT_KEY_RSA;
        usable = NGX_HTTP_PRESENCE_JWT_RSA_ALGS;
        break;

    case EVP_PKEY_RSA_PSS:
        type = NGX_HTTP_PRESENCE_JWT_KEY_RSA;
        usable = NGX_HTTP_PRESENCE_JWT_ALG(PS256)
                 | NGX_HTTP_PRESENCE_JWT_ALG(PS384)
                 | NGX_HTTP_PRESENCE_JWT_ALG(PS512);
        break;

    case EVP_PKEY_EC:
        type = NGX_HTTP_PRESENCE_JWT_KEY_EC;

        if (bits == 256) {
            usable = NGX_HTTP_PRESENCE_JWT_ALG(ES256);

        } else if (bits == 384) {
            usable = NGX_HTTP_PRESENCE_JWT_ALG(ES384);

        } else if (bits == 521) {
            usable = NGX_HTTP_PRESENCE_JWT_ALG(ES512);

        } else {
            snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                     "an EC key of %d bits: JOSE has P-256, P-384 and "
                     "P-521 only", bits);
            return 0;
        }

        break;

    case EVP_PKEY_ED25519:
        type = NGX_HTTP_PRESENCE_JWT_KEY_ED25519;
        usable = NGX_HTTP_PRESENCE_JWT_ALG(EDDSA);
        break;

    default:
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                 "a key of an unsupported type (%s)",
                 OBJ_nid2sn(id));
        return 0;
    }

    if (type == NGX_HTTP_PRESENCE_JWT_KEY_EC) {
        if (EVP_PKEY_get_utf8_string_param(pkey,
                                           OSSL_PKEY_PARAM_GROUP_NAME,
                                           group, sizeof(group), NULL)
            != 1
            || (strcmp(group, "prime256v1") != 0
                && strcmp(group, "secp384r1") != 0
                && strcmp(group, "secp521r1") != 0))
        {
            snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                     "an EC key on a curve JOSE does not use");
            return 0;
        }
    }

    if ((usable & algs) == 0) {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                 "the key's \"alg\" does not suit its type");
        return 0;
    }

    key = ngx_http_presence_jwt_new_key(jwt, err);
    if (key == NULL) {
        return 0;
    }

    if (kid != NULL) {
        key->kid = strdup(kid);
        if (key->kid == NULL) {
            snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN, "out of memory");
            return 0;
        }
    }

    key->type = type;
    key->algs = usable & algs;
    key->pkey = pkey;

    jwt->nkeys++;

    return 1;
}


static int
ngx_http_presence_jwt_add_pem(ngx_http_presence_jwt_t *jwt,
    const u_char *data, size_t len, char *err)
{
    BIO       *bio;
    X509      *x509;
    size_t     n;
    EVP_PKEY  *pkey;

    n = 0;

    bio = BIO_new_mem_buf(data, (int) len);
    if (bio == NULL) {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN, "out of memory");
        return 0;
    }

    for ( ;; ) {
        pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
        if (pkey == NULL) {
            break;
        }

        if (!ngx_http_presence_jwt_add_pkey(jwt, pkey, NULL, ~0u, err)) {
            EVP_PKEY_free(pkey);
            BIO_free(bio);
            return 0;
        }

        n++;
    }

    BIO_free(bio);
    ERR_clear_error();

    if (n > 0) {
        return 1;
    }

    bio = BIO_new_mem_buf(data, (int) len);
    if (bio == NULL) {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN, "out of memory");
        return 0;
    }

    for ( ;; ) {
        x509 = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (x509 == NULL) {
            break;
        }

        pkey = X509_get_pubkey(x509);
        X509_free(x509);

        if (pkey == NULL
            || !ngx_http_presence_jwt_add_pkey(jwt, pkey, NULL, ~0u, err))
        {
            if (pkey == NULL) {
                snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                         "a certificate without a usable public key");
            }

            EVP_PKEY_free(pkey);
            BIO_free(bio);
            return 0;
        }

        n++;
    }

    BIO_free(bio);
    ERR_clear_error();

    if (n == 0) {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                 "no public key in it: expected PEM \"PUBLIC KEY\" or "
                 "\"CERTIFICATE\" blocks, or a JWKS");
        return 0;
    }

    return 1;
}


static int
ngx_http_presence_jwt_add_jwks(ngx_http_presence_jwt_t *jwt,
    const u_char *data, size_t len, char *err)
{
    int            ok;
    size_t         i, n;
    json_t        *json, *keys;
    json_error_t   error;

    json = json_loadb((const char *) data, len, JSON_REJECT_DUPLICATES,
                      &error);
    if (json == NULL) {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                 "invalid JSON at line %d: %s", error.line, error.text);
        return 0;
    }

    keys = json_object_get(json, "keys");
    ok = 1;

    if (keys == NULL) {
        ok = ngx_http_presence_jwt_add_jwk(jwt, json, 0, err);
        json_decref(json);
        return ok;
    }

    if (!json_is_array(keys) || json_array_size(keys) == 0) {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                 "\"keys\" is not a non-empty array");
        json_decref(json);
        return 0;
    }

    n = jwt->nkeys;

    for (i = 0; ok && i < json_array_size(keys); i++) {
        ok = ngx_http_presence_jwt_add_jwk(jwt, json_array_get(keys, i),
                                           i, err);
    }

    json_decref(json);

    if (ok && jwt->nkeys == n) {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                 "no signature verification key in the JWKS");
        return 0;
    }

    return ok;
}


static int
ngx_http_presence_jwt_add_jwk(ngx_http_presence_jwt_t *jwt, json_t *jwk,
    size_t n, char *err)
{
    int          alg;
    size_t       len;
    u_char      *k;
    json_t      *v;
    unsigned     algs;
    EVP_PKEY    *pkey;
    const char  *kty, *kid;

    if (!json_is_object(jwk)) {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                 "key #%zu is not a JSON object", n);
        return 0;
    }

    v = json_object_get(jwk, "use");
    if (json_is_string(v) && strcmp(json_string_value(v), "sig") != 0) {
        return 1;   /* an encryption key: not ours */
    }

    v = json_object_get(jwk, "kty");
    if (!json_is_string(v)) {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                 "key #%zu has no \"kty\"", n);
        return 0;
    }

    kty = json_string_value(v);

    v = json_object_get(jwk, "kid");
    if (v != NULL && !json_is_string(v)) {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                 "key #%zu: \"kid\" is not a string", n);
        return 0;
    }

    kid = v ? json_string_value(v) : NULL;

    algs = ~0u;

    v = json_object_get(jwk, "alg");
    if (v != NULL) {
        alg = json_is_string(v)
              ? ngx_http_presence_jwt_alg((u_char *) json_string_value(v),
                                          json_string_length(v))
              : -1;

        if (alg < 0) {
            snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                     "key #%zu: unsupported \"alg\"", n);
            return 0;
        }

        algs = 1u << alg;
    }

    if (strcmp(kty, "oct") == 0) {
        k = ngx_http_presence_jwt_member(jwk, "k", &len);
        if (k == NULL) {
            snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                     "key #%zu: \"k\" is missing or not base64url", n);
            return 0;
        }

        if ((algs & NGX_HTTP_PRESENCE_JWT_HS_ALGS) == 0
            || !ngx_http_presence_jwt_add_secret(jwt, k, len, err))
        {
            if ((algs & NGX_HTTP_PRESENCE_JWT_HS_ALGS) == 0) {
                snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                         "key #%zu: the key's \"alg\" does not suit its "
                         "type", n);
            }

            OPENSSL_cleanse(k, len);
            free(k);
            return 0;
        }

        OPENSSL_cleanse(k, len);
        free(k);

        jwt->keys[jwt->nkeys - 1].algs &= algs;

        if (kid != NULL) {
            jwt->keys[jwt->nkeys - 1].kid = strdup(kid);
            if (jwt->keys[jwt->nkeys - 1].kid == NULL) {
                snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN, "out of memory");
                return 0;
            }
        }

        return 1;
    }

    if (strcmp(kty, "RSA") == 0) {
        pkey = ngx_http_presence_jwt_jwk_rsa(jwk, n, err);

    } else if (strcmp(kty, "EC") == 0) {
        pkey = ngx_http_presence_jwt_jwk_ec(jwk, n, err);

    } else if (strcmp(kty, "OKP") == 0) {
        pkey = ngx_http_presence_jwt_jwk_okp(jwk, n, err);

    } else {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                 "key #%zu: unsupported \"kty\"", n);
        return 0;
    }

    if (pkey == NULL) {
        return 0;
    }

    if (!ngx_http_presence_jwt_add_pkey(jwt, pkey, kid, algs, err)) {
        EVP_PKEY_free(pkey);
        return 0;
    }

    return 1;
}


/* a base64url member of a JWK, decoded into malloc()ed memory */

static u_char *
ngx_http_presence_jwt_member(json_t *jwk, const char *name, size_t *len)
{
    u_char       *p;
    json_t       *v;
    ssize_t       n;
    const char   *s;

    v = json_object_get(jwk, name);
    if (!json_is_string(v) || json_string_length(v) == 0) {
        return NULL;
    }

    s = json_string_value(v);

    p = malloc(json_string_length(v));
    if (p == NULL) {
        return NULL;
    }

    n = ngx_http_presence_jwt_decode((const u_char *) s,
                                     json_string_length(v), p);
    if (n <= 0) {
        free(p);
        return NULL;
    }

    *len = n;

    return p;
}


static EVP_PKEY *
ngx_http_presence_jwt_jwk_rsa(json_t *jwk, size_t n, char *err)
{
    size_t           nlen, elen;
    BIGNUM          *bn, *be;
    u_char          *nb, *eb;
    EVP_PKEY        *pkey;
    OSSL_PARAM      *params;
    EVP_PKEY_CTX    *ctx;
    OSSL_PARAM_BLD  *bld;

    pkey = NULL;
    params = NULL;
    ctx = NULL;
    bn = NULL;
    be = NULL;

    nb = ngx_http_presence_jwt_member(jwk, "n", &nlen);
    eb = ngx_http_presence_jwt_member(jwk, "e", &elen);
    bld = OSSL_PARAM_BLD_new();

    if (nb == NULL || eb == NULL) {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                 "key #%zu: \"n\" or \"e\" is missing or not base64url", n);
        goto done;
    }

    bn = BN_bin2bn(nb, (int) nlen, NULL);
    be = BN_bin2bn(eb, (int) elen, NULL);

    if (bld == NULL || bn == NULL || be == NULL
        || OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) != 1
        || OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) != 1
        || (params = OSSL_PARAM_BLD_to_param(bld)) == NULL
        || (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL
        || EVP_PKEY_fromdata_init(ctx) != 1
        || EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
    {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                 "key #%zu: not a valid RSA public key", n);
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }

done:

    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    BN_free(bn);
    BN_free(be);
    free(nb);
    free(eb);
    ERR_clear_error();

    return pkey;
}


static EVP_PKEY *
ngx_http_presence_jwt_jwk_ec(json_t *jwk, size_t n, char *err)
{
    size_t           xlen, ylen, size;
    u_char          *x, *y, point[1 + 2 * 66];
    json_t          *v;
    EVP_PKEY        *pkey;
    OSSL_PARAM      *params;
    const char      *crv, *group;
    EVP_PKEY_CTX    *ctx, *check;
    OSSL_PARAM_BLD  *bld;

    v = json_object_get(jwk, "crv");
    crv = json_is_string(v) ? json_string_value(v) : "";

    if (strcmp(crv, "P-256") == 0) {
        group = "prime256v1";
        size = 32;

    } else if (strcmp(crv, "P-384") == 0) {
        group = "secp384r1";
        size = 48;

    } else if (strcmp(crv, "P-521") == 0) {
        group = "secp521r1";
        size = 66;

    } else {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                 "key #%zu: unsupported \"crv\"", n);
        return NULL;
    }

    pkey = NULL;
    params = NULL;
    ctx = NULL;
    check = NULL;

    x = ngx_http_presence_jwt_member(jwk, "x", &xlen);
    y = ngx_http_presence_jwt_member(jwk, "y", &ylen);
    bld = OSSL_PARAM_BLD_new();

    if (x == NULL || y == NULL || xlen != size || ylen != size) {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                 "key #%zu: \"x\" or \"y\" is missing or not a "
                 "coordinate of %s", n, crv);
        goto done;
    }

    point[0] = 0x04;
    memcpy(point + 1, x, size);
    memcpy(point + 1 + size, y, size);

    if (bld == NULL
        || OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                           group, 0) != 1
        || OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY,
                                            point, 1 + 2 * size) != 1
        || (params = OSSL_PARAM_BLD_to_param(bld)) == NULL
        || (ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL
        || EVP_PKEY_fromdata_init(ctx) != 1
        || EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1
        || (check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL)) == NULL
        || EVP_PKEY_public_check(check) != 1)
    {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                 "key #%zu: not a valid EC public key", n);
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }

done:

    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_CTX_free(check);
    free(x);
    free(y);
    ERR_clear_error();

    return pkey;
}


static EVP_PKEY *
ngx_http_presence_jwt_jwk_okp(json_t *jwk, size_t n, char *err)
{
    size_t       len;
    u_char      *x;
    json_t      *v;
    EVP_PKEY    *pkey;

    v = json_object_get(jwk, "crv");

    if (!json_is_string(v) || strcmp(json_string_value(v), "Ed25519") != 0) {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                 "key #%zu: unsupported \"crv\" (Ed25519 only)", n);
        return NULL;
    }

    x = ngx_http_presence_jwt_member(jwk, "x", &len);

    if (x == NULL || len != 32) {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                 "key #%zu: \"x\" is missing or not an Ed25519 key", n);
        free(x);
        return NULL;
    }

    pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, len);
    free(x);

    if (pkey == NULL) {
        snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                 "key #%zu: not a valid Ed25519 key", n);
        ERR_clear_error();
    }

    return pkey;
}


/* every allowed algorithm has a key of its kind */

int
ngx_http_presence_jwt_check(ngx_http_presence_jwt_t *jwt, char *err)
{
    int     alg;
    size_t  i;

    for (alg = 0; alg < NGX_HTTP_PRESENCE_JWT_NALGS; alg++) {

        if (!(jwt->algorithms & (1u << alg))) {
            continue;
        }

        for (i = 0; i < jwt->nkeys; i++) {
            if (jwt->keys[i].algs & (1u << alg)) {
                break;
            }
        }

        if (i == jwt->nkeys) {
            snprintf(err, NGX_HTTP_PRESENCE_JWT_ERRLEN,
                     "%s is allowed but no key can verify it (%s)",
                     ngx_http_presence_jwt_algs[alg].name,
                     ngx_http_presence_jwt_algs[alg].key_type
                     == NGX_HTTP_PRESENCE_JWT_KEY_HMAC
                     ? "presence_jwt_secret"
                     : "presence_jwt_key_file");
            return 0;
        }
    }

    return 1;
}
