
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * The online API (presence_api): count, users, stats, sessions, status and
 * cleanup, answered from the zone with FastAPI's status codes and bodies.
 * What a response needs is copied out under the lock; the JSON is written
 * after it is released, straight into nginx buffers.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_api.h"
#include "ngx_http_presence_token.h"
#include "ngx_http_presence_shm.h"
#include "ngx_http_presence_json.h"
#include "ngx_http_presence_args.h"
#include "ngx_http_presence_stream.h"
#include "ngx_http_presence_analytics.h"


#define NGX_HTTP_PRESENCE_API_MAX_IDS  100

/* profiles of a page: at most 3 x 1024 bytes a user, usually a tenth */
#define NGX_HTTP_PRESENCE_PROFILE_AREA  65536
#define NGX_HTTP_PRESENCE_PAGE_TRIES    3


typedef enum {
    NGX_HTTP_PRESENCE_API_COUNT = 0,
    NGX_HTTP_PRESENCE_API_USERS,
    NGX_HTTP_PRESENCE_API_STATS,
    NGX_HTTP_PRESENCE_API_SESSIONS,
    NGX_HTTP_PRESENCE_API_STATUS,
    NGX_HTTP_PRESENCE_API_CLEANUP,
    NGX_HTTP_PRESENCE_API_STREAM,
    NGX_HTTP_PRESENCE_API_ANALYTICS,
    NGX_HTTP_PRESENCE_API_DAILY
} ngx_http_presence_api_e;


typedef struct {
    ngx_str_t                       name;
    ngx_uint_t                      methods;
    ngx_str_t                       allow;
} ngx_http_presence_endpoint_t;


/* a query parameter: FastAPI takes the last of repeated ones */

typedef struct {
    const char                     *name;
    ngx_int_t                       min;
    ngx_int_t                       max;         /* -1: no bound */
    ngx_int_t                       value;
} ngx_http_presence_param_t;


static ngx_int_t ngx_http_presence_api_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_presence_api_route(ngx_http_request_t *r);
static ngx_int_t ngx_http_presence_api_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *detail);
static ngx_int_t ngx_http_presence_api_unauthorized(ngx_http_request_t *r,
    const char *detail);
static ngx_uint_t ngx_http_presence_api_args(ngx_http_request_t *r,
    ngx_http_presence_param_t *params, ngx_uint_t n,
    ngx_http_presence_json_t *w);
static void ngx_http_presence_api_arg_error(ngx_http_presence_json_t *w,
    ngx_uint_t first, const char *name, const char *type, const char *msg,
    ngx_str_t *input, const char *ctx, ngx_int_t bound);
static ngx_int_t ngx_http_presence_api_arg(ngx_http_request_t *r,
    ngx_pool_t *pool, const char *name, ngx_str_t *value);
static ngx_int_t ngx_http_presence_api_count(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf);
static ngx_int_t ngx_http_presence_api_users(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf,
    ngx_http_presence_ctx_t *ctx);
static ngx_int_t ngx_http_presence_api_stats(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf);
static ngx_int_t ngx_http_presence_api_sessions(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf,
    ngx_http_presence_ctx_t *ctx);
static ngx_int_t ngx_http_presence_api_status(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf,
    ngx_http_presence_ctx_t *ctx);
static ngx_int_t ngx_http_presence_api_cleanup(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf);
static void ngx_http_presence_api_user(ngx_http_presence_json_t *w,
    ngx_http_presence_user_info_t *user, time_t online,
    ngx_http_presence_viewer_t *viewer);
static void ngx_http_presence_api_seen(ngx_http_presence_json_t *w,
    int64_t user_id, int64_t last_ms, time_t online, time_t recent,
    ngx_http_presence_viewer_t *viewer);
static void ngx_http_presence_api_session(ngx_http_presence_json_t *w,
    ngx_http_presence_session_info_t *s, ngx_http_presence_ctx_t *ctx);
static int ngx_libc_cdecl ngx_http_presence_api_user_first(const void *one,
    const void *two);
static int ngx_libc_cdecl ngx_http_presence_api_recent_first(
    const void *one, const void *two);


static ngx_http_presence_endpoint_t  ngx_http_presence_endpoints[] = {
    { ngx_string("count"), NGX_HTTP_GET|NGX_HTTP_HEAD,
      ngx_string("GET, HEAD") },
    { ngx_string("users"), NGX_HTTP_GET|NGX_HTTP_HEAD,
      ngx_string("GET, HEAD") },
    { ngx_string("stats"), NGX_HTTP_GET|NGX_HTTP_HEAD,
      ngx_string("GET, HEAD") },
    { ngx_string("sessions"), NGX_HTTP_GET|NGX_HTTP_HEAD,
      ngx_string("GET, HEAD") },
    { ngx_string("status"), NGX_HTTP_GET|NGX_HTTP_HEAD,
      ngx_string("GET, HEAD") },
    { ngx_string("cleanup"), NGX_HTTP_POST,
      ngx_string("POST") },
    { ngx_string("stream"), NGX_HTTP_GET|NGX_HTTP_HEAD,
      ngx_string("GET, HEAD") },
    { ngx_string("analytics"), NGX_HTTP_GET|NGX_HTTP_HEAD,
      ngx_string("GET, HEAD") },
    { ngx_string("analytics/daily"), NGX_HTTP_GET|NGX_HTTP_HEAD,
      ngx_string("GET, HEAD") }
};


