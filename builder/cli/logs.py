"""`lab logs`: every node's logs in one redacted archive for a bug report, or one service's log
followed live (`--follow`). Over the lab's own ssh (vms/ssh.py): its key, the pinned host keys."""

from __future__ import annotations

import contextlib
import datetime
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import click
from rich.markup import escape

from builder.cli.common import Lab, err, out, timeout_option, topology_options
from builder.errors import StackseedError, UsageError
from builder.logs import (
    NO_SUCH_SERVICE,
    Archive,
    Collected,
    Redactor,
    collect_command,
    follow_command,
    read_secrets,
)
from builder.pathcheck import check_target
from vms import ssh

SSH_FAILED = 255  # ssh's own exit status: it could not connect (or lost the connection)
MIB = 1 << 20


@click.command("logs")
@topology_options
@click.argument("nodes", nargs=-1, metavar="[NODE]...")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="The archive (or a directory for it) "
    "[default: ./stackseed-logs-LAB-YYYYmmddTHHMMSSZ.tar.gz].",
)
@click.option(
    "--follow",
    "-f",
    "service",
    metavar="SERVICE",
    default=None,
    help="Tail SERVICE on the one NODE named (/var/log/*/SERVICE.log, else its journal) "
    "until Ctrl-C.",
)
@click.option(
    "--lines",
    "-n",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="With --follow: lines of history first.",
)
@timeout_option(900.0, "Seconds to collect one node before giving up on it.")
def logs(
    lab: Lab,
    nodes: tuple[str, ...],
    output: Path | None,
    service: str | None,
    lines: int,
    timeout: float,
) -> None:
    """Collect every node's logs (first boot, cloud-init, OpenStack services, journal, console)
    into one archive with the lab's secrets replaced by ***, or --follow one service."""
    _known(lab, nodes)
    if service is not None:
        if len(nodes) != 1 or output is not None:
            raise UsageError(
                "--follow takes exactly one NODE and no -o",
                fix="e.g. 'lab logs compute1 --follow nova-compute'",
            )
        remote = follow_command(service, lines)
        _follow(lab, nodes[0], service, remote, _redactor(lab, nodes[0]))
        return
    now = datetime.datetime.now(datetime.UTC)
    top = f"stackseed-logs-{lab.plan.lab}-{now:%Y%m%dT%H%M%SZ}"
    target = _target(output, top)
    names = list(nodes) or [n.name for n in lab.plan.nodes]
    redactor = _redactor(lab, names[0])
    report = [
        f"stackseed lab logs: lab {lab.plan.lab}, collected {now:%Y-%m-%d %H:%M:%S} UTC",
        f"Redacted: every value of secrets.yaml ({redactor.count}) is *** in every file and name;",
        "compressed rotated logs are stored decompressed, so they were redacted too.",
        "<node>/var/log/: the node's files; <node>/commands/: journalctl -b, journalctl",
        "--list-boots, cloud-init status --long, failed units; <node>/console.log: the serial",
        "console as the host kept it; NOT-COLLECTED.txt, SKIPPED.txt: what is missing and why.",
        "",
    ]
    missed: list[str] = []
    try:
        with Archive(target, top, redactor) as archive:
            archive.add("lab.yaml", lab.topology_file.read_bytes())
            for node in names:
                line, ok = _node(lab, node, archive, timeout)
                report.append(line)
                if not ok:
                    missed.append(node)
            archive.add("MANIFEST.txt", "\n".join(report).encode() + b"\n")
    except OSError as exc:
        raise StackseedError(
            f"cannot write {target}: {exc.strerror or exc}",
            fix="pick a place you can write with -o (nothing was left behind)",
        ) from None
    size = target.stat().st_size / MIB
    out.print(f"wrote {escape(str(target))} ({size:.1f} MiB, 0600)", soft_wrap=True)
    if missed:
        err.print(
            f"[yellow]warning:[/yellow] not collected from {', '.join(missed)}: the archive "
            "holds their console logs and a NOT-COLLECTED.txt each saying why",
            soft_wrap=True,
        )


def _redactor(lab: Lab, node: str) -> Redactor:
    # No lab key or no ssh client: said before the secrets are read or anything is made.
    ssh.command(lab.plan, lab.state, node, ("true",))
    return Redactor(read_secrets(lab.state.secrets_file).values())


def _known(lab: Lab, nodes: tuple[str, ...]) -> None:
    names = [n.name for n in lab.plan.nodes]
    unknown = [n for n in nodes if n not in names]
    if unknown:
        raise StackseedError(
            f"no node {', '.join(map(repr, unknown))} in {lab.topology_file}",
            fix=f"pick from the topology's 'nodes' list: {', '.join(names)}",
        )


