#!/usr/bin/env bash
# Where a request's CPU goes at saturation, kernel against user space, for
# nginx and aigw in front of the same mock: each runs `wrk -t2 -c64` for
# DURATION seconds under a system-wide `perf record -e cpu-clock`, and the
# samples of its own threads are split by where they landed.
#
#   [DURATION=8] [TOP=15] [RATE=200] loadtest/cpusplit.sh [BINARY]
#
# RATE: a fixed rate instead of saturation (oha -q RATE -c 8, latency
# corrected, the light-load figure of issue 12), sampled at 10 kHz.
#
# Prints, per contender: req/s, and µs of CPU per request in the kernel, in
# user space (its binary, libc, vdso), and for the mock and wrk; then the
# gateway's top user-space symbols. Uses loadtest/hypermock (built on first
# use) with 2 workers each. Needs perf, wrk and nginx; run as root (perf
# -a). On a shared machine req/s moves by ±20% from minute to minute; the
# per-request split moves much less.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/aigw}")
duration=${DURATION:-8}
top=${TOP:-15}
mock=loadtest/hypermock/target/release/hypermock
[ -x "$mock" ] || cargo build -q --release --manifest-path loadtest/hypermock/Cargo.toml
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mport=$(port) nport=$(port) aport=$(port)
"$mock" --listen "127.0.0.1:$mport" >/dev/null 2>&1 &
cat > "$dir/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body; proxy_temp_path $dir/proxy; fastcgi_temp_path $dir/fcgi;
    uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
    upstream mock { server 127.0.0.1:$mport; keepalive 512; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$nport reuseport backlog=4096;
        keepalive_requests 1000000;
        location /mock/ {
            proxy_pass http://mock/; proxy_http_version 1.1; proxy_set_header Connection "";
            proxy_buffering off; proxy_request_buffering off;
        }
    }
}
CONF
nginx -c "$dir/nginx.conf" -p "$dir" &
cat > "$dir/gw.toml" <<TOML
[server]
listen = "127.0.0.1:$aport"
admin_listen = "127.0.0.1:$(port)"
workers = 2

[providers.mock]
kind = "mock"
base_url = "http://127.0.0.1:$mport"
pool_max_idle = 512
TOML
"$bin" serve --config "$dir/gw.toml" >/dev/null 2>&1 &
for p in $nport $aport; do
  for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done
done
for name in nginx aigw; do
  p=$nport
  [ "$name" = aigw ] && p=$aport
  url="http://127.0.0.1:$p/mock/v1/chat/completions"
  wrk -t2 -c64 -d2s -s loadtest/chat.lua "$url" >/dev/null
  if [ -n "${RATE:-}" ]; then
    body=$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" loadtest/chat.lua)
    perf record -q -e cpu-clock -F 10000 -a -o "$dir/$name.perf" -- \
      oha -q "$RATE" -c 8 -z "${duration}s" --latency-correction --no-tui -m POST \
      -H 'content-type: application/json' -d "$body" "$url" >/dev/null 2>&1
    echo "rps=$RATE" > "$dir/$name.wrk"
  else
    perf record -q -e cpu-clock -a -o "$dir/$name.perf" -- \
      wrk -t2 -c64 -d"${duration}s" -s loadtest/chat.lua "$url" > "$dir/$name.wrk" 2>/dev/null
  fi
  perf report -i "$dir/$name.perf" --sort comm,dso --stdio -g none 2>/dev/null > "$dir/$name.dso"
  perf report -i "$dir/$name.perf" --comm "$([ $name = aigw ] && echo aigw-0,aigw-1 || echo nginx)" \
    --no-children --sort dso,sym --stdio -g none 2>/dev/null | grep -v '\[k\]' > "$dir/$name.sym" || true
done
python3 - "$dir" "$duration" "$top" <<'PY'
import re, sys, os
d, duration, top = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
for name in ("nginx", "aigw"):
    rps = float(re.search(r"rps=([\d.]+)", open(f"{d}/{name}.wrk").read()).group(1))
    reqs = rps * duration
    split = {"kernel": 0.0, "user": 0.0, "mock+wrk": 0.0}
    # Shares times the sampled time, not times cpus × duration: an idle
    # CPU is sampled less often than the asked-for rate (NOHZ), which
    # under light load would inflate every share.
    sampled_ns = float(re.search(r"Event count \(approx\.\): (\d+)", open(f"{d}/{name}.dso").read()).group(1))
    for line in open(f"{d}/{name}.dso"):
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+(.+?)\s*$", line)
        if not m:
            continue
        pct, comm, dso = float(m.group(1)), m.group(2), m.group(3)
        mine = comm == "nginx" if name == "nginx" else comm.startswith("aigw")
        if mine:
            split["kernel" if dso == "[kernel.kallsyms]" else "user"] += pct
        elif comm.startswith(("tokio-rt", "hypermock", "wrk", "oha")):
            split["mock+wrk"] += pct
    us = {k: v / 100 * sampled_ns / 1e3 / reqs for k, v in split.items()}
    print(f"{name:6} {rps:9.0f} req/s   µs/request: kernel {us['kernel']:5.1f}  user {us['user']:5.1f}"
          f"  (mock + wrk {us['mock+wrk']:5.1f})")
print(f"\naigw's top user-space symbols (% of all samples):")
n = 0
for line in open(f"{d}/aigw.sym"):
    if re.match(r"\s*[\d.]+%", line) and n < top:
        print("  " + line.strip()[:110])
        n += 1
PY
