"""`lab stop` and `lab start`: pause a lab (overnight, for the host's sake) and bring it back,
keeping its disks, networks and state (and with `--save` its memory); vms/power.py does the
libvirt side."""

from __future__ import annotations

import time

import click
from rich.markup import escape

from builder.cli import repo as plain_repo
from builder.cli.cloud import cloud_after_ready
from builder.cli.common import Lab, err, lab_lock, out, timeout_option, topology_options
from builder.cli.snapshot.shared import set_clocks
from vms import domains, power
from vms.commands import _explained, _known, _wait, connect_option
from vms.connect import open_connection, resolve_uri


def _say(name: str, what: str) -> None:
    out.print(f"  {escape(name)}: {escape(what)}", soft_wrap=True)


def _names(lab: Lab, nodes: tuple[str, ...]) -> list[str]:
    _known(lab, *nodes)
    return list(dict.fromkeys(nodes)) or [n.name for n in lab.plan.nodes]


@click.command("stop")
@topology_options
@connect_option
@click.argument("nodes", nargs=-1, metavar="[NODE]...")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=300,
    show_default=True,
    help="Seconds each wave (the other nodes, then the controller) has to shut down before "
    "the nodes still running are forced off.",
)
@click.option(
    "--save",
    is_flag=True,
    help="Keep each node's memory on the host's disk instead of shutting it down (libvirt's "
    "managed save; up to each node's memory size): every node is paused at once, then saved, "
    "and 'lab start' resumes the lab where it was, without a boot. 'lab down' discards it.",
)
def stop(lab: Lab, connect: str | None, nodes: tuple[str, ...], timeout: float, save: bool) -> None:
    """Shut the lab's nodes (or each NODE) down cleanly by ACPI, the controller last; disks,
    networks and state stay (a plain node's repository server stops with the last node).
    'lab start' starts them again."""
    names = _names(lab, nodes)
    with lab_lock(lab):
        conn = open_connection(resolve_uri(connect))
        if save:
            report = power.save(conn, lab.plan, names, say=_say)
        else:
            report = power.stop(conn, lab.plan, names, timeout=timeout, say=_say)
        # The repository server goes with the last node ('lab start' serves it again): while
        # any node runs, a plain one may still be installing from it.
        if not any(dom.isActive() for dom in domains.owned(conn, lab.plan.lab).values()):
            plain_repo.stop(lab)
    if report.forced:
        err.print(
            f"[yellow]warning:[/yellow] forced off after {timeout:.0f}s without shutting down: "
            f"{escape(', '.join(report.forced))} (like a power cut: their services resume on "
            "the next start, a guest's unwritten data is lost)",
            soft_wrap=True,
        )
    if report.saved:
        out.print(
            f"lab {lab.plan.lab}: {len(report.saved)} node(s) saved, memory kept on the host "
            f"('lab start{_args(nodes)}' resumes them; 'lab down' discards it)",
            soft_wrap=True,
        )
        return
    down = report.stopped + report.forced
    if not down:
        out.print(
            f"lab {lab.plan.lab}: {_which(lab, nodes)} already off: nothing to stop",
            soft_wrap=True,
        )
        return
    out.print(
        f"lab {lab.plan.lab}: {len(down)} node(s) stopped; disks, networks and state kept "
        f"('lab start{_args(nodes)}' starts them again)",
        soft_wrap=True,
    )


@click.command("start")
@topology_options
@connect_option
@click.argument("nodes", nargs=-1, metavar="[NODE]...")
@click.option(
    "--wait",
    is_flag=True,
    help="Follow each node's boot until it is back, then wait until the cloud answers as "
    "'lab verify' judges it (when every node runs).",
)
@timeout_option(1800, "Seconds to --wait.")
def start(
    lab: Lab, connect: str | None, nodes: tuple[str, ...], wait: bool, timeout: float
) -> None:
    """Start the lab's networks and its stopped nodes (or each NODE), the controller first.
    Nodes boot as they were; one whose first boot did not finish resumes it, and nodes saved
    by 'lab stop --save' resume from their memory together, their clocks set."""
    names = _names(lab, nodes)
    began = time.monotonic()
    uri = resolve_uri(connect)
    # As with 'lab up --wait', the lock covers the changes only, not the wait.
    with lab_lock(lab):
        conn = open_connection(uri)
        # A plain node whose first boot stopped mid-install resumes it from the repository.
        plain_repo.resume(lab)
        report = power.start(conn, lab.plan, lab.state, names, say=_say)
        # A node back from saved memory missed the time it spent saved: its clock is behind
        # by that much until it is set (tokens, agent heartbeats and cinder's reports judge by
        # it).
        if report.restored:
            set_clocks(lab, conn, timeout, began, report.restored)
    if report.restored:
        out.print(
            f"lab {lab.plan.lab}: {len(report.restored)} node(s) resumed from saved memory, "
            f"{len(report.started)} started, on {uri}",
            soft_wrap=True,
        )
    elif report.started:
        out.print(f"lab {lab.plan.lab}: {len(report.started)} node(s) started on {uri}")
    else:
        out.print(
            f"lab {lab.plan.lab}: {_which(lab, nodes)} already running: nothing to start",
            soft_wrap=True,
        )
    if not wait:
        return
    _wait(conn, lab, "ready", timeout, names)
    times = cloud_after_ready(conn, lab, timeout, began)
    if not times:
        return
    out.print(f"lab {lab.plan.lab} is back: the cloud answers after {max(times.values()):.0f}s")


def _which(lab: Lab, nodes: tuple[str, ...]) -> str:
    return ", ".join(dict.fromkeys(nodes)) if nodes else "every node"


def _args(nodes: tuple[str, ...]) -> str:
    return "".join(f" {n}" for n in dict.fromkeys(nodes))


COMMANDS = (stop, start)
for _command in COMMANDS:
    _command.callback = _explained(_command.callback)  # type: ignore[arg-type]


def register(group: click.Group) -> None:
    for command in COMMANDS:
        group.add_command(command)
