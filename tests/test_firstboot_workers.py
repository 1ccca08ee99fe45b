"""Two-worker API apps start with one worker and get the second once the node is ready:
lib.sh's uwsgi_app lines and stackseed-workers, run against Debian's real uwsgi (the python3
plugin setup-host installs) serving a one-line WSGI app in a scratch directory."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import IO

import pytest

from builder.paths import TEMPLATES

LIB = TEMPLATES / "firstboot" / "lib.sh"
WORKERS = TEMPLATES / "firstboot" / "stackseed-workers"
RUNNER = TEMPLATES / "firstboot" / "stackseed-firstboot"
UWSGI = shutil.which("uwsgi_python3")

pytestmark = pytest.mark.skipif(UWSGI is None, reason="needs uwsgi_python3 (.ci/setup-host.sh)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def workers_of(master: int) -> int:
    """The master's worker processes (its children), from /proc."""
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{master}\n" in status:
                count += 1
    return count


def wait_for(check, seconds: float = 30) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.2)
    return bool(check())


def workers_script(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(WORKERS), *args],
        env={"PATH": os.environ["PATH"], "STACKSEED_ROOT": str(root), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def untimed(out: str) -> list[str]:
    """stackseed-workers' lines without the time each begins with."""
    lines = out.splitlines()
    assert all(re.match(r"\d\d:\d\d:\d\d ", line) for line in lines), out
    return [line[9:] for line in lines]


def load_runner() -> ModuleType:
    """stackseed-firstboot as a module: its services_ready writes the flag the hook reads."""
    loader = importlib.machinery.SourceFileLoader("stackseed_firstboot", str(RUNNER))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # its dataclasses look their module up there
    loader.exec_module(module)
    return module


App = tuple[Path, subprocess.Popen[bytes]]


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[Callable[..., App]]:
    """Starts an app configured as uwsgi_app leaves nova-api: (scratch root, master)."""
    started: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []

    def start(prelude: str = "") -> App:
        port = free_port()
        (tmp_path / "app.py").write_text(
            f"{prelude}def application(environ, start_response):\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
            "    return [b'ok']\n"
        )
        ini = tmp_path / "etc/app/app-uwsgi.ini"
        ini.parent.mkdir(parents=True, exist_ok=True)
        user = pwd.getpwuid(os.getuid()).pw_name
        ini.write_text(
            "[uwsgi]\nmaster = true\nlazy-apps = true\nplugins = python3\nprocesses = 16\n"
            f"threads = 1\nhttp-socket = 127.0.0.1:{port}\nwsgi-file = {tmp_path}/app.py\n"
            f"name = app\nuid = {user}\ndie-on-term = true\n"
        )
        configured = subprocess.run(
            ["bash", "-c", f'. "{LIB}"\nuwsgi_app "{ini}"'],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert configured.returncode == 0, configured.stderr
        text = ini.read_text()
        assert f"master-fifo = /var/lib/{user}/uwsgi-app.fifo" in text
        hook = f"/usr/local/lib/stackseed/stackseed-workers --if-ready {ini} || :"
        assert f"hook-accepting1-once = exec:{hook}" in text
        # The FIFO where this test may make one, the helper from the tree; the rest as on a node.
        text = text.replace(f"/var/lib/{user}/", f"{tmp_path}/")
        ini.write_text(text.replace("/usr/local/lib/stackseed/stackseed-workers", f"sh {WORKERS}"))
        log = (tmp_path / "uwsgi.log").open("wb")
        logs.append(log)
        env = {**os.environ, "STACKSEED_ROOT": str(tmp_path)}
        proc = subprocess.Popen([str(UWSGI), "--ini", str(ini)], stdout=log, stderr=log, env=env)
        started.append(proc)
        url = f"http://127.0.0.1:{port}/"

        def answers() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    return answer.read() == b"ok"
            except OSError:
                return False

        assert wait_for(answers), (tmp_path / "uwsgi.log").read_text()
        return tmp_path, proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait(timeout=30)
    for log in logs:
        log.close()


def test_a_two_worker_app_serves_with_one_until_asked_then_with_two(
    start_app: Callable[[], App],
) -> None:
    root, proc = start_app()
    time.sleep(1)  # a second worker, were one coming, would be forked by now
    assert workers_of(proc.pid) == 1

    asked = workers_script(root)

    assert asked.returncode == 0, asked.stderr
    assert untimed(asked.stdout) == ["app-uwsgi.ini: second worker asked for"]
    assert wait_for(lambda: workers_of(proc.pid) == 2), (root / "uwsgi.log").read_text()
    # Asking again (the walk and a unit's own hook both ask) leaves it at its two.
    assert workers_script(root).returncode == 0
    time.sleep(1)
    assert workers_of(proc.pid) == 2


def test_an_app_started_after_the_node_is_ready_asks_for_its_second_worker_itself(
    start_app: Callable[[], App], tmp_path: Path
) -> None:
    """A restart by hand after the boot: the flag first boot's runner wrote is there, and the
    app's own hook asks once its first worker accepts."""
    runner = load_runner()
    said = runner.services_ready(runner.Paths.from_env({"STACKSEED_ROOT": str(tmp_path)}), {})
    assert "cannot write" not in said

    root, proc = start_app()

    assert wait_for(lambda: workers_of(proc.pid) == 2), (root / "uwsgi.log").read_text()


def test_an_app_whose_own_thread_keeps_its_worker_alive_stops_within_the_mercy(
    start_app: Callable[..., App],
) -> None:
    """A service's non-daemon thread (as oslo.messaging's are) keeps a worker from exiting when
    the master is told to stop; uwsgi's default waits 60 s before killing it (neutron-api's
    second worker at every `lab stop` of the controller). uwsgi_app's mercy bounds it."""
    root, proc = start_app(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(600,)).start()\n"
    )
    started = time.monotonic()
    proc.terminate()  # SIGTERM to the master, die-on-term as Debian's .ini files say
    proc.wait(timeout=45)
    assert time.monotonic() - started < 30, (root / "uwsgi.log").read_text()
    assert "NO MERCY" in (root / "uwsgi.log").read_text()


def test_a_stopped_app_or_an_app_of_one_worker_is_left_alone(tmp_path: Path) -> None:
    ini = tmp_path / "etc/keystone/keystone-uwsgi.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[uwsgi]\nprocesses = 1\nthreads = 16\n")
    stale = tmp_path / "stale.fifo"
    os.mkfifo(stale)
    gone = tmp_path / "etc/nova/nova-api-uwsgi.ini"
    gone.parent.mkdir(parents=True)
    gone.write_text(f"[uwsgi]\ncheaper-algo = manual\nmaster-fifo = {stale}\n")
    never = tmp_path / "etc/glance/glance-api-uwsgi.ini"
    never.parent.mkdir(parents=True)
    never.write_text(f"[uwsgi]\ncheaper-algo = manual\nmaster-fifo = {tmp_path}/none.fifo\n")

    began = time.monotonic()
    result = workers_script(tmp_path, STACKSEED_FIFO_TIMEOUT="1")

    assert result.returncode == 0, result.stderr
    assert time.monotonic() - began < 20  # a FIFO nobody reads does not hang the boot's end
    assert untimed(result.stdout) == [
        f"glance-api-uwsgi.ini: no master FIFO at {tmp_path}/none.fifo (not running)",
        f"nova-api-uwsgi.ini: {stale} took no request",
    ]


