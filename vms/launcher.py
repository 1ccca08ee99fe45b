"""up / down / status: converge libvirt onto a Plan, and take a lab away without leftovers.

A node that boots its firmware (boot: firmware) gets the role's whole-disk image as the base of
its root overlay and no kernel or initrd; everything else (volumes, seeds, status, down) is the
same for both kinds.

Order matters for `lab up` being safe to kill at any point:
  pool, networks -> every node's volumes -> per node: define, start.
A node's domain is defined only once its volumes are complete, so on a re-run a node without a
domain gets fresh volumes, and a base image is trusted only when a defined domain uses it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from builder.errors import StackseedError
from builder.images.contract import ImageInfo
from builder.plan import Plan, PlannedNode
from builder.sizes import format_size
from builder.state import LabState
from vms import boots, domains, networks, storage
from vms.accel import Accel
from vms.console import Progress, read_progress
from vms.naming import base_volume, disk_volume, root_volume, seed_volume

log = logging.getLogger(__name__)


@dataclass
class Report:
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def did(self, what: str) -> None:
        log.info("%s", what)
        self.changes.append(what)


@dataclass(frozen=True)
class Launch:
    """Everything `up` needs besides the connection: resolved before anything is touched."""

    plan: Plan
    state: LabState
    images: dict[str, ImageInfo]  # by image name: the role's, or "plain"
    seeds: dict[str, Path]  # by node
    accel: Accel
    pool_dir: Path
    nat: bool = False
    # Nodes defined but left off (`lab up --only` the others); a later `lab up` starts them.
    hold: frozenset[str] = frozenset()


def _noop(_step: str) -> None:
    return None


def up(
    conn: libvirt.virConnect, launch: Launch, *, checkpoint: Callable[[str], None] = _noop
) -> Report:
    """Make libvirt match the plan; a second run on an unchanged lab changes nothing."""
    plan, report = launch.plan, Report()
    seed_sha = {name: _sha256(path) for name, path in launch.seeds.items()}
    records = {
        node.name: domains.spec(
            plan, node, launch.images[node.image_name], launch.accel, seed_sha[node.name]
        )
        for node in plan.nodes
    }
    existing = domains.owned(conn, plan.lab)
    _preflight(conn, launch, existing, records, report)

    # Nodes that left the topology go first: their networks may be going too.
    for name in sorted(set(existing) - {n.name for n in plan.nodes}):
        domains.remove(existing.pop(name))
        report.did(f"domain {name}: removed (no longer in the topology)")

    pool, created = storage.ensure_pool(conn, plan.lab, launch.pool_dir)
    if created:
        report.did(f"pool {pool.name()}: created at {launch.pool_dir}")
    owned_nets = networks.owned(conn, plan.lab)
    for name in sorted(set(owned_nets) - {n.name for n in plan.networks}):
        networks.remove(owned_nets.pop(name))
        report.did(f"network {name}: removed (no longer in the topology)")
    for net in plan.networks:
        wanted = networks.desired_xml(plan, net, nat=launch.nat)
        have = owned_nets.get(net.name)
        if have is not None and networks.differences(have.XMLDesc(0), wanted):
            networks.remove(have)  # _preflight allowed it: no node of the lab exists
            report.did(f"network {net.name}: removed to be redefined")
        action = networks.ensure(conn, plan, net, nat=launch.nat)
        if action:
            report.did(f"network {net.name}: {action} (bridge {net.bridge}, host {net.host_ip})")
    checkpoint("networks")

    fresh = [node for node in plan.nodes if node.name not in existing]
    bases = _ensure_bases(conn, pool, launch, existing, fresh, report)
    _remove_orphan_volumes(pool, plan, existing, bases, report)
    volumes = {node.name: _node_volumes(conn, pool, launch, node, bases) for node in fresh}
    for node in fresh:
        report.did(f"volumes of {node.name}: created")
    checkpoint("volumes")

    for node in plan.nodes:
        dom = existing.get(node.name)
        if dom is None:
            boots.forget(launch.state, node.name)
            logs = launch.state.console_log(node.name).parent
            logs.mkdir(parents=True, exist_ok=True, mode=0o700)
            xml = domains.desired_xml(
                plan,
                node,
                record=records[node.name],
                accel=launch.accel,
                cmdline=launch.images[node.image_name].cmdline,
                console_log=launch.state.console_log(node.name),
                **volumes[node.name],
            )
            dom = conn.defineXML(xml)
            report.did(f"domain {node.name}: defined ({launch.accel.mode})")
            if node.name not in launch.hold and node.boots_firmware:
                _start_with_fresh_nvram(dom)
                report.did(f"domain {node.name}: started (UEFI, fresh NVRAM)")
        if node.name not in launch.hold and not dom.isActive():
            if node.name in existing:
                # Shut off since (a power cut, `lab stop`): it boots again, not for the first
                # time; `--wait` must read this boot only.
                boots.before_start(launch.state, node.name, dom)
                for said in domains.before_restart(conn, dom, node):
                    report.did(f"domain {node.name}: {said}")
            dom.create()
            report.did(f"domain {node.name}: started")
        checkpoint(f"domain:{node.name}")
    return report


def _start_with_fresh_nvram(dom: libvirt.virDomain) -> None:
    """First start of a newly defined firmware node: its NVRAM is made anew from the template
    even if a file of that name was left behind, so the firmware has no boot entries."""
    try:
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_RESET_NVRAM)
    except libvirt.libvirtError as exc:
        # libvirt's test driver takes no start flags; it has no NVRAM either.
        if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
        dom.create()


def _preflight(
    conn: libvirt.virConnect,
    launch: Launch,
    existing: dict[str, libvirt.virDomain],
    records: dict[str, dict],
    report: Report,
) -> None:
    """Every reason to refuse, found before anything is created."""
    plan = launch.plan
    saved = [name for name, dom in sorted(existing.items()) if domains.has_saved_memory(dom)]
    if saved:
        # Starting one would resume it alone, its clock behind and its peers still saved.
        raise StackseedError(
            f"lab {plan.lab}: {', '.join(saved)} saved by 'lab stop --save' (memory kept)",
            fix="'lab start' resumes the saved nodes together; 'lab down' discards the saved "
            "memory with the lab",
        )
    problems = networks.conflicts(conn, plan)
    storage.find_pool(conn, plan.lab)  # raises when the name is taken by a foreign pool
    for node in plan.nodes:
        if node.name not in existing:
            problems += _root_too_small(node, launch.images[node.image_name])
            continue
        have = domains.record_of(existing[node.name])
        changed = domains.differences(have, records[node.name])
        if changed:
            problems.append(f"node {node.name} differs from its domain: {'; '.join(changed)}")
            continue
        if have.get("seed") != records[node.name]["seed"]:
            report.warnings.append(
                f"{node.name}: its seed changed, but cloud-init has used the old one; "
                "'lab down' and 'lab up' rebuild the node with the new one"
            )
        if have.get("root") != records[node.name]["root"]:
            # Not a refusal: the node runs as it is, with the root disk it was made with.
            report.warnings.append(
                f"{node.name}: its root disk is {have.get('root') or 'the image size'}, the "
                f"topology says {records[node.name]['root']}; 'lab down' and 'lab up' rebuild "
                "the node with it"
            )
    owned_nets = networks.owned(conn, plan.lab)
    for net in plan.networks:
        have = owned_nets.get(net.name)
        if have is None:
            continue
        wanted = networks.desired_xml(plan, net, nat=launch.nat)
        changed = networks.differences(have.XMLDesc(0), wanted)
        if changed and existing:
            problems.append(f"network {net.name} differs from the lab's: {'; '.join(changed)}")
    if problems:
        raise StackseedError(
            "cannot bring the lab up as the topology says:\n  " + "\n  ".join(problems),
            fix="revert the topology, or 'lab down' first to rebuild the lab from scratch",
        )


def _root_too_small(node: PlannedNode, image: ImageInfo) -> list[str]:
    """A root size below the image it must hold, in words (empty: it fits)."""
    if node.boots_firmware:
        if image.disk_path is None:
            return []  # find_disk_image already named the missing disk
        path = image.disk_path
    else:
        path = image.rootfs_path
    need = _virtual_size(path)
    if node.root_size >= need:
        return []
    return [
        f"node {node.name}: root_size {format_size(node.root_size)} is smaller than its image "
        f"{path.name} ({need / (1 << 30):.1f}GiB); give it root_size: "
        f"{-(-need // (1 << 30)) + 1}GiB or more"
    ]


# Base volumes by kind: what a kernel-booted node boots from, and what a firmware-booted one does.
KERNEL_KINDS = ("qcow2", "vmlinuz", "initrd")
DISK_KIND = "disk"


def _bases_of(image: ImageInfo, firmware: bool) -> list[tuple[str, str, Path]]:
    """(kind, content key, file) of the base volumes a node of `image`'s role needs."""
    if firmware:
        assert image.disk is not None and image.disk_path is not None
        return [(DISK_KIND, image.disk.key, image.disk_path)]
    return [(k, image.key, p) for k, p in zip(KERNEL_KINDS, image.boot_files(), strict=True)]


