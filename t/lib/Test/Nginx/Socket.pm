package Test::Nginx::Socket;

# A small implementation of Test::Nginx::Socket's data-driven format, on
# Debian's libtest-base-perl, written for this project (Test::Nginx is not
# packaged for Debian).  The same t/*.t files run under the real
# Test::Nginx; README.md lists what this subset supports and where it
# differs.

use strict;
use warnings;

use Test::Base -base;

use Cwd qw(cwd abs_path);
use Errno qw(EINTR EAGAIN);
use File::Path qw(make_path remove_tree);
use IO::Select;
use IO::Socket::INET;
use List::Util qw(shuffle);
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

our @EXPORT = qw(
    run_tests repeat_each no_shuffle workers master_on master_off
    log_level no_root_location env_to_nginx add_block_preprocessor
    check_accum_error_log use_hup worker_connections no_long_string
    bail_out html_dir server_root server_port
);

my $Cwd = cwd();

our $NginxBinary = $ENV{TEST_NGINX_BINARY} || 'nginx';
our $ServerPort = $ENV{TEST_NGINX_PORT} || $ENV{TEST_NGINX_SERVER_PORT}
                  || 1984;
our $ServRoot = $ENV{TEST_NGINX_SERVROOT} || "$Cwd/t/servroot";
our $LogLevel = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
our $Timeout = $ENV{TEST_NGINX_TIMEOUT} || 3;
our $Sleep = $ENV{TEST_NGINX_SLEEP} || 0.015;
our $Workers = 1;
our $WorkerConnections = 64;
our $MasterProcess = $ENV{TEST_NGINX_MASTER_PROCESS} || 'off';
our $UseHup = $ENV{TEST_NGINX_USE_HUP} || 0;
our $NoShuffle = $ENV{TEST_NGINX_NO_SHUFFLE} || 0;
our $NoClean = $ENV{TEST_NGINX_NO_CLEAN} || 0;
our $ForceRestart = $ENV{TEST_NGINX_FORCE_RESTART_ON_TEST} // 1;
our $RepeatEach = 1;
our $NoRootLocation = 0;
our $AccumErrorLog = 0;
our @EnvToNginx;
our @BlockPreprocessors;

if ($ENV{TEST_NGINX_RANDOMIZE}) {
    $ServerPort = free_port();
    $ServRoot = "$Cwd/t/servroot_$ServerPort";
}

$ENV{TEST_NGINX_SERVER_PORT} = $ServerPort;
$ENV{TEST_NGINX_SERVER_ROOT} = $ServRoot;

my @KnownSections = qw(
    config http_config main_config post_main_config
    request raw_request more_headers pipelined_requests
    error_code error_code_like
    response_body response_body_like response_body_unlike
    response_headers response_headers_like
    error_log no_error_log grep_error_log grep_error_log_out
    timeout abort wait init skip_eval must_die suppress_stderr
    user_files log_level no_check_leak reload_fails
    ONLY SKIP LAST
);

my %Known = map { $_ => 1 } @KnownSections;

my $RunningPid;
my $RunningConfig = '';
my $ConfigVersion = 0;
my $ErrLogPos = 0;

# ---------------------------------------------------------------------
# the preamble functions

sub repeat_each {
    $RepeatEach = shift if @_;
    return $RepeatEach;
}

sub no_shuffle { $NoShuffle = 1 }
sub workers { $Workers = shift }
sub master_on { $MasterProcess = 'on' }
sub master_off { $MasterProcess = 'off' }
sub log_level { $LogLevel = shift }
sub no_root_location { $NoRootLocation = 1 }
sub env_to_nginx { push @EnvToNginx, @_ }
sub add_block_preprocessor { push @BlockPreprocessors, shift }
sub check_accum_error_log { $AccumErrorLog = 1 }
sub use_hup { $UseHup = 1 }
sub worker_connections { $WorkerConnections = shift }
sub no_long_string { }
sub bail_out { Test::More::BAIL_OUT(@_) }
sub html_dir { "$ServRoot/html" }
sub server_root { $ServRoot }
sub server_port { $ServerPort }

