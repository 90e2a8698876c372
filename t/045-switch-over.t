# The switch-over from the Python middleware: a database whose tables the
# backend made (its types, its own indexes, its own rows, session tokens
# of its own shape), then sql/ applied twice, then nginx in front: once
# the warm start is over, every count, list, stats, status and sessions
# answer equals the same query over the table; after a restart of nginx
# (not a reload) again, with the rows the module wrote meanwhile.

use strict;
use warnings;

use lib 't/lib';
use JSON::PP;
use Presence::JWT;
use Presence::Nginx;
use Presence::PG qw(pg_query pg_value pg_rows pg_file);
use Test::More;
use Time::HiRes qw(sleep time);

my $main = $ENV{TEST_NGINX_PG_DSN}
    or plan skip_all => 'TEST_NGINX_PG_DSN is not set (run "make test")';

*wait_until = \&Presence::Nginx::wait_until;

my $json = JSON::PP->new;

# a database of its own, as the backend left it

pg_query('DROP DATABASE IF EXISTS presence_switch');
pg_query('CREATE DATABASE presence_switch');
(my $dsn = $main) =~ s/dbname=\S+/dbname=presence_switch/
    or BAIL_OUT('no dbname in TEST_NGINX_PG_DSN');
$ENV{TEST_NGINX_PG_DSN} = $dsn;
END { local $?; $ENV{TEST_NGINX_PG_DSN} = $main;
      eval { pg_query('DROP DATABASE IF EXISTS presence_switch') } }

# SQLAlchemy's DDL for the backend's User and UserSession models

pg_query(<<'SQL');
CREATE TABLE users (
    id SERIAL NOT NULL, email VARCHAR(255) NOT NULL,
    username VARCHAR(50) NOT NULL, hashed_password VARCHAR(255) NOT NULL,
    display_name VARCHAR(100), avatar_url VARCHAR(500), bio TEXT,
    is_active BOOLEAN, is_verified BOOLEAN,
    created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    updated_at TIMESTAMP WITHOUT TIME ZONE,
    PRIMARY KEY (id));
CREATE UNIQUE INDEX ix_users_email ON users (email);
CREATE UNIQUE INDEX ix_users_username ON users (username);
CREATE INDEX ix_users_id ON users (id);
CREATE TABLE user_sessions (
    id SERIAL NOT NULL, user_id INTEGER NOT NULL,
    session_token VARCHAR(255) NOT NULL, ip_address VARCHAR(45),
    user_agent TEXT, device_info TEXT, is_active BOOLEAN,
    created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    last_activity TIMESTAMP WITHOUT TIME ZONE DEFAULT now(),
    expires_at TIMESTAMP WITHOUT TIME ZONE,
    PRIMARY KEY (id), FOREIGN KEY (user_id) REFERENCES users (id));
CREATE UNIQUE INDEX ix_user_sessions_session_token
    ON user_sessions (session_token);
CREATE INDEX ix_user_sessions_id ON user_sessions (id);
CREATE INDEX ix_user_sessions_user_id ON user_sessions (user_id);
SQL

pg_query(q{INSERT INTO users (id, email, username, hashed_password,
               display_name, avatar_url, is_active)
           SELECT g, 'u' || g || '@example.com', 'member' || g, 'x',
                  CASE WHEN g % 7 <> 0 THEN 'Member ' || g END,
                  'https://img.example/' || g || '.jpg', true
             FROM generate_series(1, 60) g});

# the middleware's rows: millisecond times (the module keeps ms), ages
# clear of the thresholds by a minute or more, tokens of its own shapes

my $now = q{date_trunc('milliseconds', now() AT TIME ZONE 'UTC')};
my @ages = (20, 70, 130, 190, 410, 470, 530, 600, 700, 780, 1020, 1200,
            1500, 1800, 2100, 2400, 2700, 3000, 3300, 3420);
