"""Golden snapshots as files: where they live, their manifest, and the content keys a snapshot
depends on (the topology, every node's seed, the role images, the libvirt URI), compared with
the lab as it would be made now. No libvirt here: vms/snapshots.py saves and restores domains.

A snapshot is `<cache>/snapshots/<lab>/<name>/`: `manifest.json`, each node's memory state
(`<node>.mem`, written by libvirt's virDomainSave), its writable disks under their volume names
(the root overlay, extra disks; base images stay shared, named by content key) and its console
log. It is written into a hidden `.<name>.tmp-<pid>` directory and renamed whole, so a listing
never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from builder.aptrepo import read_key
from builder.errors import StackseedError, UsageError
from builder.fsutil import private_dir, write_private
from builder.paths import cache_root
from builder.plan import Plan
from builder.render import LabKeys, ensure_keys, environment, render_node, secrets_for
from builder.secrets import NAMES as SECRET_NAMES
from builder.seed import iso_bytes
from builder.sizes import format_size
from builder.state import LabState

MANIFEST = "manifest.json"
FORMAT = 1
DEFAULT_NAME = "golden"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


# --- where ---------------------------------------------------------------------------------


def lab_root(lab: str) -> Path:
    return cache_root() / "snapshots" / lab


def check_name(name: str) -> str:
    if not _NAME.match(name) or name.endswith("."):
        raise UsageError(
            f"{name!r} is not a snapshot name",
            fix="use 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit (e.g. '{DEFAULT_NAME}')",
        )
    return name


def snapshot_dir(lab: str, name: str) -> Path:
    return lab_root(lab) / check_name(name)


def temp_dir(lab: str, name: str) -> Path:
    """Where a snapshot is written before it is renamed into place (hidden from listings)."""
    return private_dir(lab_root(lab)) / f".{check_name(name)}.tmp-{os.getpid()}"


def sweep_temps(lab: str) -> list[Path]:
    """Remove what interrupted snapshots left (hidden directories); the caller holds the lab's
    lock, so none of them is being written."""
    root = lab_root(lab)
    removed = []
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            if entry.name.startswith(".") and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
                removed.append(entry)
    return removed


def remove_snapshot(lab: str, name: str) -> int:
    """Delete a snapshot; its size on disk. The lab's and the root snapshots directory go too
    when they are left empty, so deleting the last snapshot leaves nothing behind."""
    directory = snapshot_dir(lab, name)
    if not directory.is_dir():
        known = ", ".join(names(lab)) or "none"
        raise StackseedError(
            f"lab {lab} has no snapshot {name!r} (snapshots: {known})",
            fix="'lab snapshots' lists them",
        )
    size = disk_usage(directory)
    shutil.rmtree(directory)
    sweep_temps(lab)
    for parent in (lab_root(lab), lab_root(lab).parent):
        try:
            parent.rmdir()
        except OSError:
            break
    return size


def names(lab: str) -> list[str]:
    root = lab_root(lab)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def disk_usage(path: Path) -> int:
    """Bytes the files under `path` take on disk (du): holes of sparse files do not count."""
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except OSError:
                continue
    return total


def human(size: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- the manifest --------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class FileEntry(_Model):
    file: str  # a plain name inside the snapshot directory
    size: int  # apparent size
    allocated: int  # on disk


class DiskEntry(FileEntry):
    target: str  # vda, vdb, ...
    volume: str  # the volume's name in the lab's pool


class NodeEntry(_Model):
    role: str
    phase: str  # first boot's phase on the console when the snapshot was taken
    memory: FileEntry
    disks: list[DiskEntry]
    console: str | None = None


class ImageKey(_Model):
    key: str
    built: str = ""


class Manifest(_Model):
    format: int = FORMAT
    name: str
    lab: str
    taken_at: str
    uri: str
    accel: str  # libvirt's domain type: 'qemu' (TCG) or 'kvm'
    nested_virt: bool = False
    topology: dict[str, Any]
    topology_key: str
    seeds: dict[str, str]  # node -> sha256 of its seed ISO
    identity: dict[str, str] = {}  # node -> identity_digests(): its secrets and keys
    images: dict[str, ImageKey]  # role -> content key
    verified: bool = False
    verified_at: str | None = None
    seconds: dict[str, float] = {}
    nodes: dict[str, NodeEntry]

    def files(self) -> list[FileEntry]:
        return [f for n in self.nodes.values() for f in (n.memory, *n.disks)]


def write_manifest(directory: Path, manifest: Manifest) -> None:
    text = json.dumps(manifest.model_dump(), indent=2, sort_keys=True) + "\n"
    write_private(directory / MANIFEST, text.encode())


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    fix = f"delete it: 'lab snapshot --delete {directory.name}'"
    try:
        raw = json.loads(path.read_text())
        manifest = Manifest(**raw)
    except FileNotFoundError:
        raise StackseedError(f"{directory} is not a snapshot: no {MANIFEST}", fix=fix) from None
    except (OSError, ValueError, TypeError, ValidationError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a stackseed manifest"
        raise StackseedError(f"{path} cannot be read ({reason})", fix=fix) from None
    if manifest.format != FORMAT:
        raise StackseedError(
            f"snapshot {directory.name!r} has format {manifest.format}; this stackseed reads "
            f"format {FORMAT}",
            fix=fix,
        )
    for entry in manifest.files():
        if "/" in entry.file or entry.file in ("", ".", ".."):
            raise StackseedError(f"{path}: file {entry.file!r} is not inside the snapshot", fix=fix)
    return manifest


def missing_files(directory: Path, manifest: Manifest) -> list[str]:
    """Files the manifest lists that are gone or have another size (a damaged snapshot)."""
    problems = []
    for entry in manifest.files():
        path = directory / entry.file
        if not path.is_file():
            problems.append(f"{entry.file} is missing")
        elif path.stat().st_size != entry.size:
            problems.append(f"{entry.file} has {path.stat().st_size} bytes, not {entry.size}")
    return problems


def file_entry(path: Path, **extra: str) -> dict[str, Any]:
    stat = path.stat()
    return {"file": path.name, "size": stat.st_size, "allocated": stat.st_blocks * 512, **extra}


def last_verify(state: LabState) -> tuple[bool, str | None]:
    """(passed, when) of the lab's last `lab verify`, as builder/cli/verify.py recorded it."""
    try:
        record = json.loads(state.last_verify.read_text())
        return bool(record["ok"]), str(record["at"])
    except (OSError, ValueError, KeyError, TypeError):
        return False, None


