# The warm start: a zone that starts empty is filled from the sessions
# PostgreSQL holds as active within "recent" (this node's, other nodes',
# the backend's), most recent first, never written back; after a restart
# the answers are what they were.  A zone smaller than the rows keeps the
# most recent; PostgreSQL down at start loads when it comes back.  The
# trigger makes rows the backend updates reach the pull of every node.

use strict;
use warnings;

use lib 't/lib';
use JSON::PP;
use Presence::JWT;
use Presence::Nginx;
use Presence::PG qw(pg_query pg_value pg_rows);
use Test::More;
use Time::HiRes qw(sleep time);

my $dsn = $ENV{TEST_NGINX_PG_DSN}
    or plan skip_all => 'TEST_NGINX_PG_DSN is not set (run "make test")';

*wait_until = \&Presence::Nginx::wait_until;

my $json = JSON::PP->new;

sub tok { Presence::JWT::token(sub => shift, @_) }

sub node {
    my (%o) = @_;
    my $zone = delete $o{zone} // '8m';
    my $extra = delete $o{http} // '';
    my $n = Presence::Nginx->new(name => 'warm', workers => 2, %o,
                                 server => <<'EOS', http => <<EOC . $extra);
        location = /metrics {
            presence_metrics;
        }
EOS
    presence_zone zone=presence:$zone;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$dsn";
    presence_flush_interval 300ms;
    presence_node W;
EOC
    $n->start;
    return $n;
}

sub api {
    my ($n, $path) = @_;
    my ($status, $body) = $n->get("/api/v1/online/$path", tok(9999));
    return $status == 200 ? $json->decode($body) : { status => $status,
                                                      body => $body };
}

sub warm_done {
    my $n = shift;
    return wait_until(sub { api($n, 'stats')->{warm}{done} }, 15);
}

# a session row: user, session key, seconds ago, and the rest as SQL
sub row {
    my ($user, $key, $ago, %o) = @_;
    my $node = exists $o{node} ? (defined $o{node} ? "'$o{node}'" : 'NULL')
                               : 'NULL';
    my $last = $o{last} // "(now() AT TIME ZONE 'UTC') - interval '$ago seconds'";
    my $exp = $o{expires} // 'NULL';
    my $active = $o{active} // 'true';
    return "($user, md5('$key') || md5('$key!'), '10.0.0.$user',"
         . " 'Mozilla/5.0 (X11; Linux x86_64)', 'desktop', $active,"
         . " (now() AT TIME ZONE 'UTC') - interval '2 hours', $last, $exp,"
         . " $node)";
}

sub insert_rows {
    pg_query('INSERT INTO user_sessions (user_id, session_token, ip_address,'
             . ' user_agent, device_info, is_active, created_at,'
             . ' last_activity, expires_at, node) VALUES '
             . join(', ', @_));
}

# what the backend's own queries give over the table
sub table_count {
    my $minutes = shift;
    return pg_value(qq{SELECT count(DISTINCT user_id) FROM user_sessions
        WHERE is_active AND isfinite(last_activity)
          AND last_activity > (now() AT TIME ZONE 'UTC')
                              - interval '$minutes minutes'});
}

sub table_users {
    my $minutes = shift;
    return [ map { $_->[0] } pg_rows(qq{SELECT user_id FROM user_sessions
        WHERE is_active AND isfinite(last_activity)
          AND last_activity > (now() AT TIME ZONE 'UTC')
                              - interval '$minutes minutes'
        GROUP BY user_id ORDER BY max(last_activity) DESC}) ];
}

sub answers_match {
    my ($n, $what) = @_;
    for my $m (5, 15, 60) {
        is(api($n, "count?threshold_minutes=$m")->{online_count},
           table_count($m), "$what: count within $m minutes is the table's");
    }
    my $page = api($n, 'users?limit=100&threshold_minutes=60');
    is_deeply([ map { $_->{user_id} } @{ $page->{online_users} } ],
              table_users(60),
              "$what: users lists the table's users, most recent first");
}

sub fresh_db {
    my $users = shift // 3000;
    pg_query('TRUNCATE user_sessions, presence_peaks');
    pg_query('DELETE FROM users');
    pg_query(qq{INSERT INTO users (id, username, display_name)
                SELECT g, 'user' || g, 'User ' || g
                  FROM generate_series(1, $users) g});
}