def _ensure_bases(
    conn: libvirt.virConnect,
    pool: libvirt.virStoragePool,
    launch: Launch,
    existing: dict[str, libvirt.virDomain],
    fresh: list[PlannedNode],
    report: Report,
) -> dict[str, dict[str, str]]:
    """Per image (a role's, or the plain one): paths of the base volumes in the pool (image,
    kernel and initrd for kernel-booted nodes, the whole-disk image for firmware-booted ones)."""
    records = [domains.record_of(dom) for dom in existing.values()]
    in_use = {(domains.image_name(rec), rec.get("image")) for rec in records}
    bases: dict[str, dict[str, str]] = {}
    for name in sorted({node.image_name for node in launch.plan.nodes}):
        image = launch.images[name]
        nodes = [n for n in launch.plan.nodes if n.image_name == name]
        paths = {}
        for firmware in sorted({n.boots_firmware for n in nodes}):
            for kind, key, src in _bases_of(image, firmware):
                volume = base_volume(name, key, kind)
                vol = storage.lookup(pool, volume)
                if vol is not None and (name, key) in in_use:
                    paths[kind] = vol.path()
                elif any(n.image_name == name and n.boots_firmware == firmware for n in fresh):
                    paths[kind] = storage.upload(conn, pool, volume, src)
                    report.did(f"image {name}: {src.name} copied into the pool")
        bases[name] = paths
    return bases