my @rows;
for my $u (1 .. 40) {
    my $age = $ages[$u % @ages] + $u;
    my $token = $u % 3 == 0 ? "eyJhbGciOiJIUzI1NiJ9.user$u.sig"
              : $u % 3 == 1 ? sprintf('%08x-aaaa-4bbb-8ccc-%012x', $u, $u)
              :               sprintf('%064x', 1000 + $u);
    push @rows, "($u, '$token', '192.0.2.$u', 'Mozilla/5.0 (Android 14)',"
              . " 'mobile', true, $now - interval '3 hours',"
              . " $now - interval '$age seconds',"
              . " $now + interval '7 days')";
    # a second device for every fifth member
    push @rows, "($u, 'second-$u', '198.51.100.$u', 'curl/8.0', 'other',"
              . " true, $now - interval '2 hours',"
              . " $now - interval '" . ($age + 45) . " seconds', NULL)"
        if $u % 5 == 0;
}
push @rows, map { "($_, 'gone-$_', NULL, NULL, NULL, false,"
                . " $now - interval '1 hour', $now - interval '1 minute',"
                . " NULL)" } 41 .. 45;
push @rows, map { "($_, 'old-$_', NULL, NULL, NULL, true,"
                . " $now - interval '5 hours',"
                . " $now - interval '2 hours', NULL)" } 46 .. 48;
pg_query('INSERT INTO user_sessions (user_id, session_token, ip_address,'
         . ' user_agent, device_info, is_active, created_at, last_activity,'
         . ' expires_at) VALUES ' . join(', ', @rows));

# sql/, twice

my @files = sort glob 'sql/*.sql';
pg_file($_) for @files, @files;
is(pg_value(q{SELECT count(*) FROM user_sessions}), scalar @rows,
   'sql/ applied twice keeps every row of the backend');
is(pg_value(q{SELECT count(*) FROM user_sessions WHERE node IS NULL}),
   scalar @rows, 'the backend\'s rows belong to no node');

sub node {
    my $n = Presence::Nginx->new(name => 'switch', workers => 2,
                                 http => <<EOC);
    presence_zone zone=presence:8m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$dsn";
    presence_flush_interval 300ms;
EOC
    $n->start;
    return $n;
}