# ---------------------------------------------------------------------
# the run

sub run_tests {
    my @blocks = Test::Base::blocks();

    @blocks = shuffle(@blocks) unless $NoShuffle;

    for my $block (@blocks) {
        $_->($block) for @BlockPreprocessors;
        check_sections($block);
        run_block($block);
    }

    stop_nginx() unless $NoClean;

    Test::More::done_testing() unless Test::More->builder->has_plan;
}

sub check_sections {
    my $block = shift;

    for my $name (@{ $block->{_section_order}[0] || [] }) {
        next if $Known{$name};
        bail_out("$block->{name}: unknown section \"--- $name\"");
    }
}

sub free_port {
    my $sock = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                     LocalPort => 0, Proto => 'tcp',
                                     ReuseAddr => 1)
        or die "cannot find a free port: $!\n";
    my $port = $sock->sockport;
    close $sock;
    return $port;
}

# $TEST_NGINX_FOO from the environment, $TEST_NGINX_RAND_PORT_n free ports

sub expand_env {
    my ($text, $ports) = @_;

    return $text unless defined $text && !ref $text;

    $text =~ s{\$(TEST_NGINX_[A-Z0-9_]+)}{
        my $name = $1;
        if ($name =~ /^TEST_NGINX_RAND_PORT_\d+$/) {
            $ports->{$name} //= free_port();
        } elsif (defined $ENV{$name}) {
            $ENV{$name};
        } else {
            bail_out("environment variable \$$name is used but not set");
        }
    }ge;

    return $text;
}

sub block_name {
    my $block = shift;
    return "TEST " . $block->seq_num . ": " . $block->name;
}

# a section's value in scalar context; undef when the block lacks it

sub sec {
    my ($block, $name) = @_;
    return undef unless $block->can($name);
    return scalar $block->$name;
}

