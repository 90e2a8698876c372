# presence_api_require_user: the API answers 401, as the backend does, to a
# caller whose row in "users" is missing or has is_active = false, from
# what the profile loader read (no query on the request path); a caller
# not read yet is answered.  Without the is_active column only missing
# users are refused.

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

*wait_until = \&Presence::Nginx::wait_until;

sub tok { Presence::JWT::token(sub => shift, @_) }

sub node {
    my $n = Presence::Nginx->new(name => 'require', workers => 2,
                                 http => <<EOC, server => <<'EOS');
    presence_zone zone=presence:8m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$dsn";
    presence_flush_interval 300ms;
    presence_profile_ttl 1s;
EOC
        location /v2/online/ {
            presence on;
            presence_api;
            presence_api_require_user on;
        }
EOS
    $n->start;
    return $n;
}

pg_query('TRUNCATE user_sessions, presence_peaks');
pg_query('DELETE FROM users');
pg_query(q{ALTER TABLE users ADD COLUMN IF NOT EXISTS is_active boolean
           NOT NULL DEFAULT true});
pg_query(q{INSERT INTO users (id, username, is_active)
           VALUES (1, 'one', true), (2, 'two', false)});

my $n = node();
my ($status, $body, $head);

# not read yet: answered as before

for my $user (1, 2, 5000) {
    ($status) = $n->get('/v2/online/count', tok($user));
    is($status, 200, "user $user, not read yet, is answered");
}

# once read: the inactive and the missing user get the backend's 401

ok(wait_until(sub { ($n->get('/v2/online/count', tok(2)))[0] == 401 }),
   'once read, an inactive user gets 401');
($status, $body, $head) = $n->get('/v2/online/stats', tok(2));
is($body, '{"detail":"Could not validate credentials"}',
   'with FastAPI\'s body');
like($head, qr/^WWW-Authenticate: Bearer\r?$/mi, 'and WWW-Authenticate');
ok(wait_until(sub { ($n->get('/v2/online/count', tok(5000)))[0] == 401 }),
   'a user missing from "users" gets 401');
($status) = $n->get('/v2/online/users', tok(1));
is($status, 200, 'an active user is answered');
($status) = $n->get('/api/v1/online/count', tok(2));
is($status, 200, 'a location without presence_api_require_user answers '
                 . 'the inactive user (default off)');
($status, $body) = $n->get('/v2/online/nope', tok(2));
is($status, 404, 'an unknown endpoint is still 404 first');

# the column changes: the answer follows within the profile TTL

pg_query(q{UPDATE users SET is_active = true WHERE id = 2});
ok(wait_until(sub { ($n->get('/v2/online/count', tok(2)))[0] == 200 }),
   'reactivated in "users": answered again within the profile TTL');
pg_query(q{UPDATE users SET is_active = false WHERE id = 1});
ok(wait_until(sub { ($n->get('/v2/online/count', tok(1)))[0] == 401 }),
   'deactivated: refused within the profile TTL');
$n->stop;

# a "users" table without is_active: only missing users are refused

pg_query(q{ALTER TABLE users DROP COLUMN is_active});
$n = node();
$n->get('/v2/online/count', tok(1));
$n->get('/v2/online/count', tok(5000));
ok(wait_until(sub { ($n->get('/v2/online/count', tok(5000)))[0] == 401 }),
   'without users.is_active, a missing user is refused');
($status) = $n->get('/v2/online/count', tok(1));
is($status, 200, 'and a user with a row is answered');
unlike($n->log, qr/\[(error|crit|alert|emerg)\]/,
       'no error: the profile query does without the column');
$n->stop;

# a bad value is a named configuration error

my $bad = Presence::Nginx->new(name => 'require_bad', http => <<'EOC');
    presence_zone zone=presence:1m;
    presence_jwt_secret "s";
    presence_api_require_user maybe;
EOC
{
    # nginx says it on stderr too: the error log is what is checked
    open my $saved, '>&', \*STDERR or die;
    open STDERR, '>', '/dev/null' or die;
    eval { $bad->start };
    open STDERR, '>&', $saved or die;
}
like($@ . (-e $bad->root . '/logs/error.log'
           ? `cat @{[ $bad->root ]}/logs/error.log` : ''),
     qr/invalid value "maybe" in "presence_api_require_user" directive/,
     'presence_api_require_user maybe: nginx -t names it');

done_testing();
