
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * Tracking: the access-phase handler of "presence on" locations, the
 * preparation of what it records (before the lock), the per-worker tick
 * that moves the clock and sweeps expired sessions, and the
 * $presence_online_count variable.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence.h"


#define NGX_HTTP_PRESENCE_SWEEP_SLICE  1000
#define NGX_HTTP_PRESENCE_TICK         1000


static ngx_int_t ngx_http_presence_handler(ngx_http_request_t *r);
static void ngx_http_presence_tracked_marker(void *data);
static ngx_uint_t ngx_http_presence_tracked(ngx_http_request_t *r);
static void ngx_http_presence_prepare(ngx_http_request_t *r,
    ngx_http_presence_ctx_t *ctx, ngx_http_presence_activity_t *act);
static void ngx_http_presence_tick(ngx_event_t *ev);


/* presence_thresholds very_active=5m online=15m recent=1h; */

char *
ngx_http_presence_thresholds(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_presence_main_conf_t *pmcf = conf;

    time_t      *t;
    u_char      *eq;
    ngx_str_t   *value, name, v;
    ngx_uint_t   i;

    if (pmcf->very_active != NGX_CONF_UNSET
        || pmcf->online != NGX_CONF_UNSET
        || pmcf->recent != NGX_CONF_UNSET)
    {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        eq = (u_char *) ngx_strchr(value[i].data, '=');

        if (eq == NULL) {
            goto invalid;
        }

        name.data = value[i].data;
        name.len = eq - value[i].data;
        v.data = eq + 1;
        v.len = value[i].data + value[i].len - v.data;

        if (name.len == 11
            && ngx_strncmp(name.data, "very_active", 11) == 0)
        {
            t = &pmcf->very_active;

        } else if (name.len == 6 && ngx_strncmp(name.data, "online", 6) == 0)
        {
            t = &pmcf->online;

        } else if (name.len == 6 && ngx_strncmp(name.data, "recent", 6) == 0)
        {
            t = &pmcf->recent;

        } else {
            goto invalid;
        }

        if (*t != NGX_CONF_UNSET) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "presence_thresholds: \"%V\" is given twice",
                               &name);
            return NGX_CONF_ERROR;
        }

        *t = ngx_parse_time(&v, 1);

        if (*t == (time_t) NGX_ERROR || *t < 1
            || *t > NGX_HTTP_PRESENCE_WINDOW)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "presence_thresholds: invalid time \"%V\", "
                               "from 1s to 24h", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "presence_thresholds: invalid parameter \"%V\", "
                       "expected very_active=, online= or recent=",
                       &value[i]);
    return NGX_CONF_ERROR;
}


/* defaults and checks, once the http block is read */

ngx_int_t
ngx_http_presence_init_tracking(ngx_conf_t *cf)
{
    ngx_http_handler_pt            *h;
    ngx_http_core_main_conf_t      *cmcf;
    ngx_http_presence_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_presence_module);

    ngx_conf_init_value(pmcf->very_active, 5 * 60);
    ngx_conf_init_value(pmcf->online, 15 * 60);
    ngx_conf_init_value(pmcf->recent, 60 * 60);
    ngx_conf_init_value(pmcf->session_timeout, 24 * 60 * 60);
    ngx_conf_init_msec_value(pmcf->cleanup_interval, 60 * 1000);

    if (pmcf->very_active > pmcf->online || pmcf->online > pmcf->recent) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "presence_thresholds: very_active (%T s) <= "
                           "online (%T s) <= recent (%T s) must hold",
                           pmcf->very_active, pmcf->online, pmcf->recent);
        return NGX_ERROR;
    }

    if (pmcf->used) {
        if (pmcf->shm_zone == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"presence\" and \"presence_api\" need a "
                               "\"presence_zone\" in the http block");
            return NGX_ERROR;
        }

        if (!pmcf->jwt_keys_set) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"presence\" and \"presence_api\" need "
                               "\"presence_jwt_secret\" or "
                               "\"presence_jwt_key_file\"");
            return NGX_ERROR;
        }
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_presence_handler;

    return NGX_OK;
}


/*
 * Runs first in the access phase (a dynamic module registers last), so
 * "satisfy any" cannot skip it; subrequests never reach the access phase.
 * It always declines: tracking never changes the request.
 */

static ngx_int_t
ngx_http_presence_handler(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t             *cln;
    ngx_http_presence_ctx_t        *ctx;
    ngx_http_presence_zone_t       *zone;
    ngx_http_presence_loc_conf_t   *plcf;
    ngx_http_presence_counters_t   *counter;
    ngx_http_presence_main_conf_t  *pmcf;
    ngx_http_presence_activity_t    act;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_presence_module);

    if (!plcf->enable || r != r->main || ngx_http_presence_tracked(r)) {
        return NGX_DECLINED;
    }

    /* after an internal redirect the request is not counted again */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_DECLINED;
    }

    cln->handler = ngx_http_presence_tracked_marker;

    ctx = ngx_http_presence_token(r);
    if (ctx == NULL) {
        return NGX_DECLINED;
    }

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_presence_module);
    zone = pmcf->shm_zone->data;

    counter = ngx_http_presence_counter(zone->sh);
    (void) ngx_atomic_fetch_add(&counter->requests[ctx->status], 1);

    if (ctx->status != NGX_HTTP_PRESENCE_JWT_VALID) {
        return NGX_DECLINED;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "presence: tracking user %L", ctx->user_id);

    ngx_http_presence_prepare(r, ctx, &act);

    ngx_http_presence_touch(zone, &act, pmcf->session_timeout,
                            r->connection->log);

    ctx->tracked = 1;

    return NGX_DECLINED;
}


