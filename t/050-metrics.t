# presence_metrics: Prometheus text that promtool accepts, with values
# that move with traffic and faults.

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
pg_query(q{INSERT INTO users (id, username) SELECT g, 'u' || g
             FROM generate_series(1, 10) g});

my $n = Presence::Nginx->new(name => 'metrics', workers => 2,
                             http => <<EOC, server => <<'EOS');
    presence_zone zone=presence:1m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$dsn";
    presence_flush_interval 200ms;
EOC
        location = /metrics {
            presence_metrics;
            allow 127.0.0.1;
            deny all;
        }
EOS
$n->start;

sub scrape {
    my ($status, $body, $head) = $n->get('/metrics');
    die "metrics: $status" unless $status == 200;
    my %m;
    for (split /\n/, $body) {
        next if /^#/;
        my ($k, $v) = /^(\S+) (\S+)$/ or next;
        $m{$k} = $v;
    }
    return ($body, $head, \%m);
}

sub v {
    my ($m, $name, $labels) = @_;
    $labels = $labels ? ",$labels" : '';
    return $m->{"nginx_presence_$name\{zone=\"presence\"$labels\}"};
}

my ($body, $head, $m) = scrape();

like($head, qr{Content-Type: text/plain; version=0\.0\.4}i,
     'the Prometheus content type');

SKIP: {
    skip 'promtool is not installed', 1 unless `which promtool` =~ /promtool/;
    open my $p, '|-', 'promtool check metrics > t/servroot_metrics/promtool.out 2>&1';
    print $p $body;
    close $p;
    is($?, 0, 'promtool check metrics passes')
        or diag(`cat t/servroot_metrics/promtool.out`);
}

like($body, qr/^# HELP nginx_presence_requests_total .+\n# TYPE nginx_presence_requests_total counter$/m,
     'HELP and TYPE lines');
is(v($m, 'online_users', 'threshold="online"'), 0, 'nobody online yet');
my $cap = v($m, 'sessions_capacity');
ok($cap > 900 && $cap < 1200, "the capacity of a 1m zone ($cap)");
is(v($m, 'zone_size_bytes'), 1048576, 'the zone size');

my $t1 = Presence::JWT::token(sub => 1);
$n->get('/app/x', $t1) for 1 .. 3;
$n->get('/app/x', Presence::JWT::token(sub => 2));
$n->get('/app/x', 'junk');
$n->get('/app/x', Presence::JWT::token(sub => 3, exp => time - 100));
$n->get('/app/x');

sleep 1;
($body, $head, $m) = scrape();

is(v($m, 'online_users', 'threshold="online"'), 2, 'two users online');
is(v($m, 'online_users', 'threshold="very_active"'), 2, 'and very active');
is(v($m, 'active_sessions'), 2, 'two sessions');
is(v($m, 'requests_total', 'jwt="valid"'), 4, 'four valid requests');
is(v($m, 'requests_total', 'jwt="invalid"'), 1, 'one invalid');
is(v($m, 'requests_total', 'jwt="expired"'), 1, 'one expired');
is(v($m, 'requests_total', 'jwt="missing"'), 1, 'one missing');
cmp_ok(v($m, 'jwt_cache_hits_total'), '>=', 1, 'cache hits');
cmp_ok(v($m, 'jwt_cache_misses_total'), '>=', 3, 'cache misses');
is(v($m, 'sessions'), 2, 'two sessions held');
is(v($m, 'users'), 2, 'two users held');
# every change written (under a slow build user 1's three requests may
# span two flushes: its row is then advanced once more)
for (1 .. 20) {
    last if v($m, 'ring_depth') == 0 && v($m, 'flush_rows_total') >= 2;
    sleep 0.5;
    ($body, $head, $m) = scrape();
}
my $rows = v($m, 'flush_rows_total');
ok($rows >= 2 && $rows <= 4, "two rows written ($rows writes, at most one a request)");
cmp_ok(v($m, 'flush_statements_total'), '>=', 1, 'statements');
is(v($m, 'database_connected'), 1, 'connected');
ok(v($m, 'flusher_pid') > 0, 'a flusher pid');
cmp_ok(abs(v($m, 'flush_last_success_timestamp_seconds') - time), '<', 5,
       'a recent success');
is(v($m, 'peak_users_today'), 2, 'the peak');
is(v($m, 'evictions_total'), 0, 'no evictions yet');

# faults: PostgreSQL away

system('t/bin/pg halt test') == 0 or die;
$n->get('/app/x', Presence::JWT::token(sub => 5));
sleep 2;
(undef, undef, $m) = scrape();
is(v($m, 'database_connected'), 0, 'disconnected while PostgreSQL is down');
cmp_ok(v($m, 'ring_depth'), '>=', 1, 'a changed session waits in the ring');
system('t/bin/pg resume test') == 0 or die;

my $deadline = time + 40;
while (time < $deadline) {
    (undef, undef, $m) = scrape();
    last if v($m, 'database_connected') && v($m, 'ring_depth') == 0;
    sleep 0.5;
}
is(v($m, 'database_connected'), 1, 'connected again');
is(v($m, 'ring_depth'), 0, 'the ring drained');
is(v($m, 'flush_rows_total'), $rows + 1, 'the third row written');

# a full zone evicts

my $bulk = '';
for my $u (100 .. 1400) {
    $n->get('/app/e', Presence::JWT::token(sub => $u));
}
(undef, undef, $m) = scrape();
cmp_ok(v($m, 'evictions_total'), '>', 100, 'evictions counted');
is(v($m, 'sessions'), $cap, 'the zone is full');
cmp_ok(v($m, 'flush_unknown_user_sessions_total'), '>', 100,
       'sessions of users missing from "users" counted');

(my $status) = $n->get('POST /metrics');
is($status, 405, 'POST is not allowed');

$n->stop;
done_testing();
