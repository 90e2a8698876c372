
/*
 * Copyright (C) The ngx_http_presence_module authors
 */


/*
 * Analytics: the flusher's daily step (presence_daily: today's row
 * upserted as it goes, a closed day's written once, the history read
 * back into the zone), and the JSON of GET analytics and
 * GET analytics/daily, which the API and the dashboard serve.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_presence_analytics.h"
#include "ngx_http_presence_flush.h"
#include "ngx_http_presence_args.h"


/* today's row is written at most this often, ms */
#define NGX_HTTP_PRESENCE_DAILY_EVERY  5000


static double ngx_http_presence_analytics_quantile(uint64_t *buckets,
    double q);


enum {
    NGX_HTTP_PRESENCE_DAILY_DAY = 0,        /* $1: the row's day */
    NGX_HTTP_PRESENCE_DAILY_PEAK,
    NGX_HTTP_PRESENCE_DAILY_USERS,
    NGX_HTTP_PRESENCE_DAILY_NEW,
    NGX_HTTP_PRESENCE_DAILY_STARTED,
    NGX_HTTP_PRESENCE_DAILY_ENDED,
    NGX_HTTP_PRESENCE_DAILY_COUNT,
    NGX_HTTP_PRESENCE_DAILY_MS,
    NGX_HTTP_PRESENCE_DAILY_HISTORY,        /* $9: 1 to read it back */
    NGX_HTTP_PRESENCE_DAILY_TODAY,          /* $10: days since the epoch */
    NGX_HTTP_PRESENCE_DAILY_NPARAMS
};


/*
 * One statement: the row (every number only grows), and the history up to
 * today when asked for (as it was before this statement: the API takes
 * the larger of each of today's numbers, the table's and the zone's)
 */

static const char  ngx_http_presence_daily_sql[] =
    "WITH up AS ("
    " INSERT INTO presence_daily AS d (day, peak_online, active_users,"
    " users_new_sessions, sessions_started, sessions_ended, duration_count,"
    " duration_sum_seconds, updated_at)"
    " VALUES ('1970-01-01'::date + $1::int, $2::int, $3::int, $4::int,"
    " $5::int, $6::int, $7::int, $8::bigint / 1000.0,"
    " now() AT TIME ZONE 'UTC')"
    " ON CONFLICT (day) DO UPDATE SET"
    " peak_online = GREATEST(d.peak_online, EXCLUDED.peak_online),"
    " active_users = GREATEST(d.active_users, EXCLUDED.active_users),"
    " users_new_sessions = GREATEST(d.users_new_sessions,"
    " EXCLUDED.users_new_sessions),"
    " sessions_started = GREATEST(d.sessions_started,"
    " EXCLUDED.sessions_started),"
    " sessions_ended = GREATEST(d.sessions_ended, EXCLUDED.sessions_ended),"
    " duration_count = GREATEST(d.duration_count, EXCLUDED.duration_count),"
    " duration_sum_seconds = GREATEST(d.duration_sum_seconds,"
    " EXCLUDED.duration_sum_seconds),"
    " updated_at = EXCLUDED.updated_at"
    " RETURNING 1"
    ") SELECT day - '1970-01-01'::date, peak_online, active_users,"
    " users_new_sessions, sessions_started, sessions_ended, duration_count,"
    " (duration_sum_seconds * 1000)::bigint FROM presence_daily"
    " WHERE $9::int = 1 AND day <= '1970-01-01'::date + $10::int"
    " AND day >= '1970-01-01'::date + $10::int - "
    ngx_value(NGX_HTTP_PRESENCE_HISTORY)
    " ORDER BY day";


ngx_int_t
ngx_http_presence_analytics_daily(ngx_http_presence_flusher_t *f)
{
    u_char                    buf[NGX_HTTP_PRESENCE_DAILY_NPARAMS]
                                 [NGX_INT64_LEN + 1];
    uint64_t                  v[NGX_HTTP_PRESENCE_DAILY_NPARAMS];
    ngx_uint_t                i, history;
    const char               *params[NGX_HTTP_PRESENCE_DAILY_NPARAMS];
    ngx_http_presence_day_t   today, prev, *row;

    if (f->exiting) {
        return NGX_DECLINED;
    }

    f->daily_pending = ngx_http_presence_store_day(f->zone,
                                 f->pmcf->thresholds[NGX_HTTP_PRESENCE_ONLINE],
                                 &today, &prev, &history, f->pg.log);

    if (!f->daily_pending && !history
        && ngx_current_msec - f->daily_at < NGX_HTTP_PRESENCE_DAILY_EVERY)
    {
        return NGX_DECLINED;
    }

    row = f->daily_pending ? &prev : &today;

    f->daily_day = row->day;
    f->daily_history = history;

    v[NGX_HTTP_PRESENCE_DAILY_DAY] = row->day;
    v[NGX_HTTP_PRESENCE_DAILY_PEAK] = row->peak_online;
    v[NGX_HTTP_PRESENCE_DAILY_USERS] = row->active_users;
    v[NGX_HTTP_PRESENCE_DAILY_NEW] = row->users_new;
    v[NGX_HTTP_PRESENCE_DAILY_STARTED] = row->started;
    v[NGX_HTTP_PRESENCE_DAILY_ENDED] = row->ended;
    v[NGX_HTTP_PRESENCE_DAILY_COUNT] = row->duration_count;
    v[NGX_HTTP_PRESENCE_DAILY_MS] = row->duration_ms;
    v[NGX_HTTP_PRESENCE_DAILY_HISTORY] = history;
    v[NGX_HTTP_PRESENCE_DAILY_TODAY] = today.day;

    for (i = 0; i < NGX_HTTP_PRESENCE_DAILY_NPARAMS; i++) {
        ngx_sprintf(buf[i], "%uL%Z", v[i]);
        params[i] = (char *) buf[i];
    }

    return ngx_http_presence_flush_send(f, "daily",
                                        ngx_http_presence_daily_sql,
                                        NGX_HTTP_PRESENCE_DAILY_NPARAMS,
                                        params);
}