sub is_eval {
    my ($block, $name) = @_;
    my $map = $block->{_section_map}[0] || {};
    return ($map->{$name}{filters} // '') =~ /\beval\b/;
}

sub run_block {
    my $block = shift;
    my $name = block_name($block);
    my %ports;

    if (defined sec($block, "skip_eval")) {
        my ($n, $expr) = sec($block, "skip_eval") =~ /^\s*(\d+)\s*:(.*)$/s
            or bail_out("$name: bad skip_eval");
        my $skip = eval $expr;
        bail_out("$name: skip_eval: $@") if $@;
        if ($skip) {
          SKIP: { Test::More::skip("$name - skip_eval", $n) }
            return;
        }
    }

    my $conf = write_config($block, \%ports);

    if (defined sec($block, "must_die")) {
        run_must_die($block, $conf);
        return;
    }

    if (defined sec($block, "init")) {
        eval sec($block, "init");
        bail_out("$name: init: $@") if $@;
    }

    start_or_reload($block, $conf);

    for my $rep (1 .. $RepeatEach) {
        my $rname = $RepeatEach > 1 ? "$name (repeat $rep)" : $name;
        run_requests($block, $rname, \%ports);
    }
}

# ---------------------------------------------------------------------
# nginx.conf

sub write_config {
    my ($block, $ports) = @_;

    my $main = expand_env(sec($block, "main_config"), $ports) // '';
    my $http = expand_env(sec($block, "http_config"), $ports) // '';
    my $config = expand_env(sec($block, "config"), $ports) // '';
    my $post = expand_env(sec($block, "post_main_config"), $ports) // '';
    my $level = sec($block, "log_level") // $LogLevel;
    my $master = $UseHup ? 'on' : $MasterProcess;

    my $conf = "";

    for my $mod (split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '') {
        $conf .= "load_module $mod;\n";
    }

    $conf .= "user root;\n" if $> == 0 && $master eq 'on';
    $conf .= "worker_processes  $Workers;\n"
           . "daemon on;\n"
           . "master_process $master;\n"
           . "error_log logs/error.log $level;\n"
           . "pid       logs/nginx.pid;\n";

    for my $env (qw(ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS LD_PRELOAD
                    LD_LIBRARY_PATH), @EnvToNginx)
    {
        $conf .= "env $env;\n";
    }

    my $root = $NoRootLocation ? ''
             : "        location / {\n"
             . "            root html;\n"
             . "            index index.html index.htm;\n"
             . "        }\n";

    my $hup = !$UseHup ? ''
            : "    server {\n"
            . "        listen $ServerPort;\n"
            . "        server_name 'Test-Nginx';\n"
            . "        location = /ver {\n"
            . "            return 200 'config ver \$CONFIG_VERSION';\n"
            . "        }\n"
            . "    }\n";

    $conf .= "$main\n"
           . "http {\n"
           . "    access_log logs/access.log;\n"
           . "    client_body_temp_path $ServRoot/client_body_temp;\n"
           . "    proxy_temp_path $ServRoot/proxy_temp;\n"
           . "    fastcgi_temp_path $ServRoot/fastcgi_temp;\n"
           . "    uwsgi_temp_path $ServRoot/uwsgi_temp;\n"
           . "    scgi_temp_path $ServRoot/scgi_temp;\n"
           . "    default_type text/plain;\n"
           . "    keepalive_timeout  68000ms;\n"
           . "$http\n"
           . "    server {\n"
           . "        listen $ServerPort;\n"
           . "        server_name 'localhost';\n"
           . "        client_max_body_size 30M;\n"
           . "$config\n"
           . $root
           . "    }\n"
           . $hup
           . "}\n"
           . "$post\n"
           . "events {\n"
           . "    accept_mutex off;\n"
           . "    worker_connections $WorkerConnections;\n"
           . "}\n";

    return $conf;
}

sub prepare_servroot {
    my $block = shift;

    remove_tree($ServRoot);
    make_path("$ServRoot/conf", "$ServRoot/logs", "$ServRoot/html");

    write_file("$ServRoot/html/index.html", "It works!");

    my $files = sec($block, "user_files");
    return unless defined $files;

    if (ref $files eq 'ARRAY') {
        for my $f (@$files) {
            my ($path, $body) = @$f;
            write_file("$ServRoot/html/$path", $body);
        }
        return;
    }

    my @parts = split /^>>> (\S+)\n/m, $files;
    shift @parts;
    while (my ($path, $body) = splice @parts, 0, 2) {
        write_file("$ServRoot/html/$path", $body);
    }
}

sub write_file {
    my ($path, $body) = @_;
    (my $dir = $path) =~ s{/[^/]*$}{};
    make_path($dir);
    open my $fh, '>', $path or bail_out("cannot write $path: $!");
    print $fh $body;
    close $fh;
}

sub write_conf_file {
    my $conf = shift;
    $ConfigVersion++;
    (my $text = $conf) =~ s/\$CONFIG_VERSION/$ConfigVersion/g;
    write_file("$ServRoot/conf/nginx.conf", $text);
}

# ---------------------------------------------------------------------
# nginx processes

sub nginx_cmd {
    return ($NginxBinary, '-p', "$ServRoot/", '-c', 'conf/nginx.conf',
            '-e', "$ServRoot/logs/error.log");
}

sub run_nginx {
    my $quiet = shift;

    my $pid = fork // bail_out("fork: $!");
    if ($pid == 0) {
        if ($quiet) {
            open STDERR, '>', '/dev/null';
        }
        exec nginx_cmd() or exit 127;
    }
    waitpid $pid, 0;
    return $? >> 8;
}

sub read_pid {
    open my $fh, '<', "$ServRoot/logs/nginx.pid" or return undef;
    my $pid = <$fh>;
    close $fh;
    return undef unless defined $pid && $pid =~ /^(\d+)/;
    return $1;
}

sub start_nginx {
    my ($block, $conf) = @_;

    prepare_servroot($block);
    write_conf_file($conf);
    $ErrLogPos = 0;

    my $deadline = time + 30;
    my $delay = 0.1;

    for (;;) {
        my $code = run_nginx(0);
        last if $code == 0;
        if (time > $deadline || !addr_in_use()) {
            bail_out(block_name($block) . ": cannot start nginx "
                     . "(exit code $code), see $ServRoot/logs/error.log");
        }
        sleep $delay;
        $delay *= 2;
    }

    for (1 .. 300) {
        $RunningPid = read_pid();
        last if $RunningPid && wait_port(0);
        sleep 0.01;
    }

    bail_out(block_name($block) . ": nginx did not start")
        unless $RunningPid;

    wait_port(3) or bail_out(block_name($block)
                             . ": nginx does not accept connections");

    $RunningConfig = $conf;
}

sub addr_in_use {
    my $log = slurp("$ServRoot/logs/error.log") // '';
    return $log =~ /Address already in use/;
}

sub wait_port {
    my $secs = shift;
    my $deadline = time + $secs;
    for (;;) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $ServerPort,
                                      Proto => 'tcp');
        if ($s) {
            close $s;
            return 1;
        }
        return 0 if time >= $deadline;
        sleep 0.01;
    }
}

