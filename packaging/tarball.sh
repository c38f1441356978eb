#!/bin/bash
# Builds vmsessiond-<version>-linux-x86_64.tar.gz for distributions other than Debian, from a staged
# /usr/local tree (`make stage PREFIX=/usr/local DESTDIR=ROOT`, which `make tarball` runs first): the same
# layout as `make install`, plus both units where systemd looks under /usr/local, and INSTALL.txt saying
# what the system must provide (the binaries need no Swift toolchain).
#
# Usage: tarball.sh ROOT OUT_DIR     Unpack with: sudo tar -C / -xzf vmsessiond-…tar.gz
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 ROOT OUT_DIR" >&2
    exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
ROOT=$(cd "$1" && pwd)
mkdir -p "$2"
OUT=$(cd "$2" && pwd)
DAEMON=$ROOT/usr/local/lib/vmsessiond/vmsessiond
[ -x "$DAEMON" ] || { echo "tarball.sh: $ROOT holds no staged /usr/local/lib/vmsessiond (run make stage)" >&2; exit 1; }
VERSION=$("$DAEMON" --version)

install -D -m 0644 "$REPO/systemd/vmsessiond.service" "$ROOT/usr/local/lib/systemd/system/vmsessiond.service"
install -D -m 0644 <(sed 's|%h/.local/|/usr/local/|g' "$REPO/systemd/user/vmsessiond.service") \
    "$ROOT/usr/local/lib/systemd/user/vmsessiond.service"
# The libraries the binaries name (their own dependencies come with them on any distribution).
LIBS=$(for b in "$DAEMON" "$ROOT/usr/local/lib/vmsessiond/vmsessionctl"; do readelf -d "$b"; done |
    sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u | tr '\n' ' ')
GLIBC=$(for b in "$DAEMON" "$ROOT/usr/local/lib/vmsessiond/vmsessionctl"; do objdump -T "$b"; done |
    grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
cat > "$ROOT/usr/local/share/doc/vmsessiond/INSTALL.txt" <<TXT
vmsessiond $VERSION for x86_64 Linux (glibc), built on Debian 12.

Unpack as root:   tar -C / -xzf vmsessiond-$VERSION-linux-x86_64.tar.gz
Then, as yourself: systemctl --user daemon-reload && systemctl --user enable --now vmsessiond
(or as root, for one system daemon: systemctl daemon-reload && systemctl enable --now vmsessiond)

The system must provide:
- libvirt >= 9.0 with its QEMU driver (the daemon uses the embedded driver, qemu:///embed; no libvirtd),
  and a system user named libvirt-qemu (libvirt's embedded driver insists on it):
    useradd --system --no-create-home --shell /usr/sbin/nologin libvirt-qemu
- qemu-system-x86_64 and qemu-img (QEMU >= 7.2), genisoimage, passt (with pasta), socat, ip (iproute2) and /etc/protocols,
  unprivileged user namespaces (the guests' network sandbox)
- these shared libraries (glibc >= $GLIBC): $LIBS
- optional, for the console and display in pages: noVNC in /usr/share/novnc, xterm.js in
  /usr/share/javascript/xterm (or set VMSESSIOND_NOVNC_DIR)

Remove with: rm -rf /usr/local/lib/vmsessiond /usr/local/share/vmsessiond /usr/local/share/doc/vmsessiond \\
  /usr/local/bin/vmsessiond /usr/local/bin/vmsessionctl /usr/local/lib/systemd/system/vmsessiond.service \\
  /usr/local/lib/systemd/user/vmsessiond.service
State (~/.local/state/vmsessiond, /var/lib/vmsessiond) is never touched by either.
TXT
TAR="$OUT/vmsessiond-$VERSION-linux-x86_64.tar.gz"
tar -C "$ROOT" --owner=0 --group=0 --numeric-owner --sort=name -czf "$TAR" usr
echo "tarball.sh: $TAR ($(du -h "$TAR" | cut -f1))"