char *
ngx_http_presence_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_presence_loc_conf_t *plcf = conf;

    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_presence_main_conf_t  *pmcf;

    if (plcf->api) {
        return "is duplicate";
    }

    plcf->api = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_presence_api_handler;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_presence_module);
    pmcf->used = 1;

    return NGX_CONF_OK;
}


/* presence_api_admin_claim NAME VALUE; */

char *
ngx_http_presence_api_admin_claim(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_presence_loc_conf_t *plcf = conf;

    ngx_str_t                      *value;
    ngx_uint_t                      i;
    ngx_http_presence_jwt_t        *jwt;
    ngx_http_presence_main_conf_t  *pmcf;

    if (plcf->admin_check != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0 || value[2].len == 0) {
        return "needs a claim name and a value";
    }

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_presence_module);
    jwt = &pmcf->jwt;

    for (i = 0; i < jwt->nchecks; i++) {
        if (ngx_strcmp(jwt->checks[i].name, value[1].data) == 0
            && ngx_strcmp(jwt->checks[i].value, value[2].data) == 0)
        {
            plcf->admin_check = i;
            return NGX_CONF_OK;
        }
    }

    if (jwt->nchecks == NGX_HTTP_PRESENCE_JWT_MAX_CHECKS) {
        return "is used with too many different claims";
    }

    jwt->checks[i].name = (char *) value[1].data;
    jwt->checks[i].value = (char *) value[2].data;
    jwt->nchecks++;

    plcf->admin_check = i;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_presence_api_handler(ngx_http_request_t *r)
{
    ngx_int_t                       rc, ep;
    ngx_table_elt_t                *h;
    ngx_http_presence_ctx_t        *ctx;
    ngx_http_presence_zone_t       *zone;
    ngx_http_presence_loc_conf_t   *plcf;
    ngx_http_presence_main_conf_t  *pmcf;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    /* as FastAPI decides: 404 and 405, then 401, then 422 */

    ep = ngx_http_presence_api_route(r);

    if (ep == NGX_DECLINED) {
        return ngx_http_presence_api_error(r, NGX_HTTP_NOT_FOUND,
                                           "Not Found");
    }

    if (!(r->method & ngx_http_presence_endpoints[ep].methods)) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Allow");
        h->value = ngx_http_presence_endpoints[ep].allow;

        return ngx_http_presence_api_error(r, NGX_HTTP_NOT_ALLOWED,
                                           "Method Not Allowed");
    }

    ctx = ngx_http_presence_token(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->status != NGX_HTTP_PRESENCE_JWT_VALID) {
        return ngx_http_presence_api_unauthorized(r,
                   ctx->status == NGX_HTTP_PRESENCE_JWT_MISSING
                   ? "Not authenticated" : "Could not validate credentials");
    }

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_presence_module);
    plcf = ngx_http_get_module_loc_conf(r, ngx_http_presence_module);
    zone = pmcf->shm_zone->data;

    /*
     * a caller who is not a user any more, as the profile loader last read
     * "users": the backend's answer; one not read yet is answered
     */

    if (plcf->require_user) {
        switch (ngx_http_presence_store_user(zone, ctx->user_id,
                                             r->connection->log))
        {
        case NGX_HTTP_PRESENCE_USER_MISSING:
        case NGX_HTTP_PRESENCE_USER_INACTIVE:
            return ngx_http_presence_api_unauthorized(r,
                                            "Could not validate credentials");
        default:
            break;
        }
    }

    switch (ep) {

    case NGX_HTTP_PRESENCE_API_COUNT:
        return ngx_http_presence_api_count(r, zone, pmcf);

    case NGX_HTTP_PRESENCE_API_USERS:
        return ngx_http_presence_api_users(r, zone, pmcf, ctx);

    case NGX_HTTP_PRESENCE_API_STATS:
        return ngx_http_presence_api_stats(r, zone, pmcf);

    case NGX_HTTP_PRESENCE_API_SESSIONS:
        return ngx_http_presence_api_sessions(r, zone, pmcf, ctx);

    case NGX_HTTP_PRESENCE_API_STATUS:
        return ngx_http_presence_api_status(r, zone, pmcf, ctx);

    case NGX_HTTP_PRESENCE_API_STREAM:
        return ngx_http_presence_stream(r, zone, pmcf, ctx);

    default: /* cleanup, analytics: presence_api_admin_claim */

        if (plcf->admin_check >= 0
            && !(ctx->matched & (1u << plcf->admin_check)))
        {
            return ngx_http_presence_api_error(r, NGX_HTTP_FORBIDDEN,
                                               "Not enough permissions");
        }

        if (ep == NGX_HTTP_PRESENCE_API_ANALYTICS) {
            return ngx_http_presence_api_analytics(r, zone, pmcf);
        }

        if (ep == NGX_HTTP_PRESENCE_API_DAILY) {
            return ngx_http_presence_api_daily(r, zone, pmcf);
        }

        return ngx_http_presence_api_cleanup(r, zone, pmcf);
    }
}


/* 401 with "WWW-Authenticate: Bearer", as FastAPI's OAuth2 scheme */

