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

my $n = Presence::Nginx->new(name => 'hardening', workers => 1,
                             http => <<EOC);
    presence_zone zone=presence:4m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$dsn";
    presence_flush_interval 200ms;
    presence_cluster on;
    presence_node hardening;
EOC
$n->start;

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

$n->stop;

# pages start by rank, not by a walk from the head: 3 000 users pulled
# with their own times, one second apart over 50 minutes, are listed in
# that order at every offset (zones of 10-second and 1-second slots)

pg_query('TRUNCATE user_sessions');
pg_query(q{INSERT INTO users (id, username)
           SELECT 1000 + g, 'user' || (1000 + g)
             FROM generate_series(1, 3000) g});
pg_query(q{INSERT INTO user_sessions (user_id, session_token, created_at,
               last_activity, is_active, node, updated_at)
           SELECT 1000 + g, lpad(to_hex(100000 + g), 64, '0'),
                  (now() AT TIME ZONE 'UTC') - make_interval(secs => g),
                  (now() AT TIME ZONE 'UTC') - make_interval(secs => g),
                  true, 'other', now() AT TIME ZONE 'UTC'
             FROM generate_series(1, 3000) g});

for my $size ('4m', '16m') {
    $n = Presence::Nginx->new(name => 'hardening', workers => 1,
                              http => <<EOC);
    presence_zone zone=presence:$size;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$dsn";
    presence_flush_interval 200ms;
    presence_cluster on;
    presence_node hardening;
EOC
    $n->start;

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

done_testing;
