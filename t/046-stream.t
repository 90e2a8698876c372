# GET stream: Server-Sent Events of presence.  The snapshot, each
# transition (ageing with second thresholds, no traffic needed), nothing for
# repeat activity, Last-Event-ID resume (held, and too old), the aggregate
# counts, heartbeats, token expiry, reload and quit closing streams at
# once, 422s, HTTP/2, a cookie token, a slow reader dropped, a stream in one
# worker seeing the other worker's activity, and the metrics.

use strict;
use warnings;

use lib 't/lib';
use IO::Socket::INET;
use JSON::PP;
use Presence::JWT;
use Presence::Nginx;
use Socket qw(SOL_SOCKET SO_RCVBUF);
use Test::More;
use Time::HiRes qw(sleep time);

*wait_until = \&Presence::Nginx::wait_until;

my $json = JSON::PP->new;
my $h2port = Presence::Nginx::free_port();

sub tok { Presence::JWT::token(sub => shift, @_) }

sub node {
    my (%o) = @_;
    my $extra = delete $o{http} // '';
    my $max = delete $o{max_ids} // 5;
    my $n = Presence::Nginx->new(name => 'stream', workers => 2, %o,
                                 http => <<EOC . $extra, server => <<'EOS');
    presence_zone zone=presence:8m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_thresholds very_active=1s online=2s recent=4s;
    presence_session_timeout 6s;
    presence_cleanup_interval 1s;
    presence_stream_heartbeat 2s;
    presence_jwt_leeway 30s;
    presence_stream_max_ids $max;
    add_header X-Worker \$pid always;

    server {
        listen 127.0.0.1:$h2port http2;
        location /api/v1/online/ {
            presence_api;
        }
    }
EOC
        location /cookie/online/ {
            presence_jwt_token $cookie_access_token;
            presence_api;
        }
        location = /metrics {
            presence_metrics;
        }
EOS
    $n->start;
    return $n;
}

# a stream read by curl in the background (Presence::Nginx::stream), by
# default as user 900
sub open_stream {
    my ($n, $path, %o) = @_;
    $o{token} //= tok(900) unless delete $o{no_auth};
    return $n->stream($path, %o);
}

sub text { Presence::Nginx::stream_text(@_) }
sub head { Presence::Nginx::stream_head(@_) }

# the events so far: [{id, event, data}]
sub events {
    my $s = shift;
    my @ev;
    for my $block (split /\n\n/, text($s)) {
        my %e;
        for (split /\n/, $block) {
            $e{$1} = $2 if /^(id|event|data|retry): ?(.*)$/;
        }
        next unless $e{event};
        $e{json} = eval { $json->decode($e{data}) };
        push @ev, \%e;
    }
    return \@ev;
}

sub presence_events {
    my ($s, $user) = @_;
    return [ map { $_->{json}{status} }
             grep { $_->{event} eq 'presence'
                    && (!defined $user || $_->{json}{user_id} == $user) }
             @{ events($s) } ];
}

