#!/usr/bin/env bash
# Runs every test of Runnel: the normal suite under real tokio, then every crate again
# under deterministic simulation (RUSTFLAGS="--cfg madsim") in its own target directory
# so the two builds never evict each other. Needs nothing but the Rust toolchain:
# protoc comes from the protoc-bin-vendored crate.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A CI run starts from a clean clone and never rebuilds: incremental-compilation caches
# would only cost disk (several GB over the two builds) and time.
if [ -n "${CI:-}" ]; then
    export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fi
start=$(date +%s)

echo "==> cargo test (real tokio)"
cargo test --workspace --locked

echo "==> cargo test (madsim: RUSTFLAGS=\"--cfg madsim\", CARGO_TARGET_DIR=target/madsim)"
# rustdoc does not read RUSTFLAGS: without RUSTDOCFLAGS the doctests would compile the
# crates' real-build code against dependencies built for the simulation.
RUSTFLAGS="--cfg madsim" RUSTDOCFLAGS="--cfg madsim" \
    CARGO_TARGET_DIR="${MADSIM_TARGET_DIR:-target/madsim}" \
    cargo test --workspace --locked

echo "==> planted bugs: the simulation must catch each (madsim, feature planted-bugs)"
RUSTFLAGS="--cfg madsim" RUSTDOCFLAGS="--cfg madsim" \
    CARGO_TARGET_DIR="${MADSIM_TARGET_DIR:-target/madsim}" MADSIM_TEST_JOBS=2 \
    cargo test -p runnel-simulation --locked --features planted-bugs --test planted -- --nocapture

echo "==> deploy checks (Helm chart, dashboards, alert rules)"
./scripts/check-deploy.sh

echo "==> all tests passed in $(( $(date +%s) - start ))s"
