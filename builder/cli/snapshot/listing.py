"""`lab snapshots`: the lab's snapshots and whether each still fits the lab."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from builder.cli.common import (
    Lab,
    Target,
    json_option,
    out,
    topology_options,
)
from builder.cli.snapshot.shared import image_keys, role_images
from builder.errors import StackseedError
from builder.snapshot_manifest import (
    Current,
    compare,
    disk_usage,
    human,
    identity_digests,
    missing_files,
    names,
    read_manifest,
    seed_digests,
    snapshot_dir,
    topology_data,
)
from vms.commands import connect_option
from vms.connect import resolve_uri


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
    images = image_keys(role_images(lab, images_dir))
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
