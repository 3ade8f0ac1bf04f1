#!/usr/bin/env bash
# Memory of one gateway under 1,000 paced streams, split into anonymous
# memory (heap) and file-backed pages (the binary's code and data):
# idle, peak while wrk holds the streams, and 3 / 10 s after the load.
#
#   loadtest/rss.sh [BINARY] [SECONDS] [warm]
#
# `warm` first sends 20 streams and 1 s of chat and waits 12 s, so "idle"
# is a process that has run every path once (code paged in, the request
# ring filled). Needs wrk. 1 worker, the embedded mock on its own port.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/aigw}
secs=${2:-8}
warm=${3:-}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
cat > "$dir/gw.toml" <<TOML
[server]
listen = "127.0.0.1:18480"
admin_listen = "127.0.0.1:18481"
workers = 1

[providers.mock]
kind = "mock"
base_url = "http://127.0.0.1:18490"
pool_max_idle = 512
TOML
"$bin" mock --listen 127.0.0.1:18490 --workers 1 >/dev/null 2>&1 &
"$bin" serve --config "$dir/gw.toml" >"$dir/gw.log" 2>&1 &
gw=$!
for _ in $(seq 1 50); do curl -s -o /dev/null localhost:18480/mock/v1/models && break; sleep 0.2; done
url=http://127.0.0.1:18480/mock/v1/chat/completions
sleep 2 # the start's own garbage goes back first
if [ -n "$warm" ]; then
  wrk -t1 -c20 -d1s -s loadtest/chat-stream-paced.lua "$url" >/dev/null
  wrk -t1 -c4 -d1s -s loadtest/chat.lua "$url" >/dev/null
  sleep 12
fi
st() { awk '/^(VmRSS|RssAnon|RssFile):/ {printf "%s %.1f  ", $1, $2 / 1024}' "/proc/$gw/status"; }
echo "idle:       $(st)MiB"
wrk -t2 -c1000 -d"${secs}s" --timeout 10s -s loadtest/chat-stream-paced.lua "$url" >"$dir/wrk.out" &
w=$!
peak=0
while kill -0 "$w" 2>/dev/null; do
  r=$(awk '/^VmRSS:/ {print $2}' "/proc/$gw/status")
  [ "$r" -gt "$peak" ] && peak=$r
  sleep 0.1
done
echo "peak:       VmRSS: $(awk -v p="$peak" 'BEGIN {printf "%.1f", p / 1024}') MiB"
sleep 3
echo "3 s after:  $(st)MiB"
sleep 7
echo "10 s after: $(st)MiB"
grep RESULT "$dir/wrk.out" | cut -d' ' -f2-4,9
