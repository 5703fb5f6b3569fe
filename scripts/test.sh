#!/usr/bin/env bash
# Runs every test of cased-agent: formatting, lints, unit and integration
# tests (the root-only ones run for real when root; under CI=true they must),
# and the deployment checks. Installs what the tests need when it can.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
# OTLP client tests: a Python venv and node + npm (tests/otlp/setup.sh)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing tools: ${need_apt[*]} (root tests will skip outside CI)" >&2
  fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings

echo "== OTLP test clients (pip, npm)"
if ! tests/otlp/setup.sh; then
  if [ "${CI:-}" = true ]; then exit 1; fi
  echo "OTLP clients not installed: their tests will skip" >&2
fi

echo "== cargo test"
# one test thread per core; root tests create cgroups and namespaces of their own
cargo test --lib --bins --tests -- --test-threads=2

if [ -x tests/deploy/run.sh ]; then
  echo "== deployment checks"
  tests/deploy/run.sh
fi
echo "== all tests passed"
