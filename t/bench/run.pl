#!/usr/bin/perl
# make bench: the performance bar of SPEC section 7, measured side by side
# on this machine.  Pairs run interleaved (A B A B A B) and compare
# medians, because the machine is shared and noisy.  Writes
# build/bench/results.md and results.csv and prints the table.
#
# Needs: NGINX_BIN, SO, TEST_NGINX_PG_DSN (the private PostgreSQL).

use strict;
use warnings;

use lib 't/lib';
use Cwd qw(cwd);
use File::Path qw(make_path remove_tree);
use List::Util qw(sum);
use POSIX qw(floor);
use Presence::JWT;
use Presence::Nginx;
use Presence::PG qw(pg_query pg_value);
use Time::HiRes qw(sleep time);

my $secs = $ENV{BENCH_SECONDS} || 4;
my $reps = $ENV{BENCH_REPEATS} || 5;
my $dsn = $ENV{TEST_NGINX_PG_DSN} or die "TEST_NGINX_PG_DSN is not set\n";
my $out = cwd() . '/build/bench';

remove_tree($out);
make_path($out);

my (@rows, @csv);

sub note { print STDERR "bench: @_\n" }

# ---------------------------------------------------------------------
# tokens

sub tokens {
    my ($file, $from, $to) = @_;
    open my $fh, '>', "$out/$file" or die $!;
    for my $u ($from .. $to) {
        print $fh Presence::JWT::token(sub => $u, exp => time + 86400), "\n";
    }
    close $fh;
    return "$out/$file";
}

note('minting tokens');
my $t1k = tokens('1k.txt', 1, 1000);

# ---------------------------------------------------------------------
# nginx: a backend, tracked and untracked proxies, the API, same-size
# bodies; two workers

pg_query('TRUNCATE user_sessions, presence_peaks');
pg_query('DELETE FROM users');
pg_query(q{INSERT INTO users (id, username) SELECT g, 'u' || g
             FROM generate_series(1, 110000) g});

# what both nginx instances have: a backend, tracked and untracked proxies

my $upstream = <<'EOC';
    upstream backend {
        server 127.0.0.1:BACKEND;
        keepalive 64;
    }
EOC

