#!/usr/bin/env bash
# What eBPF HTTP tracing (--enable-ebpf) costs processes that never speak
# HTTP: syscalls on files and pipes, timed without the agent and with each
# agent configuration, alternating, in the same session.
#
#   dd   — dd if=/dev/zero of=/dev/null bs=1 count=$COUNT: 2 x COUNT
#          read/write syscalls on character devices;
#   pipe — two processes pass one byte back and forth through two pipes,
#          $ROUNDTRIPS times: 4 x ROUNDTRIPS read/write syscalls, each
#          with a context switch (a small C program, compiled here);
#   http — the other side of the question, what a traced HTTP exchange
#          costs: one thread passes an 80-byte GET and a 38-byte response
#          back and forth over one loopback TCP connection to itself,
#          $ROUNDTRIPS times: 4 x ROUNDTRIPS socket read/write syscalls,
#          each one a traced HTTP message, with no context switch and no
#          other work, so the time added is the kernel side's per traced
#          message (the agent drains the ring on the other CPU; pin with
#          CPU).
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
#        WORKLOADS ("dd pipe http"), COUNT_EVENTS (1: the agent's ring
#        counters after each workload, lost events flagged; its interval is
#        then 1s), BPF_STATS (1: kernel.bpf_stats_enabled during each traced
#        workload, and ns per run of the agent's busiest programs, from
#        /proc/<agent>/fdinfo), ROUNDS (7), COUNT (1000000), ROUNDTRIPS (200000), CPU (pin the
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
WORKLOADS=${WORKLOADS:-dd pipe http}
COUNT_EVENTS=${COUNT_EVENTS:-0}
BPF_STATS=${BPF_STATS:-0}
# the agent's cycle every second only where its counters are wanted: a
# cycle on the other CPU during a short workload is noise of its own
if [ "$COUNT_EVENTS" = 1 ]; then INTERVAL=1s; else INTERVAL=10s; fi
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
trap 'sysctl -qw kernel.bpf_stats_enabled=0; cleanup' EXIT
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

cat >"$TMP/httppong.c" <<'EOF'
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
static const char req[] =
    "GET /bench/path HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: httppong\r\nAccept: */*\r\n\r\n";
static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (l < 0 || bind(l, (void *)&a, sizeof(a)) || listen(l, 1) || getsockname(l, (void *)&a, &al))
        return 1;
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (void *)&a, sizeof(a))) return 1;
    int s = accept(l, 0, 0);
    if (s < 0) return 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char buf[512];
    for (long i = 0; i < n; i++) {
        if (write(c, req, sizeof(req) - 1) != sizeof(req) - 1) return 1;
        if (read(s, buf, sizeof(buf)) != sizeof(req) - 1) return 1;
        if (write(s, resp, sizeof(resp) - 1) != sizeof(resp) - 1) return 1;
        if (read(c, buf, sizeof(buf)) != sizeof(resp) - 1) return 1;
    }
    return 0;
}
EOF
cc -O2 -o "$TMP/httppong" "$TMP/httppong.c"

for cfg in $CONFIGS; do
    bin=${cfg#*=}
    bin=${bin%%,*}
    [ -x "$bin" ] || die "no $bin (config $cfg): cargo build --release first"
done

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

pin() { if [ -n "$CPU" ]; then taskset -c "$CPU" "$@"; else "$@"; fi; }

workload_ns() { # dd|pipe|http: wall nanoseconds of one run
    local t0 t1
    t0=$(date +%s%N)
    case $1 in
    dd) pin dd if=/dev/zero of=/dev/null bs=1 count="$COUNT" 2>/dev/null ;;
    pipe) pin "$TMP/pingpong" "$ROUNDTRIPS" ;;
    http) pin "$TMP/httppong" "$ROUNDTRIPS" ;;
    esac
    t1=$(date +%s%N)
    echo $((t1 - t0))
}

