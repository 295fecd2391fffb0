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
[ "$(grep -c '^kind: Deployment$' "$out/rendered.yaml")" -eq 8 ] || { echo "expected 8 Deployments (7 services and the gateway)" >&2; exit 1; }
grep -q 'sync_interval: always' "$out/rendered.yaml" || { echo "NATS config lost sync_interval: always" >&2; exit 1; }

echo "== consistency (probes, resources, secrets, services, image)"
# What the schemas cannot see: every Deployment's containers have probes on ports they
# declare and resources; every secretKeyRef names a rendered Secret and one of its
# keys; every Service selects pods and targets ports they declare; every binary a
# container runs is built into the image.
"$VENV/bin/python" - "$out/rendered.yaml" k8s/image/Dockerfile <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
dockerfile = open(sys.argv[2]).read()
problems = []
secrets = {d["metadata"]["name"]: set((d.get("data") or {}) | (d.get("stringData") or {}))
           for d in docs if d["kind"] == "Secret"}
workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]

def pod_spec(d):
    return d["spec"]["template"]["spec"]

def secret_refs(node):
    if isinstance(node, dict):
        if "secretKeyRef" in node:
            yield node["secretKeyRef"]
        for v in node.values():
            yield from secret_refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from secret_refs(v)

for d in workloads:
    name = f'{d["kind"]}/{d["metadata"]["name"]}'
    for ref in secret_refs(pod_spec(d)):
        keys = secrets.get(ref["name"])
        if keys is None:
            problems.append(f"{name}: Secret {ref['name']} is not rendered")
        elif ref["key"] not in keys:
            problems.append(f"{name}: Secret {ref['name']} has no key {ref['key']}")
    if d["kind"] != "Deployment":
        continue
    for c in pod_spec(d)["containers"]:
        ports = {p.get("name") for p in c.get("ports", [])} | {p["containerPort"] for p in c.get("ports", [])}
        for probe in ("livenessProbe", "readinessProbe"):
            p = c.get(probe)
            if not p:
                problems.append(f"{name}: container {c['name']} has no {probe}")
            elif p.get("httpGet", {}).get("port") not in ports:
                problems.append(f"{name}: {probe} on an undeclared port")
        if not c.get("resources", {}).get("requests") or not c.get("resources", {}).get("limits"):
            problems.append(f"{name}: container {c['name']} has no requests and limits")
        binary = (c.get("command") or [""])[0]
        if binary.startswith("/usr/local/bin/") and f"/release/{binary.rsplit('/', 1)[1]} " not in dockerfile.replace("\\\n", " ") + " ":
            problems.append(f"{name}: {binary} is not copied into the image (k8s/image/Dockerfile)")

for svc in (d for d in docs if d["kind"] == "Service"):
    sel = svc["spec"].get("selector", {})
    pods = [w for w in workloads if w["kind"] != "Job"
            and sel.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
    if not pods:
        problems.append(f"Service/{svc['metadata']['name']} selects no pods")
    for port in svc["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        if not any(target in {p.get("name") for c in pod_spec(w)["containers"] for p in c.get("ports", [])}
                   | {p["containerPort"] for c in pod_spec(w)["containers"] for p in c.get("ports", [])}
                   for w in pods):
            problems.append(f"Service/{svc['metadata']['name']}: no selected pod declares port {target}")

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"   {len(workloads)} workloads, {len(secrets)} secrets checked")
PY

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
