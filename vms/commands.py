"""The `lab up / down / status / console / ssh / doctor` commands; the lead's `lab` group adds
them with `register(group)`."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import libvirt
from rich.live import Live
from rich.table import Table

from builder.cli import repo as plain_repo
from builder.cli.cloud import cloud_after_ready
from builder.cli.common import Lab, Target, err, lab_lock, out, topology_options
from builder.errors import PrerequisiteError, StackseedError, UsageError
from builder.images.contract import ImageInfo, find_disk_image, find_image
from builder.plan import Plan
from builder.seed import write_all_seeds
from vms import doctor as doctor_mod
from vms import domains, launcher, ssh, watch
from vms.accel import Accel, choose, probe_kernel
from vms.connect import is_local, is_test_driver, open_connection, resolve_uri
from vms.console import Progress, follow, read_progress, wait_for_new_boot
from vms.firmware import check_installed
from vms.storage import default_pool_dir

# An ACPI reboot stops every service first: under TCG a controller takes a minute or two.
REBOOT_TIMEOUT = 300.0


def connect_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--connect",
        "-c",
        metavar="URI",
        default=None,
        help="libvirt URI [default: $LIBVIRT_DEFAULT_URI, else qemu:///system].",
    )(func)


def _accel(conn: libvirt.virConnect, uri: str, requested: str, kernel: Path | None = None) -> Accel:
    if is_test_driver(conn):
        return Accel("tcg", False, "libvirt test driver: nothing runs")
    wanted = None if requested == "auto" else requested
    chosen = choose(wanted, local=is_local(uri), kernel=kernel)  # type: ignore[arg-type]
    if chosen.fell_back:
        err.print(f"[yellow]warning:[/yellow] {chosen.reason}; using TCG")
    return chosen


@click.command("up")
@topology_options
@connect_option
@click.option(
    "--accel",
    type=click.Choice(["auto", "kvm", "tcg"]),
    default="auto",
    show_default=True,
    help="KVM where it really works, else TCG.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Follow every node's boot; fail on a node that fails. With --until ready, then wait "
    "until the cloud answers as 'lab verify's read-only checks judge it (when every node runs).",
)
@click.option(
    "--until",
    type=click.Choice(["ready", "final"]),
    default="ready",
    show_default=True,
    help="With --wait: first boot complete, or only cloud-init's final stage begun.",
)
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Seconds to --wait [default: 1800; 4200 when a node is plain and installs its packages].",
)
@click.option(
    "--nat",
    is_flag=True,
    help="Opt-in: let the management network reach the outside world through the host (NAT).",
)
@click.option(
    "--only",
    "only",
    multiple=True,
    metavar="NODE",
    help="Start only these nodes (repeatable); the rest are defined but left off until the "
    "next 'lab up'. Nodes may boot in any order.",
)
@click.option("--images-dir", type=Target("dir"), default=None)
@click.option(
    "--pool-dir",
    type=Target("dir"),
    default=None,
    help="Directory of the lab's storage pool [default: /var/lib/libvirt/images/stackseed-LAB].",
)
@click.option(
    "--from",
    "from_snapshot",
    metavar="NAME",
    default=None,
    help="Make the whole lab from snapshot NAME ('lab snapshots'), memory state included, and "
    "wait (--timeout) until every node and the cloud answer.",
)
def up(
    lab: Lab,
    connect: str | None,
    accel: str,
    wait: bool,
    until: str,
    timeout: float | None,
    nat: bool,
    only: tuple[str, ...],
    images_dir: Path | None,
    pool_dir: Path | None,
    from_snapshot: str | None,
) -> None:
    """Create (or converge) the lab's networks, disks and VMs, and start them."""
    if timeout is None:
        timeout = lab.plan.wait_seconds(list(only) or [n.name for n in lab.plan.nodes])
    if from_snapshot is not None:
        _up_from(lab, connect, from_snapshot, accel, only, images_dir, pool_dir, nat, timeout)
        return
    began = time.monotonic()
    plan = lab.plan
    hold = _held(lab, only)
    uri = resolve_uri(connect)
    # The lock covers the changes only: following the boot (--wait) reads consoles, and a
    # `lab reboot` meanwhile (the benches reboot a node mid-boot) must not be refused.
    with lab_lock(lab):
        images = role_images(plan, images_dir)
        conn = open_connection(uri)
        _check_firmware(conn, uri, plan)
        chosen = _accel(conn, uri, accel, probe_kernel(images))
        if nat:
            err.print("[yellow]warning:[/yellow] --nat: the management network is routed outside")
        # Plain nodes: their repository before the seeds (which pin its key), served before
        # any node starts.
        plain_repo.serve(lab, plain_repo.prepare(lab, images_dir))
        seeds = write_all_seeds(plan, lab.state, nested_virt=chosen.nested_virt)
        launch = launcher.Launch(
            plan=plan,
            state=lab.state,
            images=images,
            seeds=seeds,
            accel=chosen,
            pool_dir=pool_dir or default_pool_dir(uri, plan.lab),
            nat=nat,
            hold=hold,
        )
        report = launcher.up(conn, launch)
    for change in report.changes:
        out.print(f"  {change}")
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}")
    if report.changes:
        out.print(f"lab {plan.lab} is up on {uri} ({chosen.mode.upper()})")
    else:
        out.print(f"lab {plan.lab} is already up on {uri}: nothing changed")
    if hold:
        out.print(f"left off: {', '.join(sorted(hold))} ('lab up' starts them)")
    if wait:
        _wait(conn, lab, until, timeout, [n.name for n in plan.nodes if n.name not in hold])
        if until == "ready":
            _cloud(conn, lab, timeout, began)


