"""The `lab` command against the real lab on qemu:///system, for the live (e2e) tests: the
default topology and the state `lab` itself uses, run from the checkout."""

from __future__ import annotations

import subprocess
import sys

from conftest import DEFAULT, REPO

URI = "qemu:///system"
# The commands that talk to the cloud or a node, not to libvirt, have no --connect.
NO_CONNECT = {"verify", "ssh", "logs", "tempest"}


def lab(*args: str, timeout: float = 4800) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", "from builder.cli.lab import main; main()", *args]
    where = [] if args[0] in NO_CONNECT else ["--connect", URI]
    return subprocess.run(
        [*argv, "-t", str(DEFAULT), *where],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    """The command's stdout; a failure shows the ends of both streams."""
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout
