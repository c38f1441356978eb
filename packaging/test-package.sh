#!/bin/bash
# The Debian package as a user gets it, in a clean Debian 12 root (mmdebstrap; apt and dpkg run in it with
# chroot, the daemons with bubblewrap; the base root is cached as a tarball, the .debs apt downloads in an
# archive directory, both under CACHE_DIR):
#   1. `apt-get install ./vmsessiond_<version>_amd64.deb` pulls its dependencies from Debian (no recommends:
#      Depends alone must be enough) and its postinst creates the libvirt-qemu user and group;
#   2. the installed `vmsessiond --version` prints the package's version, the binaries need no Swift
#      toolchain (ldd), and both installed units pass `systemd-analyze verify` (no systemd runs as PID 1
#      here, so no real `systemctl --user` start is possible);
#   3. the system unit's command line, run as root, serves GET /api/v1 in system mode; the user unit's,
#      run as an unprivileged user created in the root, with no appliance setting, serves GET /api/v1 (user
#      mode, embedded libvirt), its bundled resources (vmsession.js, openapi.yaml), and boots the packaged
#      appliance under TCG: a session opened and started is `running`, its guest's API answers with what
#      its user-data wrote, the installed vmsessionctl lists it, and it closes;
#   4. `dpkg -r vmsessiond` leaves none of the package's files (every path `dpkg-deb -c` lists is gone,
#      but for directories other installed packages own) and leaves the user's state alone.
#
# Usage: test-package.sh DEB_DIR CACHE_DIR    (as root; DEB_DIR holds the newest vmsessiond_*_amd64.deb)
# Every mount, the daemon and the root are removed on exit, however the test ends.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 DEB_DIR CACHE_DIR" >&2
    exit 2
fi
[ "$(id -u)" = 0 ] || { echo "test-package: needs root (chroot, mounts)" >&2; exit 2; }
DEB=$(ls -t "$1"/vmsessiond_*_amd64.deb 2>/dev/null | head -n1)
[ -n "$DEB" ] || { echo "test-package: no vmsessiond_*_amd64.deb in $1 (run make deb)" >&2; exit 2; }
DEB=$(cd "$(dirname "$DEB")" && pwd)/$(basename "$DEB")
mkdir -p "$2"
CACHE=$(cd "$2" && pwd)
BASE=$CACHE/bookworm-base.tar
ARCHIVES=$CACHE/apt-archives
VERSION=$(dpkg-deb -f "$DEB" Version)
START=$SECONDS
step() { echo "test-package: [$((SECONDS - START))s] $*"; }
fail() { echo "test-package: FAIL: $*" >&2; exit 1; }

# The base root: Debian 12 with apt and nothing else, rebuilt when older than a week (so that its
# package lists do not go stale against the mirror; apt-get update runs in it each time anyway).
if [ ! -s "$BASE" ] || [ -n "$(find "$BASE" -mtime +7)" ]; then
    step "building the base root with mmdebstrap (cached in $BASE)"
    mmdebstrap --quiet --variant=apt --format=tar bookworm "$BASE.tmp" \
        "deb http://deb.debian.org/debian bookworm main" \
        "deb http://deb.debian.org/debian bookworm-updates main" \
        "deb http://deb.debian.org/debian-security bookworm-security main"
    mv "$BASE.tmp" "$BASE"
fi

