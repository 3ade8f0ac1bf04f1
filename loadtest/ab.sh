#!/usr/bin/env bash
# Two aigw builds against each other in one sitting: the same `aigw mock`,
# both gateways up at once (2 workers each, defaults), wrk -t2 -c64 runs of
# 5 s alternating between them. On a shared 2-core machine the same build
# moves by ±10% from one run to the next; alternating in one sitting is how
# two builds can be told apart.
#
#   loadtest/ab.sh BUILD_A BUILD_B [ROUNDS] [SCRIPT]   (SCRIPT: chat.lua, chat-stream.lua, …)
#
# Prints req/s per round for each build. Needs wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1
b=$2
rounds=${3:-4}
script=${4:-chat.lua}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mock=$(port)
"$a" mock --listen "127.0.0.1:$mock" >/dev/null 2>&1 &
declare -A url
for name in a b; do
  p=$(port)
  cat > "$dir/$name.toml" <<TOML
[server]
listen = "127.0.0.1:$p"
admin_listen = "127.0.0.1:$(port)"
workers = 2

[providers.mock]
kind = "mock"
base_url = "http://127.0.0.1:$mock"
pool_max_idle = 512
TOML
  bin=$a
  [ "$name" = b ] && bin=$b
  "$bin" serve --config "$dir/$name.toml" >/dev/null 2>&1 &
  url[$name]="http://127.0.0.1:$p/mock/v1/chat/completions"
done
for name in a b; do
  for _ in $(seq 1 50); do curl -s -o /dev/null "${url[$name]%/chat/completions}/models" && break; sleep 0.1; done
done
declare -A got
for _ in $(seq 1 "$rounds"); do
  for name in a b; do
    rps=$(wrk -t2 -c64 -d5s -s "loadtest/$script" "${url[$name]}" | sed -n 's/^RESULT .*rps=\([0-9.]*\).*/\1/p')
    got[$name]="${got[$name]:-} $rps"
  done
done
echo "A $a:${got[a]}"
echo "B $b:${got[b]}"
