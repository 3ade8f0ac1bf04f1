#!/usr/bin/env bash
# Instructions per proxied request, under valgrind's callgrind: a figure
# that does not move with the other core's load, for comparing two builds.
#
#   [TOP=N] [PACE_MS=M] [KEEP=FILE] loadtest/instructions.sh [BINARY|nginx] [stream]
#
# `nginx` counts nginx's instructions the same way (compare.sh's /mock/
# pass-through, one process), for the baseline.
# PACE_MS: the mock sends a stream's events M ms apart (x-mock-delay-ms),
# each in its own write, as real providers do; unpaced, the mock writes a
# stream in one or two segments and the gateway reads it in one or two.
# Starts `aigw mock` and the gateway (epoll driver, 1 worker) under
# callgrind, sends 300 keep-alive chat completions to warm up, zeroes the
# counters, sends 2,000 more, dumps, and prints Ir / request. Needs
# valgrind (apt-get install valgrind) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/aigw}
stream=${2:-}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
cat > "$dir/gw.toml" <<TOML
[server]
listen = "127.0.0.1:18080"
admin_listen = "127.0.0.1:18090"
workers = 1
io_driver = "epoll"
pin_workers = false

[providers.mock]
kind = "mock"
base_url = "http://127.0.0.1:18081"
TOML
if [ "$bin" = nginx ]; then
  # The baseline: nginx with nginx.conf.template's /mock/ pass-through and
  # upstream pool, one process (no master), in front of the same mock.
  cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    upstream mock { server 127.0.0.1:18081; keepalive 512; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:18080;
        keepalive_requests 1000000;
        location /mock/ {
            proxy_pass http://mock/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
CONF
  target/release/aigw mock --listen 127.0.0.1:18081 >/dev/null 2>&1 &
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" nginx -c "$dir/nginx.conf" -p "$dir" >/dev/null 2>&1 &
else
  "$bin" mock --listen 127.0.0.1:18081 >/dev/null 2>&1 &
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin" serve --config "$dir/gw.toml" >/dev/null 2>&1 &
fi
vg=$!
for _ in $(seq 1 120); do curl -s -o /dev/null localhost:18080/mock/v1/models && break; sleep 0.5; done
drive() {
  python3 - "$1" "$stream" "${PACE_MS:-0}" <<'PY'
import http.client, json, sys
n, stream, pace = int(sys.argv[1]), sys.argv[2] == "stream", sys.argv[3]
body = json.dumps({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hello there, how are you today?"}]})
c = http.client.HTTPConnection("127.0.0.1", 18080)
for _ in range(n):
    c.request("POST", "/mock/v1/chat/completions", body, {"Content-Type": "application/json", "x-mock-delay-ms": pace})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
}
drive 300
sleep 1
callgrind_control -z "$vg" >/dev/null
drive 2000
sleep 1
callgrind_control -d "$vg" >/dev/null
sleep 1
out=$(ls -t "$dir"/cg.out.* | head -1)
ir=$(grep -m1 "^summary:\|^totals:" "$out" | awk '{print $2}')
echo "$bin${stream:+ (stream)}${PACE_MS:+ paced $PACE_MS ms}: $((ir / 2000)) instructions per request"
# KEEP=FILE: keep callgrind's output, e.g. for callgrind_annotate --tree=caller.
if [ -n "${KEEP:-}" ]; then cp "$out" "$KEEP"; fi
# TOP=N: also the N functions that cost the most (self), per request.
if [ -n "${TOP:-}" ]; then
  callgrind_annotate --threshold=100 "$out" 2>/dev/null | awk -v top="$TOP" '
    /^-+$/ { sep++; next }
    sep >= 3 && NF >= 2 && $1 ~ /^[0-9,]+$/ && n < top {
      ir = $1; gsub(",", "", ir); $1 = ""; printf "%8d  %s\n", ir / 2000, substr($0, 1, 150); n++ }'
fi
