#!/usr/bin/env bash
# `make run`: the whole stack on this machine, in the foreground.
#
#   1. scripts/ensure-infra.sh: NATS (JetStream) and PostgreSQL answer, or are started
#   2. cargo build --workspace --bins, once
#   3. dev-dns (the zone file .run/dns/zone.json that `make demo` writes), dev-provider
#      (only without RESEND_API_KEY), command-handler, provider-worker, scheduler, the
#      three projectors and query, each in the background, its log lines prefixed
#      with its name
#   4. "ready" once email_domains.query.sender answers
#
# Ctrl-C (SIGINT) or SIGTERM stops every child and exits 0. If a service dies, the
# stack is stopped and the script exits 1. (Started with `&` from a non-interactive
# shell, a process inherits SIGINT as ignored: stop such a run with SIGTERM.)
#
# Environment: docs/interface.md §1 (NATS_URL, DATABASE_URL, RESEND_API_KEY, ...), plus
#   DEV_DNS_ADDR       dev-dns address                  (127.0.0.1:5354)
#   DEV_PROVIDER_ADDR  dev-provider address             (127.0.0.1:3001)
#   READY_TIMEOUT_SECS how long to wait for "ready"     (180)
#   STOP_TIMEOUT_SECS  grace before SIGKILL on shutdown (10)
#   RUN_SKIP_BUILD=1   skip the cargo build, run the binaries already in target/debug
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { echo "[run] $*" >&2; }
die() { echo "[run] ERROR: $*" >&2; exit 1; }

# --- configuration -----------------------------------------------------------------

export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/email_domains}"
DEV_DNS_ADDR="${DEV_DNS_ADDR:-127.0.0.1:5354}"
DEV_PROVIDER_ADDR="${DEV_PROVIDER_ADDR:-127.0.0.1:3001}"
READY_TIMEOUT_SECS="${READY_TIMEOUT_SECS:-180}"
STOP_TIMEOUT_SECS="${STOP_TIMEOUT_SECS:-10}"
ZONE_FILE="$ROOT/.run/dns/zone.json"

# an error that ends a service prints its cause chain, not a page of anyhow backtrace
# (RUST_BACKTRACE still gives panics theirs)
export RUST_LIB_BACKTRACE="${RUST_LIB_BACKTRACE:-0}"
# no colour codes in logs that go to a file or a pipe
[[ -t 2 ]] || export NO_COLOR="${NO_COLOR:-1}"

# the dev stack re-checks soon after registration / dns_configured
export RECHECK_INITIAL_SECS="${RECHECK_INITIAL_SECS:-10}"

USE_DEV_PROVIDER=0
if [[ -z "${RESEND_API_KEY:-}" || -z "${RESEND_API_KEY// /}" ]]; then
    USE_DEV_PROVIDER=1
    unset RESEND_API_KEY
    export RESEND_BASE_URL="${RESEND_BASE_URL:-http://$DEV_PROVIDER_ADDR}"
    # DNS checks ask the dev DNS server, where `make demo` publishes records
    export DNS_NAMESERVERS="${DNS_NAMESERVERS:-$DEV_DNS_ADDR}"
fi