# --- content keys --------------------------------------------------------------------------


@dataclass(frozen=True)
class Current:
    """The lab as `lab up` would make it now, in the manifest's terms. seeds is None when they
    cannot be made without writing (no secrets or keys in the state directory yet)."""

    topology: dict[str, Any]
    seeds: dict[str, str] | None
    images: dict[str, ImageKey | None]  # None: no image for the role in the cache
    uri: str
    identity: dict[str, str] | None = None

    @property
    def topology_key(self) -> str:
        return topology_key(self.topology)


def topology_data(plan: Plan) -> dict[str, Any]:
    """The topology with every node resolved (role defaults, derived MACs): what the domains and
    the seeds are made from, as plain data."""
    topo = plan.topology
    return {
        # lab.repository only when set: snapshots made before it existed keep their key.
        "lab": topo.lab.model_dump(
            mode="json", exclude={"repository"} if topo.lab.repository is None else None
        ),
        "networks": [n.model_dump(mode="json") for n in topo.networks],
        "nodes": [
            {
                "name": node.name,
                "role": node.role,
                "ip": node.ip,
                "memory": format_size(node.memory),
                "vcpus": node.vcpus,
                "nics": [f"{nic.network}={nic.mac}" for nic in node.nics],
                "disks": [f"{d.serial}:{format_size(d.size)}:{d.purpose}" for d in node.disks],
                "root_size": format_size(node.root_size),
                # Only when not the defaults: snapshots of kernel-booted labs keep their key.
                **(
                    {"boot": f"{node.boot} {node.firmware} seed={node.seed_bus}"}
                    if node.boots_firmware
                    else {}
                ),
                **({"nic_model": node.nic_model} if node.nic_model != "virtio" else {}),
                **({"image": node.image} if node.image != node.role else {}),
            }
            for node in plan.nodes
        ],
    }


