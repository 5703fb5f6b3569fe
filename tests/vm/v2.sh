# Pure cgroup v2 (cgroup_no_v1=all), one boot for four groups:
#  1. systemd driver: all QoS classes, containerd / CRI-O / Docker scopes;
#     CPU capped, memory held, OOM kill, O_DIRECT writes to vda and dm-0
#  2. cgroupfs driver: CPU capped, memory held
#  4. eBPF: busybox httpd and wget in containers
#  5. a second agent as deployed (own netns, read-only binds at /host)
# The host agent runs with --enable-ebpf; both agents run the whole time
# (started first: loading the BPF object takes long under emulation, and
# containers made later are found by the next cycle's scan).

mount -t cgroup2 cgroup2 $CG
echo "+cpu +memory +io +pids" >$CG/cgroup.subtree_control
cat $CG/cgroup.controllers >/results/controllers
setup_dm
# the node's network: eth0 (virtio-net on a restricted user network), no
# IPv6 chatter, so its counters move only when the scenario sends
sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 || fail "eth0"

# the agents: on the node, and as deployed (group 5)
start_agent host --interval 3s --enable-ebpf
mkdir -p /host/proc /host/sys/fs/cgroup $CG/agent-netns
run_in_rel agent-netns - unshare -n -m sh -c '
  mount --bind /proc /host/proc && mount -o remount,bind,ro /host/proc &&
  mount --bind /sys/fs/cgroup /host/sys/fs/cgroup &&
  mount -o remount,bind,ro /host/sys/fs/cgroup || exit 9
  ip link set lo up
  ip -o link >/results/netns-links
  exec cased-agent --sink stdout --node-name vm --interval 3s \
    --proc-path /host/proc --cgroup-path /host/sys/fs/cgroup' \
  >/results/agent-netns.ndjson 2>/results/agent-netns.log
AGENT_PID_netns=$!
mark AGENTS_STARTED

# group 1: systemd driver; group 2: cgroupfs driver; group 4: HTTP
containers <<'EOF'
g1-cpu systemd guaranteed containerd g1-pod-cpu
g1-mem systemd burstable crio g1-pod-mem
g1-oom systemd besteffort docker g1-pod-oom
g1-disk systemd burstable containerd g1-pod-disk
g1-dm systemd burstable containerd g1-pod-disk
g2-cpu cgroupfs burstable containerd g2-pod-cpu
g2-mem cgroupfs guaranteed containerd g2-pod-mem
g4-server systemd burstable containerd g4-pod-server
g4-client systemd besteffort crio g4-pod-client
EOF
echo "25000 100000" >$CG/$REL_g1_cpu/cpu.max
echo $((256 << 20)) >$CG/$REL_g1_cpu/memory.max
echo $((128 << 20)) >$CG/$REL_g1_mem/memory.max
echo $((16 << 20)) >$CG/$REL_g1_oom/memory.max
echo "20000 100000" >$CG/$REL_g2_cpu/cpu.max
echo $((64 << 20)) >$CG/$REL_g2_mem/memory.max

# steady workloads: busy loops that want a whole core; memory held in
# tmpfs (shmem, charged to the writer) plus, in g1-mem, 8 MiB of page
# cache read from vda (inactive file)
run_in g1-cpu sh -c 'while :; do :; done'
run_in g2-cpu sh -c 'while :; do :; done'
run_in g1-mem sh -c 'dd if=/dev/zero of=/dev/shm/g1 bs=1M count=24 2>/dev/null
  dd if=/dev/vda of=/dev/null bs=1M skip=16 count=8 2>/dev/null; exec sleep 3600'
run_in g2-mem sh -c 'dd if=/dev/zero of=/dev/shm/g2 bs=1M count=12 2>/dev/null; exec sleep 3600'
mkdir -p /www && echo "hello from the VM" >/www/index.html
run_in g4-server httpd -f -p 127.0.0.1:8081 -h /www
mark SETUP_DONE

# every container seen by both agents before the counted workloads
wait_log host "eBPF HTTP tracing attached\|eBPF HTTP tracing unavailable" 240
# (group 4 fails on its own when it did not attach; the others go on)
grep -q "tracing attached" /results/agent-host.log || mark EBPF_DOWN
n=$(cycles host)
wait_cycles host $((n + 1))
n=$(cycles netns)
wait_cycles netns $((n + 1))
mark AGENTS_UP
snap start cpu.stat

# the workloads with a known outcome
run_wait g1-oom dd if=/dev/zero of=/dev/null bs=32M count=1 2>/dev/null
run_wait g1-disk dd if=/dev/zero of=/dev/vda bs=1M count=16 oflag=direct 2>/dev/null
run_wait g1-dm dd if=/dev/zero of=/dev/dm-0 bs=1M count=16 oflag=direct 2>/dev/null
expect disk_written_bytes $((16 << 20))
run_wait g4-client sh -c '
  ok=0 missing=0
  for i in $(seq 1 20); do
    wget -q -O /dev/null http://127.0.0.1:8081/index.html && ok=$((ok + 1))
  done
  for i in $(seq 1 5); do
    wget -q -O /dev/null http://127.0.0.1:8081/missing 2>/dev/null || missing=$((missing + 1))
  done
  echo "http_ok $ok" >>/results/expect
  echo "http_missing $missing" >>/results/expect'
# node network: frames out of eth0 (nothing answers on a restricted net)
arping -c 2 -w 1 -I eth0 10.0.2.2 >/dev/null 2>&1
mark WORKLOADS_DONE

# two more cycles (CPU is averaged over them), then the kernel's side
n=$(cycles host)
wait_cycles host $((n + 2))
snap end cpu.stat cpu.max memory.current memory.max memory.stat memory.events io.stat
n=$(cycles netns)
wait_cycles netns $((n + 1))
cat /proc/net/dev >/results/net-dev
stop_agent host
stop_agent netns
mark STOPPED
