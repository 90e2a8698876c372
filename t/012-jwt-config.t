# nginx -t refuses bad presence_jwt_* configuration with a message naming
# the directive and the problem; env= and file= secrets work.

use Test::Nginx::Socket 'no_plan';
use lib 't/lib';
use Presence::JWT;

my $dir = Presence::JWT::keys_dir();

sub put {
    my ($name, $body) = @_;
    open my $fh, '>', "$dir/$name" or die $!;
    print $fh $body;
    close $fh;
    chmod 0644, "$dir/$name";
}

put('secret.txt', "$Presence::JWT::SECRET\n");
put('empty.txt', "");
put('bad.pem', "-----BEGIN PUBLIC KEY-----\nnot base64 at all\n"
               . "-----END PUBLIC KEY-----\n");
put('bad.json', '{"keys": [ {"kty": "RSA", "n": "AQAB"} ]}');
put('junk.json', '{"keys": [');
put('unreadable.pem', "x");
chmod 0000, "$dir/unreadable.pem";

$ENV{PRESENCE_TEST_SECRET} = $Presence::JWT::SECRET;
$ENV{TEST_NGINX_SECRET} = $Presence::JWT::SECRET;

add_block_preprocessor(sub {
    my $block = shift;

    $block->set_value('config', <<'EOC') unless defined $block->config;
    location = /t {
        return 200 "$presence_jwt_status $presence_user_id\n";
    }
EOC

    if (defined $block->must_die) {
        $block->set_value('suppress_stderr', 1);
    } elsif (!defined $block->request) {
        $block->set_value('request', "GET /t\n");
    }
});

run_tests();

__DATA__

=== env=NAME with the main-level env line
--- main_config
    env PRESENCE_TEST_SECRET;
--- http_config
    presence_jwt_secret env=PRESENCE_TEST_SECRET;
--- more_headers eval
Presence::JWT::bearer(Presence::JWT::token(sub => 1))
--- response_body
valid 1



=== env=NAME without an env line: read from the master's environment
--- http_config
    presence_jwt_secret env=PRESENCE_TEST_SECRET;
--- more_headers eval
Presence::JWT::bearer(Presence::JWT::token(sub => 2))
--- response_body
valid 2



=== env NAME=value sets it in the configuration
--- main_config
    env PRESENCE_INLINE_SECRET=inline-secret;
--- http_config
    presence_jwt_secret env=PRESENCE_INLINE_SECRET;
--- more_headers eval
Presence::JWT::bearer(Presence::JWT::token(sub => 3, key => 'inline-secret'))
--- response_body
valid 3



=== file=PATH, its trailing newline dropped
--- http_config
    presence_jwt_secret file=$TEST_NGINX_KEYS_DIR/secret.txt;
--- more_headers eval
Presence::JWT::bearer(Presence::JWT::token(sub => 4))
--- response_body
valid 4



=== an unset environment variable
--- http_config
    presence_jwt_secret env=PRESENCE_NO_SUCH_VARIABLE;
--- must_die
--- error_log
presence_jwt_secret: environment variable "PRESENCE_NO_SUCH_VARIABLE" is not set or empty



=== an empty secret
--- http_config
    presence_jwt_secret "";
--- must_die
--- error_log
presence_jwt_secret: the secret is empty



=== an empty secret file
--- http_config
    presence_jwt_secret file=$TEST_NGINX_KEYS_DIR/empty.txt;
--- must_die
--- error_log
presence_jwt_secret: the secret is empty



=== a missing secret file
--- http_config
    presence_jwt_secret file=$TEST_NGINX_KEYS_DIR/nope.txt;
--- must_die
--- error_log eval
qr/"presence_jwt_secret": cannot open "[^"]+nope\.txt" \(2: No such file or directory\)/



=== an unreadable key file
--- skip_eval: 2: $> == 0
--- http_config
    presence_jwt_algorithms RS256;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/unreadable.pem;
--- must_die
--- error_log
"presence_jwt_key_file": cannot open



=== a key file that is a directory
--- http_config
    presence_jwt_algorithms RS256;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR;
--- must_die
--- error_log
"presence_jwt_key_file": cannot read



=== a bad PEM
--- http_config
    presence_jwt_algorithms RS256;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/bad.pem;
--- must_die
--- error_log
bad.pem": no public key in it: expected PEM "PUBLIC KEY" or "CERTIFICATE" blocks, or a JWKS



=== a private key is not a public key
--- http_config
    presence_jwt_algorithms RS256;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/rsa.key;
--- must_die
--- error_log
rsa.key": no public key in it



=== a JWKS with a broken key
--- http_config
    presence_jwt_algorithms RS256;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/bad.json;
--- must_die
--- error_log
bad.json": key #0: "n" or "e" is missing or not base64url



=== a JWKS that is not JSON
--- http_config
    presence_jwt_algorithms RS256;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/junk.json;
--- must_die
--- error_log
junk.json": invalid JSON at line 1



=== an EC key on a curve JOSE does not use
--- http_config
    presence_jwt_algorithms ES256;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/k256.pub;
--- must_die
--- error_log
k256.pub": an EC key on a curve JOSE does not use



=== an unknown algorithm
--- http_config
    presence_jwt_secret "x";
    presence_jwt_algorithms HS256 HS999;
--- must_die
--- error_log
presence_jwt_algorithms: unknown algorithm "HS999"



=== none is never an algorithm
--- http_config
    presence_jwt_secret "x";
    presence_jwt_algorithms None;
--- must_die
--- error_log
presence_jwt_algorithms: "None" is never accepted



=== RS256 allowed without a public key
--- http_config
    presence_jwt_secret "x";
    presence_jwt_algorithms HS256 RS256;
--- must_die
--- error_log
presence_jwt_algorithms: RS256 is allowed but no key can verify it (presence_jwt_key_file)



=== the default HS256 without a secret
--- http_config
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/rsa.pub;
--- must_die
--- error_log
presence_jwt_algorithms: HS256 is allowed but no key can verify it (presence_jwt_secret)



=== ES384 allowed with only a P-256 key
--- http_config
    presence_jwt_algorithms ES256 ES384;
    presence_jwt_key_file $TEST_NGINX_KEYS_DIR/ec256.pub;
--- must_die
--- error_log
ES384 is allowed but no key can verify it



=== duplicate algorithms, issuer, audience
--- http_config
    presence_jwt_secret "x";
    presence_jwt_issuer a;
    presence_jwt_issuer b;
--- must_die
--- error_log
"presence_jwt_issuer" directive is duplicate



=== an empty claim name
--- http_config
    presence_jwt_secret "x";
    presence_jwt_claim "";
--- must_die
--- error_log
"presence_jwt_claim" must not be empty



=== a bad leeway
--- http_config
    presence_jwt_secret "x";
    presence_jwt_leeway soon;
--- must_die
--- error_log
"presence_jwt_leeway" directive invalid value



=== presence_jwt_secret is not allowed in a location
--- config
    location = /t {
        presence_jwt_secret "x";
    }
--- must_die
--- error_log
"presence_jwt_secret" directive is not allowed here
