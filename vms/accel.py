"""Choose KVM or TCG: KVM only where it really runs a guest, and whether guests get nested virt.

`/dev/kvm` existing is not enough: on nested hosts such as PVM it opens fine and then qemu aborts
setting the first MSR. So the probe starts qemu with KVM and the host CPU for a moment; if qemu
is still running firmware when the moment is over, KVM works.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Mode = Literal["kvm", "tcg"]
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL": "C"}
_PROBE_SECONDS = 2.0


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


def choose(requested: Mode | None, *, local: bool = True) -> Accel:
    """requested: --accel (None: detect). local: libvirt runs here, so the probe means something."""
    if requested == "tcg":
        return Accel("tcg", False, "TCG requested (--accel tcg)")
    if requested == "kvm":
        return Accel("kvm", nested_virt(), "KVM requested (--accel kvm)")
    if not local:
        return Accel("tcg", False, "remote libvirt: cannot probe KVM; pass --accel kvm to use it")
    ok, why = kvm_works()
    if ok:
        return Accel("kvm", nested_virt(), why)
    fell_back = Path("/dev/kvm").exists()
    return Accel("tcg", False, why, fell_back=fell_back)


def kvm_works(dev: Path = Path("/dev/kvm")) -> tuple[bool, str]:
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
    log.debug("KVM probe: %s", shlex.join(cmd))
    proc = subprocess.Popen(
        cmd, env=_ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _, stderr = proc.communicate(timeout=_PROBE_SECONDS)
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