# a daemon is reparented to whatever reaps orphans here, possibly slowly:
# a zombie counts as gone

sub alive {
    my $pid = shift;
    return 0 unless $pid && kill 0, $pid;
    my $stat = slurp("/proc/$pid/stat") // return 1;
    return $stat !~ /^\d+ \(.*\) [ZX]/s;
}

sub stop_nginx {
    my $pid = $RunningPid // read_pid();
    $RunningPid = undef;
    $RunningConfig = '';

    return unless alive($pid);

    kill 'QUIT', $pid;

    my $deadline = time + $Timeout;
    while (time < $deadline) {
        return unless alive($pid);
        sleep 0.01;
    }

    Test::More::diag("nginx $pid did not stop in $Timeout s, killing it");
    kill 'KILL', -$pid;
    kill 'KILL', $pid;
    sleep 0.05;
}

sub start_or_reload {
    my ($block, $conf) = @_;

    if ($UseHup && alive($RunningPid)) {
        $ErrLogPos = -s "$ServRoot/logs/error.log" // 0
            unless $AccumErrorLog;
        my @old = children($RunningPid);
        write_conf_file($conf);
        kill 'HUP', $RunningPid;
        wait_config_version($block);
        wait_gone(@old);
        $RunningConfig = $conf;
        return;
    }

    if ($RunningPid && !$ForceRestart && $conf eq $RunningConfig) {
        return;
    }

    stop_nginx();
    start_nginx($block, $conf);
}

# the worker processes of a master

sub children {
    my $master = shift;
    my @pids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        my $line = slurp($stat) // next;
        push @pids, $1 if $line =~ /^(\d+) \(.*\) \S (\d+)/s
                          && $2 == $master;
    }
    return @pids;
}

# old workers may still accept a connection until they exit

sub wait_gone {
    my @pids = @_;
    my $deadline = time + 5;
    while (time < $deadline) {
        return unless grep { alive($_) } @pids;
        sleep 0.01;
    }
}

sub wait_config_version {
    my $block = shift;
    my $want = "config ver $ConfigVersion";

    my $deadline = time + 10;
    while (time < $deadline) {
        my ($raw) = send_and_read(
            "GET /ver HTTP/1.0\r\nHost: Test-Nginx\r\n\r\n", 1);
        return 1 if defined $raw && $raw =~ /\Q$want\E$/;
        sleep 0.02;
    }

    return 1 if defined sec($block, "reload_fails");
    bail_out(block_name($block) . ": nginx did not reload (no \"$want\")");
}

sub run_must_die {
    my ($block, $conf) = @_;
    my $name = block_name($block);

    stop_nginx();
    prepare_servroot($block);
    write_conf_file($conf);
    $ErrLogPos = 0;

    my $code = run_nginx(defined sec($block, "suppress_stderr"));
    my $want = sec($block, "must_die");

    if ($code == 0) {
        Test::More::fail("$name - nginx must die but started");
        stop_nginx();
    } elsif ($want =~ /^\s*(\d+)\s*$/) {
        Test::More::is($code, $1, "$name - nginx died with exit code $1");
    } else {
        Test::More::pass("$name - nginx died (exit code $code)");
    }

    check_error_log($block, $name, 0);
}

# ---------------------------------------------------------------------
# requests

