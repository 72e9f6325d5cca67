#!/usr/bin/env bash
# The cheap checks of the container images, for CI: hadolint (Dockerfile rules, and shellcheck
# on every RUN) on both Dockerfiles, shellcheck on the deployment scripts, and the uid the
# Kubernetes manifests assume. Building and running the image is deploy/docker/image-test.sh.
# Makes its own virtualenv (target/hadolint-venv, 40 MB, about 10 s); the lint itself takes
# about a second.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
VENV=target/hadolint-venv
if [ ! -x "$VENV/bin/hadolint" ] || [ ! -x "$VENV/bin/shellcheck" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet -r deploy/docker/requirements.txt
fi
"$VENV/bin/hadolint" --no-color Dockerfile deploy/docker/Dockerfile.cuda
# healthcheck.sh runs inside the image, where bash is the shell; the others run here.
"$VENV/bin/shellcheck" deploy/docker/*.sh deploy/kubernetes/validate.sh
# Kubernetes' runAsUser (deploy/kubernetes) and fsGroup are this uid; so is the user the
# image test checks.
for file in Dockerfile deploy/docker/Dockerfile.cuda; do
    grep -qx 'USER 10001:10001' "$file" || { echo "$file: USER is not 10001:10001" >&2; exit 1; }
done
echo "docker lint: ok ($((SECONDS - start)) s)"