ROOT=$(mktemp -d /var/tmp/vmsessiond-package-test.XXXXXX)
SANDBOX_PID=
WORK=$(mktemp -d)
cleanup() {
    local rc=$?
    # A daemon still running (a failed test) is stopped; bwrap then ends all it left, QEMU included.
    if [ -n "$SANDBOX_PID" ] && kill -0 "$SANDBOX_PID" 2>/dev/null; then
        for p in $(daemon_under "$SANDBOX_PID"); do kill "$p" 2>/dev/null || true; done
        for _ in $(seq 50); do kill -0 "$SANDBOX_PID" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$SANDBOX_PID" 2>/dev/null || true
        wait "$SANDBOX_PID" 2>/dev/null || true
    fi
    if [ $rc -ne 0 ] && [ -s "$WORK/daemon.log" ]; then
        echo "test-package: the daemon's log:" >&2
        tail -n 40 "$WORK/daemon.log" >&2
    fi
    # Mounts under the root, deepest first, then the root itself.
    findmnt -rn -o TARGET | grep -E "^$ROOT(/|$)" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    if findmnt -rn -o TARGET | grep -qE "^$ROOT(/|$)"; then
        echo "test-package: mounts under $ROOT remain; not removing it" >&2
    else
        rm -rf --one-file-system "$ROOT"
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "unpacking the base root into $ROOT"
tar -C "$ROOT" -xf "$BASE"
mkdir -p "$ARCHIVES/partial"
mount -t proc proc "$ROOT/proc"
mount --rbind /dev "$ROOT/dev" && mount --make-rslave "$ROOT/dev"
mount --rbind /sys "$ROOT/sys" && mount --make-rslave "$ROOT/sys"
mount -t tmpfs -o mode=0755 tmpfs "$ROOT/run"
mount --bind "$ARCHIVES" "$ROOT/var/cache/apt/archives"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The daemons run in the root through bubblewrap, not chroot: the daemon starts each guest's network in a
# user namespace of its own (unshare --user), which the kernel refuses to any process under chroot(2);
# bwrap pivots into the root in a mount namespace of its own, where it is allowed. --unshare-pid: when the
# daemon ends, bwrap ends whatever it left (the guests' network helpers are detached on purpose).
# The guests' network also needs /dev/net/tun readable and writable by the daemon's user, as udev leaves it
# on a desktop (0666); a machine without udev may have it 0600, so the sandbox gets a 0666 node of the same
# device in its place (the host's node is not touched).
in_sandbox() {
    [ -c "$WORK/tun" ] || mknod -m 0666 "$WORK/tun" c 10 200
    bwrap --bind "$ROOT" / --proc /proc --dev-bind /dev /dev --dev-bind "$WORK/tun" /dev/net/tun \
        --unshare-pid --die-with-parent "$@"
}
# The installed daemon among the descendants of process $1 (bwrap, its init, then the daemon).
daemon_under() {
    ps -e -o pid=,ppid=,comm= | awk -v top="$1" '
        { parent[$1] = $2; name[$1] = $3 }
        END { for (p in name) if (name[p] == "vmsessiond") { q = p; while (q in parent && q != top && q > 1) q = parent[q]; if (q == top) print p } }'
}
# SIGTERM to the daemon under the sandbox started last ($SANDBOX_PID), which must stop within 30 s.
stop_daemon() {
    local daemon
    daemon=$(daemon_under "$SANDBOX_PID")
    [ -n "$daemon" ] || fail "no installed daemon runs under the sandbox $SANDBOX_PID"
    kill "$daemon"
    for _ in $(seq 300); do
        kill -0 "$SANDBOX_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$SANDBOX_PID" 2>/dev/null && fail "the daemon did not stop within 30 s of SIGTERM"
    wait "$SANDBOX_PID" || fail "the daemon did not exit cleanly on SIGTERM"
    SANDBOX_PID=
}
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }

step "apt-get install ./$(basename "$DEB") (its Depends from Debian's mirror, no recommends)"
cp "$DEB" "$ROOT/tmp/"
in_root apt-get update -qq
in_root apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "/tmp/$(basename "$DEB")" >"$WORK/apt.log" 2>&1 ||
    { tail -n 30 "$WORK/apt.log" >&2; fail "apt-get install of the package failed"; }
in_root dpkg-query -W -f='${Status}\n' vmsessiond | grep -qx "install ok installed" || fail "vmsessiond is not installed"
in_root getent passwd libvirt-qemu >/dev/null || fail "postinst did not create the libvirt-qemu user"
in_root getent group libvirt-qemu >/dev/null || fail "postinst did not create the libvirt-qemu group"

step "the installed binaries"
got=$(in_root vmsessiond --version) || fail "vmsessiond --version failed"
[ "$got" = "$VERSION" ] || fail "vmsessiond --version printed '$got', the package is $VERSION"
in_root vmsessionctl --help >/dev/null || fail "vmsessionctl --help failed"
if in_root ldd /usr/lib/vmsessiond/vmsessiond /usr/lib/vmsessiond/vmsessionctl | grep -E "not found|/opt/swift|libswift"; then
    fail "the installed binaries miss a library or want the Swift toolchain"
fi
[ -s "$ROOT/usr/share/vmsessiond/appliance/vmlinuz" ] || fail "the appliance is not installed"

