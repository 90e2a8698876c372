-- ngx_http_presence_module: every write moves updated_at, whoever writes,
-- so that the cluster pull and the warm start see rows written by the
-- backend, by an older tracking instance, or by hand.  A writer that does
-- not set updated_at itself (the backend, a manual UPDATE) is not a node:
-- its rows get node NULL, which every node pulls, the one that wrote the
-- row before included.  The module sets updated_at and node on each of its
-- own writes and keeps its name.  Idempotent.

SET client_min_messages = warning;

BEGIN;

CREATE OR REPLACE FUNCTION presence_user_sessions_written()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at
    THEN
        NEW.node := NULL;
    END IF;

    NEW.updated_at := now() AT TIME ZONE 'UTC';

    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS presence_user_sessions_written ON user_sessions;

CREATE TRIGGER presence_user_sessions_written
    BEFORE INSERT OR UPDATE ON user_sessions
    FOR EACH ROW EXECUTE FUNCTION presence_user_sessions_written();

COMMIT;
