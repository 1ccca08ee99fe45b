"""`lab`: write a topology, make seeds, and (from vms/ and verify) run the lab."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from builder.cli.common import Lab, Target, err, lab_lock, out, run, topology_options
from builder.errors import StackseedError
from builder.fsutil import copy_private, write_private
from builder.pathcheck import check_target
from builder.paths import DEFAULT_TOPOLOGY
from builder.seed import write_all_seeds


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def lab() -> None:
    """Seed, start, inspect and verify a self-assembling OpenStack lab."""


@lab.command()
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.argument("path", type=Target("file", probe=True, parent_must_exist=True), default="lab.yaml")
def init(path: Path, force: bool) -> None:
    """Write the default topology to PATH (./lab.yaml) for editing."""
    if path.exists() and not force:
        raise StackseedError(f"{path} exists already", fix="edit it, or pass --force to replace it")
    write_private(path, DEFAULT_TOPOLOGY.read_bytes(), mode=0o644)
    out.print(f"wrote {escape(str(path))}: edit it, then run 'lab up'")


@lab.command()
@topology_options
@click.argument("node", required=False)
@click.option("--all", "all_nodes", is_flag=True, help="Write every node's seed.")
@click.option(
    "-o",
    "--output",
    type=Target(None),
    required=True,
    help="The ISO file (one node) or a directory (--all).",
)
@click.option("--nested-virt", is_flag=True, help="Tell computes the CPU has vmx/svm.")
def seed(lab: Lab, node: str | None, all_nodes: bool, output: Path, nested_virt: bool) -> None:
    """Write a NoCloud seed ISO for NODE (attach it to a server as a CD or USB), or --all."""
    if bool(node) == all_nodes:
        raise StackseedError(
            "name one NODE or pass --all", fix="e.g. 'lab seed compute1 -o c1.iso'"
        )
    names = [n.name for n in lab.plan.nodes]
    if node and node not in names:
        raise StackseedError(
            f"{lab.topology_file}: no node {node!r}", fix=f"pick one of: {', '.join(names)}"
        )
    # Before the lab is touched: a bad -o must leave no state directory behind either.
    check_target(output, "--output", "dir" if all_nodes else "file")
    with lab_lock(lab):
        seeds = write_all_seeds(lab.plan, lab.state, nested_virt=nested_virt)
        wanted = names if all_nodes else [node]
        for name in wanted:
            target = output / f"{name}.iso" if all_nodes else output
            changed = copy_private(seeds[name], target)
            out.print(f"{name}: {escape(str(target))} ({'written' if changed else 'unchanged'})")


def _register_optional() -> None:
    # The launcher and verify live in other packages; the seed commands work without them.
    for module in (
        "builder.cli.repo",
        "vms.commands",
        "builder.cli.verify",
        "builder.cli.logs",
        "builder.cli.tempest",
        "builder.cli.snapshot",
        "builder.cli.power",
    ):
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError as exc:
            if exc.name and (exc.name == module or exc.name.startswith("libvirt")):
                continue
            raise
        mod.register(lab)


_register_optional()


def main() -> None:
    run(lab, "lab")


__all__ = ["err", "lab", "main"]
