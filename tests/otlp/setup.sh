#!/usr/bin/env bash
# Installs the real OpenTelemetry clients that the OTLP integration tests
# (tests/it/otlp_clients.rs) drive. Idempotent: a second run checks and
# changes nothing. Pinned versions: requirements.txt + constraints.txt
# (pip) and package-lock.json (npm).
#
#   Python SDK  opentelemetry-sdk + exporter-otlp-proto-http/-grpc 1.45.2
#               into a venv at $CASED_OTLP_VENV (default target/otlp-venv)
#   JS SDK      @opentelemetry/sdk-trace-base 2.12.1 +
#               exporter-trace-otlp-http 0.223.1, sdk-metrics 2.12.0 +
#               exporter-metrics-otlp-http 0.223.0 into tests/otlp/node_modules
#               (run with the machine's node, 18 or newer)
#
# The tests find them at those paths, or through:
#   CASED_OTLP_PYTHON   the venv's python (default target/otlp-venv/bin/python)
#   CASED_OTLP_NODE     node (default: node on PATH)
# Under CI=true a missing client fails the tests; otherwise they skip.
set -euo pipefail
cd "$(dirname "$0")/../.."
t0=$(date +%s)

venv=${CASED_OTLP_VENV:-target/otlp-venv}
if [ ! -x "$venv/bin/python" ]; then
  echo "== otlp clients: creating $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/pip" install -q --disable-pip-version-check \
  -r tests/otlp/requirements.txt -c tests/otlp/constraints.txt; then
  echo "otlp clients: pip install failed" >&2
  exit 1
fi

if ! command -v node >/dev/null 2>&1; then
  echo "otlp clients: node is not installed (apt-get install nodejs npm)" >&2
  exit 1
fi
stamp=tests/otlp/node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ tests/otlp/package-lock.json -nt "$stamp" ]; then
  echo "== otlp clients: npm ci"
  (cd tests/otlp && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== otlp clients ready ($(( $(date +%s) - t0 )) s): $("$venv/bin/python" -c 'import importlib.metadata as m; print("opentelemetry-sdk", m.version("opentelemetry-sdk"))'), node $(node --version)"
