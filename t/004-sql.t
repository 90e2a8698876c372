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
                  . 'column, index or constraint');
is(pg_value('SELECT count(*) FROM user_sessions'), 1, 'and keeps the rows');

$ENV{TEST_NGINX_PG_DSN} = $main;
pg_query('DROP DATABASE presence_migrations');

done_testing();
