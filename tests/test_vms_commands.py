"""`lab up / status / down` through the CLI, on libvirt's shared test:///default driver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from click.testing import CliRunner  # noqa: E402

from builder.errors import StackseedError  # noqa: E402
from tests.test_vms_launcher import TOPOLOGY, make_images  # noqa: E402

URI = "test:///default"


@pytest.fixture
def cli(tmp_path: Path):
    from builder.cli.lab import lab

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
    from builder.cli.common import run as run_cli
    from builder.cli.lab import lab

    _run, conn = cli
    before = (len(conn.listAllDomains()), len(conn.listAllNetworks()))
    args = ["up", "-t", str(TOPOLOGY), "--state-dir", str(tmp_path / "s"), "--connect", URI]
    args += ["--images-dir", str(tmp_path / "empty")]
    monkeypatch.setattr("sys.argv", ["lab", *args])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lab)
    assert exit_info.value.code == 4  # EXIT_PREREQ
    assert (len(conn.listAllDomains()), len(conn.listAllNetworks())) == before


def _states(conn) -> dict[str, bool]:
    return {d.name(): bool(d.isActive()) for d in conn.listAllDomains() if "stackseed-" in d.name()}


def test_only_starts_the_named_nodes_and_a_later_up_starts_the_rest(cli):
    run, conn = cli
    code, output = run("up", "--only", "block1")
    assert code == 0, output
    assert "left off: controller" in output
    assert _states(conn) == {"stackseed-controller": False, "stackseed-block1": True}
    code, output = run("up")
    assert code == 0 and "domain controller: started" in output
    assert set(_states(conn).values()) == {True}
    run("down")


def test_only_with_an_unknown_node_names_the_topology_and_makes_nothing(cli):
    run, conn = cli
    before = sorted(d.name() for d in conn.listAllDomains())
    nets = sorted(n.name() for n in conn.listAllNetworks())
    with pytest.raises(StackseedError) as error:
        run("up", "--only", "compute9")
    assert "compute9" in str(error.value) and str(TOPOLOGY) in str(error.value)
    assert "controller, block1" in error.value.fix
    assert sorted(d.name() for d in conn.listAllDomains()) == before
    assert sorted(n.name() for n in conn.listAllNetworks()) == nets


def test_reboot_a_running_node_and_refuse_one_that_is_not(cli):
    run, conn = cli
    run("up")
    code, output = run("reboot", "controller")
    assert code == 0 and "reboot requested" in output
    code, output = run("reboot", "controller", "--hard")
    assert code == 0 and "reset" in output
    assert _states(conn)["stackseed-controller"]
    with pytest.raises(StackseedError, match="no node 'nova'"):
        run("reboot", "nova")
    run("down")
    with pytest.raises(StackseedError, match="not running") as error:
        run("reboot", "controller")
    assert "lab up" in error.value.fix
