# The PostgreSQL flusher against the private PostgreSQL: rows, statements,
# no rewrites, outages, slowness, a killed backend and a killed flusher,
# hostile User-Agents, large batches, profiles, peaks, cleanup, exit.

use strict;
use warnings;

use lib 't/lib';
use Presence::JWT;
use Presence::Nginx;
use Presence::PG qw(pg_query pg_value pg_rows pg_lock);
use Test::More;
use Time::HiRes qw(sleep time);

my $dsn = $ENV{TEST_NGINX_PG_DSN}
    or plan skip_all => 'TEST_NGINX_PG_DSN is not set (run "make test")';

*wait_until = \&Presence::Nginx::wait_until;

sub node {
    my (%o) = @_;
    my $extra = delete $o{http} // '';
    my $n = Presence::Nginx->new(name => 'flush', workers => 2, %o,
                                 http => <<EOC . $extra);
    presence_zone zone=presence:8m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$dsn";
    large_client_header_buffers 4 16k;
EOC
    $n->start;
    return $n;
}

sub fresh_db {
    pg_query('TRUNCATE user_sessions, presence_peaks');
    pg_query('DELETE FROM users');
    pg_query(q{INSERT INTO users (id, username, display_name, avatar_url)
               SELECT g, 'user' || g, 'User ' || g,
                      'https://img.example/' || g || '.png'
                 FROM generate_series(1, 3000) g});
}

sub tok { Presence::JWT::token(sub => shift, @_) }

sub upserts {
    return pg_value(q{SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
                      WHERE query LIKE 'WITH r AS (%'}) // 0;
}

my ($n, $status, $body, $t, @rows);

# ---------------------------------------------------------------------
# rows with the right columns, within two intervals

fresh_db();
$n = node(http => "    presence_flush_interval 300ms;\n");

$t = tok(7, exp => 4102444800);
($status) = $n->get('/app/x', $t, ua => 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)');
is($status, 200, 'a tracked request');

ok(wait_until(sub { pg_value('SELECT count(*) FROM user_sessions') == 1 },
              2), 'its row appears within a few intervals');

require Digest::SHA;
@rows = pg_rows(q{SELECT user_id, session_token, ip_address, user_agent,
                         device_info, is_active,
                         extract(epoch FROM expires_at)::bigint,
                         abs(extract(epoch FROM (now() AT TIME ZONE 'UTC')
                                                - last_activity)) < 30,
                         created_at <= last_activity
                    FROM user_sessions});
is_deeply($rows[0], [7, Digest::SHA::sha256_hex($t), '127.0.0.1',
                     'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)', 'mobile',
                     't', 4102444800, 't', 't'],
          'user, session id, address, User-Agent, device, active, '
          . 'expiry, UTC times');

# ---------------------------------------------------------------------
# one statement per flush however many requests; no rewrite without change

my $before = upserts();
my $t0 = time;
for my $i (1 .. 300) {
    $n->get('/app/x', tok(100 + $i % 30));
}
sleep 1;
my $elapsed = time - $t0;
my $calls = upserts() - $before;
cmp_ok($calls, '<=', int($elapsed / 0.3) + 2,
       "300 requests, $calls statements in ${elapsed}s of 300ms flushes");
ok(wait_until(sub {
       pg_value('SELECT count(DISTINCT user_id) FROM user_sessions') == 31 }),
   '30 more users written');

my $xmin = pg_query('SELECT string_agg(xmin::text, \',\' ORDER BY id) FROM user_sessions');
$before = upserts();
sleep 1.5;
is(pg_query('SELECT string_agg(xmin::text, \',\' ORDER BY id) FROM user_sessions'),
   $xmin, 'no row is rewritten when nothing advanced');
is(upserts() - $before, 0, 'and no statement is sent');

# ---------------------------------------------------------------------
# PostgreSQL down for a while: requests succeed, nothing is lost

system('t/bin/pg halt test') == 0 or die;
my @fail;
for my $i (1 .. 40) {
    my ($s) = $n->get('/app/down', tok(200 + $i));
    push @fail, $s if $s != 200;
    sleep 0.1;
}
sleep 2;
my $stamp = time;
for my $i (1 .. 40) {
    my ($s) = $n->get('/app/down', tok(200 + $i));
    push @fail, $s if $s != 200;
}
is_deeply(\@fail, [], 'every request succeeds while PostgreSQL is down');
system('t/bin/pg resume test') == 0 or die;