def _cloud(conn: libvirt.virConnect, lab: Lab, timeout: float, began: float) -> None:
    """Every node ready is not yet the cloud back: after a node's reboot the others said ready
    long before, and only the controller's listings show their services in again."""
    times = cloud_after_ready(conn, lab, timeout, began)
    if times:
        out.print(f"lab {lab.plan.lab}: the cloud answers after {max(times.values()):.0f}s")


def role_images(plan: Plan, images_dir: Path | None) -> dict[str, ImageInfo]:
    """The image of each node, by name (its role's, or "plain"); with its whole-disk image where
    a node boots firmware (PrerequisiteError naming 'build-images --role R --format disk' when
    it is not there)."""
    release = plan.topology.lab.release
    firmware = {n.image_name for n in plan.nodes if n.boots_firmware}
    return {
        name: (find_disk_image if name in firmware else find_image)(release, name, images_dir)
        for name in sorted({n.image_name for n in plan.nodes})
    }


def _check_firmware(conn: libvirt.virConnect, uri: str, plan: Plan) -> None:
    kinds = {n.firmware for n in plan.nodes if n.boots_firmware and n.firmware}
    # Only where libvirt runs here can its firmware files be looked at.
    if kinds and is_local(uri) and not is_test_driver(conn):
        check_installed(kinds)


def _up_from(
    lab: Lab,
    connect: str | None,
    name: str,
    accel: str,
    only: tuple[str, ...],
    images_dir: Path | None,
    pool_dir: Path | None,
    nat: bool,
    timeout: float,
) -> None:
    # The snapshot decides the acceleration and runs every node: its memory needs them.
    if only or accel != "auto":
        raise UsageError(
            "--from restores every node as the snapshot ran it: no --only, no --accel",
            fix=f"'lab up --from {name}' alone",
        )
    from builder.cli.snapshot import restore_lab  # it imports this module

    restore_lab(
        lab, connect, name, images_dir=images_dir, pool_dir=pool_dir, nat=nat, timeout=timeout
    )


def _held(lab: Lab, only: tuple[str, ...]) -> frozenset[str]:
    _known(lab, *only)
    return frozenset(n.name for n in lab.plan.nodes) - set(only) if only else frozenset()


