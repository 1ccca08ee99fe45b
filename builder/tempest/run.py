"""`lab tempest`'s engine: the workspace, the selection, the tempest commands, the live run.

The workspace is `<state dir>/tempest/` (0700): `etc/tempest.conf` (0600; it holds the admin
password, so tempest finds it by path, through TEMPEST_CONFIG_DIR/TEMPEST_CONFIG and
--config-file, never by a password on a command line), stestr's repository, tempest's log,
and the last run's stream and summary. tempest runs with umask 077 so its own files are private.

The selection is listed first (the total for the progress count, and the exact ids). Unless
told to keep going, tests run one batch of test classes at a time and the run stops after the
batch with the first failure: a class always finishes, so tempest removes what it made.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import StackseedError, UsageError
from builder.fsutil import private_dir, write_private
from builder.state import LabState
from builder.tempest.results import Results, StreamParser, TestRow, redact, short_id

DEFAULT_REGEX = r"^tempest\.api\."
# tempest's ids carry their attributes: '...test_get_flavor[id-1f12...,smoke]'
SMOKE = r"(?=.*\[[^\]]*\bsmoke\b[^\]]*\])"
_TEST_ID = re.compile(r"^[A-Za-z_][\w.]*(\[[^\]\s]*\])?$")
READ_SIZE = 65536
STDERR_TAIL = 20


def workspace(state: LabState) -> Path:
    return state.root / "tempest"


def config_path(state: LabState) -> Path:
    return workspace(state) / "etc" / "tempest.conf"


def selection(regex: str, smoke: bool) -> str:
    """One stestr regex for 'matches `regex` and is smoke-tagged' (tempest's own --smoke and
    --regex exclude each other, and stestr ORs several filters)."""
    if any(ch.isspace() for ch in regex):
        raise UsageError(
            f"the regex {regex!r} has whitespace (tempest splits its --regex on it)",
            fix=r"write \s for a space",
        )
    try:
        re.compile(regex)
    except re.error as exc:
        raise UsageError(f"--regex {regex!r} is not a regular expression ({exc})") from None
    return f"^(?=.*(?:{regex})){SMOKE}" if smoke else regex


def child_env(conf: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """tempest's environment: where its config is; no OS_* variables (a sourced openrc's
    password has no business there), unbuffered so results stream as tests finish."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k[:3] != "OS_"}
    env.update(
        TEMPEST_CONFIG_DIR=str(conf.parent),
        TEMPEST_CONFIG=conf.name,
        PYTHONUNBUFFERED="1",
    )
    return env


def list_command(tempest: Path, conf: Path, regex: str, exclude: str | None) -> list[str]:
    command = [str(tempest), "run", "--config-file", str(conf), "--list-tests", "--regex", regex]
    if exclude:
        command += ["--exclude-regex", exclude]
    return command


def run_command(
    tempest: Path, conf: Path, load_list: Path, concurrency: int, combine: bool
) -> list[str]:
    command = [
        str(tempest),
        "run",
        "--config-file",
        str(conf),
        "--subunit",
        "--load-list",
        str(load_list),
        "--concurrency",
        str(concurrency),
    ]
    return [*command, "--combine"] if combine else command


def parse_listing(text: str) -> list[str]:
    """Test ids from `tempest run --list-tests` (anything else it prints is dropped)."""
    return sorted({line.strip() for line in text.splitlines() if _TEST_ID.match(line.strip())})


def test_class(test_id: str) -> str:
    return short_id(test_id).rsplit(".", 1)[0]


def batches(ids: Iterable[str], classes_per_batch: int, keep_going: bool) -> list[list[str]]:
    """keep_going: one batch. Otherwise `classes_per_batch` whole test classes per batch (a
    class's tests share their setUpClass resources and must run in one worker)."""
    ids = sorted(ids)
    if keep_going or not ids:
        return [ids] if ids else []
    by_class: dict[str, list[str]] = {}
    for test_id in ids:
        by_class.setdefault(test_class(test_id), []).append(test_id)
    groups = list(by_class.values())
    return [
        [t for group in groups[i : i + classes_per_batch] for t in group]
        for i in range(0, len(groups), classes_per_batch)
    ]


def prepare_workspace(state: LabState, tempest: Path, conf_text: str) -> Path:
    """The workspace, its tempest.conf (0600) and stestr's config and repository."""
    root = private_dir(workspace(state))
    for sub in ("etc", "logs", "lock"):
        private_dir(root / sub)
    conf = config_path(state)
    write_private(conf, conf_text.encode())
    package = _tempest_package(tempest)
    write_private(
        root / ".stestr.conf",
        f"[DEFAULT]\ntest_path={package / 'test_discover'}\ntop_dir={package.parent}\n"
        "group_regex=([^\\.]*\\.)*\n".encode(),
    )
    if not (root / ".stestr").is_dir():
        _quiet([str(tempest.parent / "stestr"), "init"], root, conf)
    return conf


