# The README's promise: "make run" starts the demo and prints curl lines
# that work; "make stop" stops exactly what it started.  And the example
# configuration passes nginx -t.

use strict;
use warnings;

use lib 't/lib';
use Presence::Nginx;
use Test::More;
use Time::HiRes qw(sleep time);

$ENV{PRESENCE_DEMO_PORT} = Presence::Nginx::free_port();
$ENV{PRESENCE_DEMO_BACKEND_PORT} = Presence::Nginx::free_port();

my $out = `make -s run 2>&1`;
is($?, 0, 'make run succeeds') or diag($out);

my @curls = grep { /^curl / } split /\n/, $out;
my ($traffic) = grep { /^for u in / } split /\n/, $out;
is(scalar @curls, 8, 'it prints eight curl lines');
ok($traffic, 'and a line that makes traffic');
like($out, qr/^TOKEN=[\w-]+\.[\w-]+\.[\w-]+$/m, 'and a token');

system('bash', '-c', $traffic) == 0 or fail('the traffic line runs');

# lists are in order to the second: a person reads before the next curl
sleep 1.1;

sub run_curl {
    my $line = shift;
    my $res = `$line`;
    return $res;
}

my %want = (
    'api/v1/profile' => qr/^\{"backend":"demo","path":"\/api\/v1\/profile","user_id":"1"\}$/,
    'count?' => qr/^\{"online_count":29,"threshold_minutes":15,/,
    'users?' => qr/^\{"online_users":\[\{"user_id":1,"username":"alice","display_name":"Alice Adams","avatar_url":"https:\/\/i\.pravatar\.cc\/150\?u=alice",.*"count":5,"total":29,/,
    'online/stats' => qr/"online_users":29,.*"peak_users_today":29,"warm":\{"done":true,"loaded":\d+\},"status":"success"\}$/,
    'online/sessions' => qr/^\{"user_id":1,"sessions":\[\{.*"is_current":true\}.*\],"count":\d+,/,
    'status?' => qr/^\{"statuses":\{"1":\{"status":"online","last_seen":"[^"]+"\},"2":\{"status":"online"/,
    'online/cleanup' => qr/^\{"cleaned_sessions":0,"timestamp":"[^"]+","status":"success"\}$/,
    '/metrics' => qr/^nginx_presence_online_users\{zone="presence",threshold="online"\} 29$/m,
);

for my $line (@curls) {
    my ($key) = grep { index($line, $_) >= 0 } sort keys %want;
    ok($key, "a known curl line: " . substr($line, 0, 60)) or next;

    my $res = '';
    my $deadline = time + 6;     # profiles arrive within a flush or two
    while (time < $deadline) {
        $res = run_curl($line);
        last if $res =~ $want{$key};
        sleep 0.3;
    }
    like($res, $want{$key}, "$key answers as expected");
}

my $pid = `cat build/demo/logs/nginx.pid`;
chomp $pid;
ok($pid && kill(0, $pid), "the demo nginx runs ($pid)");

$out = `make -s stop 2>&1`;
is($?, 0, 'make stop succeeds') or diag($out);
sleep 0.3;
ok(!Presence::Nginx::alive($pid), 'the demo nginx is gone');
ok(!-e 'build/pg-demo/data/postmaster.pid', 'its PostgreSQL is stopped');
my @left = grep { /build\/demo|pg-demo/ }
           map { my $c = `tr '\\0' ' ' < /proc/$_/cmdline 2>/dev/null`; $c }
           map { m{/proc/(\d+)} } glob '/proc/[0-9]*';
is_deeply(\@left, [], 'nothing of the demo is left running');

# the example configuration, as shipped, with the module built here

my $so = $ENV{TEST_NGINX_LOAD_MODULES};
use Cwd qw(cwd);
my $dir = cwd() . '/t/servroot_example';
system("rm -rf $dir && mkdir -p $dir/logs");
open my $in, '<', 'conf/nginx.conf' or die $!;
open my $o, '>', "$dir/nginx.conf" or die $!;
while (<$in>) {
    s{^load_module \S+;}{load_module $so;};
    print $o $_;
}
close $o;
local $ENV{SECRET_KEY} = 'a-secret-for-nginx-t';
my $t = `$ENV{TEST_NGINX_BINARY} -t -p $dir/ -c $dir/nginx.conf -e $dir/logs/error.log 2>&1`;
is($?, 0, 'nginx -t passes on conf/nginx.conf') or diag($t);

done_testing();
