"""The repository server: started detached and once, serving top-level files only, stopped
by its record and never a process it did not start."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder import repo_server


@pytest.fixture
def served(tmp_path: Path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "InRelease").write_text("signed\n")
    (root / ".key").write_text("hidden\n")
    (root / "sub").mkdir()
    (root / "sub" / "file").write_text("nested\n")
    (tmp_path / "secret").write_text("outside\n")
    outside = tmp_path / "cache.deb"
    outside.write_bytes(b"deb bytes")
    (root / "linked_1.0_all.deb").symlink_to(outside)
    state = tmp_path / "state"
    record, log = state / "repo-server.json", state / "repo-server.log"
    yield root, record, log
    repo_server.stop(record)


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_started_once_then_found_running(served) -> None:
    root, record, log = served
    first, started = repo_server.ensure(record, log, root, "127.0.0.1", 0)
    assert started
    assert first.pid != os.getpid()
    assert json.loads(record.read_text())["pid"] == first.pid
    assert record.stat().st_mode & 0o777 == 0o600
    # Its own session: a Ctrl-C to the command that started it does not reach it.
    assert os.getsid(first.pid) == first.pid
    again, started = repo_server.ensure(record, log, root, "127.0.0.1", first.port)
    assert (again, started) == (first, False)
    assert repo_server.running(record) == first


def test_serves_top_level_files_and_nothing_else(served) -> None:
    root, record, log = served
    found, _ = repo_server.ensure(record, log, root, "127.0.0.1", 0)
    assert _get(found.port, "/InRelease") == (200, b"signed\n")
    assert _get(found.port, "/./InRelease") == (200, b"signed\n")  # how apt asks, flat repo
    assert _get(found.port, "/linked_1.0_all.deb") == (200, b"deb bytes")
    for path in ("/", "/.key", "/sub/file", "/sub/", "/../secret", "/%2e%2e/secret", "/nope"):
        assert _get(found.port, path)[0] == 404, path
    assert "GET /InRelease" in log.read_text()


def test_stop_is_idempotent_and_leaves_nothing(served) -> None:
    root, record, log = served
    found, _ = repo_server.ensure(record, log, root, "127.0.0.1", 0)
    assert repo_server.stop(record) == found.pid
    assert not Path(f"/proc/{found.pid}").exists()
    assert not record.exists()
    assert repo_server.stop(record) is None
    assert repo_server.running(record) is None
    with pytest.raises(OSError):
        _get(found.port, "/InRelease")


def test_a_stale_record_never_stops_a_stranger(served) -> None:
    """A record left by a killed server whose pid now belongs to another process."""
    root, record, log = served
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        stale = {"pid": stranger.pid, "bind": "127.0.0.1", "port": 1, "root": str(root)}
        record.write_text(json.dumps(stale))
        assert repo_server.running(record) is None
        assert repo_server.stop(record) is None
        found, started = repo_server.ensure(record, log, root, "127.0.0.1", 0)
        assert started and found.pid != stranger.pid
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_another_root_or_address_restarts_it(served, tmp_path: Path) -> None:
    root, record, log = served
    first, _ = repo_server.ensure(record, log, root, "127.0.0.1", 0)
    other = tmp_path / "other"
    other.mkdir()
    second, started = repo_server.ensure(record, log, other, "127.0.0.1", 0)
    assert started and second.pid != first.pid
    deadline = time.monotonic() + 5
    while Path(f"/proc/{first.pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{first.pid}").exists()


def test_a_port_in_use_is_a_sentence(served) -> None:
    root, record, log = served
    found, _ = repo_server.ensure(record, log, root, "127.0.0.1", 0)
    blocked = record.with_name("other.json")
    with pytest.raises(repo_server.StackseedError, match=r"did not start on 127\.0\.0\.1"):
        repo_server.ensure(blocked, log, root.parent, "127.0.0.1", found.port)
    assert not blocked.exists()
