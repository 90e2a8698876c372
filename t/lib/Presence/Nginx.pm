package Presence::Nginx;

# A standalone nginx with the module, for tests that drive processes
# directly (crashes, several nodes): start, stop, signal, request.
#
#   my $n = Presence::Nginx->new(name => 'a', http => '...', workers => 2);
#   $n->start; my ($status, $body) = $n->get('/x', $token); $n->stop;

use strict;
use warnings;

use Cwd qw(cwd);
use File::Path qw(make_path remove_tree);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use Time::HiRes qw(sleep time);

# polls $what (a sub) every 0.1 s until it returns true or $timeout (10 s)
# passes; returns its last value
sub wait_until {
    my ($what, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    while (time < $deadline) {
        my $v = $what->();
        return $v if $v;
        sleep 0.1;
    }
    return $what->();
}

# libfaketime's library to preload into nginx ('' when it is not
# installed); under AddressSanitizer its runtime must be preloaded first
sub faketime {
    my $lib = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';
    return '' unless -e $lib;
    my ($asan) = `ldd $ENV{TEST_NGINX_BINARY} 2>/dev/null`
                 =~ m{(/\S+/libasan\.so\S*)};
    return $asan ? "$asan:$lib" : $lib;
}

sub free_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                  LocalPort => 0) or die $!;
    return $s->sockport;
}

sub new {
    my ($class, %o) = @_;
    my $self = bless {
        name => 'n', workers => 1, http => '', main => '', connections => 256,
        %o,
    }, $class;
    $self->{port} //= free_port();
    $self->{backend} //= free_port();
    $self->{root} //= cwd() . "/t/servroot_$self->{name}";
    return $self;
}

sub port { $_[0]{port} }
sub root { $_[0]{root} }

sub write_conf {
    my $self = shift;
    my $root = $self->{root};
    my $mods = join '', map { "load_module $_;\n" }
               split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '';
    my $user = $> == 0 ? "user root;\n" : '';
    my $backend = $self->{external_backend} ? '' : <<EOB;
    server {
        listen 127.0.0.1:$self->{backend};
        location / { return 200 "backend \$uri\\n"; }
    }
EOB

    open my $fh, '>', "$root/conf/nginx.conf" or die $!;
    print $fh <<EOC;
$mods${user}worker_processes $self->{workers};
master_process on;
daemon on;
error_log logs/error.log $self->{log_level};
pid logs/nginx.pid;
$self->{main}
events { worker_connections $self->{connections}; accept_mutex off; }
http {
    access_log off;
    default_type text/plain;
    client_body_temp_path $root/tmp;
    proxy_temp_path $root/tmp;
$backend$self->{http}
    server {
        listen 127.0.0.1:$self->{port};
        location /app/ {
            presence on;
            proxy_pass http://127.0.0.1:$self->{backend};
        }
        location /api/v1/online/ {
            presence_api;
        }
$self->{server}
    }
}
EOC
    close $fh;
}