my ($n, $st, $log, $m);

# ---------------------------------------------------------------------
# every writer's rows within "recent" are loaded; the others are not

fresh_db();
insert_rows(
    (map { row($_, "own$_", $_ * 60 - 30, node => 'W') } 1 .. 10),
    row(1, 'own1-phone', 150, node => 'W'),
    (map { row($_, "other$_", $_ * 60 - 30, node => 'B') } 11 .. 20),
    (map { row($_, "backend$_", ($_ + 20) * 60 - 30, node => undef) }
         21 .. 30),
    row(31, 'old', 2 * 3600),
    row(32, 'inactive', 60, active => 'false'),
    row(33, 'expired', 60,
        expires => "(now() AT TIME ZONE 'UTC') - interval '3 days'"),
    row(34, 'infinity', 0, last => "'infinity'"),
);
my $updated = pg_value('SELECT max(updated_at) FROM user_sessions');
pg_query('SELECT pg_stat_statements_reset()');

$n = node();
ok(warm_done($n), 'the warm start is over within a few intervals');
my $page0 = api($n, 'users?limit=100&threshold_minutes=60');
is(scalar(grep { defined $_->{username} } @{ $page0->{online_users} }), 30,
   'with the profiles of its users at once');
sleep 1;
is(pg_value(q{SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
              WHERE query LIKE 'SELECT u.id, left(u.username%'}), 0,
   'read with the sessions: the profile loader had nothing left to read');
$st = api($n, 'stats');
is($st->{warm}{loaded}, 31, 'stats: 31 sessions loaded');

$log = $n->log;
like($log, qr/warm start loaded 31 of 31 sessions from PostgreSQL in \d+ ms/,
     'a notice says how many and how long');

answers_match($n, 'after the warm start');
is(api($n, 'count?threshold_minutes=60')->{online_count}, 30,
   'the 30 users of the last hour are counted, whoever wrote them');

my $s = api($n, 'status?user_ids=1,11,21,31,32,33,34');
is($s->{statuses}{1}{status}, 'online', 'this node\'s own row is back');
is($s->{statuses}{11}{status}, 'online', 'another node\'s row is loaded');
is($s->{statuses}{21}{status}, 'recently_active',
   'the backend\'s row (node NULL) is loaded');
is_deeply([ map { $s->{statuses}{$_}{status} } 31 .. 34 ],
          [ ('offline') x 4 ],
          'rows beyond recent, inactive, long expired or at infinity are not');

my ($status, $body) = $n->get('/api/v1/online/sessions', tok(1));
like($body, qr/"count":2,/, 'user 1\'s two sessions are back');

is(api($n, 'stats')->{total_active_sessions},
   pg_value(q{SELECT count(*) FROM user_sessions WHERE is_active
              AND isfinite(last_activity) AND last_activity >
              (now() AT TIME ZONE 'UTC') - interval '15 minutes'}),
   'stats: active sessions are the table\'s');

sleep 1;
is(pg_value(qq{SELECT string_agg(user_id::text, ',') FROM user_sessions
               WHERE updated_at > '$updated'}), 33,
   'loaded sessions are never written back (only the long expired row '
   . 'was deactivated)');

# ---------------------------------------------------------------------
# a restart (not a reload) keeps what the API answered, this node's own
# new rows included

$n->get('/app/x', tok(40));
ok(wait_until(sub { pg_value(q{SELECT count(*) FROM user_sessions
                               WHERE user_id = 40 AND node = 'W'}) }),
   'the node writes a new session');
ok(wait_until(sub { pg_value(q{SELECT coalesce(sum(calls), 0)
                               FROM pg_stat_statements
                               WHERE query LIKE 'SELECT u.id, left(u.username%'}) > 0 }),
   'a user the warm start did not load is read by the profile loader (the '
   . 'statement counted above)');
my $before = api($n, 'count?threshold_minutes=15')->{online_count};
is($before, 16, 'and counts 16 users within 15 minutes');
$n->stop;

$n = node();
ok(warm_done($n), 'restarted: the warm start is over');
is(api($n, 'count?threshold_minutes=15')->{online_count}, $before,
   'the count within 15 minutes is what it was before the restart');
answers_match($n, 'after a restart');
is(api($n, 'status?user_ids=40')->{statuses}{40}{status}, 'online',
   'the session this node wrote before the restart is back');

