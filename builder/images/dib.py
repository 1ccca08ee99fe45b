"""One diskimage-builder run, as a library consumer would drive it, and publishing its output.

The command line and environment are built explicitly (nothing read from or written to
os.environ), the exact command is logged, DIB's full output goes to a log file, and each line
is handed to a callback (the progress display). A finished build is synced to disk and
published into its image directory in one rename, so a reader never sees half an image; an
interrupted one is stopped with DIB's own cleanup (builder/images/leftovers.py removes the rest).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from builder.errors import StackseedError
from builder.fsutil import owner_kept, replace_dir, sync_tree
from builder.images.contract import IMAGE_JSON, ImageInfo, file_sha256, load_image_info
from builder.images.key import FORMAT_ELEMENTS

ROOT_LABEL = "cloudimg-rootfs"
CMDLINE = f"root=LABEL={ROOT_LABEL} ro console=ttyS0"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
# Only what DIB and its tools need from the caller's environment.
_PASS_ENV = ("PATH", "HOME", "USER", "LOGNAME", "TERM")


@dataclass(frozen=True)
class DibRun:
    role: str
    element: str
    release: str
    fmt: str
    elements_dir: Path
    deb_cache: Path
    dib_cache: Path
    staging: Path
    offline: bool = False
    mirror: str = DEBIAN_MIRROR
    security_mirror: str = SECURITY_MIRROR

    @property
    def image_base(self) -> Path:
        return self.staging / self.role

    def command(self) -> list[str]:
        cmd = ["disk-image-create", "-a", "amd64", "-t", "qcow2", "--no-tmpfs"]
        cmd += ["--image-cache", str(self.dib_cache), "-o", str(self.image_base)]
        # zstd: the compressed qcow2 is written (and read at boot) several times faster than zlib.
        cmd += ["--qemu-img-options", "compression_type=zstd"]
        if self.offline:
            cmd.append("--offline")
        cmd += [self.element, *FORMAT_ELEMENTS[self.fmt]]
        return cmd

    def env(self, base: dict[str, str]) -> dict[str, str]:
        env = {k: base[k] for k in _PASS_ENV if k in base}
        env.setdefault("PATH", os.defpath)
        env.update(
            {
                "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8",
                # Preseeded answers only; no package may wait for a terminal.
                "DEBIAN_FRONTEND": "noninteractive",
                "ELEMENTS_PATH": str(self.elements_dir),
                "DIB_RELEASE": self.release,
                "DIB_DISTRIBUTION_MIRROR": self.mirror,
                "DIB_DEBIAN_SECURITY_MIRROR": self.security_mirror,
                # The debootstrap result is kept and reused: apt brings it up to date anyway.
                "DIB_DEBOOTSTRAP_CACHE": "1",
                "DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE": "1",
                "STACKSEED_DEB_CACHE": str(self.deb_cache),
                "STACKSEED_OFFLINE": "1" if self.offline else "0",
            }
        )
        return env


KVM = Path("/dev/kvm")
# How long diskimage-builder gets, once asked to stop, to run its own cleanup (unmount the
# chroot's /proc, /sys, /dev and the .deb cache, kill what runs in the chroot, remove its work
# directories) before what is left of it is killed.
CLEANUP_GRACE = 120.0
_POLL = 0.2


GUARD = Path(__file__).with_name("dib_guard.py")


@contextmanager
def _terminate_interrupts() -> Iterator[None]:
    """SIGTERM stops build-images as Ctrl-C does: DIB is stopped and cleaned up first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Lines:
    """What DIB added to its log since the last look, as whole lines."""

    def __init__(self, source: BinaryIO, on_line: Callable[[str], None]) -> None:
        self.source = source
        self.on_line = on_line
        self.partial = b""

    def take(self) -> bool:
        """Hand over the new whole lines; False when there was nothing new."""
        chunk = self.source.read()
        if not chunk:
            return False
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        for line in lines:
            self.on_line(line.decode(errors="replace") + "\n")
        return True

    def follow(self, proc: subprocess.Popen[bytes]) -> int:
        """Until the process ends; its exit status."""
        while True:
            status = proc.poll()
            if self.take():
                continue
            if status is not None:
                if self.partial:
                    self.on_line(self.partial.decode(errors="replace"))
                return status
            time.sleep(_POLL)