redact() { sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"; }

cat >&2 <<EOF
[run] ---------------------------------------------------------------------------
[run] email domains: development stack
[run]   NATS         $(redact "$NATS_URL")
[run]   Postgres     $(redact "$DATABASE_URL")
EOF
if [[ $USE_DEV_PROVIDER == 1 ]]; then
    echo "[run]   provider     dev-provider at $RESEND_BASE_URL (no RESEND_API_KEY set)" >&2
else
    echo "[run]   provider     Resend at ${RESEND_BASE_URL:-https://api.resend.com} (RESEND_API_KEY is set; no dev-provider)" >&2
fi
cat >&2 <<EOF
[run]   dev DNS      $DEV_DNS_ADDR (UDP+TCP), zone file ${ZONE_FILE#"$ROOT"/}
[run]   DNS checks   ${DNS_NAMESERVERS:-the system resolver}
[run]   re-checks    first after ${RECHECK_INITIAL_SECS}s
[run] ---------------------------------------------------------------------------
EOF

# --- infrastructure and build ------------------------------------------------------

bash "$ROOT/scripts/ensure-infra.sh"

if [[ "${RUN_SKIP_BUILD:-0}" == 1 ]]; then
    say "RUN_SKIP_BUILD=1: using the binaries already built"
else
    say "building (cargo build --workspace --bins) ..."
    cargo build --workspace --bins || die "the build failed: see above (RUN_SKIP_BUILD=1 runs the binaries already built)"
fi
BIN="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$BIN" == /* ]] || BIN="$ROOT/$BIN"
BIN="$BIN/debug"

need=(dev-dns command-handler provider-worker scheduler projector query gateway)
[[ $USE_DEV_PROVIDER == 1 ]] && need+=(dev-provider)
for b in "${need[@]}"; do
    [[ -x "$BIN/$b" ]] || die "binary $BIN/$b is missing after the build"
done

# Something listening already on our addresses is most likely another `make run`.
tcp_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/${1%:*}/${1##*:}"' _ "$1" 2>/dev/null; }
tcp_open "$DEV_DNS_ADDR" &&
    die "$DEV_DNS_ADDR is already in use: is another 'make run' running? (pgrep -af dev-dns)"
if [[ $USE_DEV_PROVIDER == 1 ]] && tcp_open "$DEV_PROVIDER_ADDR"; then
    die "$DEV_PROVIDER_ADDR is already in use: is another 'make run' running? (pgrep -af dev-provider)"
fi

# The services create the database when it is missing; creating it here first spares
# seven services starting at once a race on CREATE DATABASE at the very first run.
if command -v psql >/dev/null 2>&1; then
    db="${DATABASE_URL##*/}"
    db="${db%%\?*}"
    admin="${DATABASE_URL%/*}/postgres"
    if [[ -n "$db" && "$db" =~ ^[A-Za-z0-9_-]+$ ]] &&
        ! psql -w "$admin" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$db'" 2>/dev/null | grep -q 1; then
        psql -w "$admin" -qc "CREATE DATABASE \"$db\"" >/dev/null 2>&1 && say "created database $db" || true
    fi
fi

mkdir -p "$(dirname "$ZONE_FILE")"
[[ -s "$ZONE_FILE" ]] || echo '{"zones":[],"records":[]}' >"$ZONE_FILE"

# --- the children ------------------------------------------------------------------

NAMES=()
PIDS=()
STOPPING=0

# start LABEL COMMAND...: in a session (and process group) of its own, so that a
# Ctrl-C reaches only this script, which then stops the children in order. The log
# prefixer ignores INT/TERM so that it prints the service's last lines and ends at EOF.
start() {
    local label="$1"
    shift
    setsid bash -c '
        label="$1"; shift
        exec "$@" </dev/null > >(trap "" INT TERM; exec sed -u "s/^/$label /") 2>&1
    ' _ "$(printf '%-17s' "[$label]")" "$@" &
    NAMES+=("$label")
    PIDS+=("$!")
}

group_alive() { kill -0 -- "-$1" 2>/dev/null; }

stop_all() {
    local i pid deadline
    for pid in "${PIDS[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || true
    done
    deadline=$((SECONDS + STOP_TIMEOUT_SECS))
    for i in "${!PIDS[@]}"; do
        pid="${PIDS[$i]}"
        while group_alive "$pid" && ((SECONDS < deadline)); do
            sleep 0.2
        done
        if group_alive "$pid"; then
            say "${NAMES[$i]} did not stop within ${STOP_TIMEOUT_SECS}s: killing it"
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
}

on_signal() {
    ((STOPPING)) && return
    STOPPING=1
    echo >&2
    say "stopping the stack ..."
    stop_all
    say "stopped"
    trap - EXIT
    exit 0
}

on_exit() {
    local rc=$?
    if ((STOPPING == 0 && ${#PIDS[@]} > 0)); then
        STOPPING=1
        say "stopping the stack ..."
        stop_all
        say "stopped"
    fi
    exit "$rc"
}

trap on_signal INT TERM
trap on_exit EXIT

start dns "$BIN/dev-dns" --listen "$DEV_DNS_ADDR" --zone-file "$ZONE_FILE"
if [[ $USE_DEV_PROVIDER == 1 ]]; then
    DEV_PROVIDER_DNS="${DEV_PROVIDER_DNS:-$DEV_DNS_ADDR}" start provider "$BIN/dev-provider" --listen "$DEV_PROVIDER_ADDR"
fi
# Each service serves /metrics, /healthz and /readyz on its own port (METRICS_ADDR).
METRICS_ADDR=127.0.0.1:9101 start handler "$BIN/command-handler"
METRICS_ADDR=127.0.0.1:9102 start worker "$BIN/provider-worker"
METRICS_ADDR=127.0.0.1:9103 start scheduler "$BIN/scheduler"
METRICS_ADDR=127.0.0.1:9104 start proj-domains "$BIN/projector" --projection email_domains
METRICS_ADDR=127.0.0.1:9105 start proj-settings "$BIN/projector" --projection tenant_settings
METRICS_ADDR=127.0.0.1:9106 start proj-analytics "$BIN/projector" --projection analytics
METRICS_ADDR=127.0.0.1:9107 start query "$BIN/query"
export GATEWAY_LISTEN="${GATEWAY_LISTEN:-127.0.0.1:8080}"
# Development: the gateway starts without a strong GATEWAY_TOKEN_SECRET (the
# development one, and a signed dev link in its log). A deployment never sets this.
GATEWAY_DEV="${GATEWAY_DEV:-1}" METRICS_ADDR=127.0.0.1:9108 start gateway "$BIN/gateway"
say "started ${#PIDS[@]} processes: ${NAMES[*]}"

# --- readiness: an answer on email_domains.query.sender means the stack is up ----------

ZERO_TENANT=00000000-0000-0000-0000-000000000000

# a raw NATS request, for when domainctl is not built
probe_python() {
    timeout 5 python3 - "$NATS_URL" "$ZERO_TENANT" <<'PY' >/dev/null 2>&1
import json, socket, sys, urllib.parse
url = sys.argv[1].split(",")[0].strip()
u = urllib.parse.urlparse(url if "://" in url else "nats://" + url)
s = socket.create_connection((u.hostname or "127.0.0.1", u.port or 4222), timeout=4)
f = s.makefile("rb")
f.readline()  # INFO
c = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True, "protocol": 1}
if u.username and u.password:
    c["user"], c["pass"] = urllib.parse.unquote(u.username), urllib.parse.unquote(u.password)
elif u.username:
    c["auth_token"] = urllib.parse.unquote(u.username)
body = json.dumps({"tenant_id": sys.argv[2]}).encode()
s.sendall(b"CONNECT " + json.dumps(c).encode() + b"\r\nSUB _INBOX.runready 1\r\n"
          + b"PUB email_domains.query.sender _INBOX.runready %d\r\n%s\r\n" % (len(body), body))
while True:
    line = f.readline()
    if not line:
        sys.exit(1)
    if line.startswith(b"PING"):
        s.sendall(b"PONG\r\n")
    elif line.startswith(b"MSG"):
        n = int(line.split()[-1])
        reply = json.loads(f.read(n + 2)[:n])
        sys.exit(0 if "from" in reply else 1)
    elif line.startswith((b"HMSG", b"-ERR")):
        sys.exit(1)  # no responders yet, or refused
PY
}

probe() {
    if [[ -x "$BIN/domainctl" ]]; then
        timeout 10 "$BIN/domainctl" sender --tenant "$ZERO_TENANT" >/dev/null 2>&1
    else
        probe_python
    fi
}

# Sleep without blocking the traps: a signal interrupts `wait` at once.
nap() {
    sleep "$1" &
    wait $! 2>/dev/null || true
}

check_children() {
    local i pid rc
    for i in "${!PIDS[@]}"; do
        pid="${PIDS[$i]}"
        if ! kill -0 "$pid" 2>/dev/null; then
            rc=0
            wait "$pid" 2>/dev/null || rc=$?
            ((STOPPING)) && return 0
            say "*** ${NAMES[$i]} exited (status $rc): see its [${NAMES[$i]}] lines above; stopping the stack"
            exit 1
        fi
    done
}

started_at=$SECONDS
ready=0
warned=0
next_probe=$((SECONDS + 1))
while true; do
    check_children
    if ((ready == 0 && SECONDS >= next_probe)); then
        if probe; then
            ready=1
            if [[ $USE_DEV_PROVIDER == 1 ]]; then
                hint="Try: make demo        (in another terminal)"
            else
                hint="make demo needs the dev provider and dev DNS: run without RESEND_API_KEY for it"
            fi
            cat >&2 <<EOF
[run] ---------------------------------------------------------------------------
[run] ready after $((SECONDS - started_at))s: the stack answers on email_domains.query.sender
[run]   $hint
[run]   The owner's page: http://${GATEWAY_LISTEN}/ (the gateway's log above prints a signed dev link)
[run]   Ctrl-C stops everything.
[run] ---------------------------------------------------------------------------
EOF
        else
            next_probe=$((SECONDS + 2))
            if ((warned == 0 && SECONDS - started_at >= READY_TIMEOUT_SECS)); then
                warned=1
                say "*** still no answer on email_domains.query.sender after ${READY_TIMEOUT_SECS}s: see the logs above (still trying)"
            fi
        fi
    fi
    nap 1
done