# ---------------------------------------------------------------------
# a backend UPDATE that does not set updated_at reaches the pull, of the
# node that wrote the row too (the trigger names no node for it)

$n->stop;
$n = node(http => "    presence_cluster on;\n");
ok(warm_done($n), 'a cluster node warms up');
pg_query(q{UPDATE user_sessions SET is_active = false WHERE user_id = 40});
is(pg_value(q{SELECT node IS NULL FROM user_sessions WHERE user_id = 40}),
   't', 'the backend\'s update leaves the row without a node');
ok(wait_until(sub { api($n, 'status?user_ids=40')->{statuses}{40}{status}
                    eq 'offline' }),
   'the node that wrote the row pulls its deactivation');
pg_query(q{UPDATE user_sessions
           SET last_activity = (now() AT TIME ZONE 'UTC')
           WHERE user_id = 30});
ok(wait_until(sub { api($n, 'status?user_ids=30')->{statuses}{30}{status}
                    eq 'online' }),
   'a backend update of last_activity is pulled too');
$n->stop;

# ---------------------------------------------------------------------
# a zone smaller than the rows: the most recent are kept, the rest counted

fresh_db(9000);
pg_query(q{INSERT INTO user_sessions (user_id, session_token, is_active,
               created_at, last_activity, node)
           SELECT g, md5('small' || g) || md5('small!' || g), true,
                  (now() AT TIME ZONE 'UTC') - interval '1 hour',
                  (now() AT TIME ZONE 'UTC') - make_interval(secs =>
                      CASE g WHEN 1 THEN 0 ELSE 1 + g * 0.39 END), 'B'
             FROM generate_series(1, 9000) g});

$n = node(zone => '1m');
ok(warm_done($n), 'a small zone: the warm start is over');
($status, $body) = $n->get('/metrics');
my ($cap) = $body =~ /^nginx_presence_sessions_capacity\S* (\d+)/m;
my ($loaded) = $body =~ /^nginx_presence_warm_start_loaded_sessions\S* (\d+)/m;
my ($rows) = $body =~ /^nginx_presence_warm_start_rows\S* (\d+)/m;
my ($evicted) = $body =~ /^nginx_presence_evictions_total\S* (\d+)/m;
ok($cap && $cap < 9000, "the zone holds $cap sessions, fewer than the rows");
is($rows, 9000, 'metrics: 9000 rows when the warm start began');
is($loaded, $cap, 'the zone was filled, no more');
is($evicted, 0, 'and the warm start evicted no one');
like($n->log, qr/warm start loaded $cap of 9000 sessions .*did not fit/,
     'the notice says the others did not fit');
$s = api($n, "status?user_ids=1,$cap," . ($cap + 1) . ',9000');
is($s->{statuses}{1}{status}, 'online', 'the most recent user is kept');
isnt($s->{statuses}{$cap}{last_seen}, undef, "user $cap is kept");
is($s->{statuses}{$cap + 1}{last_seen}, undef,
   'the first older one is not');
is($s->{statuses}{9000}{last_seen}, undef, 'nor the oldest');
is(api($n, 'users?limit=1&threshold_minutes=60')->{online_users}[0]{user_id},
   1, 'users starts with the most recent');
$n->get('/app/x', tok(8999));
is(api($n, 'status?user_ids=8999')->{statuses}{8999}{status}, 'online',
   'new activity still finds room (the least recent goes)');
$n->stop;

# ---------------------------------------------------------------------
# PostgreSQL down at start: answers are partial, the load happens when it
# comes back; requests are never held

fresh_db();
insert_rows(map { row($_, "down$_", 30 * $_, node => 'B') } 1 .. 20);

system('t/bin/pg halt test') == 0 or die;
$n = node();
sleep 1;
$st = api($n, 'stats');
is($st->{warm}{done}, JSON::PP::false, 'PostgreSQL is down: not warm yet');
is($st->{online_users}, 0, 'and nothing is loaded');
($status) = $n->get('/app/x', tok(21));
is($status, 200, 'requests are served meanwhile');
system('t/bin/pg resume test') == 0 or die;
ok(warm_done($n), 'PostgreSQL is back: the warm start is over');
is(api($n, 'count?threshold_minutes=15')->{online_count}, 21,
   'its 20 users and the one seen meanwhile are counted');
$n->stop;

done_testing();
