"""A lab node as a libvirt domain: direct kernel boot (or UEFI firmware booting the role's
whole-disk image, for a node with boot: firmware), the plan's NICs and disks, a console log."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import libvirt

from builder.images.contract import ImageInfo
from builder.plan import Plan, PlannedNode
from builder.sizes import format_size
from vms.accel import Accel
from vms.firmware import firmware
from vms.naming import libvirt_name, object_uuid, owned_suffix
from vms.xml import cmdline_of, domain_spec, domain_type, render, with_cmdline, with_cpu_shares

log = logging.getLogger(__name__)

# Differences in these keys of a node's record cannot be applied to an existing node.
HARDWARE = ("role", "accel", "image", "memory", "vcpus", "nics", "disks")
# Recorded only for nodes that differ from the default (kernel boot, virtio NICs), so a default
# node's record, and its domain XML, are what they were before these existed.
OPTIONAL_HARDWARE = ("boot", "nic_model", "os")
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
    """The launcher's record of a node, kept in the domain's <metadata>: what `up` compares.
    A firmware-booted node's image is its whole-disk image, named by that disk's key."""
    record = {
        "lab": plan.lab,
        "node": node.name,
        "role": node.role,
        "accel": accel.virt_type,
        "image": image.disk.key if node.boots_firmware and image.disk else image.key,
        "memory": f"{node.memory >> 20}MiB",
        "vcpus": str(node.vcpus),
        "nics": " ".join(f"{n.network}={n.mac}" for n in node.nics),
        "disks": " ".join(f"{d.serial}:{d.size}" for d in node.disks),
        # The root disk's size: a change is only warned about (the node keeps its disk).
        "root": format_size(node.root_size),
        "seed": seed_sha[:16],
    }
    if node.boots_firmware:
        record["boot"] = f"firmware {node.firmware} seed={node.seed_bus}"
    if node.nic_model != "virtio":
        record["nic_model"] = node.nic_model
    if node.plain:
        # The image is not the role's: its base volumes are named after it (image_name).
        record["os"] = node.image_name
    return record


def image_name(record: dict[str, str]) -> str:
    """The image a recorded node boots: "plain" for a plain node, else its role's."""
    return record.get("os") or record.get("role", "")


def with_arg(cmdline: str, arg: str) -> str:
    """The kernel command line with `key=value` (or a bare flag) appended, unless the image's
    own line already sets that key: the image's choice wins."""
    key = arg.split("=", 1)[0]
    given = {word.split("=", 1)[0] for word in cmdline.split()}
    return cmdline if key in given else f"{cmdline} {arg}"


def kernel_args(cmdline: str, *, tcg: bool) -> str:
    """The kernel command line a directly booted node gets: the image's, plus what the launcher
    adds where the image does not set it."""
    if "console=ttyS0" not in cmdline.split():  # several consoles may be given: one more
        cmdline = f"{cmdline} console=ttyS0"
    # A guest kernel that panics restarts after 10 s instead of hanging there (libvirt's
    # on_reboot is restart), and its later boot's walk brings its services back. Seen:
    # compute1 stopped on a double fault under TCG, and nothing restarted it.
    cmdline = with_arg(cmdline, "panic=10")
    if tcg:
        # Under TCG on a busy host the guest's TSC checks fail ("TSCs unsynchronized"), the
        # kernel falls back to the HPET, and every clock read becomes an emulated MMIO
        # access: systemd then starves (units fail with result 'protocol', networkd and
        # udevd die). QEMU derives every vCPU's TSC from one host clock, so it is reliable
        # here. (A firmware-booted node gets it from its grub.cfg, on QEMU only.)
        cmdline = with_arg(cmdline, "tsc=reliable")
        # TCG translates guest code once per translation key, and for a position-independent
        # executable the key includes the address it runs at: with address space
        # randomisation every Python process (the interpreter is a PIE) translates the
        # interpreter again. One address for all cut an interpreter start by 40% and the host
        # CPU of starts and imports by 15% (bench/bench_tcg_guest.py), a controller's later
        # boot by about 5%. The guest's CPU is emulated and the lab's networks are isolated;
        # KVM guests and bare metal keep their ASLR.
        cmdline = with_arg(cmdline, "norandmaps")
    return cmdline


