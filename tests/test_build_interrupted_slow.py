"""A real `build-images --role block` killed during diskimage-builder, then run again (issue 17,
item 4): the re-run finishes, `build-images --check` passes, image.json's key is the one the
elements give, DIB's chroot mounts are gone and nothing half-built is left.

Run with: pytest -m long tests/test_build_interrupted_slow.py (too long for CI and `make test`)
It builds in its own cache (STACKSEED_SLOW_KILL_CACHE, default /var/tmp/stackseed-kill-cache,
kept between runs: delete it for a cold start), needs the network on the first run, root (DIB's
sudo), 12 GiB free, and takes a block build or two per case (10-20 minutes each under load).
The fast tests (tests/test_build_interrupted.py) kill a stand-in DIB at the same points.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from builder.images import build, leftovers
from builder.images.contract import load_image_info, verify

pytestmark = [pytest.mark.slow, pytest.mark.long]

CLI = "import sys; from builder.cli.build import main; sys.exit(main())"
ROLE = "block"
CACHE = Path(os.environ.get("STACKSEED_SLOW_KILL_CACHE", "/var/tmp/stackseed-kill-cache"))
BUILD_TIMEOUT = 60 * 60
# When to kill, as a line of DIB's log, and how. SIGKILL gives build-images no say at all:
# DIB's guard must notice and stop it. The base is written while "Caching debootstrap result"
# is the last line: the cut is most likely to fall inside that file then.
CASES = {
    "debootstrap": (r"Caching debootstrap result in", signal.SIGKILL),
    "packages": (r"install\.d/01-package-installs", signal.SIGTERM),
    "conversion": (r"Converting image using qemu-img convert", signal.SIGKILL),
}
BUILDING_IN = re.compile(r"Building in (/\S+)")


def env() -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STACKSEED_")}
    environ.update(PYTHONPATH=str(REPO), STACKSEED_CACHE_DIR=str(CACHE))
    return environ


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        capture_output=True,
        text=True,
        env=env(),
        timeout=BUILD_TIMEOUT,
        check=False,
    )


def log_path() -> Path:
    return CACHE / "logs" / "trixie" / f"{ROLE}.log"


def wait_for_line(pattern: str, proc: subprocess.Popen[str], timeout: float) -> str:
    wanted = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the build ended before the point to kill it at"
        if log_path().is_file():
            text = log_path().read_text(errors="replace")
            if wanted.search(text):
                return text
        time.sleep(0.5)
    raise AssertionError(f"no {pattern!r} in {log_path()} after {timeout:.0f}s")


def mounts_under(directory: str) -> list[str]:
    with open("/proc/mounts") as mounts:
        return [line.split()[1] for line in mounts if line.split()[1].startswith(directory)]


@pytest.mark.parametrize("phase", list(CASES))
def test_a_real_build_killed_during_dib_is_made_whole_by_the_next_run(phase: str) -> None:
    pattern, how = CASES[phase]
    CACHE.mkdir(parents=True, exist_ok=True)
    if phase == "debootstrap":
        # Only a build without a cached base runs debootstrap and writes the base.
        base = CACHE / "dib" / "debootstrap-debian-trixie-amd64.tar.gz"
        base.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "--role", ROLE, "--force"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(),
    )
    try:
        text = wait_for_line(pattern, proc, BUILD_TIMEOUT)
        proc.send_signal(how)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, output
    if how == signal.SIGTERM:
        assert proc.returncode == 130 and "Traceback" not in output, output

    # DIB's cleanup ran: its chroot's mounts and its work directory are gone within the grace.
    found = BUILDING_IN.search(text)
    assert found, "DIB did not say where it builds"
    work = found.group(1)
    deadline = time.monotonic() + 180
    while (mounts_under(work) or Path(work).exists()) and time.monotonic() < deadline:
        time.sleep(1)
    assert mounts_under(work) == [], mounts_under(work)
    assert not Path(work).exists(), f"{work} is left behind"

    again = cli("--role", ROLE)
    assert again.returncode == 0, again.stdout + again.stderr
    checked = cli("--check", "--role", ROLE)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    directory = CACHE / "images" / "trixie" / ROLE
    info = load_image_info(directory)
    assert info.key == build.plan(build.Options(roles=(ROLE,), cache=CACHE))[0].key
    assert verify(info) == []
    hidden = [p.name for p in directory.parent.iterdir() if p.name.startswith(".")]
    assert hidden == [], hidden
    assert leftovers.broken_debs(CACHE / "debs" / "trixie") == []
    assert leftovers.gzip_is_whole(CACHE / "dib" / "debootstrap-debian-trixie-amd64.tar.gz")