ok(wait_until(sub {
       pg_value(q{SELECT count(*) FROM user_sessions
                   WHERE user_id BETWEEN 201 AND 240
                     AND last_activity >= to_timestamp(} . int($stamp)
                . q{) AT TIME ZONE 'UTC'}) == 40 }, 40),
   'afterwards every session is in the table with its latest activity');
like($n->log, qr/PostgreSQL connection failed: .*retrying in \d+ ms/,
     'the outage is logged with libpq\'s message');

# ---------------------------------------------------------------------
# a flush blocked by a table lock does not slow requests

my $locker = pg_lock('user_sessions', 3);
sleep 0.5;
my $worst = 0;
for my $i (1 .. 20) {
    my $s = time;
    my ($st) = $n->get('/app/locked', tok(300 + $i));
    $worst = time - $s if time - $s > $worst;
    sleep 0.1;
}
waitpid $locker, 0;
cmp_ok($worst, '<', 0.5,
       sprintf('requests during a 3 s table lock: worst %.3f s', $worst));
ok(wait_until(sub {
       pg_value('SELECT count(*) FROM user_sessions WHERE user_id BETWEEN 301 AND 320') == 20 }, 10),
   'and their sessions are written after the lock');

# ---------------------------------------------------------------------
# the flusher's backend terminated: reconnect, no duplicates

ok(pg_value(q{SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
               WHERE application_name = 'ngx_http_presence_module'}) >= 1,
   'the flusher\'s backend is terminated');
$n->get('/app/after', tok(7, exp => 4102444800));
$n->get('/app/after', tok(400));
ok(wait_until(sub {
       pg_value('SELECT count(*) FROM user_sessions WHERE user_id = 400') == 1 }, 10),
   'it reconnects and writes');
is(pg_value('SELECT count(*) FROM user_sessions WHERE user_id = 7'), 1,
   'the same session is still one row');

# ---------------------------------------------------------------------
# hostile User-Agents are stored sanitised, the batch goes through

my %ua = (
    501 => q{it's "quoted" \\ back\\slash'); DROP TABLE users; --},
    502 => "bad \xff\xfe utf8 \x01 ctl",
    503 => 'z' x 10240,
    504 => "nul\\u0000 text",
);
$n->get('/app/ua', tok($_), ua => $ua{$_}) for sort keys %ua;
ok(wait_until(sub {
       pg_value('SELECT count(*) FROM user_sessions WHERE user_id BETWEEN 501 AND 504') == 4 }, 10),
   'all four written in one batch');
is(pg_value('SELECT user_agent FROM user_sessions WHERE user_id = 501'),
   $ua{501}, 'quotes, backslashes and SQL stored as they are');
is(pg_value('SELECT user_agent FROM user_sessions WHERE user_id = 502'),
   'bad ?? utf8 ? ctl', 'invalid UTF-8 and control bytes replaced');
is(pg_value('SELECT length(user_agent) FROM user_sessions WHERE user_id = 503'),
   512, 'a 10 KiB User-Agent cut to 512 bytes');
is(pg_value('SELECT user_agent FROM user_sessions WHERE user_id = 504'),
   'nul\\u0000 text', 'a JSON escape in a User-Agent is text');
ok(pg_value('SELECT count(*) FROM users') == 3000, 'users is intact');

# ---------------------------------------------------------------------
# a user missing from "users" is kept in memory, not written

$n->get('/app/ghost', tok(99999));
sleep 1;
is(pg_value('SELECT count(*) FROM user_sessions WHERE user_id = 99999'), 0,
   'no row for a user "users" does not have');
