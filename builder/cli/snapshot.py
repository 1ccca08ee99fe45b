"""`lab snapshot [NAME]`, `lab snapshots`, `lab restore [NAME]` (and `lab up --from NAME`):
golden snapshots of a running lab, memory state included, kept in the cache outside libvirt so
they outlive `lab down`. The files and keys are builder/snapshot_manifest.py's, the libvirt
work vms/snapshots.py's, the clocks and the wait builder/resume.py's."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import click
import libvirt
from rich.markup import escape
from rich.table import Table

from builder.cli.common import (
    Lab,
    Target,
    err,
    json_option,
    lab_lock,
    out,
    timeout_option,
    topology_options,
)
from builder.errors import PrerequisiteError, StackseedError, UsageError
from builder.fsutil import private_dir, write_private
from builder.images.contract import ImageInfo, find_disk_image, find_image
from builder.resume import duration, step_clocks, wait_cloud
from builder.seed import write_all_seeds
from builder.snapshot_manifest import (
    DEFAULT_NAME,
    Current,
    ImageKey,
    Manifest,
    check_name,
    compare,
    disk_usage,
    file_entry,
    human,
    identity_digests,
    lab_root,
    last_verify,
    missing_files,
    names,
    read_manifest,
    refusal,
    remove_snapshot,
    seed_digests,
    snapshot_dir,
    sweep_temps,
    temp_dir,
    topology_data,
    topology_key,
    utc_now,
    write_manifest,
)
from vms import domains, launcher, ssh
from vms import snapshots as vsnap
from vms.accel import Accel, nested_virt
from vms.commands import _explained, connect_option
from vms.connect import is_local, is_test_driver, open_connection, resolve_uri
from vms.console import read_progress
from vms.storage import default_pool_dir


def _step(message: str) -> None:
    out.print(f"  {escape(message)}", soft_wrap=True)


def _local(uri: str) -> None:
    if not is_local(uri):
        raise PrerequisiteError(
            f"snapshots need libvirt on this host; {uri} is remote",
            fix="run the command on the lab's host (libvirtd writes and reads the memory files)",
        )


def _accel(virt_type: str) -> Accel:
    if virt_type == "kvm":
        return Accel("kvm", nested_virt(), "as the snapshot was taken")
    return Accel("tcg", False, "as the snapshot was taken")


def _images(lab: Lab, images_dir: Path | None) -> dict[str, ImageInfo | None]:
    found: dict[str, ImageInfo | None] = {}
    firmware = {n.role for n in lab.plan.nodes if n.boots_firmware}
    for role in sorted({n.role for n in lab.plan.nodes}):
        # A role with a firmware-booted node needs its whole-disk image too.
        find = find_disk_image if role in firmware else find_image
        try:
            found[role] = find(lab.plan.topology.lab.release, role, images_dir)
        except StackseedError:
            found[role] = None
    return found


def _keys(images: dict[str, ImageInfo | None]) -> dict[str, ImageKey | None]:
    return {r: None if i is None else ImageKey(key=i.key, built=i.built) for r, i in images.items()}


# --- lab snapshot ----------------------------------------------------------------------------


@click.command("snapshot")
@topology_options
@connect_option
@click.argument("name", required=False)
@click.option("--delete", is_flag=True, help="Delete snapshot NAME (and nothing else).")
@click.option("--replace", is_flag=True, help="Replace snapshot NAME once the new one is whole.")
@click.option("--images-dir", type=Target("dir"), default=None)
@timeout_option(600.0, "Seconds to wait for the cloud to answer again afterwards.")
def snapshot(
    lab: Lab,
    connect: str | None,
    name: str | None,
    delete: bool,
    replace: bool,
    images_dir: Path | None,
    timeout: float,
) -> None:
    """Save every node of the running lab, memory included, as snapshot NAME (golden)."""
    if delete:
        if not name:
            raise UsageError("--delete needs the snapshot's NAME", fix="'lab snapshots' lists them")
        with lab_lock(lab):
            size = remove_snapshot(lab.plan.lab, check_name(name))
        out.print(f"snapshot {name}: deleted ({human(size)} freed)")
        return
    name = check_name(name or DEFAULT_NAME)
    plan, state, uri = lab.plan, lab.state, resolve_uri(connect)
    final = snapshot_dir(plan.lab, name)
    started = time.monotonic()
    with lab_lock(lab):
        if final.exists() and not replace:
            raise StackseedError(
                f"lab {plan.lab} has a snapshot {name!r} already",
                fix=f"pass --replace to replace it, pick another NAME, or 'lab snapshot --delete "
                f"{name}'",
            )
        _local(uri)
        conn = open_connection(uri)
        doms = vsnap.lab_domains(conn, plan)
        records = {n: domains.record_of(d) for n, d in doms.items()}
        accel = _accel(records[plan.nodes[0].name].get("accel", "qemu"))
        images = _images(lab, images_dir)
        seeds = seed_digests(plan, state, nested_virt=accel.nested_virt)
        _as_made(lab, records, images, seeds, accel)
        assert seeds is not None
        sweep_temps(plan.lab)
        _space(plan.lab, vsnap.space_needed(doms))
        work = temp_dir(plan.lab, name)
        work.mkdir(mode=0o700)
        verified, verified_at = last_verify(state)
        out.print(f"snapshot {name} of lab {plan.lab}: {len(doms)} node(s) on {uri}")
        try:
            with vsnap.frozen(conn, plan.lab, doms, work, step=_step) as capture:
                manifest = Manifest(
                    name=name,
                    lab=plan.lab,
                    taken_at=utc_now(),
                    uri=uri,
                    accel=accel.virt_type,
                    nested_virt=accel.nested_virt,
                    topology=topology_data(plan),
                    topology_key=topology_key(topology_data(plan)),
                    seeds=seeds,
                    identity=identity_digests(plan, state) or {},
                    images={r: k for r, k in _keys(images).items() if k is not None},
                    verified=verified,
                    verified_at=verified_at,
                    seconds={k: round(v, 1) for k, v in capture.seconds.items()},
                    nodes={n: _node_entry(lab, n, work, capture) for n in doms},
                )
                write_manifest(work, manifest)
                _file_away(work, final)
                capture.directory = final
        finally:
            if work.exists():
                shutil.rmtree(work)
        spent = capture.seconds
        out.print(
            f"the lab stood still for {sum(spent.values()):.0f}s (memory saved in "
            f"{spent['save']:.0f}s, disks copied in {spent['copy']:.0f}s, restored in "
            f"{spent['restore']:.0f}s)"
        )
        running = _set_clocks(lab, conn, timeout, started)
    if running:
        _wait_cloud(lab, timeout, started)
    size = disk_usage(final)
    out.print(
        f"snapshot {name}: {human(size)} on disk in {escape(str(final))}; taken in "
        f"{time.monotonic() - started:.0f}s; verified before: "
        f"{f'yes (lab verify passed at {verified_at})' if verified else 'no'}"
    )


def _as_made(
    lab: Lab,
    records: dict[str, dict[str, str]],
    images: dict[str, ImageInfo | None],
    seeds: dict[str, str] | None,
    accel: Accel,
) -> None:
    """The running lab is what `lab up` would make now: else its snapshot would record keys it
    was not made from."""
    if seeds is None:
        raise StackseedError(
            f"the lab's state directory {lab.state.root} has no secrets or keys",
            fix="pass the --state-dir the lab was made with",
        )
    problems = []
    for node in lab.plan.nodes:
        image = images[node.role]
        if image is None:
            problems.append(f"no {node.role} image in the cache (build-images --role {node.role})")
            continue
        want = domains.spec(lab.plan, node, image, accel, seeds[node.name])
        have = records[node.name]
        changed = domains.differences(have, want)
        if have.get("seed") != want["seed"]:
            changed.append("seed (secrets, keys, templates or first-boot scripts)")
        if changed:
            problems.append(f"{node.name}: {'; '.join(changed)}")
    if problems:
        raise StackseedError(
            f"lab {lab.plan.lab} is not what 'lab up' would make now, so a snapshot of it could "
            "not be restored:\n  " + "\n  ".join(problems),
            fix="put back what changed, or 'lab down' and 'lab up --wait' the lab anew first",
        )


def _space(lab: str, needed: int) -> None:
    root = private_dir(lab_root(lab))
    free = shutil.disk_usage(root).free
    if free < needed:
        err.print(
            f"[yellow]warning:[/yellow] the snapshot may take up to {human(needed)} (every "
            f"node's memory and disks); {human(free)} free in {escape(str(root))}. A save that "
            "runs out of room fails whole and the lab resumes.",
            soft_wrap=True,
        )


def _node_entry(lab: Lab, name: str, work: Path, capture: vsnap.Capture) -> dict:
    console = lab.state.console_log(name)
    copy = None
    if console.is_file():
        copy = f"{name}.console.log"
        write_private(work / copy, console.read_bytes())
    disks = [
        file_entry(work / file, target=target, volume=file)
        for target, file in capture.disks.get(name, [])
    ]
    return {
        "role": lab.plan.node(name).role,
        "phase": read_progress(console).phase,
        "memory": file_entry(work / capture.memory[name]),
        "disks": disks,
        "console": copy,
    }


def _file_away(work: Path, final: Path) -> None:
    """Rename the whole snapshot into place; an older one of that name goes only after."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.rename(final, old)
    os.rename(work, final)
    if old.exists():
        shutil.rmtree(old)


