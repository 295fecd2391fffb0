#!/usr/bin/env bash
# The long chaos run: the services as real processes (release binaries), a load of
# CHAOS_COMMANDS register_domain commands (10,000), and CHAOS_ROUNDS (20) SIGKILLs of a
# random service (command-handler, provider-worker, scheduler, a projector) at random
# moments, each restarted after a random downtime. Then: one outcome per command, no
# duplicated event, gapless versions, every domain awaiting_dns, rows = a fresh fold.
#
#   make chaos
#   CHAOS_COMMANDS=2000 CHAOS_ROUNDS=5 make chaos
#   CHAOS_SEED=123 make chaos             replay a run's random choices
#   CHAOS_PROFILE=debug make chaos        use target/debug binaries (faster to build)
#   CHAOS_LOG_DIR=/tmp/chaos make chaos   keep the services' logs
# Other knobs: CHAOS_TENANTS, CHAOS_MIN_GAP_MS, CHAOS_MAX_GAP_MS, CHAOS_MAX_DOWN_MS,
# CHAOS_PUBLISH_SECS, CHAOS_CONVERGE_SECS (see tests/tests/chaos.rs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROFILE="${CHAOS_PROFILE:-release}"
say() { echo "[chaos] $*" >&2; }

bash scripts/ensure-infra.sh
BINS=(-p command-handler -p provider-worker -p scheduler -p projector)
if [[ "$PROFILE" == release ]]; then
    say "building the service binaries (release) ..."
    cargo build --release "${BINS[@]}" --bins
else
    say "building the service binaries (debug) ..."
    cargo build "${BINS[@]}" --bins
fi
BIN="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$BIN" == /* ]] || BIN="$ROOT/$BIN"
export CHAOS_BIN_DIR="$BIN/$PROFILE"
say "binaries from $CHAOS_BIN_DIR; commands ${CHAOS_COMMANDS:-10000}, rounds ${CHAOS_ROUNDS:-20}"
started=$SECONDS
cargo test -p system-tests --test chaos -- --ignored --nocapture \
    service_processes_killed_with_sigkill_lose_nothing_and_duplicate_nothing
say "passed in $((SECONDS - started))s"
