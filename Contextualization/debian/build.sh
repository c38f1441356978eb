#!/bin/bash
# Build vmsessiond's Debian guest: a small Debian 12 (bookworm) with cloud-init (NoCloud), systemd,
# DHCP on its network card, a root shell on ttyS0 and the guest API (HTTP on port 80 from /www), as one
# bootable qcow2 disk (MBR, GRUB, one ext4 partition). Everything comes from Debian packages
# (mmdebstrap from deb.debian.org, grub-pc-bin and e2fsprogs on the host); see README.md beside this file.
#
# Usage: build.sh OUTPUT_DIR    (as root: mmdebstrap's root mode keeps the files' owners for mkfs.ext4 -d)
#
# Outputs in OUTPUT_DIR: debian.qcow2, kernel-release, packages (what is installed), version.
# Nothing is rebuilt when OUTPUT_DIR/version already matches the inputs.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTPUT_DIR" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "build.sh: must run as root (mmdebstrap --mode=root, so that mkfs.ext4 -d copies the right owners)" >&2
    exit 1
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)

SUITE=bookworm
MIRROR=http://deb.debian.org/debian
SECURITY=http://deb.debian.org/debian-security
# What the guest is: systemd as init, udev, the cloud kernel, cloud-init. python3 comes with cloud-init
# and also serves the guest API (vmsession-guest-api.service).
PACKAGES=systemd,systemd-sysv,udev,linux-image-cloud-amd64,cloud-init
# Virtual size of the disk. A session's disk (`open`'s `disk`, in MiB) must be at least this.
DISK_MIB=1024
# The root file system's UUID: fixed, so the image is the same for the same packages.
ROOT_UUID=5e55e7a1-de6b-4e0c-a1d0-000000000001
CMDLINE="root=UUID=$ROOT_UUID ro console=tty0 console=ttyS0,115200 net.ifnames=0 quiet"
GRUB_DIR=/usr/lib/grub/i386-pc

need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "build.sh: missing tool '$1' (package: $2)" >&2
        exit 1
    }
}
need mmdebstrap mmdebstrap
need apt-cache apt
need mkfs.ext4 e2fsprogs
need sfdisk fdisk
need grub-mkimage grub-pc-bin
need qemu-img qemu-utils
need sha256sum coreutils
[ -f "$GRUB_DIR/boot.img" ] || { echo "build.sh: $GRUB_DIR/boot.img missing (apt-get install grub-pc-bin)" >&2; exit 1; }

# The inputs: this script, the files laid over the root, and the versions the host's apt lists (the
# same Debian 12 archive) give for the packages that matter most. A new kernel or cloud-init rebuilds.
candidate() { apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p'; }
kernel_package() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1 || true
}
KPKG=$(kernel_package)
if [ -z "$KPKG" ]; then
    # No apt lists on the host (a fresh machine, or cleared): fetch them, as root, and ask again.
    apt-get update -qq >&2
    KPKG=$(kernel_package)
