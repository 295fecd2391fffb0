#!/usr/bin/env bash
# Tools the tests need beyond NATS and Postgres (scripts/ensure-infra.sh):
#   - Debian's chromium, for the owner page's browser test (services/gateway/tests/browser.rs)
#   - playwright-core and axe-core from npm in services/gateway/e2e (its package-lock.json)
# Installs what is missing when run as root; otherwise says what to install. Quiet when all is there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! command -v chromium >/dev/null 2>&1; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "[test-tools] installing chromium (Debian package) for the browser test" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "[test-tools] chromium is missing: apt-get install chromium (the browser test will fail without it)" >&2
    fi
fi

E2E="$ROOT/services/gateway/e2e"
if [[ -f "$E2E/package-lock.json" && ( ! -d "$E2E/node_modules/playwright-core" || ! -d "$E2E/node_modules/axe-core" ) ]]; then
    if command -v npm >/dev/null 2>&1; then
        echo "[test-tools] npm ci in services/gateway/e2e" >&2
        (cd "$E2E" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    else
        echo "[test-tools] npm is missing: the browser test needs Node.js and npm" >&2
    fi
fi
