#!/usr/bin/env bash
# Boots one throwaway VM (software emulation: KVM guests hang on the CI
# machine) and waits for it to power off, at most TIMEOUT seconds.
#   boot.sh ASSETS_DIR MODE DISK RESULTS CONSOLE_LOG TIMEOUT_S [KERNEL ARGS...]
# ASSETS_DIR is what mkinitramfs.sh made (vmlinux, initramfs.cpio).
# DISK is the test disk (vda), RESULTS the disk the guest writes its tar to
# (vdb). The console goes to CONSOLE_LOG. Exit status: qemu's, or 124 when
# the VM was killed at the timeout.
set -euo pipefail
assets=$1 mode=$2 disk=$3 results=$4 log=$5 limit=$6
shift 6
exec timeout -k 5 "$limit" qemu-system-x86_64 \
  -accel tcg -cpu max -smp "${VM_CPUS:-1}" -m "${VM_MEMORY:-1024}" \
  -nographic -no-reboot -serial stdio -monitor none -netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0,romfile= \
  -kernel "$assets/vmlinux" -initrd "$assets/initramfs.cpio" \
  -drive "file=$disk,if=virtio,format=raw,cache=unsafe" \
  -drive "file=$results,if=virtio,format=raw" \
  -append "console=ttyS0 panic=-1 loglevel=1 vm.mode=$mode $*" \
  </dev/null >"$log" 2>&1
