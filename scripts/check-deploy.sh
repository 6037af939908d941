#!/usr/bin/env bash
# Offline validation of the Helm chart (deploy/helm/runnel) and the dashboards and alerts
# (deploy/observability). Needs only python3 with venv and pip reaching PyPI: the first
# run installs the pinned tools of deploy/helm/ci/requirements.txt into target/deploy-venv
# (helm-python-sdk, which bundles the Helm v4 Go library; kubernetes-validate; yamllint;
# promql-parser); later runs reuse it while requirements.txt is unchanged.
#
# The checks themselves are in deploy/helm/ci/check_deploy.py (its docstring lists them).
# Output: PASS/FAIL per check, a summary, and the plain last line "N passed, N failed".
# Exit status 1 on any failure. Set PROMTOOL=/path/to/promtool (or put it on PATH) to
# check the alert rules with Prometheus' own tool as well.
#
#   scripts/check-deploy.sh            # everything
#   RUNNEL_DEPLOY_VENV=DIR scripts/check-deploy.sh   # another virtualenv location
set -uo pipefail
cd "$(dirname "$0")/.."

venv="${RUNNEL_DEPLOY_VENV:-target/deploy-venv}"
requirements="deploy/helm/ci/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$requirements")"

setup_failed() {
    echo "FAIL setting up $venv: $1"
    echo "     (needs python3 with the venv module, e.g. Debian's python3-venv, and pip access to PyPI)"
    echo "0 passed, 1 failed"
    exit 1
}

if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "==> installing the check tools into $venv (pinned in $requirements)"
    python3 -m venv "$venv" || setup_failed "python3 -m venv"
    "$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$requirements" \
        || setup_failed "pip install -r $requirements"
    echo "$want" > "$stamp"
fi

exec "$venv/bin/python" deploy/helm/ci/check_deploy.py "$@"
