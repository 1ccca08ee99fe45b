"""`lab tempest`: tempest against the lab, configured from the plan and the running cloud."""

from __future__ import annotations

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
    locked,
    out,
    topology_options,
)
from builder.errors import StackseedError
from builder.fsutil import write_private
from builder.tempest.conf import BUILD_TIMEOUT, build_config, render
from builder.tempest.discover import admin_credentials, discover
from builder.tempest.install import TEMPEST_VERSION, ensure_tempest, tempest_root
from builder.tempest.results import TestRow, short_id, summary_line, to_json
from builder.tempest.run import (
    DEFAULT_REGEX,
    Outcome,
    list_tests,
    prepare_workspace,
    run_tests,
    selection,
    workspace,
)
from builder.verify import connect

MARK = {
    "pass": "[green]pass[/green]",
    "skip": "[yellow]skip[/yellow]",
    "fail": "[bold red]FAIL[/bold red]",
}


def table(outcome: Outcome) -> Table:
    """Every failure and skip with its reason; the passes as one row."""
    result = Table(title="lab tempest", show_lines=False)
    result.add_column("test", overflow="fold")
    result.add_column("result")
    result.add_column("seconds", justify="right")
    result.add_column("reason", overflow="fold")
    passed = 0
    for row in outcome.results.ordered():
        if row.status == "pass":
            passed += 1
            continue
        result.add_row(
            escape(short_id(row.test_id)),
            MARK[row.status],
            f"{row.seconds:.1f}",
            escape(row.reason),
        )
    if passed:
        result.add_row(f"{passed} test{'' if passed == 1 else 's'}", MARK["pass"], "", "")
    return result


def show_progress(row: TestRow, done: int, total: int) -> None:
    why = f": {escape(row.reason)}" if row.status != "pass" and row.reason else ""
    name = escape(short_id(row.test_id))
    err.print(
        f"\\[{done}/{total}] {MARK[row.status]} {name} ({row.seconds:.0f}s){why}",
        soft_wrap=True,
        highlight=False,
    )


