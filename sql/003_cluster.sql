-- ngx_http_presence_module: several nginx nodes on one database.
-- "node" names the node that last wrote a row; "updated_at" is the
-- database's own clock at that write, so the pull's watermark does not
-- depend on the nodes' clocks.  Idempotent.

ALTER TABLE user_sessions ADD COLUMN IF NOT EXISTS node varchar(255);
ALTER TABLE user_sessions ADD COLUMN IF NOT EXISTS updated_at
    timestamp without time zone NOT NULL DEFAULT (now() AT TIME ZONE 'UTC');

CREATE INDEX IF NOT EXISTS user_sessions_updated_at
    ON user_sessions (updated_at);
