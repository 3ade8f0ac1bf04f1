#!/usr/bin/env bash
# One-run comparison of direct-to-mock, nginx and aigw against the same
# `aigw mock`. Installs wrk, nginx and oha if missing, builds aigw and the
# streaming load client in release mode, then runs loadtest/compare.py.
#
#   loadtest/compare.sh                 # defaults: 1 worker each, no pinning
#   loadtest/compare.sh --pin --gw-cpus 0 --mock-cpus 1 --client-cpus 1
#   loadtest/compare.sh --workers 4 --pin --gw-cpus 0-3 --mock-cpus 4-7 --client-cpus 8-15
#
# See `loadtest/compare.py --help` for every flag.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null || { ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; }; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq wrk nginx-light >/dev/null 2>&1 || apt-get install -y -qq wrk nginx >/dev/null
fi
# oha: the fixed-rate (latency-corrected) measurements.
command -v oha >/dev/null || cargo install oha --locked
# 10,000 streams need ~20,000 descriptors in the gateway (client + upstream).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --bin aigw --example streamload
exec python3 loadtest/compare.py "$@"
