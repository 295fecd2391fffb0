#!/usr/bin/env bash
# `make demo`: the service's main job in a minute, against the stack of `make run`.
#
#   1. a fresh tenant registers demo-<random>.test           (domainctl register)
#   2. the service provisions it at the provider and lists the DNS records to publish
#   3. the "domain owner" publishes them: they go into the dev DNS zone file
#      .run/dns/zone.json, which dev-dns serves at once
#   4. the owner says so                                      (domainctl dns-configured)
#   5. the service checks DNS and the provider until the domain is verified
#   6. the tenant's sender is now notifications@<domain>      (domainctl sender)
#   7. the domain's event log                                 (domainctl history)
#
# Environment: DEMO_TENANT, DEMO_DOMAIN (default: fresh ones), DEMO_TIMEOUT_SECS (60),
# DEV_DNS_ADDR (127.0.0.1:5354, as for make run).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ZONE_FILE="$ROOT/.run/dns/zone.json"
TIMEOUT="${DEMO_TIMEOUT_SECS:-60}"
DEV_DNS_ADDR="${DEV_DNS_ADDR:-127.0.0.1:5354}"

if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
    B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' D=$'\e[2m' N=$'\e[0m'
else
    B="" G="" R="" D="" N=""
fi
step() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
info() { printf '    %s\n' "$*"; }
fail() { printf '\n%sdemo failed: %s%s\n' "$R" "$*" "$N" >&2; exit 1; }

# --- domainctl ---------------------------------------------------------------------

BIN="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$BIN" == /* ]] || BIN="$ROOT/$BIN"
DOMAINCTL="$BIN/debug/domainctl"
# `make run` builds it with the rest
if [[ ! -x "$DOMAINCTL" ]]; then
    cargo build -q -p domainctl --bin domainctl || fail "domainctl does not build (cargo build -p domainctl)"
    [[ -x "$DOMAINCTL" ]] || fail "no $DOMAINCTL after the build"
fi
dctl() { "$DOMAINCTL" "$@"; }

# --- JSON helpers (python3: no extra dependency) -------------------------------------

py() { python3 -c "$PYHELPER" "$@"; }
PYHELPER='
import json, os, sys
cmd, args = sys.argv[1], sys.argv[2:]

def full_name(name, domain):
    n = (name or "").strip().rstrip(".").lower()
    if n in ("", "@") or n == domain:
        return domain
    return n if n.endswith("." + domain) else n + "." + domain

if cmd == "status":                      # stdin: state JSON -> status
    print(json.load(sys.stdin).get("status") or "")
elif cmd == "nrecords":                  # stdin: state JSON -> number of records
    print(len(json.load(sys.stdin).get("records") or []))
elif cmd == "dns":                       # stdin: state JSON -> one-line DNS summary
    recs = json.load(sys.stdin).get("records") or []
    print(", ".join("%s %s: %s" % (r.get("purpose") or "", r.get("type"), r.get("dns_status") or "-") for r in recs))
elif cmd == "table":                     # stdin: state JSON, argv: domain -> what the owner sees
    domain = args[0]
    recs = json.load(sys.stdin).get("records") or []
    rows = [("TYPE", "NAME", "PRIORITY", "VALUE", "")]
    for r in recs:
        v = str(r.get("value") or "")
        rows.append((r.get("type") or "", full_name(r.get("name"), domain),
                     "" if r.get("priority") is None else str(r["priority"]),
                     v if len(v) <= 60 else v[:57] + "...",
                     "" if r.get("required", True) else "(optional)"))
    w = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print(("    " + "  ".join(row[i].ljust(w[i]) for i in range(4)) + "  " + row[4]).rstrip())
    if any(len(str(r.get("value") or "")) > 60 for r in recs):
        print("    (long values shortened here; the zone file has them in full)")
elif cmd == "publish":                   # stdin: state JSON, argv: domain zonefile
    domain, path = args
    recs = json.load(sys.stdin).get("records") or []
    try:
        with open(path) as f:
            zf = json.load(f)
    except (FileNotFoundError, ValueError):
        zf = {}
    if isinstance(zf, list):
        zf = {"zones": [], "records": zf}
    zones = zf.get("zones") or []
    apexes = [z if isinstance(z, str) else z.get("apex") for z in zones]
    if domain not in apexes:
        zones.append(domain)
    def under(n):
        n = (n or "").rstrip(".").lower()
        return n == domain or n.endswith("." + domain)
    records = [r for r in zf.get("records") or [] if not under(r.get("name"))]
    for r in recs:
        rec = {"name": full_name(r.get("name"), domain), "type": r["type"],
               "value": r["value"], "ttl": 60}
        if r.get("priority") is not None:
            rec["priority"] = r["priority"]
        records.append(rec)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"zones": zones, "records": records}, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)                # dev-dns sees the new file at once
elif cmd == "served":                    # stdin: state JSON, argv: domain ip:port -> exit 0 once served
    import socket, struct, random
    domain, addr = args
    recs = json.load(sys.stdin).get("records") or []
    codes = {"A": 1, "NS": 2, "CNAME": 5, "MX": 15, "TXT": 16, "AAAA": 28}
    host, port = addr.rsplit(":", 1)
    for r in recs:
        qtype = codes.get(str(r.get("type")).upper())
        if qtype is None:
            continue
        qid = random.randrange(65536)
        q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
        for label in full_name(r.get("name"), domain).split("."):
            q += bytes([len(label)]) + label.encode()
        q += b"\0" + struct.pack(">HH", qtype, 1)
        s = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1)
        try:
            s.sendto(q, (host.strip("[]"), int(port)))
            resp = s.recv(4096)
        except OSError:
            sys.exit(1)
        rid, flags, _, ancount = struct.unpack(">HHHH", resp[:8])
        if rid != qid or flags & 0xF != 0 or ancount == 0:
            sys.exit(1)
    sys.exit(0)
elif cmd == "uuid":
    import uuid; print(uuid.uuid4())
elif cmd == "rand":
    import secrets; print(secrets.token_hex(4))
'

state_json() { dctl state --tenant "$TENANT" --domain "$DOMAIN" --json 2>/dev/null; }

# --- is the stack there? -------------------------------------------------------------

rc=0
dctl sender --tenant 00000000-0000-0000-0000-000000000000 >/dev/null 2>&1 || rc=$?
if ((rc != 0)); then
    fail "the stack does not answer (domainctl sender exited $rc).
    Start it in another terminal with:  make run   and wait for 'ready'."
fi

TENANT="${DEMO_TENANT:-$(py uuid)}"
DOMAIN="${DEMO_DOMAIN:-demo-$(py rand).test}"

printf '%sEmail sending domains: a demo%s\n' "$B" "$N"
info "tenant  $TENANT"
info "domain  $DOMAIN"

# --- 1. register -------------------------------------------------------------------

step "1. The tenant registers $DOMAIN"
info "\$ domainctl register --tenant $TENANT --domain $DOMAIN"
rc=0
out="$(dctl register --tenant "$TENANT" --domain "$DOMAIN" 2>&1)" || rc=$?
sed 's/^/    /' <<<"$out"
((rc == 0)) || fail "register was not accepted (exit $rc)"

# --- 2. wait for the records -------------------------------------------------------------

step "2. The service provisions the domain at the provider"
start=$SECONDS
last=""
while :; do
    json="$(state_json)" || json=""
    status="$( [[ -n "$json" ]] && py status <<<"$json" || true)"
    if [[ -n "$status" && "$status" != "$last" ]]; then
        info "$(printf '%3ss' $((SECONDS - start)))  status: $status"
        last="$status"
    fi
    if [[ "$status" == awaiting_dns || "$status" == verifying || "$status" == verified ]] &&
        (($(py nrecords <<<"$json") > 0)); then
        break
    fi
    [[ "$status" == failed || "$status" == deactivated ]] && fail "the domain became $status:
$json"
    ((SECONDS - start < TIMEOUT)) || fail "no DNS records after ${TIMEOUT}s (status: ${status:-unknown}).
    Look at the [worker] and [provider] lines of 'make run'."
    sleep 0.3
done

# --- 3. publish them -------------------------------------------------------------------

step "3. The domain owner publishes these records at their DNS host"
py table "$DOMAIN" <<<"$json"
py publish "$DOMAIN" "$ZONE_FILE" <<<"$json"
info "${D}(here: written to ${ZONE_FILE#"$ROOT"/}, served by dev-dns at $DEV_DNS_ADDR with TTL 60)${N}"
# like an owner who waits for the DNS host to publish: until dev-dns answers for them
start=$SECONDS
until py served "$DOMAIN" "$DEV_DNS_ADDR" <<<"$json"; do
    if ((SECONDS - start >= 10)); then
        info "${R}dev-dns does not serve them after 10s (is it the [dns] of 'make run'?): going on anyway${N}"
        break
    fi
    sleep 0.2
done

# --- 4. tell the service -----------------------------------------------------------------

step "4. The owner says the records are in place"
info "\$ domainctl dns-configured --tenant $TENANT --domain $DOMAIN"
rc=0
out="$(dctl dns-configured --tenant "$TENANT" --domain "$DOMAIN" 2>&1)" || rc=$?
sed 's/^/    /' <<<"$out"
((rc == 0)) || fail "dns-configured was not accepted (exit $rc)"

# --- 5. watch it get verified ------------------------------------------------------------

step "5. The service checks DNS and the provider until the domain is verified"
start=$SECONDS
last=""
lastdns=""
while :; do
    json="$(state_json)" || json=""
    if [[ -n "$json" ]]; then
        status="$(py status <<<"$json")"
        dns="$(py dns <<<"$json")"
        if [[ "$status" != "$last" ]]; then
            info "$(printf '%3ss' $((SECONDS - start)))  status: $status"
            last="$status"
        fi
        if [[ "$dns" != "$lastdns" ]]; then
            info "${D}$(printf '%3ss' $((SECONDS - start)))  DNS: $dns${N}"
            lastdns="$dns"
        fi
        [[ "$status" == verified ]] && break
        [[ "$status" == failed || "$status" == deactivated ]] && fail "the domain became $status:
$json"
    fi
    ((SECONDS - start < TIMEOUT)) || fail "not verified after ${TIMEOUT}s (status: ${last:-unknown}).
    Full state:  $DOMAINCTL state --tenant $TENANT --domain $DOMAIN
    and the [handler], [worker] and [dns] lines of 'make run'."
    sleep 0.3
done
printf '    %s%s is verified%s\n' "$G" "$DOMAIN" "$N"

# --- 6. the sender -----------------------------------------------------------------------

step "6. The tenant now sends from its own domain"
info "\$ domainctl sender --tenant $TENANT"
start=$SECONDS
while :; do
    # the tenant_settings projection follows the event log within moments
    out="$(dctl sender --tenant "$TENANT" 2>&1)" || fail "domainctl sender failed: $out"
    [[ "$out" == *"@$DOMAIN"* ]] && break
    ((SECONDS - start < 15)) || break
    sleep 1
done
sed 's/^/    /' <<<"$out"
if [[ "$out" == *"@$DOMAIN"* ]]; then
    printf '\n%sDone:%s tenant %s now sends from %s.\n' "$G" "$N" "$TENANT" "$DOMAIN"
else
    fail "the sender still does not name $DOMAIN 15s after verification"
fi

# --- 7. the timeline -----------------------------------------------------------------------

step "7. Every step is an event in the domain's log"
info "\$ domainctl history --tenant $TENANT --domain $DOMAIN"
width=0
[[ -t 1 ]] && width="$(tput cols 2>/dev/null || echo 0)"
dctl history --tenant "$TENANT" --domain "$DOMAIN" 2>&1 | sed 's/^/    /' |
    if ((width > 20)); then cut -c1-"$width"; else cat; fi
printf '\nMore:  %s state --tenant %s --domain %s\n' "${DOMAINCTL#"$ROOT"/}" "$TENANT" "$DOMAIN"
