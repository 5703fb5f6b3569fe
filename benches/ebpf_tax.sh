#!/usr/bin/env bash
# What eBPF HTTP tracing (--enable-ebpf) costs processes that never speak
# HTTP: syscalls on files and pipes, timed without the agent and with each
# agent configuration, alternating, in the same session.
#
#   dd   — dd if=/dev/zero of=/dev/null bs=1 count=$COUNT: 2 x COUNT
#          read/write syscalls on character devices;
#   pipe — two processes pass one byte back and forth through two pipes,
#          $ROUNDTRIPS times: 4 x ROUNDTRIPS read/write syscalls, each
#          with a context switch (a small C program, compiled here).
#
# Each round runs the baseline (no agent) and every configuration once, the
# order rotated from round to round; a configuration's agent is started
# fresh, waited for until its tracer is attached, and stopped after the
# workload. Printed per workload and configuration: the median wall time,
# the median of the per-round ratios to that round's baseline, and the time
# added per syscall.
#
# Usage: sudo benches/ebpf_tax.sh
# Env:   CONFIGS  space-separated NAME=BIN[,ARG...] (default:
#                 "sock=target/release/cased-agent,--ebpf-attach=sock
#                  syscalls=target/release/cased-agent,--ebpf-attach=syscalls");
#                 each runs BIN --enable-ebpf --sink stdout ARG...
#        ROUNDS (7), COUNT (1000000), ROUNDTRIPS (200000), CPU (pin the
#        workload to this CPU; empty: not pinned), SETTLE (seconds after
#        the agent attached before the workload, 3), KEEP (1: keep outputs).
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=target/release/cased-agent
CONFIGS=${CONFIGS:-"sock=$BIN,--ebpf-attach=sock syscalls=$BIN,--ebpf-attach=syscalls"}
ROUNDS=${ROUNDS:-7}
COUNT=${COUNT:-1000000}
ROUNDTRIPS=${ROUNDTRIPS:-200000}
CPU=${CPU:-}
KEEP=${KEEP:-0}
SETTLE=${SETTLE:-3}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ebpf_tax.XXXXXX")
AGENT=""

die() { echo "ebpf_tax.sh: $*" >&2; exit 1; }

stop_agent() {
    if [ -n "$AGENT" ]; then
        kill "$AGENT" 2>/dev/null || true
        wait "$AGENT" 2>/dev/null || true
        AGENT=""
    fi
}
cleanup() {
    stop_agent
    if [ "$KEEP" = 1 ]; then echo "outputs kept in $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || die "needs root (BPF programs)"
command -v cc >/dev/null || die "needs a C compiler (cc) for the pipe ping-pong"

cat >"$TMP/pingpong.c" <<'EOF'
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    int a[2], b[2];
    char c = 'x';
    if (pipe(a) || pipe(b)) return 1;
    pid_t p = fork();
    if (p < 0) return 1;
    for (long i = 0; i < n; i++) {
        if (p == 0) {
            if (read(a[0], &c, 1) != 1 || write(b[1], &c, 1) != 1) return 1;
        } else {
            if (write(a[1], &c, 1) != 1 || read(b[0], &c, 1) != 1) return 1;
        }
    }
    if (p == 0) return 0;
    int st;
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}
EOF
cc -O2 -o "$TMP/pingpong" "$TMP/pingpong.c"

for cfg in $CONFIGS; do
    bin=${cfg#*=}
    bin=${bin%%,*}
    [ -x "$bin" ] || die "no $bin (config $cfg): cargo build --release first"
done

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

pin() { if [ -n "$CPU" ]; then taskset -c "$CPU" "$@"; else "$@"; fi; }

workload_ns() { # dd|pipe: wall nanoseconds of one run
    local t0 t1
    t0=$(date +%s%N)
    case $1 in
    dd) pin dd if=/dev/zero of=/dev/null bs=1 count="$COUNT" 2>/dev/null ;;
    pipe) pin "$TMP/pingpong" "$ROUNDTRIPS" ;;
    esac
    t1=$(date +%s%N)
    echo $((t1 - t0))
}

start_agent() { # NAME=BIN[,ARG...]
    local name=${1%%=*} spec=${1#*=} bin args
    bin=${spec%%,*}
    args=()
    if [ "$spec" != "$bin" ]; then IFS=, read -r -a args <<<"${spec#*,}"; fi
    "$bin" --enable-ebpf --sink stdout --interval 10s --health-port "$(free_port)" "${args[@]}" \
        >/dev/null 2>"$TMP/agent.$name.err" &
    AGENT=$!
    for _ in $(seq 600); do
        kill -0 "$AGENT" 2>/dev/null || die "agent $name exited: $(tail -3 "$TMP/agent.$name.err")"
        if grep -q "eBPF HTTP tracing attached" "$TMP/agent.$name.err"; then
            grep -o "eBPF HTTP tracing attached[^\"]*" "$TMP/agent.$name.err" | head -1 >"$TMP/mode.$name"
            # let its first collection cycle pass: the workload should
            # compete with the tracer, not with the agent's start
            sleep "$SETTLE"
            return 0
        fi
        sleep 0.1
    done
    die "agent $name: tracer not attached after 60 s"
}

RESULTS=$TMP/results.tsv
: >"$RESULTS"
read -r -a cfgs <<<"$CONFIGS"
names=(base)
for c in "${cfgs[@]}"; do names+=("$c"); done
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for r in $(seq "$ROUNDS"); do
    n=${#names[@]}
    for k in $(seq 0 $((n - 1))); do
        c=${names[$(((k + r) % n))]}
        name=${c%%=*}
        [ "$c" = base ] || start_agent "$c"
        for w in dd pipe; do
            ns=$(workload_ns "$w")
            printf '%s\t%s\t%s\t%s\n' "$r" "$name" "$w" "$ns" >>"$RESULTS"
            echo "  round $r $name $w: $((ns / 1000000)) ms" >&2
        done
        stop_agent
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for f in "$TMP"/mode.*; do echo "${f##*/mode.}: $(cat "$f")"; done

python3 - "$RESULTS" "$COUNT" "$ROUNDTRIPS" <<'EOF'
import collections, statistics as st, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
syscalls = {"dd": 2 * int(sys.argv[2]), "pipe": 4 * int(sys.argv[3])}
t = collections.defaultdict(dict)  # (workload, config) -> round -> ns
for r, name, w, ns in rows:
    t[(w, name)][r] = int(ns)
names = list(dict.fromkeys(name for _, name, _, _ in rows))
print("| workload | config | median wall ms | ratio to base (median of rounds) | rounds' ratios | added ns per syscall |")
print("|---|---|---|---|---|---|")
for w in ("dd", "pipe"):
    base = t[(w, "base")]
    for name in names:
        runs = t[(w, name)]
        med = st.median(runs.values())
        if name == "base":
            print(f"| {w} | base | {med / 1e6:.0f} | 1 | | |")
            continue
        ratios = [runs[r] / base[r] for r in runs if r in base]
        added = (med - st.median(base.values())) / syscalls[w]
        print(f"| {w} | {name} | {med / 1e6:.0f} | {st.median(ratios):.3f} | "
              f"{', '.join(f'{x:.3f}' for x in ratios)} | {added:.0f} |")
EOF