def topology_key(data: Mapping[str, Any]) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _identity(plan: Plan, state: LabState) -> tuple[dict[str, str], LabKeys] | None:
    """The lab's secrets and keys as they are in the state directory; None when any is missing
    (a lab made now would get new ones). Reads only: every private key exists."""
    try:
        loaded = yaml.safe_load(state.secrets_file.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    secrets = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
    keys = [state.ssh_key, *(state.host_key(n.name) for n in plan.nodes)]
    if any(name not in secrets for name in SECRET_NAMES) or not all(k.is_file() for k in keys):
        return None
    if any(n.plain for n in plan.nodes) and read_key(state.repo_key_dir) is None:
        return None  # plain nodes' seeds carry the repository key a new lab would make anew
    return secrets, ensure_keys(plan, state)


def seed_digests(plan: Plan, state: LabState, *, nested_virt: bool) -> dict[str, str] | None:
    """sha256 of each node's seed ISO as `lab up` would write it now, made in memory: nothing
    is written. None when the state directory lacks the secrets or keys."""
    found = _identity(plan, state)
    if found is None:
        return None
    secrets, lab_keys = found
    env = environment()
    digests = {}
    for node in plan.nodes:
        payload = render_node(plan, node, secrets, lab_keys, nested_virt=nested_virt, env=env)
        digests[node.name] = hashlib.sha256(iso_bytes(payload.files())).hexdigest()
    return digests


def identity_digests(plan: Plan, state: LabState) -> dict[str, str] | None:
    """Per node, a sha256 of what its seed carries of the lab's identity: the secrets its role
    reads, the operator key, its host key. A seed that changed while this did not changed in
    its templates or first-boot scripts only."""
    found = _identity(plan, state)
    if found is None:
        return None
    secrets, lab_keys = found
    digests = {}
    for node in plan.nodes:
        material = {
            "secrets": secrets_for(node.role, secrets),
            "operator": lab_keys.public,
            "host": list(lab_keys.host_keys[node.name]),
        }
        digests[node.name] = hashlib.sha256(
            json.dumps(material, sort_keys=True).encode()
        ).hexdigest()
    return digests


def _short(key: str) -> str:
    return key[:12]


def topology_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two topology_data() results, in words: 'nodes: compute2 added',
    'compute1: memory', 'networks: provider changed (cidr)', 'lab: release'."""
    changes = []
    lab_fields = _fields(old.get("lab", {}), new.get("lab", {}))
    if lab_fields:
        changes.append(f"lab: {', '.join(lab_fields)}")
    for kind in ("networks", "nodes"):
        before = {item["name"]: item for item in old.get(kind, [])}
        after = {item["name"]: item for item in new.get(kind, [])}
        moved = [f"{n} added" for n in after if n not in before]
        moved += [f"{n} removed" for n in before if n not in after]
        if moved:
            changes.append(f"{kind}: {', '.join(moved)}")
        for name in after:
            if name in before:
                fields = _fields(before[name], after[name])
                if fields:
                    changes.append(f"{kind[:-1]} {name}: {', '.join(fields)}")
        if not moved and list(before) != list(after):
            changes.append(f"{kind}: order")
    return changes or ["its canonical form"]


def _fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in {*old, *new} if old.get(k) != new.get(k))


def compare(manifest: Manifest, current: Current) -> list[str]:
    """Every reason the snapshot no longer fits the lab, one sentence each (empty: it fits)."""
    name = manifest.name
    problems = []
    if manifest.uri != current.uri:
        problems.append(
            f"snapshot {name!r} was taken on {manifest.uri}; this command uses {current.uri}"
        )
    if manifest.topology_key != current.topology_key:
        changed = topology_changes(manifest.topology, current.topology)
        problems.append(f"topology changed since snapshot {name!r} ({'; '.join(changed)})")
    for role, then in sorted(manifest.images.items()):
        now = current.images.get(role)
        if now is None:
            problems.append(
                f"no {role} image in the cache now; snapshot {name!r} needs content key "
                f"{_short(then.key)}"
            )
        elif now.key != then.key:
            newer = "newer" if now.built > then.built else "different"
            problems.append(
                f"image for role {role} is {newer} (content key {_short(then.key)} -> "
                f"{_short(now.key)}, built {now.built or '?'})"
            )
    if current.seeds is None:
        problems.append(
            "the lab's state directory has no secrets or keys: the snapshot's nodes hold "
            "secrets a new lab would not have"
        )
    else:
        problems += _seed_changes(manifest, current.seeds, current.identity or {})
    return problems


def _seed_changes(manifest: Manifest, seeds: dict[str, str], identity: dict[str, str]) -> list:
    changed = [n for n, sha in manifest.seeds.items() if seeds.get(n, sha) != sha]
    known = [n for n in changed if n in manifest.identity and n in identity]
    keys = [n for n in known if manifest.identity[n] != identity[n]]
    scripts = [n for n in known if n not in keys]
    unknown = [n for n in changed if n not in known]
    since = f"since snapshot {manifest.name!r}"
    problems = []
    if keys:
        problems.append(
            f"the secrets or keys of {', '.join(keys)} changed {since}: its nodes hold the old "
            "ones (is this the state directory the lab was made with?)"
        )
    if scripts:
        problems.append(
            f"seed of {', '.join(scripts)} changed {since}: templates or first-boot scripts "
            "under cloudinit/ (secrets and keys are the same)"
        )
    if unknown:
        problems.append(
            f"seed of {', '.join(unknown)} changed {since} (secrets, keys, templates or "
            "first-boot scripts differ)"
        )
    return problems


def refusal(name: str, problems: list[str]) -> StackseedError:
    return StackseedError(
        f"snapshot {name!r} does not match the lab any more:\n  " + "\n  ".join(problems),
        fix="put back what changed, or make the lab anew ('lab down', 'lab up --wait', "
        f"'lab verify') and snapshot it again ('lab snapshot {name} --replace')",
    )


def matches(manifest: Manifest, current: Current) -> tuple[bool, str]:
    problems = compare(manifest, current)
    return not problems, "; ".join(problems)