def _target(output: Path | None, top: str) -> Path:
    """Where the archive goes, refused (naming -o) before anything is collected."""
    if output is None:
        check_target(Path.cwd(), "-o", "dir")
        return Path.cwd() / f"{top}.tar.gz"
    check_target(output, "-o", None, parent_must_exist=True)
    return output / f"{top}.tar.gz" if output.is_dir() else output


def _node(lab: Lab, node: str, archive: Archive, timeout: float) -> tuple[str, bool]:
    """Collect one node into the archive; its MANIFEST line and whether ssh delivered."""
    start = time.monotonic()
    with out.status(f"{node}: collecting…"):
        got, problem = _collect(lab, node, archive, timeout)
        console = lab.state.console_log(node)
        if console.is_file():
            got.bytes += archive.add(f"{node}/console.log", console.read_bytes())
            got.files += 1
    seconds = time.monotonic() - start
    if got.skipped:
        archive.add(f"{node}/SKIPPED.txt", "\n".join(got.skipped).encode() + b"\n")
    summary = f"{node}: {got.files} files, {got.bytes / MIB:.1f} MiB, {seconds:.0f} s"
    if problem is None:
        out.print(summary)
        return summary, True
    why = archive.redactor.text(problem)
    archive.add(f"{node}/NOT-COLLECTED.txt", f"{why}\n".encode())
    err.print(f"[yellow]warning:[/yellow] {escape(node)}: {escape(why)}", soft_wrap=True)
    out.print(summary)
    return f"{summary}; {why}", False


def _collect(lab: Lab, node: str, archive: Archive, timeout: float) -> tuple[Collected, str | None]:
    """Stream NODE's logs into the archive; what went wrong, if anything."""
    timed_out = threading.Event()
    with tempfile.TemporaryFile() as errors:
        proc = ssh.popen(lab.plan, lab.state, node, (collect_command(),), stderr=errors)
        assert proc.stdout is not None

        def give_up() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, give_up)
        timer.start()
        try:
            got = archive.add_tar(f"{node}/", proc.stdout)
            _drain(proc.stdout)  # the tar's padding: ssh must not die on a closed pipe
            rc = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        errors.seek(0)
        said = errors.read().decode(errors="replace").strip()
    if rc == 0 and got.error is None:
        return got, None
    last = said.splitlines()[-1] if said else ""
    if timed_out.is_set():
        problem = f"gave up after {timeout:.0f} s (--timeout)"
    elif rc == SSH_FAILED:
        problem = f"not reachable over ssh ({last or 'no reason given'})"
    elif rc != 0:
        problem = f"collection failed (exit {rc}{': ' + last if last else ''})"
    else:
        problem = f"the node's tar: {got.error}"
    if got.error and got.files:
        problem += "; the files before the break are in the archive"
    return got, problem


def _drain(stream: IO[bytes]) -> None:
    while stream.read(1 << 16):
        pass


def _follow(lab: Lab, node: str, service: str, remote: str, redactor: Redactor) -> None:
    """Print the remote tail line by line, redacted, until it ends or Ctrl-C (exit 0)."""
    rc: int | None = None
    with tempfile.TemporaryFile() as errors:
        # A remote terminal: when ssh ends (Ctrl-C), tail or journalctl ends with it.
        proc = ssh.popen(lab.plan, lab.state, node, (remote,), tty=True, stderr=errors)
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                click.echo(redactor.bytes(raw).decode(errors="replace").rstrip("\r\n"))
            rc = proc.wait()
        except KeyboardInterrupt:
            pass
        finally:
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(KeyboardInterrupt):
                    proc.wait()
            proc.stdout.close()
        errors.seek(0)
        said = redactor.text(errors.read().decode(errors="replace").strip())
    last = said.splitlines()[-1] if said else "no reason given"
    if rc is None or rc == 0:
        return
    if rc == NO_SUCH_SERVICE:
        raise StackseedError(
            f"{node} has no log file and no unit named {service!r}",
            fix=f"list them: lab ssh {node} sudo ls /var/log /var/log/nova /var/log/neutron",
        )
    if rc == SSH_FAILED:
        raise StackseedError(
            f"{node} is not reachable over ssh ({last})",
            fix=f"'lab status' shows whether it runs, 'lab console {node}' what it says",
        )
    raise StackseedError(f"following {service} on {node} stopped (exit {rc}: {last})")


def register(group: click.Group) -> None:
    group.add_command(logs)
