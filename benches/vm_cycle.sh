#!/usr/bin/env bash
# The container collector's CPU per cycle on real kernels: 1,000 containers
# in a 6.1 VM (tests/vm/, qemu TCG), pure cgroup v2 and then v1 in the same
# VM kind, the agent's CPU from its own cgroup (v2 cpu.stat usage_usec, v1
# cpuacct.usage). Emulation slows both alike: the ratio is the figure.
#   benches/vm_cycle.sh [AGENT_BINARY]   (default: a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
agent=${1:-}
if [ -z "$agent" ]; then
  cargo build --release --quiet
  agent=target/release/cased-agent
fi
dir=$(mktemp -d /tmp/vm-bench.XXXXXX)
tests/vm/mkinitramfs.sh "$dir" "$agent"
run() { # name kernel-args...
  local name=$1
  shift
  truncate -s 64M "$dir/$name-disk.img"
  truncate -s 256M "$dir/$name-res.img"  # the 1,000 containers' results
  VM_CPUS=1 tests/vm/boot.sh "$dir" bench "$dir/$name-disk.img" "$dir/$name-res.img" \
    "$dir/$name-console.log" 1500 "$@"
  mkdir -p "$dir/$name"
  tar -xf "$dir/$name-res.img" -C "$dir/$name"
  awk '{ v[$1] = $2 } END { printf "%.2f\n", v["agent_cpu_ns"] / v["cycles"] / 1e6 }' "$dir/$name/bench"
}
v2=$(run v2 cgroup_no_v1=all)
v1=$(run v1)
echo "1,000 containers, agent CPU per cycle (ms, emulated): v2 $v2, v1 $v1"
awk -v a="$v2" -v b="$v1" 'BEGIN { printf "v2 / v1 = %.2f\n", a / b }'
echo "console logs and results: $dir"
