"""stackseed-privsep against a real oslo.privsep: a context's daemon forked from the server's
import, the helper's own start when there is no server, and what the server refuses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO

SCRIPT = REPO / "cloudinit/firstboot/stackseed-privsep"
CALL = REPO / "tests/support/privsep_call.py"
PACKAGE = "tests.support.privsep_demo"
# A context in a plain module (os-vif's shape) and a package this machine does not have.
PLUGIN = "tests.support.privsep_plugin"
ABSENT = "tests.support.privsep_absent"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a privsep daemon starts as root")


class Served:
    def __init__(
        self, proc: subprocess.Popen[str], sock: Path, confs: list[Path], log: Path
    ) -> None:
        self.proc, self.sock, self.confs, self.log = proc, sock, confs, log
        self.conf = confs[0]

    def helper(self) -> str:
        """helper_command as lib.sh writes it, less sudo (the test runs as root)."""
        files = " ".join(f"--config-file {conf}" for conf in self.confs)
        return f"{sys.executable} {SCRIPT} spawn --socket {self.sock} {files}"

    def said(self) -> str:
        return self.log.read_text()

    def ready(self) -> None:
        deadline = time.monotonic() + 60
        while "modules imported" not in self.said():
            assert self.proc.poll() is None, self.said()
            assert time.monotonic() < deadline, self.said()
            time.sleep(0.1)


def serve(tmp_path: Path, packages: list[str], conf_names: list[str]) -> Iterator[Served]:
    confs = [tmp_path / name for name in conf_names]
    for conf in confs:
        conf.write_text("")
    options = [arg for name in packages for arg in ("--package", name)]
    options += [arg for conf in confs for arg in ("--config-file", str(conf))]
    sock, log = tmp_path / "run/privsep-demo.sock", tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "serve", "--socket", str(sock), *options],
            env=ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    server = Served(proc, sock, confs, log)
    try:
        server.ready()
        yield server
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """neutron's shape: one package, one config file."""
    yield from serve(tmp_path, [PACKAGE], ["demo.conf"])


@pytest.fixture
def served_two(tmp_path: Path) -> Iterator[Served]:
    """nova-compute's shape: nova.conf then nova-compute.conf; nova's package, os-vif's module
    and a plugin the node lacks."""
    yield from serve(tmp_path, [PACKAGE, PLUGIN, ABSENT], ["demo.conf", "demo-compute.conf"])


