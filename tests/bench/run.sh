#!/usr/bin/env bash
# Load benchmark: an authenticated request through sekisho vs. the same upstream through a plain
# nginx reverse proxy and direct, interleaved, with the proxies' CPU time per request.
# See tests/bench/README.md. Environment knobs (defaults in brackets):
#   DURATION [10s]  CONNECTIONS [32]  THREADS [1]  ROUNDS [3]  WARMUP [2s, 0 to skip]
#   IDLE_CONNECTIONS [10000; 0 skips the idle-memory phase]  HANDSHAKES [2000; 0 skips]
#   NGINX_WORKERS [1; the nginx proxy's worker_processes, e.g. auto (one per core, as sekisho)]
#   KEEP_TMP [unset; 1 keeps the temp dir with configs and logs]
#   SEKISHO_BIN [unset; a prebuilt sekisho binary to measure instead of building the workspace]
#   BASE_BIN [unset; a second sekisho binary (e.g. the previous commit's) measured in the same
#             run, interleaved, as "base": before/after on the same machine state]
#   FLOOR_BIN [unset; the bare hyper proxy of tests/examples/hyper_floor.rs, measured as
#              "floor": what the runtime, server, client and pool cost without sekisho's work]
# Exit status: 0 whether or not the CPU target is met (this is a benchmark, not a test);
# 1 on a setup failure; 3 when a measured run saw errors or non-2xx answers (numbers invalid).
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2s}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
HANDSHAKES=${HANDSHAKES:-2000}
NGINX_WORKERS=${NGINX_WORKERS:-1}
# 10,000 idle connections need more descriptors than the usual 1024 (sekisho and the client
# inherit this limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=(python3 "$HERE/bench.py")

