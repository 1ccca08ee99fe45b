"""`lab logs`: the archive holds every node's first-boot and service logs, never a secret value;
it is 0600 and appears whole or not at all; an unreachable node is a note, not a traceback."""

from __future__ import annotations

import gzip
import io
import lzma
import os
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from conftest import DEFAULT, REPO

from builder import logs
from builder.logs import Archive, Redactor, collect_command, follow_command, read_secrets
from builder.secrets import load_or_create

NODES = ("controller", "compute1", "block1")
NEEDS_SSH = pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the ssh client")
SERVICE_LOGS = {
    "controller": ("var/log/keystone/keystone.log", "var/log/nova/nova-api.log"),
    "compute1": ("var/log/nova/nova-compute.log", "var/log/neutron/neutron-openvswitch-agent.log"),
    "block1": ("var/log/cinder/cinder-volume.log",),
}


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, str]:
    return load_or_create(tmp_path / "state" / "stackseed" / "secrets.yaml")


def _node_tree(root: Path, node: str, secrets: dict[str, str]) -> None:
    """A node's /var/log as the collection finds it, every file carrying secret values."""
    leak = "\n".join(
        f"{name}={value} url=mysql+pymysql://u:{value}@c/db" for name, value in secrets.items()
    )
    (root / "var/log/stackseed").mkdir(parents=True)
    (root / "var/log/stackseed/firstboot.log").write_text(f"==== {node} phase=10-base\n{leak}\n")
    (root / "var/log/cloud-init.log").write_text(f"cloud-init says {secrets['admin_password']}\n")
    for path in SERVICE_LOGS[node]:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(f"INFO started\nDEBUG {leak}\n")
    rotated = root / SERVICE_LOGS[node][0]
    rotated.with_name(rotated.name + ".2.gz").write_bytes(gzip.compress(leak.encode()))
    # A file named after a secret (a token in a cache file name, say).
    (root / f"var/log/stackseed/cache-{secrets['metadata_secret']}.txt").write_text("x\n")
    (root / "var/log/stackseed/latest").symlink_to("firstboot.log")


