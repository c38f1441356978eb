#!/bin/bash
# Builds vmsessiond_<version>_amd64.deb from a staged /usr tree (`make stage PREFIX=/usr DESTDIR=ROOT`,
# which `make deb` runs first).
#
# Usage: build.sh ROOT OUT_DIR
# Adds the units (paths rewritten to /usr), DEBIAN/ (control from control.in with the libraries
# dpkg-shlibdeps reads from the binaries, md5sums, maintainer scripts) and writes the package to OUT_DIR.
# The version is the one the binary reports (`vmsessiond --version`), the one place it is written.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 ROOT OUT_DIR" >&2
    exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ROOT=$(cd "$1" && pwd)
mkdir -p "$2"
OUT=$(cd "$2" && pwd)
DAEMON="$ROOT/usr/lib/vmsessiond/vmsessiond"
CTL="$ROOT/usr/lib/vmsessiond/vmsessionctl"
[ -x "$DAEMON" ] && [ -x "$CTL" ] || { echo "build.sh: $ROOT holds no staged /usr/lib/vmsessiond (run make stage)" >&2; exit 1; }

# A binary that still needed the toolchain's runtime would run here and nowhere else.
if ldd "$DAEMON" "$CTL" | grep -E '/opt/swift|libswift|libFoundation|libdispatch'; then
    echo "build.sh: the binaries link the Swift runtime dynamically; build with --static-swift-stdlib" >&2
    exit 1
fi

VERSION=$("$DAEMON" --version)
[[ "$VERSION" =~ ^[0-9][0-9A-Za-z.+~-]*$ ]] || { echo "build.sh: '$DAEMON --version' printed '$VERSION'" >&2; exit 1; }

# The units, as a package installs them: the system unit in /usr/lib/systemd/system, the user unit in
# /usr/lib/systemd/user (every user's manager sees it; each user enables it for themselves).
install -D -m 0644 <(sed 's|/usr/local/|/usr/|g' "$REPO/systemd/vmsessiond.service") "$ROOT/usr/lib/systemd/system/vmsessiond.service"
install -D -m 0644 <(sed 's|%h/.local/|/usr/|g' "$REPO/systemd/user/vmsessiond.service") "$ROOT/usr/lib/systemd/user/vmsessiond.service"

rm -rf "$ROOT/DEBIAN"
install -d -m 0755 "$ROOT/DEBIAN"

# dpkg-shlibdeps wants a debian/control to read; a scratch one names the package.
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
mkdir "$SCRATCH/debian"
printf 'Source: vmsessiond\n\nPackage: vmsessiond\nArchitecture: amd64\n' > "$SCRATCH/debian/control"
SHLIBS=$(cd "$SCRATCH" && dpkg-shlibdeps -O "$DAEMON" "$CTL" | sed -n 's/^shlibs:Depends=//p')
[ -n "$SHLIBS" ] || { echo "build.sh: dpkg-shlibdeps found no libraries" >&2; exit 1; }

SIZE=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
sed -e "s|@VERSION@|$VERSION|" -e "s|@SIZE@|$SIZE|" -e "s|@SHLIBS@|$SHLIBS|" "$HERE/control.in" > "$ROOT/DEBIAN/control"
install -m 0755 "$HERE/postinst" "$HERE/prerm" "$HERE/postrm" "$ROOT/DEBIAN/"
(cd "$ROOT" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$ROOT/DEBIAN/md5sums"
chmod 0644 "$ROOT/DEBIAN/md5sums"

DEB="$OUT/vmsessiond_${VERSION}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$DEB" >/dev/null
echo "build.sh: $DEB ($(du -h "$DEB" | cut -f1)), Depends: $(sed -n 's/^Depends: //p' "$ROOT/DEBIAN/control")"
