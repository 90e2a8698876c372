
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * The flusher's steps that read sessions back from PostgreSQL, merged into
 * the zone as remote activity (never written back):
 *
 *   warm  a new zone (start, restart, resize, reset) is filled with the
 *         sessions active within the "recent" threshold, every writer's,
 *         most recent first, page by page, until the zone is full;
 *   pull  with presence_cluster, the rows other writers changed since the
 *         watermark; a row made inactive elsewhere is forgotten unless ours
 *         is newer.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/evp.h>

#include "ngx_http_presence_flush.h"
#include "ngx_http_presence_args.h"


/* rows of one pull or warm-start page; a full page is followed at once */
#define NGX_HTTP_PRESENCE_PULL_PAGE     20000

/* seconds of overlap: transactions that committed after later ones */
#define NGX_HTTP_PRESENCE_PULL_OVERLAP  10


/* a pull's rows, and the order they are merged in */

typedef struct {
    int                             row;
    int64_t                         last_ms;
} ngx_http_presence_pull_row_t;


typedef struct {
    PGresult                       *res;
    ngx_http_presence_pull_row_t   *order;       /* NULL: as they came */
} ngx_http_presence_pull_t;


static ngx_int_t ngx_http_presence_cluster_row(void *data, ngx_uint_t i,
    ngx_http_presence_activity_t *act);
static int ngx_libc_cdecl ngx_http_presence_cluster_oldest(const void *one,
    const void *two);
static int64_t ngx_http_presence_cluster_int(u_char *p, size_t len);
static ngx_int_t ngx_http_presence_cluster_profile(void *data, ngx_uint_t i,
    ngx_http_presence_profile_in_t *in);
static void ngx_http_presence_cluster_mark(PGresult *res, int n,
    ngx_http_presence_mark_t *mark);
static ngx_int_t ngx_http_presence_cluster_id(u_char *v, size_t len,
    u_char *id);


enum {
    NGX_HTTP_PRESENCE_PULL_WATERMARK = 0,   /* $1: DB clock, us; 0: none */
    NGX_HTTP_PRESENCE_PULL_NODE,            /* $2: presence_node */
    NGX_HTTP_PRESENCE_PULL_SINCE,           /* $3: without a watermark, s */
    NGX_HTTP_PRESENCE_PULL_OVERLAP_S,       /* $4: seconds */
    NGX_HTTP_PRESENCE_PULL_NPARAMS
};

enum {
    NGX_HTTP_PRESENCE_PULL_NEXT_US = 0,     /* $1: the last row's, us */
    NGX_HTTP_PRESENCE_PULL_NEXT_NODE,       /* $2: presence_node */
    NGX_HTTP_PRESENCE_PULL_NEXT_ID,         /* $3: the last row's id */
    NGX_HTTP_PRESENCE_PULL_NEXT_NPARAMS
};

enum {
    NGX_HTTP_PRESENCE_PULL_USER = 0,
    NGX_HTTP_PRESENCE_PULL_TOKEN,
    NGX_HTTP_PRESENCE_PULL_IP,
    NGX_HTTP_PRESENCE_PULL_UA,
    NGX_HTTP_PRESENCE_PULL_CREATED,         /* ms */
    NGX_HTTP_PRESENCE_PULL_LAST,            /* ms */
    NGX_HTTP_PRESENCE_PULL_EXPIRES,         /* s */
    NGX_HTTP_PRESENCE_PULL_ACTIVE,
    NGX_HTTP_PRESENCE_PULL_UPDATED,         /* us; warm: last_activity */
    NGX_HTTP_PRESENCE_PULL_ID,
    NGX_HTTP_PRESENCE_PULL_TOTAL,           /* warm, first page: all rows */
    NGX_HTTP_PRESENCE_PULL_HAS_USER,        /* warm: users has the row */
    NGX_HTTP_PRESENCE_PULL_PROFILE          /* warm: the profile fields, */
                                            /* is_active, privacy column */
};

