"""A lab node as a libvirt domain: direct kernel boot, the plan's NICs and disks, a console log."""

from __future__ import annotations

import logging
from pathlib import Path

import libvirt

from builder.images.contract import ImageInfo
from builder.plan import Plan, PlannedNode
from vms.accel import Accel
from vms.naming import libvirt_name, object_uuid, owned_suffix
from vms.xml import domain_spec, render

log = logging.getLogger(__name__)

# Differences in these keys of a node's record cannot be applied to an existing node.
HARDWARE = ("role", "accel", "image", "memory", "vcpus", "nics", "disks")
_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "no state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


def spec(plan: Plan, node: PlannedNode, image: ImageInfo, accel: Accel, seed_sha: str) -> dict:
    """The launcher's record of a node, kept in the domain's <metadata>: what `up` compares."""
    return {
        "lab": plan.lab,
        "node": node.name,
        "role": node.role,
        "accel": accel.virt_type,
        "image": image.key,
        "memory": f"{node.memory >> 20}MiB",
        "vcpus": str(node.vcpus),
        "nics": " ".join(f"{n.network}={n.mac}" for n in node.nics),
        "disks": " ".join(f"{d.serial}:{d.size}" for d in node.disks),
        "seed": seed_sha[:16],
    }


def desired_xml(
    plan: Plan,
    node: PlannedNode,
    *,
    record: dict,
    accel: Accel,
    cmdline: str,
    kernel: str,
    initrd: str,
    root: str,
    disks: list[tuple[str, str]],  # (serial, path) in topology order
    seed: str,
    console_log: Path,
) -> str:
    if "console=ttyS0" not in cmdline.split():
        cmdline = f"{cmdline} console=ttyS0"
    if accel.mode == "tcg" and not any(arg.startswith("tsc=") for arg in cmdline.split()):
        # Under TCG on a busy host the guest's TSC checks fail ("TSCs unsynchronized"), the
        # kernel falls back to the HPET, and every clock read becomes an emulated MMIO access:
        # systemd then starves (units fail with result 'protocol', networkd and udevd die).
        # QEMU derives every vCPU's TSC from one host clock, so it is reliable here.
        cmdline = f"{cmdline} tsc=reliable"
    return render(
        "domain.xml.j2",
        virt_type=accel.virt_type,
        name=libvirt_name(plan.lab, node.name),
        uuid=object_uuid(plan.lab, "domain", node.name),
        lab=plan.lab,
        node=node,
        spec=record,
        kernel=kernel,
        initrd=initrd,
        cmdline=cmdline,
        root=root,
        disks=[
            {"serial": serial, "path": path, "dev": "vd" + chr(ord("b") + i)}
            for i, (serial, path) in enumerate(disks)
        ],
        seed=seed,
        networks={n.name: libvirt_name(plan.lab, n.name) for n in plan.networks},
        console_log=console_log,
    )


def owned(conn: libvirt.virConnect, lab: str) -> dict[str, libvirt.virDomain]:
    """The lab's domains by node name, including nodes no longer in the topology."""
    found = {}
    for dom in conn.listAllDomains(0):
        suffix = owned_suffix(lab, "domain", dom.name(), dom.UUIDString())
        if suffix is not None:
            found[suffix] = dom
    return found


def record_of(dom: libvirt.virDomain) -> dict[str, str]:
    return domain_spec(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) or {}


def differences(have: dict[str, str], want: dict[str, str]) -> list[str]:
    return [
        f"{key} {have.get(key) or '(none)'} -> {want[key] or '(none)'}"
        for key in HARDWARE
        if have.get(key) != want[key]
    ]


def state_of(dom: libvirt.virDomain | None) -> str:
    if dom is None:
        return "absent"
    state, _reason = dom.state(0)
    return _STATES.get(state, "unknown")


def remove(dom: libvirt.virDomain) -> None:
    if dom.isActive():
        dom.destroy()
    try:
        dom.undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        )
    except libvirt.libvirtError:
        dom.undefine()