static ngx_int_t
ngx_http_presence_api_unauthorized(ngx_http_request_t *r,
    const char *detail)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "WWW-Authenticate");
    ngx_str_set(&h->value, "Bearer");

    r->headers_out.www_authenticate = h;

    return ngx_http_presence_api_error(r, NGX_HTTP_UNAUTHORIZED, detail);
}


/* the endpoint's index in the table, or NGX_DECLINED */

static ngx_int_t
ngx_http_presence_api_route(ngx_http_request_t *r)
{
    ngx_str_t   name;
    ngx_uint_t  i;

    ngx_http_presence_api_path(r, &name);

    for (i = 0; i < sizeof(ngx_http_presence_endpoints)
                    / sizeof(ngx_http_presence_endpoint_t); i++)
    {
        if (name.len == ngx_http_presence_endpoints[i].name.len
            && ngx_strncmp(name.data, ngx_http_presence_endpoints[i].name.data,
                           name.len) == 0)
        {
            return i;
        }
    }

    return NGX_DECLINED;
}


/*
 * The endpoint is what follows the location's prefix (one trailing slash
 * tolerated); in a regex or exact location, the last path segment.
 */

void
ngx_http_presence_api_path(ngx_http_request_t *r, ngx_str_t *name)
{
    u_char                    *p;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    *name = r->uri;

    if (name->len && name->data[name->len - 1] == '/') {
        name->len--;
    }

    if (
#if (NGX_PCRE)
        clcf->regex == NULL &&
#endif
        !clcf->exact_match
        && name->len >= clcf->name.len
        && ngx_strncmp(name->data, clcf->name.data, clcf->name.len) == 0)
    {
        name->data += clcf->name.len;
        name->len -= clcf->name.len;

        if (name->len && name->data[0] == '/') {
            name->data++;
            name->len--;
        }

        return;
    }

    p = name->data + name->len;

    while (p > name->data && p[-1] != '/') {
        p--;
    }

    name->len -= p - name->data;
    name->data = p;
}


static ngx_int_t
ngx_http_presence_api_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *detail)
{
    ngx_http_presence_json_t  w;

    ngx_http_presence_json_init(&w, r->pool, 128);

    ngx_http_presence_json_lit(&w, "{\"detail\":");
    ngx_http_presence_json_str(&w, (u_char *) detail, ngx_strlen(detail));
    ngx_http_presence_json_lit(&w, "}");

    return ngx_http_presence_api_send(r, status, &w);
}


/* serialises "json" (and releases it) straight into nginx buffers */

