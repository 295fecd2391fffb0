#!/usr/bin/env bash
# Renders the example overlay (kubectl's built-in kustomize) and validates every
# resource offline against the Kubernetes JSON schemas bundled with the
# `kubernetes-validate` PyPI package (installed into .venv-k8s/ when missing), in
# strict mode (unknown fields are errors). Also checks that the NATS config parses.
# Exit status non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION="${K8S_VERSION:-1.33.0}"
VENV=.venv-k8s
KUBECTL="${KUBECTL:-$(command -v kubectl || echo /usr/bin/kubectl)}"

if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
    echo "== installing kubernetes-validate into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==1.37.0"
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

echo "== kubectl kustomize k8s/overlays/example"
"$KUBECTL" kustomize k8s/overlays/example > "$out/rendered.yaml"
# One file per resource, so a failure names the resource.
python3 - "$out" <<'PY'
import sys, pathlib
out = pathlib.Path(sys.argv[1])
docs = [d for d in out.joinpath("rendered.yaml").read_text().split("\n---\n") if d.strip()]
for i, d in enumerate(docs):
    out.joinpath(f"{i:03d}.yaml").write_text(d + "\n")
print(f"{len(docs)} resources rendered")
PY
kinds="$(grep -h '^kind:' "$out"/[0-9]*.yaml | sort | uniq -c | tr -s ' ' | paste -sd, -)"
echo "   ${kinds}"
for kind in StatefulSet Deployment PodDisruptionBudget Job Secret ConfigMap; do
    grep -q "^kind: $kind\$" "$out/rendered.yaml" || { echo "no $kind rendered" >&2; exit 1; }
done
[ "$(grep -c '^kind: Deployment$' "$out/rendered.yaml")" -eq 7 ] || { echo "expected 7 Deployments" >&2; exit 1; }
grep -q 'sync_interval: always' "$out/rendered.yaml" || { echo "NATS config lost sync_interval: always" >&2; exit 1; }

echo "== kubernetes-validate (Kubernetes $K8S_VERSION, strict)"
"$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$out"/[0-9]*.yaml

if command -v nats-server >/dev/null; then
    echo "== nats-server -t (accounts.conf)"
    # The local server may be older than 2.10 (no sync_interval): check the shared
    # accounts file, which the cluster's nats.conf includes, on its own.
    cp k8s/nats/accounts.conf "$out/accounts.conf"
    printf 'jetstream { store_dir: "%s/js" }\ninclude ./accounts.conf\n' "$out" > "$out/test.conf"
    for v in $(grep -o '\$NATS_PW_[A-Z_]*' k8s/nats/accounts.conf | tr -d '$' | sort -u); do export "$v=x"; done
    nats-server -c "$out/test.conf" -t
fi
echo "k8s: OK"
