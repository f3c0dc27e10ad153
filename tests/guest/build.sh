#!/usr/bin/env bash
# Builds the tiny bootable test guest of the VM tests, once (idempotent): a Debian cloud kernel
# taken from its package (extracted, not installed) and a busybox initramfs whose init prints
# THECLOUD-GUEST-UP, loads the CD-ROM, iso9660 and virtio-blk drivers, mounts the cloud-init
# NoCloud seed (label cidata), prints its meta-data, every user-data line and its virtio disks,
# configures the NIC the seed's network-config names (by MAC: address, default route) and pings
# the gateway (THECLOUD-NET / THECLOUD-PING-GATEWAY-OK), then THECLOUD-GUEST-READY, and then its
# disks again whenever they change (hot-plug). Plus a 64 MiB raw "base disk" image for the
# root-disk overlay.
#
# Usage: tests/guest/build.sh [DIR]     (default /var/lib/libvirt/images/thecloud-test)
# Needs: apt-get download (network to the Debian mirror), busybox-static, cpio-capable busybox.
set -euo pipefail
DIR=${1:-/var/lib/libvirt/images/thecloud-test}
mkdir -p "$DIR"
if [[ -f $DIR/vmlinuz && -f $DIR/initrd.gz && -f $DIR/base.raw && $(cat "$DIR/version" 2>/dev/null) == 4 ]]; then
  echo "test guest present in $DIR"
  exit 0
fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T"
kernel_pkg() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'; }
KPKG=$(kernel_pkg)
if [[ -z $KPKG ]]; then
  # A fresh machine may have no package lists yet.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  KPKG=$(kernel_pkg)
fi
[[ -n $KPKG ]] || { echo "cannot find the cloud kernel package (linux-image-cloud-amd64)" >&2; exit 1; }
apt-get -o DPkg::Lock::Timeout=600 download "$KPKG" >/dev/null 2>&1 ||
  { echo "cannot download $KPKG" >&2; exit 1; }
dpkg -x ./"$KPKG"_*.deb x
KVER=${KPKG#linux-image-}
MODS=x/lib/modules/$KVER/kernel
R=$T/root
mkdir -p "$R"/{bin,proc,sys,dev,seed,lib/modules}
cp /bin/busybox "$R/bin/"
ln -s busybox "$R/bin/sh"
# CD-ROM on the i440fx IDE controller, the iso9660 filesystem, and virtio disks, in load order.
ORDER="scsi_common scsi_mod libata ata_piix cdrom sr_mod isofs virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk"
for m in $ORDER; do
  f=$(find "$MODS" -name "$m.ko" | head -1)
  [[ -n $f ]] || { echo "module $m not found in $KPKG" >&2; exit 1; }
  cp "$f" "$R/lib/modules/"
done
# virtio-net and what it needs (built in on some kernels: then nothing to copy).
NET_ORDER="failover net_failover virtio_net"
for m in $NET_ORDER; do
  f=$(find "$MODS" -name "$m.ko" | head -1)
  if [[ -n $f ]]; then cp "$f" "$R/lib/modules/"; fi
done
cat >"$R/init" <<INIT
#!/bin/sh
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo "THECLOUD-GUEST-UP \$(uname -r)"
for m in $ORDER $NET_ORDER; do insmod /lib/modules/\$m.ko 2>/dev/null; done
i=0; while [ ! -b /dev/sr0 ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i+1)); done
if mount -t iso9660 -o ro /dev/sr0 /seed 2>/dev/null; then
  echo "THECLOUD-SEED-LABEL \$(dd if=/dev/sr0 bs=1 skip=32808 count=32 2>/dev/null | tr -d ' ')"
  while read -r line; do echo "THECLOUD-META-DATA: \$line"; done </seed/meta-data
  while read -r line; do echo "THECLOUD-USER-DATA: \$line"; done </seed/user-data
else
  echo "THECLOUD-SEED-MISSING"
fi
NC=/seed/network-config
if [ -f \$NC ] && grep -q macaddress \$NC; then
  mac=\$(sed -n 's/.*macaddress: "\(.*\)".*/\1/p' \$NC)
  addr=\$(sed -n 's/^ *- \([0-9.]*\/[0-9]*\)\$/\1/p' \$NC | head -1)
  gw=\$(sed -n 's/^ *via: \([0-9.]*\)\$/\1/p' \$NC)
  dev=""; i=0
  while [ -z "\$dev" ] && [ \$i -lt 100 ]; do
    for d in /sys/class/net/*; do [ "\$(cat \$d/address)" = "\$mac" ] && dev=\${d##*/}; done
    [ -z "\$dev" ] && sleep 0.1; i=\$((i+1))
  done
  ip link set dev lo up
  ip link set dev "\$dev" up && ip addr add "\$addr" dev "\$dev" && ip route add default via "\$gw"
  echo "THECLOUD-NET: \$dev \$mac \$addr via \$gw"
  if ping -c 3 -W 2 "\$gw" >/dev/null 2>&1; then echo "THECLOUD-PING-GATEWAY-OK"; else echo "THECLOUD-PING-GATEWAY-FAILED"; fi
fi
echo "THECLOUD-DISKS: \$(ls /sys/block | grep vd | tr '\\n' ' ')"
echo "THECLOUD-GUEST-READY"
# Disks as they come and go (hot-plug), printed when they change.
last=""
while true; do
  now=\$(ls /sys/block | grep vd | tr '\\n' ' ')
  [ "\$now" != "\$last" ] && echo "THECLOUD-DISKS-NOW: \$now" && last=\$now
  sleep 1
done
INIT
chmod +x "$R/init"
(cd "$R" && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1 >"$T/initrd.gz")
cp x/boot/vmlinuz-"$KVER" "$T/vmlinuz"
truncate -s 64M "$T/base.raw"
echo 4 >"$T/version"
mv "$T/vmlinuz" "$T/initrd.gz" "$T/base.raw" "$T/version" "$DIR/"
echo "test guest built in $DIR (kernel $KVER)"