(undef, $body) = $n->get('/api/v1/online/status?user_ids=99999', tok(1));
like($body, qr/"99999":\{"status":"online"/, 'but it is online');
unlike($n->log, qr/\[error\].*(violates|ERROR)/, 'and nothing failed');

# ---------------------------------------------------------------------
# profiles from "users"

(undef, $body) = $n->get('/api/v1/online/users?limit=100', tok(1));
ok(wait_until(sub {
       (undef, $body) = $n->get('/api/v1/online/users?limit=100', tok(1));
       $body =~ /"user_id":400,"username":"user400","display_name":"User 400","avatar_url":"https:\/\/img.example\/400.png"/ }, 5),
   'profiles appear in users') or diag($body);
like($body, qr/"user_id":99999,"username":null,"display_name":null,"avatar_url":null/,
     'a user without a row keeps null fields');

# ---------------------------------------------------------------------
# a batch of more than 1 MB

my $big = 'Mozilla/5.0 ' . ('x' x 480);
$before = pg_value('SELECT count(*) FROM user_sessions');
for my $u (1001 .. 3000) {
    $n->get('/app/big', tok($u), ua => $big);
}
ok(wait_until(sub {
       pg_value('SELECT count(*) FROM user_sessions WHERE user_id BETWEEN 1001 AND 3000') == 2000 }, 20),
   '2000 sessions of 500-byte User-Agents (over 1 MB of JSON) written');

$n->stop;
undef $n;

# ---------------------------------------------------------------------
# peaks survive a restart; cleanup reaches the table

fresh_db();
$n = node(http => <<EOC);
    presence_flush_interval 200ms;
    presence_session_timeout 2s;
    presence_cleanup_interval 1s;
EOC
$n->get('/app/p', tok($_)) for 1 .. 5;
ok(wait_until(sub {
       pg_value('SELECT coalesce(max(online_users), 0) FROM presence_peaks') == 5 }, 5),
   'today\'s peak is in presence_peaks');
ok(wait_until(sub {
       pg_value('SELECT count(*) FROM user_sessions WHERE is_active') == 0
       && pg_value('SELECT count(*) FROM user_sessions') == 5 }, 8),
   'expired sessions become inactive in the table');
$n->stop;
undef $n;

$n = node(http => "    presence_flush_interval 200ms;\n");
ok(wait_until(sub {
       (undef, $body) = $n->get('/api/v1/online/stats', tok(1));
       $body =~ /"peak_users_today":5,/ }, 5),
   'after a restart, stats knows today\'s peak') or diag($body);

# POST cleanup deactivates rows the zone no longer holds
pg_query(q{INSERT INTO user_sessions (user_id, session_token, last_activity)
           VALUES (1, 'stale-row', (now() AT TIME ZONE 'UTC')
                                   - interval '2 days')});
$n->request('POST /api/v1/online/cleanup', tok(1));
ok(wait_until(sub {
       pg_value(q{SELECT NOT is_active FROM user_sessions
                   WHERE session_token = 'stale-row'}) eq 't' }, 3),
   'POST cleanup: a row idle beyond the timeout becomes inactive');
$n->stop;
undef $n;

# ---------------------------------------------------------------------
# SIGKILL of the flusher: another worker takes over

fresh_db();
$n = node(http => "    presence_flush_interval 300ms;\n", log_level => 'notice');
$n->get('/app/k', tok(1));
ok(wait_until(sub { pg_value('SELECT count(*) FROM user_sessions') == 1 }, 3),
   'the first flusher writes');
my ($owner) = $n->log =~ /(\d+)#\d+: presence zone "presence": this worker writes/;
ok($owner, "the flusher is worker $owner");
kill 'KILL', $owner;
sleep 0.2;
$n->get('/app/k', tok(2));
ok(wait_until(sub { pg_value('SELECT count(*) FROM user_sessions') == 2 }, 3),
   'another worker writes within a few intervals');
like($n->log, qr/this worker writes to PostgreSQL \(taken over\)/,
     'it took the lease over');
$n->stop;
undef $n;

# ---------------------------------------------------------------------
# nginx -s quit: a last flush

fresh_db();
$n = node(http => "    presence_flush_interval 60s;\n");
sleep 1.5;
$n->get('/app/q', tok($_)) for 1 .. 3;
is(pg_value('SELECT count(*) FROM user_sessions'), 0,
   'nothing written yet (the interval is a minute)');
$n->stop;
is(pg_value('SELECT count(*) FROM user_sessions'), 3,
   'the last flush at quit wrote them');
unlike($n->log, qr/open socket|\[alert\]/, 'no socket left open');

done_testing();