fi
[ -n "$KPKG" ] || { echo "build.sh: cannot resolve linux-image-cloud-amd64 from the host's apt lists" >&2; exit 1; }
VERSION=$( {
    sha256sum "$HERE/build.sh"
    (cd "$HERE/rootfs" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    (cd "$HERE/rootfs" && find . -printf '%p %m\n' | LC_ALL=C sort)
    for p in "$KPKG" cloud-init systemd python3; do echo "$p $(candidate "$p")"; done
} | sha256sum | cut -d' ' -f1)

if [ -f "$OUT/version" ] && [ "$(cat "$OUT/version")" = "$VERSION" ] && [ -s "$OUT/debian.qcow2" ]; then
    echo "$OUT"
    exit 0
fi

WORK=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root

# No documentation, manual pages, translations or locale sources (copyright files stay: the licences).
DPKG_OPTS=(
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/i18n/*'
    --dpkgopt='path-exclude=/usr/share/lintian/*'
    --dpkgopt='path-exclude=/usr/share/bash-completion/*'
)

# The image's files go in before its packages (setup hook), so the kernel's postinst builds the small
# initramfs they ask for; the customize hooks enable the units, mask what a short-lived sandboxed guest
# does not need at boot (e2scrub_reap took 23 s of a TCG boot; apt's daily timers would reach for the
# archive), and clear the logs a build leaves. The root's apt lists, apt cache and /tmp are emptied by
# mmdebstrap's own clean-up, after its last apt call: a hook must not touch /tmp, where mmdebstrap keeps its
# APT_CONFIG; without it that clean-up's `apt-get update` and `apt-get clean` act on the host's apt and
# emptied the host's package lists.
mmdebstrap --mode=root --variant=minbase --format=directory \
    --aptopt='APT::Install-Recommends "false"' \
    --aptopt='Acquire::Languages "none"' \
    "${DPKG_OPTS[@]}" \
    --include="$PACKAGES" \
    --setup-hook='cp -a '"$HERE"'/rootfs/. "$1"/ && chown -R 0:0 "$1"/etc/cloud "$1"/etc/systemd "$1"/etc/initramfs-tools "$1"/usr/local "$1"/usr/share/initramfs-tools' \
    --customize-hook='chroot "$1" systemctl enable systemd-networkd.service vmsession-guest-api.service vmsession-cloud-init-report.service vmsession-seed-watch.service' \
    --customize-hook='chroot "$1" systemctl mask e2scrub_reap.service e2scrub_all.timer apt-daily.timer apt-daily-upgrade.timer' \
    --customize-hook='echo "UUID='"$ROOT_UUID"' / ext4 defaults,errors=remount-ro 0 1" > "$1/etc/fstab"' \
    --customize-hook='echo "nameserver 10.0.2.3" > "$1/etc/resolv.conf"' \
    --customize-hook='echo "LANG=C.UTF-8" > "$1/etc/default/locale"' \
    --customize-hook='chroot "$1" dpkg-query -W -f="\${Package} \${Version}\n" > "$1/var/tmp/packages"' \
    --customize-hook='rm -rf "$1"/var/log/*.log "$1"/var/log/apt/*; : > "$1/etc/machine-id"' \
    "$SUITE" "$ROOT" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY $SUITE-security main" >&2
mv "$ROOT/var/tmp/packages" "$WORK/packages"

KVER=$(basename "$(find "$ROOT/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)")
[ -f "$ROOT/boot/vmlinuz-$KVER" ] && [ -f "$ROOT/boot/initrd.img-$KVER" ] || {
    echo "build.sh: no kernel or initramfs for $KVER in the root" >&2
    exit 1
}

# GRUB, booting the kernel straight from its embedded configuration (no /boot/grub, no menu, no wait).
cat >"$WORK/grub.cfg" <<EOF
set root=(hd0,msdos1)
linux /boot/vmlinuz-$KVER $CMDLINE
initrd /boot/initrd.img-$KVER
boot
EOF
grub-mkimage -O i386-pc -d "$GRUB_DIR" -o "$WORK/core.img" -c "$WORK/grub.cfg" -p '(hd0,msdos1)/boot/grub' \
    biosdisk part_msdos ext2 linux boot

# The disk: MBR with GRUB's boot sector, GRUB's core in the gap before the first partition (sector 1 on,
# where boot.img looks by default), and one ext4 partition from 1 MiB to the end, filled from the root.
START_SECTOR=2048
CORE_SECTORS=$(( ($(stat -c %s "$WORK/core.img") + 511) / 512 ))
[ "$CORE_SECTORS" -lt "$START_SECTOR" ] || { echo "build.sh: GRUB's core image does not fit before the partition" >&2; exit 1; }
ROOT_MIB=$(( DISK_MIB - 1 ))
mkfs.ext4 -q -F -L debian-root -U "$ROOT_UUID" -E root_owner=0:0 -d "$ROOT" "$WORK/root.ext4" "${ROOT_MIB}M"
truncate -s "${DISK_MIB}M" "$WORK/disk.raw"
echo "start=$START_SECTOR, type=83, bootable" | sfdisk -q "$WORK/disk.raw"
dd if="$GRUB_DIR/boot.img" of="$WORK/disk.raw" bs=440 count=1 conv=notrunc status=none
dd if="$WORK/core.img" of="$WORK/disk.raw" bs=512 seek=1 conv=notrunc status=none
dd if="$WORK/root.ext4" of="$WORK/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
rm -f "$WORK/root.ext4"
qemu-img convert -c -f raw -O qcow2 "$WORK/disk.raw" "$WORK/debian.qcow2"

# Publish: version last, so an interrupted build is redone.
rm -f "$OUT/version"
mv "$WORK/debian.qcow2" "$OUT/debian.qcow2"
mv "$WORK/packages" "$OUT/packages"
echo "$KVER" >"$OUT/kernel-release"
echo "$VERSION" >"$OUT/version"
# Built as root (through sudo): hand the cache back to whoever asked for it.
if [ -n "${SUDO_UID:-}" ]; then chown -R "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$OUT"; fi

echo "$OUT"