def _remove_orphan_volumes(
    pool: libvirt.virStoragePool,
    plan: Plan,
    existing: dict[str, libvirt.virDomain],
    bases: dict[str, dict[str, str]],
    report: Report,
) -> None:
    """Volumes no defined domain or planned node will use: left by an interrupted `up` or an
    older image."""
    keep = {Path(p).name for paths in bases.values() for p in paths.values()}
    for node in plan.nodes:
        if node.name in existing:  # its volumes are complete and in use
            keep |= {root_volume(node.name), seed_volume(node.name)}
            keep |= {disk_volume(node.name, d.serial) for d in node.disks}
    for rec in map(domains.record_of, existing.values()):
        image = rec.get("image", "")
        keep |= {base_volume(domains.image_name(rec), image, k) for k in (*KERNEL_KINDS, DISK_KIND)}
    for name in storage.volume_names(pool):
        if name not in keep:
            storage.delete(pool, name)
            report.did(f"volume {name}: removed (unused)")


def _node_volumes(
    conn: libvirt.virConnect,
    pool: libvirt.virStoragePool,
    launch: Launch,
    node: PlannedNode,
    bases: dict[str, dict[str, str]],
) -> dict:
    base = bases[node.image_name]
    image = launch.images[node.image_name]
    if node.boots_firmware:
        assert image.disk_path is not None
        backing, image_file = base[DISK_KIND], image.disk_path
    else:
        backing, image_file = base["qcow2"], image.rootfs_path
    # The topology's root size, never less than the image (checked in _preflight): the guest
    # grows its root filesystem into the rest on first boot.
    root = storage.create(
        pool,
        root_volume(node.name),
        max(node.root_size, _virtual_size(image_file)),
        "qcow2",
        backing=backing,
    )
    disks = [
        (d.serial, storage.create(pool, disk_volume(node.name, d.serial), d.size, "raw").path())
        for d in node.disks
    ]
    seed = storage.upload(conn, pool, seed_volume(node.name), launch.seeds[node.name])
    return {
        "kernel": None if node.boots_firmware else base["vmlinuz"],
        "initrd": None if node.boots_firmware else base["initrd"],
        "root": root.path(),
        "disks": disks,
        "seed": seed,
    }


