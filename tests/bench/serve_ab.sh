#!/usr/bin/env bash
# Two builds (or one build with two sets of options) of zaptid serve side by side: Gen under
# h2load, runs alternating A and B, so the ratio survives a noisy shared machine. Prints one row
# per load: medians of RUNS runs of req/s and server CPU per request for A and B.
#
#   tests/bench/serve_ab.sh ZAPTID_A ZAPTID_B [-- B's extra serve options…]
#   e.g. tests/bench/serve_ab.sh /tmp/main/build/cli/zaptid build/cli/zaptid -- --metrics-listen 127.0.0.1:0
#
# Needs h2load (Debian nghttp2-client). Loopback only; every process it starts is stopped on exit.
set -euo pipefail
a=$1 b=$2; shift 2
[ "${1:-}" = "--" ] && shift
runs=${RUNS:-5}
duration=${DURATION:-5}
# shellcheck source=serve_common.sh
. "$(dirname "$0")/serve_common.sh"

start() { # binary machine-id extra… → sets port, pid
  port=$(free_port)
  ZAPTID_STATE_DIR="$work/state$2" ZAPTID_HOST_DIR="$work/host" "$1" serve --listen "127.0.0.1:$port" \
    --machine-id "$2" --log-level warn "${@:3}" &
  pid=$!; pids+=("$pid"); wait_port "$port"
}
start "$a" 1; pa=$port; ida=$pid
start "$b" 2 "$@"; pb=$port; idb=$pid

hz=$(getconf CLK_TCK)
run() { # port pid load… → "req/s cpu_us_per_req"
  local port=$1 pid=$2; shift 2
  local t0 t1 out rps ok
  t0=$(cpu_ticks "$pid")
  out=$(h2load -D "$duration" "$@" -d "$work/empty.grpc" -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$port/idgen.IdGen/Gen" 2>&1)
  t1=$(cpu_ticks "$pid")
  rps=$(grep -oP 'finished in [^,]+, \K[0-9.]+(?= req/s)' <<<"$out")
  ok=$(grep -oP '\d+(?= succeeded)' <<<"$out")
  awk -v r="$rps" -v t="$((t1 - t0))" -v hz="$hz" -v n="$ok" 'BEGIN { printf "%s %.2f\n", r, n ? t / hz * 1e6 / n : 0 }'
}
printf '%-12s %10s %10s %7s %12s %12s %7s\n' load A_req/s B_req/s B/A A_cpu_us/req B_cpu_us/req B/A
for load in "-c 1 -m 1" "-c 4 -m 16" "-c 16 -m 64"; do
  ar=(); br=(); ac=(); bc=()
  for _ in $(seq "$runs"); do
    read -r r c < <(run "$pa" "$ida" $load); ar+=("$r"); ac+=("$c")
    read -r r c < <(run "$pb" "$idb" $load); br+=("$r"); bc+=("$c")
  done
  am=$(printf '%s\n' "${ar[@]}" | median); bm=$(printf '%s\n' "${br[@]}" | median)
  acm=$(printf '%s\n' "${ac[@]}" | median); bcm=$(printf '%s\n' "${bc[@]}" | median)
  awk -v l="$load" -v am="$am" -v bm="$bm" -v ac="$acm" -v bc="$bcm" \
    'BEGIN { printf "%-12s %10.0f %10.0f %7.3f %12.2f %12.2f %7.3f\n", l, am, bm, bm / am, ac, bc, bc / ac }'
done
