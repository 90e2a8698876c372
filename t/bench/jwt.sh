#!/bin/bash
# JWT verification speed: the verifier alone (verifications/s, one core,
# no cache), then through nginx (requests/s of a location answering
# $presence_jwt_status, one worker, wrk on loopback) with the per-worker
# cache on and off.  Prints a Markdown table.  Run by "make bench-jwt".

set -eu

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

: "${NGINX_BIN:?}" "${SO:?}"

out=build/bench-jwt
rm -rf "$out"
mkdir -p "$out/logs"

secret=bench-secret-0123456789abcdef
secs=${BENCH_SECONDS:-5}

cc -O2 -I ngx_http_presence_module t/bench/jwt_bench.c \
    ngx_http_presence_module/ngx_http_presence_jwt.c \
    -lcrypto -ljansson -lm -o "$out/jwt_bench"

perl -It/lib -MPresence::JWT -e '
    my ($out, $secret) = @ARGV;
    my $d = Presence::JWT::keys_dir();
    system("cp $d/rsa.pub $d/ec256.pub $out/") == 0 or die;
    for my $alg (qw(HS256 RS256 ES256)) {
        open my $f, ">", "$out/$alg.token" or die;
        print $f Presence::JWT::token(alg => $alg, sub => 42,
                                      exp => time + 86400,
                                      $alg eq "HS256" ? (key => $secret) : ());
        close $f;
    }' "$out" "$secret"

port=$(perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(Listen=>1,
       LocalAddr=>"127.0.0.1", LocalPort=>0)->sockport')

cat > "$out/nginx.conf" <<EOC
load_module $SO;
worker_processes 1;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    presence_jwt_secret "$secret";
    presence_jwt_key_file $repo/$out/rsa.pub;
    presence_jwt_key_file $repo/$out/ec256.pub;
    presence_jwt_algorithms HS256 RS256 ES256;
    server {
        listen 127.0.0.1:$port;
        location = /cached { return 200 "\$presence_jwt_status\n"; }
    }
}
EOC
sed -e 's/presence_jwt_algorithms/presence_jwt_cache 0;\n    &/' \
    "$out/nginx.conf" > "$out/nginx-nocache.conf"

run_wrk() {
    local conf=$1 token=$2
    "$NGINX_BIN" -p "$repo/$out/" -c "$repo/$out/$conf" -e logs/error.log
    sleep 0.3
    wrk -t1 -c8 -d"${secs}s" -H "Authorization: Bearer $token" \
        "http://127.0.0.1:$port/cached" | awk '/Requests\/sec/ { print $2 }'
    kill -QUIT "$(cat "$out/logs/nginx.pid")"
    sleep 0.5
}

echo "| algorithm | verifier alone, verifications/s | nginx, cache off, requests/s | nginx, cache on, requests/s |"
echo "| --- | ---: | ---: | ---: |"

for alg in HS256 RS256 ES256; do
    case $alg in
        HS256) key=$secret ;;
        RS256) key=$out/rsa.pub ;;
        ES256) key=$out/ec256.pub ;;
    esac
    token=$(cat "$out/$alg.token")
    cold=$("$out/jwt_bench" "$alg" "$key" "$out/$alg.token" "$secs")
    off=$(run_wrk nginx-nocache.conf "$token")
    on=$(run_wrk nginx.conf "$token")
    printf '| %s | %s | %s | %s |\n' "$alg" "$cold" "$off" "$on"
done
