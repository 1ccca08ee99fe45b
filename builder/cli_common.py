"""What every command shares: the topology/state options, and one error-to-exit-code edge."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from builder.errors import EXIT_FAILED, StackseedError
from builder.loader import load
from builder.paths import DEFAULT_TOPOLOGY
from builder.plan import Plan, make_plan
from builder.state import LabState

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Lab:
    topology_file: Path
    plan: Plan
    state: LabState


def topology_options(func: F) -> F:
    """--topology and --state-dir on a command; the command receives `lab: Lab`."""

    @click.option(
        "--topology",
        "-t",
        "topology",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Topology file [default: ./lab.yaml, else the packaged default].",
    )
    @click.option(
        "--state-dir",
        type=click.Path(path_type=Path, file_okay=False),
        envvar="STACKSEED_STATE_DIR",
        default=None,
        help="Where the lab's secrets, keys and seeds live [default: XDG state dir].",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, topology: Path | None, state_dir: Path | None, **kwargs: Any) -> Any:
        return func(*args, lab=open_lab(topology, state_dir), **kwargs)

    return wrapper  # type: ignore[return-value]


def open_lab(topology: Path | None, state_dir: Path | None) -> Lab:
    if topology is None:
        topology = Path("lab.yaml")
        if not topology.exists():
            err.print(f"[dim]no ./lab.yaml; using the default topology {DEFAULT_TOPOLOGY}[/dim]")
            topology = DEFAULT_TOPOLOGY
    topo = load(topology)
    try:
        plan = make_plan(topo)
    except ValueError as exc:
        raise StackseedError(f"{topology}: {exc}") from None
    return Lab(topology, plan, LabState.for_lab(topo.lab.name, state_dir))


def invoke(command: click.Command, args: list[str] | None = None, prog: str | None = None) -> int:
    """Run a click command; StackseedError becomes a sentence and its exit code."""
    try:
        command.main(args=args, prog_name=prog, standalone_mode=False)
    except StackseedError as exc:
        err.print(f"[bold red]error:[/bold red] {exc.message}", soft_wrap=True)
        if exc.fix:
            err.print(f"[bold]fix:[/bold] {exc.fix}", soft_wrap=True)
        if exc.log:
            err.print(f"[bold]log:[/bold] {exc.log}", soft_wrap=True)
        return exc.exit_code
    except click.exceptions.Abort:
        err.print("aborted")
        return EXIT_FAILED
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted; re-run the same command to converge")
        return 130
    return 0


def run(command: click.Command) -> None:
    sys.exit(invoke(command))
