# sql/: the migrations apply on an empty database and applying them again
# changes nothing.

use strict;
use warnings;

use lib 't/lib';
use Presence::PG qw(pg_query pg_file pg_value);
use Test::More;

my @files = sort glob 'sql/*.sql';
ok(@files, 'there are migrations') or BAIL_OUT('no sql/*.sql');

my $catalog = q{
    SELECT string_agg(x, E'\n' ORDER BY x) FROM (
        SELECT 'column ' || table_name || '.' || column_name || ' '
               || data_type || ' ' || is_nullable
               || ' ' || coalesce(column_default, '') AS x
          FROM information_schema.columns WHERE table_schema = 'public'
        UNION ALL
        SELECT 'index ' || indexdef FROM pg_indexes
         WHERE schemaname = 'public'
        UNION ALL
        SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' '
               || pg_get_constraintdef(oid)
          FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'trigger ' || pg_get_triggerdef(oid) FROM pg_trigger
         WHERE NOT tgisinternal
        UNION ALL
        SELECT 'function ' || proname || ' ' || md5(prosrc) FROM pg_proc
         WHERE pronamespace = 'public'::regnamespace
    ) s
};

# a scratch database, so that the suite's own is left alone

pg_query('DROP DATABASE IF EXISTS presence_migrations');
pg_query('CREATE DATABASE presence_migrations');

my $main = $ENV{TEST_NGINX_PG_DSN};
($ENV{TEST_NGINX_PG_DSN} = $main) =~ s/dbname=\S+/dbname=presence_migrations/
    or BAIL_OUT('no dbname in TEST_NGINX_PG_DSN');

pg_file($_) for @files;
my $once = pg_query($catalog);

like($once, qr/column user_sessions\.session_token character varying NO/,
     'user_sessions has session_token');
like($once, qr/index CREATE UNIQUE INDEX \S+ ON public\.user_sessions .*session_token/,
     'session_token is unique');
like($once, qr/column presence_peaks\.online_users integer NO/,
     'presence_peaks exists');
like($once, qr/index CREATE INDEX user_sessions_updated_at_id ON public\.user_sessions USING btree \(updated_at, id\)/,
     'the cluster pull pages by (updated_at, id)');
unlike($once, qr/INDEX user_sessions_updated_at ON/,
       'the index on updated_at alone is gone');

pg_query("INSERT INTO users (id, username) VALUES (7, 'seven')");
pg_query("INSERT INTO user_sessions (user_id, session_token)
          VALUES (7, 'abc')");

pg_file($_) for @files;
my $twice = pg_query($catalog);

is($twice, $once, 'applying the migrations twice changes no table, '
                  . 'column, index, constraint, trigger or function');
is(pg_value('SELECT count(*) FROM user_sessions'), 1, 'and keeps the rows');
like($once, qr/trigger CREATE TRIGGER presence_user_sessions_written BEFORE INSERT OR UPDATE ON public\.user_sessions FOR EACH ROW/,
     'one trigger on user_sessions, before each insert and update');

# the trigger: every write moves updated_at; a writer that does not set it
# (the backend, by hand) leaves the row without a node

pg_query(q{UPDATE user_sessions SET node = 'A',
           updated_at = '2001-01-01' WHERE session_token = 'abc'});
is(pg_value(q{SELECT node || ' ' || (updated_at > (now() AT TIME ZONE 'UTC')
              - interval '1 minute') FROM user_sessions}),
   'A true', 'a writer that sets updated_at and node keeps the node, and '
             . 'updated_at is the database\'s clock');
pg_query(q{ALTER TABLE user_sessions DISABLE TRIGGER USER});
pg_query(q{UPDATE user_sessions SET updated_at = '2001-01-01'});
pg_query(q{ALTER TABLE user_sessions ENABLE TRIGGER USER});
pg_query(q{UPDATE user_sessions SET last_activity = now() AT TIME ZONE 'UTC'});
is(pg_value(q{SELECT coalesce(node, 'NULL') || ' '
              || (updated_at > '2001-01-02') FROM user_sessions}),
   'NULL true', 'an UPDATE that does not set updated_at moves it and '
                . 'clears the node');
pg_query("INSERT INTO user_sessions (user_id, session_token, updated_at)
          VALUES (7, 'def', '2001-01-01')");
is(pg_value(q{SELECT updated_at > '2001-01-02' FROM user_sessions
              WHERE session_token = 'def'}),
   't', 'an INSERT gets the database\'s clock whatever it says');

$ENV{TEST_NGINX_PG_DSN} = $main;
pg_query('DROP DATABASE presence_migrations');

done_testing();
