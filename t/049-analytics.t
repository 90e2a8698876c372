# Analytics: device classes for real User-Agents, session durations from
# sessions aged with second thresholds, today's numbers, GET analytics and
# analytics/daily (bounds, 422s, the admin claim), and presence_daily across
# a midnight (libfaketime): the day closed, history served from the zone.

use strict;
use warnings;

use lib 't/lib';
use Cwd ();
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

sub tok { Presence::JWT::token(sub => shift, exp => time + 86400 * 3, @_) }

pg_query('TRUNCATE user_sessions, presence_peaks, presence_daily');
pg_query('DELETE FROM users');
pg_query(q{INSERT INTO users (id, username) SELECT g, 'u' || g
             FROM generate_series(1, 100) g});

sub api {
    my ($n, $path, $token) = @_;
    my ($status, $body) = $n->get("/api/v1/online/$path", $token // tok(99));
    my $r = eval { $json->decode($body) } // {};
    $r->{_status} = $status;
    return $r;
}

# ---------------------------------------------------------------------
# device classes, durations, today's numbers

my $n = Presence::Nginx->new(name => 'analytics', workers => 2,
                             http => <<EOC, server => <<'EOS');
    presence_zone zone=presence:8m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$dsn";
    presence_flush_interval 200ms;
    presence_thresholds very_active=1s online=30s recent=1m;
    presence_session_timeout 2s;
    presence_cleanup_interval 1s;
EOC
        location /admin/online/ {
            presence_api;
            presence_api_admin_claim role admin;
        }
        location = /metrics {
            presence_metrics;
        }
EOS
$n->start;

my %agents = (
    iphone => ['mobile', 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1'],
    ipad => ['tablet', 'Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1'],
    android_phone => ['mobile', 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36'],
    android_tablet => ['tablet', 'Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Safari/537.36'],
    chrome_windows => ['desktop', 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'],
    safari_mac => ['desktop', 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15'],
    firefox_linux => ['desktop', 'Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0'],
    curl => ['other', 'curl/7.88.1'],
    googlebot => ['bot', 'Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.129 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)'],
);

my $u = 10;
my %user_of;
for my $k (sort keys %agents) {
    $user_of{$k} = ++$u;
    $n->get('/app/x', tok($u), ua => $agents{$k}[1]);
}
my %want;
$want{$_->[0]}++ for values %agents;

my $a = api($n, 'analytics');
is($a->{_status}, 200, 'GET analytics');
is_deeply($a->{devices}, { mobile => $want{mobile}, tablet => $want{tablet},
                           desktop => $want{desktop}, bot => $want{bot},
                           other => $want{other} },
          'online sessions by device class');
ok(wait_until(sub { pg_value('SELECT count(*) FROM user_sessions') == 9 }),
   'the sessions are written');
for my $k (sort keys %agents) {
    is(pg_value("SELECT device_info FROM user_sessions
                 WHERE user_id = $user_of{$k}"), $agents{$k}[0],
       "$k: device_info $agents{$k}[0]");
}
is($a->{sessions}{started_today}, 9, 'nine sessions started today');
my (undef, $m0) = $n->get('/metrics');
like($m0, qr/^nginx_presence_sessions_by_device\{zone="presence",device="desktop"\} $want{desktop}$/m,
     'metrics: online sessions by device class');
like($m0, qr/^nginx_presence_sessions_by_device\{zone="presence",device="bot"\} 1$/m,
     'the robot among them');
is($a->{users}{active_today}, 9, 'nine distinct users today');
is($a->{users}{with_new_session_today}, 9, 'each with a new session');
is(scalar @{ $a->{hourly} }, 24, '24 hourly entries');
my $hour = (gmtime)[2];
is($a->{hourly}[$hour]{active_users}, 9, 'this hour: 9 distinct users');
ok($a->{hourly}[$hour]{peak_online} >= 9, 'and its peak');

# durations: sessions of about 1.5 s, then idle past the 2 s timeout

my ($t50, $t51) = (tok(50), tok(51));       # one session each
$n->get('/app/x', $t50);
$n->get('/app/x', $t51);
sleep 1.5;
$n->get('/app/x', $t50);
$n->get('/app/x', $t51);
ok(wait_until(sub { api($n, 'analytics')->{sessions}{ended_today} >= 11 },
              8),
   'the sessions idle past the timeout ended');
$a = api($n, 'analytics');
my $d = $a->{sessions}{duration_seconds};
is($d->{count}, $a->{sessions}{ended_today}, 'each ended session has a '
                                             . 'duration');
ok($d->{p90} >= 1 && $d->{p90} <= 5, "p90 in the (1 s, 5 s] bucket "
                                     . "($d->{p90})");
ok($d->{median} >= 0 && $d->{median} <= 5, "median ($d->{median})");
is($d->{average}, 0, 'average: two of 1.5 s among nine of 0 s, in whole '
                     . 'seconds');

my (undef, $metrics) = $n->get('/metrics');
like($metrics, qr/^nginx_presence_session_duration_seconds_count\{zone="presence"\} $d->{count}$/m,
     'metrics: the duration histogram counts the ended sessions');
like($metrics, qr/^nginx_presence_session_duration_seconds_bucket\{zone="presence",le="1"\} 9$/m,
     'nine of them within a second');
like($metrics, qr/^nginx_presence_session_duration_seconds_bucket\{zone="presence",le="5"\} 11$/m,
     'all eleven within 5 s');

# bounds and the admin claim

is(api($n, 'analytics/daily?days=0')->{_status}, 422, 'days=0: 422');
is(api($n, 'analytics/daily?days=366')->{_status}, 422, 'days=366: 422');
is(api($n, 'analytics/daily?days=x')->{_status}, 422, 'days=x: 422');
my $daily = api($n, 'analytics/daily?days=365');
is(scalar @{ $daily->{days} }, 365, 'days=365: 365 rows, zeros included');
is($daily->{days}[-1]{sessions_started}, 11, 'today last, with its numbers');
is($daily->{days}[0]{sessions_started}, 0, 'a day without data: zeros');
is(scalar @{ api($n, 'analytics/daily')->{days} }, 30, 'days: 30 by default');
my ($status) = $n->get('/admin/online/analytics', tok(99));
is($status, 403, 'behind presence_api_admin_claim: 403 without it');
($status) = $n->get('/admin/online/analytics', tok(99, role => 'admin'));
is($status, 200, 'and 200 with it');
($status) = $n->get('/admin/online/analytics/daily', tok(99));
is($status, 403, 'analytics/daily too');
ok(wait_until(sub { pg_value(q{SELECT sessions_started FROM presence_daily
                               WHERE day = (now() AT TIME ZONE 'UTC')::date})
                    // 0 >= 11 }, 8),
   'today\'s presence_daily row, upserted as it goes');
$n->stop;

# ---------------------------------------------------------------------
# a midnight (libfaketime): the day is closed, the next one starts, and
# a restarted node serves the history from presence_daily

SKIP: {
    my $faketime = Presence::Nginx::faketime();
    skip 'libfaketime is not installed', 7 unless $faketime;

    pg_query('TRUNCATE user_sessions, presence_daily');
    my $root = Cwd::cwd() . '/t/servroot_midnight';
    my $clock = "$root.faketime";
    open my $fh, '>', $clock or die $!;
    print $fh "\@2026-12-10 23:59:56\n";
    close $fh;

    my %env = (LD_PRELOAD => $faketime, FAKETIME_TIMESTAMP_FILE => $clock,
               FAKETIME_NO_CACHE => 1, FAKETIME_DONT_RESET => 1,
               FAKETIME_DONT_FAKE_MONOTONIC => 1);
    my $mid = Presence::Nginx->new(name => 'midnight', workers => 1,
        env => \%env,
        main => join(' ', map { "env $_;" } sort keys %env),
        http => <<EOC);
    presence_zone zone=presence:4m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$dsn";
    presence_flush_interval 200ms;
    presence_jwt_leeway 30d;
EOC
    $mid->start;
    my $t = sub { Presence::JWT::token(sub => shift,
                                       exp => 1796947200 + 86400 * 30) };
    $mid->get('/app/x', $t->($_)) for 1 .. 3;
    ok(wait_until(sub { pg_value(q{SELECT sessions_started FROM presence_daily
                                   WHERE day = '2026-12-10'}) // 0 }, 6),
       'the evening\'s row');
    ok(wait_until(sub { pg_value(q{SELECT count(*) FROM presence_daily
                                   WHERE day = '2026-12-11'}) }, 12),
       'after midnight, the next day\'s row');
    is(pg_value(q{SELECT sessions_started || ' ' || active_users
                  FROM presence_daily WHERE day = '2026-12-10'}), '3 3',
       'the closed day keeps its numbers');
    $mid->get('/app/x', $t->(4));
    my $days = sub {
        my (undef, $b) = $mid->get('/api/v1/online/analytics/daily?days=2',
                                   $t->(9));
        return eval { $json->decode($b)->{days} } // [];
    };
    ok(wait_until(sub { ($days->()->[1]{sessions_started} // 0) == 1 }),
       'today counts from zero');
    is_deeply([ map { $_->{date} . ' ' . $_->{sessions_started} }
                @{ $days->() } ], ['2026-12-10 3', '2026-12-11 1'],
              'analytics/daily: yesterday from the table, today live');
    $mid->stop;
    open $fh, '>', $clock or die $!;
    print $fh "\@2026-12-11 00:00:30\n";
    close $fh;
    $mid->start;
    ok(wait_until(sub { ($days->()->[0]{sessions_started} // 0) == 3 }),
       'restarted: the history is read back from presence_daily');
    is($days->()->[1]{sessions_started}, 1, 'today too: the larger of the '
                                            . 'table\'s and the zone\'s');
    $mid->stop;
    unlink $clock;
}

done_testing();