sub as_list {
    my $v = shift;
    return () unless defined $v;
    return ref $v eq 'ARRAY' ? @$v : ($v);
}

sub pick {
    my ($v, $i) = @_;
    return undef unless defined $v;
    return $v unless ref $v eq 'ARRAY';
    return $v->[$i];
}

sub build_request {
    my ($req, $more, $keepalive) = @_;

    return $req if ref $req;

    $req =~ s/^(?:\s*#[^\n]*\n)+//;
    my ($line, $body) = split /\n/, $req, 2;
    $line =~ s/^\s+//;
    $line =~ s/\s+$//;
    my ($meth, $uri, $ver) = split /\s+/, $line;
    $meth ||= 'GET';
    $uri //= '/';
    $ver //= 'HTTP/1.1';

    $more //= '';
    $more =~ s/\r?\n/\r\n/g;
    $more .= "\r\n" if length $more && $more !~ /\r\n$/;

    my $head = "$meth $uri $ver\r\n";
    $head .= "Host: localhost\r\n" unless $more =~ /^Host\s*:/im;
    $head .= "Connection: " . ($keepalive ? 'keep-alive' : 'close') . "\r\n"
        unless $more =~ /^Connection\s*:/im;
    $head .= $more;

    if (defined $body) {
        $body =~ s/^\s+//;
        $body =~ s/\s+$//;
        $head .= "Content-Length: " . length($body) . "\r\n"
            unless $more =~ /^Content-Length\s*:/im;
    } else {
        $body = '';
    }

    return $head . "\r\n" . $body;
}

# a request is a string, or an array of packets: strings or
# { value => ..., delay_before => secs, delay_after => secs }

sub send_and_read {
    my ($req, $timeout) = @_;

    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $ServerPort,
                                     Proto => 'tcp')
        or return (undef, "connect: $!");

    my @packets = ref $req eq 'ARRAY' ? @$req : ($req);
    my $sel = IO::Select->new($sock);

    for my $p (@packets) {
        my $data = ref $p ? $p->{value} : $p;
        sleep $p->{delay_before} if ref $p && $p->{delay_before};
        my $off = 0;
        while ($off < length $data) {
            unless ($sel->can_write($timeout)) {
                close $sock;
                return (undef, "timeout writing");
            }
            my $n = syswrite $sock, $data, length($data) - $off, $off;
            if (!defined $n) {
                next if $! == EINTR || $! == EAGAIN;
                last;
            }
            $off += $n;
        }
        sleep $p->{delay_after} if ref $p && $p->{delay_after};
    }

    my $buf = '';
    for (;;) {
        unless ($sel->can_read($timeout)) {
            close $sock;
            return ($buf, "timeout");
        }
        my $n = sysread $sock, $buf, 65536, length $buf;
        if (!defined $n) {
            next if $! == EINTR || $! == EAGAIN;
            last;
        }
        last if $n == 0;
    }

    close $sock;
    return ($buf, undef);
}

# parses one response from the front of $$buf; returns a hash or undef