step "systemd-analyze verify on the installed units (no systemd as PID 1 here: no real systemctl --user)"
# The host's systemd-analyze reads the units as installed, with their ExecStart pointed into the root
# (it checks that the command exists and is executable).
for kind in system user; do
    unit="$ROOT/usr/lib/systemd/$kind/vmsessiond.service"
    [ -s "$unit" ] || fail "no $kind unit in the package"
    grep -qx "ExecStart=/usr/lib/vmsessiond/vmsessiond.*" "$unit" || fail "the $kind unit does not start /usr/lib/vmsessiond/vmsessiond"
    mkdir -p "$WORK/$kind"
    sed "s|/usr/lib/vmsessiond/|$ROOT/usr/lib/vmsessiond/|g" "$unit" > "$WORK/$kind/vmsessiond.service"
done
systemd-analyze verify "$WORK/system/vmsessiond.service" || fail "the system unit does not verify"
mkdir -m 0700 "$WORK/xdg"
XDG_RUNTIME_DIR=$WORK/xdg systemd-analyze --user verify "$WORK/user/vmsessiond.service" || fail "the user unit does not verify"

step "the system unit's command line, as root (its StateDirectory= given as systemd would)"
SYSTEM_EXEC=$(sed -n 's/^ExecStart=//p' "$ROOT/usr/lib/systemd/system/vmsessiond.service")
USER_EXEC=$(sed -n 's/^ExecStart=//p' "$ROOT/usr/lib/systemd/user/vmsessiond.service")
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
# The listen address comes from the environment (over /etc/vmsessiond/config.json, which the package does
# not ship), so that the test never takes the machine's own 7011.
# shellcheck disable=SC2086 # ExecStart is a command line
in_sandbox env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 STATE_DIRECTORY=/var/lib/vmsessiond \
    VMSESSIOND_LISTEN="127.0.0.1:$PORT" VMSESSIOND_ACCELERATOR=tcg $SYSTEM_EXEC >"$WORK/daemon.log" 2>&1 &
SANDBOX_PID=$!
python3 - "$PORT" <<'PY' || fail "the system unit's daemon did not answer"
import json, sys, time, urllib.request
deadline = time.monotonic() + 60
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/v1", timeout=10) as reply:
            info = json.load(reply)
            break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("GET /api/v1 did not answer within 60 s")
        time.sleep(0.3)
runtime = info["runtime"]
print("system daemon:", json.dumps(runtime)[:120])
assert runtime["mode"] == "system" and runtime["libvirt"] == "embedded", runtime
PY
stop_daemon
[ -s "$ROOT/var/lib/vmsessiond/admin-token" ] || fail "the system daemon kept no state in /var/lib/vmsessiond"

step "the user unit's command line, as an unprivileged user, boots the packaged appliance"
# A short name on purpose: Debian 12's passt cuts its socket path (-s) at 98 characters, and the daemon puts
# it at ~/.local/state/vmsessiond/machines/<uuid>/network/net.sock (96 characters for /home/vms; a user
# whose home is 3 characters longer gets no guest network: a bug of the daemon's, reported, not this test's).
in_root useradd --create-home --shell /bin/sh vms
USER_UID=$(in_root id -u vms)
USER_GID=$(in_root id -g vms)
PORT=$(free_port)
as_user() {
    chroot --userspec="$USER_UID:$USER_GID" "$ROOT" \
        env -i PATH=/usr/bin:/bin HOME=/home/vms USER=vms LANG=C.UTF-8 "$@"
}
# No --appliance-dir, no --state-dir: the defaults an installed daemon runs with.
# shellcheck disable=SC2086 # ExecStart is a command line
in_sandbox setpriv --reuid="$USER_UID" --regid="$USER_GID" --clear-groups \
    env -i PATH=/usr/bin:/bin HOME=/home/vms USER=vms LANG=C.UTF-8 \
    $USER_EXEC --listen "127.0.0.1:$PORT" --accelerator tcg >"$WORK/daemon.log" 2>&1 &
SANDBOX_PID=$!
python3 - "$PORT" "$VERSION" "$WORK/session" <<'PY' || fail "the installed daemon did not serve a session"
import json, sys, time, urllib.request, urllib.error

port, version = sys.argv[1], sys.argv[2]
api = f"http://127.0.0.1:{port}/api/v1"

def call(method, url, body=None, token=None):
    request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(request, timeout=330) as reply:
        data = reply.read()
        return reply.status, data

deadline = time.monotonic() + 60
while True:
    try:
        status, data = call("GET", api)
        break
    except (urllib.error.URLError, ConnectionError):
        if time.monotonic() > deadline:
            sys.exit("GET /api/v1 did not answer within 60 s")
        time.sleep(0.3)
