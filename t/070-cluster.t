# Two nginx nodes, one PostgreSQL: each answers for the whole cluster.

use strict;
use warnings;

use lib 't/lib';
use Presence::JWT;
use Presence::Nginx;
use Presence::PG qw(pg_query pg_value);
use Test::More;
use Time::HiRes qw(sleep time);

my $dsn = $ENV{TEST_NGINX_PG_DSN}
    or plan skip_all => 'TEST_NGINX_PG_DSN is not set (run "make test")';

pg_query('TRUNCATE user_sessions, presence_peaks');
pg_query('DELETE FROM users');
pg_query(q{INSERT INTO users (id, username, display_name)
           SELECT g, 'user' || g, 'User ' || g
             FROM generate_series(1, 3000) g});

my $faketime = Presence::Nginx::faketime();

sub node {
    my ($name, %env) = @_;
    my $n = Presence::Nginx->new(name => "cluster_$name", workers => 2,
                                 env => \%env, http => <<EOC, server => <<'EOS');
    presence_zone zone=presence:16m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$dsn";
    presence_flush_interval 300ms;
    presence_cluster on;
    presence_node $name;
    large_client_header_buffers 4 16k;
EOC
        location = /metrics {
            presence_metrics;
        }
EOS
    $n->start;
    return $n;
}

sub tok { Presence::JWT::token(sub => shift, @_) }

sub eventually {
    my ($n, $path, $re, $timeout) = @_;
    my $body = '';
    my $deadline = time + ($timeout // 5);
    while (time < $deadline) {
        (undef, $body) = $n->get($path, tok(1));
        return $body if $body =~ $re;
        sleep 0.2;
    }
    return $body;
}

my $a = node('A');
my $b = node('B', $faketime ? (LD_PRELOAD => $faketime,
                                  FAKETIME => '-4s',
                                  DONT_FAKE_MONOTONIC => 1) : ());

# activity on A appears on B

# apart in time, so that "most recent first" has one answer (users of the
# same millisecond may come in either order)

$a->get('/app/x', tok(1, sid => 'phone'));
sleep 0.02;
$a->get('/app/x', tok(1, sid => 'laptop'));
sleep 0.02;
$a->get('/app/x', tok(2));

like(eventually($b, '/api/v1/online/count', qr/"online_count":2,/),
     qr/"online_count":2,/, 'B counts A\'s users within a few intervals');
like(eventually($b, '/api/v1/online/users', qr/"username":"user1"/),
     qr/"user_id":2,"username":"user2".*"user_id":1,"username":"user1",.*"session_count":2,/,
     'B lists them, most recent first, with profiles and session counts');
like(eventually($b, '/api/v1/online/status?user_ids=1,2,3', qr/"2":\{"status":"online"/),
     qr/"1":\{"status":"online",.*"2":\{"status":"online",.*"3":\{"status":"offline","last_seen":null\}/,
     'B knows their status');
(undef, my $body) = $b->get('/api/v1/online/sessions', tok(1, sid => 'phone'));
like($body, qr/"count":2,/, 'B lists user 1\'s sessions from A');
like($body, qr/"is_current":true/, 'and knows which one is the caller\'s');

# one user active on both nodes is one user; activity on B (4 s behind)
# reaches A

$b->get('/app/y', tok(3, sid => 'b'));
$a->get('/app/y', tok(3, sid => 'a'));
like(eventually($a, '/api/v1/online/count', qr/"online_count":3,/),
     qr/"online_count":3,/, 'A counts user 3 once, active on both nodes');
like(eventually($b, '/api/v1/online/count', qr/"online_count":3,/),
     qr/"online_count":3,/, 'so does B, whose clock is 4 s behind');
my $deadline = time + 5;
while (time < $deadline) {
    (undef, $body) = $a->get('/api/v1/online/sessions', tok(3, sid => 'a'));
    last if $body =~ /"count":2,/;
    sleep 0.2;
}
like($body, qr/"count":2,/, 'A lists user 3\'s sessions of both nodes');

is(pg_value(q{SELECT string_agg(node || ':' || user_id, ',' ORDER BY user_id, node)
                FROM user_sessions}),
   'A:1,A:1,A:2,A:3,B:3', 'each row written by the node that saw it');

# pulled activity is never written back

sleep 1;
my (undef, $metrics) = $b->get('/metrics');
like($metrics, qr/^nginx_presence_flush_rows_total\{zone="presence"\} 1$/m,
     'B wrote only its own session');

# a large pull, read completely

my $ua = 'Mozilla/5.0 ' . ('y' x 400);
$a->get('/app/many', tok($_), ua => $ua) for 100 .. 1100;
like(eventually($b, '/api/v1/online/count', qr/"online_count":1004,/, 15),
     qr/"online_count":1004,/, 'B merges a pull of 1001 rows, over 400 KB');

# B restarted rebuilds its view from PostgreSQL

$b->stop;
undef $b;
$b = node('B');
like(eventually($b, '/api/v1/online/count', qr/"online_count":1004,/, 10),
     qr/"online_count":1004,/, 'B restarted knows the whole cluster again');

# cleanup on one node reaches the other through the table

pg_query(q{UPDATE user_sessions SET last_activity = last_activity
                                     - interval '2 days'
            WHERE user_id = 2});
$a->request('POST /api/v1/online/cleanup', tok(1));
ok(eventually($a, '/api/v1/online/status?user_ids=2', qr/./) && 1,
   'cleanup requested on A');
$deadline = time + 5;
while (time < $deadline) {
    last if pg_value(q{SELECT count(*) FROM user_sessions
                        WHERE user_id = 2 AND is_active}) == 0;
    sleep 0.2;
}
is(pg_value('SELECT count(*) FROM user_sessions WHERE user_id = 2 AND is_active'),
   0, 'A deactivated the row idle beyond the timeout');

# peaks: every node samples the whole cluster

like(eventually($b, '/api/v1/online/stats', qr/"peak_users_today":1004,/),
     qr/"peak_users_today":1004,/, 'today\'s peak is the cluster\'s');

# a stream on B tells transitions of activity recorded on A

my $stream = $b->stream('/api/v1/online/stream?user_ids=2999',
                         token => tok(1), max => 15);
like(Presence::Nginx::stream_text($stream), qr/event: snapshot\n/,
     'a stream on B');
$a->get('/app/x', tok(2999));
Presence::Nginx::wait_until(sub { Presence::Nginx::stream_text($stream)
                                  =~ /"user_id":2999,"status":"online"/ }, 8);
like(Presence::Nginx::stream_text($stream),
     qr/event: presence\ndata: \{"user_id":2999,"status":"online"/,
     'B\'s stream tells that user 2999 came online on A');
Presence::Nginx::stream_stop($stream);

unlike($a->log . $b->log, qr/\[alert\]|\[crit\]/, 'no alerts');

$a->stop;
$b->stop;
done_testing();
