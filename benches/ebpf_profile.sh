#!/usr/bin/env bash
# Where the socket path's kernel time goes: the same traced workload
# (benches/ebpf_tax.sh's `http` ping-pong by default) under objects built to
# stop the socket path after each step (http.bpf.c's PROFILE_CUT), so each
# step's price is the difference between two neighbours, measured as time
# added to the traced process in the same session, alternating:
#
#   cut9  the tracepoint and an empty program (what any attached program costs)
#   cut1  + the agent's own pid skipped, the syscall's registers and number
#   cut2  + the data's address, the socket's storage looked up and, for a
#           socket that never carried HTTP, the 8-byte look that classifies
#   cut3  + the fd checked against the socket (and the storage created on
#           a socket's first HTTP message)
#   cut4  + the first bytes copied into the per-CPU slot and classified
#   cut5  + the event's header (time, process, its start; on a new
#           connection its cgroups)
#   cut0  + a request held in the storage, or the ring-buffer record (one
#           per request and response): the shipped program
#
# Usage: sudo benches/ebpf_profile.sh
# Env:   BIN (target/release/cased-agent, built with
#        `cargo build --release --features bench-bpf-object`), CUTS ("9 1 2 3 4 5 0"),
#        and ebpf_tax.sh's ROUNDS, ROUNDTRIPS, CPU, WORKLOADS (http),
#        COUNT_EVENTS (1), BPF_STATS (1: the programs' own time per run,
#        the steadier figure; wall time added per syscall beside it).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${BIN:-target/release/cased-agent}")
CUTS=${CUTS:-9 1 2 3 4 5 0}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/ebpf_profile.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release --features bench-bpf-object" >&2; exit 1; }
configs=""
for n in $CUTS; do
    BPF_CFLAGS="-DPROFILE_CUT=$n" src/ebpf/bpf/build.sh "$DIR/cut$n.o"
    printf '#!/bin/sh\nCASED_EBPF_OBJECT=%s exec %s "$@"\n' "$DIR/cut$n.o" "$BIN" >"$DIR/agent$n"
    chmod +x "$DIR/agent$n"
    configs="$configs cut$n=$DIR/agent$n,--ebpf-attach=sock"
done
# the feature must be in the binary, or every cut is the shipped object
if ! grep -q CASED_EBPF_OBJECT "$BIN"; then
    echo "$BIN was built without --features bench-bpf-object" >&2
    exit 1
fi
CONFIGS="${configs# }" WORKLOADS=${WORKLOADS:-http} COUNT_EVENTS=${COUNT_EVENTS:-1} \
    BPF_STATS=${BPF_STATS:-1} benches/ebpf_tax.sh
