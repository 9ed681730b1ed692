#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation (stable toolchain, no
# sanitizer: the code under test has no `unsafe`; a panic is the bug this looks for) and runs
# each for SECONDS (default 20) from its committed seed corpus.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# New inputs go to a scratch copy of the corpus, so the committed seeds stay as they are. A
# crash stops the run with the input saved in fuzz/artifacts/TARGET/ (commit it to the target's
# corpus, and add a regression test, once fixed). Prints the executions per target.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
shift || true
all=(entry bundle note proof key agent_body manifest)
targets=("${@:-${all[@]}}")
triple="$(rustc -vV | sed -n 's/^host: //p')"
# What cargo-fuzz passes for `--sanitizer none`: edge coverage with inline 8-bit counters,
# comparison tracing, and the `fuzzing` cfg. With an explicit --target, RUSTFLAGS reach only
# the target's crates, not build scripts or proc-macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-../target/fuzz}"
cargo build --release --locked --target "$triple" --bins
bin="$CARGO_TARGET_DIR/$triple/release"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
total=0
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "artifacts/$t"
  log="$scratch/$t.log"
  if ! "$bin/$t" "$scratch/$t" "corpus/$t" -max_total_time="$secs" -rss_limit_mb=2048 \
      -timeout=10 -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $t found a crash; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1)"
  echo "fuzz: $t: ${runs:-?} executions in ${secs}s, $cov"
  total=$((total + ${runs:-0}))
done
echo "fuzz: $total executions in all"
