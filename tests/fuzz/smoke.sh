#!/usr/bin/env bash
# A bounded fuzz pass over every decoder target (CI and ./test-all).
# Each target runs FUZZ_SECONDS (default 15) from the committed seed corpus;
# new inputs go to a scratch directory so the committed corpus stays small.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${FUZZ_SECONDS:-15}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' tests/fuzz/Cargo.toml | grep -v wsgi-fpm-fuzz)
export RUSTC_BOOTSTRAP=1
cargo fuzz build --fuzz-dir tests/fuzz
for t in $targets; do
  scratch=$(mktemp -d)
  echo "== fuzz $t for ${seconds}s"
  log="$scratch.log"
  if ! cargo fuzz run --fuzz-dir tests/fuzz "$t" "$scratch" "tests/fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -max_len=8192 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz target $t found a crash (artifact under tests/fuzz/artifacts/$t)"
    exit 1
  fi
  grep -E "^#[0-9]+ *DONE" "$log" || tail -n 3 "$log"
  rm -rf "$scratch" "$log"
done
echo "fuzz smoke: $(echo $targets | wc -w) targets, no crash"
