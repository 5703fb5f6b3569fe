# cgroup v1 as distributions mount it (group 3): a tmpfs at /sys/fs/cgroup,
# every controller in its own hierarchy but cpu and cpuacct co-mounted at
# cpu,cpuacct (with cpu and cpuacct symlinks to it), net_cls,net_prio the
# same, a named systemd hierarchy, and an empty cgroup2 at unified (the
# hybrid layout of systemd). Containers: systemd driver, like group 1.

mount -t tmpfs -o mode=755 tmpfs $CG
for c in cpuset cpu,cpuacct blkio memory devices freezer net_cls,net_prio perf_event hugetlb pids rdma misc; do
  mkdir $CG/$c
  mount -t cgroup -o $c cgroup $CG/$c || fail "mount $c"
done
ln -s cpu,cpuacct $CG/cpu
ln -s cpu,cpuacct $CG/cpuacct
ln -s net_cls,net_prio $CG/net_cls
ln -s net_cls,net_prio $CG/net_prio
mkdir $CG/systemd $CG/unified
mount -t cgroup -o none,name=systemd cgroup $CG/systemd
mount -t cgroup2 cgroup2 $CG/unified
HIERARCHIES="$CG/cpu,cpuacct $CG/memory $CG/blkio $CG/pids $CG/systemd"
setup_dm

start_agent host --interval 3s
mark AGENTS_STARTED

containers <<'EOF'
g3-cpu systemd guaranteed containerd g3-pod-cpu
g3-mem systemd burstable crio g3-pod-mem
g3-oom systemd besteffort docker g3-pod-oom
g3-disk systemd burstable containerd g3-pod-disk
g3-dm systemd burstable containerd g3-pod-disk
g3-norule systemd burstable containerd g3-pod-disk
g3-fs-cpu cgroupfs burstable containerd g3-pod-fs
EOF
echo 100000 >$CG/cpu/$REL_g3_cpu/cpu.cfs_period_us
echo 25000 >$CG/cpu/$REL_g3_cpu/cpu.cfs_quota_us
echo $((256 << 20)) >$CG/memory/$REL_g3_cpu/memory.limit_in_bytes
echo $((128 << 20)) >$CG/memory/$REL_g3_mem/memory.limit_in_bytes
echo $((16 << 20)) >$CG/memory/$REL_g3_oom/memory.limit_in_bytes
echo 20000 >$CG/cpu/$REL_g3_fs_cpu/cpu.cfs_quota_us
# 6.1's v1 blkio counts a cgroup's IO on a device only while a throttle
# rule for it is set (any rule: these never throttle); g3-norule has none
for r in $REL_g3_disk $REL_g3_dm; do
  for dev in 254:0 253:0; do
    echo "$dev 100000000000" >$CG/blkio/$r/blkio.throttle.write_bps_device
  done
done

run_in g3-cpu sh -c 'while :; do :; done'
run_in g3-fs-cpu sh -c 'while :; do :; done'
run_in g3-mem sh -c 'dd if=/dev/zero of=/dev/shm/g3 bs=1M count=24 2>/dev/null
  dd if=/dev/vda of=/dev/null bs=1M skip=16 count=8 2>/dev/null; exec sleep 3600'
mark SETUP_DONE

n=$(cycles host)
wait_cycles host $((n + 2)) 240
mark AGENTS_UP
snap start cpu.stat cpuacct.usage

run_wait g3-oom dd if=/dev/zero of=/dev/null bs=32M count=1 2>/dev/null
run_wait g3-disk dd if=/dev/zero of=/dev/vda bs=1M count=16 oflag=direct 2>/dev/null
run_wait g3-dm dd if=/dev/zero of=/dev/dm-0 bs=1M count=16 oflag=direct 2>/dev/null
run_wait g3-norule dd if=/dev/zero of=/dev/vda bs=1M count=8 seek=24 oflag=direct 2>/dev/null
expect disk_written_bytes $((16 << 20))
mark WORKLOADS_DONE

n=$(cycles host)
wait_cycles host $((n + 2))
snap end cpu.stat cpuacct.usage cpu.cfs_quota_us cpu.cfs_period_us \
  memory.usage_in_bytes memory.limit_in_bytes memory.stat memory.oom_control \
  blkio.throttle.io_service_bytes
stop_agent host
mark STOPPED
