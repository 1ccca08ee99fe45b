"""Golden snapshots in libvirt: a lab's memory and disks saved whole, and brought back.

Taking one: every node is paused at once (the lab's clocks and connections stop together), then
each node's memory state goes to a file with virDomainSave (the domain stops) and its writable
disks (root overlay, extra disks) are copied sparse beside it; then every node is restored from
its file, paused, and all resume at once. Restoring one: the lab's domains go, `launcher.up`
makes networks, pool, base images, fresh volumes and definitions (starting nothing), the
snapshot's disks replace the fresh volumes, and every node is restored from its memory file and
resumed at once. The restored domains are the lab's usual objects: `lab down` removes them.

libvirtd itself writes and reads the memory files, so they must be on its host: snapshots need a
local libvirt.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path

import libvirt

from builder.errors import StackseedError
from builder.fsutil import write_private
from builder.plan import Plan
from builder.snapshot_manifest import Manifest, human
from vms import domains, launcher, storage
from vms.connect import is_test_driver
from vms.naming import base_volume
from vms.xml import domain_files, domain_spec, retarget, writable_disks

log = logging.getLogger(__name__)
Step = Callable[[str], None]
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"}


def _quiet(_what: str) -> None:
    return None


# --- taking -----------------------------------------------------------------------------------


def lab_domains(conn: libvirt.virConnect, plan: Plan) -> dict[str, libvirt.virDomain]:
    """Every node's domain, all running; StackseedError naming each one that is not."""
    owned = domains.owned(conn, plan.lab)
    problems = [f"{name} is not in the topology" for name in sorted(set(owned) - set(_names(plan)))]
    states = {name: domains.state_of(owned.get(name)) for name in _names(plan)}
    problems += [f"{n} is {s}" for n, s in states.items() if s not in ("running", "paused")]
    if problems:
        # A saved node resumes only with its peers (`lab start`); `lab up` would refuse it.
        saved = "saved" in states.values()
        raise StackseedError(
            f"cannot snapshot lab {plan.lab}: {'; '.join(problems)}",
            fix="'lab start' resumes the saved nodes, then snapshot again"
            if saved
            else "'lab up' makes the lab match its topology and starts every node",
        )
    return {name: owned[name] for name in _names(plan)}


def space_needed(doms: dict[str, libvirt.virDomain]) -> int:
    """At most what a snapshot takes: each node's whole memory (only what the guest has
    touched is written) and what its writable disks hold."""
    total = 0
    for dom in doms.values():
        total += dom.maxMemory() * 1024
        for _target, source in writable_disks(dom.XMLDesc(0)):
            with suppress(OSError):
                total += os.stat(source).st_blocks * 512
    return total


@dataclass
class Capture:
    """What `frozen` saved: memory files and disk copies, by node, inside `directory` (the
    caller may rename the directory and set the new one: the lab comes back from there)."""

    directory: Path
    memory: dict[str, str] = field(default_factory=dict)  # node -> file name
    disks: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # (target, file name)
    seconds: dict[str, float] = field(default_factory=dict)


@contextmanager
def frozen(
    conn: libvirt.virConnect,
    lab: str,
    doms: dict[str, libvirt.virDomain],
    directory: Path,
    step: Step = _quiet,
) -> Iterator[Capture]:
    """Pause every node, save each one's memory into `directory` and copy its writable disks
    there; the caller files the snapshot away inside the block. Whatever happens, every node is
    then restored from its memory file and the lab resumes as one."""
    capture = Capture(directory)
    try:
        capture.seconds["pause"] = domains.pause_together(doms.values())
        step(f"paused {', '.join(doms)} together ({capture.seconds['pause']:.1f}s)")
        sources = {name: writable_disks(dom.XMLDesc(0)) for name, dom in doms.items()}
        started = time.monotonic()
        for name, dom in doms.items():
            began, path = time.monotonic(), directory / f"{name}.mem"
            dom.save(str(path))
            capture.memory[name] = path.name
            with suppress(PermissionError):  # libvirtd made it 0600 (its own, if not ours)
                os.chmod(path, 0o600)  # the guest's memory holds every secret it was given
            step(f"{name}: memory saved ({human(path.stat().st_size)}, {_since(began)})")
        capture.seconds["save"] = time.monotonic() - started
        started = time.monotonic()
        for name, disks in sources.items():
            capture.disks[name] = []
            for target, source in disks:
                began, copy = time.monotonic(), directory / Path(source).name
                copy_sparse(Path(source), copy)
                capture.disks[name].append((target, copy.name))
                on_disk = copy.stat().st_blocks * 512
                step(f"{name}: disk {target} copied ({human(on_disk)} on disk, {_since(began)})")
        capture.seconds["copy"] = time.monotonic() - started
        yield capture
    except BaseException:
        try:
            _bring_back(conn, lab, list(doms), capture, step)
        except Exception as exc:  # the first failure is the one to report; say this one too
            step(f"warning: the lab could not be brought back: {_message(exc)}")
        raise
    _bring_back(conn, lab, list(doms), capture, step)


