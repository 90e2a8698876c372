# A database that is not UTF-8: the flusher talks UTF-8 to it
# (client_encoding), and a User-Agent it cannot hold never fails a batch.

use strict;
use warnings;

use lib 't/lib';
use Presence::JWT;
use Presence::Nginx;
use Presence::PG qw(pg_query);
use Test::More;

my $dsn = $ENV{TEST_NGINX_PG_DSN}
    or plan skip_all => 'TEST_NGINX_PG_DSN is not set (run "make test")';

*wait_until = \&Presence::Nginx::wait_until;

# a second database in the private cluster, EUC_JP, with the module's SQL

my $db = 'presence_eucjp';
pg_query("DROP DATABASE IF EXISTS $db");
pg_query("CREATE DATABASE $db ENCODING 'EUC_JP' LC_COLLATE 'C' "
         . "LC_CTYPE 'C' TEMPLATE template0");

(my $jp = $dsn) =~ s/dbname=\S+/dbname=$db/;
$jp .= " dbname=$db" unless $jp =~ /dbname=/;

$ENV{PGCLIENTENCODING} = 'UTF8';

sub psql { my $sql = shift; my $out = `psql -XqAt -d '$jp' -c "$sql" 2>&1`;
           die "psql: $out" if $?; return $out }

for my $f (sort glob 'sql/*.sql') {
    my $out = `psql -XqAt -v ON_ERROR_STOP=1 -d '$jp' -f $f 2>&1`;
    die "$f: $out" if $?;
}
psql(q{INSERT INTO users (id, username) VALUES (1, 'ユーザー'), (2, 'two')});

my $n = Presence::Nginx->new(name => 'encoding', workers => 1, http => <<EOC);
    presence_zone zone=presence:4m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$jp";
    presence_flush_interval 200ms;
EOC
$n->start;

$n->get('/app/x', Presence::JWT::token(sub => 1),
        ua => "Mozilla/5.0 \xf0\x9f\x98\x80 caf\xc3\xa9 \xe6\x97\xa5");
$n->get('/app/x', Presence::JWT::token(sub => 2), ua => 'plain');

ok(wait_until(sub { psql('SELECT count(*) FROM user_sessions') == 2 }),
   'both sessions written, the one with an emoji too');
is(psql('SELECT user_agent FROM user_sessions WHERE user_id = 1'),
   "Mozilla/5.0 ? caf? ?\n", 'its User-Agent folded to ASCII');
unlike($n->log, qr/PostgreSQL: ERROR/, 'no statement refused');

ok(wait_until(sub {
       my (undef, $b) = $n->get('/api/v1/online/users',
                                Presence::JWT::token(sub => 2));
       $b =~ /"user_id":1,"username":"\Qユーザー\E"/ }),
   'profiles are read back as UTF-8');

$n->stop;
pg_query("DROP DATABASE IF EXISTS $db");

done_testing;
