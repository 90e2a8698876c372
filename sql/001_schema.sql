-- ngx_http_presence_module: the tables it reads and writes.
-- Idempotent: applying it again changes nothing.

BEGIN;

-- The backend's users table.  A real deployment already has it (with many
-- more columns); the module only reads id, username, display_name and
-- avatar_url.
CREATE TABLE IF NOT EXISTS users (
    id            bigserial PRIMARY KEY,
    username      varchar(255) NOT NULL UNIQUE,
    display_name  varchar(255),
    avatar_url    text,
    created_at    timestamp without time zone NOT NULL
                  DEFAULT (now() AT TIME ZONE 'UTC')
);

-- Compatible with the backend's SQLAlchemy UserSession model: timestamps
-- are naive UTC, as the backend writes them.  session_token holds the
-- session id (lowercase hex SHA-256), never a token.
CREATE TABLE IF NOT EXISTS user_sessions (
    id             bigserial PRIMARY KEY,
    user_id        bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_token  varchar(255) NOT NULL UNIQUE,
    ip_address     varchar(64),
    user_agent     text,
    device_info    text,
    is_active      boolean NOT NULL DEFAULT true,
    created_at     timestamp without time zone NOT NULL
                   DEFAULT (now() AT TIME ZONE 'UTC'),
    last_activity  timestamp without time zone NOT NULL
                   DEFAULT (now() AT TIME ZONE 'UTC'),
    expires_at     timestamp without time zone
);

CREATE INDEX IF NOT EXISTS user_sessions_user_id
    ON user_sessions (user_id);

-- cleanup: active rows idle beyond the session timeout
CREATE INDEX IF NOT EXISTS user_sessions_active_last_activity
    ON user_sessions (last_activity) WHERE is_active;

-- today's hourly peaks of online users, kept across nginx restarts
CREATE TABLE IF NOT EXISTS presence_peaks (
    day           date NOT NULL,
    hour          smallint NOT NULL CHECK (hour BETWEEN 0 AND 23),
    online_users  integer NOT NULL DEFAULT 0,
    sampled_at    timestamp without time zone NOT NULL
                  DEFAULT (now() AT TIME ZONE 'UTC'),
    PRIMARY KEY (day, hour)
);

COMMIT;