def _known(lab: Lab, *nodes: str) -> None:
    """Refuse node names the topology does not have, naming the file and the choices."""
    names = [n.name for n in lab.plan.nodes]
    unknown = sorted(set(nodes) - set(names))
    if unknown:
        raise StackseedError(
            f"no node {', '.join(map(repr, unknown))} in {lab.topology_file}",
            fix=f"pick from the topology's 'nodes' list: {', '.join(names)}",
        )


def _wait(conn: libvirt.virConnect, lab: Lab, until: str, timeout: float, names: list[str]) -> None:
    rows: dict[str, tuple[str, str]] = {name: ("starting", "") for name in names}
    roles = {n.name: n.role for n in lab.plan.nodes}

    def table() -> Table:
        grid = Table(box=None, pad_edge=False)
        for column in ("node", "role", "phase", "at"):
            grid.add_column(column)
        for name, (phase, at) in rows.items():
            grid.add_row(name, roles[name], phase, at)
        return grid

    live = Live(table(), console=out, transient=False) if out.is_terminal else None

    def update(name: str, progress: Progress, elapsed: float) -> None:
        phase = progress.phase if not progress.reached(until) else f"{progress.phase} ✓"
        rows[name] = (phase, f"{elapsed:.0f}s")
        if live is not None:
            live.update(table())
        else:
            out.print(f"  {elapsed:5.0f}s {name}: {phase}")

    if live is not None:
        live.start()
    try:
        reached = watch.wait(
            conn, lab.plan, lab.state, until=until, timeout=timeout, on_update=update, names=names
        )
    finally:
        if live is not None:
            live.stop()
    slowest = max(reached.values(), default=0.0)
    out.print(f"all {len(reached)} node(s) {until} after {slowest:.0f}s")


@click.command("down")
@topology_options
@connect_option
def down(lab: Lab, connect: str | None) -> None:
    """Remove every VM, network, volume and seed of the lab, orphans included."""
    with lab_lock(lab):
        conn = open_connection(resolve_uri(connect))
        report = launcher.down(conn, lab.plan.lab, lab.state)
        lab.state.last_verify.unlink(missing_ok=True)  # it spoke of the lab that was
        plain_repo.stop(lab)
    for change in report.changes:
        out.print(f"  {change}")
    if report.changes:
        out.print(f"lab {lab.plan.lab} is down")
    else:
        out.print(f"lab {lab.plan.lab} has nothing in libvirt: nothing to remove")


@click.command("status")
@topology_options
@connect_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(lab: Lab, connect: str | None, as_json: bool) -> None:
    """Each node's role, VM state, addresses and boot phase."""
    conn = open_connection(resolve_uri(connect))
    rows = launcher.status(conn, lab.plan, lab.state)
    if as_json:
        click.echo(json.dumps([row.as_dict() for row in rows], indent=2))
        return
    grid = Table(box=None, pad_edge=False)
    for column in ("node", "role", "state", "ips", "phase"):
        grid.add_column(column)
    for row in rows:
        phase = f"[red]failed: {row.failed}[/red]" if row.failed else row.phase
        name = row.name if row.in_topology else f"{row.name} (not in topology)"
        grid.add_row(name, row.role, row.state, " ".join(row.ips), phase)
    out.print(grid)


@click.command("console")
@topology_options
@connect_option
@click.argument("node")
@click.option("--follow/--no-follow", "follow_log", default=True, help="Keep printing new lines.")
@click.option("--lines", "-n", type=int, default=50, show_default=True)
def console(lab: Lab, connect: str | None, node: str, follow_log: bool, lines: int) -> None:
    """Print NODE's serial console log, and follow it while the VM runs."""
    _known(lab, node)
    path = lab.state.console_log(node)
    if not path.exists():
        raise StackseedError(f"no console log for {node} yet ({path})", fix="run 'lab up' first")
    conn = open_connection(resolve_uri(connect)) if follow_log else None

    def stopped() -> bool:
        if conn is None:
            return True
        dom = domains.owned(conn, lab.plan.lab).get(node)
        return dom is None or not dom.isActive()

    try:
        for line in follow(path, stop=stopped, start_lines=lines):
            click.echo(line)
    except KeyboardInterrupt:
        sys.exit(0)


