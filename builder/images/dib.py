"""One diskimage-builder run, as a library consumer would drive it, and publishing its output.

The command line and environment are built explicitly (nothing read from or written to
os.environ), the exact command is logged, DIB's full output goes to a log file, and each line
is handed to a callback (the progress display). A finished build is published into its image
directory in one rename, image.json last, so a reader never sees half an image.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from builder.errors import StackseedError
from builder.fsutil import owner_kept
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


def run(
    dib: DibRun, log_path: Path, on_line: Callable[[str], None], base_env: dict[str, str]
) -> int:
    """Run DIB, teeing every line to `log_path` and `on_line`; returns its exit status."""
    cmd = dib.command()
    env = dib.env(base_env)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    dib.staging.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log, owner_kept(KVM):
        shown_env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
        log.write(f"# env: {shown_env}\n# command: {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            on_line(line)
        return proc.wait()


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
    (dib.staging / f"{role}.packages").write_text(_packages(manifests, role))
    shutil.move(str(manifests), dib.staging / "dib-manifests")
    shutil.rmtree(dib.staging / f"{role}.d", ignore_errors=True)

    sums = {name: file_sha256(dib.staging / name) for name in files.values()}
    (dib.staging / "SHA256SUMS").write_text(
        "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))
    )
    (dib.staging / "key").write_text(key + "\n")
    stats = {**stats, "sizes": {n: (dib.staging / n).stat().st_size for n in files.values()}}
    (dib.staging / "build.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
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
    (dib.staging / IMAGE_JSON).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f".old-{role}-{int(time.time())}")
    if final.exists():
        final.rename(old)
    dib.staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return load_image_info(final)
