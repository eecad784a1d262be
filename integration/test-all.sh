#!/usr/bin/env bash
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo test"
cargo test --workspace --all-targets
