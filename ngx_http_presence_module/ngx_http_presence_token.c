
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * The token side of the module: presence_jwt_* directives, finding the
 * token in a request, the per-worker cache of verdicts and the
 * $presence_user_id, $presence_jwt_status and $presence_session_id
 * variables.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_token.h"
#include "ngx_http_presence_shm.h"


#define NGX_HTTP_PRESENCE_JWT_MAX_FILE      (1024 * 1024)
#define NGX_HTTP_PRESENCE_JWT_NEGATIVE_TTL  1
#define NGX_HTTP_PRESENCE_JWT_MAX_TTL       3600


/*
 * a per-worker cache of verdicts: the token's bytes are the key (a fast
 * hash picks the place), tokens longer than 1k are verified every time
 */

#define NGX_HTTP_PRESENCE_JWT_CACHE_TOKEN  1024


typedef struct {
    ngx_rbtree_node_t               node;
    ngx_queue_t                     queue;
    u_char                         *token;
    size_t                          len;
    ngx_http_presence_jwt_status_e  status;
    time_t                          until;
    int64_t                         user_id;
    int64_t                         exp;
    uint32_t                        matched;
    u_char                          session_id[NGX_HTTP_PRESENCE_ID_LEN];
} ngx_http_presence_jwt_cache_node_t;


struct ngx_http_presence_jwt_cache_s {
    ngx_rbtree_t                    rbtree;
    ngx_rbtree_node_t               sentinel;
    ngx_queue_t                     lru;
    ngx_queue_t                     free;
    ngx_uint_t                      hits;
    ngx_uint_t                      misses;
};


static ngx_int_t ngx_http_presence_read_file(ngx_conf_t *cf, ngx_str_t *name,
    ngx_str_t *out);
static ngx_int_t ngx_http_presence_getenv(ngx_conf_t *cf, ngx_str_t *name,
    ngx_str_t *out);
static void ngx_http_presence_jwt_cleanup(void *data);
static ngx_int_t ngx_http_presence_find_token(ngx_http_request_t *r,
    ngx_str_t *token);
static void ngx_http_presence_verify(ngx_http_request_t *r,
    ngx_http_presence_main_conf_t *pmcf, ngx_str_t *token,
    ngx_http_presence_ctx_t *ctx);
static void ngx_http_presence_cache_cleanup(void *data);
static ngx_http_presence_jwt_cache_t *ngx_http_presence_cache(
    ngx_http_presence_main_conf_t *pmcf);
static ngx_http_presence_jwt_cache_node_t *ngx_http_presence_cache_lookup(
    ngx_http_presence_jwt_cache_t *cache, ngx_str_t *token, uint32_t hash);
static ngx_http_presence_jwt_cache_node_t *ngx_http_presence_cache_find(
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel, ngx_str_t *token,
    uint32_t hash);
static void ngx_http_presence_cache_store(ngx_http_presence_jwt_cache_t *cache,
    ngx_str_t *token, uint32_t hash, ngx_http_presence_ctx_t *ctx,
    time_t until);


static ngx_str_t  ngx_http_presence_jwt_statuses[] = {
    ngx_null_string,
    ngx_string("valid"),
    ngx_string("missing"),
    ngx_string("invalid"),
    ngx_string("expired")
};


/* presence_jwt_secret "literal" | file=PATH | env=NAME ...; */

char *
ngx_http_presence_jwt_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_presence_main_conf_t *pmcf = conf;

    char        err[NGX_HTTP_PRESENCE_JWT_ERRLEN];
    ngx_str_t  *value, secret, name;
    ngx_uint_t  i;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "file=", 5) == 0) {
            name.data = value[i].data + 5;
            name.len = value[i].len - 5;

            if (ngx_http_presence_read_file(cf, &name, &secret) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            /* a trailing newline is not part of the secret */

            if (secret.len && secret.data[secret.len - 1] == LF) {
                secret.len--;

                if (secret.len && secret.data[secret.len - 1] == CR) {
                    secret.len--;
                }
            }

        } else if (ngx_strncmp(value[i].data, "env=", 4) == 0) {
            name.data = value[i].data + 4;
            name.len = value[i].len - 4;

            if (ngx_http_presence_getenv(cf, &name, &secret) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

        } else {
            secret = value[i];
        }

        if (!ngx_http_presence_jwt_add_secret(&pmcf->jwt, secret.data,
                                              secret.len, err))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "presence_jwt_secret: %s", err);
            return NGX_CONF_ERROR;
        }

        if (secret.data != value[i].data) {
            ngx_explicit_memzero(secret.data, secret.len);
        }
    }

    pmcf->jwt_keys_set = 1;

    return NGX_CONF_OK;
}