static void
ngx_http_presence_tracked_marker(void *data)
{
    /* only a marker */
}


static ngx_uint_t
ngx_http_presence_tracked(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t  *cln;

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_presence_tracked_marker) {
            return 1;
        }
    }

    return 0;
}


static void
ngx_http_presence_prepare(ngx_http_request_t *r, ngx_http_presence_ctx_t *ctx,
    ngx_http_presence_activity_t *act)
{
    ngx_time_t           *tp;
    ngx_table_elt_t      *ua;
    struct sockaddr_in   *sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6  *sin6;
#endif

    ngx_memcpy(act->id, ctx->session_id, 32);
    act->user_id = ctx->user_id;
    act->exp = ctx->exp;
    act->created_ms = 0;

    tp = ngx_timeofday();
    act->now_ms = (int64_t) tp->sec * 1000 + tp->msec;

    ngx_memzero(act->addr, sizeof(act->addr));
    act->family = 0;

    switch (r->connection->sockaddr->sa_family) {

    case AF_INET:
        sin = (struct sockaddr_in *) r->connection->sockaddr;
        ngx_memcpy(act->addr, &sin->sin_addr, 4);
        act->family = AF_INET;
        break;

#if (NGX_HAVE_INET6)
    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) r->connection->sockaddr;
        ngx_memcpy(act->addr, &sin6->sin6_addr, 16);
        act->family = AF_INET6;
        break;
#endif
    }

    ua = r->headers_in.user_agent;

    act->ua_len = ua ? ngx_http_presence_sanitize(act->ua,
                                                  NGX_HTTP_PRESENCE_UA_MAX,
                                                  ua->value.data,
                                                  ua->value.len)
                     : 0;

    act->ua_hash = ngx_crc32_short(act->ua, act->ua_len);

    act->method_len = ngx_http_presence_sanitize(act->method,
                                                 NGX_HTTP_PRESENCE_METHOD_MAX,
                                                 r->method_name.data,
                                                 r->method_name.len);

    act->uri_len = ngx_http_presence_sanitize(act->uri,
                                              NGX_HTTP_PRESENCE_URI_MAX,
                                              r->uri.data, r->uri.len);
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

        d = ngx_cpymem(d, p, n);
        p += n;
    }

    return d - dst;
}


ngx_int_t
ngx_http_presence_init_process(ngx_cycle_t *cycle)
{
    ngx_event_t                    *ev;
    ngx_http_presence_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_presence_module);

    if (pmcf == NULL || pmcf->shm_zone == NULL) {
        return NGX_OK;
    }

    if (ngx_http_presence_flusher_init(cycle, pmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    ev = &pmcf->sweep_event;

    ev->handler = ngx_http_presence_tick;
    ev->data = pmcf;
    ev->log = cycle->log;
    ev->cancelable = 1;

    ngx_add_timer(ev, ngx_random() % NGX_HTTP_PRESENCE_TICK + 1);

    return NGX_OK;
}


void
ngx_http_presence_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_presence_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_presence_module);

    if (pmcf != NULL && pmcf->shm_zone != NULL) {
        ngx_http_presence_flusher_exit(pmcf);
    }
}


/*
 * Every second, in every worker: the clock moves on (so counts age with
 * no traffic) and, once per presence_cleanup_interval across workers,
 * expired sessions are freed from the least recently active end, a slice
 * at a time.
 */

static void
ngx_http_presence_tick(ngx_event_t *ev)
{
    time_t                          now;
    ngx_msec_t                      next;
    ngx_uint_t                      more;
    ngx_http_presence_zone_t       *zone;
    ngx_http_presence_main_conf_t  *pmcf;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    pmcf = ev->data;
    zone = pmcf->shm_zone->data;
    now = ngx_time();
    more = 0;

    ngx_http_presence_lock(zone, ev->log);

    ngx_http_presence_advance(zone, now);
    ngx_http_presence_sample_peak(zone, pmcf->online);

    if (now >= zone->sh->next_sweep) {
        (void) ngx_http_presence_expire(zone, pmcf->session_timeout,
                                        NGX_HTTP_PRESENCE_SWEEP_SLICE,
                                        &more);
        if (!more) {
            zone->sh->next_sweep = now + ngx_max(pmcf->cleanup_interval
                                                 / 1000, 1);
        }
    }

    ngx_http_presence_unlock(zone);

    ngx_http_presence_flusher_tick(pmcf);

    next = more ? 1 : ngx_min(NGX_HTTP_PRESENCE_TICK,
                              pmcf->cleanup_interval);

    ngx_add_timer(ev, next);
}


ngx_int_t
ngx_http_presence_online_count_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                         *p;
    ngx_uint_t                      n;
    ngx_http_presence_zone_t       *zone;
    ngx_http_presence_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_presence_module);

    if (pmcf->shm_zone == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    zone = pmcf->shm_zone->data;

    ngx_http_presence_lock(zone, r->connection->log);
    ngx_http_presence_advance(zone, ngx_time());
    n = ngx_http_presence_count(zone, pmcf->online, 0);
    ngx_http_presence_unlock(zone);

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