sub start {
    my $self = shift;
    my $root = $self->{root};
    $self->{log_level} //= 'info';
    $self->{server} //= '';

    remove_tree($root) unless $self->{keep};
    make_path("$root/conf", "$root/logs", "$root/tmp");
    $self->write_conf;

    local %ENV = (%ENV, %{ $self->{env} // {} });
    system($ENV{TEST_NGINX_BINARY} || 'nginx', '-p', "$root/", '-c',
           'conf/nginx.conf', '-e', "$root/logs/error.log") == 0
        or die "nginx $self->{name} did not start: "
               . `tail -5 $root/logs/error.log`;

    my $deadline = time + 10;
    until ($self->pid && IO::Socket::INET->new("127.0.0.1:$self->{port}")) {
        die "nginx $self->{name} does not answer" if time > $deadline;
        sleep 0.05;
    }

    $self->{master} = $self->pid;
    $self->wait_workers;
}

sub pid {
    my $self = shift;
    return $self->{master} if $self->{master};
    open my $fh, '<', "$self->{root}/logs/nginx.pid" or return undef;
    my $pid = <$fh>;
    return $pid && $pid =~ /(\d+)/ ? $1 : undef;
}

sub workers {
    my $self = shift;
    my $master = $self->pid // return ();
    my @w;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // next;
        next unless $line =~ /^(\d+) \((.*)\) (\S) (\d+)/s;
        push @w, $1 if $4 == $master && $3 ne 'Z';
    }
    return sort { $a <=> $b } @w;
}

sub wait_workers {
    my ($self, $n) = @_;
    $n //= $self->{workers};
    my $deadline = time + 10;
    while (time < $deadline) {
        my @w = $self->workers;
        return 1 if @w >= $n;
        sleep 0.05;
    }
    return 0;
}

sub alive {
    my $pid = shift;
    return 0 unless $pid && kill 0, $pid;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    return <$fh> !~ /^\d+ \(.*\) [ZX]/s;
}

sub stop {
    my ($self, $signal) = @_;
    my $pid = $self->pid // return;
    delete $self->{master};
    kill $signal // 'QUIT', $pid;
    my $deadline = time + 10;
    while (alive($pid)) {
        if (time > $deadline) {
            kill 'KILL', -$pid, $pid;
            last;
        }
        sleep 0.05;
    }
    unlink "$self->{root}/logs/nginx.pid";
}

sub reload {
    my $self = shift;
    $self->write_conf;
    kill 'HUP', $self->pid;
}

sub log {
    my $self = shift;
    open my $fh, '<', "$self->{root}/logs/error.log" or return '';
    local $/;
    return <$fh>;
}

# ($status, $body, $headers) of one request; method in $path ("POST /x")
sub request {
    my ($self, $path, $token, %o) = @_;
    my $method = $path =~ s/^([A-Z]+) // ? $1 : 'GET';
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$self->{port}",
                                  Timeout => $o{timeout} // 5)
        or return (0, "connect: $!", '');
    my $req = "$method $path HTTP/1.1\r\nHost: localhost\r\n"
            . "Connection: close\r\n";
    $req .= "Authorization: Bearer $token\r\n" if defined $token;
    $req .= "User-Agent: $o{ua}\r\n" if defined $o{ua};
    $req .= "Content-Length: 0\r\n" if $method eq 'POST';
    print $s "$req\r\n";
    local $/;
    my $res = <$s> // '';
    close $s;
    my ($head, $body) = split /\r\n\r\n/, $res, 2;
    my ($status) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};
    return ($status // 0, $body // '', $head // '');
}

sub get { my $self = shift; return $self->request(@_) }

# GET stream read by curl in the background into a file (which outlives
# the node): { pid, file }, once the first bytes are in.  Options: token
# (Authorization: Bearer), headers (more lines), h2 (prior knowledge),
# port, max (curl's -m, 20 s)
my ($stream_dir, $streams);
sub stream {
    my ($self, $path, %o) = @_;
    $stream_dir //= tempdir(CLEANUP => 1);
    my $file = "$stream_dir/stream" . ++$streams;
    my @cmd = ('curl', '-sN', '-D', "$file.head", '-o', $file,
               '-m', $o{max} // 20);
    push @cmd, '--http2-prior-knowledge' if $o{h2};
    push @cmd, '-H', "Authorization: Bearer $o{token}" if defined $o{token};
    push @cmd, '-H', $_ for @{ $o{headers} // [] };
    push @cmd, 'http://127.0.0.1:' . ($o{port} // $self->{port}) . $path;
    my $pid = fork // die;
    if ($pid == 0) {
        open STDERR, '>', '/dev/null';
        exec @cmd;
    }
    wait_until(sub { -s $file }, 5);
    return { pid => $pid, file => $file };
}

# what a stream received so far, and its response header
sub stream_text { my $s = shift; local $/; open my $fh, '<', $s->{file}
                  or return ''; return scalar <$fh> }
sub stream_head { my $s = shift; local $/; open my $fh, '<', "$s->{file}.head"
                  or return ''; return scalar <$fh> }

sub stream_stop { my $s = shift; kill 'TERM', $s->{pid}; waitpid $s->{pid}, 0 }

sub DESTROY {
    my $self = shift;
    local $?;
    $self->stop('KILL') if $self->{master} && !$self->{keep_running};
}

1;
