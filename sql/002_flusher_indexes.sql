-- ngx_http_presence_module: the indexes of the flusher's deactivation
-- (rows idle beyond the session timeout, or whose token expired long ago).
-- Idempotent.

CREATE INDEX IF NOT EXISTS user_sessions_active_expires_at
    ON user_sessions (expires_at) WHERE is_active;
