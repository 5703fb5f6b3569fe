#!/usr/bin/env bash
# Smoke-run every fuzz target for SECONDS each (one after the other: they are
# CPU-bound). Usage: fuzz/run.sh SECONDS [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); on a stable
# toolchain RUSTC_BOOTSTRAP=1 lets it use the nightly-only flags it needs.
# Builds with optimisations and debug assertions (integer overflow is a
# crash), no sanitizer (the code under test is safe Rust). The working
# corpus grows in fuzz/corpus/<target> (not committed); the committed seeds
# are in fuzz/seeds/<target>. A crash fails the run and leaves its input in
# fuzz/artifacts/<target>/.
set -euo pipefail
secs=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
flags=(-O -a -s none)
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
start=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "build: $(( $(date +%s) - start )) s"
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  if cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
      -print_final_stats=1 >"$log" 2>&1; then
    execs=$(grep -m1 '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    rate=$(grep -m1 '^stat::average_exec_per_sec' "$log" | awk '{print $2}')
    echo "$t: ok, ${execs:-?} execs, ${rate:-?}/s"
  else
    echo "$t: FAILED"; tail -n 40 "$log"; status=1
  fi
  # FUZZ_LOG_DIR keeps each target's libFuzzer log (coverage, corpus size).
  if [ -n "${FUZZ_LOG_DIR:-}" ]; then mkdir -p "$FUZZ_LOG_DIR"; cp "$log" "$FUZZ_LOG_DIR/$t.log"; fi
  rm -f "$log"
done
echo "total: $(( $(date +%s) - start )) s"
exit $status