char *
ngx_http_presence_jwt_key_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_presence_main_conf_t *pmcf = conf;

    char        err[NGX_HTTP_PRESENCE_JWT_ERRLEN];
    ngx_str_t  *value, data;

    value = cf->args->elts;

    if (ngx_http_presence_read_file(cf, &value[1], &data) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (!ngx_http_presence_jwt_add_keys(&pmcf->jwt, data.data, data.len,
                                        err))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "presence_jwt_key_file: \"%V\": %s",
                           &value[1], err);
        return NGX_CONF_ERROR;
    }

    pmcf->jwt_keys_set = 1;

    return NGX_CONF_OK;
}


char *
ngx_http_presence_jwt_algorithms(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_presence_main_conf_t *pmcf = conf;

    ngx_int_t    alg;
    ngx_str_t   *value;
    ngx_uint_t   i;
    unsigned     algs;

    if (pmcf->jwt_algorithms_set) {
        return "is duplicate";
    }

    value = cf->args->elts;
    algs = 0;

    for (i = 1; i < cf->args->nelts; i++) {
        alg = ngx_http_presence_jwt_alg(value[i].data, value[i].len);

        if (alg >= 0) {
            algs |= 1u << alg;
            continue;
        }

        if (value[i].len == 4
            && ngx_strncasecmp(value[i].data, (u_char *) "none", 4) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "presence_jwt_algorithms: \"%V\" is never "
                               "accepted: unsigned tokens prove nothing",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "presence_jwt_algorithms: unknown algorithm "
                           "\"%V\" (HS256, HS384, HS512, RS256, RS384, "
                           "RS512, PS256, PS384, PS512, ES256, ES384, "
                           "ES512, EdDSA)", &value[i]);
        return NGX_CONF_ERROR;
    }

    pmcf->jwt.algorithms = algs;
    pmcf->jwt_algorithms_set = 1;

    return NGX_CONF_OK;
}


/* presence_jwt_claim, presence_jwt_issuer: a non-empty string */

char *
ngx_http_presence_jwt_string(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    char       **field;
    ngx_str_t   *value;

    field = (char **) (p + cmd->offset);

    if (*field != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must not be empty", &cmd->name);
        return NGX_CONF_ERROR;
    }

    /* configuration strings end with a NUL */

    *field = (char *) value[1].data;

    return NGX_CONF_OK;
}


/* presence_jwt_audience NAME ...; */

char *
ngx_http_presence_jwt_audience(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_presence_main_conf_t *pmcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    if (pmcf->jwt.audiences) {
        return "is duplicate";
    }

    value = cf->args->elts;

    pmcf->jwt.audiences = ngx_pcalloc(cf->pool,
                                      cf->args->nelts * sizeof(char *));
    if (pmcf->jwt.audiences == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {
        if (value[i].len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"presence_jwt_audience\" must not be "
                               "empty");
            return NGX_CONF_ERROR;
        }

        pmcf->jwt.audiences[i - 1] = (char *) value[i].data;
    }

    pmcf->jwt.naudiences = cf->args->nelts - 1;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_presence_read_file(ngx_conf_t *cf, ngx_str_t *name, ngx_str_t *out)
{
    ssize_t          n;
    ngx_fd_t         fd;
    ngx_str_t        path;
    ngx_file_info_t  fi;

    path = *name;

    if (path.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": no file name",
                           (ngx_str_t *) cf->args->elts);
        return NGX_ERROR;
    }

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    fd = ngx_open_file(path.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"%V\": cannot open \"%s\"",
                           (ngx_str_t *) cf->args->elts, path.data);
        return NGX_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || ngx_file_size(&fi) > NGX_HTTP_PRESENCE_JWT_MAX_FILE)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"%V\": \"%s\" is not a readable file of at "
                           "most 1M", (ngx_str_t *) cf->args->elts,
                           path.data);
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    out->len = (size_t) ngx_file_size(&fi);
    out->data = ngx_pnalloc(cf->pool, out->len + 1);
    if (out->data == NULL) {
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    n = ngx_read_fd(fd, out->data, out->len);

    if (n == -1 || (size_t) n != out->len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"%V\": cannot read \"%s\"",
                           (ngx_str_t *) cf->args->elts, path.data);
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    out->data[out->len] = '\0';

    ngx_close_file(fd);

    return NGX_OK;
}


/*
 * env=NAME: an "env NAME=value;" line, else the master's environment, read
 * now, at configuration time (a new value needs a restart)
 */