die() { echo "bench: setup failed: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

for tool in wrk nginx node curl python3 openssl getconf cargo; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- build
if [[ -n ${SEKISHO_BIN:-} ]]; then
    # A prebuilt binary (e.g. a release build of another commit); no build.
    [[ -x $SEKISHO_BIN ]] || die "SEKISHO_BIN=$SEKISHO_BIN is not an executable"
    log "using prebuilt $SEKISHO_BIN"
else
    log "building sekisho (release)"
    (cd "$ROOT" && cargo build --quiet --release -p sekisho --bin sekisho) || die "cargo build --release -p sekisho failed"
    SEKISHO_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/sekisho
    [[ -x $SEKISHO_BIN ]] || die "$SEKISHO_BIN missing after the build"
fi

# ---------------------------------------------------------------- temp dir, cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sekisho-bench.XXXXXX")
chmod 755 "$TMP"   # nginx workers run as `nobody` when the script runs as root
PIDS=()
cleanup() {
    local rc=$?
    local pid i
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ -n ${KEEP_TMP:-} ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until FILE holds a complete first line (a readiness line), or PID dies.
wait_line() {
    local file=$1 pid=$2 name=$3 i
    for i in $(seq 300); do
        if [[ -s $file && $(wc -l <"$file") -ge 1 ]]; then return 0; fi
        kill -0 "$pid" 2>/dev/null || die "$name exited before it was ready; its log:
$(cat "$TMP/$name.log" 2>/dev/null)"
        sleep 0.1
    done
    die "$name did not announce readiness within 30 s"
}

# ---------------------------------------------------------------- nginx instances
# start_nginx NAME HTTP_BLOCK_BODY [WORKERS]: runs `nginx` (master + WORKERS workers, default 1,
# foreground) from $TMP/NAME,
# listening on 127.0.0.1:@PORT@; sets NAME_PID (the master) and NAME_PORT.
# nginx cannot listen on port 0, so the port comes from `bench.py free-port`, which binds port 0
# and closes the socket again. That is racy: another process may take the port before nginx binds
# it. A lost race shows up as nginx exiting with "Address already in use" (we retry with a new port)
# or, in theory, as someone else answering on the port (the body check below catches that).
start_nginx() {
    local name=$1 body=$2 workers=${3:-1} dir=$TMP/$1 attempt port pid i
    mkdir -p "$dir/tmp"
    for attempt in 1 2 3 4 5; do
        port=$("${PY[@]}" free-port) port2=$("${PY[@]}" free-port) port3=$("${PY[@]}" free-port)
        cat >"$dir/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 30000; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    default_type text/plain;
    # nginx closes a client keep-alive connection after 1000 requests by default; sekisho does not.
    # Raise the limit so that neither side of the comparison pays for reconnects.
    keepalive_requests 1000000;
    keepalive_timeout 75s;
$(b=${body//@PORT@/$port}; b=${b//@PORT2@/$port2}; echo "${b//@PORT3@/$port3}")
}
EOF
        nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
        pid=$!
        # Ready once the master has forked its worker (it binds before forking).
        for i in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            [[ -n $(cat "/proc/$pid/task/$pid/children" 2>/dev/null) ]] && break
            sleep 0.05
        done
        if kill -0 "$pid" 2>/dev/null; then
            PIDS+=("$pid")
            printf -v "${name}_PID" '%s' "$pid"
            printf -v "${name}_PORT" '%s' "$port"
            printf -v "${name}_PORT2" '%s' "$port2"
            printf -v "${name}_PORT3" '%s' "$port3"
            return 0
        fi
        if grep -q "Address already in use" "$dir/error.log" "$dir/stdout.log" 2>/dev/null; then
            log "$name: port $port was taken meanwhile (attempt $attempt), retrying"
            continue
        fi
        die "nginx ($name) did not start: $(cat "$dir/error.log" "$dir/stdout.log" 2>/dev/null)"
    done
    die "nginx ($name) lost the free-port race 5 times"
}

# The upstream: a fixed 3-byte 200 for every path but /.bench/identity, which reports what the
# proxy passed on (identity headers, assertion, cookies) so that the setup can check it.
start_nginx UP '    server {
        listen 127.0.0.1:@PORT@;
        location / { return 200 "ok\n"; }
        location = /.bench/identity {
            return 200 "user=$http_x_sekisho_user\nemail=$http_x_sekisho_email\ngroups=$http_x_sekisho_groups\nassertion=$http_x_sekisho_jwt_assertion\ncookie=$http_cookie\n";
        }
    }'
UPSTREAM=http://127.0.0.1:$UP_PORT

# One certificate for both TLS proxies (ECDSA P-256, for localhost and 127.0.0.1).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$TMP/tls.key" -out "$TMP/tls.crt" \
    >/dev/null 2>&1 || die "openssl could not make the test certificate"
chmod 644 "$TMP/tls.key"   # nginx workers run as nobody under root

# The plain nginx reverse proxy, with an HTTP/1.1 keep-alive pool to the upstream: HTTP/1.1 on
# @PORT@, HTTP/2 with prior knowledge (h2c) on @PORT2@, TLS (HTTP/1.1 and h2 by ALPN, session
# cache and tickets on) on @PORT3@.
start_nginx NGX "    upstream backend {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    ssl_certificate $TMP/tls.crt;
    ssl_certificate_key $TMP/tls.key;
    ssl_protocols TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    server {
        listen 127.0.0.1:@PORT@;
        listen 127.0.0.1:@PORT2@ http2;
        listen 127.0.0.1:@PORT3@ ssl http2;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }" "$NGINX_WORKERS"
NGINX=http://127.0.0.1:$NGX_PORT
NGINX_H2=http://127.0.0.1:$NGX_PORT2
NGINX_TLS=https://localhost:$NGX_PORT3

[[ $(curl -sS --max-time 5 "$UPSTREAM/") == ok ]] || die "the upstream nginx on $UPSTREAM does not answer ok"
[[ $(curl -sS --max-time 5 "$NGINX/") == ok ]] || die "the nginx proxy on $NGINX does not answer the upstream's ok"
[[ $(curl -sS --max-time 5 --http2-prior-knowledge "$NGINX_H2/") == ok ]] || die "the nginx proxy's h2c port does not answer ok"
[[ $(curl -sS --max-time 5 --cacert "$TMP/tls.crt" "$NGINX_TLS/") == ok ]] || die "the nginx proxy's TLS port does not answer ok"
log "upstream nginx $UPSTREAM (pid $UP_PID), nginx proxy $NGINX (pid $NGX_PID)"

# ---------------------------------------------------------------- the test IdP
echo '{"clients": [], "port": 0}' >"$TMP/idp.json"
node "$ROOT/tests/node/idp.mjs" "$TMP/idp.json" >"$TMP/idp.out" 2>"$TMP/idp.log" &
IDP_PID=$!
PIDS+=("$IDP_PID")
wait_line "$TMP/idp.out" "$IDP_PID" idp
ISSUER=$("${PY[@]}" json-get "$TMP/idp.out" issuer)
log "IdP $ISSUER (pid $IDP_PID)"

# ---------------------------------------------------------------- sekisho
SEKDIR=$TMP/sekisho
mkdir -p "$SEKDIR"
"$SEKISHO_BIN" gen-cookie-key >"$SEKDIR/cookie.key" || die "sekisho gen-cookie-key failed"
"$SEKISHO_BIN" gen-signing-key >"$SEKDIR/signing.pem" || die "sekisho gen-signing-key failed"
CLIENT_SECRET=bench-client-secret-$RANDOM$RANDOM
cat >"$SEKDIR/sekisho.yaml" <<EOF
state_dir: state
server:
  http_listen: 127.0.0.1:0
  https_listen: 127.0.0.1:0
  tls:
    - cert_file: $TMP/tls.crt
      key_file: $TMP/tls.key
oidc:
  issuer: $ISSUER
  client_id: sekisho
  client_secret: {env: SEKISHO_BENCH_CLIENT_SECRET}
  scopes: [openid, email, profile, groups]
session:
  keys: [{file: cookie.key}]
signing:
  key: {file: signing.pem}
admin:
  listen: 127.0.0.1:0
  policy:
    allow: {and: [{groups: {has: admins}}]}
routes:
  - id: app
    from: http://127.0.0.1
    to: $UPSTREAM
  - id: app-tls
    from: https://localhost
    to: $UPSTREAM
EOF
# start_sekisho NAME BINARY CONFIG: runs `sekisho run` (tokio's default runtime shape, whatever
# the binary has), waits for its readiness line; sets NAME_PID, NAME_URL (http) and NAME_TLS.
start_sekisho() {
    local name=$1 bin=$2 config=$3 pid
    SEKISHO_LOG=warn SEKISHO_BENCH_CLIENT_SECRET=$CLIENT_SECRET \
        "$bin" run -c "$config" >"$TMP/$name.out" 2>"$TMP/$name.log" &
    pid=$!
    PIDS+=("$pid")
    wait_line "$TMP/$name.out" "$pid" "$name"
    printf -v "${name}_PID" '%s' "$pid"
    printf -v "${name}_URL" '%s' "http://$("${PY[@]}" json-get "$TMP/$name.out" http)"
    printf -v "${name}_TLS" '%s' "https://localhost:$("${PY[@]}" json-get "$TMP/$name.out" https | sed 's/.*://')"
    printf -v "${name}_ADMIN" '%s' "http://$("${PY[@]}" json-get "$TMP/$name.out" admin)"
    log "$name: $bin (pid $pid) on $(eval echo "\$${name}_URL") and $(eval echo "\$${name}_TLS")"
}
start_sekisho sekisho "$SEKISHO_BIN" "$SEKDIR/sekisho.yaml"
SEK_PID=$sekisho_PID SEKISHO=$sekisho_URL SEKISHO_TLS=$sekisho_TLS

# A second sekisho, the same but with `audit.durability: strict` (every response waits for its
# audit record's fdatasync); the same keys, so the same session cookie gets through.
sed -e 's/^state_dir: state$/state_dir: state-strict/' "$SEKDIR/sekisho.yaml" >"$SEKDIR/strict.yaml"
printf 'audit:\n  durability: strict\n' >>"$SEKDIR/strict.yaml"
start_sekisho strict "$SEKISHO_BIN" "$SEKDIR/strict.yaml"
STRICT_PID=$strict_PID STRICT=$strict_URL

# The baseline binary, when given: the same configuration and keys.
if [[ -n ${BASE_BIN:-} ]]; then
    [[ -x $BASE_BIN ]] || die "BASE_BIN=$BASE_BIN is not an executable"
    sed -e 's/^state_dir: state$/state_dir: state-base/' "$SEKDIR/sekisho.yaml" >"$SEKDIR/base.yaml"
    start_sekisho base "$BASE_BIN" "$SEKDIR/base.yaml"
    BASE_PID=$base_PID BASE=$base_URL BASE_TLS=$base_TLS
fi

# The bare hyper proxy, when given (`FLOOR_BIN`, tests/examples/hyper_floor.rs): the same
# runtime shape, server, client and pool as sekisho with nothing else, towards the same upstream.
if [[ -n ${FLOOR_BIN:-} ]]; then
    [[ -x $FLOOR_BIN ]] || die "FLOOR_BIN=$FLOOR_BIN is not an executable"
    "$FLOOR_BIN" 127.0.0.1:0 "127.0.0.1:$UP_PORT" >"$TMP/floor.out" 2>"$TMP/floor.log" &
    FLOOR_PID=$!
    PIDS+=("$FLOOR_PID")
    wait_line "$TMP/floor.out" "$FLOOR_PID" floor
    FLOOR=http://$("${PY[@]}" json-get "$TMP/floor.out" http)
    [[ $(curl -sS --max-time 5 "$FLOOR/") == ok ]] || die "the bare hyper proxy does not answer ok"
    log "floor: $FLOOR_BIN (pid $FLOOR_PID) on $FLOOR"
fi

# Register sekisho at the IdP now that its port is known.
curl -sS --fail-with-body --max-time 10 -H 'Content-Type: application/json' -o "$TMP/register.out" \
    -d "{\"client_id\":\"sekisho\",\"client_secret\":\"$CLIENT_SECRET\",
         \"redirect_uris\":[\"$SEKISHO/.sekisho/callback\",\"$SEKISHO_TLS/.sekisho/callback\"],
         \"post_logout_redirect_uris\":[\"$SEKISHO/.sekisho/signed-out\"],
         \"id_token_signed_response_alg\":\"ES256\",
         \"token_endpoint_auth_method\":\"client_secret_basic\"}" \
    "$ISSUER/test/clients" || die "registering the client at the IdP: $(cat "$TMP/register.out" 2>/dev/null)"

# ---------------------------------------------------------------- login with curl
# proxy 302 → IdP /auth 303 → POST /interaction/UID/login 303 → /auth/UID 303 → proxy callback 302.
# One cookie jar; every hop's status and target is checked.
JAR=$TMP/cookies.txt
: >"$JAR"
HOP_CODE='' HOP_URL=''
hop() { # EXPECTED_STATUS DESCRIPTION CURL_ARGS...
    local want=$1 what=$2 out
    shift 2
    out=$(curl -sS --max-time 10 --cacert "$TMP/tls.crt" -c "$JAR" -b "$JAR" -H 'Accept: text/html' -o "$TMP/hop.body" \
        -w '%{http_code} %{redirect_url}' "$@") || die "login hop '$what': curl failed"
    HOP_CODE=${out%% *} HOP_URL=${out#* }
    [[ $HOP_CODE == "$want" && -n $HOP_URL ]] ||
        die "login hop '$what' answered $HOP_CODE (expected $want) → '$HOP_URL'; body: $(head -c 500 "$TMP/hop.body")"
}
# login BASE_URL: the session cookie for BASE_URL's scheme (http and https cookies differ).
login() {
    local base=$1
    : >"$JAR"
    hop 302 "proxy → IdP" "$base/"
    [[ $HOP_URL == "$ISSUER"/auth* ]] || die "sekisho redirected to $HOP_URL, not the IdP's /auth"
    hop 303 "IdP /auth → login form" "$HOP_URL"
    [[ $HOP_URL == "$ISSUER"/interaction/* ]] || die "IdP /auth sent us to $HOP_URL, not its login form"
    hop 303 "login form POST" -d login=alice -d password=alice-pw "${HOP_URL%/}/login"
    hop 303 "IdP resume → callback" "$HOP_URL"
    [[ $HOP_URL == "$base"/.sekisho/callback* ]] || die "IdP sent us to $HOP_URL, not sekisho's callback"
    hop 302 "sekisho callback" "$HOP_URL"
    "${PY[@]}" cookie "$JAR" _sekisho __Host-_sekisho || die "no sekisho session cookie after the login"
}
COOKIE=$(login "$SEKISHO")
COOKIE_TLS=$(login "$SEKISHO_TLS")
log "logged in as alice; session cookie ${#COOKIE} bytes"

# ---------------------------------------------------------------- checks before measuring
status=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -H 'Accept: application/json' "$SEKISHO/")
[[ $status == 401 ]] || die "an unauthenticated API request to sekisho answered $status, expected 401"
curl -sv --max-time 5 -H "Cookie: $COOKIE" "$SEKISHO/" >"$TMP/auth.body" 2>"$TMP/auth.verbose" ||
    die "authenticated request to sekisho failed: $(cat "$TMP/auth.verbose")"
grep -q '^< HTTP/1.1 200' "$TMP/auth.verbose" && [[ $(cat "$TMP/auth.body") == ok ]] ||
    die "authenticated request through sekisho did not get the upstream's 200 ok:
$(cat "$TMP/auth.verbose" "$TMP/auth.body")"
curl -sS --fail --max-time 5 -H "Cookie: $COOKIE" -o "$TMP/identity.body" "$SEKISHO/.bench/identity" ||
    die "authenticated request for /.bench/identity failed"
curl -sS --fail --max-time 5 -o "$TMP/jwks.json" "$SEKISHO/.well-known/sekisho/jwks.json" ||
    die "fetching sekisho's JWKS failed"
"${PY[@]}" check-identity "$TMP/identity.body" "$TMP/jwks.json" >&2 || die "identity check failed"

# ---------------------------------------------------------------- measuring
RESULTS=$TMP/results.jsonl
: >"$RESULTS"
# run_wrk ROUND TARGET DURATION: one wrk run; CPU of the process(es) under test and of the upstream
# read from /proc before and after it (ROUND 0 = warm-up, not recorded).
run_wrk() {
    local round=$1 target=$2 duration=$3 url pids c0 c1 u0 u1 out=$TMP/wrk-$1-$2.out cookie=''
    local extra=()
    case $target in
        direct) url=$UPSTREAM/ pids=$UP_PID ;;
        nginx) url=$NGINX/ pids=$NGX_PID ;;
        nginx-tls) url=$NGINX_TLS/ pids=$NGX_PID ;;
        floor) url=$FLOOR/ pids=$FLOOR_PID ;;
        sekisho) url=$SEKISHO/ pids=$SEK_PID cookie=COOKIE ;;
        sekisho-tls) url=$SEKISHO_TLS/ pids=$SEK_PID cookie=COOKIE_TLS ;;
        strict) url=$STRICT/ pids=$STRICT_PID cookie=COOKIE ;;
        base) url=$BASE/ pids=$BASE_PID cookie=COOKIE ;;
        base-tls) url=$BASE_TLS/ pids=$BASE_PID cookie=COOKIE_TLS ;;
    esac
    if [[ -n $cookie ]]; then
        # sekisho re-issues the session cookie when its activity stamp is over a minute old
        # (`seen_at`, a tenth of the idle lifetime, at most 60 s). A browser takes the new cookie;
        # wrk keeps sending the one it started with. Take it here, as a browser would, so that
        # each run (if shorter than that minute) measures plain authenticated requests rather
        # than a re-seal and nine Set-Cookie headers on every answer.
        curl -sS --max-time 5 --cacert "$TMP/tls.crt" -D "$TMP/refresh.headers" -o /dev/null \
            -H "Cookie: ${!cookie}" "$url" || die "refreshing the session cookie failed"
        printf -v "$cookie" '%s' "$("${PY[@]}" refresh-cookie "$TMP/refresh.headers" "${!cookie}")" ||
            die "the session cookie was deleted"
        extra=(-H "Cookie: ${!cookie}")
    fi
    c0=$("${PY[@]}" cpu "$pids") u0=$("${PY[@]}" cpu "$UP_PID")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" --timeout 5s -s "$HERE/report.lua" "${extra[@]}" "$url" >"$out" 2>&1 ||
        die "wrk against $target failed: $(cat "$out")"
    c1=$("${PY[@]}" cpu "$pids") u1=$("${PY[@]}" cpu "$UP_PID")
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || die "process $pid died during the $target run"; done
    if [[ $round != 0 ]]; then
        "${PY[@]}" record "$RESULTS" "$round" "$target" "$out" "$c0" "$c1" "$u0" "$u1" || die "reading wrk output $out"
        log "round $round/$ROUNDS $target: $(grep -m1 'Requests/sec' "$out" | tr -s ' ')"
    fi
}

# The order within a round matters: a target measured after the strict instance shares the
# machine with the writeback of strict's fsynced log (a base build placed there measured ~10%
# more CPU per request than the same binary in sekisho's place). So strict runs last, followed
# by a `sync` that waits for that writeback, and sekisho and base swap places every other round
# (any remaining effect of going first or second cancels out over an even number of rounds).
order() {
    local round=$1 first=sekisho second=base
    if [[ -n ${BASE_BIN:-} ]] && (( round % 2 == 0 )); then first=base second=sekisho; fi
    TARGETS=(direct nginx)
    [[ -n ${FLOOR_BIN:-} ]] && TARGETS+=(floor)
    TARGETS+=("$first")
    [[ -n ${BASE_BIN:-} ]] && TARGETS+=("$second")
    TARGETS+=(nginx-tls "$first-tls")
    [[ -n ${BASE_BIN:-} ]] && TARGETS+=("$second-tls")
    TARGETS+=(strict)
}
run_round() {
    local round=$1 duration=$2 target
    order "$round"
    for target in "${TARGETS[@]}"; do
        run_wrk "$round" "$target" "$duration"
        [[ $target == strict ]] && sync
    done
}
order 1
log "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS rounds, interleaved ${TARGETS[*]} (sekisho and base swap places in even rounds)"
if [[ $WARMUP != 0 ]]; then
    run_round 0 "$WARMUP"
fi
for round in $(seq "$ROUNDS"); do
    run_round "$round" "$DURATION"
done

# The session must still be good at the end (else the sekisho numbers measured rejections).
[[ $(curl -sS --max-time 5 -H "Cookie: $COOKIE" "$SEKISHO/") == ok ]] ||
    die "the session cookie no longer gets through sekisho after the runs"

# ---------------------------------------------------------------- idle connections
# RSS growth per idle keep-alive client connection (one request made on each, then left open),
# HTTP/1.1 and HTTP/2 (h2c with prior knowledge), each server measured on its own.
IDLE=$TMP/idle.jsonl
: >"$IDLE"
if [[ $IDLE_CONNECTIONS != 0 ]]; then
    idle_targets=(nginx sekisho)
    [[ -n ${BASE_BIN:-} ]] && idle_targets+=(base)
    for target in "${idle_targets[@]}"; do
        for proto in h1 h2; do
            # sekisho: a fresh process per protocol, so that neither measurement lands in memory
            # the allocator kept from the other (or from the load runs). nginx: the running one
            # (its workers free a connection's buffers when it goes idle).
            fresh=''
            case $target in
                nginx) pids=$NGX_PID url=$NGINX/ cookie='' metrics='' ; [[ $proto == h2 ]] && url=$NGINX_H2/ ;;
                sekisho|base)
                    bin=$SEKISHO_BIN; [[ $target == base ]] && bin=$BASE_BIN
                    fresh=idle_${target}_$proto
                    sed -e "s/^state_dir: state\$/state_dir: state-$fresh/" "$SEKDIR/sekisho.yaml" >"$SEKDIR/$fresh.yaml"
                    start_sekisho "$fresh" "$bin" "$SEKDIR/$fresh.yaml"
                    pids=$(eval echo "\$${fresh}_PID") url=$(eval echo "\$${fresh}_URL")/ cookie=$COOKIE
                    metrics=$(eval echo "\$${fresh}_ADMIN")/metrics ;;
            esac
            out=$("${PY[@]}" idle "$pids" "$url" "$IDLE_CONNECTIONS" "$proto" "$cookie" "$metrics") ||
                die "idle connections to $target ($proto) failed"
            echo "{\"target\": \"$target\", ${out#\{}" >>"$IDLE"
            log "idle $target $proto: $out"
            if [[ -n $fresh ]]; then
                kill -TERM "$pids" 2>/dev/null || true
                wait "$pids" 2>/dev/null || true
            fi
        done
    done
fi

# ---------------------------------------------------------------- TLS handshakes
HS=$TMP/handshakes.jsonl
: >"$HS"
if [[ $HANDSHAKES != 0 ]]; then
    hs_targets=(nginx-tls sekisho-tls)
    [[ -n ${BASE_BIN:-} ]] && hs_targets+=(base-tls)
    for round in 1 2; do
        for target in "${hs_targets[@]}"; do
            for mode in full resumed; do
                case $target in
                    nginx-tls) pids=$NGX_PID port=$NGX_PORT3 ;;
                    sekisho-tls) pids=$SEK_PID port=${SEKISHO_TLS##*:} ;;
                    base-tls) pids=$BASE_PID port=${BASE_TLS##*:} ;;
                esac
                out=$("${PY[@]}" handshakes "$pids" 127.0.0.1 "$port" "$HANDSHAKES" "$mode" "$CLK_TCK") ||
                    die "TLS handshakes with $target failed"
                echo "{\"target\": \"$target\", \"round\": $round, ${out#\{}" >>"$HS"
                log "handshakes $target $mode: $out"
            done
        done
    done
fi

if [[ -s $TMP/sekisho.log ]]; then
    log "sekisho logged $(wc -l <"$TMP/sekisho.log") warning/error line(s); last ones:"
    tail -n 5 "$TMP/sekisho.log" >&2
fi

echo "sekisho load benchmark — $(nproc) cores, $(uname -r), wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS rounds, CLK_TCK=$CLK_TCK"
echo "upstream: nginx (1 worker) return 200 \"ok\\n\"; nginx proxy: $NGINX_WORKERS worker(s), keepalive 64 pool; sekisho: release, SEKISHO_LOG=warn${BASE_BIN:+; base: $BASE_BIN}"
"${PY[@]}" report "$RESULTS" "$CLK_TCK" "$IDLE" "$HS"
