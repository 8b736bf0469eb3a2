#!/bin/sh
# Start-up cost of zaptid as a script sees it: `version`, `decode ID`, `compose --time T`, `gen`
# (one ID) and a one-shot `get` (one ID from a local server over TCP), each against an empty C
# program compiled in the same run. hyperfine runs every command in each of ROUNDS rounds (default
# 10), RUNS runs of each in all (default 300); the table shows each command's median over all its
# runs and its ratio to the empty program's (docs/BENCHMARKS.md, "Start-up").
#
# Usage: [RUNS=300] [ROUNDS=10] tests/bench/startup.sh [zaptid ...]   (default: build/cli/zaptid)
# Several binaries (say this build's and main's) are measured in the same run, side by side.
# Needs hyperfine (Debian: hyperfine), cc, python3. Run it in a private network namespace
# (`unshare -n`, docs/BENCHMARKS.md) so the machine ids it claims meet no other zaptid.
set -eu
cd "$(dirname "$0")/../.."
[ $# -gt 0 ] || set -- build/cli/zaptid
runs=${RUNS:-300}
work=$(mktemp -d)
servers=""
cleanup() {
  for pid in $servers; do kill "$pid" 2> /dev/null || true; done
  for pid in $servers; do wait "$pid" 2> /dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

printf 'int main(void) { return 0; }\n' > "$work/empty.c"
cc -O2 -o "$work/empty" "$work/empty.c"

# Every zaptid here (and the empty program) sees the same private state and host folders.
export ZAPTID_STATE_DIR="$work/state" ZAPTID_HOST_DIR="$work/host"
mkdir -p "$ZAPTID_STATE_DIR" "$ZAPTID_HOST_DIR"

# One server per binary (its own build), on a free loopback port that it reports.
n=0
commands=""
for bin in "$@"; do
  n=$((n + 1))
  bin=$(realpath "$bin")
  mkdir -p "$work/$n"
  "$bin" serve --listen 127.0.0.1:0 --machine-id $((100 + n)) 2> "$work/$n/serve.log" &
  servers="$servers $!"
  i=0
  until grep -q ' serving listen=' "$work/$n/serve.log"; do
    i=$((i + 1))
    [ $i -lt 300 ] || { cat "$work/$n/serve.log" >&2; echo "startup.sh: $bin serve did not start" >&2; exit 1; }
    sleep 0.1
  done
  server=$(sed -n 's/.* serving listen=\([^ ]*\) .*/\1/p' "$work/$n/serve.log" | head -n 1)
  id=$("$bin" get --server "$server")
  commands="$commands
$n version|$bin version
$n decode|$bin decode $id
$n compose|$bin compose --time 2026-11-26T00:00:00Z
$n gen|$bin gen --machine-id $((200 + n))
$n get|$bin get --server $server"
done

# Several short rounds, every command in each, pooled: the machine's load drifts over the
# minutes a run takes, and a command timed only in one stretch of it would carry that stretch.
rounds=${ROUNDS:-10}
per_round=$(( (runs + rounds - 1) / rounds ))
[ "$per_round" -ge 2 ] || per_round=2
round=0
while [ $round -lt "$rounds" ]; do
  round=$((round + 1))
  set -- --warmup 5 --runs "$per_round" -N --export-json "$work/times-$round.json" -n empty "$work/empty"
  echo "$commands" | {
    while IFS='|' read -r name cmd; do
      [ -n "$name" ] || continue
      set -- "$@" -n "$name" "$cmd"
    done
    hyperfine --style none "$@" > "$work/hyperfine.txt"
  }
done

echo "binaries:"
n=0
for bin in $(echo "$commands" | sed -n 's/^[0-9]* version|\([^ ]*\) version$/\1/p'); do
  n=$((n + 1))
  echo "  $n: $bin ($("$bin" version))"
done
python3 - "$work"/times-*.json << 'PY'
import json, statistics, sys
times, cpu_sum, cpu_runs = {}, {}, {}
for path in sys.argv[1:]:
    for r in json.load(open(path))["results"]:
        c = r["command"]
        times.setdefault(c, []).extend(r["times"])
        cpu_sum[c] = cpu_sum.get(c, 0) + (r["user"] + r["system"]) * len(r["times"])
        cpu_runs[c] = cpu_runs.get(c, 0) + len(r["times"])
med = {c: statistics.median(t) * 1000 for c, t in times.items()}
cpu = {c: cpu_sum[c] / cpu_runs[c] * 1000 for c in times}
empty = med.pop("empty")
empty_cpu = cpu.pop("empty")
rounds = len(sys.argv) - 1
print(f"{rounds} rounds, {cpu_runs['empty']} runs of each command in all")
print(f"empty C program: {empty:.2f} ms wall (median), {empty_cpu:.2f} ms CPU (user + system, mean)")
names = sorted({c.split()[1] for c in med}, key=["version", "decode", "compose", "gen", "get"].index)
builds = sorted({c.split()[0] for c in med})
print("| command | " + " | ".join(f"{b}: median | {b}: ratio | {b}: CPU ratio" for b in builds) + " |")
print("|---|" + "---:|---:|---:|" * len(builds))
for name in names:
    cells = []
    for b in builds:
        m = med[f"{b} {name}"]
        cells += [f"{m:.2f} ms", f"{m / empty:.1f}x", f"{cpu[f'{b} {name}'] / empty_cpu:.1f}x"]
    print(f"| {name} | " + " | ".join(cells) + " |")
PY
