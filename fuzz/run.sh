#!/usr/bin/env bash
# Builds every fuzz target, then runs each for a bounded time, one after the
# other, and prints per target how long it ran, how many inputs it executed,
# and whether it crashed.
#
#   fuzz/run.sh [SECONDS] [TARGET...]    # default 60 s each, every target
#
# The corpus grows in fuzz/corpus/<target>/ (not committed) on top of the
# committed seeds in fuzz/seeds/<target>/; a crash leaves its input in
# fuzz/artifacts/<target>/. Exits non-zero if any target crashed.
#
# Environment: CARGO_TARGET_DIR (default fuzz/target). One libFuzzer process
# at a time. The toolchain may be stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz
# pass its nightly-only flags.

set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

seconds="${1:-60}"
shift || true
all_targets=(page_token bearer jwt connect_envelope connect_json grpc_web_text validation)
targets=("${@:-${all_targets[@]}}")

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"

# Largest input per target: enough for the biggest value the contract
# accepts (a 4000-character description, a 4 KiB page token, a request body
# of a few frames), small enough that the fuzzer does not waste time on
# megabyte inputs the services refuse by size first.
max_len() {
  case "$1" in
    bearer) echo 1024 ;;
    page_token) echo 8192 ;;
    jwt) echo 4096 ;;
    connect_envelope) echo 4096 ;;
    connect_json) echo 4096 ;;
    grpc_web_text) echo 8192 ;;
    validation) echo 20000 ;;
    *) echo 4096 ;;
  esac
}

extra_flags() {
  case "$1" in
    connect_json) echo "-dict=$here/dicts/json.dict" ;;
    *) echo "" ;;
  esac
}

echo "building ${#targets[@]} target(s) into $CARGO_TARGET_DIR"
if [ "${#targets[@]}" -eq "${#all_targets[@]}" ]; then
  cargo fuzz build
else
  for target in "${targets[@]}"; do cargo fuzz build "$target"; done
fi

summary=()
crashed=0
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  corpora=("corpus/$target")
  [ -d "seeds/$target" ] && corpora+=("seeds/$target")
  before=$(find "artifacts/$target" -type f | wc -l)
  log="artifacts/$target.log"
  start=$(date +%s)
  set +e
  # shellcheck disable=SC2046
  cargo fuzz run "$target" "${corpora[@]}" -- \
    -max_total_time="$seconds" -max_len="$(max_len "$target")" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 \
    $(extra_flags "$target") >"$log" 2>&1
  status=$?
  set -e
  elapsed=$(( $(date +%s) - start ))
  # libFuzzer's own count and time when it finished cleanly ("Done N runs
  # in S second(s)"); after a crash, its final stats and the wall time.
  runs=$(sed -nE 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\1/p' "$log" | tail -1)
  fuzzed=$(sed -nE 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\2/p' "$log" | tail -1)
  if [ -z "$runs" ]; then
    runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -1)
  fi
  elapsed="${fuzzed:-$elapsed}"
  after=$(find "artifacts/$target" -type f | wc -l)
  if [ "$status" -ne 0 ] || [ "$after" -gt "$before" ]; then
    verdict="CRASH (exit $status; see $log and artifacts/$target/)"
    crashed=1
  else
    verdict="no crash"
  fi
  line=$(printf '%-18s %5ss %12s execs  %s' "$target" "$elapsed" "${runs:-?}" "$verdict")
  echo "$line"
  summary+=("$line")
done

echo
echo "target               time        execs  result"
printf '%s\n' "${summary[@]}"
exit "$crashed"