sub parse_response {
    my ($buf, $head_only) = @_;

    return undef unless $$buf =~ s/\A(HTTP\/\d\.\d) (\d{3})([^\r\n]*)\r?\n//;
    my %res = (status => $2, headers => {}, header_list => [], body => '');

    while ($$buf =~ s/\A([^\r\n]*)\r?\n//) {
        my $line = $1;
        last if $line eq '';
        my ($k, $v) = split /\s*:\s*/, $line, 2;
        $v //= '';
        push @{ $res{header_list} }, [$k, $v];
        my $lk = lc $k;
        $res{headers}{$lk} = defined $res{headers}{$lk}
                           ? "$res{headers}{$lk}, $v" : $v;
    }

    my $h = $res{headers};

    if ($head_only || $res{status} =~ /^(?:1\d\d|204|304)$/) {
        return \%res;
    }

    if (($h->{'transfer-encoding'} // '') =~ /chunked/i) {
        for (;;) {
            $$buf =~ s/\A([0-9a-fA-F]+)[^\r\n]*\r?\n// or last;
            my $len = hex $1;
            if ($len == 0) {
                $$buf =~ s/\A(?:[^\r\n]+\r?\n)*\r?\n//;
                last;
            }
            $res{body} .= substr $$buf, 0, $len, '';
            $$buf =~ s/\A\r?\n//;
        }
        return \%res;
    }

    if (defined $h->{'content-length'}) {
        $res{body} = substr $$buf, 0, $h->{'content-length'}, '';
        return \%res;
    }

    $res{body} = $$buf;
    $$buf = '';
    return \%res;
}

sub parse_timeout {
    my $t = shift;
    return $Timeout unless defined $t;
    return $1 / 1000 if $t =~ /^\s*([\d.]+)\s*ms\s*$/;
    return $1 if $t =~ /^\s*([\d.]+)\s*s?\s*$/;
    return $Timeout;
}

sub request_method {
    my $req = shift;
    return '' if ref $req;
    $req =~ s/^(?:\s*#[^\n]*\n)+//;
    return $req =~ /^\s*([A-Z]+)/ ? $1 : 'GET';
}

sub run_requests {
    my ($block, $name, $ports) = @_;

    my $timeout = parse_timeout(sec($block, "timeout"));
    my @reqs;       # [ raw bytes, [methods of the responses] ]

    if (defined sec($block, "pipelined_requests")) {
        my @list = as_list(sec($block, "pipelined_requests"));
        my $raw = '';
        for my $i (0 .. $#list) {
            $raw .= build_request($list[$i],
                                  pick(sec($block, "more_headers"), $i),
                                  $i < $#list);
        }
        push @reqs, [$raw, [map { request_method($_) } @list]];

    } elsif (defined sec($block, "raw_request")) {
        for my $r (as_list(sec($block, "raw_request"))) {
            push @reqs, [$r, [request_method($r)]];
        }

    } else {
        my $list = sec($block, "request");
        bail_out("$name: no --- request") unless defined $list;
        my @list = ref $list eq 'ARRAY' ? @$list : ($list);
        for my $i (0 .. $#list) {
            my $r = $list[$i];
            my $more = pick(sec($block, "more_headers"), $i);
            push @reqs, [build_request($r, $more), [request_method($r)]];
        }
    }

    my $n = 0;

    for my $req (@reqs) {
        my ($raw, $err) = send_and_read($req->[0], $timeout);

        if (defined $err && $err eq 'timeout'
            && !defined sec($block, "abort"))
        {
            Test::More::fail("$name - timeout (${timeout}s)");
        }

        if (!defined $raw) {
            Test::More::fail("$name - request failed: $err");
            $raw = '';
        }

        for my $meth (@{ $req->[1] }) {
            my $res = parse_response(\$raw, $meth eq 'HEAD');
            check_response($block, $name, $n, $res);
            $n++;
        }
    }

    check_error_log($block, $name, 1);
}

sub check_response {
    my ($block, $name, $i, $res) = @_;
    my $sfx = $i ? " (req $i)" : '';

    $res //= { status => '', headers => {}, body => '' };

    if (defined(my $like = pick(sec($block, "error_code_like"), $i))) {
        Test::More::like($res->{status}, qr/$like/,
                         "$name - status code ok$sfx");
    } else {
        my $want = pick(sec($block, "error_code"), $i) // 200;
        $want =~ s/^\s+|\s+$//g;
        Test::More::is($res->{status}, $want, "$name - status code ok$sfx");
    }

    check_headers($res, pick(sec($block, "response_headers"), $i),
                  "$name$sfx", 0);
    check_headers($res, pick(sec($block, "response_headers_like"), $i),
                  "$name$sfx", 1);

    my $body = $res->{body};

    if (defined sec($block, "response_body")) {
        my $want = pick(sec($block, "response_body"), $i);
        if (defined $want) {
            $want = expand_env($want) unless is_eval($block, 'response_body');
            $want =~ s/\$ServerPort\b/$ServerPort/g;
            Test::More::is($body, $want,
                           "$name - response_body - response is expected$sfx");
        }
    }

    if (defined(my $pat = pick(sec($block, "response_body_like"), $i))) {
        my $re = ref $pat eq 'Regexp' ? $pat : qr/$pat/s;
        Test::More::like($body, $re,
                         "$name - response_body_like - response is "
                         . "expected$sfx");
    }

    if (defined(my $pat = pick(sec($block, "response_body_unlike"), $i))) {
        my $re = ref $pat eq 'Regexp' ? $pat : qr/$pat/s;
        Test::More::unlike($body, $re,
                           "$name - response_body_unlike - response is "
                           . "expected$sfx");
    }
}

sub check_headers {
    my ($res, $spec, $name, $like) = @_;

    return unless defined $spec;

    for my $line (split /\n/, $spec) {
        next unless $line =~ /\S/;

        if ($line =~ /^\s*!\s*([^:\s]+)\s*$/) {
            my $h = $1;
            Test::More::ok(!defined $res->{headers}{lc $h},
                           "$name - header $h not present");
            next;
        }

        my ($k, $v) = $line =~ /^\s*([^:\s]+)\s*:\s*(.*?)\s*$/
            or bail_out("$name: bad header line \"$line\"");
        my $got = $res->{headers}{lc $k};

        if ($like) {
            Test::More::like($got // '', qr/^$v$/s,
                             "$name - header $k like ok");
        } else {
            Test::More::is($got // '', $v, "$name - header $k ok");
        }
    }
}

# ---------------------------------------------------------------------
# the error log

sub slurp {
    my $path = shift;
    open my $fh, '<', $path or return undef;
    local $/;
    my $data = <$fh>;
    close $fh;
    return $data;
}

sub error_log_window {
    my $log = "$ServRoot/logs/error.log";
    my $data = slurp($log) // '';

    if ($AccumErrorLog) {
        return $data;
    }

    $ErrLogPos = 0 if $ErrLogPos > length $data;
    my $win = substr $data, $ErrLogPos;
    $ErrLogPos = length $data;
    return $win;
}

sub patterns {
    my $v = shift;
    return () unless defined $v;
    return @$v if ref $v eq 'ARRAY';
    return ($v) if ref $v eq 'Regexp';
    return grep { length } split /\n/, $v;
}

sub check_error_log {
    my ($block, $name, $wait) = @_;

    if ($wait) {
        sleep sec($block, "wait") if defined sec($block, "wait");
        sleep $Sleep * 3;
    }

    my $log = error_log_window();
    my @lines = split /\n/, $log;

    my @want = patterns(sec($block, "error_log"));
    my @not = patterns(sec($block, "no_error_log"));
    my %mentioned;

    for my $p (@want) {
        my @hit = grep { ref $p ? $_ =~ $p : index($_, $p) >= 0 } @lines;
        Test::More::ok(scalar @hit, "$name - pattern \"$p\" should match "
                       . "a line in error.log");
        $mentioned{$_} = 1 for @hit;
    }

    for my $p (@not) {
        my @hit = grep { ref $p ? $_ =~ $p : index($_, $p) >= 0 } @lines;
        Test::More::ok(!@hit, "$name - pattern \"$p\" does not match "
                       . "a line in error.log")
            or Test::More::diag("matched: $hit[0]");
        $mentioned{$_} = 1 for @hit;
    }

    if (defined sec($block, "grep_error_log")) {
        my $p = sec($block, "grep_error_log");
        my $re = ref $p ? $p : qr/\Q$p\E/;
        my $got = '';
        for my $line (@lines) {
            while ($line =~ /($re)/g) {
                $got .= "$1\n";
            }
        }
        my $want = sec($block, "grep_error_log_out") // '';
        $want = $want->[0] if ref $want eq 'ARRAY';
        if (ref $want eq 'Regexp') {
            Test::More::like($got, $want, "$name - grep_error_log_out");
        } else {
            Test::More::is($got, expand_env($want),
                           "$name - grep_error_log_out");
        }
    }

    return if defined sec($block, "must_die");

    for my $line (@lines) {
        next unless $line =~ /\[(?:alert|crit|emerg)\]/;
        next if $mentioned{$line};
        Test::More::diag("WARNING: $name - $line");
    }
}

END {
    stop_nginx() unless $NoClean;
}

1;
