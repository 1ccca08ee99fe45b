"""What every command shares: the topology/state options, and one error-to-exit-code edge."""

from __future__ import annotations

import functools
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from builder import lock
from builder.errors import EXIT_FAILED, StackseedError
from builder.loader import load
from builder.pathcheck import Kind, check_target, ensure_dir, explain, forget_all, remember
from builder.paths import DEFAULT_TOPOLOGY
from builder.plan import Plan, make_plan
from builder.state import LabState

# No emoji codes: a path like /tmp/x:a:.iso must print as itself (markup is escaped per print).
err = Console(stderr=True, highlight=False, emoji=False)
out = Console(highlight=False, emoji=False)

F = TypeVar("F", bound=Callable[..., Any])

# The command line being run, as the user typed it: the note a lock holder leaves for others.
_command_line: ContextVar[str | None] = ContextVar("command_line", default=None)


def step(message: str) -> None:
    """One indented line of a long command's progress (markup in it is printed as is)."""
    out.print(f"  {escape(message)}", soft_wrap=True)


def command_line() -> str:
    recorded = _command_line.get()
    if recorded is not None:
        return recorded
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


class Target(click.Path):
    """A path option the command may write: checked when parsed (see builder.pathcheck), and
    remembered so that a later OSError under it names the option."""

    def __init__(self, kind: Kind | None, *, probe: bool = False, parent_must_exist: bool = False):
        super().__init__(path_type=Path)
        self.kind = kind
        self.probe = probe
        self.parent_must_exist = parent_must_exist

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        option = option_name(param)
        check_target(
            path,
            option,
            self.kind,
            probe=self.probe,
            parent_must_exist=self.parent_must_exist,
        )
        remember(path, option)
        return path


def option_name(param: click.Parameter | None) -> str:
    if isinstance(param, click.Option):
        return max(param.opts, key=len)
    return param.human_readable_name if param is not None else "the path"


def _waiting(message: str) -> None:
    err.print(f"[dim]{escape(message)}[/dim]", soft_wrap=True)


@contextmanager
def locked(what: str, *dirs: tuple[Path, str], private: bool = True) -> Iterator[None]:
    """Make (or refuse, naming the option) each directory, then hold its lock (builder/lock.py)
    for a command that changes what lives there."""
    for directory, option in dirs:
        # Every directory is checked before any is made: a refusal leaves nothing behind.
        check_target(directory, option, "dir")
        remember(directory, option)
    with ExitStack() as stack:
        for directory, option in dirs:
            ensure_dir(directory, option, private=private)
            stack.enter_context(lock.holding(directory, what, command_line(), notify=_waiting))
        yield


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
        type=Target("dir"),
        envvar="STACKSEED_STATE_DIR",
        default=None,
        help="Where the lab's secrets, keys and seeds live [default: XDG state dir].",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, topology: Path | None, state_dir: Path | None, **kwargs: Any) -> Any:
        return func(*args, lab=open_lab(topology, state_dir), **kwargs)

    return wrapper  # type: ignore[return-value]


def json_option(help: str) -> Callable[[F], F]:
    """--json on a command; the command receives `as_json: bool`."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def cloud_config_option(func: F) -> F:
    """--cloud-config on a command that talks to the lab's cloud; it receives `cloud_config`."""
    return click.option(
        "--cloud-config",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="clouds.yaml to use [default: the lab's, written by 'lab up'].",
    )(func)


def timeout_option(default: float, help: str) -> Callable[[F], F]:
    """--timeout in seconds (at least 1) on a command; it receives `timeout: float`."""
    return click.option(
        "--timeout",
        type=click.FloatRange(min=1),
        default=default,
        show_default=True,
        help=help,
    )


def finish(as_json: bool, json_text: str, show: Callable[[], None], ok: bool) -> None:
    """The end of a command that judges the lab: its JSON on stdout, or `show()` the human
    report; then exit EXIT_FAILED unless ok (with --json too)."""
    if as_json:
        click.echo(json_text)
    else:
        show()
    if not ok:
        raise SystemExit(EXIT_FAILED)


def open_lab(topology: Path | None, state_dir: Path | None) -> Lab:
    if topology is None:
        topology = Path("lab.yaml")
        if not topology.exists():
            default = escape(str(DEFAULT_TOPOLOGY))
            err.print(f"[dim]no ./lab.yaml; using the default topology {default}[/dim]")
            topology = DEFAULT_TOPOLOGY
    topo = load(topology)
    try:
        plan = make_plan(topo)
    except ValueError as exc:
        raise StackseedError(f"{topology}: {exc}") from None
    return Lab(topology, plan, LabState.for_lab(topo.lab.name, state_dir))


@contextmanager
def lab_lock(lab: Lab) -> Iterator[None]:
    """Held by every command that changes the lab (up, down, reboot, seed); read-only ones
    (status, console, ssh, verify, doctor) never wait for it."""
    with locked(f"lab {lab.plan.lab}", (lab.state.root, "--state-dir")):
        yield


def _report(exc: StackseedError) -> int:
    # Paths and libvirt messages may hold '[': printed as text, never as rich markup.
    err.print(f"[bold red]error:[/bold red] {escape(exc.message)}", soft_wrap=True)
    if exc.fix:
        err.print(f"[bold]fix:[/bold] {escape(exc.fix)}", soft_wrap=True)
    if exc.log:
        err.print(f"[bold]log:[/bold] {escape(exc.log)}", soft_wrap=True)
    return exc.exit_code


def invoke(command: click.Command, args: list[str] | None = None, prog: str | None = None) -> int:
    """Run a click command; StackseedError and OSError become a sentence and an exit code."""
    argv = sys.argv[1:] if args is None else list(args)
    _command_line.set(shlex.join([prog or Path(sys.argv[0]).name, *argv]))
    forget_all()
    try:
        command.main(args=args, prog_name=prog, standalone_mode=False)
    except StackseedError as exc:
        return _report(exc)
    except OSError as exc:
        # What no early check foresaw (a disk filling up, a directory removed meanwhile).
        return _report(explain(exc))
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # click's own wrapping of Ctrl-C
            err.print("interrupted; re-run the same command to converge")
            return 130
        err.print("aborted")
        return EXIT_FAILED
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted; re-run the same command to converge")
        return 130
    return 0


def run(command: click.Command, prog: str | None = None) -> None:
    sys.exit(invoke(command, prog=prog))