@click.command("tempest")
@topology_options
@click.option(
    "--regex",
    default=DEFAULT_REGEX,
    show_default=True,
    help="Which tests: a regex on tempest's test ids.",
)
@click.option(
    "--smoke/--all",
    default=True,
    show_default=True,
    help="Only the smoke-tagged tests the regex selects, or all of them.",
)
@click.option("--exclude-regex", default=None, help="Leave out the tests this regex matches.")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Test workers (the lab runs under TCG: more than 2 mostly makes tests time out).",
)
@click.option(
    "--keep-going",
    is_flag=True,
    help="Run every selected test. By default the run stops once the test classes running "
    "when the first test failed have finished (so tempest still removes what they made).",
)
@json_option("Print the results as JSON.")
@cloud_config_option
@click.option(
    "--timeout",
    type=click.IntRange(min=60),
    default=BUILD_TIMEOUT,
    show_default=True,
    help="tempest's build timeouts, in seconds (server, volume, image, network).",
)
@click.option("--list", "list_only", is_flag=True, help="Write tempest.conf, list the tests, stop.")
@click.option(
    "--install-only",
    is_flag=True,
    help="Install tempest into the cache and stop (needs PyPI; no lab).",
)
def tempest_command(
    lab: Lab,
    regex: str,
    smoke: bool,
    exclude_regex: str | None,
    concurrency: int,
    keep_going: bool,
    as_json: bool,
    cloud_config: Path | None,
    timeout: int,
    list_only: bool,
    install_only: bool,
) -> None:
    """Run tempest (default: the smoke-tagged API tests) against the lab.

    tempest is installed once into a virtual environment under the cache; tempest.conf is
    written (0600) into the lab's state directory from the topology and what the cloud reports:
    the test image, flavors and external network day zero made, the services in the catalog,
    the API extensions and microversions. Exit 0 only when no test failed."""
    pattern = selection(regex, smoke)
    if exclude_regex:
        selection(exclude_regex, False)  # the same checks: no whitespace, a valid regex
    with locked(f"the tempest {TEMPEST_VERSION} cache", (tempest_root(), "STACKSEED_CACHE_DIR")):
        tempest = ensure_tempest(say=lambda text: err.print(f"[dim]{escape(text)}[/dim]"))
    if install_only:
        out.print(f"tempest {TEMPEST_VERSION}: {tempest}", soft_wrap=True)
        return
    # Read before anything is written: a lab that is not up leaves no workspace behind.
    conf_text, password = configure(lab, cloud_config, timeout)
    # Two runs would share the workspace (config, stestr's repository): one at a time per lab.
    with locked(f"lab {lab.plan.lab}'s tempest workspace", (workspace(lab.state), "--state-dir")):
        conf = prepare_workspace(lab.state, tempest, conf_text)
        ids = list_tests(tempest, conf, pattern, exclude_regex)
        if not ids:
            raise StackseedError(
                f"no tempest test matches {pattern!r}",
                fix="check --regex (tempest's test ids start with 'tempest.'); "
                f"the config is {conf}",
            )
        if list_only:
            for test_id in ids:
                out.print(escape(test_id), soft_wrap=True)
            return
        err.print(
            escape(f"tempest {TEMPEST_VERSION}: {len(ids)} tests, {concurrency} worker(s); {conf}"),
            soft_wrap=True,
        )
        outcome = run_tests(
            tempest,
            conf,
            ids,
            concurrency=concurrency,
            keep_going=keep_going,
            secrets=(password,),
            progress=show_progress,
        )
        extra = {"errors": outcome.errors, "stopped_early": outcome.stopped_early}
        report = to_json(outcome.results, ok=outcome.ok, seconds=outcome.seconds, extra=extra)
        saved = workspace(lab.state) / "last-run.json"
        write_private(saved, report.encode())

    def show() -> None:
        out.print(table(outcome))
        out.print(f"{summary_line(outcome.results)} in {outcome.seconds:.0f}s")
        for line in notes(outcome, saved):
            err.print(line, soft_wrap=True)

    if outcome.interrupted:  # the partial report, then the exit status of an interrupt
        finish(as_json, report, show, ok=True)
        raise SystemExit(130)
    finish(as_json, report, show, ok=outcome.ok)


def configure(lab: Lab, cloud_config: Path | None, timeout: int) -> tuple[str, str]:
    """Reads the cloud: (tempest.conf's text, the admin password, to keep out of what is
    shown)."""
    clouds_yaml = cloud_config or lab.state.clouds_yaml
    conn, password = connect(clouds_yaml, lab.plan.lab)
    try:
        found = discover(conn, lab.plan)
        admin = admin_credentials(conn, password)
    except StackseedError:
        raise
    except Exception as exc:  # keystone or a service not answering: the lab is not up
        raise StackseedError(
            f"could not read the lab's cloud ({type(exc).__name__}: {exc})",
            fix="check the lab with 'lab status' and 'lab verify'",
        ) from None
    finally:
        conn.close()
    conf = build_config(lab.plan, found, admin, workspace(lab.state), timeout=timeout)
    return render(conf), password


def notes(outcome: Outcome, saved: Path) -> list[str]:
    lines = [f"[bold red]tempest:[/bold red] {escape(error)}" for error in outcome.errors]
    left = outcome.results.not_run()
    if outcome.interrupted:
        lines.append(
            f"interrupted: {len(left)} tests not run; re-run the same command to run them all"
        )
    elif outcome.stopped_early:
        lines.append(
            f"stopped after the first failure: {len(left)} tests not run "
            "(--keep-going runs them all)"
        )
    elif left:
        never = escape(", ".join(short_id(t) for t in left[:5]))
        lines.append(f"{len(left)} tests never reported a result: {never}")
    if outcome.results.counts()["fail"] or outcome.errors:
        log = saved.parent / "logs" / "tempest.log"
        lines.append(escape(f"tracebacks: {saved}; tempest's log: {log}"))
    return lines


def register(group: click.Group) -> None:
    group.add_command(tempest_command)
