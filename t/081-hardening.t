# Hostile or odd rows in PostgreSQL, as a cluster node pulls them: every
# timestamp the API writes is valid ISO JSON whatever the table holds.

use strict;
use warnings;

use lib 't/lib';
use JSON::PP;
use Presence::JWT;
use Presence::Nginx;
use Presence::PG qw(pg_query pg_value);
use Test::More;

my $dsn = $ENV{TEST_NGINX_PG_DSN}
    or plan skip_all => 'TEST_NGINX_PG_DSN is not set (run "make test")';

*wait_until = \&Presence::Nginx::wait_until;

sub tok { Presence::JWT::token(sub => shift) }

sub token_hex { sprintf '%064x', shift }

pg_query('TRUNCATE user_sessions, presence_peaks');
pg_query('DELETE FROM users');
pg_query(q{INSERT INTO users (id, username)
           SELECT g, 'user' || g FROM generate_series(1, 20) g});

# a cluster node of this test: its zone size, and more of the server block
sub node {
    my ($size, $server) = @_;
    my $node = Presence::Nginx->new(name => 'hardening', workers => 1,
                                    server => $server // '', http => <<EOC);
    presence_zone zone=presence:$size;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$dsn";
    presence_flush_interval 200ms;
    presence_cluster on;
    presence_node hardening;
EOC
    $node->start;
    return $node;
}

my $n = node('4m', "location = /metrics { presence_metrics; }");

# rows another writer left: before 1970, before year 1

pg_query(sprintf q{INSERT INTO user_sessions (user_id, session_token,
                       created_at, last_activity, expires_at, is_active,
                       node, updated_at)
                   VALUES (5, '%s', '1969-12-31 23:59:59.015',
                           now() AT TIME ZONE 'UTC', NULL, true, 'other',
                           now() AT TIME ZONE 'UTC'),
                          (6, '%s', '0500-01-01 00:00:00 BC',
                           now() AT TIME ZONE 'UTC', NULL, true, 'other',
                           now() AT TIME ZONE 'UTC')},
         token_hex(5), token_hex(6));

for my $case ([5, '1969-12-31T23:59:59.015000'],
              [6, '0001-01-01T00:00:00.000000'])
{
    my ($user, $created) = @$case;
    my $body = wait_until(sub {
        my (undef, $b) = $n->get('/api/v1/online/sessions', tok($user));
        $b =~ /"count":1/ ? $b : '';
    });

    my $json = eval { JSON::PP->new->utf8->decode($body) };
    ok($json, "user $user: sessions is valid JSON") or diag($body);
    is($json && $json->{sessions}[0]{created_at}, $created,
       "user $user: created_at $created");
}

# a page whose profiles do not fit the usual area: none is dropped

pg_query(q{INSERT INTO users (id, username)
           SELECT g, 'user' || g FROM generate_series(21, 40) g});
pg_query(q{UPDATE users SET
             username = 'U' || id || repeat('あ', 250),
             display_name = repeat('é', 255),
             avatar_url = 'https://img.example/' || repeat('a', 2000)
           WHERE id BETWEEN 7 AND 40});

$n->get('/app/x', tok($_)) for 7 .. 40;

my $named = sub {
    my (undef, $b) = $n->get('/api/v1/online/users?limit=100', tok(7));
    my $j = eval { JSON::PP->new->utf8->decode($b) } or return 0;
    my @u = grep { $_->{user_id} >= 7 } @{ $j->{online_users} };
    my @full = grep { defined $_->{username} && defined $_->{display_name}
                      && defined $_->{avatar_url} } @u;
    return @full == 34 ? $j : 0;
};

my $page = wait_until($named, 10);
ok($page, 'all 34 users of a 87 KB page have their profiles');

SKIP: {
    skip 'no page', 3 unless $page;
    my ($u) = grep { $_->{user_id} == 7 } @{ $page->{online_users} };
    is(length $u->{username}, 252, 'username whole');
    is($u->{display_name}, "\x{e9}" x 255, 'display_name whole');
    is(length $u->{avatar_url}, 1024, 'avatar_url cut at 1024 bytes');
}

sub metric {
    my ($name) = @_;
    my (undef, $m) = $n->get('/metrics');
    my ($v) = $m =~ /^nginx_presence_\Q$name\E\{zone="presence"\} (\d+)/m;
    return $v // 0;
}

sub status_of {
    my (undef, $b) = $n->get('/api/v1/online/status?user_ids=' . shift, tok(1));
    return eval { JSON::PP->new->utf8->decode($b)->{statuses} } // {};
}

# any value PostgreSQL can hold: infinity, NULLs, a row updated in the far
# future; the backend's rows (node NULL) are pulled like another node's

pg_query(q{INSERT INTO users (id, username) VALUES (41, 'u41'), (42, 'u42'),
           (51, 'u51'), (52, 'u52'), (53, 'u53'), (54, 'u54'), (55, 'u55'),
           (56, 'u56'), (60, 'u60')});
pg_query(sprintf q{INSERT INTO user_sessions (user_id, session_token,
                       created_at, last_activity, expires_at, is_active,
                       node, updated_at)
                   VALUES (51, '%s', now(), 'infinity', NULL, true,
                           'other', now() AT TIME ZONE 'UTC'),
                          (52, '%s', '-infinity', now() AT TIME ZONE 'UTC',
                           NULL, true, 'other', now() AT TIME ZONE 'UTC'),
                          (53, '%s', now(), now() AT TIME ZONE 'UTC',
                           NULL, true, NULL, now() AT TIME ZONE 'UTC'),
                          (54, '%s', now(), now() AT TIME ZONE 'UTC',
                           'infinity', true, 'other',
                           now() AT TIME ZONE 'UTC'),
                          (56, '%s', now(), now() AT TIME ZONE 'UTC',
                           NULL, true, 'other', '9999-01-01')},
         map { token_hex($_) } 51, 52, 53, 54, 56);

my $st = wait_until(sub {
    my $s = status_of('51,52,53,54');
    (grep { ($s->{$_}{status} // '') eq 'online' } 52, 53, 54) == 3 ? $s : 0;
});
ok($st, 'rows with infinite times around them, or node NULL, are pulled');
is($st && $st->{51}{status}, 'offline',
   'an infinite last_activity is skipped');
ok(metric('pull_skipped_rows_total') >= 1, 'and counted');

pg_query(sprintf q{INSERT INTO user_sessions (user_id, session_token,
                       last_activity, is_active, node, updated_at)
                   VALUES (55, '%s', now() AT TIME ZONE 'UTC', true,
                           'other', now() AT TIME ZONE 'UTC')},
         token_hex(55));
ok(wait_until(sub { (status_of('55')->{55}{status} // '') eq 'online' }),
   'a row far in the future never stops the pulls after it');
unlike($n->log, qr/infinity|out of range/, 'no statement failed');

# a huge profile column never reaches the worker whole

my ($worker) = $n->workers;
sub hwm {
    open my $fh, '<', "/proc/$worker/status" or return 0;
    local $/;
    return <$fh> =~ /^VmHWM:\s+(\d+) kB/m ? $1 : 0;
}

my $before = hwm();
pg_query(q{UPDATE users SET avatar_url = repeat('a', 20000000)
           WHERE id IN (41, 42)});
$n->get('/app/x', tok($_)) for 41, 42;

ok(wait_until(sub {
       my (undef, $b) = $n->get('/api/v1/online/users?limit=100', tok(1));
       $b =~ /"user_id":41,"username":"u41",[^}]*"avatar_url":"a{1024}"/ }),
   'a 20 MB avatar_url arrives cut at 1024 bytes');
cmp_ok(hwm() - $before, '<', 16 * 1024,
       'and the worker never held it (peak memory grew by less than 16 MB)');

# a batch is written in session-token order: two nodes lock the same rows
# in the same order and cannot deadlock each other

pg_query(q{CREATE TABLE lock_order (seq bigserial, token text, tx bigint)});
pg_query(q{CREATE FUNCTION lock_order_log() RETURNS trigger
           LANGUAGE plpgsql AS $$ BEGIN
             INSERT INTO lock_order (token, tx)
             VALUES (NEW.session_token, txid_current()); RETURN NEW;
           END $$});
pg_query(q{CREATE TRIGGER lock_order BEFORE INSERT OR UPDATE ON user_sessions
           FOR EACH ROW EXECUTE FUNCTION lock_order_log()});
END {
    local $?;
    eval { pg_query(q{DROP TRIGGER IF EXISTS lock_order ON user_sessions;
                      DROP FUNCTION IF EXISTS lock_order_log();
                      DROP TABLE IF EXISTS lock_order}) };
}

$n->get('/app/x', Presence::JWT::token(sub => 60, sid => "s$_")) for 1 .. 30;

ok(wait_until(sub { pg_value(q{SELECT count(*) FROM user_sessions
                               WHERE user_id = 60}) == 30 }),
   '30 new sessions written');

my %tx;
for (split /\n/, pg_query(q{SELECT tx, token FROM lock_order ORDER BY seq})) {
    my ($tx, $token) = split /\t/;
    push @{ $tx{$tx} }, $token;
}
my ($largest) = sort { @$b <=> @$a } values %tx;
cmp_ok(scalar @{ $largest // [] }, '>=', 5, 'a batch of several rows');
my @unordered = grep { "@$_" ne join ' ', sort @$_ } values %tx;
is(scalar @unordered, 0, 'every batch in session-token order');

pg_query(q{DROP TRIGGER lock_order ON user_sessions;
           DROP FUNCTION lock_order_log(); DROP TABLE lock_order});

$n->stop;

# pages start by rank, not by a walk from the head: 3 000 users pulled
# with their own times, one second apart over 50 minutes, are listed in
# that order at every offset (zones of 10-second and 1-second slots)

# users $base + 1 .. $base + $count, in one transaction (one updated_at),
# active $age + 1 .. $age + $count seconds ago, written by node "other"
sub seed {
    my ($base, $count, $age) = @_;
    pg_query(qq{INSERT INTO users (id, username)
                SELECT $base + g, 'user' || ($base + g)
                  FROM generate_series(1, $count) g});
    pg_query(qq{INSERT INTO user_sessions (user_id, session_token,
                    created_at, last_activity, is_active, node, updated_at)
                SELECT $base + g, lpad(to_hex(100 * $base + g), 64, '0'),
                       (now() AT TIME ZONE 'UTC')
                       - make_interval(secs => $age + g),
                       (now() AT TIME ZONE 'UTC')
                       - make_interval(secs => $age + g),
                       true, 'other', now() AT TIME ZONE 'UTC'
                  FROM generate_series(1, $count) g});
}

pg_query('TRUNCATE user_sessions');
seed(1000, 3000, 0);

for my $size ('4m', '16m') {
    $n = node($size);

    ok(wait_until(sub {
           my (undef, $b) = $n->get('/api/v1/online/count?threshold_minutes=60',
                                    tok(1));
           $b =~ /"online_count":3000\b/ }),
       "$size: 3000 users pulled");

    my @bad;
    for my $offset (0, 1, 9, 10, 49, 50, 777, 1234, 2950, 2999, 3000) {
        my (undef, $b) = $n->get('/api/v1/online/users?threshold_minutes=60'
                                 . "&limit=50&offset=$offset", tok(1));
        my $j = eval { JSON::PP->new->utf8->decode($b) };
        my @got = map { $_->{user_id} } @{ $j ? $j->{online_users} : [] };
        my $last = $offset + 49 < 2999 ? $offset + 49 : 2999;
        my @want = $offset < 3000 ? map { 1001 + $_ } $offset .. $last : ();
        push @bad, "offset $offset: @got[0 .. 2] ..."
            unless "@got" eq "@want" && $j->{total} == 3000;
    }
    is("@bad", '', "$size: every page in order, total 3000");

    $n->stop;
}

# 3 000 users within one second (as after a burst of logins): a deep page
# steps over more than 1 024 of them, letting the lock go between; every
# user is on exactly one page

pg_query(q{INSERT INTO users (id, username)
           SELECT 40000 + g, 'user' || (40000 + g)
             FROM generate_series(1, 3000) g});
pg_query(q{INSERT INTO user_sessions (user_id, session_token, created_at,
               last_activity, is_active, node, updated_at)
           SELECT 40000 + g, lpad(to_hex(4000000 + g), 64, '0'),
                  date_trunc('second', now() AT TIME ZONE 'UTC')
                  - interval '9 hours' + make_interval(secs => g / 4000.0),
                  date_trunc('second', now() AT TIME ZONE 'UTC')
                  - interval '9 hours' + make_interval(secs => g / 4000.0),
                  true, 'other', now() AT TIME ZONE 'UTC'
             FROM generate_series(1, 3000) g});

# one transaction of 25 000 rows, more than a pull's page, all of them with
# the same updated_at: every row is pulled (the next page starts after the
# last row's (updated_at, id), not after its updated_at); their times, one
# second apart and older than the 3 000 before, put the second page's
# users behind everyone: each is placed through the counting tree

seed(10000, 25000, 5000);

$n = node('16m', "location = /metrics { presence_metrics; }");

# the User-Agent table grows with the zone: a bucket for four sessions

my ($buckets) = (($n->get('/metrics'))[1]
                 =~ /^nginx_presence_user_agent_buckets\{zone="presence"\} (\d+)/m);
my ($capacity) = (($n->get('/metrics'))[1]
                  =~ /^nginx_presence_sessions_capacity\{zone="presence"\} (\d+)/m);
is($buckets, int($capacity / 4),
   "$buckets User-Agent buckets for $capacity sessions");

ok(wait_until(sub {
       my (undef, $b) = $n->get('/api/v1/online/count?threshold_minutes=1440',
                                tok(1));
       $b =~ /"online_count":31000\b/ }, 15),
   'all 25 000 rows of one transaction are pulled, with the 6 000 before');

my @wrong;
for my $offset (0, 2990, 3000, 16990, 17000, 20000, 27950) {
    my (undef, $b) = $n->get('/api/v1/online/users?threshold_minutes=1440'
                             . "&limit=50&offset=$offset", tok(1));
    my $j = eval { JSON::PP->new->utf8->decode($b) };
    my @got = map { $_->{user_id} } @{ $j ? $j->{online_users} : [] };
    my @want = map { $_ < 3000 ? 1001 + $_ : 10001 + $_ - 3000 }
               $offset .. $offset + 49;
    push @wrong, "offset $offset: @got[0 .. 2] ..." unless "@got" eq "@want";
}
is("@wrong", '', 'and listed in their order across both pages');

# the 3 000 of one second come after all of those (nine hours ago)

my %listed;
for (my $offset = 28000; $offset < 31000; $offset += 50) {
    my (undef, $b) = $n->get('/api/v1/online/users?threshold_minutes=1440'
                             . "&limit=50&offset=$offset", tok(1));
    my $j = eval { JSON::PP->new->utf8->decode($b) } or next;
    $listed{ $_->{user_id} }++ for @{ $j->{online_users} };
}
my @twice = grep { $listed{$_} != 1 } keys %listed;
is(scalar(grep { $_ > 40000 && $_ <= 43000 } keys %listed), 3000,
   'every one of 3 000 users of one second is listed, pages deep in it');
is("@twice", '', 'each once');

$n->stop;

done_testing;
