#!/usr/bin/env bash
# Makes sure NATS (with JetStream) and PostgreSQL answer where NATS_URL and
# DATABASE_URL point (docs/interface.md §1 defaults: nats://127.0.0.1:4222 and
# postgres://postgres@127.0.0.1:5432/email_domains).
#
# - Whatever already answers is used as it is: nothing is started.
# - A server on this machine (127.0.0.1 / localhost / ::1) that does not answer is
#   started; when its binaries are missing and we are root, they are installed
#   from Debian's packages first (nats-server, postgresql).
# - Anything else fails with a message that says what to install or start.
#
# Idempotent, and silent when everything is up. Messages go to stderr.
set -euo pipefail

NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/email_domains}"
WAIT_SECS="${INFRA_WAIT_SECS:-30}"

say() { echo "ensure-infra: $*" >&2; }
die() { echo "ensure-infra: ERROR: $*" >&2; exit 1; }

# --- where the servers are -------------------------------------------------------

# host and port of a URL: scheme://[user[:pass]@]host[:port][/...]; the first of a
# comma-separated list; [v6] literals allowed.
url_host_port() { # URL DEFAULT_PORT
    local rest="${1%%,*}" default_port="$2" host port
    rest="${rest#*://}"
    rest="${rest%%/*}"
    rest="${rest%%\?*}"
    rest="${rest##*@}"
    if [[ "$rest" == \[* ]]; then
        host="${rest%%]*}"; host="${host#[}"
        port="${rest#*]}"; port="${port#:}"
    elif [[ "$rest" == *:* ]]; then
        host="${rest%%:*}"; port="${rest##*:}"
    else
        host="$rest"; port=""
    fi
    echo "${host:-127.0.0.1} ${port:-$default_port}"
}

read -r NATS_HOST NATS_PORT < <(url_host_port "$NATS_URL" 4222)
read -r PG_HOST PG_PORT < <(url_host_port "$DATABASE_URL" 5432)
[[ "$NATS_HOST" == localhost ]] && NATS_HOST=127.0.0.1
[[ "$PG_HOST" == localhost ]] && PG_HOST=127.0.0.1

is_local() { [[ "$1" == 127.* || "$1" == ::1 ]]; }
is_root() { [[ "$(id -u)" == 0 ]]; }

# --- probes ----------------------------------------------------------------------

# the first line NATS sends (INFO {...}), or nothing
nats_info() {
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        IFS= read -r -t 2 line <&3 || exit 1
        printf "%s\n" "$line"
    ' _ "$NATS_HOST" "$NATS_PORT" 2>/dev/null || true
}
nats_up() { [[ "$(nats_info)" == INFO* ]]; }

pg_up() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1
    else
        timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$PG_HOST" "$PG_PORT" 2>/dev/null
    fi
}

# --- installing ------------------------------------------------------------------

APT_UPDATED=0
apt_install() { # PACKAGE...
    is_root || return 1
    command -v apt-get >/dev/null 2>&1 || return 1
    export DEBIAN_FRONTEND=noninteractive
    if [[ $APT_UPDATED == 0 ]]; then
        say "apt-get update"
        apt-get update -qq </dev/null >&2 || return 1
        APT_UPDATED=1
    fi
    say "apt-get install -y $*"
    apt-get install -y -qq --no-install-recommends "$@" </dev/null >&2
}

# --- NATS ------------------------------------------------------------------------

nats_server_bin() {
    command -v nats-server 2>/dev/null || { [[ -x /usr/sbin/nats-server ]] && echo /usr/sbin/nats-server; } || true
}