def _set_clocks(lab: Lab, conn: libvirt.virConnect, timeout: float, started: float) -> bool:
    """Every node's clock to the host's (it answers ssh, then); False on the libvirt test
    driver, where nothing runs."""
    if is_test_driver(conn):
        _step("libvirt test driver: nothing runs, so no clocks to set and no cloud to wait for")
        return False

    def clock(node: str, offset: float, elapsed: float) -> None:
        _step(f"{node}: answers ssh, clock set to the host's ({duration(offset)}, {elapsed:.0f}s)")

    step_clocks(lab.plan, lab.state, timeout=timeout, on_node=clock, popen=ssh.popen)
    out.print(f"every node answers ssh, clocks set: {time.monotonic() - started:.0f}s")
    return True


def _wait_cloud(lab: Lab, timeout: float, started: float) -> dict[str, float]:
    """Until verify's read-only checks pass (read-only: no lock); seconds since `started` at
    which each passed."""
    times: dict[str, float] = {}

    def passed(check: str, detail: str, _elapsed: float) -> None:
        times[check] = time.monotonic() - started
        _step(f"{check}: {detail} ({times[check]:.0f}s)")

    wait_cloud(lab.plan, lab.state.clouds_yaml, timeout=timeout, on_pass=passed)
    return times


# --- lab snapshots ---------------------------------------------------------------------------


