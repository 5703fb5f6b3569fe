#!/usr/bin/env bash
# Whole-process cost of cased-agent over many cycles: CPU seconds per cycle
# (utime + stime of the process, from /proc/<pid>/stat) and peak RSS
# (VmHWM), for two trees of 1,000 containers:
#   real_v1    — 1,000 real v1 cgroups made on this machine, kubelet-shaped
#                (/sys/fs/cgroup/<ctl>/<unique>/kubepods/<qos>/pod<uid>/<id>
#                in cpu, cpuacct, memory, blkio, pids); needs root;
#   fixture_v2 — a 1,000-container kubepods.slice v2 tree in a temp dir built
#                from the real captured v2 files (--cgroup-path points at it;
#                the host's mountinfo is rebased onto it, so the tree's
#                cgroup2 mount is <tmp>/unified).
# The agent runs with --sink stdout (output to /dev/null) --interval 1s; the
# first cycles (first sight: files opened, no rates) are left out.
#
# On the real v1 tree it first runs the read floor (benches/read_floor.c:
# the same files preaded from kept-open descriptors, nothing else) and
# prints each agent's CPU per container as a ratio to it (issue 16).
#
# Usage: benches/whole_process.sh            (both trees)
#        TREE=real_v1 CYCLES=120 benches/whole_process.sh
#        TREE=real_v1 ROUNDS=3 BINS="/tmp/agent-old /tmp/agent-new" benches/whole_process.sh
# Env:   BIN (default target/release/cased-agent; build it first with
#        `cargo build --release`), N (containers, 1000), CYCLES (60),
#        WARMUP (3), FIXTURES (../shared/fixtures), BINS (several binaries,
#        measured in turn, ROUNDS times, with the floor before each round).
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/cased-agent}
N=${N:-1000}
CYCLES=${CYCLES:-60}
WARMUP=${WARMUP:-3}
TREE=${TREE:-both}
BINS=${BINS:-$BIN}
ROUNDS=${ROUNDS:-1}
FLOOR_US=
FIXTURES=${FIXTURES:-$(pwd)/../shared/fixtures}
[ -d "$FIXTURES" ] || FIXTURES=/work/shared/fixtures
TICK=$(getconf CLK_TCK)
UNIQUE="cased-bench-$$"
TMP=$(mktemp -d)
AGENT=""

cleanup() {
    if [ -n "$AGENT" ]; then kill "$AGENT" 2>/dev/null || true; wait "$AGENT" 2>/dev/null || true; fi
    python3 - "$UNIQUE" <<'EOF' || true
import os, sys
for ctl in ("cpu", "cpuacct", "memory", "blkio", "pids"):
    root = f"/sys/fs/cgroup/{ctl}/{sys.argv[1]}"
    if not os.path.isdir(root):
        continue
    for d, subdirs, _ in os.walk(root, topdown=False):
        for s in subdirs:
            try: os.rmdir(os.path.join(d, s))
            except OSError: pass
    try: os.rmdir(root)
    except OSError: pass
EOF
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

for b in $BINS; do
    [ -x "$b" ] || { echo "no $b: run cargo build --release first" >&2; exit 1; }
done

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cycles_of() { # port
    python3 - "$1" <<'EOF'
import sys, urllib.request
try:
    t = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=2).read().decode()
except Exception:
    print(-1); sys.exit()
for l in t.splitlines():
    if l.startswith("cased_agent_cycles_total "):
        print(int(float(l.split()[1]))); break
else:
    print(-1)
EOF
}