enum {
    NGX_HTTP_PRESENCE_WARM_RECENT = 0,      /* $1: seconds */
    NGX_HTTP_PRESENCE_WARM_TIMEOUT,         /* $2: seconds */
    NGX_HTTP_PRESENCE_WARM_US,              /* $3: the last row's, us */
    NGX_HTTP_PRESENCE_WARM_ID,              /* $4: the last row's id */
    NGX_HTTP_PRESENCE_WARM_NPARAMS
};


/*
 * The rows of other writers that changed since the watermark, on the
 * database's clock; 10 s of overlap catch transactions that committed
 * after later ones (merging a row twice changes nothing).  Other writers
 * are other nodes, and the backend itself (rows whose node is NULL).  A
 * time PostgreSQL holds but the zone cannot (infinity) comes as NULL and
 * the row is skipped and counted; a row updated more than a day ahead of
 * the database's clock is left alone, so that it can never move the
 * watermark past everything else.  After a full page the next one starts
 * right after its last (updated_at, id): rows of one transaction share
 * their updated_at, and a page may end among them.
 */

/* a session row's columns as the pull and the warm start read them */

#define NGX_HTTP_PRESENCE_SESSION_COLUMNS                                     \
    "SELECT s.user_id, s.session_token, s.ip_address, s.user_agent,"          \
    " CASE WHEN isfinite(s.created_at)"                                       \
    " THEN (extract(epoch FROM s.created_at) * 1000)::bigint END,"            \
    " CASE WHEN isfinite(s.last_activity)"                                    \
    " THEN (extract(epoch FROM s.last_activity) * 1000)::bigint END,"         \
    " CASE WHEN isfinite(s.expires_at)"                                       \
    " THEN extract(epoch FROM s.expires_at)::bigint END, s.is_active,"

#define NGX_HTTP_PRESENCE_PULL_COLUMNS                                        \
    NGX_HTTP_PRESENCE_SESSION_COLUMNS                                         \
    " (extract(epoch FROM s.updated_at) * 1000000)::bigint, s.id"             \
    " FROM user_sessions s WHERE "

#define NGX_HTTP_PRESENCE_PULL_END                                            \
    " AND updated_at <= (now() AT TIME ZONE 'UTC') + interval '1 day'"        \
    " AND node IS DISTINCT FROM $2"                                           \
    " ORDER BY updated_at, id LIMIT " ngx_value(NGX_HTTP_PRESENCE_PULL_PAGE)


static const char  ngx_http_presence_pull_sql[] =
    NGX_HTTP_PRESENCE_PULL_COLUMNS
    "updated_at > CASE WHEN $1::bigint = 0"
    " THEN (now() AT TIME ZONE 'UTC') - make_interval(secs => $3::bigint)"
    " ELSE to_timestamp($1::bigint / 1000000.0) AT TIME ZONE 'UTC'"
    " - make_interval(secs => $4::int) END"
    NGX_HTTP_PRESENCE_PULL_END;


static const char  ngx_http_presence_pull_next_sql[] =
    NGX_HTTP_PRESENCE_PULL_COLUMNS
    "(updated_at, id) > (to_timestamp($1::bigint / 1000000.0)"
    " AT TIME ZONE 'UTC', $3::bigint)"
    NGX_HTTP_PRESENCE_PULL_END;


/*
 * The warm start: the active sessions of the last "recent" seconds on the
 * database's clock whose token did not expire beyond the session timeout,
 * by (last_activity, id) descending, with their users' profiles and
 * settings (so that a member's privacy is known as soon as its session is
 * back); the first page also counts them all.  Built when the flusher
 * starts: the privacy column is the configuration's, and users.is_active
 * is read only where it exists.
 */

#define NGX_HTTP_PRESENCE_WARM_SELECT                                         \
    NGX_HTTP_PRESENCE_SESSION_COLUMNS                                         \
    " (extract(epoch FROM s.last_activity) * 1000000)::bigint, s.id, "

#define NGX_HTTP_PRESENCE_WARM_WHERE                                          \
    " FROM user_sessions s LEFT JOIN users u ON u.id = s.user_id"             \
    " WHERE s.is_active AND isfinite(s.last_activity)"                        \
    " AND s.last_activity > (now() AT TIME ZONE 'UTC')"                       \
    " - make_interval(secs => $1::bigint)"                                    \
    " AND (s.expires_at IS NULL OR s.expires_at > (now() AT TIME ZONE 'UTC')" \
    " - make_interval(secs => $2::bigint))"

