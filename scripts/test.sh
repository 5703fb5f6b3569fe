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
# eBPF: the object's toolchain (stale check) and real servers and clients
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
command -v llvm-strip >/dev/null 2>&1 || need_apt+=(llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || need_apt+=(libbpf-dev)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
# eBPF TLS: openssl makes the test certificates, Go builds tests/ebpf/gotls.go
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v go >/dev/null 2>&1 || need_apt+=(golang-go)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# VM tests (tests/vm/, tests/it/vm.rs): a 6.1 kernel booted by qemu (TCG)
# from an initramfs of busybox-static, dmsetup and the agent
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_apt+=(qemu-system-x86)
ls /boot/vmlinuz-6.1.* >/dev/null 2>&1 || need_apt+=(linux-image-amd64)
dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
command -v dmsetup >/dev/null 2>&1 || need_apt+=(dmsetup)
command -v cpio >/dev/null 2>&1 || need_apt+=(cpio)
command -v xz >/dev/null 2>&1 || need_apt+=(xz-utils)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing tools: ${need_apt[*]} (root tests will skip outside CI)" >&2
  fi
fi

echo "== eBPF object matches its source"
# the committed src/ebpf/bpf/http.bpf.o must be what build.sh makes of
# http.bpf.c (so `cargo build` needs no clang, and the object is not stale)
if command -v clang >/dev/null 2>&1 && [ -f /usr/include/bpf/bpf_helpers.h ]; then
  fresh=$(mktemp)
  src/ebpf/bpf/build.sh "$fresh"
  if ! cmp -s "$fresh" src/ebpf/bpf/http.bpf.o; then
    rm -f "$fresh"
    echo "src/ebpf/bpf/http.bpf.o is stale: run src/ebpf/bpf/build.sh and commit it" >&2
    exit 1
  fi
  rm -f "$fresh"
elif [ "${CI:-}" = true ]; then
  echo "clang or libbpf-dev missing: cannot check the eBPF object" >&2
  exit 1
else
  echo "clang or libbpf-dev missing: eBPF object not checked" >&2
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
# bounds on the node's record count hold only with no other test's traffic
cargo test --test it -- --ignored --exact --test-threads=1 \
  ebpf::past_the_socket_state_cap_messages_go_alone_and_count_exactly

if [ -x tests/deploy/run.sh ]; then
  echo "== deployment checks"
  tests/deploy/run.sh
fi
echo "== all tests passed"