def _tar_stream(root: Path) -> io.BytesIO:
    """An uncompressed tar of root's var/, as `tar -cf - -C / var/...` prints it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(root / "var", arcname="var")
    buffer.seek(0)
    return buffer


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def _leaks(members: dict[str, bytes], secrets: dict[str, str]) -> list[str]:
    found = []
    for name, data in members.items():
        for key, value in secrets.items():
            if value in name or value.encode() in data:
                found.append(f"{name}: {key}")
    return found


def test_redactor_masks_longest_first_and_leaves_short_values() -> None:
    redactor = Redactor(["abcdef", "abcdefghij", "abc"])
    assert redactor.bytes(b"x abcdefghij y abcdef z abc") == b"x *** y *** z abc"
    assert redactor.text("cache-abcdefghij.txt") == "cache-***.txt"
    assert Redactor([]).bytes(b"abc") == b"abc"


def test_compressed_members_are_stored_plain_or_left_out() -> None:
    text = b"password=abcdefgh\n"
    assert logs.readable("a.log.2.gz", gzip.compress(gzip.compress(text))) == ("a.log.2", text)
    assert logs.readable("a.log.1.xz", lzma.compress(text)) == ("a.log.1", text)
    assert logs.readable("notes.txt", b"BZh, it starts") == ("notes.txt", b"BZh, it starts")
    left_out = logs.readable("a.log.3.zst", b"\x28\xb5\x2f\xfd" + text)
    assert isinstance(left_out, str) and "cannot be redacted" in left_out
    broken = logs.readable("a.log.4.gz", b"\x1f\x8b broken")
    assert isinstance(broken, str) and "unreadable" in broken


def test_archive_of_every_node_holds_their_logs_and_no_secret(tmp_path, secrets) -> None:
    target = tmp_path / "out" / "logs.tar.gz"
    target.parent.mkdir()
    with Archive(target, "top", Redactor(secrets.values())) as archive:
        for node in NODES:
            _node_tree(tmp_path / "nodes" / node, node, secrets)
            got = archive.add_tar(f"{node}/", _tar_stream(tmp_path / "nodes" / node))
            assert got.error is None and got.files == 4 + len(SERVICE_LOGS[node])
            assert [s for s in got.skipped if "link" in s]
    members = _members(target)
    for node in NODES:
        assert f"top/{node}/var/log/stackseed/firstboot.log" in members
        assert f"top/{node}/var/log/cloud-init.log" in members
        for path in SERVICE_LOGS[node]:
            assert f"top/{node}/{path}" in members
            assert b"DEBUG" in members[f"top/{node}/{path}"]
        # The rotated log is stored decompressed, so it was redacted too.
        assert b"***" in members[f"top/{node}/{SERVICE_LOGS[node][0]}.2"]
        assert f"top/{node}/var/log/stackseed/cache-***.txt" in members
    assert not _leaks(members, secrets)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(os.listdir(target.parent)) == ["logs.tar.gz"]


class _Breaks(io.RawIOBase):
    """A stream that gives `limit` bytes of `data`, then raises `error` (Ctrl-C, say)."""

    def __init__(self, data: bytes, limit: int, error: BaseException) -> None:
        self.data, self.limit, self.error, self.at = data, limit, error, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self.at >= self.limit:
            raise self.error
        chunk = self.data[self.at : min(self.limit, self.at + len(buffer))]
        buffer[: len(chunk)] = chunk
        self.at += len(chunk)
        return len(chunk)


def test_interrupted_write_leaves_no_file_and_keeps_the_old_one(tmp_path, secrets) -> None:
    _node_tree(tmp_path / "node", "controller", secrets)
    data = _tar_stream(tmp_path / "node").getvalue()
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):  # noqa: SIM117 - the stream must break inside
        with Archive(out / "new.tar.gz", "top", Redactor(secrets.values())) as archive:
            archive.add_tar("controller/", _Breaks(data, 3000, KeyboardInterrupt()))
    assert os.listdir(out) == []
    (out / "old.tar.gz").write_bytes(b"an earlier archive")
    with pytest.raises(KeyboardInterrupt):  # noqa: SIM117
        with Archive(out / "old.tar.gz", "top", Redactor(secrets.values())) as archive:
            archive.add("a.txt", b"a")
            raise KeyboardInterrupt
    assert os.listdir(out) == ["old.tar.gz"]
    assert (out / "old.tar.gz").read_bytes() == b"an earlier archive"


def test_a_stream_that_breaks_off_keeps_what_came_and_says_so(tmp_path, secrets) -> None:
    _node_tree(tmp_path / "node", "controller", secrets)
    data = _tar_stream(tmp_path / "node").getvalue()
    with Archive(tmp_path / "a.tar.gz", "top", Redactor(secrets.values())) as archive:
        cut = archive.add_tar("controller/", io.BytesIO(data[: len(data) // 2]))
        empty = archive.add_tar("block1/", io.BytesIO(b""))
    assert cut.error and cut.error.startswith("stream broke")
    assert empty.error == "no tar stream" and empty.files == 0
    assert not _leaks(_members(tmp_path / "a.tar.gz"), secrets)


def _fake_tools(bin_dir: Path, secrets: dict[str, str]) -> dict[str, str]:
    """journalctl, cloud-init and systemctl stand-ins that print a secret, as a journal might."""
    bin_dir.mkdir()
    for tool in ("journalctl", "cloud-init", "systemctl"):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $* rabbit={secrets["rabbit_password"]}"\n')
        script.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "LANG": "C.UTF-8"}


def test_the_remote_command_streams_what_exists_and_the_commands(tmp_path, secrets) -> None:
    """The node's side for real (without sudo), on a scratch tree instead of /."""
    root = tmp_path / "node"
    _node_tree(root, "controller", secrets)
    env = _fake_tools(tmp_path / "bin", secrets)
    paths = [str(root / p.lstrip("/")) for p in logs.LOG_PATHS]
    argv = shlex.split(collect_command(paths))
    assert argv[:3] == ["sudo", "sh", "-c"]
    assert not [v for v in secrets.values() if v in collect_command()]
    proc = subprocess.Popen(argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    with Archive(tmp_path / "a.tar.gz", "top", Redactor(secrets.values())) as archive:
        got = archive.add_tar("controller/", proc.stdout)
    assert proc.wait() == 0, proc.stderr.read() if proc.stderr else ""
    assert got.error is None
    members = _members(tmp_path / "a.tar.gz")
    inside = str(root).lstrip("/")
    assert f"top/controller/{inside}/var/log/stackseed/firstboot.log" in members
    assert f"top/controller/{inside}/var/log/nova/nova-api.log" in members
    journal = members["top/controller/commands/journalctl-b.txt"]
    assert journal.startswith(b"journalctl -b --no-pager rabbit=***")
    assert set(logs.COMMANDS) <= {n.rsplit("/", 1)[-1] for n in members}
    assert not _leaks(members, secrets)


def test_follow_names_a_service_that_does_not_exist(tmp_path, secrets) -> None:
    env = _fake_tools(tmp_path / "bin", secrets)
    (tmp_path / "bin" / "systemctl").write_text("#!/bin/sh\nexit 1\n")
    argv = shlex.split(follow_command("no-such-service-here", 5))
    done = subprocess.run(argv[1:], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == logs.NO_SUCH_SERVICE
    assert "no unit no-such-service-here" in done.stdout
    with pytest.raises(logs.StackseedError):
        follow_command("nova; rm -rf /", 5)


def test_read_secrets_never_creates_the_file(tmp_path) -> None:
    with pytest.raises(logs.StackseedError, match="no secrets file"):
        read_secrets(tmp_path / "secrets.yaml")
    assert not (tmp_path / "secrets.yaml").exists()


def _lab_in(cwd: Path, *args: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    """The real `lab` of this checkout, run from another directory (where the archive goes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKSEED_")}
    env |= {"STACKSEED_STATE_DIR": str(state_dir), "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", "from builder.cli.lab import main; main()", *args]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def test_cli_without_a_lab_says_run_lab_up_and_leaves_nothing(tmp_path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    state = tmp_path / "state"
    done = _lab_in(cwd, "logs", "-t", str(DEFAULT), state_dir=state)
    assert done.returncode == 1, done.stderr
    assert "no lab key" in done.stderr and "lab up" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert os.listdir(cwd) == [] and not (state / "stackseed" / "secrets.yaml").exists()
    unknown = _lab_in(cwd, "logs", "nope", "-t", str(DEFAULT), state_dir=state)
    assert unknown.returncode == 1 and "no node 'nope'" in unknown.stderr
    both = _lab_in(cwd, "logs", "-f", "nova-compute", "-t", str(DEFAULT), state_dir=state)
    assert both.returncode == 2 and "--follow takes exactly one NODE" in both.stderr
    nowhere = _lab_in(cwd, "logs", "-o", "no/dir/x.tgz", "-t", str(DEFAULT), state_dir=state)
    assert nowhere.returncode == 2 and "does not exist" in nowhere.stderr
    assert "Traceback" not in both.stderr + nowhere.stderr and os.listdir(cwd) == []


def _fake_key(state_dir: Path):
    """The lab key and known_hosts files `lab ssh` insists on (never used to log in here)."""
    from builder.state import LabState

    state = LabState.for_lab("stackseed", state_dir)
    for path in (state.ssh_key, state.known_hosts):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not used: nothing is logged in to\n")
    return state


@NEEDS_SSH
def test_cli_with_unreachable_nodes_writes_the_archive_with_notes(
    tmp_path, secrets, monkeypatch
) -> None:
    from click.testing import CliRunner

    from builder.cli.lab import lab
    from vms import ssh

    state = _fake_key(tmp_path / "state")
    state.console_log("controller").parent.mkdir(parents=True)
    state.console_log("controller").write_text(f"login: {secrets['admin_password']}\n")
    with socket.socket() as probe:  # a port nothing listens on: connection refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    real = ssh.command

    def closed_port(plan, lab_state, node, remote=()):
        argv = real(plan, lab_state, node, remote)
        at = argv.index(f"{ssh.USER}@{plan.node(node).ip}")
        return [*argv[:at], "-p", str(port), f"{ssh.USER}@127.0.0.1", *argv[at + 1 :]]

    monkeypatch.setattr(ssh, "command", closed_port)
    monkeypatch.chdir(tmp_path)
    args = [
        "logs",
        "controller",
        "block1",
        "-t",
        str(DEFAULT),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    result = CliRunner().invoke(lab, [*args, "-o", str(tmp_path / "bug.tar.gz")])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and result.exception is None
    assert "controller: not reachable over ssh" in result.output
    assert "not collected from controller, block1" in result.output
    members = _members(tmp_path / "bug.tar.gz")
    names = {n.split("/", 1)[1]: data for n, data in members.items()}
    assert b"Connection refused" in names["controller/NOT-COLLECTED.txt"]
    assert names["controller/console.log"] == b"login: ***\n"
    assert "block1/NOT-COLLECTED.txt" in names and "block1/console.log" not in names
    assert b"controller: 1 files" in names["MANIFEST.txt"]
    assert "lab.yaml" in names
    assert not _leaks(members, secrets)
    assert stat.S_IMODE((tmp_path / "bug.tar.gz").stat().st_mode) == 0o600


@NEEDS_SSH
def test_follow_redacts_each_line_and_names_a_missing_service(tmp_path, secrets, monkeypatch):
    from click.testing import CliRunner

    from builder.cli.lab import lab
    from vms import ssh

    _fake_key(tmp_path / "state")
    password = secrets["admin_password"]
    said: dict[str, object] = {}

    def fake_popen(plan, lab_state, node, remote, *, tty=False, stdout=None, stderr=None):
        said.update(node=node, remote=remote, tty=tty)
        script = f"printf 'one {password}\\r\\ntwo\\r\\n'; exit $RC"
        return subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, stderr=stderr)

    monkeypatch.setattr(ssh, "popen", fake_popen)
    args = ["logs", "compute1", "-f", "nova-compute", "-n", "5", "-t", str(DEFAULT)]
    args += ["--state-dir", str(tmp_path / "state")]
    monkeypatch.setenv("RC", "0")
    result = CliRunner().invoke(lab, args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["one ***", "two"]
    assert said["node"] == "compute1" and said["tty"] is True
    assert shlex.split(said["remote"][0])[-2:] == ["nova-compute", "5"]  # type: ignore[index]
    monkeypatch.setenv("RC", str(logs.NO_SUCH_SERVICE))
    result = CliRunner().invoke(lab, args)
    assert isinstance(result.exception, logs.StackseedError)
    assert "compute1 has no log file and no unit named 'nova-compute'" in str(result.exception)


@pytest.mark.e2e
@pytest.mark.slow
def test_live_lab_logs_hold_every_firstboot_log_and_no_secret(tmp_path) -> None:
    """Against the lab that is up now (the default topology, the state `lab` itself would use:
    $STACKSEED_STATE_DIR or the XDG one). Run with `pytest -m e2e tests/test_lab_logs.py`."""
    from builder.paths import state_root

    state = state_root()
    lab_state = state / "stackseed"
    if not (lab_state / "ssh" / "id_ed25519").exists():
        pytest.skip(f"no lab up with its state in {state}")
    env = {k: v for k, v in os.environ.items() if k != "STACKSEED_STATE_DIR"}
    target = tmp_path / "logs.tar.gz"
    argv = [sys.executable, "-c", "from builder.cli.lab import main; main()", "logs"]
    done = subprocess.run(
        [*argv, "-t", str(DEFAULT), "--state-dir", str(state), "-o", str(target)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in done.stderr, done.stderr
    secrets = yaml.safe_load((lab_state / "secrets.yaml").read_text())
    members = _members(target)
    names = {n.split("/", 1)[1] for n in members}
    for node in NODES:
        assert f"{node}/var/log/stackseed/firstboot.log" in names
        assert f"{node}/commands/journalctl-b.txt" in names
        assert f"{node}/console.log" in names
    assert "controller/var/log/keystone/keystone.log" in names or any(
        n.startswith("controller/var/log/keystone/") for n in names
    )
    assert not _leaks(members, {k: str(v) for k, v in secrets.items()})