ngx_int_t
ngx_http_presence_analytics_written(ngx_http_presence_flusher_t *f,
    PGresult *res)
{
    int                       i, n, k;
    off_t                     v[8];
    ngx_http_presence_day_t  *days;

    if (res == NULL) {
        return NGX_ERROR;
    }

    ngx_http_presence_store_day_written(f->zone, f->daily_day, f->pg.log);

    if (f->daily_history) {
        n = PQntuples(res);

        days = ngx_alloc((n + 1) * sizeof(ngx_http_presence_day_t),
                         f->pg.log);
        if (days == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < n; i++) {
            for (k = 0; k < 8; k++) {
                v[k] = ngx_atoof((u_char *) PQgetvalue(res, i, k),
                                 PQgetlength(res, i, k));
            }

            days[i].day = v[0];
            days[i].peak_online = v[1];
            days[i].active_users = v[2];
            days[i].users_new = v[3];
            days[i].started = v[4];
            days[i].ended = v[5];
            days[i].duration_count = v[6];
            days[i].duration_ms = v[7];
        }

        ngx_http_presence_store_set_history(f->zone, days, n, f->pg.log);

        ngx_free(days);
    }

    if (!f->daily_pending) {
        f->daily_at = ngx_current_msec;
    }

    /* a closed day was written: now today's row */

    return f->daily_pending ? NGX_AGAIN : NGX_OK;
}


/* GET analytics */

void
ngx_http_presence_analytics_json(ngx_http_presence_json_t *w,
    ngx_http_presence_analytics_t *a)
{
    ngx_uint_t  k, h;

    ngx_http_presence_json_lit(w, "{\"devices\":{");

    for (k = 0; k < NGX_HTTP_PRESENCE_DEVICES; k++) {
        ngx_http_presence_json_raw(w, k ? ",\"" : "\"", k ? 2 : 1);
        ngx_http_presence_json_raw(w, ngx_http_presence_device_names[k],
                              ngx_strlen(ngx_http_presence_device_names[k]));
        ngx_http_presence_json_lit(w, "\":");
        ngx_http_presence_json_int(w, a->devices[k]);
    }

    ngx_http_presence_json_lit(w, "},\"sessions\":{\"active\":");
    ngx_http_presence_json_int(w, a->active);
    ngx_http_presence_json_lit(w, ",\"started_today\":");
    ngx_http_presence_json_int(w, a->today.started);
    ngx_http_presence_json_lit(w, ",\"ended_today\":");
    ngx_http_presence_json_int(w, a->today.ended);
    ngx_http_presence_json_lit(w, ",\"duration_seconds\":{\"count\":");
    ngx_http_presence_json_int(w, a->today.duration_count);
    ngx_http_presence_json_lit(w, ",\"average\":");
    ngx_http_presence_json_int(w, a->today.duration_count
                                  ? (int64_t) (a->today.duration_ms
                                               / a->today.duration_count
                                               / 1000)
                                  : 0);
    ngx_http_presence_json_lit(w, ",\"median\":");
    ngx_http_presence_json_int(w, (int64_t)
                  ngx_http_presence_analytics_quantile(a->durations, 0.5));
    ngx_http_presence_json_lit(w, ",\"p90\":");
    ngx_http_presence_json_int(w, (int64_t)
                  ngx_http_presence_analytics_quantile(a->durations, 0.9));
    ngx_http_presence_json_lit(w, "}},\"users\":{\"active_today\":");
    ngx_http_presence_json_int(w, a->today.active_users);
    ngx_http_presence_json_lit(w, ",\"active_today_error\":0.016"
                                  ",\"with_new_session_today\":");
    ngx_http_presence_json_int(w, a->today.users_new);
    ngx_http_presence_json_lit(w, "},\"hourly\":[");

    for (h = 0; h < NGX_HTTP_PRESENCE_HOURS; h++) {
        if (h) {
            ngx_http_presence_json_lit(w, ",");
        }

        ngx_http_presence_json_lit(w, "{\"hour\":");
        ngx_http_presence_json_int(w, h);
        ngx_http_presence_json_lit(w, ",\"peak_online\":");
        ngx_http_presence_json_int(w, a->hour_peak[h]);
        ngx_http_presence_json_lit(w, ",\"active_users\":");
        ngx_http_presence_json_int(w, a->hour_users[h]);
        ngx_http_presence_json_lit(w, "}");
    }

    ngx_http_presence_json_lit(w, "],\"timestamp\":");
    ngx_http_presence_json_now(w);
    ngx_http_presence_json_lit(w, "}");
}


