#!/usr/bin/env bash
# Side-by-side HTTP/2 load: zaptid serve's Gen vs nghttpd serving a 15-byte file, in one run, so
# the ratio survives a noisy shared machine. Prints one row per load with medians of RUNS runs.
#
#   tests/bench/h2load_compare.sh [path/to/zaptid]      (RUNS=5 DURATION=5 LAYOUT=sonyflake)
#
# Needs h2load and nghttpd (Debian nghttp2-client, nghttp2-server). Loopback only; every process
# it starts is stopped on exit.
set -euo pipefail
zaptid=${1:-build/cli/zaptid}
runs=${RUNS:-5}
duration=${DURATION:-5}
layout=${LAYOUT:-sonyflake}
# shellcheck source=serve_common.sh
. "$(dirname "$0")/serve_common.sh"

mkdir "$work/htdocs" && printf '0123456789abcd\n' > "$work/htdocs/id"   # 15 bytes

zport=$(free_port)
ZAPTID_STATE_DIR="$work/state" "$zaptid" serve --listen "127.0.0.1:$zport" --machine-id 1 --layout "$layout" \
  --log-level warn &
zpid=$!; pids+=("$zpid")
nport=$(free_port)
nghttpd --no-tls -d "$work/htdocs" "$nport" &
pids+=("$!")
wait_port "$zport"; wait_port "$nport"

# h2load prints "finished in …, N req/s"; its --log-file has one line per request whose third
# column is the request's duration in microseconds, from which p50 and p99 are taken.
h2() { # h2load args… → "req/s succeeded p50_us p99_us"
  local out; out=$(h2load -D "$duration" --log-file="$work/req.log" "$@" 2>&1)
  local rps; rps=$(grep -oP 'finished in [^,]+, \K[0-9.]+(?= req/s)' <<<"$out")
  local ok; ok=$(grep -oP '\d+(?= succeeded)' <<<"$out")
  local q; q=$(cut -f3 "$work/req.log" | sort -n | awk '{a[NR]=$1} END {print a[int(NR*0.5)+1], a[int(NR*0.99)+1]}')
  echo "$rps $ok $q"
}

hz=$(getconf CLK_TCK)
printf '%-12s %12s %12s %7s %9s %9s %14s\n' load zaptid_req/s nghttpd_req/s ratio p50_us p99_us cpu_us/req
for load in "-c 1 -m 1" "-c 4 -m 16" "-c 16 -m 64"; do
  zs=(); ns=(); cs=(); p50s=(); p99s=()
  for _ in $(seq "$runs"); do
    t0=$(cpu_ticks "$zpid")
    read -r zr zok p50 p99 < <(h2 $load -d "$work/empty.grpc" -H 'content-type: application/grpc' -H 'te: trailers' \
      "http://127.0.0.1:$zport/idgen.IdGen/Gen")
    t1=$(cpu_ticks "$zpid")
    read -r nr _ < <(h2 $load "http://127.0.0.1:$nport/id")
    zs+=("$zr"); ns+=("$nr"); p50s+=("$p50"); p99s+=("$p99")
    cs+=("$(awk -v t="$((t1 - t0))" -v hz="$hz" -v n="$zok" 'BEGIN { printf "%.1f", n ? t / hz * 1e6 / n : 0 }')")
  done
  zm=$(printf '%s\n' "${zs[@]}" | median); nm=$(printf '%s\n' "${ns[@]}" | median)
  cm=$(printf '%s\n' "${cs[@]}" | median)
  p50m=$(printf '%s\n' "${p50s[@]}" | median); p99m=$(printf '%s\n' "${p99s[@]}" | median)
  printf '%-12s %12.0f %12.0f %7.2f %9s %9s %14s\n' "$load" "$zm" "$nm" \
    "$(awk -v a="$zm" -v b="$nm" 'BEGIN{print a/b}')" "$p50m" "$p99m" "$cm"
done
echo "zaptid peak RSS: $(grep VmHWM "/proc/$zpid/status" | awk '{print $2, $3}')"