static ngx_int_t
ngx_http_presence_getenv(ngx_conf_t *cf, ngx_str_t *name, ngx_str_t *out)
{
    u_char           *p;
    ngx_str_t        *var;
    ngx_uint_t        i;
    ngx_core_conf_t  *ccf;

    if (name->len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "presence_jwt_secret: \"env=\" needs a name");
        return NGX_ERROR;
    }

    ccf = (ngx_core_conf_t *) ngx_get_conf(cf->cycle->conf_ctx,
                                           ngx_core_module);
    var = ccf->env.elts;

    /* "env NAME=value;" keeps the name's length, the value follows '=' */

    for (i = 0; i < ccf->env.nelts; i++) {
        if (var[i].len == name->len
            && var[i].data[name->len] == '='
            && ngx_strncmp(var[i].data, name->data, name->len) == 0)
        {
            out->data = var[i].data + name->len + 1;
            out->len = ngx_strlen(out->data);
            goto found;
        }
    }

    p = (u_char *) getenv((char *) name->data);

    if (p == NULL || *p == '\0') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "presence_jwt_secret: environment variable "
                           "\"%V\" is not set or empty", name);
        return NGX_ERROR;
    }

    out->len = ngx_strlen(p);
    out->data = ngx_pnalloc(cf->pool, out->len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, p, out->len);

    return NGX_OK;

found:

    if (out->len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "presence_jwt_secret: environment variable "
                           "\"%V\" is empty", name);
        return NGX_ERROR;
    }

    p = ngx_pnalloc(cf->pool, out->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = ngx_cpymem(p, out->data, out->len) - out->len;

    return NGX_OK;
}


/* the verifier gets the directives' values, its keys go with the cycle */

char *
ngx_http_presence_jwt_init_conf(ngx_conf_t *cf,
    ngx_http_presence_main_conf_t *pmcf)
{
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_presence_jwt_cleanup;
    cln->data = &pmcf->jwt;

    pmcf->jwt.leeway = pmcf->jwt_leeway;
    pmcf->jwt.require_exp = pmcf->jwt_require_exp;
    pmcf->jwt.max_size = pmcf->jwt_max_size;

    return NGX_CONF_OK;
}


static void
ngx_http_presence_jwt_cleanup(void *data)
{
    ngx_http_presence_jwt_t  *jwt = data;

    ngx_http_presence_jwt_free(jwt);
}


/* the request's verdict, evaluated once and kept in the main request */

ngx_http_presence_ctx_t *
ngx_http_presence_token(ngx_http_request_t *r)
{
    ngx_str_t                       token;
    ngx_http_presence_ctx_t        *ctx;
    ngx_http_presence_main_conf_t  *pmcf;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_presence_module);

    if (ctx != NULL) {
        return ctx;
    }

    ctx = ngx_pcalloc(r->main->pool, sizeof(ngx_http_presence_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ngx_http_set_ctx(r->main, ctx, ngx_http_presence_module);

    if (ngx_http_presence_find_token(r, &token) != NGX_OK) {
        ctx->status = NGX_HTTP_PRESENCE_JWT_MISSING;
        return ctx;
    }

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_presence_module);

    ngx_http_presence_verify(r, pmcf, &token, ctx);

    return ctx;
}


/*
 * presence_jwt_token's value when it is not empty, else
 * "Authorization: Bearer <token>" (the scheme in any case, then one or
 * more spaces); another scheme counts as no token, as FastAPI's
 * HTTPBearer does
 */

static ngx_int_t
ngx_http_presence_find_token(ngx_http_request_t *r, ngx_str_t *token)
{
    u_char                        *p, *end;
    ngx_http_presence_loc_conf_t  *plcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_presence_module);

    if (plcf->jwt_token) {
        if (ngx_http_complex_value(r, plcf->jwt_token, token) != NGX_OK) {
            return NGX_ERROR;
        }

        if (token->len) {
            return NGX_OK;
        }
    }

    if (r->headers_in.authorization == NULL) {
        return NGX_DECLINED;
    }

    p = r->headers_in.authorization->value.data;
    end = p + r->headers_in.authorization->value.len;

    if (end - p < 7
        || ngx_strncasecmp(p, (u_char *) "Bearer ", 7) != 0)
    {
        return NGX_DECLINED;
    }

    p += 7;

    while (p < end && *p == ' ') {
        p++;
    }

    if (p == end) {
        return NGX_DECLINED;
    }

    token->data = p;
    token->len = end - p;

    return NGX_OK;
}