def set_kernel_args(conn: libvirt.virConnect, dom: libvirt.virDomain) -> list[str]:
    """A shut-off, directly booted domain's kernel command line given what this launcher adds
    (a lab defined before an argument existed), so the start that follows boots with it; the
    arguments added. A running or firmware-booted domain is left as it is."""
    if dom.isActive():
        return []
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    have = cmdline_of(xml)
    if have is None:
        return []
    wanted = kernel_args(have, tcg=domain_type(xml) == "qemu")
    if wanted == have:
        return []
    conn.defineXML(with_cmdline(xml, wanted))
    return wanted.split()[len(have.split()) :]


def before_restart(
    conn: libvirt.virConnect, dom: libvirt.virDomain, node: PlannedNode
) -> list[str]:
    """What a shut-off domain made by an older launcher gets before it starts again (CPU shares,
    kernel arguments), said as the commands print it."""
    said = []
    if set_cpu_shares(conn, dom, node):
        said.append(f"CPU shares set to {node.cpu_shares}")
    added = set_kernel_args(conn, dom)
    if added:
        said.append(f"kernel arguments added: {' '.join(added)}")
    return said


def desired_xml(
    plan: Plan,
    node: PlannedNode,
    *,
    record: dict,
    accel: Accel,
    cmdline: str | None,
    kernel: str | None,
    initrd: str | None,
    root: str,
    disks: list[tuple[str, str]],  # (serial, path) in topology order
    seed: str,
    console_log: Path,
) -> str:
    """The domain XML of a node; `kernel`, `initrd` and `cmdline` are for direct kernel boot
    and ignored for a node that boots its firmware."""
    boot: dict[str, object]
    if node.boots_firmware:
        assert node.firmware is not None
        boot = {"firmware": firmware(node.firmware), "seed_bus": node.seed_bus}
        kernel = initrd = cmdline = None
    else:
        boot = {"firmware": None, "seed_bus": None}
        assert cmdline is not None
        cmdline = kernel_args(cmdline, tcg=accel.mode == "tcg")
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
        **boot,
    )


def set_cpu_shares(conn: libvirt.virConnect, dom: libvirt.virDomain, node: PlannedNode) -> bool:
    """A shut-off domain's CPU shares set to what the launcher gives a new node (a lab made
    before they existed, or a topology's changed cpu_weight), so the start that follows uses
    them; True when they changed. A running domain keeps its shares until it starts again."""
    if dom.isActive():
        return False
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    wanted = with_cpu_shares(xml, node.cpu_shares)
    if wanted == xml:
        return False
    conn.defineXML(wanted)
    return True


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
        f"{key} {have.get(key) or '(none)'} -> {want.get(key) or '(none)'}"
        for key in (*HARDWARE, *OPTIONAL_HARDWARE)
        if have.get(key) != want.get(key)
    ]


def state_of(dom: libvirt.virDomain | None) -> str:
    if dom is None:
        return "absent"
    state, _reason = dom.state(0)
    if state == libvirt.VIR_DOMAIN_SHUTOFF and has_saved_memory(dom):
        return "saved"
    return _STATES.get(state, "unknown")


def pause_together(doms: Iterable[libvirt.virDomain]) -> float:
    """Pause every running domain of `doms`, back to back, so that the lab's clocks and
    connections stop at one moment; the seconds it took."""
    started = time.monotonic()
    for dom in doms:
        if state_of(dom) == "running":
            dom.suspend()
    return time.monotonic() - started


def resume_together(doms: dict[str, libvirt.virDomain]) -> tuple[list[str], float]:
    """Resume every paused domain of `doms` (name -> domain), back to back: the names
    resumed and the seconds it took."""
    started = time.monotonic()
    resumed = []
    for name, dom in doms.items():
        if state_of(dom) == "paused":
            dom.resume()
            resumed.append(name)
    return resumed, time.monotonic() - started


def has_saved_memory(dom: libvirt.virDomain) -> bool:
    """libvirt holds this shut-off domain's memory (`lab stop --save`): its next start is a
    restore, not a boot."""
    try:
        return bool(dom.hasManagedSaveImage(0))
    except libvirt.libvirtError:
        return False


def remove(dom: libvirt.virDomain) -> None:
    if dom.isActive():
        dom.destroy()
    if has_saved_memory(dom):
        # Not left to undefine's flag alone: a driver that refuses the flags refuses the plain
        # undefine too while saved memory exists.
        dom.managedSaveRemove(0)
    try:
        dom.undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        )
    except libvirt.libvirtError:
        dom.undefine()
