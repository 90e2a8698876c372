-- ngx_http_presence_module: the cluster pull pages through changed rows by
-- (updated_at, id), so that the rows of one large transaction, which share
-- their updated_at, are all pulled even when a page ends among them.  This
-- index serves both the pull and the first page; it replaces the index on
-- updated_at alone.  Idempotent.

CREATE INDEX IF NOT EXISTS user_sessions_updated_at_id
    ON user_sessions (updated_at, id);

DROP INDEX IF EXISTS user_sessions_updated_at;
