#!/bin/bash
# Build the vmsessiond test appliance: a Debian cloud kernel plus a tiny
# busybox initramfs whose /init (see ./init) reads a NoCloud seed.
#
# Usage: build.sh OUTPUT_DIR
#
# Outputs in OUTPUT_DIR: vmlinuz, initrd.img, cmdline, version.
# Everything downloaded or unpacked stays under OUTPUT_DIR. The build is
# skipped when OUTPUT_DIR/version already matches the inputs.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTPUT_DIR" >&2
    exit 2
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)

META_PKG=linux-image-cloud-amd64
# Modules the appliance needs; their dependencies are added from modules.dep.
MODULES="virtio_pci virtio_blk virtio_net virtio_scsi sr_mod cdrom isofs button evdev"
# tty0 first: the kernel also writes to the VGA text console (vgacon, built in), which the VM's VNC display shows;
# ttyS0 last, so /dev/console (init's output, the markers) stays on the serial port.
CMDLINE="console=tty0 console=ttyS0 panic=-1 quiet"
BUSYBOX=/bin/busybox

need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "build.sh: missing tool '$1' (package: $2)" >&2
        exit 1
    }
}
need apt-get apt
need apt-cache apt
need dpkg-deb dpkg
need depmod kmod
need cpio cpio
need gzip gzip
need sha256sum coreutils
# A C compiler for vmsession-reseed (reseed.c: no libc, so any compiler and linker do): $CC, else cc, else
# clang (the Swift toolchain has one).
if [ -z "${CC:-}" ]; then
    for CC in cc clang; do command -v "$CC" >/dev/null 2>&1 && break; done
fi
command -v "$CC" >/dev/null 2>&1 || { echo "build.sh: no C compiler (set CC, or apt-get install gcc)" >&2; exit 1; }
[ -x "$BUSYBOX" ] || { echo "build.sh: $BUSYBOX missing (apt-get install busybox-static)" >&2; exit 1; }
# grep reads all of its input (no -q): with pipefail, -q would exit at the first match and the writer's
# SIGPIPE would fail the pipeline although the applet is there.
if ! "$BUSYBOX" --list | grep -x httpd >/dev/null; then
    echo "build.sh: $BUSYBOX has no httpd applet; install busybox-static" >&2
    exit 1
fi

# Resolve the versioned kernel package the meta package depends on.
kernel_package() {
    apt-cache depends "$META_PKG" 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n1 || true
}
KPKG=$(kernel_package)
if [ -z "$KPKG" ]; then
    # No apt lists on the host (a fresh machine, or lists cleared): fetch them and ask again.
    if [ "$(id -u)" = 0 ]; then apt-get update -qq >&2; else sudo apt-get update -qq >&2; fi
    KPKG=$(kernel_package)
fi
if [ -z "$KPKG" ]; then
    echo "build.sh: cannot resolve $META_PKG from the host's apt lists (is deb.debian.org reachable?)" >&2
    exit 1
fi
KVER_PKG=$(apt-cache policy "$KPKG" | sed -n 's/^ *Candidate: //p')
BB_VER=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo unknown)

VERSION=$( {
    sha256sum "$HERE/build.sh" "$HERE/init" "$HERE/reseed.c" | cut -d' ' -f1
    echo "$KPKG $KVER_PKG busybox-static $BB_VER"
} | sha256sum | cut -d' ' -f1)

if [ -f "$OUT/version" ] && [ "$(cat "$OUT/version")" = "$VERSION" ] &&
    [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.img" ] && [ -s "$OUT/cmdline" ]; then
    echo "$OUT"
    exit 0
fi

WORK=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Download (apt-get download writes into the current directory). Running as
# root, apt would try to drop to _apt, which cannot write into $WORK.
(
    cd "$WORK"
    apt-get -q -o APT::Sandbox::User=root download "$META_PKG" "$KPKG" >&2
)
for deb in "$WORK"/*.deb; do
    dpkg-deb -x "$deb" "$WORK/pkg"
done

KVER=$(basename "$(find "$WORK/pkg/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)")
KSRC=$WORK/pkg/lib/modules/$KVER
[ -f "$WORK/pkg/boot/vmlinuz-$KVER" ] || { echo "build.sh: no kernel in $KPKG" >&2; exit 1; }

# Dependency closure of $MODULES from the full tree's modules.dep.
depmod -b "$WORK/pkg" "$KVER"
declare -A WANT=()
add_module() {
    local name=$1 line path dep
    line=$(grep -E "/${name//_/[_-]}\.ko(\.[a-z]+)?:" "$KSRC/modules.dep" | head -n1 || true)
    if [ -z "$line" ]; then
        # Built into the kernel: nothing to copy.
        if grep -qE "/${name//_/[_-]}\.ko" "$KSRC/modules.builtin"; then return 0; fi
        echo "build.sh: module $name not found in $KVER" >&2
        exit 1
    fi
    path=${line%%:*}
    [ -n "${WANT[$path]:-}" ] && return 0
    WANT[$path]=1
    for dep in ${line#*:}; do
        dep=$(basename "$dep")
        add_module "${dep%%.ko*}"
    done
}
for m in $MODULES; do add_module "$m"; done

# Initramfs tree.
ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,mnt/seed,www,etc,root}
mkdir -p "$ROOT/lib/modules/$KVER"
cp "$BUSYBOX" "$ROOT/bin/busybox"
ln -s busybox "$ROOT/bin/sh"
# The kernel opens /dev/console for /init before devtmpfs is mounted.
mknod -m 600 "$ROOT/dev/console" c 5 1 2>/dev/null || true
for path in "${!WANT[@]}"; do
    mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$path")"
    cp "$KSRC/$path" "$ROOT/lib/modules/$KVER/$path"
done
cp "$KSRC/modules.builtin" "$KSRC/modules.order" "$ROOT/lib/modules/$KVER/"
[ -f "$KSRC/modules.builtin.modinfo" ] && cp "$KSRC/modules.builtin.modinfo" "$ROOT/lib/modules/$KVER/"
depmod -b "$ROOT" "$KVER"
install -m 0755 "$HERE/init" "$ROOT/init"
# What /init reseeds the kernel's random generator with after a restore (see reseed.c).
"$CC" -O1 -static -nostdlib -ffreestanding -fno-builtin -fno-stack-protector -fno-pie -Wall -Wextra -Werror -s \
    -Wl,--build-id=none -o "$ROOT/bin/vmsession-reseed" "$HERE/reseed.c"
echo "vmsession appliance" >"$ROOT/www/index.html"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\n' >"$ROOT/etc/group"
echo "$VERSION" >"$ROOT/etc/appliance-version"

(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc --owner=0:0 --quiet) | gzip -9 -n >"$WORK/initrd.img"

# Publish atomically-ish: version last, so an interrupted build is redone.
rm -f "$OUT/version"
cp "$WORK/pkg/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
mv "$WORK/initrd.img" "$OUT/initrd.img"
echo "$CMDLINE" >"$OUT/cmdline"
echo "$KVER" >"$OUT/kernel-release"
echo "$VERSION" >"$OUT/version"

echo "$OUT"
