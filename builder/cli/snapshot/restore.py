"""`lab restore [NAME]` and `lab up --from NAME`: a snapshot that still fits the lab, made
into the lab again."""

from __future__ import annotations

import time
from pathlib import Path

import click

from builder.cli import repo as plain_repo
from builder.cli.cloud import wait_for_cloud
from builder.cli.common import (
    Lab,
    Target,
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
from builder.errors import StackseedError
from builder.seed import write_all_seeds
from builder.snapshot_manifest import (
    Current,
    check_name,
    compare,
    identity_digests,
    missing_files,
    names,
    read_manifest,
    refusal,
    seed_digests,
    snapshot_dir,
    topology_data,
)
from vms import launcher
from vms import snapshots as vsnap
from vms.commands import connect_option
from vms.connect import open_connection, resolve_uri
from vms.storage import default_pool_dir


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
    require_local(uri)
    with lab_lock(lab):
        conn = open_connection(uri)
        images = role_images(lab, images_dir)
        seeds = seed_digests(plan, state, nested_virt=manifest.nested_virt)
        current = Current(
            topology_data(plan), seeds, image_keys(images), uri, identity_digests(plan, state)
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
        # Plain nodes: their repository served before they run again (one restored mid-install
        # goes on with it, and apt on every one names it).
        plain_repo.resume(lab, images_dir)
        launch = launcher.Launch(
            plan=plan,
            state=state,
            images={r: i for r, i in images.items() if i is not None},
            seeds=write_all_seeds(plan, state, nested_virt=manifest.nested_virt),
            accel=accel_of(manifest.accel),
            pool_dir=pool_dir or default_pool_dir(uri, plan.lab),
            nat=nat,
        )
        vsnap.restore(conn, launch, directory, manifest, step=step)
        state.last_verify.unlink(missing_ok=True)  # verify spoke of the lab that was
        running = set_clocks(lab, conn, timeout, started)
    times = wait_for_cloud(lab, timeout, started) if running else {}
    total = time.monotonic() - started
    if "catalog" in times:
        out.print(
            f"lab {plan.lab} is back at snapshot {name}: every node answers and every API in "
            f"the catalog responds {times['catalog']:.0f}s after the command; services joined "
            f"at {total:.0f}s"
        )
    else:
        out.print(f"lab {plan.lab} is back at snapshot {name} after {total:.0f}s")