#define NGX_HTTP_PRESENCE_WARM_NEXT                                           \
    " AND (s.last_activity, s.id) < (to_timestamp($3::bigint / 1000000.0)"    \
    " AT TIME ZONE 'UTC', $4::bigint)"

#define NGX_HTTP_PRESENCE_WARM_END                                            \
    " ORDER BY s.last_activity DESC, s.id DESC"                               \
    " LIMIT " ngx_value(NGX_HTTP_PRESENCE_PULL_PAGE)


ngx_int_t
ngx_http_presence_cluster_init(ngx_http_presence_flusher_t *f,
    ngx_pool_t *pool)
{
    u_char      *p;
    size_t       len;
    ngx_uint_t   active, next;

    len = sizeof(NGX_HTTP_PRESENCE_WARM_SELECT) + sizeof("count(*) OVER ()")
          + sizeof(", u.id IS NOT NULL, ")
          + ngx_http_presence_profiles_size(f)
          + sizeof(NGX_HTTP_PRESENCE_WARM_WHERE)
          + sizeof(NGX_HTTP_PRESENCE_WARM_NEXT)
          + sizeof(NGX_HTTP_PRESENCE_WARM_END);

    for (active = 0; active < 2; active++) {
        for (next = 0; next < 2; next++) {
            p = ngx_pnalloc(pool, len);
            if (p == NULL) {
                return NGX_ERROR;
            }

            f->warm_sql[active][next] = (char *) p;

            p = ngx_sprintf(p, NGX_HTTP_PRESENCE_WARM_SELECT "%s"
                            ", u.id IS NOT NULL, ",
                            next ? "0" : "count(*) OVER ()");
            p = ngx_http_presence_profiles_columns(p, f, active);

            ngx_sprintf(p, NGX_HTTP_PRESENCE_WARM_WHERE "%s"
                        NGX_HTTP_PRESENCE_WARM_END "%Z",
                        next ? NGX_HTTP_PRESENCE_WARM_NEXT : "");
        }
    }

    return NGX_OK;
}


#define ngx_http_presence_pull_value(res, i, col)                             \
    ((u_char *) PQgetvalue(res, i, col))

#define ngx_http_presence_pull_int(res, i, col)                               \
    ngx_http_presence_cluster_int(ngx_http_presence_pull_value(res, i, col),  \
                                  PQgetlength(res, i, col))


ngx_int_t
ngx_http_presence_cluster_pull(ngx_http_presence_flusher_t *f)
{
    char                      wm[NGX_INT64_LEN + 1], id[NGX_INT64_LEN + 1];
    char                      since[NGX_TIME_T_LEN + 1];
    char                      overlap[NGX_INT_T_LEN + 1];
    const char               *params[NGX_HTTP_PRESENCE_PULL_NPARAMS];
    ngx_http_presence_mark_t  mark;

    if (!f->pmcf->cluster || f->exiting) {
        return NGX_DECLINED;
    }

    ngx_http_presence_store_watermark(f->zone, &mark, f->pg.log);

    ngx_sprintf((u_char *) wm, "%L%Z", mark.us);

    if (f->catchup && mark.us) {
        ngx_sprintf((u_char *) id, "%L%Z", mark.id);

        params[NGX_HTTP_PRESENCE_PULL_NEXT_US] = wm;
        params[NGX_HTTP_PRESENCE_PULL_NEXT_NODE] = (char *) f->pmcf->node.data;
        params[NGX_HTTP_PRESENCE_PULL_NEXT_ID] = id;

        return ngx_http_presence_flush_send(f, "pull",
                                        ngx_http_presence_pull_next_sql,
                                        NGX_HTTP_PRESENCE_PULL_NEXT_NPARAMS,
                                        params);
    }

    ngx_sprintf((u_char *) since, "%T%Z", f->pmcf->session_timeout);
    ngx_sprintf((u_char *) overlap, "%d%Z", NGX_HTTP_PRESENCE_PULL_OVERLAP);

    params[NGX_HTTP_PRESENCE_PULL_WATERMARK] = wm;
    params[NGX_HTTP_PRESENCE_PULL_NODE] = (char *) f->pmcf->node.data;
    params[NGX_HTTP_PRESENCE_PULL_SINCE] = since;
    params[NGX_HTTP_PRESENCE_PULL_OVERLAP_S] = overlap;

    return ngx_http_presence_flush_send(f, "pull",
                                        ngx_http_presence_pull_sql,
                                        NGX_HTTP_PRESENCE_PULL_NPARAMS,
                                        params);
}


