#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in build-fuzz/ and runs each for a bounded
# time from its seed corpus in tests/fuzz/corpus/<target>/. Fails on the first finding: the
# input that triggered it is saved in build-fuzz/findings/ (replay: build-fuzz/tests/fuzz/<target>
# <file>). New inputs libFuzzer finds go to build-fuzz/corpus/, never into the repository.
#   tests/fuzz/run.sh [seconds per target, default 20] [target...]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-20}
shift || true
all="fuzz_parse_id fuzz_parse_duration fuzz_parse_time fuzz_layout fuzz_machine_id fuzz_record
  fuzz_etcd_record fuzz_reflection fuzz_http2_policer fuzz_certificate"
targets=${*:-$all}
build=build-fuzz

CC=clang CXX=clang++ cmake -S . -B "$build" -DZAPTID_FUZZ=ON -DZAPTID_BUILD_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
# shellcheck disable=SC2086
cmake --build "$build" -j"$(nproc)" --target $targets

mkdir -p "$build/findings" "$build/logs"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for t in $targets; do
  mkdir -p "$build/corpus/$t"
  log="$build/logs/$t.log"
  # -timeout: one input taking over 5 s is a finding (a parser must never hang).
  if ! "$build/tests/fuzz/$t" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len=4096 \
      -print_final_stats=1 -artifact_prefix="$build/findings/$t-" \
      "$build/corpus/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "zaptid: $t found a problem; the input is in $build/findings/, the log in $log" >&2
    exit 1
  fi
  echo "$t: $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$') runs in ${seconds}s, no findings"
done