ngx_int_t
ngx_http_presence_api_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_http_presence_json_t *w)
{
    ngx_int_t         rc;
    ngx_table_elt_t  *cc;

    if (w->error || w->out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    w->buf->last_buf = (r == r->main) ? 1 : 0;
    w->buf->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = w->len;

    if (status == NGX_HTTP_PRESENCE_422) {
        ngx_str_set(&r->headers_out.status_line,
                    "422 Unprocessable Entity");
    }

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    cc = ngx_list_push(&r->headers_out.headers);
    if (cc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cc->hash = 1;
    ngx_str_set(&cc->key, "Cache-Control");
    ngx_str_set(&cc->value, "no-store");

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, w->out);
}


/* the last value of a query parameter, percent-decoded, in "pool" */

static ngx_int_t
ngx_http_presence_api_arg(ngx_http_request_t *r, ngx_pool_t *pool,
    const char *name, ngx_str_t *value)
{
    value->data = ngx_pnalloc(pool, r->args.len + 1);
    if (value->data == NULL) {
        return NGX_ERROR;
    }

    if (!ngx_http_presence_args_get(r->args.data, r->args.len, name,
                                    value->data, &value->len))
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * Integer parameters as FastAPI (pydantic) validates them: an optional
 * sign and digits; too large a number is out of range, not an error of
 * form.  Writes the "detail" list of what is wrong into w; returns how
 * many are.
 */

static ngx_uint_t
ngx_http_presence_api_args(ngx_http_request_t *r,
    ngx_http_presence_param_t *params, ngx_uint_t n,
    ngx_http_presence_json_t *w)
{
    int64_t     v;
    ngx_int_t   rc;
    ngx_str_t   value;
    ngx_uint_t  i, errors;

    errors = 0;

    for (i = 0; i < n; i++) {

        rc = ngx_http_presence_api_arg(r, r->pool, params[i].name, &value);

        if (rc == NGX_ERROR) {
            w->error = 1;
            return 1;
        }

        if (rc == NGX_DECLINED) {
            continue;   /* the default */
        }

        switch (ngx_http_presence_args_int(value.data, value.len,
                                           params[i].min, params[i].max, &v))
        {
        case NGX_HTTP_PRESENCE_ARG_OK:
            params[i].value = (ngx_int_t) v;
            break;

        case NGX_HTTP_PRESENCE_ARG_LOW:
            ngx_http_presence_api_arg_error(w, errors++ == 0, params[i].name,
                    "greater_than_equal", "Input should be greater than or "
                    "equal to %i", &value, "ge", params[i].min);
            break;

        case NGX_HTTP_PRESENCE_ARG_HIGH:
            ngx_http_presence_api_arg_error(w, errors++ == 0, params[i].name,
                    "less_than_equal", "Input should be less than or equal "
                    "to %i", &value, "le", params[i].max);
            break;

        default: /* NGX_HTTP_PRESENCE_ARG_PARSING */
            ngx_http_presence_api_arg_error(w, errors++ == 0, params[i].name,
                    "int_parsing", "Input should be a valid integer, unable "
                    "to parse string as an integer", &value, NULL, 0);
        }
    }

    if (errors) {
        ngx_http_presence_json_lit(w, "]}");
    }

    return errors;
}


/* one entry of FastAPI's "detail" list */

static void
ngx_http_presence_api_arg_error(ngx_http_presence_json_t *w,
    ngx_uint_t first, const char *name, const char *type, const char *msg,
    ngx_str_t *input, const char *ctx, ngx_int_t bound)
{
    u_char  text[128], *p;

    if (first) {
        ngx_http_presence_json_lit(w, "{\"detail\":[");

    } else {
        ngx_http_presence_json_lit(w, ",");
    }

    p = ngx_snprintf(text, sizeof(text), msg, bound);

    ngx_http_presence_json_lit(w, "{\"type\":");
    ngx_http_presence_json_str(w, (u_char *) type, ngx_strlen(type));
    ngx_http_presence_json_lit(w, ",\"loc\":[\"query\",");
    ngx_http_presence_json_str(w, (u_char *) name, ngx_strlen(name));
    ngx_http_presence_json_lit(w, "],\"msg\":");
    ngx_http_presence_json_str(w, text, p - text);
    ngx_http_presence_json_lit(w, ",\"input\":");

    if (input) {

        /* what the client sent, as FastAPI decodes it: valid UTF-8 */

        p = ngx_pnalloc(w->pool, 3 * input->len + 1);

        if (p == NULL) {
            w->error = 1;
            ngx_http_presence_json_lit(w, "null");

        } else {
            ngx_http_presence_json_str(w, p,
                    ngx_http_presence_utf8_replace(p, input->data,
                                                   input->len));
        }

    } else {
        ngx_http_presence_json_lit(w, "null");
    }

    if (ctx) {
        ngx_http_presence_json_lit(w, ",\"ctx\":{");
        ngx_http_presence_json_str(w, (u_char *) ctx, ngx_strlen(ctx));
        ngx_http_presence_json_lit(w, ":");
        ngx_http_presence_json_int(w, bound);
        ngx_http_presence_json_lit(w, "}");
    }

    ngx_http_presence_json_lit(w, "}");
}


static ngx_int_t
ngx_http_presence_api_count(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf)
{
    ngx_uint_t                  n;
    ngx_http_presence_json_t    w;
    ngx_http_presence_param_t   param = { "threshold_minutes", 1, 1440, 15 };

    ngx_http_presence_json_init(&w, r->pool, 128);

    if (ngx_http_presence_api_args(r, &param, 1, &w)) {
        return ngx_http_presence_api_send(r, NGX_HTTP_PRESENCE_422, &w);
    }

    n = ngx_http_presence_store_online(zone, param.value * 60,
                                       r->connection->log);

    ngx_http_presence_json_lit(&w, "{\"online_count\":");
    ngx_http_presence_json_int(&w, n);
    ngx_http_presence_json_lit(&w, ",\"threshold_minutes\":");
    ngx_http_presence_json_int(&w, param.value);
    ngx_http_presence_json_lit(&w, ",\"timestamp\":");
    ngx_http_presence_json_now(&w);
    ngx_http_presence_json_lit(&w, "}");

    return ngx_http_presence_api_send(r, NGX_HTTP_OK, &w);
}


/*
 * A page of the users queue, most recent first: the queue is in order to
 * the second, the page is sorted to the millisecond.
 */

static ngx_int_t
ngx_http_presence_api_users(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf,
    ngx_http_presence_ctx_t *ctx)
{
    u_char                      *area;
    size_t                       size;
    int64_t                     *ids;
    ngx_int_t                    rc;
    ngx_uint_t                   k, tries;
    ngx_http_presence_json_t     w;
    ngx_http_presence_page_t     page;
    ngx_http_presence_viewer_t   viewer;
    ngx_http_presence_param_t   params[] = {
        { "limit", 1, 100, 50 },
        { "offset", 0, -1, 0 },
        { "threshold_minutes", 1, 1440, 15 }
    };

    ngx_http_presence_json_init(&w, r->pool, 512);

    if (ngx_http_presence_api_args(r, params, 3, &w)) {
        return ngx_http_presence_api_send(r, NGX_HTTP_PRESENCE_422, &w);
    }

    page.limit = params[0].value;
    page.offset = params[1].value;
    page.threshold = params[2].value * 60;
    page.timeout = pmcf->session_timeout;
    page.visible_only = 1;              /* with presence_privacy_column */

    page.users = ngx_palloc(r->pool, page.limit
                                  * sizeof(ngx_http_presence_user_info_t));
    if (page.users == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * profiles rarely fill the usual area; when they do, the page is
     * asked for again with the room it said it needs (and a margin for
     * what changed meanwhile): a page never drops a profile silently
     */

    size = NGX_HTTP_PRESENCE_PROFILE_AREA;

    for (tries = 0; /* void */; tries++) {
        area = ngx_palloc(r->pool, size);
        if (area == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        page.area = area;
        page.area_end = area + size;

        ngx_http_presence_store_page(zone, &page, r->connection->log);

        if (page.needed <= size) {
            break;
        }

        if (tries == NGX_HTTP_PRESENCE_PAGE_TRIES) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "presence: a page of users needs %uz bytes of "
                          "profiles, more than %uz", page.needed, size);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        size = page.needed + page.needed / 4;
    }

    ngx_qsort(page.users, page.nusers, sizeof(ngx_http_presence_user_info_t),
              ngx_http_presence_api_user_first);

    /* a page is a lookup of its users: presence_lookup_limit */

    if (pmcf->lookup_limit && page.nusers) {
        ids = ngx_palloc(r->pool, page.nusers * sizeof(int64_t));
        if (ids == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        for (k = 0; k < page.nusers; k++) {
            ids[k] = page.users[k].user_id;
        }

        rc = ngx_http_presence_api_lookup(r, zone, ctx->user_id, ids,
                                          page.nusers);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    ngx_http_presence_api_viewer(r, zone, pmcf, ctx->user_id, &viewer);

    /* one buffer for the whole answer */

    ngx_http_presence_json_init(&w, r->pool,
                                page.nusers * 220 + (page.area - area) + 256);

    ngx_http_presence_json_lit(&w, "{\"online_users\":[");

    for (k = 0; k < page.nusers; k++) {
        if (k) {
            ngx_http_presence_json_lit(&w, ",");
        }

        ngx_http_presence_api_user(&w, &page.users[k], page.now
                                - pmcf->thresholds[NGX_HTTP_PRESENCE_ONLINE],
                                &viewer);
    }

    ngx_http_presence_json_lit(&w, "],\"count\":");
    ngx_http_presence_json_int(&w, page.nusers);
    ngx_http_presence_json_lit(&w, ",\"total\":");
    ngx_http_presence_json_int(&w, page.total);
    ngx_http_presence_json_lit(&w, ",\"threshold_minutes\":");
    ngx_http_presence_json_int(&w, params[2].value);
    ngx_http_presence_json_lit(&w, ",\"timestamp\":");
    ngx_http_presence_json_now(&w);
    ngx_http_presence_json_lit(&w, "}");

    return ngx_http_presence_api_send(r, NGX_HTTP_OK, &w);
}


/* one user of a page; "online": active after this second */

static void
ngx_http_presence_api_user(ngx_http_presence_json_t *w,
    ngx_http_presence_user_info_t *user, time_t online,
    ngx_http_presence_viewer_t *viewer)
{
    int64_t     last;
    ngx_uint_t  f;

    static const char  *names[] = {
        ",\"username\":", ",\"display_name\":", ",\"avatar_url\":"
    };

    ngx_http_presence_json_lit(w, "{\"user_id\":");
    ngx_http_presence_json_int(w, user->user_id);

    for (f = 0; f < NGX_HTTP_PRESENCE_PROFILE_FIELDS; f++) {
        ngx_http_presence_json_raw(w, names[f], ngx_strlen(names[f]));

        if (user->len[f] < 0) {
            ngx_http_presence_json_lit(w, "null");

        } else {
            ngx_http_presence_json_str(w, user->profile[f], user->len[f]);
        }
    }

    /* others see last_seen in buckets, or not at all (reciprocity) */

    last = user->last_ms;

    if (user->user_id != viewer->caller && viewer->precision) {
        last -= last % (viewer->precision * 1000);
    }

    ngx_http_presence_json_lit(w, ",\"last_seen\":");

    if (user->user_id != viewer->caller && viewer->no_last_seen) {
        ngx_http_presence_json_lit(w, "null");

    } else {
        ngx_http_presence_json_time(w, last);
    }

    ngx_http_presence_json_lit(w, ",\"session_count\":");
    ngx_http_presence_json_int(w, user->sessions);

    if (last / 1000 > online) {
        ngx_http_presence_json_lit(w, ",\"status\":\"online\"}");

    } else {
        ngx_http_presence_json_lit(w, ",\"status\":\"recently_active\"}");
    }
}


static ngx_int_t
ngx_http_presence_api_stats(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf)
{
    ngx_http_presence_json_t    w;
    ngx_http_presence_counts_t  c;

    ngx_http_presence_store_counts(zone, pmcf->thresholds, &c,
                                   r->connection->log);

    ngx_http_presence_json_init(&w, r->pool, 256);

    ngx_http_presence_json_lit(&w, "{\"timestamp\":");
    ngx_http_presence_json_now(&w);
    ngx_http_presence_json_lit(&w, ",\"very_active_users\":");
    ngx_http_presence_json_int(&w, c.users[NGX_HTTP_PRESENCE_VERY_ACTIVE]);
    ngx_http_presence_json_lit(&w, ",\"online_users\":");
    ngx_http_presence_json_int(&w, c.users[NGX_HTTP_PRESENCE_ONLINE]);
    ngx_http_presence_json_lit(&w, ",\"recently_active_users\":");
    ngx_http_presence_json_int(&w, c.users[NGX_HTTP_PRESENCE_RECENT]);
    ngx_http_presence_json_lit(&w, ",\"total_active_sessions\":");
    ngx_http_presence_json_int(&w, c.sessions);
    ngx_http_presence_json_lit(&w, ",\"peak_hour_today\":");

    if (c.peak_hour < 0) {
        ngx_http_presence_json_lit(&w, "null");

    } else {
        ngx_http_presence_json_int(&w, c.peak_hour);
    }

    ngx_http_presence_json_lit(&w, ",\"peak_users_today\":");
    ngx_http_presence_json_int(&w, c.peak);

    /* answers are partial until the warm start from PostgreSQL is over */

    if (pmcf->pg_conninfo.data) {
        if (c.warm_done) {
            ngx_http_presence_json_lit(&w, ",\"warm\":{\"done\":true");

        } else {
            ngx_http_presence_json_lit(&w, ",\"warm\":{\"done\":false");
        }

        ngx_http_presence_json_lit(&w, ",\"loaded\":");
        ngx_http_presence_json_int(&w, c.warm_loaded);
        ngx_http_presence_json_lit(&w, "}");
    }

    ngx_http_presence_json_lit(&w, ",\"status\":\"success\"}");

    return ngx_http_presence_api_send(r, NGX_HTTP_OK, &w);
}


static int ngx_libc_cdecl
ngx_http_presence_api_user_first(const void *one, const void *two)
{
    const ngx_http_presence_user_info_t  *a = one;
    const ngx_http_presence_user_info_t  *b = two;

    if (a->last_ms != b->last_ms) {
        return (a->last_ms < b->last_ms) - (a->last_ms > b->last_ms);
    }

    return (a->order > b->order) - (a->order < b->order);
}


static int ngx_libc_cdecl
ngx_http_presence_api_recent_first(const void *one, const void *two)
{
    const ngx_http_presence_session_info_t  *a = one;
    const ngx_http_presence_session_info_t  *b = two;

    return (a->last_ms < b->last_ms) - (a->last_ms > b->last_ms);
}


/* the caller's own sessions, most recent first */

static ngx_int_t
ngx_http_presence_api_sessions(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf,
    ngx_http_presence_ctx_t *ctx)
{
    ngx_uint_t                         n, max, k;
    ngx_http_presence_json_t           w;
    ngx_http_presence_session_info_t  *rows;

    /* how many, then copy: no allocation under the lock */

    max = ngx_http_presence_store_nsessions(zone, ctx->user_id,
                                            r->connection->log);

    rows = ngx_palloc(r->pool,
                      (max + 1) * sizeof(ngx_http_presence_session_info_t));
    if (rows == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = ngx_http_presence_store_sessions(zone, ctx->user_id,
                                         pmcf->session_timeout, rows, max,
                                         r->connection->log);

    ngx_qsort(rows, n, sizeof(ngx_http_presence_session_info_t),
              ngx_http_presence_api_recent_first);

    ngx_http_presence_json_init(&w, r->pool, 128 + n * (300 + 6 * 512));

    ngx_http_presence_json_lit(&w, "{\"user_id\":");
    ngx_http_presence_json_int(&w, ctx->user_id);
    ngx_http_presence_json_lit(&w, ",\"sessions\":[");

    for (k = 0; k < n; k++) {
        if (k) {
            ngx_http_presence_json_lit(&w, ",");
        }

        ngx_http_presence_api_session(&w, &rows[k], ctx);
    }

    ngx_http_presence_json_lit(&w, "],\"count\":");
    ngx_http_presence_json_int(&w, n);
    ngx_http_presence_json_lit(&w, ",\"timestamp\":");
    ngx_http_presence_json_now(&w);
    ngx_http_presence_json_lit(&w, "}");

    return ngx_http_presence_api_send(r, NGX_HTTP_OK, &w);
}


static void
ngx_http_presence_api_session(ngx_http_presence_json_t *w,
    ngx_http_presence_session_info_t *s, ngx_http_presence_ctx_t *ctx)
{
    u_char  id[NGX_HTTP_PRESENCE_ID_HEX_LEN], ip[NGX_INET6_ADDRSTRLEN];
    size_t  len;

    ngx_hex_dump(id, s->id, NGX_HTTP_PRESENCE_ID_LEN);

    ngx_http_presence_json_lit(w, "{\"session_id\":");
    ngx_http_presence_json_str(w, id, NGX_HTTP_PRESENCE_ID_HEX_LEN);
    ngx_http_presence_json_lit(w, ",\"ip_address\":");

    if (s->family == 0) {
        ngx_http_presence_json_lit(w, "null");

    } else {
        len = ngx_inet_ntop(s->family, s->addr, ip, sizeof(ip));
        ngx_http_presence_json_str(w, ip, len);
    }

    ngx_http_presence_json_lit(w, ",\"user_agent\":");

    if (s->ua_len) {
        ngx_http_presence_json_str(w, s->ua, s->ua_len);

    } else {
        ngx_http_presence_json_lit(w, "null");
    }

    ngx_http_presence_json_lit(w, ",\"created_at\":");
    ngx_http_presence_json_time(w, s->created_ms);
    ngx_http_presence_json_lit(w, ",\"last_activity\":");
    ngx_http_presence_json_time(w, s->last_ms);

    if (ngx_memcmp(s->id, ctx->session_id, NGX_HTTP_PRESENCE_ID_LEN) == 0) {
        ngx_http_presence_json_lit(w, ",\"is_current\":true}");

    } else {
        ngx_http_presence_json_lit(w, ",\"is_current\":false}");
    }
}


/*
 * user_ids=1,2,3: at most "max" positive integers, duplicates once;
 * NGX_DECLINED with the 422 body in w; NGX_DONE when there is no user_ids
 * and they are optional (the stream's aggregate)
 */

ngx_int_t
ngx_http_presence_api_ids(ngx_http_request_t *r, int64_t *ids,
    ngx_uint_t max, ngx_uint_t optional, ngx_uint_t *n,
    ngx_http_presence_json_t *w)
{
    u_char      *p;
    size_t       count;
    ngx_int_t    rc;
    ngx_str_t    value;
    const char  *msg;

    *n = 0;

    rc = ngx_http_presence_api_arg(r, w->pool, "user_ids", &value);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED && optional) {
        return NGX_DONE;
    }

    if (rc == NGX_DECLINED) {
        ngx_http_presence_api_arg_error(w, 1, "user_ids", "missing",
                                        "Field required", NULL, NULL, 0);
        ngx_http_presence_json_lit(w, "]}");
        return NGX_DECLINED;
    }

    switch (ngx_http_presence_args_ids(value.data, value.len, ids, max,
                                       &count))
    {
    case NGX_HTTP_PRESENCE_IDS_OK:
        *n = count;
        return NGX_OK;

    case NGX_HTTP_PRESENCE_IDS_EMPTY:
        msg = "Value error, user_ids must not be empty";
        break;

    case NGX_HTTP_PRESENCE_IDS_TOO_MANY:
        p = ngx_pnalloc(w->pool, sizeof("Value error, at most  user ids")
                                 + NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_sprintf(p, "Value error, at most %ui user ids%Z", max);
        msg = (const char *) p;
        break;

    default: /* NGX_HTTP_PRESENCE_IDS_JUNK */
        msg = "Value error, user ids must be positive integers";
    }

    ngx_http_presence_api_arg_error(w, 1, "user_ids", "value_error", msg,
                                    &value, NULL, 0);
    ngx_http_presence_json_lit(w, "]}");

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_presence_api_status(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf,
    ngx_http_presence_ctx_t *ctx)
{
    u_char                      hidden[NGX_HTTP_PRESENCE_API_MAX_IDS];
    time_t                      now;
    int64_t                     ids[NGX_HTTP_PRESENCE_API_MAX_IDS];
    int64_t                     last[NGX_HTTP_PRESENCE_API_MAX_IDS];
    ngx_int_t                   rc;
    ngx_uint_t                  n;
    ngx_http_presence_json_t    w;
    ngx_http_presence_viewer_t  viewer;

    ngx_http_presence_json_init(&w, r->pool, 4096);

    rc = ngx_http_presence_api_ids(r, ids, NGX_HTTP_PRESENCE_API_MAX_IDS, 0,
                                   &n, &w);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_presence_api_send(r, NGX_HTTP_PRESENCE_422, &w);
    }

    rc = ngx_http_presence_api_lookup(r, zone, ctx->user_id, ids, n);
    if (rc != NGX_OK) {
        return rc;
    }

    ngx_http_presence_api_viewer(r, zone, pmcf, ctx->user_id, &viewer);

    now = ngx_http_presence_store_last_seen(zone, ids, n, last, hidden, NULL,
                                            r->connection->log);

    ngx_http_presence_api_statuses(&w, pmcf, &viewer, ids, last, hidden, n,
                                   now);

    return ngx_http_presence_api_send(r, NGX_HTTP_OK, &w);
}


/*
 * {"statuses":{...},"timestamp":...}: last[i] < 0 for unknown users; a
 * user who hides (hidden[i]) is offline to everyone but itself
 */

void
ngx_http_presence_api_statuses(ngx_http_presence_json_t *w,
    ngx_http_presence_main_conf_t *pmcf, ngx_http_presence_viewer_t *viewer,
    int64_t *ids, int64_t *last, u_char *hidden, ngx_uint_t n, time_t now)
{
    time_t      online, recent;
    ngx_uint_t  i;

    online = now - pmcf->thresholds[NGX_HTTP_PRESENCE_ONLINE];
    recent = now - pmcf->thresholds[NGX_HTTP_PRESENCE_RECENT];

    ngx_http_presence_json_lit(w, "{\"statuses\":{");

    for (i = 0; i < n; i++) {
        if (i) {
            ngx_http_presence_json_lit(w, ",");
        }

        ngx_http_presence_json_lit(w, "\"");
        ngx_http_presence_json_int(w, ids[i]);
        ngx_http_presence_json_lit(w, "\":");

        ngx_http_presence_api_seen(w, ids[i],
                                   (hidden[i] && ids[i] != viewer->caller)
                                   ? -1 : last[i], online, recent, viewer);
    }

    ngx_http_presence_json_lit(w, "},\"timestamp\":");
    ngx_http_presence_json_now(w);
    ngx_http_presence_json_lit(w, "}");
}


/* {"status":...,"last_seen":...} of one user, as the viewer may see it */

static void
ngx_http_presence_api_seen(ngx_http_presence_json_t *w, int64_t user_id,
    int64_t last_ms, time_t online, time_t recent,
    ngx_http_presence_viewer_t *viewer)
{
    if (last_ms < 0) {
        ngx_http_presence_json_lit(w, "{\"status\":\"offline\","
                                      "\"last_seen\":null}");
        return;
    }

    if (user_id != viewer->caller && viewer->precision) {
        last_ms -= last_ms % (viewer->precision * 1000);
    }

    if (last_ms / 1000 > online) {
        ngx_http_presence_json_lit(w, "{\"status\":\"online\"");

    } else if (last_ms / 1000 > recent) {
        ngx_http_presence_json_lit(w, "{\"status\":\"recently_active\"");

    } else {
        ngx_http_presence_json_lit(w, "{\"status\":\"offline\"");
    }

    ngx_http_presence_json_lit(w, ",\"last_seen\":");

    if (user_id != viewer->caller && viewer->no_last_seen) {
        ngx_http_presence_json_lit(w, "null}");
        return;
    }

    ngx_http_presence_json_time(w, last_ms);
    ngx_http_presence_json_lit(w, "}");
}


/* the caller's view of others */

void
ngx_http_presence_api_viewer(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf,
    int64_t caller, ngx_http_presence_viewer_t *viewer)
{
    viewer->caller = caller;
    viewer->precision = pmcf->last_seen_precision;
    viewer->no_last_seen = pmcf->privacy_reciprocal
                           && pmcf->privacy_column.len
                           && ngx_http_presence_store_hides(zone, caller,
                                                      r->connection->log);
}


/* presence_lookup_limit: NGX_OK, or the 429 answer's code */

ngx_int_t
ngx_http_presence_api_lookup(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, int64_t caller, int64_t *ids,
    ngx_uint_t n)
{
    time_t            retry;
    ngx_table_elt_t  *h;

    if (ngx_http_presence_store_lookup(zone, caller, ids, n, &retry,
                                       r->connection->log)
        == NGX_OK)
    {
        return NGX_OK;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->value.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (h->value.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Retry-After");
    h->value.len = ngx_sprintf(h->value.data, "%T", ngx_max(retry, 1))
                   - h->value.data;

    return ngx_http_presence_api_error(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                       "Too Many Requests");
}


/* GET analytics: from the zone, now */

ngx_int_t
ngx_http_presence_api_analytics(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf)
{
    ngx_http_presence_json_t       w;
    ngx_http_presence_analytics_t  a;

    ngx_http_presence_store_analytics(zone,
                                 pmcf->thresholds[NGX_HTTP_PRESENCE_ONLINE],
                                 &a, r->connection->log);

    ngx_http_presence_json_init(&w, r->pool, 2048);
    ngx_http_presence_analytics_json(&w, &a);

    return ngx_http_presence_api_send(r, NGX_HTTP_OK, &w);
}


/* GET analytics/daily?days=30 (1...365): presence_daily, and today */

ngx_int_t
ngx_http_presence_api_daily(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf)
{
    int64_t                     today;
    ngx_uint_t                  n;
    ngx_http_presence_day_t    *rows;
    ngx_http_presence_json_t    w;
    ngx_http_presence_param_t   param = { "days", 1, 365, 30 };

    ngx_http_presence_json_init(&w, r->pool, 256);

    if (ngx_http_presence_api_args(r, &param, 1, &w)) {
        return ngx_http_presence_api_send(r, NGX_HTTP_PRESENCE_422, &w);
    }

    rows = ngx_palloc(r->pool, (NGX_HTTP_PRESENCE_HISTORY + 2)
                               * sizeof(ngx_http_presence_day_t));
    if (rows == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    today = ngx_time() / NGX_HTTP_PRESENCE_DAY;

    n = ngx_http_presence_store_history(zone, today - param.value + 1, rows,
                                        NGX_HTTP_PRESENCE_HISTORY + 2,
                                        r->connection->log);

    ngx_http_presence_json_init(&w, r->pool, 160 * param.value + 64);
    ngx_http_presence_analytics_daily_json(&w, rows, n, today, param.value);

    return ngx_http_presence_api_send(r, NGX_HTTP_OK, &w);
}


/* expires now; the flusher applies the same rule to the table */

static ngx_int_t
ngx_http_presence_api_cleanup(ngx_http_request_t *r,
    ngx_http_presence_zone_t *zone, ngx_http_presence_main_conf_t *pmcf)
{
    ngx_uint_t                n;
    ngx_http_presence_json_t  w;

    n = ngx_http_presence_store_cleanup(zone, pmcf->session_timeout,
                                        r->connection->log);

    ngx_http_presence_json_init(&w, r->pool, 128);

    ngx_http_presence_json_lit(&w, "{\"cleaned_sessions\":");
    ngx_http_presence_json_int(&w, n);
    ngx_http_presence_json_lit(&w, ",\"timestamp\":");
    ngx_http_presence_json_now(&w);
    ngx_http_presence_json_lit(&w, ",\"status\":\"success\"}");

    return ngx_http_presence_api_send(r, NGX_HTTP_OK, &w);
}


/* $presence_online_count: users within the online threshold */

ngx_int_t
ngx_http_presence_online_count_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                         *p;
    ngx_uint_t                      n;
    ngx_http_presence_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_presence_module);

    if (pmcf->shm_zone == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    n = ngx_http_presence_store_online(pmcf->shm_zone->data,
                                 pmcf->thresholds[NGX_HTTP_PRESENCE_ONLINE],
                                 r->connection->log);

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->len = ngx_sprintf(p, "%ui", n) - p;
    v->data = p;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}
