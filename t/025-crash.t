# A worker that dies while it holds the zone's lock in the middle of an
# update (gdb stops it there, then kills it): the master releases the
# lock, the next worker finds the writer's mark, resets the zone with an
# alert, and nginx keeps serving.

use strict;
use warnings;

use lib 't/lib';
use Presence::JWT;
use Presence::Nginx;
use Test::More;
use Time::HiRes qw(sleep);

plan skip_all => 'gdb is not installed' unless `which gdb` =~ /gdb/;

my $n = Presence::Nginx->new(name => 'crash', http => <<EOC);
    presence_zone zone=presence:2m;
    presence_jwt_secret "$Presence::JWT::SECRET";
EOC
$n->start;

my $t1 = Presence::JWT::token(sub => 1);
my $t2 = Presence::JWT::token(sub => 2);

my ($status, $body) = $n->get('/app/a', $t2);
is($status, 200, 'a first user is tracked');

my ($worker) = $n->workers;
ok($worker, "worker $worker");

my $gdb = fork // die;
if ($gdb == 0) {
    open STDOUT, '>', $n->root . '/gdb.log';
    open STDERR, '>&', \*STDOUT;
    exec 'gdb', '-p', $worker, '-batch', '-ex', 'set pagination off',
         '-ex', 'break ngx_http_presence_ring_add', '-ex', 'continue',
         '-ex', 'kill';
    exit 127;
}

# gdb attaches and sets its breakpoint before this request arrives
for (1 .. 100) {
    last if -s $n->root . '/gdb.log'
            && `cat @{[ $n->root ]}/gdb.log` =~ /Breakpoint 1 at/;
    sleep 0.1;
}

($status) = $n->get('/app/b', $t1, timeout => 10);
isnt($status, 200, 'the request in the killed worker gets no answer');

waitpid $gdb, 0;
ok(!Presence::Nginx::alive($worker), 'the worker died holding the lock');
ok($n->wait_workers(1), 'the master started another worker');

($status, $body) = $n->get('/app/c', $t1);
is($status, 200, 'the next request is served');

($status, $body) = $n->get('/api/v1/online/count', $t1);
is($status, 200, 'the API answers');
like($body, qr/"online_count":1,/, 'from a zone started afresh');

my $log = $n->log;
like($log, qr/\[alert\].*shared memory zone "presence" was locked by $worker/,
     'the master released the lock');
like($log, qr/\[alert\].*presence zone "presence": process $worker died while updating it, starting the zone afresh/,
     'the zone was reset with an alert');

$n->stop;
done_testing();