/* GET analytics/daily: "days" rows up to today, zeros where none */

void
ngx_http_presence_analytics_daily_json(ngx_http_presence_json_t *w,
    ngx_http_presence_day_t *rows, ngx_uint_t nrows, int64_t today,
    ngx_uint_t days)
{
    int64_t                   d;
    ngx_uint_t                i, k;
    ngx_http_presence_day_t   zero, *row;

    ngx_http_presence_json_lit(w, "{\"days\":[");

    for (d = today - (int64_t) days + 1, k = 0; d <= today; d++, k++) {

        /* a day's rows (the table's, the zone's): the larger of each */

        ngx_memzero(&zero, sizeof(ngx_http_presence_day_t));
        row = &zero;

        for (i = 0; i < nrows; i++) {
            if (rows[i].day != d) {
                continue;
            }

            zero.peak_online = ngx_max(zero.peak_online, rows[i].peak_online);
            zero.active_users = ngx_max(zero.active_users,
                                        rows[i].active_users);
            zero.users_new = ngx_max(zero.users_new, rows[i].users_new);
            zero.started = ngx_max(zero.started, rows[i].started);
            zero.ended = ngx_max(zero.ended, rows[i].ended);

            if (rows[i].duration_count > zero.duration_count) {
                zero.duration_count = rows[i].duration_count;
                zero.duration_ms = rows[i].duration_ms;
            }
        }

        if (k) {
            ngx_http_presence_json_lit(w, ",");
        }

        ngx_http_presence_json_lit(w, "{\"date\":");
        ngx_http_presence_json_day(w, d);
        ngx_http_presence_json_lit(w, ",\"peak_online\":");
        ngx_http_presence_json_int(w, row->peak_online);
        ngx_http_presence_json_lit(w, ",\"active_users\":");
        ngx_http_presence_json_int(w, row->active_users);
        ngx_http_presence_json_lit(w, ",\"users_with_new_session\":");
        ngx_http_presence_json_int(w, row->users_new);
        ngx_http_presence_json_lit(w, ",\"sessions_started\":");
        ngx_http_presence_json_int(w, row->started);
        ngx_http_presence_json_lit(w, ",\"sessions_ended\":");
        ngx_http_presence_json_int(w, row->ended);
        ngx_http_presence_json_lit(w, ",\"average_duration_seconds\":");
        ngx_http_presence_json_int(w, row->duration_count
                                      ? (int64_t) (row->duration_ms
                                                   / row->duration_count
                                                   / 1000)
                                      : 0);
        ngx_http_presence_json_lit(w, "}");
    }

    ngx_http_presence_json_lit(w, "],\"timestamp\":");
    ngx_http_presence_json_now(w);
    ngx_http_presence_json_lit(w, "}");
}


/*
 * A quantile of the duration histogram, seconds: linear within the
 * bucket it falls in (the last bucket is taken as a day wide)
 */

static double
ngx_http_presence_analytics_quantile(uint64_t *buckets, double q)
{
    double      rank, lo, hi;
    uint64_t    total, seen;
    ngx_uint_t  b;

    total = 0;

    for (b = 0; b < NGX_HTTP_PRESENCE_DURATIONS; b++) {
        total += buckets[b];
    }

    if (total == 0) {
        return 0;
    }

    rank = q * total;
    seen = 0;

    for (b = 0; b < NGX_HTTP_PRESENCE_DURATIONS; b++) {
        if (seen + buckets[b] >= rank && buckets[b]) {
            break;
        }

        seen += buckets[b];
    }

    if (b == NGX_HTTP_PRESENCE_DURATIONS) {
        b--;
    }

    lo = b ? ngx_http_presence_duration_bounds[b - 1] : 0;
    hi = (b < NGX_HTTP_PRESENCE_DURATIONS - 1)
         ? ngx_http_presence_duration_bounds[b] : lo + 86400;

    return lo + (hi - lo) * (rank - seen) / buckets[b];
}