ngx_int_t
ngx_http_presence_cluster_pulled(ngx_http_presence_flusher_t *f,
    PGresult *res)
{
    int                        i, n;
    ngx_http_presence_pull_t   pull;
    ngx_http_presence_mark_t   mark;

    if (res == NULL) {
        return NGX_ERROR;
    }

    n = PQntuples(res);

    /* the last row is the latest: ordered by updated_at, id */

    ngx_http_presence_cluster_mark(res, n, &mark);

    /*
     * merged oldest first, so that of users whose times tie here (another
     * node's clock ahead of ours) the latest is the most recent still
     */

    pull.res = res;
    pull.order = NULL;

    if (n > 1) {
        pull.order = ngx_alloc(n * sizeof(ngx_http_presence_pull_row_t),
                               f->pg.log);
        if (pull.order == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < n; i++) {
            pull.order[i].row = i;
            pull.order[i].last_ms = PQgetisnull(res, i,
                                                NGX_HTTP_PRESENCE_PULL_LAST)
                                    ? 0
                                    : ngx_http_presence_pull_int(res, i,
                                                NGX_HTTP_PRESENCE_PULL_LAST);
        }

        ngx_qsort(pull.order, n, sizeof(ngx_http_presence_pull_row_t),
                  ngx_http_presence_cluster_oldest);
    }

    ngx_http_presence_store_merge(f->zone, f->pmcf->session_timeout,
                                  ngx_http_presence_cluster_row, &pull,
                                  (ngx_uint_t) n, &mark, f->pg.log);

    ngx_free(pull.order);

    /* a full page: the next pull continues exactly where this one ended */

    f->catchup = (n == NGX_HTTP_PRESENCE_PULL_PAGE);

    return NGX_OK;
}


ngx_int_t
ngx_http_presence_cluster_warm(ngx_http_presence_flusher_t *f)
{
    char                      recent[NGX_TIME_T_LEN + 1];
    char                      timeout[NGX_TIME_T_LEN + 1];
    char                      us[NGX_INT64_LEN + 1], id[NGX_INT64_LEN + 1];
    const char               *params[NGX_HTTP_PRESENCE_WARM_NPARAMS];
    ngx_http_presence_warm_t  warm;

    if (f->exiting) {
        return NGX_DECLINED;
    }

    ngx_http_presence_store_warm(f->zone, &warm, 1, f->pg.log);

    if (warm.state == NGX_HTTP_PRESENCE_WARM_DONE) {
        return NGX_DECLINED;
    }

    ngx_sprintf((u_char *) recent, "%T%Z",
                f->pmcf->thresholds[NGX_HTTP_PRESENCE_RECENT]);
    ngx_sprintf((u_char *) timeout, "%T%Z", f->pmcf->session_timeout);

    params[NGX_HTTP_PRESENCE_WARM_RECENT] = recent;
    params[NGX_HTTP_PRESENCE_WARM_TIMEOUT] = timeout;

    if (warm.mark.us == 0) {
        return ngx_http_presence_flush_send(f, "warm",
                                        f->warm_sql[f->users_active != 0][0],
                                        NGX_HTTP_PRESENCE_WARM_US, params);
    }

    ngx_sprintf((u_char *) us, "%L%Z", warm.mark.us);
    ngx_sprintf((u_char *) id, "%L%Z", warm.mark.id);

    params[NGX_HTTP_PRESENCE_WARM_US] = us;
    params[NGX_HTTP_PRESENCE_WARM_ID] = id;

    return ngx_http_presence_flush_send(f, "warm",
                                        f->warm_sql[f->users_active != 0][1],
                                        NGX_HTTP_PRESENCE_WARM_NPARAMS,
                                        params);
}