sub wait_events {
    my ($s, $user, $want, $timeout) = @_;
    wait_until(sub { "@{ presence_events($s, $user) }" eq "@$want" },
               $timeout // 8);
    return presence_events($s, $user);
}

sub finished { my $s = shift; return waitpid($s->{pid}, 1) == $s->{pid} }
sub stop_stream { Presence::Nginx::stream_stop(@_) }

my $n = node();
my ($status, $body, $head);

# ---------------------------------------------------------------------
# the snapshot, then each transition, nothing for repeat activity

# ---------------------------------------------------------------------
# expiry of the last session while online: offline at once (a token that
# expired 8 s ago, accepted with the leeway, is beyond the 6 s timeout)

my $s = open_stream($n, '/api/v1/online/stream?user_ids=31');
ok(wait_until(sub { @{ events($s) } }), 'a stream');
$n->get('/app/x', tok(31, exp => time - 8));
is_deeply(wait_events($s, 31, [qw(online offline)]), [qw(online offline)],
          'the expiry of the last session: offline, not via recently_active');
stop_stream($s);


$n->get('/app/x', tok(2));

$s = open_stream($n, '/api/v1/online/stream?user_ids=1,2,3');
ok(wait_until(sub { @{ events($s) } >= 1 }), 'the stream answers');
like(head($s), qr{^HTTP/1\.1 200}, 'status 200');
like(head($s), qr{^Content-Type: text/event-stream}mi, 'text/event-stream');
like(head($s), qr{^Cache-Control: no-store}mi, 'Cache-Control: no-store');
like(head($s), qr{^X-Accel-Buffering: no}mi, 'X-Accel-Buffering: no');
like(head($s), qr{^Transfer-Encoding: chunked}mi, 'chunked');
like(text($s), qr/\Aretry: 3000\n\n/, 'retry: 3000 first');

my $snap = events($s)->[0];
is($snap->{event}, 'snapshot', 'then the snapshot');
like($snap->{id}, qr/^\d+$/, 'with an id');
is($snap->{json}{statuses}{2}{status}, 'online', 'user 2 is online in it');
is_deeply($snap->{json}{statuses}{1}, { status => 'offline',
                                        last_seen => undef },
          'user 1 is unknown');
ok(exists $snap->{json}{timestamp}, 'the status body, with its timestamp');

$n->get('/app/x', tok(1));
is_deeply(wait_events($s, 1, ['online']), ['online'],
          'first activity: online');
my $online = (grep { $_->{event} eq 'presence' } @{ events($s) })[0];
like($online->{id}, qr/^\d+$/, 'the event has an id');
ok($online->{id} > $snap->{id}, 'after the snapshot\'s');
is_deeply([ sort keys %{ $online->{json} } ],
          [qw(last_seen status timestamp user_id)],
          'user_id, status, last_seen, timestamp');
like($online->{json}{last_seen}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$/,
     'times as the API writes them');

$n->get('/app/x', tok(1)) for 1 .. 3;
$n->get('/app/x', tok(4));
sleep 0.5;
is_deeply(presence_events($s, 1), ['online'],
          'repeat activity of an online user emits nothing');
is_deeply(presence_events($s, 4), [], 'an unwatched user emits nothing');

is_deeply(wait_events($s, 1, [qw(online recently_active offline)]),
          [qw(online recently_active offline)],
          'with no traffic: recently_active past online, offline past recent');
my @ev = grep { $_->{event} eq 'presence' && $_->{json}{user_id} == 1 }
         @{ events($s) };
is($ev[2]{json}{last_seen}, $ev[1]{json}{last_seen},
   'ageing keeps last_seen');
ok($ev[1]{json}{last_seen} gt $ev[0]{json}{last_seen},
   'which is the last activity');
$n->get('/app/x', tok(1));
is_deeply(wait_events($s, 1, [qw(online recently_active offline online)]),
          [qw(online recently_active offline online)],
          'activity after offline: online again');

# expiry of the last session: offline (session timeout 6 s; user 2 was
# last active at the start)
is_deeply(wait_events($s, 2, [qw(recently_active offline)]),
          [qw(recently_active offline)], 'user 2 ages out too');

# ---------------------------------------------------------------------
# resume: Last-Event-ID gets what happened while away

my $last = events($s)->[-1]{id};
stop_stream($s);
$n->get('/app/x', tok(3));
$n->get('/app/x', tok(5));
$s = open_stream($n, '/api/v1/online/stream?user_ids=1,2,3',
                 headers => ["Last-Event-ID: $last"]);
ok(wait_until(sub { @{ presence_events($s, 3) } }), 'resumed');
is(events($s)->[0]{event}, 'presence',
   'no snapshot: the transitions after Last-Event-ID');
is_deeply(presence_events($s, 3), ['online'],
          'user 3 came online while away');
is_deeply([ grep { !/^[123]$/ }
            map { $_->{json}{user_id} }
            grep { $_->{event} eq 'presence' } @{ events($s) } ],
          [], 'and only watched users: not user 5');
stop_stream($s);

$s = open_stream($n, '/api/v1/online/stream?user_ids=3',
                 headers => ['Last-Event-ID: 12']);
ok(wait_until(sub { @{ events($s) } }), 'an id the zone never gave');
is(events($s)->[0]{event}, 'snapshot', 'gets a fresh snapshot');
stop_stream($s);

# an id the log no longer holds (a 1m zone holds 64 events): a snapshot

{
    my $small = Presence::Nginx->new(name => 'stream_small', http => <<EOC);
    presence_zone zone=presence:1m;
    presence_jwt_secret "$Presence::JWT::SECRET";
EOC
    $small->start;
    my $w = open_stream($small, '/api/v1/online/stream?user_ids=1');
    ok(wait_until(sub { @{ events($w) } }), 'a stream on a small zone');
    $small->get('/app/x', tok(1));
    wait_events($w, 1, ['online']);
    my $old = events($w)->[-1]{id};
    stop_stream($w);
    $small->get('/app/x', tok($_)) for 2 .. 101;
    $w = open_stream($small, '/api/v1/online/stream?user_ids=1',
                     headers => ["Last-Event-ID: $old"]);
    ok(wait_until(sub { @{ events($w) } }), '100 transitions later');
    is(events($w)->[0]{event}, 'snapshot',
       'an id the change log no longer holds gets a snapshot');
    stop_stream($w);
    $small->stop;
}

# ---------------------------------------------------------------------
# 422s, as status gives them

($status, $body) = $n->get('/api/v1/online/stream?user_ids=', tok(9));
is($status, 422, 'empty user_ids: 422');
like($body, qr/"type":"value_error"/, 'value_error');
($status, $body) = $n->get('/api/v1/online/stream?user_ids=1,x', tok(9));
is($status, 422, 'junk: 422');
($status, $body) = $n->get('/api/v1/online/stream?user_ids=1,2,3,4,5,6',
                           tok(9));
is($status, 422, 'more than presence_stream_max_ids: 422');
like($body, qr/at most 5 user ids/, 'the message says the limit');
($status) = $n->get('/api/v1/online/stream?user_ids=1');
is($status, 401, 'no token: 401');

# ---------------------------------------------------------------------
# the aggregate stream

ok(wait_until(sub { my $st = $json->decode(($n->get('/api/v1/online/stats',
                                                    tok(9)))[1]);
                    # the API's own callers are not tracked here
                    !$st->{recently_active_users} }, 10),
   'everyone has aged out');
$s = open_stream($n, '/api/v1/online/stream');
ok(wait_until(sub { @{ events($s) } }), 'the aggregate stream answers');
is(events($s)->[0]{event}, 'snapshot', 'a snapshot first');
ok(exists events($s)->[0]{json}{online_users}, 'of the counts');
sleep 3;
my $quiet = scalar grep { $_->{event} eq 'counts' } @{ events($s) };
like(text($s), qr/^: heartbeat$/m, 'a heartbeat comment while quiet');
my $t0 = time;
$n->get('/app/x', tok(6));
ok(wait_until(sub { grep { $_->{event} eq 'counts'
                           && $_->{json}{online_users} >= 1 }
                    @{ events($s) } }, 3),
   'a counts event when a number changes');
is_deeply([ sort keys %{ events($s)->[-1]{json} } ],
          [qw(online_users recently_active_users timestamp
              total_active_sessions very_active_users)],
          'the three thresholds and active sessions');
my @counts = grep { $_->{event} eq 'counts' } @{ events($s) };
is($quiet, 0, 'none while nothing changed');
stop_stream($s);

# ---------------------------------------------------------------------
# HTTP/2 and the cookie token

$s = open_stream($n, '/api/v1/online/stream?user_ids=7', h2 => 1,
                 port => $h2port);
ok(wait_until(sub { @{ events($s) } }), 'HTTP/2: the stream answers');
like(head($s), qr{^HTTP/2 200}, 'over HTTP/2');
$n->get('/app/x', tok(7));
is_deeply(wait_events($s, 7, ['online']), ['online'], 'HTTP/2: events');
stop_stream($s);

$s = open_stream($n, '/cookie/online/stream?user_ids=8', no_auth => 1,
                 headers => ['Cookie: access_token=' . tok(900)]);
ok(wait_until(sub { @{ events($s) } }), 'a token in a cookie (EventSource)');
like(head($s), qr{^HTTP/1\.1 200}, 'is accepted');
stop_stream($s);

# ---------------------------------------------------------------------
# a stream in one worker sees activity the other worker recorded

# (any worker may take a connection: a stream and five users at a time,
# up to ten times, until a user's request reaches the other worker)

my ($stream_pid, $other, $user, $opened);
for my $round (0 .. 9) {
    my @ids = map { 11 + 5 * $round + $_ } 0 .. 4;
    $s = open_stream($n, '/api/v1/online/stream?user_ids=' . join ',', @ids);
    $opened = wait_until(sub { @{ events($s) } }) or last;
    ($stream_pid) = head($s) =~ /^X-Worker: (\d+)/mi;
    for my $u (@ids) {
        (undef, $body, $head) = $n->get('/app/x', tok($u));
        my ($pid) = $head =~ /^X-Worker: (\d+)/mi;
        ($other, $user) = ($pid, $u), last
            if $pid && $stream_pid && $pid != $stream_pid;
    }
    last if $other;
    stop_stream($s);
}
ok($opened, 'a stream');
ok($stream_pid, "served by worker " . ($stream_pid // '?'));
ok($other, "user " . ($user // '?') . " was recorded by worker "
           . ($other // '?') . ', not the stream\'s');
is_deeply(wait_events($s, $user, ['online']), ['online'],
          'and the stream in the other worker tells it');
stop_stream($s);

# ---------------------------------------------------------------------
# metrics

$s = open_stream($n, '/api/v1/online/stream?user_ids=1');
ok(wait_until(sub { @{ events($s) } }), 'a subscriber');
($status, $body) = $n->get('/metrics');
like($body, qr/^nginx_presence_stream_subscribers\{zone="presence"\} 1$/m,
     'metrics: one subscriber');
like($body, qr/^nginx_presence_stream_subscriber_bytes\{zone="presence"\} [1-9]\d*$/m,
     'its memory is accounted');
like($body, qr/^nginx_presence_stream_events_sent_total\{zone="presence"\} [1-9]\d*$/m,
     'events sent are counted');
like($body, qr/^nginx_presence_stream_transitions_total\{zone="presence"\} [1-9]\d*$/m,
     'transitions are counted');
stop_stream($s);
ok(wait_until(sub { ($n->get('/metrics'))[1]
                    =~ /^nginx_presence_stream_subscribers\{zone="presence"\} 0$/m }),
   'a client that goes away is no subscriber any more');

# ---------------------------------------------------------------------
# token expiry ends the stream

$s = open_stream($n, '/api/v1/online/stream?user_ids=1',
                 token => tok(900, exp => time + 2));
ok(wait_until(sub { finished($s) }, 6), 'the stream ends when the token '
                                         . 'expires');
like(text($s), qr/event: expired\n/, 'with an expired event');

# ---------------------------------------------------------------------
# reload and quit close streams at once; a resume loses nothing

$s = open_stream($n, '/api/v1/online/stream?user_ids=21');
ok(wait_until(sub { @{ events($s) } }), 'a stream');
$last = events($s)->[-1]{id};
$t0 = time;
$n->reload;
ok(wait_until(sub { finished($s) }, 5), 'nginx -s reload closes it');
ok(time - $t0 < 3, 'at once, not after worker_shutdown_timeout');
$n->get('/app/x', tok(21));
$s = open_stream($n, '/api/v1/online/stream?user_ids=21',
                 headers => ["Last-Event-ID: $last"]);
is_deeply(wait_events($s, 21, ['online']), ['online'],
          'reconnected with Last-Event-ID: what happened meanwhile arrives');
is(events($s)->[0]{event}, 'presence', 'without a snapshot');
$t0 = time;
system(($ENV{TEST_NGINX_BINARY} || 'nginx') . ' -p ' . $n->root . '/ -c '
       . 'conf/nginx.conf -s quit 2>/dev/null');
ok(wait_until(sub { finished($s) }, 5), 'nginx -s quit closes it too');
ok(wait_until(sub { !kill 0, $n->{master} }, 5), 'and nginx exits');

# ---------------------------------------------------------------------
# a slow reader is dropped, logged and counted

my $slowport = Presence::Nginx::free_port();
$n = node(max_ids => 1000, http => <<EOC);
    presence_stream_backlog 4k;
    server {
        listen 127.0.0.1:$slowport sndbuf=4k;
        location /api/v1/online/ {
            presence_api;
        }
    }
EOC
my $slow = IO::Socket::INET->new(Proto => 'tcp') // die;
setsockopt($slow, SOL_SOCKET, SO_RCVBUF, 2048);
$slow->connect(Socket::pack_sockaddr_in($slowport,
                                        Socket::inet_aton('127.0.0.1')))
    or die "connect: $!";
print $slow "GET /api/v1/online/stream?user_ids=" . join(',', 1 .. 1000)
          . " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " . tok(9000)
          . "\r\n\r\n";
sleep 0.5;
for my $u (1 .. 1000) {
    $n->get('/app/x', tok($u));
    last if $u % 100 == 0
            && ($n->get('/metrics'))[1]
               =~ /^nginx_presence_stream_slow_client_drops_total\S* [1-9]/m;
}
ok(wait_until(sub { ($n->get('/metrics'))[1]
                    =~ /^nginx_presence_stream_slow_client_drops_total\S* 1$/m },
              10),
   'a client that does not read is dropped past presence_stream_backlog');
like($n->log, qr/presence stream: a client reading too slowly is dropped/,
     'and logged');
ok(wait_until(sub { ($n->get('/metrics'))[1]
                    =~ /^nginx_presence_stream_subscribers\S* 0$/m }),
   'it is no subscriber any more');
close $slow;
$n->stop;

done_testing();
