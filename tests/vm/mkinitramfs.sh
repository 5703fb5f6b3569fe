#!/usr/bin/env bash
# Builds the VM tests' initramfs (newc cpio, uncompressed): busybox-static,
# the agent binary (debug info stripped) and every program below with the
# shared libraries ldd names, the kernel's block and device-mapper modules,
# and tests/vm/*.sh with init as /init. Also the kernel, uncompressed
# (an ELF with a PVH entry: qemu starts it directly, which saves the
# 15 s the emulated decompressor takes).
#   mkinitramfs.sh OUT_DIR AGENT_BINARY  ->  OUT_DIR/initramfs.cpio, OUT_DIR/vmlinux
set -euo pipefail
dir=$1 agent=$2
out=$dir/initramfs.cpio
mkdir -p "$dir"
here=$(cd "$(dirname "$0")" && pwd)
kver=${VM_KERNEL_VERSION:-$(cd /lib/modules && ls -d 6.1.* 2>/dev/null | sort -V | tail -1)}
[ -n "$kver" ] || { echo "no /lib/modules/6.1.* (apt-get install linux-image-amd64)" >&2; exit 1; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

mkdir -p "$stage"/{bin,sbin,dev,proc,sys,tmp,run,mnt,host,modules,vm,results}
cp /bin/busybox "$stage/bin/busybox"
for app in $(/bin/busybox --list); do
  [ "$app" = busybox ] || ln -sf busybox "$stage/bin/$app"
done

# a binary and the libraries it loads, at their own paths
copy_with_libs() {
  local src=$1 dst=$2
  mkdir -p "$stage$(dirname "$dst")"
  cp -L "$src" "$stage$dst"
  ldd "$src" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
    [ -e "$stage$lib" ] && continue
    mkdir -p "$stage$(dirname "$lib")"
    cp -L "$lib" "$stage$lib"
  done
}
objcopy --strip-debug "$agent" "$stage/cased-agent.tmp"
copy_with_libs "$stage/cased-agent.tmp" /bin/cased-agent
rm "$stage/cased-agent.tmp"
copy_with_libs "$(command -v dmsetup)" /sbin/dmsetup

# modules, in load order (deps from modinfo on this kernel)
mods="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk dm-mod failover net_failover virtio_net"
: >"$stage/modules/order"
for m in $mods; do
  f=$(modinfo -k "$kver" -n "$m")
  base=$(basename "$f")
  case $f in
    *.xz) xz -dc "$f" >"$stage/modules/${base%.xz}"; base=${base%.xz} ;;
    *.zst) zstd -qdc "$f" >"$stage/modules/${base%.zst}"; base=${base%.zst} ;;
    *) cp "$f" "$stage/modules/$base" ;;
  esac
  echo "$base" >>"$stage/modules/order"
done

cp "$here"/*.sh "$stage/vm/"
install -m 755 "$here/init" "$stage/init"
(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) >"$out.tmp"
mv "$out.tmp" "$out"

vmlinuz=/boot/vmlinuz-$kver
off=$(grep -abo "$(printf '\3757zXZ')" "$vmlinuz" | head -1 | cut -d: -f1 || true)
if [ -n "$off" ] && tail -c +$((off + 1)) "$vmlinuz" | xz -dc >"$dir/vmlinux.tmp" 2>/dev/null; then
  :
else
  # xz stops at the trailing bytes after its stream: keep what it wrote
  [ -s "$dir/vmlinux.tmp" ] || cp "$vmlinuz" "$dir/vmlinux.tmp"
fi
mv "$dir/vmlinux.tmp" "$dir/vmlinux"