/* a page of the warm start: NGX_AGAIN for the next one */

ngx_int_t
ngx_http_presence_cluster_warmed(ngx_http_presence_flusher_t *f,
    PGresult *res)
{
    int                        n;
    ngx_int_t                  rc;
    ngx_http_presence_pull_t   pull;
    ngx_http_presence_warm_t   warm;

    if (res == NULL) {
        return NGX_ERROR;
    }

    n = PQntuples(res);

    ngx_http_presence_cluster_mark(res, n, &warm.mark);

    warm.total = 0;

    if (n) {
        warm.total = ngx_http_presence_pull_int(res, 0,
                                                NGX_HTTP_PRESENCE_PULL_TOTAL);
    }

    pull.res = res;
    pull.order = NULL;

    rc = ngx_http_presence_store_warm_merge(f->zone, f->pmcf->session_timeout,
                                         ngx_http_presence_cluster_row,
                                         ngx_http_presence_cluster_profile,
                                         &pull, (ngx_uint_t) n, &warm,
                                         n < NGX_HTTP_PRESENCE_PULL_PAGE,
                                         f->pg.log);

    if (rc == NGX_ERROR) {
        return NGX_AGAIN;       /* the zone was reset: begin again */
    }

    if (rc == NGX_OK) {
        return NGX_AGAIN;
    }

    ngx_log_error(NGX_LOG_NOTICE, f->pg.log, 0,
                  "presence zone \"%V\": warm start loaded %uL of %uL "
                  "sessions from PostgreSQL in %L ms%s",
                  f->pg.zone, warm.loaded, warm.total, warm.msec,
                  warm.loaded < warm.total
                  ? " (the others did not fit or were not usable)" : "");

    return NGX_OK;
}


/* one pulled row, read under the zone's lock */