@click.command("snapshots")
@topology_options
@connect_option
@click.option("--images-dir", type=Target("dir"), default=None)
@json_option("Machine-readable output.")
def snapshots_cmd(lab: Lab, connect: str | None, images_dir: Path | None, as_json: bool) -> None:
    """The lab's snapshots: taken at, size on disk, verified, whether they fit the lab now."""
    rows = listing(lab, resolve_uri(connect), images_dir)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print(f"lab {lab.plan.lab} has no snapshots ('lab snapshot' takes one)")
        return
    grid = Table(box=None, pad_edge=False)
    for column in ("name", "taken at", "size", "verified", "matches the lab"):
        grid.add_column(column, overflow="fold")
    for row in rows:
        fits = "yes" if row["matches"] else f"[red]no[/red]: {escape(row['reason'])}"
        verified = {True: "yes", False: "no", None: "-"}[row["verified"]]
        grid.add_row(row["name"], row["taken_at"] or "-", human(row["size"]), verified, fits)
    out.print(grid)


def listing(lab: Lab, uri: str, images_dir: Path | None) -> list[dict]:
    """One dict per snapshot of the lab, oldest first; damaged ones say why."""
    plan, rows = lab.plan, []
    images = _keys(_images(lab, images_dir))
    identity = identity_digests(plan, lab.state)
    seeds: dict[bool, dict[str, str] | None] = {}
    for name in names(plan.lab):
        directory = snapshot_dir(plan.lab, name)
        row = {"name": name, "path": str(directory), "size": disk_usage(directory)}
        try:
            manifest = read_manifest(directory)
        except StackseedError as exc:
            rows.append(
                row
                | {"taken_at": None, "verified": None, "matches": False}
                | {"reason": exc.message}
            )
            continue
        if manifest.nested_virt not in seeds:
            seeds[manifest.nested_virt] = seed_digests(
                plan, lab.state, nested_virt=manifest.nested_virt
            )
        current = Current(topology_data(plan), seeds[manifest.nested_virt], images, uri, identity)
        problems = compare(manifest, current) + missing_files(directory, manifest)
        row |= {
            "taken_at": manifest.taken_at,
            "verified": manifest.verified,
            "matches": not problems,
            "reason": "; ".join(problems),
            "nodes": sorted(manifest.nodes),
        }
        rows.append(row)
    return sorted(rows, key=lambda r: (r["taken_at"] or "", r["name"]))


