"""Bad paths at the CLI edge: each is one sentence naming the path and its option, with the
README's exit code, no traceback, and nothing left behind (issue 17, item A).

Tests run as root, so permission bits stop nothing: the bad paths are /proc and /sys (which
refuse new files), a path under a regular file, a directory where a file is wanted (and the
reverse), /dev/full, and a real full filesystem (a tiny tmpfs) where mounting is allowed.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from conftest import DEFAULT, REPO
from hypothesis import example, given, settings
from hypothesis import strategies as st

from builder.cli.build import command as build_command
from builder.cli.common import invoke
from builder.cli.lab import lab
from builder.errors import EXIT_FAILED, EXIT_INVALID, EXIT_USAGE

# A bad path must never be read or written: if one were (reading /dev/full never ends), the
# child dies of this limit instead of the host running out of memory.
MEMORY_LIMIT = 3 << 30


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.fixture(autouse=True, scope="module")
def _memory_capped() -> Iterator[None]:
    """The same guard for the commands run in this process: a regression is a MemoryError."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    cap = used + MEMORY_LIMIT
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def run_cli(
    entry: str, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`lab` or `build-images` in a child process, memory-capped, with no STACKSEED_ variable."""
    code = {
        "lab": "from builder.cli.lab import main; main()",
        "build-images": "import sys; from builder.cli.build import main; sys.exit(main())",
    }[entry]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STACKSEED_")}
    environ["PYTHONPATH"] = str(REPO)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environ,
        preexec_fn=_limited,
        check=False,
    )


def run_here(
    command: click.Command, prog: str, args: list[str], env: dict[str, str]
) -> tuple[int, str]:
    """The same edge (builder.cli.common.invoke) in this process: faster, for the property test."""
    out, err = io.StringIO(), io.StringIO()
    with (
        pytest.MonkeyPatch.context() as mp,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        for name in [k for k in os.environ if k.startswith("STACKSEED_")]:
            mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        code = invoke(command, args, prog)
    return code, out.getvalue() + err.getvalue()


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def no_tool_path(root: Path) -> str:
    """A PATH with no build tool: were a bad --output not refused first, the build would stop at
    its prerequisites (exit 4), never start."""
    empty = root / "no-tools"
    empty.mkdir(exist_ok=True)
    return str(empty)


# --- every command and option that writes, with the kind of path it wants ---------------------

# (name, kind, option as the message names it, how to run it with the bad path)
Runner = Callable[[str, Path], tuple[int, str]]


def _lab(*args: str) -> Runner:
    def run(bad: str, box: Path) -> tuple[int, str]:
        filled = [a.replace("BAD", bad).replace("BOX", str(box)) for a in args]
        return run_here(lab, "lab", filled, {})

    return run


def _build(output: bool) -> Runner:
    def run(bad: str, box: Path) -> tuple[int, str]:
        env = {"PATH": no_tool_path(box), "STACKSEED_CACHE_DIR": str(box / "cache")}
        args = ["--role", "controller"]
        if output:
            args += ["--output", bad]
        else:
            env["STACKSEED_CACHE_DIR"] = bad
        return run_here(build_command, "build-images", args, env)

    return run


SEED = ("-t", str(DEFAULT))
COMMANDS: list[tuple[str, str, str, Runner]] = [
    ("lab init PATH", "file", "PATH", _lab("init", "BAD")),
    (
        "lab seed NODE -o",
        "file",
        "--output",
        _lab("seed", "controller", "-o", "BAD", *SEED, "--state-dir", "BOX/state"),
    ),
    (
        "lab seed --all -o",
        "dir",
        "--output",
        _lab("seed", "--all", "-o", "BAD", *SEED, "--state-dir", "BOX/state"),
    ),
    (
        "lab seed --state-dir",
        "dir",
        "--state-dir",
        _lab("seed", "--all", "-o", "BOX/out", *SEED, "--state-dir", "BAD"),
    ),
    ("build-images --output", "dir", "--output", _build(output=True)),
    ("build-images STACKSEED_CACHE_DIR", "dir", "STACKSEED_CACHE_DIR", _build(output=False)),
    # Refused before the archive is begun, let alone a node reached over ssh.
    ("lab logs -o", "either", "-o", _lab("logs", "-o", "BAD", *SEED, "--state-dir", "BOX/state")),
]
try:
    import libvirt  # noqa: F401 - the lab's libvirt commands exist only with it
except ImportError:
    pass
else:
    # Refused when the command line is read: no libvirt object, no state directory made.
    TEST_URI = ("-c", "test:///default")
    COMMANDS += [
        (
            f"lab {command} --state-dir",
            "dir",
            "--state-dir",
            _lab(*command.split(), *SEED, *TEST_URI, "--state-dir", "BAD"),
        )
        for command in ("up", "down", "stop", "start", "reboot controller")
    ]


def bad_paths(kind: str, box: Path, name: str) -> list[str]:
    """Paths that cannot be written as `kind` (file, dir, or either). `name` always starts with
    'ss-' and holds no '/', so no path here is an existing file of /proc or /sys, nor climbs
    out with '..'."""
    a_file, a_dir = box / "a-file", box / "a-dir"
    if kind == "either":
        return [
            f"/proc/{name}.tar.gz",
            f"/proc/{name}/x.tar.gz",
            f"/sys/{name}",
            f"{a_file}/{name}",
            "/dev/full",  # a device is neither
            f"/dev/full/{name}",
            f"{box}/no-such-dir/{name}.tar.gz",  # the archive's directory must exist
            f"{a_dir}/{name}/x.tar.gz",
        ]
    if kind == "file":
        return [
            f"/proc/{name}.iso",
            f"/proc/{name}/x.iso",
            f"/sys/{name}.iso",
            f"{a_file}/{name}.iso",  # under a regular file: NotADirectoryError
            str(a_dir),  # a directory where a file is wanted
            "/dev/full",  # a device: refused, and never read to compare
            f"/dev/full/{name}",
        ]
    return [
        f"/proc/{name}",
        f"/proc/{name}/sub",
        f"/sys/{name}",
        f"/sys/kernel/{name}",
        str(a_file),  # a file where a directory is wanted
        f"{a_file}/{name}",
        "/dev/full",
        f"/dev/full/{name}",
    ]


@contextlib.contextmanager
def sandbox() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="stackseed-paths-") as raw:
        box = Path(raw)
        (box / "a-file").write_text("not a directory\n")
        (box / "a-dir").mkdir()
        no_tool_path(box)
        yield box


def assert_refused(name: str, kind: str, option: str, run: Runner, bad: str, box: Path) -> None:
    before = tree(box)
    code, output = run(bad, box)
    assert code == EXIT_USAGE, f"{name} {bad!r}: exit {code}\n{output}"
    assert bad in output, output  # names the path...
    assert option in output, output  # ...and the option
    assert "fix:" in output and "Traceback" not in output, output
    assert tree(box) == before, f"{name} {bad!r} left {tree(box) - before}"


@pytest.mark.parametrize("name,kind,option,run", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_each_command_refuses_each_kind_of_bad_path(name, kind, option, run) -> None:
    with sandbox() as box:
        for bad in bad_paths(kind, box, "ss-x"):
            assert_refused(name, kind, option, run, bad, box)


@settings(max_examples=25, deadline=None)
@given(
    command=st.sampled_from(COMMANDS),
    pick=st.integers(min_value=0, max_value=7),
    name=st.text(alphabet="abcxyz019-_.[]/ :", min_size=1, max_size=12).map(
        lambda s: "ss-" + s.replace("/", "_")
    ),
)
@example(command=COMMANDS[0], pick=0, name="ss-:a:[/x]")
def test_any_bad_path_is_refused(command, pick: int, name: str) -> None:
    # '[', ']' and ':': a path is printed as text, never as rich markup (which crashed) nor
    # with emoji codes (':a:' became a letter A emoji).
    label, kind, option, run = command
    with sandbox() as box:
        paths = bad_paths(kind, box, name)
        assert_refused(label, kind, option, run, paths[pick % len(paths)], box)


# --- the reports, through the real entry points --------------------------------------------


@pytest.mark.parametrize("command", ["up", "doctor", "snapshots"])
@pytest.mark.parametrize("bad", ["a-file", "/dev/full", "a-file/x"])
def test_a_directory_to_read_that_is_no_directory_is_refused(command: str, bad: str) -> None:
    """--images-dir is read, never written: a missing one is 'no image' (exit 4), but one that
    cannot be a directory is bad input."""
    pytest.importorskip("libvirt")
    with sandbox() as box:
        path = bad if bad.startswith("/") else str(box / bad)
        args = [command, *SEED, "-c", "test:///default", "--state-dir", str(box / "state")]
        code, output = run_here(lab, "lab", [*args, "--images-dir", path], {})
        assert code == EXIT_USAGE, output
        assert f"--images-dir {path}" in output and "fix:" in output
        assert "Traceback" not in output and not (box / "state").exists()


@pytest.mark.parametrize(
    "args,bad,option",
    [
        (["init", "/proc/lab.yaml"], "/proc/lab.yaml", "PATH"),
        (["seed", "--all", "-o", "/sys/x"], "/sys/x", "--output"),
        (["seed", "--all", "-o", "/proc/x"], "/proc/x", "--output"),
        (["seed", "--all", "-o", "out", "--state-dir", "/proc/st"], "/proc/st", "--state-dir"),
        (["seed", "controller", "-o", "/dev/full"], "/dev/full", "--output"),
    ],
)
def test_reported_paths_are_errors_not_tracebacks(tmp_path, args, bad, option) -> None:
    state = ["--state-dir", str(tmp_path / "state")] if "--state-dir" not in args else []
    extra = [*state, "-t", str(DEFAULT)] if args[0] == "seed" else []
    result = run_cli("lab", *args, *extra, cwd=tmp_path)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert f"{option} {bad}" in result.stderr
    assert "fix:" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_bad_output_fails_before_any_build_starts(tmp_path) -> None:
    result = run_cli(
        "build-images",
        "--role",
        "controller",
        "--output",
        "/proc/images",
        cwd=tmp_path,
        env={"STACKSEED_CACHE_DIR": str(tmp_path / "cache"), "PATH": no_tool_path(tmp_path)},
    )
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "--output /proc/images: cannot write in /proc" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("bad", ["/dev/zero", "/bin/true", "/tmp/[/x].yaml", "/etc/passwd/x"])
def test_a_topology_that_is_no_text_file_is_refused(tmp_path, bad) -> None:
    result = run_cli("lab", "seed", "--all", "-o", "out", "-t", bad, cwd=tmp_path)
    assert result.returncode == EXIT_INVALID, result.stderr
    assert bad in result.stderr and "--topology" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_directory_as_topology_is_a_usage_error(tmp_path) -> None:
    result = run_cli("lab", "seed", "--all", "-o", "out", "-t", "/sys", cwd=tmp_path)
    assert result.returncode == EXIT_USAGE
    assert "'/sys' is a directory" in result.stderr and "--topology" in result.stderr


def test_read_only_commands_still_work_with_an_unwritable_state_dir(tmp_path) -> None:
    pytest.importorskip("libvirt")
    result = run_cli(
        "lab", "status", "--state-dir", "/proc/st", "-c", "test:///default", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "controller" in result.stdout


def test_init_refuses_a_missing_directory_and_writes_the_default(tmp_path) -> None:
    code, output = run_here(lab, "lab", ["init", str(tmp_path / "no" / "lab.yaml")], {})
    assert code == EXIT_USAGE and "mkdir -p" in output
    code, output = run_here(lab, "lab", ["init", str(tmp_path / "lab.yaml")], {})
    assert code == 0, output
    assert (tmp_path / "lab.yaml").read_bytes() == DEFAULT.read_bytes()
    assert tree(tmp_path) == {"lab.yaml"}


# --- a disk that fills up during a write ----------------------------------------------------


def test_a_full_disk_during_a_seed_write_leaves_no_partial_file(tmp_path, monkeypatch) -> None:
    common = ["-t", str(DEFAULT), "--state-dir", str(tmp_path / "state")]
    code, output = run_here(lab, "lab", ["seed", "--all", "-o", str(tmp_path / "all"), *common], {})
    assert code == 0, output
    target = tmp_path / "out" / "controller.iso"

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # The state is complete already, so the first write is the -o file's.
    monkeypatch.setattr("builder.fsutil.os.fsync", full)
    code, output = run_here(lab, "lab", ["seed", "controller", "-o", str(target), *common], {})
    assert code == EXIT_FAILED, output
    assert f"{target} (under --output): No space left on device" in output
    assert "free space" in output and "Traceback" not in output
    assert list(target.parent.iterdir()) == []  # neither the ISO nor its temporary file


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 200 KiB tmpfs: one seed ISO fits, the second does not."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("where", ["output", "state"])
def test_a_really_full_filesystem(tiny_fs: Path, tmp_path: Path, where: str) -> None:
    out = (tiny_fs if where == "output" else tmp_path) / "seeds"
    state = (tiny_fs if where == "state" else tmp_path) / "state"
    args = ["seed", "--all", "-o", str(out), "-t", str(DEFAULT), "--state-dir", str(state)]
    result = run_cli("lab", *args, cwd=tmp_path)
    assert result.returncode == EXIT_FAILED, result.stderr
    assert "No space left on device" in result.stderr
    assert f"(under --{'output' if where == 'output' else 'state-dir'})" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    files = [p for p in tiny_fs.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".")], files  # no temporary file left
    for iso in (p for p in files if p.suffix == ".iso"):
        assert iso.stat().st_size % 2048 == 0 and iso.stat().st_size >= 100_000  # whole ISOs


def test_a_full_disk_the_os_names_no_file_for_still_says_where_to_free_space() -> None:
    """A write() that fails (unlike an open()) carries no file name in Python's OSError."""
    from builder.pathcheck import explain, forget_all, remember

    forget_all()
    remember(Path("/srv/images"), "--output")
    said = explain(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert said.message == "No space left on device while writing"
    assert said.fix == "free space on the filesystem of --output /srv/images, and re-run"
    forget_all()
    assert "what the command writes" in (explain(OSError(errno.EDQUOT, "Quota")).fix or "")
