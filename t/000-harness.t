# The harness itself (t/lib/Test/Nginx/Socket.pm) against plain nginx:
# without the module, so a harness regression never looks like a module
# bug.  t/001-harness-fails.t proves that wrong expectations fail.

use Test::Nginx::Socket 'no_plan';

$ENV{TEST_NGINX_LOAD_MODULES} = '';
$ENV{TEST_NGINX_GREETING} = 'hello from the environment';

run_tests();

__DATA__

=== exact body and default status
--- config
    location = /t {
        return 200 "it works\n";
    }
--- request
GET /t
--- response_body
it works



=== error_code and error_code_like
--- config
    location = /t {
        return 418;
    }
--- request eval
["GET /t", "GET /missing"]
--- error_code eval
[418, 404]
--- error_code_like eval
[qr/^41\d$/, qr/^404$/]



=== response_headers, absent headers and _like
--- config
    location = /t {
        add_header X-One "1";
        add_header X-Two "two words";
        return 200 "ok";
    }
--- request
GET /t
--- response_headers
X-One: 1
X-Two: two words
!X-Three
--- response_headers_like
Content-Type: text/pl\w+
--- response_body: ok



=== response_body_like and _unlike, dot matches newlines
--- config
    location = /t {
        return 200 "first\nsecond\n";
    }
--- request
GET /t
--- response_body_like: ^first.second$
--- response_body_unlike: third



=== several requests, each on its own connection, array checks
--- config
    location /t {
        return 200 "uri=$uri\n";
    }
--- request eval
["GET /t/a", "GET /t/b"]
--- response_body eval
["uri=/t/a\n", "uri=/t/b\n"]



=== pipelined requests on one keep-alive connection
--- config
    location /t {
        return 200 "$uri $connection_requests\n";
    }
--- pipelined_requests eval
["GET /t/1", "HEAD /t/2", "GET /t/3"]
--- response_body eval
["/t/1 1\n", "", "/t/3 3\n"]



=== request body gets a Content-Length, more_headers are sent
--- config
    location = /t {
        return 200 "len=$http_content_length x=$http_x_foo\n";
    }
--- request
POST /t
hello world
--- more_headers
X-Foo: bar
--- response_body
len=11 x=bar



=== HEAD has no body
--- config
    location = /t {
        return 200 "body\n";
    }
--- request
HEAD /t
--- response_headers
Content-Length: 5
--- response_body:



=== chunked responses are de-chunked
--- config
    location /ssi/ {
        ssi on;
        ssi_types *;
        alias html/;
    }
--- user_files
>>> a.shtml
[<!--# echo var="uri" -->]
--- request
GET /ssi/a.shtml
--- response_headers
Transfer-Encoding: chunked
--- response_body
[/ssi/a.shtml]



=== raw_request is sent as it is
--- config
    location = /t {
        return 200 "$server_protocol\n";
    }
--- raw_request eval
"GET /t HTTP/1.0\r\nHost: x\r\n\r\n"
--- response_body
HTTP/1.0



=== $TEST_NGINX_ variables and a random port
--- http_config
    server {
        listen 127.0.0.1:$TEST_NGINX_RAND_PORT_1;
        location / {
            return 200 "backend says $TEST_NGINX_GREETING\n";
        }
    }
--- config
    location = /t {
        proxy_pass http://127.0.0.1:$TEST_NGINX_RAND_PORT_1/;
    }
--- request
GET /t
--- response_body
backend says hello from the environment



=== error_log and no_error_log read this request's lines
--- config
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /nope.html
--- error_code: 404
--- error_log
nope.html" failed (2: No such file or directory)
--- no_error_log
[alert]
[crit]



=== error_log with regexes
--- config
--- request
GET /missing.txt
--- error_code: 404
--- error_log eval
[qr/open\(\) "[^"]+missing\.txt" failed/, "No such file"]



=== grep_error_log collects matches
--- config
    location = /t {
        return 200 "ok\n";
    }
--- request eval
["GET /a1.html", "GET /t"]
--- error_code eval
[404, 200]
--- grep_error_log eval
qr/a\d\.html" failed/
--- grep_error_log_out
a1.html" failed



=== must_die with a message
--- config
    location = /t {
        no_such_directive on;
    }
--- must_die
--- suppress_stderr
--- error_log
unknown directive "no_such_directive"



=== main_config, http_config and post_main_config land in place
--- main_config
    env TEST_NGINX_GREETING;
--- http_config
    map $uri $greeting {
        default "mapped";
    }
--- post_main_config
    pcre_jit on;
--- config
    location = /t {
        return 200 "$greeting\n";
    }
--- request
GET /t
--- response_body
mapped



=== timeout with abort is not a failure
--- config
    location = /t {
        limit_rate_after 200;
        limit_rate 1;
        return 200 "slow body: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n";
    }
--- request
GET /t
--- timeout: 300ms
--- abort
--- response_body_like: ^sl



=== skip_eval skips when the expression holds
--- skip_eval: 1: 1
--- config
    location = /t { return 500; }
--- request
GET /t
--- error_code: 200
