# How the sources read: only the store touches the zone, one header per
# concern, nginx's style (80 columns, no tabs, no trailing blanks, short
# functions), no two functions of one name, and no warning from the
# compiler's stricter flags.

use strict;
use warnings;

use Test::More;

my $dir = 'ngx_http_presence_module';
my @c = sort glob "$dir/*.c";
my @h = sort glob "$dir/*.h";

ok(@c >= 10 && @h >= 8, scalar(@c) . ' sources, ' . scalar(@h) . ' headers');

sub slurp { my $f = shift; local (@ARGV, $/) = ($f); return scalar <> }

# the store owns its internals

my @outside;
for my $f (grep { !m{/ngx_http_presence_shm\.c$} } @c, @h) {
    my $n = 0;
    for (split /\n/, slurp($f)) {
        $n++;
        push @outside, "$f:$n" if /\bsh->|->sh\b|->shpool\b/;
    }
}
is("@outside", '', 'zone fields are reached in ngx_http_presence_shm.c only');

unlike(slurp("$dir/ngx_http_presence_shm.h"),
       qr/struct ngx_http_presence_zone_s\s*\{/,
       'the zone is opaque outside the store');

my @catchall = grep { slurp($_) =~ /#include "ngx_http_presence\.h"/ } @c, @h;
is("@catchall", '', 'no file includes the old catch-all header');
ok(!-e "$dir/ngx_http_presence.h", 'and it is gone');

for my $h (@h) {
    (my $guard = uc $h) =~ s{.*/}{};
    $guard =~ s/\./_/g;
    like(slurp($h), qr/#ifndef _${guard}_INCLUDED_\n#define _${guard}_INCLUDED_\n/,
         "$h has its guard");
}

# nginx's style

my (@long, @tabs, @trailing);
for my $f (@c, @h) {
    my $n = 0;
    for (split /\n/, slurp($f)) {
        $n++;
        push @long, "$f:$n" if length > 80;
        push @tabs, "$f:$n" if /\t/;
        push @trailing, "$f:$n" if /[ \t]$/;
    }
}
is("@long", '', 'no line over 80 columns');
is("@tabs", '', 'no tabs');
is("@trailing", '', 'no trailing blanks');

# functions: bodies between "{" and "}" at column 0, as STYLE.md measures

my (@big, %defined);
for my $f (@c) {
    my @lines = split /\n/, slurp($f);
    my ($name, $start);
    for my $i (0 .. $#lines) {
        my ($fn) = $lines[$i] =~ /^(ngx_\w+)\(/;
        if ($fn && $i > 0 && $lines[$i - 1] =~ /^\w/) {
            $name = $fn;
            push @{ $defined{$name} }, $f;
        }
        $start = $i if $lines[$i] eq '{';
        if ($lines[$i] eq '}' && defined $start) {
            my $len = $i - $start - 1;
            push @big, "$name ($len lines)" if $len > 120;
            undef $start;
        }
    }
}
is("@big", '', 'no function over 120 lines');

my @twice = grep { @{ $defined{$_} } > 1 } sort keys %defined;
is("@twice", '', 'no function name defined twice');
ok(keys %defined > 150, scalar(keys %defined) . ' functions seen');

# the stricter warnings, against the nginx tree the module is built with

my ($tree) = grep { -f "$_/objs/ngx_auto_config.h" }
             'build/nginx-src', 'build/nginx-upstream';

SKIP: {
    skip 'no configured nginx tree under build/ (run "make")', 1
        unless $tree;

    my $pg = `pg_config --includedir`;
    chomp $pg;
    my $inc = join ' ', map { "-I $tree/$_" }
              qw(src/core src/event src/event/modules src/os/unix src/http
                 src/http/modules src/http/v2 objs);
    my $out = '';
    for my $f (@c) {
        $out .= `cc -fsyntax-only -Wall -Wextra -Wshadow -Wmissing-prototypes -Wno-unused-parameter $inc -I $dir -I $pg $f 2>&1`;
    }
    is($out, '', 'no warning with -Wall -Wextra -Wshadow -Wmissing-prototypes');
}

done_testing;
