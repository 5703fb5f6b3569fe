# The collector's cost per container on a real kernel (benches/vm_cycle.sh):
# 1,000 containers (250 pods of 4, systemd driver, all QoS classes), no
# processes in them, the agent in a cgroup of its own; its CPU over
# BENCH_CYCLES cycles from the kernel's accounting of that cgroup. v2 when
# booted with cgroup_no_v1=all, else the v1 layout of v1.sh.
if grep -q cgroup_no_v1=all /proc/cmdline; then
  mount -t cgroup2 cgroup2 $CG
  echo "+cpu +memory +io +pids" >$CG/cgroup.subtree_control
  usage() { awk '$1 == "usage_usec" { print $2 * 1000 }' $CG/agent-host/cpu.stat; }
else
  mount -t tmpfs -o mode=755 tmpfs $CG
  for c in cpu,cpuacct blkio memory pids; do
    mkdir $CG/$c && mount -t cgroup -o $c cgroup $CG/$c
  done
  ln -s cpu,cpuacct $CG/cpu
  ln -s cpu,cpuacct $CG/cpuacct
  HIERARCHIES="$CG/cpu,cpuacct $CG/memory $CG/blkio $CG/pids"
  usage() { cat "$CG/cpu,cpuacct/agent-host/cpuacct.usage"; }
fi
awk 'BEGIN { split("guaranteed burstable besteffort", q, " ")
  split("containerd crio docker containerd", r, " ")
  for (p = 0; p < 250; p++) for (c = 0; c < 4; c++)
    print "b" p "-" c, "systemd", q[p % 3 + 1], r[c + 1], "pod" p }' >/tmp/bench-list
containers </tmp/bench-list
mark SETUP_DONE containers=$(wc -l </results/manifest)
start_agent host --interval ${BENCH_INTERVAL:-5s}
wait_cycles host 3 600
a=$(usage) c0=$(cycles host)
wait_cycles host $((c0 + ${BENCH_CYCLES:-10})) 900
b=$(usage) c1=$(cycles host)
echo "cycles $((c1 - c0))" >>/results/bench
echo "agent_cpu_ns $((b - a))" >>/results/bench
mark BENCH cycles=$((c1 - c0)) agent_cpu_ns=$((b - a))
stop_agent host
