"""`lab`: write a topology, make seeds, and (from vms/ and verify) run the lab."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from builder.cli_common import Lab, err, out, run, topology_options
from builder.errors import StackseedError
from builder.fsutil import copy_private
from builder.paths import DEFAULT_TOPOLOGY
from builder.seed import write_all_seeds


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def lab() -> None:
    """Seed, start, inspect and verify a self-assembling OpenStack lab."""


@lab.command()
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False), default="lab.yaml")
def init(path: Path, force: bool) -> None:
    """Write the default topology to PATH (./lab.yaml) for editing."""
    if path.exists() and not force:
        raise StackseedError(f"{path} exists already", fix="edit it, or pass --force to replace it")
    shutil.copyfile(DEFAULT_TOPOLOGY, path)
    out.print(f"wrote {path}: edit it, then run 'lab up'")


@lab.command()
@topology_options
@click.argument("node", required=False)
@click.option("--all", "all_nodes", is_flag=True, help="Write every node's seed.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
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
    if all_nodes and output.exists() and not output.is_dir():
        raise StackseedError(f"{output} is a file", fix="with --all, -o names a directory")
    seeds = write_all_seeds(lab.plan, lab.state, nested_virt=nested_virt)
    wanted = names if all_nodes else [node]
    for name in wanted:
        target = output / f"{name}.iso" if all_nodes else output
        changed = copy_private(seeds[name], target)
        out.print(f"{name}: {target} ({'written' if changed else 'unchanged'})")


def _register_optional() -> None:
    # The launcher and verify live in other packages; the seed commands work without them.
    for module in ("vms.commands", "builder.cli_verify", "builder.cli_logs"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError as exc:
            if exc.name and (exc.name == module or exc.name.startswith("libvirt")):
                continue
            raise
        mod.register(lab)


_register_optional()


def main() -> None:
    run(lab)


__all__ = ["err", "lab", "main"]