# --- lab restore / lab up --from -------------------------------------------------------------


@click.command("restore")
@topology_options
@connect_option
@click.argument("name", required=False)
@click.option("--images-dir", type=Target("dir"), default=None)
@click.option("--pool-dir", type=Target("dir"), default=None)
@timeout_option(600.0, "Seconds to wait for every node and the cloud to answer.")
def restore_cmd(
    lab: Lab,
    connect: str | None,
    name: str | None,
    images_dir: Path | None,
    pool_dir: Path | None,
    timeout: float,
) -> None:
    """Bring the lab back to snapshot NAME (default: the newest), running or not."""
    restore_lab(lab, connect, name, images_dir=images_dir, pool_dir=pool_dir, timeout=timeout)


def _newest(lab: Lab) -> str:
    dated = []
    for name in names(lab.plan.lab):
        try:
            dated.append((read_manifest(snapshot_dir(lab.plan.lab, name)).taken_at, name))
        except StackseedError:
            continue
    if not dated:
        raise StackseedError(
            f"lab {lab.plan.lab} has no snapshots", fix="'lab snapshot' takes one of the lab"
        )
    return max(dated)[1]


def restore_lab(
    lab: Lab,
    connect: str | None,
    name: str | None,
    *,
    images_dir: Path | None = None,
    pool_dir: Path | None = None,
    nat: bool = False,
    timeout: float = 600.0,
) -> None:
    """`lab restore` and `lab up --from`: refuse a snapshot that no longer fits (naming what
    changed), else make the lab from it and wait until every node and the cloud answer."""
    started = time.monotonic()
    plan, state, uri = lab.plan, lab.state, resolve_uri(connect)
    name = check_name(name) if name else _newest(lab)
    directory = snapshot_dir(plan.lab, name)
    if not directory.is_dir():
        known = ", ".join(names(plan.lab)) or "none"
        raise StackseedError(
            f"lab {plan.lab} has no snapshot {name!r} (snapshots: {known})",
            fix="'lab snapshots' lists them; 'lab snapshot NAME' takes one",
        )
    manifest = read_manifest(directory)
    _local(uri)
    with lab_lock(lab):
        conn = open_connection(uri)
        images = _images(lab, images_dir)
        seeds = seed_digests(plan, state, nested_virt=manifest.nested_virt)
        current = Current(
            topology_data(plan), seeds, _keys(images), uri, identity_digests(plan, state)
        )
        problems = compare(manifest, current)
        if problems:
            raise refusal(name, problems)
        damaged = missing_files(directory, manifest)
        if damaged:
            raise StackseedError(
                f"snapshot {name!r} is damaged: {'; '.join(damaged)}",
                fix=f"'lab snapshot --delete {name}' and take another",
            )
        out.print(f"restoring lab {plan.lab} from snapshot {name} (taken {manifest.taken_at})")
        launch = launcher.Launch(
            plan=plan,
            state=state,
            images={r: i for r, i in images.items() if i is not None},
            seeds=write_all_seeds(plan, state, nested_virt=manifest.nested_virt),
            accel=_accel(manifest.accel),
            pool_dir=pool_dir or default_pool_dir(uri, plan.lab),
            nat=nat,
        )
        vsnap.restore(conn, launch, directory, manifest, step=_step)
        state.last_verify.unlink(missing_ok=True)  # verify spoke of the lab that was
        running = _set_clocks(lab, conn, timeout, started)
    times = _wait_cloud(lab, timeout, started) if running else {}
    total = time.monotonic() - started
    if "catalog" in times:
        out.print(
            f"lab {plan.lab} is back at snapshot {name}: every node answers and every API in "
            f"the catalog responds {times['catalog']:.0f}s after the command; services joined "
            f"at {total:.0f}s"
        )
    else:
        out.print(f"lab {plan.lab} is back at snapshot {name} after {total:.0f}s")


COMMANDS = (snapshot, snapshots_cmd, restore_cmd)
for _command in COMMANDS:
    _command.callback = _explained(_command.callback)  # type: ignore[arg-type]


def register(group: click.Group) -> None:
    for command in COMMANDS:
        group.add_command(command)
