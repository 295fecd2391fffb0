#!/usr/bin/env bash
# Fuzzes the command decoder and the domain-name parser with cargo-fuzz (libFuzzer),
# each target for a bounded time.
#
#   scripts/fuzz.sh                 every target, FUZZ_SECS (60) seconds each
#   FUZZ_SECS=600 scripts/fuzz.sh domain_name
#
# cargo-fuzz wants a nightly toolchain for its -Z flags; this machine has stable only,
# so the build runs with RUSTC_BOOTSTRAP=1 (stable rustc accepting nightly flags) and
# without a sanitizer by default (FUZZ_SANITIZER=address to try ASan: the fuzzed code
# is safe Rust, so a panic is what we are looking for). A crash is saved under
# fuzz/artifacts/<target>/ and the script exits non-zero; replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FUZZ_SECS="${FUZZ_SECS:-60}"
SANITIZER="${FUZZ_SANITIZER:-none}"
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(decode_command domain_name)
say() { echo "[fuzz] $*" >&2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz (cargo install cargo-fuzz --locked) ..."
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/fuzz}"

status=0
for t in "${TARGETS[@]}"; do
    # The growing corpus lives in the target dir; fuzz/seeds/<target> are the checked-in seeds.
    corpus="$CARGO_TARGET_DIR/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    say "$t: ${FUZZ_SECS}s (sanitizer: $SANITIZER)"
    started=$SECONDS
    if cargo fuzz run --fuzz-dir fuzz --sanitizer "$SANITIZER" --release --debug-assertions "$t" "$corpus" "fuzz/seeds/$t" -- \
        -max_total_time="$FUZZ_SECS" -max_len=70000 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 2> >(tee "fuzz/artifacts/$t.log" >&2); then
        execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "fuzz/artifacts/$t.log" | grep -Eo '[0-9]+$' || echo '?')
        say "$t: no crash in $((SECONDS - started))s, $execs inputs run; corpus $(ls "$corpus" | wc -l) files"
    else
        say "$t: FAILED: see fuzz/artifacts/$t/ and fuzz/artifacts/$t.log"
        status=1
    fi
done
exit $status
