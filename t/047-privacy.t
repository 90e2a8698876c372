# Privacy: invisible members (presence_privacy_column), fail closed until
# the setting is read, coarse last-seen for others
# (presence_last_seen_precision), reciprocity, counts with and without
# hidden members, a per-caller cap on distinct ids looked up
# (presence_lookup_limit, 429), and a randomised run: no answer and no
# event ever shows an invisible member to another caller, and no last_seen
# shown to another caller is finer than the bucket.

use strict;
use warnings;

use lib 't/lib';
use JSON::PP;
use Presence::JWT;
use Presence::Nginx;
use Presence::PG qw(pg_query pg_value);
use Test::More;
use Time::HiRes qw(sleep time);

my $dsn = $ENV{TEST_NGINX_PG_DSN}
    or plan skip_all => 'TEST_NGINX_PG_DSN is not set (run "make test")';

*wait_until = \&Presence::Nginx::wait_until;

my $json = JSON::PP->new;

sub tok { Presence::JWT::token(sub => shift, @_) }

pg_query('TRUNCATE user_sessions, presence_peaks');
pg_query('DELETE FROM users');
pg_query(q{ALTER TABLE users ADD COLUMN IF NOT EXISTS show_online_status
           boolean NOT NULL DEFAULT true});
END { local $?; eval { pg_query(q{ALTER TABLE users
                                  DROP COLUMN IF EXISTS show_online_status}) } }
pg_query(q{INSERT INTO users (id, username) SELECT g, 'm' || g
             FROM generate_series(1, 200) g});

sub node {
    my (%o) = @_;
    my $extra = delete $o{http} // '';
    my $interval = delete $o{interval} // '200ms';
    my $ttl = delete $o{ttl} // '1s';
    my $zone = delete $o{zone} // '8m';
    pg_query('TRUNCATE user_sessions')      # no warm start from before
        unless delete $o{keep_sessions};
    my $n = Presence::Nginx->new(name => 'privacy', workers => 2, %o,
                                 http => <<EOC . $extra, server => <<'EOS');
    presence_zone zone=presence:$zone;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$dsn";
    presence_flush_interval $interval;
    presence_profile_ttl $ttl;
    presence_privacy_column show_online_status;
EOC
        location /me/online/ {
            presence on;
            presence_api;
        }
        location = /metrics {
            presence_metrics;
        }
EOS
    $n->start;
    return $n;
}

sub api {
    my ($n, $path, $user) = @_;
    my ($status, $body, $head) = $n->get("/api/v1/online/$path", tok($user));
    my $j = eval { $json->decode($body) } // {};
    $j->{_status} = $status;
    $j->{_head} = $head;
    return $j;
}

sub status_of {
    my ($n, $viewer, $user) = @_;
    return api($n, "status?user_ids=$user", $viewer)->{statuses}{$user};
}

