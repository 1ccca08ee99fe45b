"""Runs diskimage-builder for build-images, and stops it cleanly once build-images goes away.

DIB cleans up after itself (unmounts its chroot's /proc, /sys, /dev and the .deb cache, kills
what runs in the chroot, removes its work directories) when its shell gets one SIGTERM; a second
one during that cleanup kills the shell halfway and leaves mounts behind. A parent-death signal
cannot promise one: the kernel sends it again each time the orphan passes to another thread of
the dying process (build-images has a display thread). So this guard stands between them, in a
session of its own: it learns that build-images ended from the pipe on its stdin closing (or is
told by SIGTERM, as when build-images is interrupted), sends DIB's shell SIGTERM once, gives it
GRACE seconds, then kills DIB's process group (what its cleanup leaves running on the host:
debootstrap, qemu-img). SIGUSR1 skips the grace (a second Ctrl-C). Its exit status is DIB's.

Only the standard library: it runs with DIB's environment, not stackseed's.

    python3 dib_guard.py GRACE COMMAND [ARG...]
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from contextlib import suppress


def _kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def guard(grace: float, command: list[str], parent_fd: int = 0) -> int:
    asked: list[str] = []
    signal.signal(signal.SIGTERM, lambda *_: asked.append("stop"))
    signal.signal(signal.SIGUSR1, lambda *_: asked.append("kill"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # build-images decides what Ctrl-C means
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, process_group=0)
    watching, since = True, None
    while child.poll() is None:
        if watching:
            ready, _, _ = select.select([parent_fd], [], [], 0.2)
            if ready and not os.read(parent_fd, 4096):
                watching = False
                asked.append("stop")
        else:
            time.sleep(0.2)
        if "stop" in asked and since is None:
            since = time.monotonic()
            with suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        if "kill" in asked or (since is not None and time.monotonic() - since > grace):
            _kill_group(child.pid)
    status = child.wait()
    if since is not None:
        _kill_group(child.pid)
    return status if status >= 0 else 128 - status


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(f"usage: {argv[0]} GRACE COMMAND [ARG...]", file=sys.stderr)
        return 2
    return guard(float(argv[1]), argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