start_nats() {
    local bin
    bin="$(nats_server_bin)"
    if [[ -z "$bin" ]]; then
        apt_install nats-server ||
            die "NATS does not answer at $NATS_HOST:$NATS_PORT and nats-server is not installed.
  Install it (Debian/Ubuntu: 'sudo apt-get install nats-server'; elsewhere see https://docs.nats.io),
  then start it with JetStream: nats-server -a 127.0.0.1 -p $NATS_PORT -js
  or point NATS_URL at a running server."
        bin="$(nats_server_bin)"
        [[ -n "$bin" ]] || die "nats-server is still missing after the install"
    fi
    local store=/var/lib/nats-server log=/var/log/nats-server.log
    if ! is_root; then
        store="${XDG_STATE_HOME:-$HOME/.local/state}/nats-server"
        log="$store/nats-server.log"
    fi
    if [[ "$NATS_PORT" != 4222 ]]; then
        # a second server must not share the JetStream store of the default one
        store="$store-$NATS_PORT"
        log="${log%.log}-$NATS_PORT.log"
    fi
    mkdir -p "$store" "$(dirname "$log")"
    local addr="$NATS_HOST"
    say "starting NATS with JetStream on $addr:$NATS_PORT (store $store, log $log)"
    if [[ "$NATS_PORT" == 4222 ]] && is_root && command -v start-stop-daemon >/dev/null 2>&1; then
        # the machine's own way; --oknodo: an already running nats-server is fine
        start-stop-daemon --start --oknodo --background --exec "$bin" -- \
            -a "$addr" -p "$NATS_PORT" -js -sd "$store" -l "$log" >&2
    else
        nohup setsid "$bin" -a "$addr" -p "$NATS_PORT" -js -sd "$store" -l "$log" \
            </dev/null >/dev/null 2>&1 &
    fi
}

# --- PostgreSQL ------------------------------------------------------------------

pg_server_installed() { compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; }

pg_version() { # the newest installed server version
    ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1
}

pg_cluster_exists() { # VERSION
    [[ -f "/etc/postgresql/$1/main/postgresql.conf" ]]
}

pg_hba_trust() { # VERSION: loopback TCP connections with trust auth
    local hba="/etc/postgresql/$1/main/pg_hba.conf"
    [[ -f "$hba" ]] || return 0
    if grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
        return 0
    fi
    say "allowing trust auth for 127.0.0.1/32 and ::1/128 in $hba"
    cp -p "$hba" "$hba.before-ensure-infra"
    # put our lines first: pg_hba.conf is matched top down
    {
        echo "# added by scripts/ensure-infra.sh: local development without passwords"
        echo "host    all             all             127.0.0.1/32            trust"
        echo "host    all             all             ::1/128                 trust"
        cat "$hba.before-ensure-infra"
    } >"$hba"
    PG_HBA_CHANGED=1
}

start_pg() {
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! pg_server_installed; then
        apt_install postgresql ||
            die "PostgreSQL does not answer at $PG_HOST:$PG_PORT and its server is not installed.
  Install it (Debian/Ubuntu: 'sudo apt-get install postgresql'; macOS: 'brew install postgresql'),
  let user postgres connect over TCP from 127.0.0.1 with trust auth (pg_hba.conf),
  or point DATABASE_URL at a running server."
    fi
    is_root || die "PostgreSQL does not answer at $PG_HOST:$PG_PORT. Start it (e.g. 'sudo pg_ctlcluster <version> main start'
  or 'sudo service postgresql start'), or point DATABASE_URL at a running server."
    local ver
    ver="$(pg_version)"
    [[ -n "$ver" ]] || die "no PostgreSQL server under /usr/lib/postgresql after the install"
    if ! pg_cluster_exists "$ver"; then
        say "creating PostgreSQL $ver cluster 'main' on port $PG_PORT"
        pg_createcluster "$ver" main -p "$PG_PORT" >&2
    fi
    PG_HBA_CHANGED=0
    pg_hba_trust "$ver"
    say "starting PostgreSQL $ver (cluster main)"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start >&2 || {
        # already running (e.g. on another port or only the socket): reload instead
        pg_ctlcluster --skip-systemctl-redirect "$ver" main reload >&2 || true
    }
}

# --- main ------------------------------------------------------------------------

started=()
if ! nats_up; then
    is_local "$NATS_HOST" || die "NATS does not answer at $NATS_HOST:$NATS_PORT (NATS_URL=$NATS_URL).
  It is not on this machine, so nothing is started here: start it there, or unset NATS_URL."
    start_nats
    started+=(nats)
fi
if ! pg_up; then
    is_local "$PG_HOST" || die "PostgreSQL does not answer at $PG_HOST:$PG_PORT (DATABASE_URL host).
  It is not on this machine, so nothing is started here: start it there, or unset DATABASE_URL."
    start_pg
    started+=(postgres)
fi

if ((${#started[@]})); then
    deadline=$((SECONDS + WAIT_SECS))
    until nats_up && pg_up; do
        if ((SECONDS >= deadline)); then
            nats_up || say "NATS still does not answer at $NATS_HOST:$NATS_PORT (log: /var/log/nats-server.log)"
            pg_up || say "PostgreSQL still does not answer at $PG_HOST:$PG_PORT (log: /var/log/postgresql/)"
            die "infrastructure not up after ${WAIT_SECS}s"
        fi
        sleep 0.5
    done
    say "up: ${started[*]}"
fi

# JetStream must be enabled: the services need it.
info="$(nats_info)"
if [[ "$info" == INFO* && "$info" != *'"jetstream":true'* ]]; then
    die "NATS at $NATS_HOST:$NATS_PORT answers but JetStream is not enabled: restart it with -js (e.g. nats-server -js -sd /var/lib/nats-server)"
fi

# user postgres must get in without a password over TCP (local servers only: a remote
# DATABASE_URL carries its own credentials)
if is_local "$PG_HOST" && command -v psql >/dev/null 2>&1; then
    authority="${DATABASE_URL#*://}"
    authority="${authority%%/*}"
    pg_user=""
    [[ "$authority" == *@* ]] && pg_user="${authority%@*}" && pg_user="${pg_user%%:*}"
    pg_user="${pg_user:-${PGUSER:-postgres}}"
    if [[ "$DATABASE_URL" != *://*:*@* ]] &&
        ! psql -w -h "$PG_HOST" -p "$PG_PORT" -U "$pg_user" -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
        ver="$(pg_version)"
        if is_root && [[ -n "$ver" ]] && pg_cluster_exists "$ver"; then
            PG_HBA_CHANGED=0
            pg_hba_trust "$ver"
            if [[ $PG_HBA_CHANGED == 1 ]]; then
                pg_ctlcluster --skip-systemctl-redirect "$ver" main reload >&2
                sleep 1
            fi
        fi
        psql -w -h "$PG_HOST" -p "$PG_PORT" -U "$pg_user" -d postgres -Atqc 'select 1' >/dev/null 2>&1 ||
            die "PostgreSQL at $PG_HOST:$PG_PORT answers but user '$pg_user' cannot log in without a password.
  Allow it in pg_hba.conf ('host all all 127.0.0.1/32 trust') or put the password in DATABASE_URL."
    fi
fi
exit 0
