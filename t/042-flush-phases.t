# The flusher as a state machine: each transition is a debug line, in the
# documented order, and an error line names the phase and the statement it
# happened in.

use strict;
use warnings;

use lib 't/lib';
use Presence::JWT;
use Presence::Nginx;
use Presence::PG qw(pg_query pg_value pg_lock);
use Test::More;
use Time::HiRes qw(sleep time);

my $dsn = $ENV{TEST_NGINX_PG_DSN}
    or plan skip_all => 'TEST_NGINX_PG_DSN is not set (run "make test")';

*wait_until = \&Presence::Nginx::wait_until;

sub node {
    my ($conninfo, $extra) = @_;
    my $n = Presence::Nginx->new(name => 'phases', workers => 1,
                                 log_level => 'debug', http => <<EOC);
    presence_zone zone=presence:4m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$conninfo";
    presence_flush_interval 200ms;
    ${\ ($extra // '')}
EOC
    $n->start;
    return $n;
}

sub transitions {
    my $n = shift;
    return [ $n->log =~ /presence flusher: ([a-z ]+ -> [a-z ]+)$/mg ];
}

sub tok { Presence::JWT::token(sub => shift) }

pg_query('TRUNCATE user_sessions, presence_peaks');
pg_query('DELETE FROM users');
pg_query(q{INSERT INTO users (id, username) VALUES (1, 'one'), (2, 'two')});

# a new connection: connect, the users table's columns, today's peaks,
# the warm start, a batch, profiles, idle

my $n = node($dsn);
$n->get('/app/x', tok(1));

ok(wait_until(sub { pg_value('SELECT count(*) FROM user_sessions') == 1 }),
   'the session reaches PostgreSQL');
ok(wait_until(sub { grep { $_ eq 'daily -> idle' } @{ transitions($n) } }),
   'a cycle ends idle');

my $seen = join ', ', @{ transitions($n) };
like($seen, qr/^idle -> connect, connect -> schema, schema -> peaks, peaks -> warm, warm -> upsert, /,
     'connected: the schema, peaks and the warm start first, then the batch');
like($seen, qr/upsert -> pull, pull -> pull peaks, pull peaks -> profiles, profiles -> daily, daily -> idle/,
     'without presence_cluster the pull steps pass on at once');

my ($from, $broken) = ('idle', '');
for (@{ transitions($n) }) {
    my ($a, $b) = split / -> /;
    $broken ||= "$a -> $b after $from" if $a ne $from;
    $from = $b;
}
is($broken, '', 'each transition starts where the last one ended');

# the next interval starts from idle with the batch

ok(wait_until(sub { (join ', ', @{ transitions($n) }) =~ /daily -> idle, idle -> warm, warm -> upsert/ }),
   'each interval: idle -> warm (over: it passes on) -> upsert');

# a statement PostgreSQL refuses: the error line names phase and statement

pg_query('ALTER TABLE user_sessions RENAME COLUMN device_info TO device_info_x');
END { local $?; eval { pg_query('ALTER TABLE user_sessions RENAME COLUMN device_info_x TO device_info') } }

$n->get('/app/x', tok(2));

my $line;
ok(wait_until(sub {
        ($line) = $n->log =~ /^(.*PostgreSQL: ERROR: .*device_info.*)$/m;
        $line }),
   'the refused statement is logged');
like($line // '', qr/, flusher phase "upsert", statement "upsert", retrying in \d+ ms$/,
     'with the phase and the statement it happened in, and the backoff');

# a refused statement waits as a failed connection does: 0.5 s, 1 s, 2 s
# ... not every 200 ms interval (15 tries in 3 s)

sleep 3;
my @refused = $n->log =~ /^(.*PostgreSQL: ERROR: .*device_info.*)$/mg;
ok(@refused >= 2 && @refused <= 4,
   scalar(@refused) . ' refusals in 3 s: the statement backs off');

pg_query('ALTER TABLE user_sessions RENAME COLUMN device_info_x TO device_info');

ok(wait_until(sub { pg_value(q{SELECT count(*) FROM user_sessions
                               WHERE user_id = 2}) == 1 }),
   'once the table is fixed the batch is written, nothing lost');

$n->stop;

# a connection that fails: the line says the flusher was connecting

my $port = Presence::Nginx::free_port();
$n = node("host=127.0.0.1 port=$port dbname=presence user=nobody");

ok(wait_until(sub { $n->log =~ /PostgreSQL connection failed: / }),
   'the failed connection is logged');
like($n->log, qr/PostgreSQL connection failed: [^\n]*, flusher phase "connect", retrying in \d+ ms$/m,
     'in phase connect, with no statement');

$n->stop;

# nginx -s quit while a statement waits on a lock: when it is done, the
# last batch still goes, with what came after it

pg_query('TRUNCATE user_sessions');
$n = node($dsn);
$n->get('/app/x', tok(1));
ok(wait_until(sub { pg_value('SELECT count(*) FROM user_sessions') == 1 }),
   'user 1 written');

my $locker = pg_lock('user_sessions', 2);
sleep 0.3;

$n->get('/app/x', tok(1));
ok(wait_until(sub { pg_value(q{SELECT count(*) FROM pg_stat_activity
                               WHERE application_name =
                                     'ngx_http_presence_module'
                                 AND wait_event_type = 'Lock'}) >= 1 }, 5),
   'a batch waits on the lock');

$n->get('/app/x', tok(2));
$n->stop('QUIT');
waitpid $locker, 0;

is(pg_value('SELECT count(*) FROM user_sessions WHERE user_id = 2'), 1,
   'the session that came while it waited is written at exit');
unlike($n->log, qr/changed sessions not written at exit/,
       'nothing is left behind');

# presence_cluster: the pull and the cluster's peaks are statements

$n = node($dsn, "presence_cluster on;\n    presence_node phases;");
$n->get('/app/x', tok(1));

ok(wait_until(sub { grep { $_ eq 'pull peaks -> profiles' } @{ transitions($n) } }),
   'a cluster cycle completes');
like(join(', ', @{ transitions($n) }),
     qr/upsert -> pull, pull -> pull peaks, pull peaks -> profiles/,
     'upsert, pull, the cluster\'s peaks, profiles');

$n->stop;

done_testing;
