package Presence::Test;

# Shared set-up for the suite's module tests: a block preprocessor that
# gives every block a presence zone, the test secret, a backend server,
# a tracked location (/app/) and the API (/api/v1/online/), unless the
# block sets them itself; and builders of raw requests with tokens.
#
# Blocks evaluate in another package: call these fully qualified.

use strict;
use warnings;

use Test::Nginx::Socket ();
use Presence::JWT;

$ENV{TEST_NGINX_SECRET} = $Presence::JWT::SECRET;

my $Backend = <<'EOC';
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_9;
        location / {
            return 200 "backend $uri\n";
        }
    }
EOC

sub setup {
    Test::Nginx::Socket::add_block_preprocessor(sub {
        my $block = shift;

        my $http = $block->http_config // '';
        $http = "    presence_zone zone=presence:4m;\n$http"
            unless $http =~ /presence_zone/;
        $http = "    presence_jwt_secret \"\$TEST_NGINX_SECRET\";\n$http"
            unless $http =~ /presence_jwt_(secret|key_file)/;
        $block->set_value('http_config', $Backend . $http);

        my $config = $block->config // '';
        $config = <<'EOC' . $config unless $config =~ m{location /app/};
    location /app/ {
        presence on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_9;
    }
EOC
        $config = <<'EOC' . $config unless $config =~ m{presence_api};
    location /api/v1/online/ {
        presence_api;
    }
EOC
        $block->set_value('config', $config);
    });
}

# a whole request: METHOD URI, a bearer token (or undef), more headers
sub req {
    my ($line, $token, @headers) = @_;
    $line = "GET $line" unless $line =~ /^[A-Z]+ /;
    my $r = "$line HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n";
    $r .= "Authorization: Bearer $token\r\n" if defined $token;
    $r .= "$_\r\n" for @headers;
    return "$r\r\n";
}

# a token of user N (session "sid" when given)
sub tok {
    my ($user, %claims) = @_;
    return Presence::JWT::token(sub => "$user", %claims);
}

# one request of user N to /app/
sub hit {
    my ($user, %claims) = @_;
    my $ua = delete $claims{ua};
    return req("/app/u$user", tok($user, %claims),
               defined $ua ? ("User-Agent: $ua") : ());
}

# an API request as user 1
sub api {
    my ($path, $token, @headers) = @_;
    my $method = $path =~ s/^([A-Z]+) // ? "$1 " : '';
    return req("$method/api/v1/online/$path", $token // tok(1), @headers);
}

1;