sub api {
    my ($n, $path, $user) = @_;
    my ($status, $body) = $n->get("/api/v1/online/$path",
                                  Presence::JWT::token(sub => $user // 59));
    return $status == 200 ? $json->decode($body) : { status => $status };
}

sub ts { "to_char($_[0], 'YYYY-MM-DD\"T\"HH24:MI:SS.US')" }

my $active = q{is_active AND last_activity > (now() AT TIME ZONE 'UTC')};

sub table_page {
    my $m = shift;
    my @users;
    for (pg_rows(sprintf q{
            SELECT s.user_id, u.username, coalesce(u.display_name, '~'),
                   u.avatar_url, %s, count(*),
                   max(s.last_activity) > (now() AT TIME ZONE 'UTC')
                                          - interval '15 minutes'
              FROM user_sessions s JOIN users u ON u.id = s.user_id
             WHERE s.%s - interval '%d minutes'
             GROUP BY s.user_id, u.username, u.display_name, u.avatar_url
             ORDER BY max(s.last_activity) DESC}, ts('max(s.last_activity)'),
             $active, $m)) {
        my ($id, $name, $display, $avatar, $seen, $n, $online) = @$_;
        push @users, { user_id => $id, username => $name,
                       display_name => $display eq '~' ? undef : $display,
                       avatar_url => $avatar, last_seen => $seen,
                       session_count => $n,
                       status => $online eq 't' ? 'online'
                                                : 'recently_active' };
    }
    return \@users;
}

sub table_status {
    my %status;
    my %seen = map { $_->[0] => [ $_->[1], $_->[2] ] } pg_rows(sprintf q{
        SELECT user_id, %s, max(last_activity) > (now() AT TIME ZONE 'UTC')
                                                 - interval '15 minutes'
          FROM user_sessions WHERE %s - interval '60 minutes'
         GROUP BY user_id}, ts('max(last_activity)'), $active);
    for my $u (1 .. 60) {
        my $s = $seen{$u};
        $status{$u} = { status => !$s ? 'offline'
                                 : $s->[1] eq 't' ? 'online'
                                 : 'recently_active',
                        last_seen => $s ? $s->[0] : undef };
    }
    return \%status;
}

sub table_sessions {
    my $u = shift;
    return [ map { { ip_address => $_->[0], user_agent => $_->[1],
                     created_at => $_->[2], last_activity => $_->[3] } }
             pg_rows(sprintf q{
        SELECT ip_address, user_agent, %s, %s FROM user_sessions
         WHERE user_id = %d AND %s - interval '60 minutes'
         ORDER BY last_activity DESC}, ts('created_at'), ts('last_activity'),
             $u, $active) ];
}

sub matches_table {
    my ($n, $what) = @_;

    for my $m (5, 15, 60) {
        is(api($n, "count?threshold_minutes=$m")->{online_count},
           pg_value("SELECT count(DISTINCT user_id) FROM user_sessions"
                    . " WHERE $active - interval '$m minutes'"),
           "$what: count within $m minutes");
    }

    # users of the same millisecond may come in either order
    my $order = sub { [ sort { $b->{last_seen} cmp $a->{last_seen}
                               || $a->{user_id} <=> $b->{user_id} } @{ $_[0] } ] };

    for my $m (15, 60) {
        my $page = api($n, "users?limit=100&threshold_minutes=$m");
        is_deeply($order->($page->{online_users}), $order->(table_page($m)),
                  "$what: users within $m minutes, every field");
        is_deeply([ map { $_->{last_seen} } @{ $page->{online_users} } ],
                  [ map { $_->{last_seen} } @{ table_page($m) } ],
                  "$what: most recent first");
        is($page->{total}, scalar @{ table_page($m) },
           "$what: users total within $m minutes");
    }

    my $stats = api($n, 'stats');
    my %want = (very_active_users => 5, online_users => 15,
                recently_active_users => 60);
    for my $k (sort keys %want) {
        is($stats->{$k},
           pg_value("SELECT count(DISTINCT user_id) FROM user_sessions"
                    . " WHERE $active - interval '$want{$k} minutes'"),
           "$what: stats $k");
    }
    is($stats->{total_active_sessions},
       pg_value("SELECT count(*) FROM user_sessions"
                . " WHERE $active - interval '15 minutes'"),
       "$what: stats total_active_sessions");

    is_deeply(api($n, 'status?user_ids=' . join(',', 1 .. 60))->{statuses},
              table_status(), "$what: status of all 60 members");

    for my $u (10, 15) {
        my $mine = api($n, 'sessions', $u);
        is_deeply([ map { { ip_address => $_->{ip_address},
                            user_agent => $_->{user_agent},
                            created_at => $_->{created_at},
                            last_activity => $_->{last_activity} } }
                    @{ $mine->{sessions} } ],
                  table_sessions($u), "$what: member ${u}'s sessions");
    }
}

my $n = node();
ok(wait_until(sub { api($n, 'stats')->{warm}{done} }),
   'nginx in front: the warm start is over');
is(api($n, 'stats')->{warm}{loaded}, 48,
   'the 48 sessions of the last hour are loaded, whatever their token');
is(api($n, 'count?threshold_minutes=60')->{online_count}, 40,
   'so 40 members are counted within the hour, as by the backend');
matches_table($n, 'switched');

# the module writes its own rows; then a restart

for my $u (50, 51, 52) {
    $n->get('/app/x', Presence::JWT::token(sub => $u, sid => "s$u"));
    sleep 0.01;
}
ok(wait_until(sub { pg_value(q{SELECT count(*) FROM user_sessions
                               WHERE user_id >= 50 AND node IS NOT NULL})
                    == 3 }),
   'the module wrote its own rows');
is(pg_value(q{SELECT count(*) FROM user_sessions WHERE user_id < 50
              AND node IS NOT NULL}), 0,
   'and never wrote back the rows it loaded');
$n->stop;

$n = node();
ok(wait_until(sub { api($n, 'stats')->{warm}{done} }),
   'restarted: the warm start is over');
matches_table($n, 'restarted');
$n->stop;

done_testing();
