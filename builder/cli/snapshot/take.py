"""`lab snapshot [NAME]` (and `--delete`): every node of the running lab, memory included,
filed away whole in the cache or not at all."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import click
from rich.markup import escape

from builder.cli.cloud import wait_for_cloud
from builder.cli.common import (
    Lab,
    Target,
    err,
    lab_lock,
    out,
    step,
    timeout_option,
    topology_options,
)
from builder.cli.snapshot.shared import (
    accel_of,
    image_keys,
    require_local,
    role_images,
    set_clocks,
)
from builder.errors import StackseedError, UsageError
from builder.fsutil import private_dir, write_private
from builder.images.contract import ImageInfo
from builder.snapshot_manifest import (
    DEFAULT_NAME,
    Manifest,
    check_name,
    disk_usage,
    file_entry,
    human,
    identity_digests,
    lab_root,
    last_verify,
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
from vms import domains
from vms import snapshots as vsnap
from vms.accel import Accel
from vms.commands import connect_option
from vms.connect import open_connection, resolve_uri
from vms.console import read_progress


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
        require_local(uri)
        conn = open_connection(uri)
        doms = vsnap.lab_domains(conn, plan)
        records = {n: domains.record_of(d) for n, d in doms.items()}
        accel = accel_of(records[plan.nodes[0].name].get("accel", "qemu"))
        images = role_images(lab, images_dir)
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
            with vsnap.frozen(conn, plan.lab, doms, work, step=step) as capture:
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
                    images={r: k for r, k in image_keys(images).items() if k is not None},
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
        running = set_clocks(lab, conn, timeout, started)
    if running:
        wait_for_cloud(lab, timeout, started)
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
        image = images[node.image_name]
        if image is None:
            name = node.image_name
            problems.append(f"no {name} image in the cache (build-images --role {name})")
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