def _tempest_package(tempest: Path) -> Path:
    found = sorted((tempest.parent.parent / "lib").glob("python*/site-packages/tempest"))
    if not found:
        raise StackseedError(
            f"no tempest package beside {tempest}", fix="remove that environment and re-run"
        )
    return found[-1]


def _quiet(command: list[str], cwd: Path, conf: Path) -> str:
    result = subprocess.run(
        command,
        cwd=cwd,
        env=child_env(conf),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        umask=0o077,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-STDERR_TAIL:])
        raise StackseedError(
            f"'{' '.join(command[:2])} …' failed (exit {result.returncode}):\n{tail}",
            fix=f"see the message above; tempest's own log is in {cwd / 'logs' / 'tempest.log'}",
        )
    return result.stdout


def list_tests(tempest: Path, conf: Path, regex: str, exclude: str | None) -> list[str]:
    root = conf.parent.parent
    return parse_listing(_quiet(list_command(tempest, conf, regex, exclude), root, conf))


@dataclass
class Outcome:
    results: Results
    seconds: float
    stopped_early: bool = False
    interrupted: bool = False  # Ctrl-C: the results so far are still worth showing
    errors: list[str] = field(default_factory=list)  # tempest itself went wrong

    @property
    def ok(self) -> bool:
        counts = self.results.counts()
        return (
            not self.errors
            and not self.interrupted
            and counts["fail"] == 0
            and not self.results.not_run()
            and counts["pass"] + counts["skip"] > 0
        )


Progress = Callable[[TestRow, int, int], None]


def run_tests(
    tempest: Path,
    conf: Path,
    ids: list[str],
    *,
    concurrency: int = 1,
    keep_going: bool = False,
    secrets: tuple[str, ...] = (),
    progress: Progress = lambda row, done, total: None,
) -> Outcome:
    root = conf.parent.parent
    results = Results(expected=list(ids), secrets=secrets)
    stream = root / "last-run.subunit"
    write_private(stream, b"")
    started = time.monotonic()
    outcome = Outcome(results, 0.0)
    plan = batches(ids, concurrency, keep_going)
    for index, batch in enumerate(plan):
        load_list = root / "selection.txt"
        write_private(load_list, "".join(f"{t}\n" for t in batch).encode())
        command = run_command(tempest, conf, load_list, concurrency, combine=index > 0)
        try:
            error = _run_batch(command, root, conf, stream, results, progress)
        except KeyboardInterrupt:  # tempest has cleaned up; what ran so far is the report
            outcome.interrupted = True
            break
        if error:
            outcome.errors.append(error)
        if not keep_going and (error or results.counts()["fail"]) and index < len(plan) - 1:
            outcome.stopped_early = True
            break
    outcome.seconds = time.monotonic() - started
    return outcome


def _run_batch(
    command: list[str],
    root: Path,
    conf: Path,
    stream: Path,
    results: Results,
    progress: Progress,
) -> str | None:
    """Runs one tempest process, feeding its subunit stdout to `results` as it arrives.
    Returns what went wrong with tempest itself (not with a test), or None."""
    parser = StreamParser()
    stderr_log = root / "logs" / "run-stderr.log"
    before = len(results.rows)
    failed_before = results.counts()["fail"]
    offset = stderr_log.stat().st_size if stderr_log.exists() else 0
    fd = os.open(stderr_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "ab") as errors, stream.open("ab") as saved:
        child = subprocess.Popen(
            command,
            cwd=root,
            env=child_env(conf),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            umask=0o077,
        )
        assert child.stdout is not None
        try:
            while chunk := os.read(child.stdout.fileno(), READ_SIZE):
                saved.write(chunk)
                for event in parser.feed(chunk):
                    for row in results.add(event):
                        progress(row, len(results.rows), len(results.expected))
            returncode = child.wait()
        except BaseException:  # Ctrl-C: tempest got it too; let it clean up, then stop
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()
            raise
    reported = len(results.rows) - before
    failed = results.counts()["fail"] > failed_before
    if reported and (returncode == 0 or failed):  # stestr's exit code follows the tests
        return None
    with stderr_log.open("rb") as errors:
        errors.seek(offset)
        tail = errors.read().decode(errors="replace").strip().splitlines()[-STDERR_TAIL:]
    said = redact("\n".join(tail), results.secrets) or "(nothing on stderr)"
    return f"tempest exited {returncode} after reporting {reported} tests:\n{said}"