static void
ngx_http_presence_verify(ngx_http_request_t *r,
    ngx_http_presence_main_conf_t *pmcf, ngx_str_t *token,
    ngx_http_presence_ctx_t *ctx)
{
    time_t                               now, until;
    uint32_t                             hash;
    ngx_http_presence_jwt_result_t       res;
    ngx_http_presence_jwt_cache_t       *cache;
    ngx_http_presence_jwt_cache_node_t  *node;

    now = ngx_time();

    /* tokens are compared whole: a fast hash only picks the bucket */

    hash = ngx_murmur_hash2(token->data, token->len);

    cache = (token->len <= NGX_HTTP_PRESENCE_JWT_CACHE_TOKEN)
            ? ngx_http_presence_cache(pmcf) : NULL;

    if (cache != NULL) {
        node = ngx_http_presence_cache_lookup(cache, token, hash);

        if (node != NULL && now <= node->until) {
            cache->hits++;

            if (pmcf->shm_zone) {
                ngx_http_presence_store_count_cache(pmcf->shm_zone->data, 1);
            }

            ctx->status = node->status;
            ctx->user_id = node->user_id;
            ctx->exp = node->exp;
            ctx->matched = node->matched;
            ngx_memcpy(ctx->session_id, node->session_id,
                       NGX_HTTP_PRESENCE_ID_LEN);

            ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "presence jwt: cache hit, %V, user %L",
                           &ngx_http_presence_jwt_statuses[ctx->status],
                           ctx->user_id);
            return;
        }

        cache->misses++;
    }

    if (pmcf->shm_zone) {
        ngx_http_presence_store_count_cache(pmcf->shm_zone->data, 0);
    }

    ctx->status = ngx_http_presence_jwt_verify(&pmcf->jwt, token->data,
                                               token->len, now, &res);
    ctx->user_id = res.user_id;
    ctx->exp = res.exp;
    ctx->matched = res.matched;
    ngx_memcpy(ctx->session_id, res.session_id, NGX_HTTP_PRESENCE_ID_LEN);

    if (ctx->status == NGX_HTTP_PRESENCE_JWT_VALID) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "presence jwt: verified, user %L", ctx->user_id);

        /* usable while !(exp < now - leeway) */

        until = now + NGX_HTTP_PRESENCE_JWT_MAX_TTL;

        if (res.exp < (int64_t) until - pmcf->jwt.leeway) {
            until = (time_t) (res.exp + pmcf->jwt.leeway);
        }

    } else {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "presence: %V token: %s",
                      &ngx_http_presence_jwt_statuses[ctx->status],
                      res.reason);

        until = now + NGX_HTTP_PRESENCE_JWT_NEGATIVE_TTL;
    }

    if (cache != NULL) {
        ngx_http_presence_cache_store(cache, token, hash, ctx, until);
    }
}


/* the cached tokens' copies, freed with the cycle */

static void
ngx_http_presence_cache_cleanup(void *data)
{
    ngx_http_presence_jwt_cache_t  *cache = data;

    ngx_queue_t                         *q;
    ngx_http_presence_jwt_cache_node_t  *cn;

    for (q = ngx_queue_head(&cache->lru);
         q != ngx_queue_sentinel(&cache->lru);
         q = ngx_queue_next(q))
    {
        cn = ngx_queue_data(q, ngx_http_presence_jwt_cache_node_t, queue);
        ngx_free(cn->token);
    }
}


static ngx_http_presence_jwt_cache_t *
ngx_http_presence_cache(ngx_http_presence_main_conf_t *pmcf)
{
    ngx_uint_t                           i;
    ngx_pool_cleanup_t                  *cln;
    ngx_http_presence_jwt_cache_t       *cache;
    ngx_http_presence_jwt_cache_node_t  *nodes;

    if (pmcf->jwt_cache || pmcf->jwt_cache_size == 0) {
        return pmcf->jwt_cache;
    }

    /* allocated by each worker on first use, freed with the cycle */

    cache = ngx_palloc(ngx_cycle->pool, sizeof(ngx_http_presence_jwt_cache_t));
    nodes = ngx_palloc(ngx_cycle->pool, pmcf->jwt_cache_size
                                 * sizeof(ngx_http_presence_jwt_cache_node_t));

    if (cache == NULL || nodes == NULL) {
        pmcf->jwt_cache_size = 0;
        return NULL;
    }

    ngx_rbtree_init(&cache->rbtree, &cache->sentinel,
                    ngx_rbtree_insert_value);
    ngx_queue_init(&cache->lru);
    ngx_queue_init(&cache->free);

    cache->hits = 0;
    cache->misses = 0;

    for (i = 0; i < pmcf->jwt_cache_size; i++) {
        nodes[i].token = NULL;
        ngx_queue_insert_tail(&cache->free, &nodes[i].queue);
    }

    cln = ngx_pool_cleanup_add(ngx_cycle->pool, 0);
    if (cln == NULL) {
        pmcf->jwt_cache_size = 0;
        return NULL;
    }

    cln->handler = ngx_http_presence_cache_cleanup;
    cln->data = cache;

    pmcf->jwt_cache = cache;

    return cache;
}