def _virtual_size(qcow2: Path) -> int:
    """The virtual size in a qcow2 header (bytes 24-31), so the overlay matches its base."""
    with qcow2.open("rb") as handle:
        header = handle.read(32)
    if header[:4] != b"QFI\xfb":
        raise StackseedError(f"{qcow2} is not a qcow2 image", fix="rebuild the role image")
    return int.from_bytes(header[24:32], "big")


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise StackseedError(
            f"seed {path} is missing ({exc.strerror})", fix="run 'lab up' again to write it"
        ) from None


def down(conn: libvirt.virConnect, lab: str, state: LabState | None = None) -> Report:
    """Remove every domain, network and volume of the lab (named or orphaned) and its seeds."""
    report = Report()
    for name, dom in sorted(domains.owned(conn, lab).items()):
        domains.remove(dom)
        report.did(f"domain {name}: removed")
    for name, net in sorted(networks.owned(conn, lab).items()):
        networks.remove(net)
        report.did(f"network {name}: removed")
    pool = storage.find_pool(conn, lab)
    if pool is not None:
        name = pool.name()
        removed = storage.remove_pool(pool)
        report.did(f"pool {name}: removed with {len(removed)} volume(s)")
    if state is not None and state.seeds_dir.is_dir():
        for iso in sorted(state.seeds_dir.glob("*.iso")):
            iso.unlink()
            report.did(f"seed {iso.name}: removed")
    return report


@dataclass(frozen=True)
class NodeStatus:
    name: str
    role: str
    state: str
    ips: tuple[str, ...]
    phase: str
    failed: str | None
    in_topology: bool = True

    def as_dict(self) -> dict:
        return {
            "node": self.name,
            "role": self.role,
            "state": self.state,
            "ips": list(self.ips),
            "phase": self.phase,
            "failed": self.failed,
            "in_topology": self.in_topology,
        }


def status(conn: libvirt.virConnect, plan: Plan, state: LabState) -> list[NodeStatus]:
    existing = domains.owned(conn, plan.lab)
    rows = []
    for node in plan.nodes:
        dom = existing.get(node.name)
        progress = read_progress(state.console_log(node.name)) if dom else Progress()
        rows.append(
            NodeStatus(
                name=node.name,
                role=node.role,
                state=domains.state_of(dom),
                ips=tuple(n.ip for n in node.nics if n.ip),
                phase=progress.phase if dom and dom.isActive() else "-",
                failed=progress.failed,
            )
        )
    for name in sorted(set(existing) - {n.name for n in plan.nodes}):
        record = domains.record_of(existing[name])
        rows.append(
            NodeStatus(
                name=name,
                role=record.get("role", "?"),
                state=domains.state_of(existing[name]),
                ips=(),
                phase="-",
                failed=None,
                in_topology=False,
            )
        )
    return rows
