"""`lab up / status / down` through the CLI, on libvirt's shared test:///default driver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from click.testing import CliRunner  # noqa: E402

from tests.test_vms_launcher import TOPOLOGY, make_images  # noqa: E402

URI = "test:///default"


@pytest.fixture
def cli(tmp_path: Path):
    from builder.cli_lab import lab

    # test:///default lives as long as one connection to it is open: hold one for the test.
    held = libvirt.open(URI)
    images = make_images(tmp_path / "images", ("controller", "block"))
    common = ["-t", str(TOPOLOGY), "--state-dir", str(tmp_path / "state"), "--connect", URI]

    def run(command: str, *extra: str) -> tuple[int, str]:
        args = [command, *common, *extra]
        if command == "up":
            args += ["--images-dir", str(images), "--pool-dir", str(tmp_path / "pool")]
        result = CliRunner().invoke(lab, args, catch_exceptions=False)
        return result.exit_code, result.output

    yield run, held
    held.close()


def test_up_status_down_round_trip(cli):
    run, conn = cli
    before = sorted(d.name() for d in conn.listAllDomains())
    code, output = run("up")
    assert code == 0, output
    assert "domain controller: defined" in output
    code, output = run("up")
    assert code == 0 and "nothing changed" in output
    code, output = run("status", "--json")
    rows = {row["node"]: row for row in json.loads(output)}
    assert rows["block1"]["state"] == "running" and rows["block1"]["ips"] == ["10.0.0.41"]
    assert rows["controller"]["role"] == "controller"
    code, output = run("down")
    assert code == 0 and "lab stackseed is down" in output
    assert sorted(d.name() for d in conn.listAllDomains()) == before
    code, output = run("down")
    assert code == 0 and "nothing to remove" in output


def test_missing_image_fails_before_anything_is_made(cli, tmp_path, monkeypatch):
    from builder.cli_common import run as run_cli
    from builder.cli_lab import lab

    _run, conn = cli
    before = (len(conn.listAllDomains()), len(conn.listAllNetworks()))
    args = ["up", "-t", str(TOPOLOGY), "--state-dir", str(tmp_path / "s"), "--connect", URI]
    args += ["--images-dir", str(tmp_path / "empty")]
    monkeypatch.setattr("sys.argv", ["lab", *args])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lab)
    assert exit_info.value.code == 4  # EXIT_PREREQ
    assert (len(conn.listAllDomains()), len(conn.listAllNetworks())) == before
