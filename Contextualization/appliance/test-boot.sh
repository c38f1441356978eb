#!/bin/bash
# Boot the appliance built by build.sh under plain QEMU (TCG, q35) and check
# it end to end:
#   1. seed ISO on a virtio-blk disk, user networking with a host forward:
#      every marker, user-data output served over HTTP, ACPI power-off;
#   2. seed ISO on a virtio-scsi CD-ROM with vmsession.busy=1:
#      seed found, busy marker, ACPI power-off;
#   3. no seed and no network: "no seed", ready, ACPI power-off.
#
# Usage: test-boot.sh OUTPUT_DIR
# Environment: QEMU (default qemu-system-x86_64), BOOT_TIMEOUT seconds per
# boot (default 40). Exits 0 when every check passes; always stops QEMU and
# removes its temp files. Never uses KVM.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTPUT_DIR" >&2
    exit 2
fi
OUT=$(cd "$1" && pwd)
QEMU=${QEMU:-qemu-system-x86_64}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-40}
MARK="VMSESSION-APPLIANCE:"

for f in vmlinuz initrd.img cmdline; do
    [ -s "$OUT/$f" ] || { echo "test-boot: $OUT/$f missing (run build.sh first)" >&2; exit 2; }
done
for t in "$QEMU" genisoimage curl timeout; do
    command -v "$t" >/dev/null || { echo "test-boot: '$t' not found" >&2; exit 2; }
done
CMDLINE=$(cat "$OUT/cmdline")

TMP=$(mktemp -d "${TMPDIR:-/tmp}/appliance-test.XXXXXX")
QPID=
cleanup() {
    if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
        kill "$QPID" 2>/dev/null || true
        sleep 0.5
        kill -9 "$QPID" 2>/dev/null || true
    fi
    exec 4>&-
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

FAILS=0
fail() {
    echo "FAIL: $*"
    FAILS=$((FAILS + 1))
}
ok() {
    echo "ok: $*"
}

# A free TCP port on 127.0.0.1 for the HTTP forward.
free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# Seed ISO (NoCloud layout) whose user-data writes $TOKEN into /www.
TOKEN="appliance-test-$$-$RANDOM"
mkdir -p "$TMP/seed"
printf 'instance-id: test\nlocal-hostname: test\n' >"$TMP/seed/meta-data"
cat >"$TMP/seed/user-data" <<UD
#!/bin/sh
echo "$TOKEN" >/www/index.html
echo "user-data: wrote token, hostname \$(hostname)"
UD
genisoimage -quiet -V cidata -J -R -o "$TMP/seed.iso" "$TMP/seed"

# boot NAME EXTRA_APPEND QEMU_ARGS...: start QEMU in the background with the
# serial console in $TMP/NAME.log and the HMP monitor on stdin (fd 4 writes).
boot() {
    local name=$1 extra=$2
    shift 2
    LOG=$TMP/$name.log
    : >"$LOG"
    rm -f "$TMP/mon"
    mkfifo "$TMP/mon"
    START=$(date +%s.%N)
    # The monitor reads commands from the FIFO; fd 4 keeps it open for us.
    timeout -k 5 "$BOOT_TIMEOUT" "$QEMU" -nodefaults -machine q35,accel=tcg -m 256 \
        -display none -serial "file:$LOG" -monitor stdio \
        -kernel "$OUT/vmlinuz" -initrd "$OUT/initrd.img" \
        -append "$CMDLINE${extra:+ $extra}" "$@" \
        <"$TMP/mon" >"$TMP/$name.monitor" 2>"$TMP/$name.stderr" &
    QPID=$!
    exec 4>"$TMP/mon"
}

# has_line LINE: the serial log holds exactly LINE (the tty adds \r). Output that comes after the
# console shell has started may follow its prompt ("/ # ", and the cursor query ESC[6n of busybox's line
# editing) on the same line; the prompt is not part of it.
has_line() {
    # Not grep -q: it stops at the first match, tr gets SIGPIPE, and pipefail turns a match into a failure.
    tr -d '\r' <"$LOG" | sed -E 's/^([^ ]* # (\x1b\[6n)?)+//' | grep -xF -- "$1" >/dev/null
}

# wait_marker TEXT: wait until the line "$MARK TEXT" is in $LOG.
wait_marker() {
    while ! has_line "$MARK $1"; do
        if ! kill -0 "$QPID" 2>/dev/null; then
            return 1
        fi
        sleep 0.2
    done
}

# expect_markers TEXT...: each marker must appear (in any order).
expect_markers() {
    local m
    for m in "$@"; do
        if wait_marker "$m"; then ok "$NAME: marker '$m'"; else fail "$NAME: marker '$m' missing"; return 1; fi
    done
}

# powerdown: ACPI power button via the monitor; QEMU must exit by itself.
powerdown() {
    echo system_powerdown >&4
    local i=0
    while kill -0 "$QPID" 2>/dev/null && [ $i -lt 150 ]; do
        sleep 0.2
        i=$((i + 1))
    done
    if kill -0 "$QPID" 2>/dev/null; then
        fail "$NAME: QEMU still running 30 s after system_powerdown"
    else
        if has_line "$MARK powering off"; then
            ok "$NAME: ACPI power-off ($(awk "BEGIN{print $i*0.2}") s)"
        else
            fail "$NAME: QEMU exited but the guest never printed 'powering off'"
        fi
    fi
    stop
}

stop() {
    exec 4>&-
    if [ -n "$QPID" ]; then
        kill "$QPID" 2>/dev/null || true
        wait "$QPID" 2>/dev/null || true
    fi
    QPID=
}

dump_log() {
    echo "---- serial log of $NAME ----"
    tail -n 40 "$LOG" || true
    echo "---- qemu stderr ----"
    tail -n 10 "$TMP/$NAME.stderr" 2>/dev/null || true
    echo "----"
}

elapsed() {
    awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}'
}

