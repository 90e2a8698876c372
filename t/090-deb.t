# make deb: the Debian package is built with Debian's tooling, holds what
# an operator expects where Debian's nginx module packages put it, depends
# on the nginx ABI it was built against, and its own load_module snippet
# makes an nginx answer the API with the packaged .so.  Nothing is
# installed into the machine's nginx: the package is unpacked with
# dpkg-deb -x into a temporary root.

use strict;
use warnings;

use lib 't/lib';
use File::Temp qw(tempdir);
use Presence::JWT;
use Presence::Nginx;
use Test::More;

my $version = do { local (@ARGV, $/) = ('VERSION'); <> };
chomp $version;
like($version, qr/^0\.\d+\.\d+$/, "VERSION holds a 0.x.y version ($version)");

my $out = `make -s deb 2>&1`;
is($?, 0, 'make deb succeeds') or diag($out);
unlike($out, qr/^E: /m, 'lintian reports no error');

my $arch = `dpkg --print-architecture`;
chomp $arch;
my $deb = "build/deb/libnginx-mod-http-presence_$version-1_$arch.deb";
ok(-f $deb, "the package is $deb") or BAIL_OUT("no package");

# the files, where Debian's module packages put them

my %files = map { m{ \./(\S+)$} ? ($1 => 1) : () } `dpkg-deb -c $deb`;

for my $f ('usr/lib/nginx/modules/ngx_http_presence_module.so',
           'usr/share/nginx/modules-available/mod-http-presence.conf',
           'usr/share/doc/libnginx-mod-http-presence/copyright',
           'usr/share/doc/libnginx-mod-http-presence/changelog.Debian.gz',
           'usr/share/doc/libnginx-mod-http-presence/examples/nginx.conf',
           map { "usr/share/libnginx-mod-http-presence/$_" } glob 'sql/*.sql')
{
    ok($files{$f}, "the package holds /$f");
}

# the control fields: the ABI is the one nginx-dev says this nginx has

sub field { my $f = shift; my $v = `dpkg-deb -f $deb $f`; chomp $v; $v }

my ($abi) = `cat /usr/share/nginx/src/debian/libnginx-mod.abisubstvars`
            =~ /^nginx:abi=(\S+)$/m;
ok($abi, "nginx-dev names the ABI ($abi)");

is(field('Package'), 'libnginx-mod-http-presence', 'Package');
is(field('Version'), "$version-1", 'Version is VERSION plus the revision');
is(field('Architecture'), $arch, 'Architecture');
is(field('Section'), 'httpd', 'Section, as Debian\'s module packages');

my %deps = map { /^(\S+)/ ? ($1 => $_) : () } split /,\s*/, field('Depends');
ok($deps{$abi}, "Depends on $abi");
ok($deps{$_}, "Depends on $_ (shlibs)") for qw(libpq5 libjansson4 libssl3 libc6);

# the snippet is enabled on install and its link removed on purge

my $ctrl = tempdir(CLEANUP => 1);
system('dpkg-deb', '-e', $deb, $ctrl) == 0 or BAIL_OUT('dpkg-deb -e');

sub slurp { my $f = shift; local (@ARGV, $/) = ($f); return scalar <> }

like(slurp("$ctrl/postinst"),
     qr{for confpair in mod-http-presence\.conf:50-mod-http-presence\.conf\b}m,
     'postinst links 50-mod-http-presence.conf into modules-enabled');
like(slurp("$ctrl/postinst"), qr{ln -sf /usr/share/nginx/modules-available/},
     'from modules-available');
like(slurp("$ctrl/postrm"),
     qr{"\$1" = "purge".*rm /etc/nginx/modules-enabled/\$to}s,
     'postrm removes the link on purge');

# unpacked, the package's own snippet loads the packaged module

my $root = tempdir(CLEANUP => 1);
system('dpkg-deb', '-x', $deb, $root) == 0 or BAIL_OUT('dpkg-deb -x');

my $snippet = slurp("$root/usr/share/nginx/modules-available/"
                    . "mod-http-presence.conf");
is($snippet, "load_module modules/ngx_http_presence_module.so;\n",
   'the snippet loads the module from nginx\'s modules directory');

(my $rewritten = $snippet)
    =~ s{ modules/}{ $root/usr/lib/nginx/modules/};
open my $fh, '>', "$root/mod-http-presence.conf" or die $!;
print $fh $rewritten;
close $fh;

# the nginx the package was built for, whatever binary the suite tests
local $ENV{TEST_NGINX_BINARY} = '/usr/sbin/nginx';
local $ENV{TEST_NGINX_LOAD_MODULES} = '';

my $n = Presence::Nginx->new(name => 'deb',
                             main => "include $root/mod-http-presence.conf;",
                             http => <<EOC, server => <<'EOS');
    presence_zone zone=presence:1m;
    presence_jwt_secret "$Presence::JWT::SECRET";
EOC
        location = /metrics {
            presence_metrics;
        }
EOS
$n->start;

my $token = Presence::JWT::token(sub => '7');
my ($status) = $n->get('/app/x', $token);
is($status, 200, 'a tracked request is proxied');

my ($st, $body) = $n->get('/api/v1/online/count?threshold_minutes=5', $token);
is($st, 200, 'the API answers');
like($body, qr/^\{"online_count":1,"threshold_minutes":5,"timestamp":"[^"]+"\}$/,
     'and counts the tracked user');

(undef, $body) = $n->get('/metrics');
like($body, qr/^nginx_presence_build_info\{version="\Q$version\E"\} 1$/m,
     'the metrics carry the version');
like($n->log, qr/presence zone "presence" created, .* module \Q$version\E$/m,
     'the version is logged when the zone is created');

my ($worker) = $n->workers;
my $maps = slurp("/proc/$worker/maps");
like($maps, qr{\Q$root\E/usr/lib/nginx/modules/ngx_http_presence_module\.so},
     'the worker runs the packaged .so');

$n->stop;

done_testing;