sub hide { pg_query("UPDATE users SET show_online_status = $_[1]
                     WHERE id = $_[0]") }

my ($n, $s, $st);

# ---------------------------------------------------------------------
# fail closed, then the setting as read

$n = node();
$n->get('/app/x', tok(1));
is_deeply(status_of($n, 100, 1), { status => 'offline', last_seen => undef },
          'a member whose setting is not read yet is offline to others');
ok(wait_until(sub { status_of($n, 100, 1)->{status} eq 'online' }),
   'once read (visible): online');

hide(2, 'false');
$n->get('/app/x', tok(2));
sleep 1;
is_deeply(status_of($n, 100, 2), { status => 'offline', last_seen => undef },
          'an invisible member is offline to others, without last_seen');
is(status_of($n, 2, 2)->{status}, 'online', 'but not to itself');
my ($status, $body) = $n->get('/api/v1/online/sessions', tok(2));
like($body, qr/"count":1,/, 'it sees its own sessions');

my $page = api($n, 'users', 100);
is_deeply([ map { $_->{user_id} } @{ $page->{online_users} } ], [1],
          'users lists the visible member only');
is($page->{total}, 1, 'and its total counts visible members');
is(api($n, 'count', 100)->{online_count}, 2,
   'counts include invisible members by default (presence_privacy_counts on)');

# the column changes: within the profile TTL; POST cleanup: at once

hide(1, 'false');
ok(wait_until(sub { status_of($n, 100, 1)->{status} eq 'offline' }, 4),
   'turned invisible: offline to others within the profile TTL');
is(api($n, 'users', 100)->{total}, 0, 'and out of users');
hide(1, 'true');
hide(2, 'true');
$n->request('POST /api/v1/online/cleanup', tok(100));
ok(wait_until(sub { status_of($n, 100, 2)->{status} eq 'online' }, 1),
   'after POST cleanup the settings are read again at once');
$n->stop;

# ---------------------------------------------------------------------
# a restart: the warm start reads the settings with the sessions, so a
# hidden member stays hidden and a visible one is back at once

$n = node();
hide(9, 'false');
$n->get('/app/x', tok($_)) for 8, 9;
ok(wait_until(sub { pg_value(q{SELECT count(*) FROM user_sessions
                               WHERE user_id IN (8, 9)}) == 2 }),
   'two sessions written');
$n->stop;
$n = node(keep_sessions => 1);
ok(wait_until(sub { api($n, 'stats', 100)->{warm}{done} }), 'restarted');
is(status_of($n, 100, 8)->{status}, 'online',
   'the visible member is online as soon as the warm start is over');
is_deeply(status_of($n, 100, 9), { status => 'offline', last_seen => undef },
          'the hidden member stays hidden');
hide(9, 'true');
$n->stop;

# ---------------------------------------------------------------------
# a member deep in the queue (1 500 members active since): its setting is
# read again within the TTL too, by the profile loader's sweep

pg_query(q{INSERT INTO users (id, username) SELECT g, 'm' || g
             FROM generate_series(2001, 3600) g});
pg_query(q{INSERT INTO user_sessions (user_id, session_token, created_at,
               last_activity, is_active, node, updated_at)
           SELECT g, lpad(to_hex(500000 + g), 64, '0'),
                  (now() AT TIME ZONE 'UTC') - interval '10 minutes',
                  (now() AT TIME ZONE 'UTC')
                  - make_interval(secs => (3600 - g) * 0.05),
                  true, 'other', now() AT TIME ZONE 'UTC'
             FROM generate_series(2001, 3600) g});
$n = node(keep_sessions => 1);
ok(wait_until(sub { api($n, 'stats', 100)->{warm}{done} }), 'restarted');
ok(wait_until(sub { status_of($n, 100, 2001)->{status} ne 'offline' }, 5),
   'the least recent of 1 600 members is visible');
my $listed = api($n, 'users?limit=1&threshold_minutes=60', 100)->{total};
hide(2001, 'false');
ok(wait_until(sub { status_of($n, 100, 2001)->{status} eq 'offline' }, 5),
   'it hides: offline to others within the TTL (1 s) and a sweep');
is(api($n, 'users?limit=1&threshold_minutes=60', 100)->{total}, $listed - 1,
   "and out of users ($listed before)");
$n->stop;

# a flush sends up to 8 full queries of profiles: after POST cleanup the
# first flush reads the 1 000 most recent again in two (the next flush
# comes 3 s later)

sub profile_reads {
    return pg_value(q{SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
                      WHERE query LIKE 'SELECT u.id, left(u.username%'});
}
sub renamed {
    my $k = 0;
    for (my $offset = 0; $offset < 1700; $offset += 100) {
        my $page = api($n, "users?limit=100&offset=$offset"
                           . '&threshold_minutes=60', 100);
        $k += grep { ($_->{display_name} // '') eq 'renamed' }
              @{ $page->{online_users} // [] };
    }
    return $k;
}

hide(2001, 'true');
$n = node(keep_sessions => 1, interval => '3s', ttl => '1h');
ok(wait_until(sub { api($n, 'stats', 100)->{warm}{done} }), 'restarted');
pg_query(q{UPDATE users SET display_name = 'renamed' WHERE id > 2000});
pg_query('SELECT pg_stat_statements_reset()');
$n->request('POST /api/v1/online/cleanup', tok(100));
ok(wait_until(sub { profile_reads() > 0 }, 8), 'the next flush reads profiles');
sleep 1;
cmp_ok(profile_reads(), '>=', 2, 'in more than one query');
cmp_ok(renamed(), '>=', 998, 'the 1 000 most recent read again at once');
$n->stop;

# a zone too small for 1 600 profiles of 1 KB (their avatar_url): those not stored are
# counted, and wait for the TTL like the others (they were asked for at
# every flush)

pg_query(q{UPDATE users SET avatar_url = repeat('x', 1000)
            WHERE id > 2000});
$n = node(keep_sessions => 1, ttl => '1h', zone => '2m');
ok(wait_until(sub { api($n, 'stats', 100)->{warm}{done} }), 'restarted');
my (undef, $metrics) = $n->get('/metrics');
my ($failed) = $metrics
    =~ /^nginx_presence_string_store_failures_total\{zone="presence"\} (\d+)/m;
cmp_ok($failed // 0, '>', 0, "profiles not stored, counted ($failed)");
sleep 1;
pg_query('SELECT pg_stat_statements_reset()');
sleep 2;
is(profile_reads(), 0, 'and not asked for again over ten flushes');
$n->stop;
pg_query('DELETE FROM user_sessions WHERE user_id > 2000');
pg_query('DELETE FROM users WHERE id > 2000');

# ---------------------------------------------------------------------
# presence_privacy_counts off: hidden members are not counted

$n = node(http => "    presence_privacy_counts off;\n");
hide(3, 'false');
$n->get('/app/x', tok($_)) for 3, 4;
ok(wait_until(sub { status_of($n, 100, 4)->{status} eq 'online' }),
   'settings read');
is(api($n, 'count', 100)->{online_count}, 1,
   'counts leave the invisible member out');
is(api($n, 'stats', 100)->{online_users}, 1, 'stats too');
hide(3, 'true');
ok(wait_until(sub { api($n, 'count', 100)->{online_count} == 2 }),
   'visible again: counted');
$n->stop;

# ---------------------------------------------------------------------
# the stream: no event about an invisible member, offline when it hides

$n = node();
$n->get('/app/x', tok(5));
ok(wait_until(sub { status_of($n, 100, 5)->{status} eq 'online' }),
   'member 5 is online');
my $stream = $n->stream('/api/v1/online/stream?user_ids=5,6',
                         token => tok(100), max => 12);
sub stream_text { Presence::Nginx::stream_text($stream) }
sleep 3.5;
unlike(stream_text(), qr/^event: presence/m,
       'its settings read again three times (TTL 1 s): no event, it never '
       . 'looked hidden');
hide(5, 'false');
ok(wait_until(sub { stream_text() =~ /"user_id":5,"status":"offline","last_seen":null/ }, 5),
   'a member that hides: offline, without last_seen, on the stream');
hide(6, 'false');
$n->get('/app/x', tok(6));
sleep 1.5;
unlike(stream_text(), qr/"user_id":6/, 'an invisible member\'s activity '
                                      . 'sends no event');
Presence::Nginx::stream_stop($stream);
hide(5, 'true');
hide(6, 'true');
$n->stop;

# ---------------------------------------------------------------------
# coarse last-seen, and reciprocity

$n = node(http => "    presence_last_seen_precision 10s;\n"
               . "    presence_privacy_reciprocal on;\n");
$n->get('/app/x', tok(7));
ok(wait_until(sub { status_of($n, 100, 7)->{status} eq 'online' }),
   'member 7 is online');
my $seen = status_of($n, 100, 7)->{last_seen};
like($seen, qr/:\d0\.000000$/, "others see last_seen in 10 s buckets ($seen)");
unlike(status_of($n, 7, 7)->{last_seen}, qr/^\Q$seen\E$/,
       'the member itself sees its own time')
    if status_of($n, 7, 7)->{last_seen} !~ /:\d0\.000000$/;
like(api($n, 'users', 100)->{online_users}[0]{last_seen}, qr/:\d0\.000000$/,
     'users: in buckets too');

hide(100, 'false');
$n->get('/me/online/count', tok(100));
ok(wait_until(sub { !defined status_of($n, 100, 7)->{last_seen} }),
   'a caller who hides sees others without last_seen (reciprocity)');
is(status_of($n, 100, 7)->{status}, 'online', 'but still their status');
hide(100, 'true');
$n->stop;

# ---------------------------------------------------------------------
# presence_lookup_limit: distinct ids per caller per period, 429 beyond

$n = node(http => "    presence_lookup_limit 5 per=1h;\n");
my $r = api($n, 'status?user_ids=1,2,3', 101);
is($r->{_status}, 200, '3 distinct ids: answered');
$r = api($n, 'status?user_ids=1,2,3,4,5', 101);
is($r->{_status}, 200, 'the same 3 and 2 more: 5, answered');
$r = api($n, 'status?user_ids=1,2', 101);
is($r->{_status}, 200, 'ids already asked about cost nothing');
$r = api($n, 'status?user_ids=6', 101);
is($r->{_status}, 429, 'a sixth distinct id: 429');
is($r->{detail}, 'Too Many Requests', 'FastAPI\'s body');
like($r->{_head}, qr/^Retry-After: (\d+)\r?$/mi, 'with Retry-After');
my ($retry) = $r->{_head} =~ /^Retry-After: (\d+)/mi;
ok($retry > 3500 && $retry <= 3600, "the rest of the period ($retry s)");
is(api($n, 'status?user_ids=6', 102)->{_status}, 200,
   'another caller has its own count');
($status) = $n->get('/api/v1/online/stream?user_ids=7,8', tok(101));
is($status, 429, 'the stream\'s watch list counts too');
($status, $body) = $n->get('/metrics');
like($body, qr/^nginx_presence_lookup_limited_total\S* 2$/m,
     'refusals are counted');
like($body, qr/^nginx_presence_lookup_callers\S* 2$/m,
     'and the callers held');
$n->stop;

# ---------------------------------------------------------------------
# randomised: members switch invisible on and off, viewers poll status,
# users and the stream; no answer or event shows a member to another
# caller while it is invisible (once the module could know: a profile
# TTL after the switch), and every last_seen is in 10 s buckets

$n = node(http => "    presence_last_seen_precision 10s;\n");
srand(7);
my @members = (20 .. 29);
my %hidden_since;           # member => when it hid
my %shown_since;
$n->get('/app/x', tok($_)) for @members;

$stream = $n->stream('/api/v1/online/stream?user_ids=' . join(',', @members),
                     token => tok(150), max => 30);

my @leaks;
my $t_end = time + 12;
my $answers = 0;
while (time < $t_end) {
    my $m = $members[rand @members];
    if (rand() < 0.3) {
        my $hide = exists $hidden_since{$m} ? 0 : 1;
        hide($m, $hide ? 'false' : 'true');
        if ($hide) { $hidden_since{$m} = time; delete $shown_since{$m} }
        else { delete $hidden_since{$m} }
    }
    $n->get('/app/x', tok($members[rand @members]));

    my $viewer = 150 + int rand 5;
    my $now = time;
    my $st = api($n, 'status?user_ids=' . join(',', @members), $viewer);
    my $us = api($n, 'users?limit=100', $viewer);
    $answers += 2;
    for my $m (@members) {
        my $hid = $hidden_since{$m};
        my $e = $st->{statuses}{$m};
        push @leaks, "status shows $m last_seen $e->{last_seen}"
            if defined $e->{last_seen} && $e->{last_seen} !~ /:\d0\.000000$/;
        next unless $hid && $now - $hid > 2.5;
        push @leaks, "status shows hidden $m as $e->{status}"
            if $e->{status} ne 'offline' || defined $e->{last_seen};
        push @leaks, "users lists hidden $m"
            if grep { $_->{user_id} == $m } @{ $us->{online_users} };
    }
    for (@{ $us->{online_users} }) {
        push @leaks, "users shows last_seen $_->{last_seen}"
            if $_->{last_seen} !~ /:\d0\.000000$/;
    }
    sleep 0.05;
}
Presence::Nginx::stream_stop($stream);

# the stream: per member, after its last hide, nothing but offline/null
my $text = stream_text();
for my $m (keys %hidden_since) {
    my @ev = $text =~ /data: (\{"user_id":$m,[^\n]*)/g;
    next unless @ev;
    my $last = $json->decode($ev[-1]);
    push @leaks, "stream leaves hidden $m as $last->{status}"
        if time - $hidden_since{$m} > 3
           && ($last->{status} ne 'offline' || defined $last->{last_seen});
}
for my $d ($text =~ /data: (\{"user_id":[^\n]*)/g) {
    my $e = $json->decode($d);
    push @leaks, "stream last_seen $e->{last_seen}"
        if defined $e->{last_seen} && $e->{last_seen} !~ /:\d0\.000000$/;
}
ok($answers > 50, "$answers answers looked at");
is_deeply(\@leaks, [], 'no answer or event reveals an invisible member or '
                       . 'a last_seen finer than the bucket');
$n->stop;

done_testing();