def _bring_back(
    conn: libvirt.virConnect, lab: str, names: list[str], capture: Capture, step: Step
) -> None:
    started = time.monotonic()
    jobs = {name: (capture.directory / file, None, None) for name, file in capture.memory.items()}
    _restore_all(
        conn,
        jobs,
        step,
        fix=f"'lab restore {capture.directory.name.lstrip('.').split('.tmp-')[0]}' brings the "
        "lab back from the snapshot if it was filed; else 'lab down' and 'lab up' boot it afresh",
    )
    capture.seconds["restore"] = time.monotonic() - started
    resume_all(conn, names, lab, step)


def _since(started: float) -> str:
    return f"{time.monotonic() - started:.0f}s"


def _run(argv: list[str], *, failed: str, fix: str) -> None:
    """Run a host tool; when it fails, StackseedError '<failed>: <what it said>' and the fix."""
    done = subprocess.run(argv, env=_ENV, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StackseedError(f"{failed}: {done.stderr.strip()}", fix=fix)


def copy_sparse(source: Path, target: Path, *, like: Path | None = None) -> None:
    """Copy a disk image keeping its holes (cp --sparse=always), atomically; 0600, or the owner
    and mode of `like` (the volume it replaces) when that exists."""
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        _run(
            ["cp", "--sparse=always", "--", str(source), str(temp)],
            failed=f"copying {source} to {target} failed",
            fix=f"check the free space there (df -h {target.parent}); re-running is safe",
        )
        if like is not None and like.exists():
            stat = like.stat()
            os.chown(temp, stat.st_uid, stat.st_gid)
            os.chmod(temp, stat.st_mode & 0o7777)
        else:
            os.chmod(temp, 0o600)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def qcow2_backing(path: Path) -> str | None:
    """The backing file a qcow2 header names (None: none, or not a qcow2 file)."""
    with path.open("rb") as handle:
        header = handle.read(20)
        if len(header) < 20 or header[:4] != b"QFI\xfb":
            return None
        offset, size = int.from_bytes(header[8:16], "big"), int.from_bytes(header[16:20], "big")
        if not offset or not size:
            return None
        handle.seek(offset)
        return handle.read(size).decode()


def rebase(path: Path, backing: str) -> None:
    """Point a qcow2 overlay at another path of the same base image (header only: -u)."""
    _run(
        ["qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", backing, str(path)],
        failed=f"cannot point {path} at its base image {backing}",
        fix="'lab doctor' checks qemu-img; re-running is safe",
    )


# --- restoring --------------------------------------------------------------------------------


def check_memory_files(conn: libvirt.virConnect, plan: Plan, directory: Path, manifest: Manifest):
    """Every memory file is a saved domain of this lab's node of that name (libvirt reads its
    header), before anything of the running lab is touched."""
    for name, entry in manifest.nodes.items():
        path = directory / entry.memory.file
        try:
            record = domain_spec(conn.saveImageGetXMLDesc(str(path), 0)) or {}
        except libvirt.libvirtError as exc:
            raise StackseedError(
                f"snapshot {manifest.name!r}: {path} is not a saved domain libvirt can read "
                f"({exc.get_error_message()})",
                fix=f"delete it ('lab snapshot --delete {manifest.name}') and take another",
            ) from None
        if (record.get("lab"), record.get("node")) != (plan.lab, name):
            raise StackseedError(
                f"snapshot {manifest.name!r}: {path} holds node {record.get('node')!r} of lab "
                f"{record.get('lab')!r}, not {name} of {plan.lab}",
                fix=f"delete it ('lab snapshot --delete {manifest.name}') and take another",
            )


def restore(
    conn: libvirt.virConnect,
    launch: launcher.Launch,
    directory: Path,
    manifest: Manifest,
    step: Step = _quiet,
) -> dict[str, float]:
    """Make the lab what the snapshot in `directory` holds and run it; seconds per phase."""
    plan, names = launch.plan, _names(launch.plan)
    seconds: dict[str, float] = {}
    started = time.monotonic()
    check_memory_files(conn, plan, directory, manifest)
    for name, dom in sorted(domains.owned(conn, plan.lab).items()):
        domains.remove(dom)
        step(f"domain {name}: removed (the snapshot replaces it)")
    for change in launcher.up(conn, replace(launch, hold=frozenset(names))).changes:
        step(change)
    seconds["define"] = time.monotonic() - started

    started = time.monotonic()
    pool = storage.find_pool(conn, plan.lab)
    assert pool is not None  # up made it
    paths = {}
    for volume in storage.volume_names(pool):
        found = storage.lookup(pool, volume)
        if found is not None:
            paths[volume] = found.path()
    for name in names:
        node, entry = plan.node(name), manifest.nodes[name]
        for disk in entry.disks:
            if disk.volume not in paths:
                raise StackseedError(
                    f"the lab's pool has no volume {disk.volume} for {name}'s disk {disk.target}",
                    fix="'lab down', then 'lab up --from' the snapshot",
                )
            began, target = time.monotonic(), Path(paths[disk.volume])
            copy_sparse(directory / disk.file, target, like=target)
            image = launch.images[node.image_name]
            # A firmware-booted node's overlay sits on the whole-disk image, not the rootfs.
            if node.boots_firmware and image.disk is not None:
                base = paths.get(base_volume(node.image_name, image.disk.key, "disk"))
            else:
                base = paths.get(base_volume(node.image_name, image.key, "qcow2"))
            backing = qcow2_backing(target)
            if backing is not None and base is not None and backing != base:
                rebase(target, base)
            step(f"{name}: disk {disk.target} in place ({human(disk.allocated)}, {_since(began)})")
        if entry.console:
            log_path = launch.state.console_log(name)
            write_private(log_path, (directory / entry.console).read_bytes())
    pool.refresh(0)
    seconds["disks"] = time.monotonic() - started

    started = time.monotonic()
    jobs = {
        name: (directory / manifest.nodes[name].memory.file, paths, launch.state.console_log(name))
        for name in names
    }
    _restore_all(conn, jobs, step)
    seconds["memory"] = time.monotonic() - started
    resume_all(conn, names, plan.lab, step)
    return seconds


def _restore_all(
    conn: libvirt.virConnect,
    jobs: dict[str, tuple[Path, dict[str, str] | None, Path | None]],
    step: Step,
    *,
    fix: str = "re-run the command (it is safe); 'lab down' and 'lab up' boot the lab afresh",
) -> None:
    """Restore every node from its memory file (paused), in parallel: the files are read at
    disk speed and each qemu loads its own."""

    def one(name: str) -> None:
        began = time.monotonic()
        memory, paths, console = jobs[name]
        _restore_one(conn, name, memory, paths, console)
        step(f"{name}: memory restored ({_since(began)})")

    failures = []
    with ThreadPoolExecutor(max_workers=max(len(jobs), 1)) as pool:
        futures = {name: pool.submit(one, name) for name in jobs}
        for name, future in futures.items():
            exc = future.exception()
            if exc is not None:
                failures.append(f"{name}: {_message(exc)}")
    if failures:
        raise StackseedError(
            "could not restore from the saved memory: " + "; ".join(failures), fix=fix
        )


def _restore_one(
    conn: libvirt.virConnect,
    name: str,
    memory: Path,
    paths: dict[str, str] | None,
    console: Path | None,
) -> None:
    if is_test_driver(conn):  # it takes neither flags nor a changed XML, and nothing runs
        conn.restore(str(memory))
        return
    saved = conn.saveImageGetXMLDesc(str(memory), 0)
    where = None if console is None else str(console)
    try:
        xml = retarget(saved, paths or domain_files(saved), where)
    except KeyError as exc:
        raise StackseedError(
            f"{name}'s saved domain uses {exc.args[0]}, which the lab's pool does not have"
        ) from None
    conn.restoreFlags(str(memory), xml, libvirt.VIR_DOMAIN_SAVE_PAUSED)


def resume_all(conn: libvirt.virConnect, names: list[str], lab: str, step: Step = _quiet) -> None:
    """Resume every paused node of the lab, back to back."""
    owned = domains.owned(conn, lab)
    resumed, took = domains.resume_together({n: owned[n] for n in names if n in owned})
    if resumed:
        step(f"resumed {', '.join(resumed)} together ({took:.1f}s)")


def _message(exc: BaseException) -> str:
    if isinstance(exc, libvirt.libvirtError):
        return exc.get_error_message()
    if isinstance(exc, StackseedError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def _names(plan: Plan) -> list[str]:
    return [node.name for node in plan.nodes]