info = json.loads(data)
print("GET /api/v1:", json.dumps({k: info.get(k) for k in ("version", "hypervisor", "runtime")}))
assert status == 200, status
assert info["version"] == version, f"GET /api/v1 says version {info['version']}, the package is {version}"
runtime = info["runtime"]
assert runtime["mode"] == "user" and runtime["libvirt"] == "embedded", runtime

# The resource bundles, found beside the installed binary (no build directory exists in this root).
status, script = call("GET", f"http://127.0.0.1:{port}/vmsession.js")
assert status == 200 and b"VMSession" in script, "vmsession.js not served"
status, contract = call("GET", api + "/openapi.yaml")
assert status == 200 and contract.startswith(b"openapi:"), "openapi.yaml not served"

def act(session, token, action, body=None):
    _, data = call("POST", f"{api}/sessions/{session}/{action}", body or {}, token)
    operation = json.loads(data)["operation"]["id"]
    _, data = call("GET", f"{api}/operations/{operation}/wait?timeout=300", token=token)
    result = json.loads(data)
    assert result["status"] == "succeeded", f"{action}: {result}"

_, data = call("POST", api + "/sessions", {"name": "package-test", "secret": "package-test-secret"})
created = json.loads(data)
session, token = created["session"]["id"], created["token"]
act(session, token, "open", {"cpus": 1, "memory": 256, "disk": 1024, "version": "appliance"})
act(session, token, "start", {"userData": "#!/bin/sh\necho hello from the package > /www/index.html\n"})
_, data = call("GET", f"{api}/sessions/{session}", token=token)
state = json.loads(data)["state"]
assert state == "running", state
print("session", session, state)
deadline = time.monotonic() + 120
while True:
    try:
        status, body = call("GET", f"{api}/sessions/{session}/guest/", token=token)
        if status == 200 and b"hello from the package" in body:
            break
    except urllib.error.HTTPError as error:
        if error.code != 503 or time.monotonic() > deadline:
            raise
    time.sleep(0.5)
print("the guest's API answered:", body.decode().strip())
with open(sys.argv[3], "w") as out:
    out.write(session + "\n")
PY
SESSION=$(cat "$WORK/session")
listing=$(as_user vmsessionctl --url "http://127.0.0.1:$PORT" sessions list) || fail "vmsessionctl sessions list failed"
echo "$listing"
echo "$listing" | grep "package-test" | grep -q running || fail "vmsessionctl does not list the session as running"
as_user vmsessionctl --url "http://127.0.0.1:$PORT" sessions close "$SESSION" >/dev/null || fail "vmsessionctl sessions close failed"
stop_daemon
STATE=$ROOT/home/vms/.local/state/vmsessiond
[ -s "$STATE/admin-token" ] || fail "the daemon kept no state in ~/.local/state/vmsessiond"

step "dpkg -r vmsessiond"
dpkg-deb -c "$DEB" | awk '{ for (i = 6; i <= NF; i++) if ($i == "->") break; else p = (i == 6 ? $i : p " " $i); print p }' |
    sed -e 's|^\./|/|' -e 's|/$||' | grep -v '^$' | sort -u > "$WORK/package-paths"
[ "$(wc -l < "$WORK/package-paths")" -gt 10 ] || fail "dpkg-deb -c listed too few paths"
in_root dpkg -r vmsessiond >"$WORK/remove.log" 2>&1 || { cat "$WORK/remove.log" >&2; fail "dpkg -r failed"; }
left=0
while read -r path; do
    [ -e "$ROOT$path" ] || [ -L "$ROOT$path" ] || continue
    # A directory that holds other packages' files (/usr/bin, /usr/lib/systemd/…) stays, as it should; every
    # file of ours in it is checked on its own line. (dpkg-query -S alone would miss /usr/lib/systemd/system,
    # which Debian 12's packages ship as /lib/systemd/system.)
    if [ -d "$ROOT$path" ] && [ ! -L "$ROOT$path" ]; then
        if [ -n "$(ls -A "$ROOT$path")" ] || in_root dpkg-query -S "$path" >/dev/null 2>&1; then continue; fi
    fi
    echo "test-package: left behind: $path" >&2
    left=$((left + 1))
done < "$WORK/package-paths"
[ $left -eq 0 ] || fail "$left path(s) of the package remain after dpkg -r"
[ -s "$STATE/admin-token" ] && [ -s "$ROOT/var/lib/vmsessiond/admin-token" ] || fail "dpkg -r removed the users' state"
step "PASS: $(basename "$DEB") installs from apt, runs as a user with its appliance, and removes cleanly"
