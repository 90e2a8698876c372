
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * The flusher's steps on the "users" table.  Schema, once per connection:
 * whether "users" has the boolean "is_active" column (the backend's
 * models usually do).  Profiles: for the users whose profile is missing or
 * older than presence_profile_ttl (the most recently active first, then
 * the store's sweep of all of them), queries of up to 500 ids, up to 8 a
 * flush; each field is cut at 1024 bytes on a character boundary.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_flush.h"


#define NGX_HTTP_PRESENCE_PROFILE_SCAN  1000  /* users looked at */
#define NGX_HTTP_PRESENCE_PROFILE_LEN   1024  /* bytes of a field */


static void ngx_http_presence_profiles_cut(ngx_str_t *field, size_t len);


enum {
    NGX_HTTP_PRESENCE_PROFILES_IDS = 0,     /* $1: bigint[] */
    NGX_HTTP_PRESENCE_PROFILES_NPARAMS
};

enum {
    NGX_HTTP_PRESENCE_PROFILES_ID = 0,
    NGX_HTTP_PRESENCE_PROFILES_FIELD        /* the first of the columns */
};


static const char  ngx_http_presence_schema_sql[] =
    "SELECT EXISTS (SELECT 1 FROM pg_attribute"
    " WHERE attrelid = to_regclass('users') AND attname = 'is_active'"
    " AND atttypid = 'boolean'::regtype AND NOT attisdropped)";


/*
 * A user's profile and settings as the profile loader and the warm start
 * read them, from "users" as "u": the fields, each cut by PostgreSQL
 * already (1024 characters, at most 4 KiB, so that a huge column never
 * reaches the worker: an answer is at most 500 x 3 x 4 KiB); is_active
 * where "users" has it; the privacy column (checked to be a plain name).
 * A NULL stands in for what is not read.
 */

#define NGX_HTTP_PRESENCE_PROFILES_COLUMNS                                    \
    "left(u.username::text, " ngx_value(NGX_HTTP_PRESENCE_PROFILE_LEN) "),"   \
    " left(u.display_name::text, "                                            \
    ngx_value(NGX_HTTP_PRESENCE_PROFILE_LEN) "),"                             \
    " left(u.avatar_url::text, " ngx_value(NGX_HTTP_PRESENCE_PROFILE_LEN) "), "

static const char  ngx_http_presence_profiles_from[] =
    " FROM users u WHERE u.id = ANY($1::bigint[])";


size_t
ngx_http_presence_profiles_size(ngx_http_presence_flusher_t *f)
{
    return sizeof(NGX_HTTP_PRESENCE_PROFILES_COLUMNS)
           + sizeof("u.is_active, ") + sizeof("u.::boolean")
           + f->pmcf->privacy_column.len;
}


u_char *
ngx_http_presence_profiles_columns(u_char *p, ngx_http_presence_flusher_t *f,
    ngx_uint_t active)
{
    p = ngx_cpymem(p, NGX_HTTP_PRESENCE_PROFILES_COLUMNS,
                   sizeof(NGX_HTTP_PRESENCE_PROFILES_COLUMNS) - 1);

    if (active) {
        p = ngx_cpymem(p, "u.is_active, ", sizeof("u.is_active, ") - 1);

    } else {
        p = ngx_cpymem(p, "NULL::boolean, ", sizeof("NULL::boolean, ") - 1);
    }

    if (f->pmcf->privacy_column.len) {
        return ngx_sprintf(p, "u.%V::boolean", &f->pmcf->privacy_column);
    }

    return ngx_cpymem(p, "NULL::boolean", sizeof("NULL::boolean") - 1);
}


/* those columns of a row, from "col" on */

void
ngx_http_presence_profiles_row(PGresult *res, int i, int col,
    ngx_http_presence_profile_in_t *in)
{
    int         c;
    ngx_uint_t  j;

    for (j = 0; j < NGX_HTTP_PRESENCE_PROFILE_FIELDS; j++) {
        c = col + j;

        if (PQgetisnull(res, i, c)) {
            in->fields[j].data = NULL;
            in->fields[j].len = 0;
            continue;
        }

        in->fields[j].data = (u_char *) PQgetvalue(res, i, c);
        ngx_http_presence_profiles_cut(&in->fields[j],
                                       PQgetlength(res, i, c));
    }

    c = col + NGX_HTTP_PRESENCE_PROFILE_FIELDS;

    in->active = PQgetisnull(res, i, c) ? -1 : (*PQgetvalue(res, i, c) == 't');
    in->visible = PQgetisnull(res, i, c + 1)
                  ? -1 : (*PQgetvalue(res, i, c + 1) == 't');
}


/* the profiles statement, without and with users.is_active */

ngx_int_t
ngx_http_presence_profiles_init(ngx_http_presence_flusher_t *f,
    ngx_pool_t *pool)
{
    u_char      *p;
    ngx_uint_t   k;

    for (k = 0; k < 2; k++) {
        p = ngx_pnalloc(pool, sizeof("SELECT u.id, ")
                              + ngx_http_presence_profiles_size(f)
                              + sizeof(ngx_http_presence_profiles_from));
        if (p == NULL) {
            return NGX_ERROR;
        }

        f->profiles_sql[k] = (char *) p;

        p = ngx_cpymem(p, "SELECT u.id, ", sizeof("SELECT u.id, ") - 1);
        p = ngx_http_presence_profiles_columns(p, f, k);
        ngx_memcpy(p, ngx_http_presence_profiles_from,
                   sizeof(ngx_http_presence_profiles_from));
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_presence_profiles_schema(ngx_http_presence_flusher_t *f)
{
    return ngx_http_presence_flush_send(f, "schema",
                                        ngx_http_presence_schema_sql, 0,
                                        NULL);
}


ngx_int_t
ngx_http_presence_profiles_schema_loaded(ngx_http_presence_flusher_t *f,
    PGresult *res)
{
    if (res == NULL) {
        return NGX_ERROR;
    }

    f->users_active = (PQntuples(res) == 1
                       && *PQgetvalue(res, 0, 0) == 't');

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, f->pg.log, 0,
                   "presence flusher: users.is_active %s",
                   f->users_active ? "read" : "absent");

    return NGX_OK;
}


ngx_int_t
ngx_http_presence_profiles_load(ngx_http_presence_flusher_t *f)
{
    u_char      *p, *list;
    ngx_int_t    rc;
    ngx_uint_t   k;
    const char  *params[NGX_HTTP_PRESENCE_PROFILES_NPARAMS];

    f->nids = 0;

    if (f->exiting) {
        return NGX_DECLINED;
    }

    f->nids = ngx_http_presence_store_stale_profiles(f->zone,
                                              f->pmcf->profile_ttl, f->ids,
                                              NGX_HTTP_PRESENCE_PROFILE_MAX,
                                              NGX_HTTP_PRESENCE_PROFILE_SCAN,
                                              f->pg.log);
    if (f->nids == 0) {
        f->profile_rounds = 0;
        return NGX_DECLINED;
    }

    list = ngx_alloc(f->nids * (NGX_INT64_LEN + 1) + 3, f->pg.log);
    if (list == NULL) {
        return NGX_ERROR;
    }

    p = list;
    *p++ = '{';

    for (k = 0; k < f->nids; k++) {
        p = ngx_sprintf(p, k ? ",%L" : "%L", f->ids[k]);
    }

    *p++ = '}';
    *p = '\0';

    params[NGX_HTTP_PRESENCE_PROFILES_IDS] = (char *) list;

    rc = ngx_http_presence_flush_send(f, "profiles",
                                      f->profiles_sql[f->users_active != 0],
                                      NGX_HTTP_PRESENCE_PROFILES_NPARAMS,
                                      params);
    ngx_free(list);

    return rc;
}


ngx_int_t
ngx_http_presence_profiles_loaded(ngx_http_presence_flusher_t *f,
    PGresult *res)
{
    int                              i, n;
    ngx_http_presence_profile_in_t  *in;

    if (res == NULL) {
        f->profile_rounds = 0;
        return NGX_ERROR;
    }

    n = ngx_min(PQntuples(res), NGX_HTTP_PRESENCE_PROFILE_MAX);

    for (i = 0; i < n; i++) {
        in = &f->profiles[i];

        in->user_id = ngx_atoof((u_char *) PQgetvalue(res, i,
                                              NGX_HTTP_PRESENCE_PROFILES_ID),
                                PQgetlength(res, i,
                                            NGX_HTTP_PRESENCE_PROFILES_ID));

        ngx_http_presence_profiles_row(res, i, NGX_HTTP_PRESENCE_PROFILES_FIELD,
                                       in);
    }

    ngx_http_presence_store_set_profiles(f->zone, f->ids, f->nids,
                                         f->profiles, n, f->pg.log);

    /* a full query: there may be more, another one in this flush */

    if (f->nids == NGX_HTTP_PRESENCE_PROFILE_MAX
        && ++f->profile_rounds < NGX_HTTP_PRESENCE_PROFILE_ROUNDS)
    {
        return NGX_AGAIN;
    }

    f->profile_rounds = 0;

    return NGX_OK;
}


/* at most NGX_HTTP_PRESENCE_PROFILE_LEN bytes, on a character boundary */

static void
ngx_http_presence_profiles_cut(ngx_str_t *field, size_t len)
{
    field->len = ngx_min(len, NGX_HTTP_PRESENCE_PROFILE_LEN);

    while (field->len && field->len < len
           && (field->data[field->len] & 0xc0) == 0x80)
    {
        field->len--;
    }
}
