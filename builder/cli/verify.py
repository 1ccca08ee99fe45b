"""`lab verify`: the table of checks (or --json); exit 0 only when every check passes."""

from __future__ import annotations

import json
import time
from contextlib import suppress
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from builder.cli.common import (
    Lab,
    cloud_config_option,
    err,
    finish,
    json_option,
    out,
    timeout_option,
    topology_options,
)
from builder.errors import StackseedError
from builder.fsutil import write_private
from builder.verify import Row, all_ok, nodes_joining, to_json, verify


def table(rows: list[Row]) -> Table:
    result = Table(title="lab verify", show_lines=False)
    result.add_column("check")
    result.add_column("result")
    result.add_column("seconds", justify="right")
    result.add_column("detail", overflow="fold")
    for row in rows:
        mark = "[green]pass[/green]" if row.ok else "[bold red]FAIL[/bold red]"
        result.add_row(row.name, mark, f"{row.seconds:.1f}", row.detail)
    return result


def progress_line(line: str) -> None:
    err.print(f"  {escape(line)}", soft_wrap=True)


@click.command("verify")
@topology_options
@json_option("Print the checks as JSON.")
@click.option(
    "--deep",
    is_flag=True,
    help="Also wait for the test server's console and ping its floating IP from the host.",
)
@click.option(
    "--on",
    "on_node",
    metavar="NODE",
    help="Boot the test server on this compute node (a host-targeted boot that still passes the "
    "scheduler), e.g. a firmware-booted or plain node. Default: where the scheduler puts it.",
)
@cloud_config_option
@timeout_option(900.0, "Seconds to wait for each slow step (server ACTIVE, volume status).")
def verify_command(
    lab: Lab,
    as_json: bool,
    deep: bool,
    on_node: str | None,
    cloud_config: Path | None,
    timeout: float,
) -> None:
    """Prove the lab is a working cloud: services, agents, Horizon, a server and a volume."""
    if on_node is not None:
        computes = nodes_joining(lab.plan, "hypervisor")
        if on_node not in computes:
            raise StackseedError(
                f"--on {on_node}: {lab.topology_file} has no compute node {on_node!r}",
                fix=f"pick one of: {', '.join(computes) or 'none (no node has a compute role)'}",
            )
    clouds_yaml = cloud_config or lab.state.clouds_yaml
    # Each check's start and end as it happens, on stderr (stdout stays the table or the
    # JSON): under TCG a verify takes a quarter of an hour, and a silent one looks hung.
    rows = verify(
        lab.plan, clouds_yaml, deep=deep, timeout=timeout, on=on_node, progress=progress_line
    )
    ok = all_ok(rows)
    record = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "ok": ok}
    # `lab snapshot` reads it; it never makes a state directory nor fails verify.
    with suppress(OSError):
        if lab.state.root.is_dir():
            write_private(lab.state.last_verify, (json.dumps(record) + "\n").encode())

    def show() -> None:
        out.print(table(rows))
        if not ok:
            err.print(next_steps(lab, rows), soft_wrap=True)

    finish(as_json, to_json(rows), show, ok=ok)


def next_steps(lab: Lab, rows: list[Row]) -> str:
    """What a user runs after a failed verify: the check again, then the nodes it names."""
    failed = [row for row in rows if not row.ok]
    named = [n.name for n in lab.plan.nodes if any(n.name in row.detail for row in failed)]
    nodes = named or [n.name for n in lab.plan.nodes]
    lines = [
        f"lab verify: {len(failed)} check(s) failed: {', '.join(row.name for row in failed)}",
        "next:",
        "  lab status                  every node's first-boot phase",
        "  lab verify                  again: a service that was still joining may pass now",
    ]
    for node in nodes:
        lines.append(f"  lab console {node:<15} {node}'s console (first-boot markers)")
    for node in nodes:
        lines.append(
            f"  lab ssh {node} sudo tail -n 60 /var/log/stackseed/firstboot.log"
            "   (services: /var/log/<service>/)"
        )
    return "\n".join(lines)


def register(group: click.Group) -> None:
    group.add_command(verify_command)
