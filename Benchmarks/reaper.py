#!/usr/bin/env python3
"""Runs a command as systemd runs a service: under a reaper that reaps orphaned processes at once.

Why: libvirt daemonizes QEMU, so a VM's QEMU is an orphan reparented to the nearest subreaper (systemd
for the system unit, `systemd --user` for the user unit), which reaps it the moment it exits. After a save,
libvirt stops QEMU with SIGTERM and then polls kill(pid, 0) every 200 ms until the pid is gone, and a
zombie still answers. On machines whose PID 1 reaps lazily (a container's or sandbox's init, here up to
~2 s late), every hibernate would measure that init, not libvirt or the daemon. The benchmarks run the
daemon and its peer under this reaper alike, so both see what a systemd machine gives them.

Usage: reaper.py COMMAND [ARG...]; exits with the command's status, and passes SIGTERM/SIGINT on to it.
"""
import ctypes, os, signal, sys

PR_SET_CHILD_SUBREAPER = 36


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    child = os.fork()
    if child == 0:
        os.execvp(sys.argv[1], sys.argv[1:])
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda s, _: os.kill(child, s))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        if pid == child:
            # Orphans still running now go to PID 1, as they would without the reaper.
            return os.waitstatus_to_exitcode(status) & 0xFF


if __name__ == "__main__":
    sys.exit(main())