my $proxies = <<'EOC';
        location /on/ {
            presence on;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location /off/ {
            presence off;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
EOC

my $n = Presence::Nginx->new(name => 'bench', workers => 2,
                             root => "$out/nginx", log_level => 'warn',
                             http => <<EOC, server => <<EOS);
    presence_zone zone=presence:64m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$dsn";
    presence_flush_interval 1s;
    limit_req_zone \$server_port zone=r1:1m rate=500r/s;
    limit_req_zone \$server_port zone=r2:1m rate=2000r/s;
    limit_req_zone \$server_port zone=r3:1m rate=8000r/s;
$upstream
EOC
$proxies
        location /rate1/ { limit_req zone=r1 burst=50 nodelay; presence on; proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
        location /rate2/ { limit_req zone=r2 burst=50 nodelay; presence on; proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
        location /rate3/ { limit_req zone=r3 burst=50 nodelay; presence on; proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
        location = /same/count { return 200 'COUNT_BODY'; }
        location = /same/stats { return 200 'STATS_BODY'; }
        location = /same/users { return 200 'USERS_BODY'; }
        location = /metrics { presence_metrics; }
EOS

$n->{http} =~ s/BACKEND/$n->{backend}/;
$n->start;

my $port = $n->port;
my $api = "http://127.0.0.1:$port/api/v1/online";
my $bearer = Presence::JWT::token(sub => 1, exp => time + 86400);

sub wrk {
    my ($url, %o) = @_;
    my $c = $o{c} // 32;
    my $d = $o{d} // $secs;
    my @cmd = ('wrk', '-t2', "-c$c", "-d${d}s", '--latency');
    push @cmd, '-s', 't/bench/tokens.lua' if $o{tokens};
    push @cmd, '-H', "Authorization: Bearer $bearer" if $o{auth};
    local $ENV{TOKENS} = $o{tokens} // '';
    my $res = `@{[ join ' ', map { "'$_'" } @cmd ]} '$url' 2>&1`;
    my ($rps) = $res =~ /Requests\/sec:\s+([\d.]+)/;
    my ($p99) = $res =~ /^\s+99%\s+([\d.]+\w+)/m;
    my ($errors) = $res =~ /Non-2xx or 3xx responses: (\d+)/;
    die "wrk failed on $url:\n$res" unless $rps && $rps > 0;
    return { rps => $rps, p99 => ms($p99), non2xx => $errors // 0 };
}

sub ms {
    my $v = shift // return 0;
    return $1 / 1000 if $v =~ /^([\d.]+)us$/;
    return $1 if $v =~ /^([\d.]+)ms$/;
    return $1 * 1000 if $v =~ /^([\d.]+)s$/;
    return 0;
}

sub median {
    my @s = sort { $a <=> $b } @_;
    return $s[$#s / 2] if @s % 2;
    return ($s[@s / 2 - 1] + $s[@s / 2]) / 2;
}

# A B A B ...: medians of each side
sub pair {
    my ($name, $a, $b, $bar) = @_;
    my (@ra, @rb, @pa, @pb);
    for (1 .. $reps) {
        my $x = $a->();
        my $y = $b->();
        push @ra, $x->{rps};
        push @pa, $x->{p99};
        push @rb, $y->{rps};
        push @pb, $y->{p99};
    }
    my ($ma, $mb) = (median(@ra), median(@rb));
    my $ratio = $ma / $mb;
    my $row = {
        name => $name, a => $ma, b => $mb, ratio => $ratio,
        p99a => median(@pa), p99b => median(@pb), bar => $bar,
    };
    $row->{ok} = $bar->[0] eq 'info' ? 1
               : $bar->[0] eq '>=' ? $ratio >= $bar->[1]
               : $ratio * $bar->[1] >= 1;
    push @rows, $row;
    note(sprintf '%s: %.0f vs %.0f req/s, ratio %.3f', $name, $ma, $mb,
         $ratio);
    return $row;
}

sub metric {
    my ($name, $labels) = @_;
    $labels = $labels ? ",$labels" : '';
    my (undef, $m) = $n->get('/metrics');
    my ($v) = $m =~ /^nginx_presence_\Q$name\E\{zone="presence"\Q$labels\E\} (\d+)/m;
    return $v // 0;
}

# the flusher has written all that changed: the ring empty and no row
# written for a second and a half

sub drained {
    my $deadline = time + 90;
    my $rows = -1;
    while (time < $deadline) {
        my $now = metric('flush_rows_total');
        last if $now == $rows && metric('ring_depth') == 0;
        $rows = $now;
        sleep 1.5;
    }
}


# same-size bodies for the API comparisons

sub body_of {
    my $path = shift;
    my (undef, $body) = $n->get($path, $bearer);
    return $body;
}

# "return 200" of a body of $len bytes: a configuration token holds at most
# 4 KiB, so long bodies are put together from several variables
sub same_body {
    my $len = shift;
    my ($conf, $vars, $i) = ('', '', 0);
    while ($len > 0) {
        my $k = $len > 3000 ? 3000 : $len;
        $conf .= "set \$b$i '" . ('x' x $k) . "'; ";
        $vars .= "\$b$i";
        $len -= $k;
        $i++;
    }
    return $conf . "return 200 \"$vars\";";
}

# a reload that must take: nginx -t, then each baseline serves its size
sub reload_checked {
    my ($node, %want) = @_;
    $node->write_conf;
    my $root = $node->root;
    my $t = `$ENV{TEST_NGINX_BINARY} -t -p $root/ -c conf/nginx.conf 2>&1`;
    die "bench: the configuration does not load:\n$t" if $?;
    $node->reload;
    my $deadline = time + 10;
    for my $path (sort keys %want) {
        while (length(body_of($path)) != $want{$path}) {
            die "bench: $path does not serve $want{$path} bytes after the "
                . "reload\n" if time > $deadline;
            sleep 0.2;
        }
    }
}

# warm up: 1000 users online, their tokens cached
wrk("http://127.0.0.1:$port/on/", tokens => $t1k);

my %same;
for my $e (qw(count stats)) {
    $same{$e} = length body_of("/api/v1/online/$e");
}

note('100 000 users for the users page');
my $t100k = tokens('100k.txt', 1, 100000);
wrk("http://127.0.0.1:$port/on/", tokens => $t100k, c => 64, d => 8);
my (undef, $page) = $n->get('/api/v1/online/users?limit=50', $bearer);
my ($total) = $page =~ /"total":(\d+)/;
note("users online: $total");
$same{users} = length $page;

# the same-size locations need their bodies: rewrite and reload, checked
$n->{server} =~ s/return 200 'COUNT_BODY';/same_body($same{count})/e;
$n->{server} =~ s/return 200 'STATS_BODY';/same_body($same{stats})/e;
$n->{server} =~ s/return 200 'USERS_BODY';/same_body($same{users})/e;
reload_checked($n, '/same/count' => $same{count},
               '/same/stats' => $same{stats}, '/same/users' => $same{users});

# steady state: the flusher (and PostgreSQL) done with the 100 000 users
drained();

# ---------------------------------------------------------------------
# 1. tracking overhead: nginx alone (no presence_postgres), then with the
# flusher writing to a PostgreSQL that shares these two cores

my $nodb = Presence::Nginx->new(name => 'bench_nodb', workers => 2,
                                root => "$out/nginx-nodb", log_level => 'warn',
                                http => <<EOC, server => <<EOS);
    presence_zone zone=presence:64m;
    presence_jwt_secret "$Presence::JWT::SECRET";
$upstream
EOC
$proxies
EOS
$nodb->{http} =~ s/BACKEND/$nodb->{backend}/;
$nodb->start;
my $port2 = $nodb->port;
wrk("http://127.0.0.1:$port2/on/", tokens => $t1k);

pair('proxied, presence on vs off (1 000 users)',
     sub { wrk("http://127.0.0.1:$port2/on/", tokens => $t1k) },
     sub { wrk("http://127.0.0.1:$port2/off/", tokens => $t1k) },
     ['>=', 0.97]);

$nodb->stop;

pair('the same, the flusher writing to PostgreSQL on the same cores',
     sub { wrk("http://127.0.0.1:$port/on/", tokens => $t1k) },
     sub { wrk("http://127.0.0.1:$port/off/", tokens => $t1k) },
     ['info']);

# 2. count and stats vs return 200 of the same size

pair("GET count vs return 200 ($same{count} B)",
     sub { wrk("$api/count", auth => 1) },
     sub { wrk("http://127.0.0.1:$port/same/count", auth => 1) },
     ['>=', 0.90]);

pair("GET stats vs return 200 ($same{stats} B)",
     sub { wrk("$api/stats", auth => 1) },
     sub { wrk("http://127.0.0.1:$port/same/stats", auth => 1) },
     ['>=', 0.90]);

# 3. users?limit=50 with 100 000 users online

pair("GET users?limit=50, $total users online, vs return 200 ($same{users} B)",
     sub { wrk("$api/users?limit=50", auth => 1) },
     sub { wrk("http://127.0.0.1:$port/same/users", auth => 1) },
     ['within', 2]);

# 3b. deep pages: users?offset=N, after a burst (100 000 logins in 8 s,
# ~12 500 a second: a page starts from a run of its second's index),
# then with 100 000 users online within 15 minutes, as a population is
# (seeded in PostgreSQL with their times, pulled by a cluster node)

pair("GET users?limit=50&offset=50000 vs offset=0, after a burst of $total logins",
     sub { wrk("$api/users?limit=50&offset=50000", auth => 1) },
     sub { wrk("$api/users?limit=50&offset=0", auth => 1) },
     ['>=', 0.5]);

note('100 000 users online within 15 minutes');

# the spread node must see these alone: the burst's rows (written by the
# node above) would be pulled too
pg_query('TRUNCATE user_sessions');
pg_query(q{INSERT INTO user_sessions (user_id, session_token, created_at,
               last_activity, is_active, node, updated_at)
           SELECT g, lpad(to_hex(g), 64, '0'),
                  (now() AT TIME ZONE 'UTC') - make_interval(secs => g * 0.008),
                  (now() AT TIME ZONE 'UTC') - make_interval(secs => g * 0.008),
                  true, 'seed', now() AT TIME ZONE 'UTC'
             FROM generate_series(1, 100000) g});

my $spread = Presence::Nginx->new(name => 'bench_spread', workers => 2,
                                  root => "$out/nginx-spread",
                                  log_level => 'notice',
                                  http => <<EOC, server => <<EOS);
    presence_zone zone=presence:64m;
    presence_jwt_secret "$Presence::JWT::SECRET";
    presence_postgres "$dsn";
    presence_flush_interval 1s;
    presence_cluster on;
    presence_node spread;
$upstream
EOC
$proxies
EOS
$spread->{http} =~ s/BACKEND/$spread->{backend}/;
$spread->start;
my $port3 = $spread->port;
my $api3 = "http://127.0.0.1:$port3/api/v1/online";

my $deadline = time + 60;
until ((($spread->get('/api/v1/online/count', $bearer))[1] // '')
       =~ /"online_count":(\d+)/ && $1 == 100000)
{
    die "bench: the seeded users were not pulled\n" if time > $deadline;
    sleep 1;
}

# the warm start loaded them: how long it took, from its notice

my ($warm_n, $warm_ms) = $spread->log
    =~ /warm start loaded (\d+) of \d+ sessions from PostgreSQL in (\d+) ms/
    or die "bench: no warm start notice\n";
note("warm start: $warm_n sessions in $warm_ms ms");

for my $offset (50000, 99950) {
    pair("GET users?limit=50&offset=$offset vs offset=0, 100 000 users online over 15 min",
         sub { wrk("$api3/users?limit=50&offset=$offset", auth => 1) },
         sub { wrk("$api3/users?limit=50&offset=0", auth => 1) },
         ['>=', 0.5]);
}

# tracked requests while a deep-page flood holds the lock, vs an offset-0
# flood: the flood runs alongside each tracked measurement

sub with_flood {
    my ($offset) = @_;
    my $pid = fork // die;
    if ($pid == 0) {
        open STDOUT, '>', '/dev/null';
        exec 'wrk', '-t1', '-c4', '-d' . ($secs + 1) . 's', '-H',
             "Authorization: Bearer $bearer",
             "$api3/users?limit=1&threshold_minutes=1440&offset=$offset";
    }
    my $r = wrk("http://127.0.0.1:$port3/on/", tokens => $t1k);
    waitpid $pid, 0;
    return $r;
}

wrk("http://127.0.0.1:$port3/on/", tokens => $t1k);

pair('tracked, a users?offset=99950 flood alongside vs an offset=0 flood',
     sub { with_flood(99950) },
     sub { with_flood(0) },
     ['>=', 0.9]);

$spread->stop;
pg_query(q{DELETE FROM user_sessions WHERE node = 'seed'});

# ---------------------------------------------------------------------
# 5. database writes at three request rates over the same 1 000 sessions

my @db;
for my $r ([1, 500], [2, 2000], [3, 8000]) {
    my ($i, $limit) = @$r;
    drained();
    my ($rows0, $st0, $req0, $t0) = (metric('flush_rows_total'),
                                     metric('flush_statements_total'),
                                     metric('requests_total', 'jwt="valid"'),
                                     time);
    my $w = wrk("http://127.0.0.1:$port/rate$i/", tokens => $t1k);
    my $tracked = (metric('requests_total', 'jwt="valid"') - $req0) / $secs;
    sleep 1.2;
    my $dt = time - $t0;
    push @db, {
        rate => $tracked,
        rows => (metric('flush_rows_total') - $rows0) / $dt,
        statements => (metric('flush_statements_total') - $st0) / $dt,
    };
    note(sprintf 'tracked %.0f req/s: %.0f rows/s, %.2f statements/s',
         $tracked, $db[-1]{rows}, $db[-1]{statements});
}

# database load per node by active sessions (all of them active)

my @load;
for my $k ([1000, $t1k], [10000, tokens('10k.txt', 1, 10000)],
           [100000, $t100k])
{
    my ($count, $file) = @$k;
    drained();
    my ($rows0, $st0, $t0) = (metric('flush_rows_total'),
                              metric('flush_statements_total'), time);
    my $w = wrk("http://127.0.0.1:$port/on/", tokens => $file);
    sleep 1.2;
    my $dt = time - $t0;
    push @load, {
        sessions => $count, rps => $w->{rps},
        rows => (metric('flush_rows_total') - $rows0) / $dt,
        statements => (metric('flush_statements_total') - $st0) / $dt,
    };
}

# 6. zone bytes per session

my $cap = metric('sessions_capacity');
my $size = metric('zone_size_bytes');
my $held = metric('sessions');

$n->stop;

# 4. JWT verification per second

note('JWT verification');
my $jwt = `NGINX_BIN=$ENV{NGINX_BIN} SO=$ENV{SO} BENCH_SECONDS=2 t/bench/jwt.sh 2>&1`;

# 7. privacy: status with every privacy directive on vs none

note('privacy');
my $privacy = `perl t/bench/privacy.pl`;
die "bench: the privacy bench failed\n" if $?;

# 8. GET stream: 10 000 streams

note('GET stream');
my $stream = `perl t/bench/stream.pl`;
die "bench: the stream bench failed\n" if $?;

# ---------------------------------------------------------------------
# the report

my $cpu = `grep -m1 'model name' /proc/cpuinfo`;
$cpu =~ s/.*:\s*//;
chomp $cpu;
my $cores = `nproc`;
chomp $cores;

my $md = "Machine: $cpu, $cores cores, nginx with 2 workers, wrk -t2 "
       . "-c32 on loopback, ${secs} s runs, medians of $reps interleaved "
       . "pairs.\n\n"
       . "| measurement | A, req/s | B, req/s | A/B | p99 A | p99 B | bar | met |\n"
       . "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |\n";

for my $r (@rows) {
    my $bar = $r->{bar}[0] eq 'info' ? '—'
            : $r->{bar}[0] eq '>=' ? "≥ $r->{bar}[1]" : "within $r->{bar}[1]×";
    $md .= sprintf "| %s | %.0f | %.0f | %.3f | %.2f ms | %.2f ms | %s | %s |\n",
        $r->{name}, $r->{a}, $r->{b}, $r->{ratio}, $r->{p99a}, $r->{p99b},
        $bar, $r->{bar}[0] eq 'info' ? '—' : $r->{ok} ? 'yes' : '**no**';
    push @csv, join ',', map { qq("$_") } $r->{name}, $r->{a}, $r->{b},
                                           $r->{ratio}, $r->{p99a},
                                           $r->{p99b};
}

$md .= $privacy;

$md .= sprintf "\nWarm start: %d active sessions loaded from PostgreSQL "
             . "into an empty zone in %d ms (bar: 100 000 in 3 000 ms, "
             . "%s).\n", $warm_n, $warm_ms,
              $warm_n == 100000 && $warm_ms <= 3000 ? 'met' : '**not met**';

$md .= "\nDatabase writes over the same 1 000 sessions (1 s flushes):\n\n"
     . "| tracked req/s | rows/s | statements/s |\n| ---: | ---: | ---: |\n";
$md .= sprintf "| %.0f | %.0f | %.2f |\n", @$_{qw(rate rows statements)}
    for @db;

$md .= "\nDatabase load per node, every session active (1 s flushes):\n\n"
     . "| active sessions | req/s | rows/s | statements/s |\n"
     . "| ---: | ---: | ---: | ---: |\n";
$md .= sprintf "| %d | %.0f | %.0f | %.2f |\n",
    @$_{qw(sessions rps rows statements)} for @load;

$md .= sprintf "\nZone: %d bytes hold %d sessions: %.1f bytes per "
             . "session (%d held after the 100 000-user run).\n",
              $size, $cap, $size / $cap, $held;

$md .= "\nJWT verification (t/bench/jwt.sh):\n\n$jwt";

$md .= "\n$stream";

open my $fh, '>', "$out/results.md" or die $!;
print $fh $md;
close $fh;

open $fh, '>', "$out/results.csv" or die $!;
print $fh "measurement,a_rps,b_rps,ratio,p99_a_ms,p99_b_ms\n",
          map { "$_\n" } @csv;
close $fh;

print $md;