static ngx_int_t
ngx_http_presence_cluster_row(void *data, ngx_uint_t i,
    ngx_http_presence_activity_t *act)
{
    ngx_http_presence_pull_t *pull = data;

    u_char     *v;
    PGresult   *res;

    res = pull->res;

    if (pull->order) {
        i = pull->order[i].row;
    }

    if (PQgetlength(res, i, NGX_HTTP_PRESENCE_PULL_TOKEN) == 0
        || PQgetisnull(res, i, NGX_HTTP_PRESENCE_PULL_USER)
        || PQgetisnull(res, i, NGX_HTTP_PRESENCE_PULL_LAST)
        || PQgetisnull(res, i, NGX_HTTP_PRESENCE_PULL_ACTIVE))
    {
        return NGX_DECLINED;        /* not a session the zone can hold */
    }

    ngx_memzero(act, offsetof(ngx_http_presence_activity_t, ua));

    if (ngx_http_presence_cluster_id(
            ngx_http_presence_pull_value(res, i, NGX_HTTP_PRESENCE_PULL_TOKEN),
            PQgetlength(res, i, NGX_HTTP_PRESENCE_PULL_TOKEN), act->id)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    act->now_ms = ngx_http_presence_pull_int(res, i,
                                             NGX_HTTP_PRESENCE_PULL_LAST);

    if (*PQgetvalue(res, i, NGX_HTTP_PRESENCE_PULL_ACTIVE) != 't') {
        return NGX_DONE;
    }

    act->user_id = ngx_http_presence_pull_int(res, i,
                                              NGX_HTTP_PRESENCE_PULL_USER);
    act->created_ms = PQgetisnull(res, i, NGX_HTTP_PRESENCE_PULL_CREATED)
                      ? 0
                      : ngx_http_presence_pull_int(res, i,
                                              NGX_HTTP_PRESENCE_PULL_CREATED);
    act->exp = PQgetisnull(res, i, NGX_HTTP_PRESENCE_PULL_EXPIRES)
               ? INT64_MAX
               : ngx_http_presence_pull_int(res, i,
                                            NGX_HTTP_PRESENCE_PULL_EXPIRES);

    if (act->user_id <= 0 || act->now_ms <= 0) {
        return NGX_DECLINED;
    }

    v = ngx_http_presence_pull_value(res, i, NGX_HTTP_PRESENCE_PULL_IP);

    if (inet_pton(AF_INET, (char *) v, act->addr) == 1) {
        act->family = AF_INET;

    } else if (inet_pton(AF_INET6, (char *) v, act->addr) == 1) {
        act->family = AF_INET6;
    }

    act->ua_len = ngx_http_presence_sanitize(act->ua,
                     NGX_HTTP_PRESENCE_UA_MAX,
                     ngx_http_presence_pull_value(res, i,
                                                  NGX_HTTP_PRESENCE_PULL_UA),
                     PQgetlength(res, i, NGX_HTTP_PRESENCE_PULL_UA));
    act->ua_hash = ngx_crc32_short(act->ua, act->ua_len);
    act->device = (uint8_t) ngx_http_presence_device(act->ua, act->ua_len);

    return NGX_OK;
}


/*
 * A row's session id: the module writes it as 64 hex digits; any other
 * session_token (the backend's own rows: a token, a UUID) stands for the
 * SHA-256 of its text, as the module names the session of a token.
 */

static ngx_int_t
ngx_http_presence_cluster_id(u_char *v, size_t len, u_char *id)
{
    ngx_int_t   n;
    ngx_uint_t  k;

    if (len == NGX_HTTP_PRESENCE_ID_HEX_LEN) {

        for (k = 0; k < NGX_HTTP_PRESENCE_ID_LEN; k++) {
            n = ngx_hextoi(v + 2 * k, 2);
            if (n == NGX_ERROR) {
                break;
            }

            id[k] = (u_char) n;
        }

        if (k == NGX_HTTP_PRESENCE_ID_LEN) {
            return NGX_OK;
        }
    }

    return EVP_Digest(v, len, id, NULL, EVP_sha256(), NULL) ? NGX_OK
                                                             : NGX_ERROR;
}


/* the last row's (updated_at or last_activity, id); zero without rows */

static void
ngx_http_presence_cluster_mark(PGresult *res, int n,
    ngx_http_presence_mark_t *mark)
{
    mark->us = 0;
    mark->id = 0;

    if (n) {
        mark->us = ngx_http_presence_pull_int(res, n - 1,
                                              NGX_HTTP_PRESENCE_PULL_UPDATED);
        mark->id = ngx_http_presence_pull_int(res, n - 1,
                                              NGX_HTTP_PRESENCE_PULL_ID);
    }
}


/* a warm row's user: its profile and settings (NGX_DECLINED: no row) */

static ngx_int_t
ngx_http_presence_cluster_profile(void *data, ngx_uint_t i,
    ngx_http_presence_profile_in_t *in)
{
    ngx_http_presence_pull_t *pull = data;

    in->user_id = 0;

    if (*PQgetvalue(pull->res, i, NGX_HTTP_PRESENCE_PULL_HAS_USER) != 't') {
        return NGX_DECLINED;
    }

    ngx_http_presence_profiles_row(pull->res, i,
                                   NGX_HTTP_PRESENCE_PULL_PROFILE, in);

    return NGX_OK;
}


/* a signed bigint column; NGX_ERROR (-1) when it is not one */

static int64_t
ngx_http_presence_cluster_int(u_char *p, size_t len)
{
    off_t  n;

    if (len > 1 && p[0] == '-') {
        n = ngx_atoof(p + 1, len - 1);
        return (n == NGX_ERROR) ? NGX_ERROR : -n;
    }

    return ngx_atoof(p, len);
}


static int ngx_libc_cdecl
ngx_http_presence_cluster_oldest(const void *one, const void *two)
{
    const ngx_http_presence_pull_row_t  *a = one;
    const ngx_http_presence_pull_row_t  *b = two;

    if (a->last_ms != b->last_ms) {
        return (a->last_ms > b->last_ms) - (a->last_ms < b->last_ms);
    }

    return (a->row > b->row) - (a->row < b->row);
}