def call(helper: str, times: int = 1, which: str = "demo") -> tuple[list[dict[str, int]], str]:
    done = subprocess.run(
        [sys.executable, str(CALL), helper, str(times), which],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def ask(sock: Path, argv: object) -> int:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(60)
        conn.connect(str(sock))
        conn.sendall(json.dumps({"argv": argv}).encode() + b"\n")
        return json.loads(conn.makefile("rb").readline())["status"]


def test_the_daemon_is_forked_from_the_servers_import(served: Served) -> None:
    answers, _ = call(served.helper(), times=2)
    first, second = answers
    assert first["uid"] == 0
    # The context's package was imported by the server, not by a helper of its own.
    assert first["imported_by"] == served.proc.pid
    assert first["pid"] != served.proc.pid
    assert second["pid"] == first["pid"]  # one daemon serves the caller's calls
    assert "refused" not in served.said()
    # A subpackage that cannot be imported here is named and skipped, not the server's end.
    assert f"not imported (their helpers import them): {PACKAGE}.hardware (RuntimeError)" in (
        served.said()
    )
    # The socket is root's alone: whoever reaches it gets a root process forked.
    assert served.sock.stat().st_mode & 0o777 == 0o600


def test_two_config_files_and_a_module_context(served_two: Served) -> None:
    # Both contexts' daemons come from the server's import, the plain module's too.
    for which in ("demo", "plugin"):
        (answer,), _ = call(served_two.helper(), which=which)
        assert answer["uid"] == 0 and answer["imported_by"] == served_two.proc.pid, which
    assert f", {ABSENT} (ModuleNotFoundError)\n" in served_two.said()
    # The config files it serves, all of them, in their order; nothing else.
    good = ["--privsep_context", f"{PLUGIN}.plug", "--privsep_sock_path", "/tmp/tmpx/privsep.sock"]
    first, second = (["--config-file", str(conf)] for conf in served_two.confs)
    for why, argv in {
        "the first alone": [*first, *good],
        "the second alone": [*second, *good],
        "swapped": [*second, *first, *good],
        "one twice": [*first, *first, *good],
        "one more": [*first, *second, *second, *good],
    }.items():
        assert ask(served_two.sock, argv) == 2, why
    # Swapped and twice have the shape and are refused for their files; the rest for the shape.
    assert served_two.said().count("refused: config files other than") == 2
    assert served_two.said().count("refused: expected") == 3


def test_a_daemon_outlives_the_server_that_forked_it(served: Served, tmp_path: Path) -> None:
    # Two calls with the server stopped between them, in one caller: the daemon keeps serving.
    # (A restarted server must not take the agents' daemons with it; the unit says
    # KillMode=process for systemd's part.)
    helper = served.helper()
    script = (
        "import json, os, signal, sys\n"
        "from oslo_config import cfg\n"
        "from tests.support import privsep_demo\n"
        "from tests.support.privsep_demo import calls\n"
        "cfg.CONF([], project='privsep-demo')\n"
        f"cfg.CONF.set_override('helper_command', {helper!r}, group='privsep_demo')\n"
        "first = calls.identity()\n"
        "fd_dir = f'/proc/{first[1]}/fd'\n"
        "fds = [os.readlink(f'{fd_dir}/{fd}') for fd in os.listdir(fd_dir)]\n"
        f"os.kill({served.proc.pid}, signal.SIGKILL)\n"
        "second = calls.identity()\n"
        "print(json.dumps([first, second, sorted(fds)]))\n"
        "privsep_demo.default.stop()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    first, second, fds = json.loads(done.stdout)
    assert first[1] == second[1]
    # Its channel to the caller is its one socket: nothing of the server's requests leaked in.
    assert sum(fd.startswith("socket:") for fd in fds) == 1, fds
    assert served.proc.wait(timeout=10) != 0


def test_without_a_server_the_helper_starts_as_before(tmp_path: Path) -> None:
    conf = tmp_path / "demo.conf"
    conf.write_text("")
    helper = f"{sys.executable} {SCRIPT} spawn --socket {tmp_path}/none.sock --config-file {conf}"
    (answer,), said = call(helper)
    assert answer["uid"] == 0
    # privsep-helper imported the package itself, in the process that forked the daemon.
    assert answer["imported_by"] != answer["pid"]
    assert "no answer from" in said and "running privsep-helper instead" in said


def test_the_server_refuses_what_the_sudoers_rule_would(served: Served) -> None:
    sock_path = "/tmp/tmpabc/privsep.sock"
    good = ["--privsep_context", f"{PACKAGE}.default", "--privsep_sock_path", sock_path]
    conf = ["--config-file", str(served.conf)]
    refused = {
        "another config file": ["--config-file", "/tmp/x.conf", *good],
        "two config files": [*conf, *conf, *good],
        "a context of another package": [*conf, *good[:1], "os_brick.privileged.x", *good[2:]],
        "a package's prefix alone": [*conf, *good[:1], f"{PACKAGE}x.default", *good[2:]],
        "another order": [*good, *conf],
        "an extra option": [*conf, *good, "--log-config-append", "/tmp/x"],
        "a bare word": [*conf, *good, "x"],
        "not a list": "--config-file",
    }
    for why, argv in refused.items():
        assert ask(served.sock, argv) == 2, why
    assert served.said().count("refused:") == len(refused)
    assert served.proc.poll() is None  # refusing is no reason to stop serving


def test_a_refused_fork_falls_back_to_the_helper(served: Served, tmp_path: Path) -> None:
    # The server serves another config file than the caller names: it refuses, and the
    # helper's own start still gives the caller its daemon.
    other = tmp_path / "other.conf"
    other.write_text("")
    helper = f"{sys.executable} {SCRIPT} spawn --socket {served.sock} --config-file {other}"
    (answer,), said = call(helper)
    assert answer["uid"] == 0 and answer["imported_by"] != served.proc.pid
    assert "config files other than" in served.said()
    assert "running privsep-helper instead" in said


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["serve", "--package", PACKAGE],
        ["serve", "--socket", "/tmp/x.sock", "--package", PACKAGE],
        ["serve", "--socket", "/tmp/x.sock", "--config-file", "/tmp/c"],
        ["spawn", "--config-file", "/tmp/c"],
        ["serve", "--socket"],
    ],
)
def test_bad_usage_is_refused_without_a_traceback(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *argv], env=ENV, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.startswith("stackseed-privsep: ") and "Traceback" not in done.stderr
