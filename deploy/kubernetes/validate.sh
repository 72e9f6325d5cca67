#!/usr/bin/env bash
# Renders every overlay under deploy/kubernetes/overlays, and each component on top of the cpu
# and gpu overlays, with `kubectl kustomize` (offline), then validates every rendered object
# against the Kubernetes JSON schemas of kubernetes-validate (a PyPI package that ships them;
# --strict: unknown fields are errors) for the oldest and newest Kubernetes versions below, and
# runs check.py (what the schemas cannot see: settings the server reads, the drain within the
# grace period, the image's uid, probes, selectors, volumes). The encoder's Indexed Job
# (encode-job) is rendered and validated the same way, check.py checking it against the encoder
# (its flags, the shard count, the output's name, the model revision the server serves).
#
# The Prometheus Operator kinds (ServiceMonitor, PrometheusRule) are CRDs with no schema in the
# package: they are rendered and parsed, not validated against a schema. Any other kind without
# a schema fails.
#
# Makes its own virtualenv (target/k8s-validate-venv, 144 MB, 15-25 s the first time). Measured
# on the 2-core development machine under other load: 10-20 s for the 11 renders and validations
# before the Job was added; with it, the 12 took 14 s under a load average of 8-9, 72-82 s
# under 14 (2026-12-07).
set -euo pipefail
cd "$(dirname "$0")/../.."

KUBERNETES_VERSIONS=${KUBERNETES_VERSIONS:-"1.30.0 1.37.0"}
VENV=target/k8s-validate-venv
here=deploy/kubernetes
start=$SECONDS

if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet -r "$here/requirements.txt"
fi
venv_s=$((SECONDS - start))

work=$(mktemp -d -p target k8s-validate.XXXXXX)
trap 'rm -rf "$work"' EXIT

# name -> kustomization directory. Overlays as they are, then each component on each overlay
# in a kustomization of its own (kustomize wants relative paths).
declare -A targets
for overlay in "$here"/overlays/*/; do
    targets[$(basename "$overlay")]=$overlay
done
for component in "$here"/components/*/; do
    for overlay in cpu gpu; do
        name="$overlay+$(basename "$component")"
        dir="$work/$name"
        mkdir -p "$dir"
        up=$(realpath --relative-to="$dir" .)
        cat >"$dir/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $up/$here/overlays/$overlay
components:
  - $up/$component
EOF
        targets[$name]=$dir
    done
done
# Everything together: the components must not undo each other.
dir="$work/cpu+all"
mkdir -p "$dir"
up=$(realpath --relative-to="$dir" .)
{
    printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n'
    printf 'resources:\n  - %s\ncomponents:\n' "$up/$here/overlays/cpu"
    for component in "$here"/components/*/; do printf '  - %s\n' "$up/${component%/}"; done
} >"$dir/kustomization.yaml"
targets[cpu+all]=$dir
# The encoder's Indexed Job (bge-m3-encode --shard), on its own: check.py checks it against the
# encoder rather than the server.
targets[encode-job]=$here/encode-job

# The validator must refuse what is wrong, or its passes say nothing: a Deployment with a
# misspelt field and a string count.
cat >"$work/wrong.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: wrong}
spec:
  replicas: two
  selector: {matchLabels: {app: wrong}}
  template:
    metadata: {labels: {app: wrong}}
    spec:
      containers: [{name: c, image: i, imagePullPolicy: Sometimes, port: 8101}]
EOF
if "$VENV/bin/kubernetes-validate" --strict --quiet "$work/wrong.yaml" >/dev/null 2>&1; then
    echo "kubernetes-validate accepted a wrong Deployment: its passes mean nothing" >&2
    exit 1
fi

# The Job's backoffLimitPerIndex (Kubernetes 1.28 and later) must be a field the validated
# versions know, not one --strict lets through: 1.27's schema refuses it, theirs accept it.
cat >"$work/per-index.yaml" <<'EOF'
apiVersion: batch/v1
kind: Job
metadata: {name: per-index}
spec:
  completionMode: Indexed
  completions: 2
  backoffLimitPerIndex: 1
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: i}]
EOF
if "$VENV/bin/kubernetes-validate" --strict --quiet -k 1.27.0 "$work/per-index.yaml" >"$work/per-index.log" 2>&1 \
    || ! grep -q "'backoffLimitPerIndex' was unexpected" "$work/per-index.log"; then
    echo "Kubernetes 1.27's schema did not refuse backoffLimitPerIndex: its checks mean nothing" >&2
    exit 1
fi
for version in $KUBERNETES_VERSIONS; do
    if ! "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$work/per-index.yaml" >/dev/null 2>&1; then
        echo "Kubernetes $version does not know backoffLimitPerIndex: validate the Job with 1.28 or later" >&2
        exit 1
    fi
done

passed=0
failed=0
for name in $(printf '%s\n' "${!targets[@]}" | sort); do
    out="$work/$name.yaml"
    ok=1
    if ! kubectl kustomize "${targets[$name]}" >"$out" 2>"$work/$name.err"; then
        cat "$work/$name.err"
        ok=0
    else
        for version in $KUBERNETES_VERSIONS; do
            if ! "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$out" >"$work/$name.log" 2>&1; then
                ok=0
            fi
            # Only the Prometheus Operator's kinds may lack a schema.
            if grep -v "Couldn't find schema for kind \(ServiceMonitor\|PrometheusRule\) with api version monitoring.coreos.com/v1" \
                "$work/$name.log" | grep -q .; then
                ok=0
            fi
            [ "$ok" = 1 ] || { sed 's/^/  /' "$work/$name.log"; break; }
        done
        "$VENV/bin/python" "$here/check.py" "$out" || ok=0
    fi
    objects=$(grep -c '^kind:' "$out" || true)
    if [ "$ok" = 1 ]; then
        passed=$((passed + 1))
        echo "ok    $name ($objects objects)"
    else
        failed=$((failed + 1))
        echo "FAIL  $name"
    fi
done

echo "kubernetes: $((SECONDS - start)) s (virtualenv $venv_s s), Kubernetes $KUBERNETES_VERSIONS"
echo "kubernetes: $passed passed, $failed failed"
[ "$failed" = 0 ]