def test_busy_is_the_share_of_cpu_time_not_idle_over_the_window(tmp_path: Path) -> None:
    """iowait counts as idle; the columns after steal (guest time, already in user) do not
    count twice."""
    stat_file = tmp_path / "stat"
    stat_file.write_text("cpu  100 0 100 800 0 0 0 0 7 7\ncpu0 1 1 1 1\n")
    proc = subprocess.Popen(
        ["sh", str(WORKERS), "--busy", "2"],
        env={"PATH": os.environ["PATH"], "STACKSEED_STAT": str(stat_file)},
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    # 400 ticks more: 150 user, 50 system, 100 idle, 100 iowait -> 200 of 400 busy.
    stat_file.write_text("cpu  250 0 150 900 100 0 0 0 90 90\n")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out.strip() == "50"


def test_settle_asks_once_the_node_has_a_core_to_spare(
    start_app: Callable[[], App], tmp_path: Path
) -> None:
    root, proc = start_app()
    quiet = tmp_path / "quiet-stat"
    quiet.write_text("cpu  100 0 100 800 0 0 0 0\n")  # unchanging: nothing busy

    asked = workers_script(
        root,
        "--settle",
        STACKSEED_STAT=str(quiet),
        STACKSEED_SETTLE_WINDOW="1",
        STACKSEED_SETTLE_TIMEOUT="5",
    )

    assert asked.returncode == 0, asked.stderr
    assert untimed(asked.stdout) == ["app-uwsgi.ini: second worker asked for (node 0% busy)"]
    assert wait_for(lambda: workers_of(proc.pid) == 2), (root / "uwsgi.log").read_text()


def test_settle_on_a_node_that_stays_busy_asks_anyway_once_its_time_is_up(
    start_app: Callable[[], App],
) -> None:
    root, proc = start_app()

    began = time.monotonic()
    asked = workers_script(
        root,
        "--settle",
        STACKSEED_SETTLE_BUSY="-1",  # never settled
        STACKSEED_SETTLE_WINDOW="1",
        STACKSEED_SETTLE_TIMEOUT="3",
    )

    assert asked.returncode == 0, asked.stderr
    assert time.monotonic() - began >= 3
    assert "app-uwsgi.ini: second worker asked for (node still " in asked.stdout
    assert "busy after 3 s, asking anyway)" in asked.stdout
    assert wait_for(lambda: workers_of(proc.pid) == 2), (root / "uwsgi.log").read_text()
