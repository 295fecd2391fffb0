#!/usr/bin/env bash
# The checked-in JSON Schemas, examples and AsyncAPI document are what the Rust types
# generate (schemagen --check), and asyncapi.yaml is valid for the official AsyncAPI
# parser (@asyncapi/parser, installed into schemas/node_modules when missing).
# Exit status non-zero on any drift or error diagnostic.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== schemagen --check"
cargo run -q -p schemagen -- --check

echo "== AsyncAPI validation (@asyncapi/parser)"
command -v node >/dev/null || { echo "node is required (Node.js 20+)" >&2; exit 1; }
if [ ! -d schemas/node_modules/@asyncapi/parser ]; then
    (cd schemas && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi)
fi
node schemas/validate-asyncapi.mjs schemas/asyncapi.yaml
