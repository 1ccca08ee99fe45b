"""Choose KVM or TCG: KVM only where it really runs a guest, and whether guests get nested virt.

`/dev/kvm` existing is not enough: on nested hosts such as PVM it opens fine and then either qemu
aborts setting the first MSR, or firmware runs and the guest kernel stops at its first
instruction KVM cannot emulate ("KVM internal error ... emulation failure", the domain left
paused). So the probe starts qemu with KVM and the host CPU for a moment, booting a role image's
kernel when one is at hand (firmware alone never meets those instructions); if qemu is still
running and said nothing of an error when the moment is over, KVM works.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping

    from builder.images.contract import ImageInfo

log = logging.getLogger(__name__)

Mode = Literal["kvm", "tcg"]
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL": "C"}
_PROBE_SECONDS = 2.0
# A kernel needs room to decompress (64 MiB stalls it) and reaches the instructions KVM cannot
# emulate about 3 s in on PVM hosts: the probe gives it margin.
_KERNEL_PROBE_SECONDS = 8.0


@dataclass(frozen=True)
class Accel:
    mode: Mode
    nested_virt: bool
    reason: str
    fell_back: bool = False  # KVM was wanted (auto) but does not work: warn once

    @property
    def virt_type(self) -> str:
        """libvirt's <domain type>: 'kvm', or 'qemu' for TCG."""
        return "kvm" if self.mode == "kvm" else "qemu"


def qemu_binary() -> str | None:
    return shutil.which("qemu-system-x86_64", path=_ENV["PATH"])


def probe_kernel(images: Mapping[str, ImageInfo]) -> Path | None:
    """A guest kernel for the KVM probe: any role image's (a whole-disk image has none apart)."""
    for image in images.values():
        if image.format == "rootfs":
            return image.directory / image.kernel
    return None


def choose(requested: Mode | None, *, local: bool = True, kernel: Path | None = None) -> Accel:
    """requested: --accel (None: detect). local: libvirt runs here, so the probe means something.
    kernel: a guest kernel for the probe to boot (a role image's)."""
    if requested == "tcg":
        return Accel("tcg", False, "TCG requested (--accel tcg)")
    if requested == "kvm":
        return Accel("kvm", nested_virt(), "KVM requested (--accel kvm)")
    if not local:
        return Accel("tcg", False, "remote libvirt: cannot probe KVM; pass --accel kvm to use it")
    ok, why = kvm_works(kernel=kernel)
    if ok:
        return Accel("kvm", nested_virt(), why)
    fell_back = Path("/dev/kvm").exists()
    return Accel("tcg", False, why, fell_back=fell_back)


def kvm_works(dev: Path = Path("/dev/kvm"), kernel: Path | None = None) -> tuple[bool, str]:
    if not dev.exists():
        return False, f"{dev} does not exist: using TCG (slow but real)"
    if not os.access(dev, os.R_OK | os.W_OK):
        return False, f"cannot open {dev}: using TCG"
    qemu = qemu_binary()
    if qemu is None:
        return False, "qemu-system-x86_64 is not installed"
    cmd = [
        qemu,
        "-machine",
        "q35,accel=kvm",
        "-cpu",
        "host",
        "-m",
        "64",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "none",
        "-monitor",
        "none",
    ]
    seconds = _PROBE_SECONDS
    if kernel is not None and kernel.is_file():
        cmd[cmd.index("-m") + 1] = "256"
        cmd += ["-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"]
        seconds = _KERNEL_PROBE_SECONDS
    log.debug("KVM probe: %s", shlex.join(cmd))
    proc = subprocess.Popen(
        cmd, env=_ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _, stderr = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        complaint = _complaint(stderr)
        if complaint:
            return False, f"{dev} exists but KVM cannot run a standard guest ({complaint})"
        return True, "KVM runs guests on this host"
    complaint = _complaint(stderr) or f"qemu exited with {proc.returncode}"
    return False, f"{dev} exists but KVM cannot run a standard guest ({complaint})"


def _complaint(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    bad = [
        line
        for line in lines
        if "error" in line.lower() or "doesn't support requested feature" in line
    ]
    return bad[0].removeprefix("qemu-system-x86_64: ") if bad else ""


def nested_virt(cpuinfo: Path = Path("/proc/cpuinfo"), sysfs: Path = Path("/sys/module")) -> bool:
    """Whether a KVM guest with the host CPU can itself run KVM guests (computes: virt_type=kvm)."""
    try:
        flags = next(
            (
                line.split(":", 1)[1].split()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("flags")
            ),
            [],
        )
    except OSError:
        return False
    vendor = "kvm_intel" if "vmx" in flags else "kvm_amd" if "svm" in flags else None
    if vendor is None:
        return False
    try:
        return (sysfs / vendor / "parameters" / "nested").read_text().strip() in ("Y", "1")
    except OSError:
        return False
