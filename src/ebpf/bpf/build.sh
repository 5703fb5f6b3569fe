#!/usr/bin/env bash
# Compile the eBPF program: http.bpf.c -> http.bpf.o (committed beside it, so
# `cargo build` needs no clang). Usage: build.sh [OUT] (default: http.bpf.o).
#
# Needs clang (Debian 14 is what the committed object was built with),
# llvm-strip and libbpf-dev's headers. vmlinux.h is committed too; to
# regenerate it from the running kernel:
#   bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h
# DWARF is stripped (the .BTF/.BTF.ext sections CO-RE needs stay) and paths
# are relative, so the object does not depend on where the tree is.
set -euo pipefail
cd "$(dirname "$0")"
out=${1:-http.bpf.o}
clang=${CLANG:-clang}
strip=${LLVM_STRIP:-llvm-strip}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
# BPF_CFLAGS: extra flags for profiling builds (-DPROFILE_CUT=n)
# shellcheck disable=SC2086
"$clang" -g -O2 -target bpf -D__TARGET_ARCH_x86 -fdebug-compilation-dir=. ${BPF_CFLAGS:-} \
  -Wall -Werror -I. -c http.bpf.c -o "$tmp"
"$strip" -g "$tmp"
cp "$tmp" "$out"
