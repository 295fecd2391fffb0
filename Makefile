# Developer entry points; each target is a one-liner over scripts/ or cargo.
#   make run     the whole stack on this machine (NATS, Postgres, dev DNS, dev provider, services)
#   make demo    with `make run` going: register a domain and watch it get verified
#   make test    the workspace's tests (starts NATS/Postgres if they are not running)
SHELL := /bin/bash
ARGS ?=
export CARGO_TERM_COLOR ?= $(if $(CI),never,auto)

.PHONY: run demo test bench fmt lint clean-run chaos fuzz

run:
	@bash scripts/run.sh

demo:
	@bash scripts/demo.sh

test:
	@cargo fmt --all --check || { echo "formatting differs: run make fmt" >&2; exit 1; }
	@bash scripts/ensure-infra.sh && bash scripts/ensure-test-tools.sh && cargo build -q --workspace --bins && if cargo nextest --version >/dev/null 2>&1; then cargo nextest run --workspace --no-fail-fast; else cargo test --workspace --no-fail-fast; fi
	@cargo clippy --workspace --all-targets -q -- -D warnings
	@bash scripts/check-schemas.sh
	@bash scripts/check-k8s.sh

bench:
	cargo build --release -p bench -p command-handler -p provider-worker -p scheduler -p projector -p query
	./target/release/bench $(ARGS)

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings

clean-run:
	rm -rf .run

# Long kill -9 run of the service processes under load (CHAOS_COMMANDS, CHAOS_ROUNDS, CHAOS_SEED).
chaos:
	@bash scripts/chaos.sh

# cargo-fuzz on the command decoder and the name parser, FUZZ_SECS (60) each.
fuzz:
	@bash scripts/fuzz.sh