static ngx_http_presence_jwt_cache_node_t *
ngx_http_presence_cache_lookup(ngx_http_presence_jwt_cache_t *cache,
    ngx_str_t *token, uint32_t hash)
{
    ngx_http_presence_jwt_cache_node_t  *cn;

    cn = ngx_http_presence_cache_find(cache->rbtree.root,
                                      cache->rbtree.sentinel, token, hash);

    if (cn != NULL) {
        ngx_queue_remove(&cn->queue);
        ngx_queue_insert_head(&cache->lru, &cn->queue);
    }

    return cn;
}


/*
 * Tokens whose hashes collide have equal keys, and after the tree's
 * rotations equal keys stand on both sides of one another: among them
 * both subtrees are searched (the depth of the tree bounds the recursion)
 */

static ngx_http_presence_jwt_cache_node_t *
ngx_http_presence_cache_find(ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel, ngx_str_t *token, uint32_t hash)
{
    ngx_http_presence_jwt_cache_node_t  *cn;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        cn = (ngx_http_presence_jwt_cache_node_t *) node;

        if (cn->len == token->len
            && ngx_memcmp(cn->token, token->data, token->len) == 0)
        {
            return cn;
        }

        cn = ngx_http_presence_cache_find(node->left, sentinel, token, hash);
        if (cn != NULL) {
            return cn;
        }

        node = node->right;
    }

    return NULL;
}


static void
ngx_http_presence_cache_store(ngx_http_presence_jwt_cache_t *cache,
    ngx_str_t *token, uint32_t hash, ngx_http_presence_ctx_t *ctx,
    time_t until)
{
    u_char                              *copy;
    ngx_queue_t                         *q;
    ngx_http_presence_jwt_cache_node_t  *cn;

    cn = ngx_http_presence_cache_lookup(cache, token, hash);

    if (cn == NULL) {
        copy = ngx_alloc(token->len, ngx_cycle->log);
        if (copy == NULL) {
            return;
        }

        if (!ngx_queue_empty(&cache->free)) {
            q = ngx_queue_head(&cache->free);
            cn = ngx_queue_data(q, ngx_http_presence_jwt_cache_node_t, queue);

        } else {
            q = ngx_queue_last(&cache->lru);
            cn = ngx_queue_data(q, ngx_http_presence_jwt_cache_node_t, queue);
            ngx_rbtree_delete(&cache->rbtree, &cn->node);
            ngx_free(cn->token);
        }

        ngx_queue_remove(q);
        ngx_queue_insert_head(&cache->lru, q);

        cn->token = ngx_cpymem(copy, token->data, token->len) - token->len;
        cn->len = token->len;
        cn->node.key = hash;
        ngx_rbtree_insert(&cache->rbtree, &cn->node);
    }

    cn->status = ctx->status;
    cn->until = until;
    cn->user_id = ctx->user_id;
    cn->exp = ctx->exp;
    cn->matched = ctx->matched;
    ngx_memcpy(cn->session_id, ctx->session_id, NGX_HTTP_PRESENCE_ID_LEN);
}


/* $presence_user_id, $presence_jwt_status, $presence_session_id */

ngx_int_t
ngx_http_presence_token_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                   *p;
    ngx_http_presence_ctx_t  *ctx;

    ctx = ngx_http_presence_token(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    if (data == NGX_HTTP_PRESENCE_VAR_STATUS) {
        v->len = ngx_http_presence_jwt_statuses[ctx->status].len;
        v->data = ngx_http_presence_jwt_statuses[ctx->status].data;
        return NGX_OK;
    }

    if (ctx->status != NGX_HTTP_PRESENCE_JWT_VALID) {
        v->len = 0;
        v->data = (u_char *) "";
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool,
                    ngx_max(NGX_INT64_LEN, NGX_HTTP_PRESENCE_ID_HEX_LEN));
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (data == NGX_HTTP_PRESENCE_VAR_USER_ID) {
        v->len = ngx_sprintf(p, "%L", ctx->user_id) - p;

    } else {
        v->len = ngx_hex_dump(p, ctx->session_id, NGX_HTTP_PRESENCE_ID_LEN)
                 - p;
    }

    v->data = p;

    return NGX_OK;
}
