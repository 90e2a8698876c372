-- ngx_http_presence_module: one row per UTC day, kept by the flusher
-- (today's upserted as it goes, a day closed at midnight UTC), so that
-- GET analytics/daily has history that survives restarts.  Every number
-- only grows (GREATEST): nodes of a cluster, and a restarted node that
-- counts from zero again, never lower what was written.  Idempotent.

CREATE TABLE IF NOT EXISTS presence_daily (
    day                   date PRIMARY KEY,
    peak_online           integer NOT NULL DEFAULT 0,
    active_users          integer NOT NULL DEFAULT 0,
    users_new_sessions    integer NOT NULL DEFAULT 0,
    sessions_started      integer NOT NULL DEFAULT 0,
    sessions_ended        integer NOT NULL DEFAULT 0,
    duration_count        integer NOT NULL DEFAULT 0,
    duration_sum_seconds  double precision NOT NULL DEFAULT 0,
    updated_at            timestamp without time zone NOT NULL
                          DEFAULT (now() AT TIME ZONE 'UTC')
);