# ---- 1. virtio-blk seed + network ---------------------------------------
NAME=virtio-blk
PORT=$(free_port)
boot "$NAME" "" \
    -drive "file=$TMP/seed.iso,if=virtio,format=raw,readonly=on" \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$PORT-:80" \
    -device virtio-net-pci,netdev=n0
before=$FAILS
if expect_markers booted "seed found" "httpd started" "user-data started" ready; then
    echo "   boot to ready: $(elapsed) s (TCG)"
    expect_markers "user-data exited 0" || true
    body=$(curl -fsS --max-time 5 "http://127.0.0.1:$PORT/" 2>/dev/null || true)
    if [ "$body" = "$TOKEN" ]; then ok "$NAME: HTTP returns user-data's value"; else fail "$NAME: HTTP returned '$body', want '$TOKEN'"; fi
    if has_line "user-data: wrote token, hostname test"; then ok "$NAME: user-data output on console, hostname from meta-data"; else fail "$NAME: user-data output/hostname missing"; fi
    powerdown
fi
[ "$FAILS" = "$before" ] || dump_log
stop

# ---- 2. virtio-scsi CD-ROM seed + busy mode ------------------------------
NAME=virtio-scsi-cd
boot "$NAME" "vmsession.busy=1" \
    -device virtio-scsi-pci,id=scsi0 \
    -drive "file=$TMP/seed.iso,if=none,id=cd,media=cdrom,readonly=on,format=raw" \
    -device scsi-cd,drive=cd,bus=scsi0.0
before=$FAILS
if expect_markers booted "seed found" "user-data started" busy ready; then
    echo "   boot to ready: $(elapsed) s (TCG)"
    powerdown
fi
[ "$FAILS" = "$before" ] || dump_log
stop

# ---- 3. no seed, no network ------------------------------------------------
NAME=no-seed
boot "$NAME" ""
before=$FAILS
if expect_markers booted "no seed" ready; then
    echo "   boot to ready: $(elapsed) s (TCG)"
    if has_line "$MARK httpd started"; then fail "$NAME: httpd started without a NIC"; fi
    powerdown
fi
[ "$FAILS" = "$before" ] || dump_log
stop

if [ "$FAILS" -ne 0 ]; then
    echo "test-boot: $FAILS check(s) failed"
    exit 1
fi
echo "test-boot: all checks passed"