@click.command("reboot")
@topology_options
@connect_option
@click.argument("node")
@click.option("--hard", is_flag=True, help="Reset at once (a power cut), not an ACPI reboot.")
def reboot(lab: Lab, connect: str | None, node: str, hard: bool) -> None:
    """Reboot NODE's VM and wait for its new boot to begin; an unfinished first boot resumes
    where it stopped. `lab up --wait` afterwards waits for it to be ready again, and for the
    cloud to count every node's services in again."""
    _known(lab, node)
    console_log = lab.state.console_log(node)
    boots_before = read_progress(console_log).boots
    with lab_lock(lab):
        dom = domains.owned(open_connection(resolve_uri(connect)), lab.plan.lab).get(node)
        if dom is None or not dom.isActive():
            raise StackseedError(
                f"node {node} is not running ({domains.state_of(dom)})",
                fix=f"'lab start {node}' starts it" if dom else "'lab up' makes and starts it",
            )
        if hard:
            dom.reset(0)
        else:
            dom.reboot(0)
    out.print(f"{node}: {'reset' if hard else 'reboot requested (ACPI)'}")
    if not console_log.exists():
        return  # nothing to read the new boot from (a test driver's domain)
    took = wait_for_new_boot(console_log, boots_before, REBOOT_TIMEOUT)
    if took is None:
        raise StackseedError(
            f"{node} did not begin a new boot within {REBOOT_TIMEOUT:.0f} s of the reboot "
            f"request (its console log {console_log} shows no new kernel)",
            fix=f"look at 'lab console {node}'; 'lab reboot {node} --hard' resets it at once",
        )
    out.print(f"{node}: new boot began after {took:.0f} s; 'lab up --wait' waits for it")


@click.command("ssh", context_settings={"ignore_unknown_options": True})
@topology_options
@click.argument("node")
@click.argument("remote", nargs=-1, type=click.UNPROCESSED)
def ssh_cmd(lab: Lab, node: str, remote: tuple[str, ...]) -> None:
    """Log in to NODE (or run a command there) with the lab key, its host key pinned."""
    ssh.exec_ssh(lab.plan, lab.state, node, remote)


@click.command("doctor")
@topology_options
@connect_option
@click.option("--images-dir", type=Target("dir"), default=None)
@click.option("--pool-dir", type=Target("dir"), default=None)
def doctor(lab: Lab, connect: str | None, images_dir: Path | None, pool_dir: Path | None) -> None:
    """Check libvirt, qemu, acceleration, disk, memory and the role images for this topology."""
    uri = resolve_uri(connect)
    checks = doctor_mod.run_checks(
        lab.plan, uri, pool_dir or default_pool_dir(uri, lab.plan.lab), images_dir
    )
    for check in checks:
        mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
        out.print(f"{mark} {check.name}: {check.detail}", soft_wrap=True)
        if not check.ok and check.fix:
            out.print(f"       fix: {check.fix}", soft_wrap=True)
    failed = [c.name for c in checks if not c.ok]
    if failed:
        raise PrerequisiteError(f"{len(failed)} check(s) failed: {', '.join(failed)}")


COMMANDS = (up, down, status, console, reboot, ssh_cmd, doctor)


def _explained(callback: Callable[..., Any]) -> Callable[..., Any]:
    """libvirt's own errors become a sentence and an exit code, like every other failure."""

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except libvirt.libvirtError as exc:
            raise StackseedError(
                f"libvirt: {exc.get_error_message()}",
                fix="'lab doctor' checks the host; re-running the command is safe",
            ) from None

    return wrapper


for _command in COMMANDS:
    _command.callback = _explained(_command.callback)  # type: ignore[arg-type]


def register(group: click.Group) -> None:
    for command in COMMANDS:
        group.add_command(command)
