"""`lab doctor`: can this host run the lab? Each check says what it found and how to fix it."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import libvirt

from builder.errors import StackseedError
from builder.images.contract import ImageInfo, find_disk_image, find_image
from builder.images.contract import verify as verify_image
from builder.plan import Plan
from builder.sizes import format_size
from vms import accel, firmware
from vms.connect import is_local, open_connection


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def run_checks(plan: Plan, uri: str, pool_dir: Path, images_dir: Path | None) -> list[Check]:
    checks = []
    conn = None
    try:
        conn = open_connection(uri)
        version = conn.getLibVersion()
        checks.append(
            Check("libvirt", True, f"{uri} answers (libvirt {_version(version)}, {conn.getType()})")
        )
    except StackseedError as exc:
        checks.append(Check("libvirt", False, exc.message, exc.fix or ""))
    local = is_local(uri)
    checks.append(_qemu(local))
    kinds = {n.firmware for n in plan.nodes if n.boots_firmware and n.firmware}
    if kinds:
        checks.append(_ovmf(local, kinds))
    found: dict[str, ImageInfo] = {}
    for role in sorted({n.image_name for n in plan.nodes}):
        # An image with a firmware-booted node needs its whole-disk image too.
        find = (
            find_disk_image
            if any(n.boots_firmware and n.image_name == role for n in plan.nodes)
            else find_image
        )
        try:
            image = find(plan.topology.lab.release, role, images_dir)
        except StackseedError as exc:
            checks.append(Check(f"image {role}", False, exc.message, exc.fix or ""))
            continue
        bad = verify_image(image)
        if bad:
            checks.append(
                Check(
                    f"image {role}",
                    False,
                    f"sha256 of {', '.join(bad)} does not match {image.directory}/image.json",
                    f"rebuild it: build-images --role {role}",
                )
            )
        else:
            found[role] = image
            checks.append(Check(f"image {role}", True, f"{image.directory} (key {image.key[:12]})"))
    if any(n.plain for n in plan.nodes):
        checks.append(repo_tools())
    checks.append(_accel(local, found))
    checks.append(_disk(plan, pool_dir, found))
    checks.append(_memory(plan, conn, local))
    return checks


def _version(number: int) -> str:
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


def _qemu(local: bool) -> Check:
    if not local:
        return Check("qemu", True, "remote host: not checked from here")
    qemu = accel.qemu_binary()
    if qemu is None:
        return Check(
            "qemu", False, "qemu-system-x86_64 not found", "apt-get install qemu-system-x86"
        )
    out = subprocess.run(
        [qemu, "--version"],
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
        capture_output=True,
        text=True,
        check=False,
    )
    return Check("qemu", out.returncode == 0, f"{qemu}: {out.stdout.splitlines()[0]}")


def _accel(local: bool, found: dict[str, ImageInfo]) -> Check:
    chosen = accel.choose(None, local=local, kernel=accel.probe_kernel(found))
    nested = ", nested virt for guests" if chosen.nested_virt else ""
    return Check("acceleration", True, f"{chosen.mode.upper()}{nested}: {chosen.reason}")


def _ovmf(local: bool, kinds: set[str]) -> Check:
    if not local:
        return Check("uefi firmware", True, "remote host: not checked from here")
    try:
        firmware.check_installed(kinds)
    except StackseedError as exc:
        return Check("uefi firmware", False, exc.message, exc.fix or "")
    files = sorted({str(firmware.firmware(k).code) for k in kinds})
    return Check("uefi firmware", True, f"{', '.join(files)} (for the nodes with boot: firmware)")


# What making and signing the plain nodes' repository runs on this host (builder/aptrepo.py).
REPO_TOOLS = ("gpg", "gpg-agent", "gpgconf", "dpkg-deb")


def repo_tools() -> Check:
    missing = [tool for tool in REPO_TOOLS if shutil.which(tool) is None]
    if missing:
        return Check(
            "repository tools",
            False,
            f"{', '.join(missing)} missing: the plain nodes' repository is signed with gpg",
            "apt-get install gpg gpg-agent (bash .ci/setup-host.sh installs them)",
        )
    return Check("repository tools", True, f"{', '.join(REPO_TOOLS)} (for the plain nodes)")


def _disk(plan: Plan, pool_dir: Path, found: dict[str, ImageInfo]) -> Check:
    need = sum(p.stat().st_size for image in found.values() for p in image.boot_files())
    need += sum(
        image.disk_path.stat().st_size
        for role, image in found.items()
        if image.disk_path is not None
        and any(n.boots_firmware and n.image_name == role for n in plan.nodes)
    )
    # A root overlay is sparse and takes host disk as the node writes, up to its virtual size
    # (the node's root_size): counted at that, like the sparse extra disks.
    need += sum(node.root_size for node in plan.nodes)
    need += sum(d.size for node in plan.nodes for d in node.disks)
    probe = pool_dir
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    return Check(
        "disk",
        free >= need,
        f"{format_size(free >> 20 << 20)} free at {probe}, the lab may use up to "
        f"{format_size(need >> 20 << 20)} (images; root overlays and disks at their full size)",
        "free space there, or give nodes a smaller root_size or smaller disks in the topology",
    )


def _memory(plan: Plan, conn: libvirt.virConnect | None, local: bool) -> Check:
    need = sum(node.memory for node in plan.nodes)
    if local:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        free = int(fields["MemAvailable"].split()[0]) * 1024
    elif conn is not None:
        free = conn.getFreeMemory()
    else:
        return Check("memory", False, "cannot tell: libvirt is unreachable")
    return Check(
        "memory",
        free >= need,
        f"{format_size(free >> 20 << 20)} available, the nodes want {format_size(need)}",
        "give nodes less 'memory:' in the topology, or remove nodes",
    )