def stop(proc: subprocess.Popen[bytes], grace: float = CLEANUP_GRACE) -> None:
    """Stop a guarded DIB run (dib_guard.py): SIGTERM has the guard give DIB's shell one
    SIGTERM, so its cleanup runs, and kill what is left of it after `grace` seconds; a second
    Ctrl-C meanwhile (SIGUSR1 to the guard) kills it at once."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace + 10)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            with suppress(ProcessLookupError):
                proc.send_signal(signal.SIGUSR1)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if proc.stdin is not None:
        proc.stdin.close()


def run(
    dib: DibRun,
    log_path: Path,
    on_line: Callable[[str], None],
    base_env: dict[str, str],
    *,
    on_stop: Callable[[], None] | None = None,
    grace: float = CLEANUP_GRACE,
) -> int:
    """Run DIB, its output going to `log_path` and each line to `on_line`; its exit status.

    DIB runs under dib_guard.py, in a session of its own, and writes the log file itself: it
    gets no Ctrl-C straight from the terminal, and should build-images die even by SIGKILL,
    the guard stops it cleanly rather than leave it building, orphaned, into a directory the
    next build removes (nor does it die of a broken pipe halfway through its cleanup).
    Interrupted (Ctrl-C, SIGTERM), build-images calls `on_stop()`, stops DIB (`stop`), then
    lets the interruption go on."""
    env = dib.env(base_env)
    cmd = dib.command()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    dib.staging.mkdir(parents=True, exist_ok=True)
    shown_env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    _write(log_path, f"# env: {shown_env}\n# command: {shlex.join(cmd)}\n")
    with (
        log_path.open("ab") as sink,
        log_path.open("rb") as source,
        owner_kept(KVM),
        _terminate_interrupts(),
    ):
        source.seek(0, os.SEEK_END)
        # The guard's stdin is a pipe only build-images holds open: its end is the signal.
        proc = subprocess.Popen(
            [sys.executable, str(GUARD), str(grace), *cmd],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE,
            start_new_session=True,
        )
        lines = _Lines(source, on_line)
        try:
            status = lines.follow(proc)
        except BaseException:
            with suppress(Exception):
                lines.take()  # so that on_stop() knows the phase DIB was in
            if on_stop is not None:
                on_stop()
            stop(proc, grace)
            raise
        stop(proc, grace)  # only closes the pipe: the guard has ended with DIB
        return status


def _write(path: Path, text: str) -> None:
    """write_text, but a failed write (a full disk) names the file: Python's own error for a
    write, unlike an open's, carries no file name."""
    try:
        path.write_text(text)
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def _packages(manifest_dir: Path, role: str) -> str:
    """DIB's dpkg manifest as 'name version arch' lines, installed packages only."""
    path = manifest_dir / f"dib-manifest-dpkg-{role}"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StackseedError(
            f"{path}: DIB's package manifest is missing or broken ({exc})"
        ) from None
    rows = sorted(
        f"{p['package']} {p['version']} {p['arch']}"
        for p in data.get("packages", [])
        if str(p.get("status", "")).startswith("ii")
    )
    return "\n".join(rows) + "\n"


def publish(
    dib: DibRun, final: Path, key: str, dib_version: str, stats: dict[str, object]
) -> ImageInfo:
    """Turn DIB's output in the staging dir into an image directory, then swap it in."""
    role = dib.role
    files = {
        "rootfs": f"{role}.qcow2",
        "kernel": f"{role}.vmlinuz",
        "initrd": f"{role}.initrd",
    }
    for name in files.values():
        if not (dib.staging / name).is_file():
            raise StackseedError(f"diskimage-builder finished but left no {name} in {dib.staging}")
    manifests = dib.staging / f"{role}.d" / "dib-manifests"
    _write(dib.staging / f"{role}.packages", _packages(manifests, role))
    shutil.move(str(manifests), dib.staging / "dib-manifests")
    shutil.rmtree(dib.staging / f"{role}.d", ignore_errors=True)

    sums = {name: file_sha256(dib.staging / name) for name in files.values()}
    _write(
        dib.staging / "SHA256SUMS",
        "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items())),
    )
    _write(dib.staging / "key", key + "\n")
    stats = {**stats, "sizes": {n: (dib.staging / n).stat().st_size for n in files.values()}}
    _write(dib.staging / "build.json", json.dumps(stats, indent=2, sort_keys=True) + "\n")
    record = {
        "role": role,
        "release": dib.release,
        "key": key,
        **files,
        "root_label": ROOT_LABEL,
        "cmdline": CMDLINE,
        "sha256": sums,
        "manifest": f"{role}.packages",
        "built": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dib_version": dib_version,
        "format": dib.fmt,
    }
    _write(dib.staging / IMAGE_JSON, json.dumps(record, indent=2, sort_keys=True) + "\n")

    # On disk before the rename makes it the image: image.json's digests must hold even if
    # the host goes down right after.
    sync_tree(dib.staging)
    final.parent.mkdir(parents=True, exist_ok=True)
    replace_dir(dib.staging, final)
    return load_image_info(final)