start_agent() { # NAME=BIN[,ARG...]
    local name=${1%%=*} spec=${1#*=} bin args
    bin=${spec%%,*}
    args=()
    if [ "$spec" != "$bin" ]; then IFS=, read -r -a args <<<"${spec#*,}"; fi
    PORT=$(free_port)
    "$bin" --enable-ebpf --sink stdout --interval "$INTERVAL" --health-port "$PORT" "${args[@]}" \
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

# the agent's ring counters after a workload (its cycle, every second,
# reads them): a lost event is a cheap program run, so a run that lost
# some is flagged
events_seen() { # NAME WORKLOAD
    sleep 1.5
    curl -s "http://127.0.0.1:$PORT/metrics" |
        awk -v n="$1" -v w="$2" '/^cased_agent_ebpf_events_total/ {e=$2}
            /^cased_agent_ebpf_events_lost_total/ {l=$2}
            END {printf "  %s %s: ring events so far %d, lost %d\n", n, w, e, l}' >&2
}

# run_cnt and run_time_ns of each of the agent's BPF programs
prog_stats() {
    local f
    for f in /proc/"$AGENT"/fdinfo/*; do
        awk '/^run_time_ns/ {t=$2} /^run_cnt/ {c=$2} /^prog_id/ {i=$2}
            END {if (c != "") print i, c, t}' "$f" 2>/dev/null
    done | sort
}
# per program that ran at least once per syscall of the workload: ns/run
stats_line() { # NAME WORKLOAD BEFORE AFTER
    join "$3" "$4" | awk -v n="$1" -v w="$2" -v min="$ROUNDTRIPS" '$4 - $2 >= min {
        printf "%s\t%s\t%d\t%.1f\n", n, w, $4 - $2, ($5 - $3) / ($4 - $2)}' >>"$TMP/bpf_stats.tsv"
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
        for w in $WORKLOADS; do
            traced_stats=0
            if [ "$BPF_STATS" = 1 ] && [ "$c" != base ]; then
                traced_stats=1
                sysctl -qw kernel.bpf_stats_enabled=1
                prog_stats >"$TMP/stats.before"
            fi
            ns=$(workload_ns "$w")
            if [ "$traced_stats" = 1 ]; then
                prog_stats >"$TMP/stats.after"
                sysctl -qw kernel.bpf_stats_enabled=0
                stats_line "$name" "$w" "$TMP/stats.before" "$TMP/stats.after"
            fi
            printf '%s\t%s\t%s\t%s\n' "$r" "$name" "$w" "$ns" >>"$RESULTS"
            [ "$c" = base ] || [ "$COUNT_EVENTS" != 1 ] || events_seen "$name" "$w"
            echo "  round $r $name $w: $((ns / 1000000)) ms" >&2
        done
        stop_agent
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for f in "$TMP"/mode.*; do echo "${f##*/mode.}: $(cat "$f")"; done

if [ -s "$TMP/bpf_stats.tsv" ]; then
    echo "kernel BPF time (bpf_stats), per program run, median over rounds:"
    python3 - "$TMP/bpf_stats.tsv" <<'EOF'
import collections, statistics as st, sys
t = collections.defaultdict(list)
for l in open(sys.argv[1]):
    n, w, runs, ns = l.split("\t")
    t[(w, n)].append(float(ns))
for (w, n), v in t.items():
    print(f"  {w} {n}: {st.median(v):.0f} ns per run ({len(v)} program-rounds: {', '.join(f'{x:.0f}' for x in v)})")
EOF
fi

python3 - "$RESULTS" "$COUNT" "$ROUNDTRIPS" <<'EOF'
import collections, statistics as st, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
syscalls = {"dd": 2 * int(sys.argv[2]), "pipe": 4 * int(sys.argv[3]),
            "http": 4 * int(sys.argv[3])}
t = collections.defaultdict(dict)  # (workload, config) -> round -> ns
for r, name, w, ns in rows:
    t[(w, name)][r] = int(ns)
names = list(dict.fromkeys(name for _, name, _, _ in rows))
print("| workload | config | median wall ms | ratio to base (median of rounds) | rounds' ratios | added ns per syscall |")
print("|---|---|---|---|---|---|")
for w in dict.fromkeys(w for _, _, w, _ in rows):
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