cpu_ticks() { # pid: utime + stime (fields 14, 15; after the ")" of comm)
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

wait_cycles() { # port target
    local c
    for _ in $(seq 1 600); do
        c=$(cycles_of "$1")
        [ "$c" -ge "$2" ] && { echo "$c"; return; }
        sleep 0.2
    done
    echo "agent did not reach $2 cycles" >&2
    exit 1
}

measure() { # label, agent args...
    local label=$1; shift
    local port; port=$(free_port)
    "$BIN" --sink stdout --interval 1s --health-port "$port" "$@" >/dev/null 2>"$TMP/${label//\//_}.log" &
    AGENT=$!
    local c0 c1 t0 t1 hwm rss containers
    c0=$(wait_cycles "$port" "$WARMUP")
    t0=$(cpu_ticks "$AGENT")
    c1=$(wait_cycles "$port" $((c0 + CYCLES)))
    t1=$(cpu_ticks "$AGENT")
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$AGENT/status")
    rss=$(awk '/^RssAnon/ {a=$2} /^RssFile/ {f=$2} END {printf "%.1f MiB anonymous + %.1f MiB file", a/1024, f/1024}' "/proc/$AGENT/status")
    containers=$(python3 -c "
import urllib.request
t = urllib.request.urlopen('http://127.0.0.1:$port/metrics', timeout=2).read().decode()
print(next((l.split()[1] for l in t.splitlines() if l.startswith('cased_agent_containers ')), '?'))")
    kill -TERM "$AGENT"; wait "$AGENT" || true; AGENT=""
    python3 - "$label" "$c0" "$c1" "$t0" "$t1" "$TICK" "$hwm" "$containers" "$FLOOR_US" "$rss" <<'EOF'
import sys
label, c0, c1, t0, t1, tick, hwm, n, floor, rss = sys.argv[1:]
cycles = int(c1) - int(c0)
cpu = (int(t1) - int(t0)) / int(tick)
per = cpu / cycles
n = int(n) if n.isdigit() else 0
per_c = f"{per / n * 1e6:.1f} µs/container" if n else "-"
if n and floor:
    per_c += f" = {per / n * 1e6 / float(floor):.2f}x the read floor"
print(f"{label}: {cycles} cycles, {n} containers: CPU {per * 1e3:.1f} ms/cycle ({per_c}, "
      f"whole process incl. node metrics and stdout output), peak RSS {int(hwm) / 1024:.1f} MiB, now {rss}")
EOF
}

make_real_v1() {
    python3 - "$UNIQUE" "$N" <<'EOF'
import os, sys
unique, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    pod = i // 2
    qos = ("guaranteed", "burstable", "besteffort")[pod % 3]
    uid = f"{os.getpid():08x}-{pod & 0xffff:04x}-4d7e-9a51-{pod:012x}"
    cid = f"{os.getpid():08x}{i:08x}" + "ab" * 24
    rel = f"kubepods/pod{uid}/{cid}" if qos == "guaranteed" else f"kubepods/{qos}/pod{uid}/{cid}"
    for ctl in ("cpu", "cpuacct", "memory", "blkio", "pids"):
        os.makedirs(f"/sys/fs/cgroup/{ctl}/{unique}/{rel}", exist_ok=True)
    if i % 4 == 0:
        with open(f"/sys/fs/cgroup/cpu/{unique}/{rel}/cpu.cfs_quota_us", "w") as f:
            f.write("50000")
EOF
}

dirs_of_real_v1() { # one line per container: its cpu, cpuacct, memory, blkio dirs
    python3 - "$UNIQUE" <<'EOF'
import os, sys
root = f"/sys/fs/cgroup/memory/{sys.argv[1]}"
for d, subdirs, _ in os.walk(root):
    if not subdirs and os.path.basename(d) != "kubepods":
        rel = os.path.relpath(d, "/sys/fs/cgroup/memory")
        print(" ".join(f"/sys/fs/cgroup/{c}/{rel}" for c in ("cpu", "cpuacct", "memory", "blkio")))
EOF
}

make_fixture_v2() { # dir
    python3 - "$1" "$N" "$FIXTURES" <<'EOF'
import os, sys
root, n, fx = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tpl = os.path.join(fx, "cgroup_v2/coroot-node-agent/kubepods.slice/kubepods-besteffort.slice/"
      "kubepods-besteffort-pod8712f785_1a3e_41ec_a00b_e2dcc77431cb.slice/"
      "docker-73051af271105c07e1f493b34856a77e665e3b0b4fc72f76c807dfbffeb881bd.scope")
files = {f: open(os.path.join(tpl, f)).read() for f in
         ("cpu.stat", "cpu.max", "memory.current", "memory.max", "memory.stat", "io.stat")}
files["memory.swap.current"] = "0\n"
files["memory.events"] = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"
files["cgroup.procs"] = ""
u = os.path.join(root, "unified")
os.makedirs(u)
open(os.path.join(u, "cgroup.controllers"), "w").write("cpuset cpu io memory pids\n")
for i in range(n):
    pod = i // 2
    qos = ("guaranteed", "burstable", "besteffort")[pod % 3]
    uid = f"{pod:08x}_0000_4d7e_9a51_{pod:012x}"
    rt = ("cri-containerd", "crio", "docker")[i % 3]
    cid = f"{i:016x}" + "cd" * 24
    ps = (f"kubepods.slice/kubepods-pod{uid}.slice" if qos == "guaranteed" else
          f"kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{uid}.slice")
    d = os.path.join(u, ps, f"{rt}-{cid}.scope")
    os.makedirs(d)
    for f, t in files.items():
        open(os.path.join(d, f), "w").write(t)
EOF
}

if [ "$TREE" = both ] || [ "$TREE" = real_v1 ]; then
    if [ "$(id -u)" = 0 ] && [ -d /sys/fs/cgroup/cpuacct ]; then
        make_real_v1
        dirs_of_real_v1 > "$TMP/dirs"
        gcc -O2 -o "$TMP/read_floor" benches/read_floor.c
        for round in $(seq 1 "$ROUNDS"); do
            floor=$("$TMP/read_floor" "$CYCLES" "$TMP/dirs")
            echo "round $round: $floor"
            FLOOR_US=$(echo "$floor" | sed -n 's/.*(\([0-9.]*\) us\/container).*/\1/p')
            for BIN in $BINS; do
                measure "real_v1[$BIN]" --cgroup-path /sys/fs/cgroup
            done
        done
        FLOOR_US=""
        BIN=${BINS%% *}
    else
        echo "real_v1: skipped (needs root and v1 controllers)"
    fi
fi
if [ "$TREE" = both ] || [ "$TREE" = fixture_v2 ]; then
    make_fixture_v2 "$TMP/tree"
    measure fixture_v2 --cgroup-path "$TMP/tree"
fi
if [ "$TREE" = both ] || [ "$TREE" = idle ]; then
    # the same agent with no container tree at all: node metrics only
    mkdir -p "$TMP/empty/unified"
    measure no_containers --cgroup-path "$TMP/empty"
fi
