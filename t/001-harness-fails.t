# A harness that cannot fail is worthless: run deliberately wrong blocks
# in a child prove and check that each one fails, and a right one passes.

use strict;
use warnings;

use Cwd qw(cwd);
use File::Temp qw(tempdir);
use Test::More;

my $dir = tempdir(CLEANUP => 1);
my $lib = cwd() . '/t/lib';

sub child {
    my ($name, $block) = @_;

    my $file = "$dir/$name.t";
    open my $fh, '>', $file or die "$file: $!";
    print $fh "use Test::Nginx::Socket 'no_plan';\n"
            . "\$ENV{TEST_NGINX_LOAD_MODULES} = '';\n"
            . "run_tests();\n__DATA__\n\n$block";
    close $fh;

    local $ENV{TEST_NGINX_RANDOMIZE} = 1;
    local $ENV{TEST_NGINX_SERVROOT};
    my $out = `prove -I $lib $file 2>&1`;
    return ($? >> 8, $out);
}

my $config = <<'EOC';
--- config
    location = /t {
        add_header X-A yes;
        return 200 "right\n";
    }
--- request
GET /t
EOC

my ($code, $out) = child('right', "=== right\n$config--- response_body\n"
                                  . "right\n");
is($code, 0, 'a right block passes') or diag($out);

my %wrong = (
    body => "--- response_body\nwrong\n",
    status => "--- error_code: 404\n",
    header => "--- response_headers\nX-A: no\n",
    absent => "--- response_headers\n!X-A\n",
    like => "--- response_body_like: ^wrong\$\n",
    unlike => "--- response_body_unlike: right\n",
    error_log => "--- error_log\nthis line is never logged\n",
    no_error_log => "--- no_error_log\n[debug]\n",
    grep => "--- grep_error_log: http request line\n"
            . "--- grep_error_log_out\nnothing\n",
    unknown => "--- no_such_section\nx\n",
);

for my $name (sort keys %wrong) {
    my ($code, $out) = child($name, "=== wrong $name\n$config$wrong{$name}");
    isnt($code, 0, "a wrong $name fails the block");
    like($out, qr/not ok|Bailout|Dubious|unknown section/i,
         "the failure is reported for $name") or diag($out);
}

($code, $out) = child('must_die', "=== must_die that starts\n$config"
                                  . "--- must_die\n");
isnt($code, 0, 'must_die fails when nginx starts');

($code, $out) = child('bad_env', "=== undefined env\n--- config\n"
                                 . "    location = /t { return 200 "
                                 . "\$TEST_NGINX_NO_SUCH_VAR; }\n"
                                 . "--- request\nGET /t\n");
isnt($code, 0, 'an undefined $TEST_NGINX_ variable bails out');
like($out, qr/TEST_NGINX_NO_SUCH_VAR/, 'and names it');

done_testing();
